"""memwarden keeps locally run LLMs inside the memory a machine really has.

What a plugin author needs is importable from here: ``hookimpl``, the data types that cross a hook
boundary, ``Provider``, ``Config`` (with ``ModelPolicy``), ``StrategyContext``, the errors, and
``to_data`` / ``from_data``::

    from memwarden import MemoryPool, PoolKind, hookimpl

``docs/internals.md`` says which attributes and methods of these are stable. Everything but
``hookimpl`` is imported on first use, so ``import memwarden`` stays cheap (the CLI and every
plugin import it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from memwarden.hookspecs import PERSISTED_KINDS, hookimpl

__version__ = "0.1.0"

_TYPES = "memwarden.core.types"
_ERRORS = "memwarden.core.errors"

# Public name -> the module that defines it; resolved by __getattr__ on first use.
_LAZY: dict[str, str] = {
    # core/types.py: data that crosses a hook boundary
    "Action": _TYPES,
    "ActionRecord": _TYPES,
    "ActionKind": _TYPES,
    "AvailableModel": _TYPES,
    "Confidence": _TYPES,
    "ContextWindow": _TYPES,
    "DeviceSnapshot": _TYPES,
    "DeviceUnavailable": _TYPES,
    "Event": _TYPES,
    "GenerateResult": _TYPES,
    "LoadedModel": _TYPES,
    "MemoryEstimate": _TYPES,
    "MemoryPool": _TYPES,
    "MemorySample": _TYPES,
    "Message": _TYPES,
    "ModelChoice": _TYPES,
    "ModelRef": _TYPES,
    "ModelRequest": _TYPES,
    "PluginFailure": _TYPES,
    "PoolKind": _TYPES,
    "PoolPressure": _TYPES,
    "PoolProcess": _TYPES,
    "PoolSample": _TYPES,
    "PoolShare": _TYPES,
    "PressureLevel": _TYPES,
    "PressureReading": _TYPES,
    "ProviderStatus": _TYPES,
    "ResidentEstimate": _TYPES,
    "UsageRecord": _TYPES,
    # core/errors.py
    "ConfigError": _ERRORS,
    "EstimateUnavailable": _ERRORS,
    "HistoryError": _ERRORS,
    "InsufficientMemory": _ERRORS,
    "MemwardenError": _ERRORS,
    "ModelBusy": _ERRORS,
    "ModelFileError": _ERRORS,
    "ModelNotFound": _ERRORS,
    "PluginError": _ERRORS,
    "ProviderError": _ERRORS,
    "ProviderUnavailable": _ERRORS,
    "StateError": _ERRORS,
    "UnknownPluginError": _ERRORS,
    # the rest of a plugin's world
    "Config": "memwarden.core.config",
    "ModelPolicy": "memwarden.core.config",
    "StrategyContext": "memwarden.core.strategy",
    "PickContext": "memwarden.core.picking",
    "Provider": "memwarden.core.providers",
    "from_data": "memwarden.core.serialize",
    "to_data": "memwarden.core.serialize",
}

__all__ = [
    "PERSISTED_KINDS",
    "Action",
    "ActionKind",
    "ActionRecord",
    "AvailableModel",
    "Confidence",
    "Config",
    "ConfigError",
    "ContextWindow",
    "DeviceSnapshot",
    "DeviceUnavailable",
    "EstimateUnavailable",
    "Event",
    "GenerateResult",
    "HistoryError",
    "InsufficientMemory",
    "LoadedModel",
    "MemoryEstimate",
    "MemoryPool",
    "MemorySample",
    "MemwardenError",
    "Message",
    "ModelBusy",
    "ModelChoice",
    "ModelFileError",
    "ModelNotFound",
    "ModelPolicy",
    "ModelRef",
    "ModelRequest",
    "PickContext",
    "PluginError",
    "PluginFailure",
    "PoolKind",
    "PoolPressure",
    "PoolProcess",
    "PoolSample",
    "PoolShare",
    "PressureLevel",
    "PressureReading",
    "Provider",
    "ProviderError",
    "ProviderStatus",
    "ProviderUnavailable",
    "ResidentEstimate",
    "StateError",
    "StrategyContext",
    "UnknownPluginError",
    "UsageRecord",
    "__version__",
    "from_data",
    "hookimpl",
    "to_data",
]

if TYPE_CHECKING:
    from memwarden.core.config import Config, ModelPolicy
    from memwarden.core.errors import (
        ConfigError,
        EstimateUnavailable,
        HistoryError,
        InsufficientMemory,
        MemwardenError,
        ModelBusy,
        ModelFileError,
        ModelNotFound,
        PluginError,
        ProviderError,
        ProviderUnavailable,
        StateError,
        UnknownPluginError,
    )
    from memwarden.core.picking import PickContext
    from memwarden.core.providers import Provider
    from memwarden.core.serialize import from_data, to_data
    from memwarden.core.strategy import StrategyContext
    from memwarden.core.types import (
        Action,
        ActionKind,
        ActionRecord,
        AvailableModel,
        Confidence,
        ContextWindow,
        DeviceSnapshot,
        DeviceUnavailable,
        Event,
        GenerateResult,
        LoadedModel,
        MemoryEstimate,
        MemoryPool,
        MemorySample,
        Message,
        ModelChoice,
        ModelRef,
        ModelRequest,
        PluginFailure,
        PoolKind,
        PoolPressure,
        PoolProcess,
        PoolSample,
        PoolShare,
        PressureLevel,
        PressureReading,
        ProviderStatus,
        ResidentEstimate,
        UsageRecord,
    )


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memwarden' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
