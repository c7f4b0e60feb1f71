"""Refuse new loads at CRITICAL and above.

Cost 0 and frees nothing: it stops pressure from getting worse while other actions relieve it.
Once taken, ``Governor.ensure()`` raises :class:`InsufficientMemory` until the level falls below
CRITICAL again.
"""

from __future__ import annotations

from memwarden.core.governor import REFUSE_LOADS, Governor
from memwarden.core.types import Action, PressureLevel, PressureReading
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

NAME = "refuse-loads"


@hookimpl
def on_pressure(reading: PressureReading, warden: Warden) -> list[Action] | None:
    if reading.level < PressureLevel.CRITICAL:
        return None
    if Governor.for_warden(warden).refusing_reason is not None:
        return None
    return [
        Action(
            kind=REFUSE_LOADS,
            strategy=NAME,
            description=f"refuse new model loads while memory pressure is {reading.level}",
            expected_freed_bytes=0,
            cost=0.0,
        )
    ]
