"""One cattrs converter for everything that crosses a boundary: CLI --json, the state store."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs
from cattrs.gen import make_dict_unstructure_fn
from cattrs.preconf.json import make_converter

from memwarden.core.types import ActionKind, PressureLevel

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
