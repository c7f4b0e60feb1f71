"""Priority eviction: unload the models users would miss least, at CRITICAL and above.

Cost from :func:`memwarden.core.governor.eviction_cost`: 10 and up, dominated by priority, then
recency, frequency of use, and size. Pinned and critical models are never proposed. A model with
requests in flight is proposed only in an EMERGENCY (and costs 20 more). Proposals come
cheapest first, built only as far as the ladder reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext, model_key, unload_action
from memwarden.core.types import (
    Action,
    ActionKind,
    PressureLevel,
    PressureReading,
)
from memwarden.hookspecs import hookimpl

NAME = "priority-eviction"
# Tuned through [governor] and [models."<name>"]; its own table takes no keys.
OPTIONS = NoOptions
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.CRITICAL
# The action kinds it proposes (the governor asks only refuse-loads strategies whether
# loads are refused).
PROPOSES = frozenset({ActionKind.UNLOAD})


@hookimpl
def on_pressure(reading: PressureReading, context: StrategyContext) -> Iterator[Action] | None:
    if reading.level < LEVEL:
        return None
    return _cheapest_first(reading, context)


def _cheapest_first(reading: PressureReading, context: StrategyContext) -> Iterator[Action]:
    # Every candidate's cost is needed to find the cheapest, but an Action is built only for
    # those the ladder reads (one or a few of thousands).
    emergency = reading.level >= PressureLevel.EMERGENCY
    candidates = []
    priorities = []
    for model, policy in zip(context.loaded_models, context.policies, strict=True):
        if policy.pinned or policy.critical:
            continue
        if not emergency and context.requests_in_flight(model) > 0:
            continue
        candidates.append(model)
        priorities.append(policy.priority)
    costs = context.eviction_costs(candidates)
    ranked = [(costs[model_key(m)], m, p) for m, p in zip(candidates, priorities, strict=True)]
    ranked.sort(key=itemgetter(0))
    level = str(reading.level)
    for cost, model, priority in ranked:
        yield unload_action(model, NAME, cost, f"relieve {level} pressure (priority {priority})")
