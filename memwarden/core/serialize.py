"""One cattrs converter for everything that crosses a boundary: CLI --json, the state store."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs
from cattrs.gen import make_dict_unstructure_fn
from cattrs.preconf.json import make_converter

from memwarden.core.errors import StateError
from memwarden.core.types import (
    ActionKind,
    ActionRecord,
    Event,
    MemorySample,
    PressureLevel,
    PressureReading,
    UsageRecord,
)

T = TypeVar("T")

converter = make_converter()
# Derived fields (MemoryEstimate.total_bytes) are worth having in JSON; structuring recomputes them.
converter.register_unstructure_hook_factory(
    attrs.has,
    lambda cls: make_dict_unstructure_fn(cls, converter, _cattrs_include_init_false=True),
)
# Levels read better by name in JSON and logs than as their ordering integer.
converter.register_unstructure_hook(PressureLevel, lambda level: level.name)
converter.register_structure_hook(
    PressureLevel,
    lambda value, _: PressureLevel[value] if isinstance(value, str) else PressureLevel(value),
)


# Action.kind: a known kind by its value; an unknown one (rejected when proposed) as given.
converter.register_unstructure_hook(ActionKind | str, str)
converter.register_structure_hook(ActionKind | str, lambda value, _: value)


def to_data(obj: Any) -> Any:
    """An attrs object (or a list of them) as plain JSON-ready data."""
    return converter.unstructure(obj)


def from_data(data: Any, cls: type[T]) -> T:
    return converter.structure(data, cls)


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    return json.dumps(to_data(obj), indent=indent, sort_keys=False, default=str)


# The record kinds the core persists (``memwarden.hookspecs.PERSISTED_KINDS``) and the attrs class
# of each: what ``persist_state`` receives and what ``read_state`` returns.
RECORD_TYPES: dict[str, type] = {
    "event": Event,
    "reading": PressureReading,
    "usage": UsageRecord,
    "action": ActionRecord,
    "sample": MemorySample,
}


def record_type(kind: str) -> type:
    """The attrs class of a persisted record kind; a :class:`StateError` for any other kind."""
    cls = RECORD_TYPES.get(kind)
    if cls is None:
        raise StateError(
            f"no record kind is named {kind!r}",
            hint=f"the kinds memwarden persists: {', '.join(RECORD_TYPES)}",
        )
    return cls


def record_time(record: Any) -> float:
    """When a persisted record happened (``time.time()`` seconds): an event's ``at``, a
    reading's ``taken_at``, a call's ``started_at``, an action's ``at``, a sample's ``taken_at``.
    ``read_state(since=...)`` filters on it."""
    if isinstance(record, Event):
        return record.at
    if isinstance(record, PressureReading):
        return record.taken_at
    if isinstance(record, UsageRecord):
        return record.started_at
    if isinstance(record, ActionRecord):
        return record.at
    if isinstance(record, MemorySample):
        return record.taken_at
    raise StateError(
        f"{type(record).__name__} is not a record kind memwarden persists",
        hint=f"persist one of: {', '.join(cls.__name__ for cls in RECORD_TYPES.values())}",
    )


def record_from_data(kind: str, data: Any) -> Any:
    """A persisted record of ``kind`` back from the data ``to_data`` made of it."""
    return from_data(data, record_type(kind))
