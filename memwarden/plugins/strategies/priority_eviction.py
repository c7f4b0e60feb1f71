"""Priority eviction: unload the models users would miss least, at CRITICAL and above.

Cost from :func:`memwarden.core.governor.eviction_cost`: 10 and up, dominated by priority, then
recency, frequency of use, and size. Pinned and critical models are never proposed. A model with
requests in flight is proposed only in an EMERGENCY (and costs 20 more).
"""

from __future__ import annotations

from memwarden.core.governor import Governor, model_key, unload_action
from memwarden.core.types import Action, PressureLevel, PressureReading
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

NAME = "priority-eviction"


@hookimpl
def on_pressure(reading: PressureReading, warden: Warden) -> list[Action] | None:
    if reading.level < PressureLevel.CRITICAL:
        return None
    governor = Governor.for_warden(warden)
    emergency = reading.level >= PressureLevel.EMERGENCY
    candidates = []
    priorities = {}
    for model in governor.loaded_models():
        policy = governor.policy(model)
        if policy.pinned or policy.critical:
            continue
        if model.requests_in_flight > 0 and not emergency:
            continue
        candidates.append(model)
        priorities[model_key(model)] = policy.priority
    costs = governor.eviction_costs(candidates)
    return [
        unload_action(
            model,
            NAME,
            costs[model_key(model)],
            f"relieve {reading.level} pressure (priority {priorities[model_key(model)]})",
        )
        for model in candidates
    ]
