"""The contract every model runtime (Ollama, LM Studio, embedded llama.cpp) honours.

Providers are registered through the ``register_providers`` hook. The core never talks to a
runtime except through these methods, so a governor test can drive an in-memory provider exactly
as it drives Ollama.
"""

from __future__ import annotations

import abc
import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from memwarden.core.errors import ProviderError
from memwarden.core.types import AvailableModel, GenerateResult, LoadedModel, ProviderStatus

log = logging.getLogger("memwarden.providers")


# Runtime options a load may carry to ``Provider.load(options=...)``: the estimate_model_size
# options that change what the runtime allocates (docs/estimation.md, "Runtime options").
LOAD_OPTION_KEYS = (
    "runtime",
    "kv_type",
    "kv_type_k",
    "kv_type_v",
    "parallel",
    "batch_tokens",
    "ubatch_tokens",
    "flash_attention",
    "swa_full",
    "mmap",
    "gpu_layers",
    "kv_offload",
)


def load_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The runtime options among estimate ``options`` (the keys of :data:`LOAD_OPTION_KEYS` that
    are set): what admission sized a load with, to be handed to the provider that loads it."""
    if not options:
        return {}
    return {key: options[key] for key in LOAD_OPTION_KEYS if options.get(key) is not None}


def accepts_load_options(provider: Provider) -> bool:
    """Whether ``provider.load`` takes ``options`` (providers written before it was added do
    not; they are called without it)."""
    try:
        parameters = inspect.signature(provider.load).parameters
    except (TypeError, ValueError):
        return False
    return "options" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def ignored_options(provider: str, options: Mapping[str, Any], honoured: Iterable[str]) -> None:
    """Log, once per load, the runtime options a provider could not honour (so a user who
    asked for ``--ubatch 256`` from a runtime that has no such setting learns it)."""
    left = sorted(set(options) - set(honoured))
    if left:
        log.warning(
            "%s: ignored runtime option%s %s: the runtime has no per-load setting for %s",
            provider,
            "s" if len(left) > 1 else "",
            ", ".join(f"{key}={options[key]!r}" for key in left),
            "them" if len(left) > 1 else "it",
        )


def same_model(name: str, wanted: str) -> bool:
    """Whether a provider's model name is the one a user wrote: Ollama names carry a tag, and
    "llama3.2" means "llama3.2:latest" there, as it does in Ollama itself."""
    return name == wanted or name == f"{wanted}:latest" or wanted == f"{name}:latest"


class Provider(abc.ABC):
    """A model runtime. Methods may raise :class:`memwarden.core.errors.ProviderUnavailable`,
    :class:`~memwarden.core.errors.ModelNotFound` or :class:`~memwarden.core.errors.ProviderError`;
    anything else is treated as a bug in the provider and reported with its name."""

    #: Unique, short, lower-case: "ollama", "lmstudio", "llamacpp".
    name: str

    #: A fallback runtime (the embedded llama.cpp) serves a model only when no other reachable
    #: provider offers it.
    fallback: bool = False

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
        options: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        """Load a model (or a new instance of it) and return it as loaded.

        ``options`` are the runtime options admission sized the load with (the keys of
        :data:`LOAD_OPTION_KEYS`, as ``memwarden load --batch ...`` gives them), so that the
        runtime loads what was budgeted. A provider maps what its runtime can honour and says
        what it cannot in a log line; it never fails because of an option it cannot honour.
        ``None`` (or a provider whose ``load`` has no ``options``): the runtime's defaults.
        """

    @abc.abstractmethod
    def unload(self, model: str) -> None:
        """Unload a model so that its memory returns to the system."""

    def model_metadata(self, model: str) -> Mapping[str, Any] | None:
        """The runtime's description of a model's shape, for the metadata estimator."""
        return None

    def generate(self, model: str, prompt: str, *, max_tokens: int | None = None) -> GenerateResult:
        """Answer a prompt with a loaded (or loadable) model. Calls made through memwarden are
        counted by :class:`memwarden.core.usage.UsageTracker`; runtimes that cannot generate
        keep this default."""
        raise ProviderError(
            f"provider {self.name!r} cannot generate text through memwarden",
            hint="call the runtime directly, or use a provider that supports it",
        )

    def releasable_cache_bytes(self) -> int:
        """Bytes the runtime could give back now without unloading a model (caches it keeps
        for reuse, such as saved prompt state). 0 when it keeps none or cannot say; the
        release-caches strategy only proposes what a runtime reports here."""
        return 0

    def close(self) -> None:
        """Close the runtime's connections. The core calls it (on a thread of its own) when a
        call missed its deadline, so that the call still reading from a hung or dribbling
        runtime ends; the next call must open new connections. The default does nothing."""
        return None

    def release_caches(self) -> int:
        """Give back what :meth:`releasable_cache_bytes` reported; return the bytes released."""
        return 0
