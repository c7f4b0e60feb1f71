"""Emergency unload: in an EMERGENCY, unload every model not marked critical.

The last resort: cost 1000 and up, so every other proposal goes first. Pinned models are
unloaded too (pinned protects below EMERGENCY only); ``critical = true`` models never are.
Models with requests in flight are included: the machine is about to swap or kill something.
"""

from __future__ import annotations

from collections.abc import Iterator

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext, model_key, unload_action
from memwarden.core.types import Action, ActionKind, PressureLevel, PressureReading
from memwarden.hookspecs import hookimpl

NAME = "emergency-unload"
# Tuned through [governor] and [models."<name>"]; its own table takes no keys.
OPTIONS = NoOptions
BASE_COST = 1000.0
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.EMERGENCY
# The action kinds it proposes (the governor asks only refuse-loads strategies whether
# loads are refused).
PROPOSES = frozenset({ActionKind.UNLOAD})


@hookimpl
def on_pressure(reading: PressureReading, context: StrategyContext) -> Iterator[Action] | None:
    if reading.level < LEVEL:
        return None
    return _cheapest_first(context)


def _cheapest_first(context: StrategyContext) -> Iterator[Action]:
    # Built only as far as the ladder reads them.
    candidates = [
        m
        for m, policy in zip(context.loaded_models, context.policies, strict=True)
        if not policy.critical
    ]
    costs = context.eviction_costs(candidates)
    for model in sorted(candidates, key=lambda m: costs[model_key(m)]):
        cost = BASE_COST + costs[model_key(model)]
        yield unload_action(model, NAME, cost, "survive an EMERGENCY")
