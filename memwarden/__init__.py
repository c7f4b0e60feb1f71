"""memwarden keeps locally run LLMs inside the memory a machine really has."""

from memwarden.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
