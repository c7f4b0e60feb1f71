"""Refuse new loads at CRITICAL and above.

Cost 0 and frees nothing: it stops pressure from getting worse while other actions relieve it.
Once taken, ``Governor.ensure()`` raises :class:`InsufficientMemory` until the level falls below
CRITICAL again.
"""

from __future__ import annotations

from memwarden.core.strategy import StrategyContext
from memwarden.core.types import Action, ActionKind, PressureLevel, PressureReading
from memwarden.hookspecs import hookimpl

NAME = "refuse-loads"
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.CRITICAL


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
