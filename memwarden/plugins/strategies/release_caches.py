"""Release caches: ask each runtime to give back memory it holds only for reuse.

Cost 0 (nothing a user waits for is lost). Proposed only for what a provider reports through
``Provider.releasable_cache_bytes()`` (``StrategyContext.releasable_cache_bytes``). The kernel's
page cache is deliberately left alone: ``available_bytes`` already counts it as free, and
dropping it (root-only, machine-wide) would slow every other program without making a model fit.
"""

from __future__ import annotations

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext
from memwarden.core.types import Action, ActionKind, PressureLevel, PressureReading
from memwarden.hookspecs import hookimpl

NAME = "release-caches"
# Tuned through [governor] and [models."<name>"]; its own table takes no keys.
OPTIONS = NoOptions
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.WARNING
# The action kinds it proposes (the governor asks only refuse-loads strategies whether
# loads are refused).
PROPOSES = frozenset({ActionKind.RELEASE_CACHE})


@hookimpl
def on_pressure(reading: PressureReading, context: StrategyContext) -> list[Action] | None:
    if reading.level < LEVEL:
        return None
    return [
        Action(
            kind=ActionKind.RELEASE_CACHE,
            strategy=NAME,
            description=f"release {releasable / 2**20:.0f} MiB of caches held by {provider}",
            expected_freed_bytes=releasable,
            cost=0.0,
            provider=provider,
        )
        for provider, releasable in sorted(context.releasable_cache_bytes.items())
        if releasable > 0
    ]
