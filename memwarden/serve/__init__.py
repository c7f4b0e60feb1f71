"""The front door: ``memwarden serve``, an OpenAI- and Ollama-compatible proxy that admits every
request through the governor, with a control API, ``/metrics`` and a dashboard (docs/serve.md)."""

from memwarden.serve.app import FrontDoor, create_app

__all__ = ["FrontDoor", "create_app"]
