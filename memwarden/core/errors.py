"""Errors raised by memwarden: each has a stable code, a human sentence and what to do next."""

from __future__ import annotations


class MemwardenError(Exception):
    """Base class. ``code`` is stable for scripts; ``hint`` says what the user should do."""

    code = "memwarden-error"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_dict(self) -> dict[str, str | int | None]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ConfigError(MemwardenError):
    """The configuration file cannot be read, parsed or validated."""

    code = "config-invalid"
    exit_code = 2
    #: Each problem as a "key.path: what is wrong" line, where the error lists them.
    problems: tuple[str, ...] = ()


class UnknownPluginError(ConfigError):
    """A plugin name in the config or in MEMWARDEN_PLUGINS matches no installed plugin."""

    code = "plugin-unknown"


class PluginError(MemwardenError):
    """A plugin failed to import or raised inside a hook."""

    code = "plugin-failed"


class ProviderUnavailable(MemwardenError):
    """A model runtime (Ollama, LM Studio, ...) cannot be reached right now."""

    code = "provider-unavailable"


class ModelNotFound(MemwardenError):
    """The named model is not known to the provider or not found on disk."""

    code = "model-not-found"


class ProviderError(MemwardenError):
    """The provider answered, but refused or failed the request; its message is kept."""

    code = "provider-error"


class ModelBusy(MemwardenError):
    """The model is serving requests made through memwarden; it is unloaded only in an
    emergency."""

    code = "model-busy"


class ModelFileError(MemwardenError):
    """A model file (GGUF) is missing, truncated or corrupt."""

    code = "model-file-invalid"


class EstimateUnavailable(MemwardenError):
    """No estimator could size the model."""

    code = "estimate-unavailable"


class InsufficientMemory(MemwardenError):
    """A request was refused because it would not fit in memory, even after degrading."""

    code = "insufficient-memory"
    exit_code = 3


class StateError(MemwardenError):
    """memwarden's state (its history of events, readings and usage) cannot be read or written,
    or a record kind is not one the core persists."""

    code = "state-error"


class HistoryError(MemwardenError):
    """A history window or filter (``--since``, ``--model``) that cannot be understood."""

    code = "history-window"
    exit_code = 2
