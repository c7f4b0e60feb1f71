"""Priority eviction: unload the models users would miss least, at CRITICAL and above.

Cost from :func:`memwarden.core.governor.eviction_cost`: 10 and up, dominated by priority, then
recency, frequency of use, and size. Pinned and critical models are never proposed. A model with
requests in flight is proposed only in an EMERGENCY (and costs 20 more).
"""

from __future__ import annotations

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext, model_key, unload_action
from memwarden.core.types import Action, ActionKind, PressureLevel, PressureReading
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
def on_pressure(reading: PressureReading, context: StrategyContext) -> list[Action] | None:
    if reading.level < LEVEL:
        return None
    emergency = reading.level >= PressureLevel.EMERGENCY
    candidates = []
    priorities = []
    for model in context.loaded_models:
        policy = context.policy(model)
        if policy.pinned or policy.critical:
            continue
        if context.requests_in_flight(model) > 0 and not emergency:
            continue
        candidates.append(model)
        priorities.append(policy.priority)
    costs = context.eviction_costs(candidates)
    level = str(reading.level)
    return [
        unload_action(
            model,
            NAME,
            costs[model_key(model)],
            f"relieve {level} pressure (priority {priority})",
        )
        for model, priority in zip(candidates, priorities, strict=True)
    ]
