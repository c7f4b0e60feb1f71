"""The front door: ``memwarden serve``, an OpenAI- and Ollama-compatible proxy that admits every
request through the governor, with a control API, ``/metrics`` and a dashboard (docs/serve.md).

``FrontDoor`` and ``create_app`` are imported on first use: the command line reads
``memwarden.serve.daemon`` without paying for the web stack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memwarden.serve.app import FrontDoor, create_app

__all__ = ["FrontDoor", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from memwarden.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'memwarden.serve' has no attribute {name!r}")
