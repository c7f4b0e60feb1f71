"""The contract every model runtime (Ollama, LM Studio, embedded llama.cpp) honours.

Providers are registered through the ``register_providers`` hook. The core never talks to a
runtime except through these methods, so a governor test can drive an in-memory provider exactly
as it drives Ollama.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from memwarden.core.types import AvailableModel, LoadedModel, ProviderStatus


class Provider(abc.ABC):
    """A model runtime. Methods may raise :class:`memwarden.core.errors.ProviderUnavailable`,
    :class:`~memwarden.core.errors.ModelNotFound` or :class:`~memwarden.core.errors.ProviderError`;
    anything else is treated as a bug in the provider and reported with its name."""

    #: Unique, short, lower-case: "ollama", "lmstudio", "llamacpp".
    name: str

    @abc.abstractmethod
    def status(self) -> ProviderStatus:
        """Whether the runtime answers right now; must return within the provider's timeout."""

    @abc.abstractmethod
    def available_models(self) -> list[AvailableModel]:
        """Models the runtime can load."""

    @abc.abstractmethod
    def loaded_models(self) -> list[LoadedModel]:
        """Models resident now, with their real sizes."""

    @abc.abstractmethod
    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
    ) -> LoadedModel:
        """Load a model (or a new instance of it) and return it as loaded."""

    @abc.abstractmethod
    def unload(self, model: str) -> None:
        """Unload a model so that its memory returns to the system."""

    def model_metadata(self, model: str) -> Mapping[str, Any] | None:
        """The runtime's description of a model's shape, for the metadata estimator."""
        return None

    def releasable_cache_bytes(self) -> int:
        """Bytes the runtime could give back now without unloading a model (caches it keeps
        for reuse, such as saved prompt state). 0 when it keeps none or cannot say; the
        release-caches strategy only proposes what a runtime reports here."""
        return 0

    def release_caches(self) -> int:
        """Give back what :meth:`releasable_cache_bytes` reported; return the bytes released."""
        return 0
