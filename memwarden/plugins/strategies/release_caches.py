"""Release caches: ask each runtime to give back memory it holds only for reuse.

Cost 0 (nothing a user waits for is lost). Proposed only for what a provider reports through
``Provider.releasable_cache_bytes()``. The kernel's page cache is deliberately left alone:
``available_bytes`` already counts it as free, and dropping it (root-only, machine-wide) would
slow every other program without making a model fit.
"""

from __future__ import annotations

from memwarden.core.governor import RELEASE_CACHE
from memwarden.core.types import Action, PressureLevel, PressureReading
from memwarden.core.units import format_bytes
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

NAME = "release-caches"


@hookimpl
def on_pressure(reading: PressureReading, warden: Warden) -> list[Action] | None:
    if reading.level < PressureLevel.WARNING:
        return None
    actions = []
    for provider in warden.providers().values():
        releasable = provider.releasable_cache_bytes()
        if releasable > 0:
            actions.append(
                Action(
                    kind=RELEASE_CACHE,
                    strategy=NAME,
                    description=f"release {format_bytes(releasable)} of caches held by "
                    f"{provider.name}",
                    expected_freed_bytes=releasable,
                    cost=0.0,
                    provider=provider.name,
                )
            )
    return actions
