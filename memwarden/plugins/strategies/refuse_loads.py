"""Refuse new loads at CRITICAL and above.

Cost 0 and frees nothing: it stops pressure from getting worse while other actions relieve it.
Once taken, ``Governor.ensure()`` raises :class:`InsufficientMemory` until the level falls below
CRITICAL again.
"""

from __future__ import annotations

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext
from memwarden.core.types import Action, ActionKind, PressureLevel, PressureReading
from memwarden.hookspecs import hookimpl

NAME = "refuse-loads"
# Tuned through [governor] and [models."<name>"]; its own table takes no keys.
OPTIONS = NoOptions
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.CRITICAL
# The action kinds it proposes (the governor asks only refuse-loads strategies whether
# loads are refused).
PROPOSES = frozenset({ActionKind.REFUSE_LOADS})


@hookimpl
def on_pressure(reading: PressureReading, context: StrategyContext) -> list[Action] | None:
    if reading.level < LEVEL or context.refusing_loads is not None:
        return None
    return [
        Action(
            kind=ActionKind.REFUSE_LOADS,
            strategy=NAME,
            description=f"refuse new model loads while memory pressure is {reading.level}",
            expected_freed_bytes=0,
            cost=0.0,
        )
    ]
