"""Idle unload: unload models nobody has used for a while.

Cost 1 to 1.5 (nobody is waiting on them; a bigger idle model is slightly cheaper to drop since
it frees more). The timeout is ``idle_unload_after_s`` of the model's ``[models."<name>"]``
policy, else of ``[governor]``; idleness is ``LoadedModel.idle_since`` as the runtime reports it,
or the governor's own record of the model's last use. Pinned and critical models, and models
serving a request, are kept.
"""

from __future__ import annotations

from collections.abc import Iterator

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext, unload_action
from memwarden.core.types import (
    Action,
    ActionKind,
    LoadedModel,
    PressureLevel,
    PressureReading,
)
from memwarden.hookspecs import hookimpl

NAME = "idle-unload"
# Tuned through [governor] and [models."<name>"]; its own table takes no keys.
OPTIONS = NoOptions
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.WARNING
# The action kinds it proposes (the governor asks only refuse-loads strategies whether
# loads are refused).
PROPOSES = frozenset({ActionKind.UNLOAD})


@hookimpl
def on_pressure(reading: PressureReading, context: StrategyContext) -> Iterator[Action] | None:
    if reading.level < LEVEL:
        return None
    return _cheapest_first(context)


def _cheapest_first(context: StrategyContext) -> Iterator[Action]:
    now = context.now
    models = context.loaded_models
    default_timeout = context.config.governor.idle_unload_after_s
    largest = max((m.total_bytes for m in models), default=0)
    idle: list[tuple[float, float, LoadedModel]] = []
    for model, policy in zip(models, context.policies, strict=True):
        timeout = policy.idle_unload_after_s
        if timeout is None:
            timeout = default_timeout
        if timeout is None or policy.pinned or policy.critical:
            continue
        last_used = context.last_used(model)
        if last_used is None or now - last_used < timeout:
            continue
        if context.requests_in_flight(model):
            continue
        cost = 1.0 + 0.5 * (1.0 - model.total_bytes / largest) if largest else 1.0
        idle.append((round(cost, 4), now - last_used, model))
    # Cheapest first; an Action is built only for those the ladder reads.
    idle.sort(key=lambda item: item[0])
    for cost, idle_s, model in idle:
        yield unload_action(model, NAME, cost, f"idle for {idle_s:.0f} s")
