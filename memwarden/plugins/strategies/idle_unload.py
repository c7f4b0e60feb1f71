"""Idle unload: unload models nobody has used for a while.

Cost 1 to 1.5 (nobody is waiting on them; a bigger idle model is slightly cheaper to drop since
it frees more). The timeout is ``idle_unload_after_s`` of the model's ``[models."<name>"]``
policy, else of ``[governor]``; idleness is ``LoadedModel.idle_since`` as the runtime reports it,
or the governor's own record of the model's last use. Pinned and critical models, and models
serving a request, are kept.
"""

from __future__ import annotations

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext, unload_action
from memwarden.core.types import Action, ActionKind, PressureLevel, PressureReading
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
def on_pressure(reading: PressureReading, context: StrategyContext) -> list[Action] | None:
    if reading.level < LEVEL:
        return None
    now = context.now
    models = context.loaded_models
    largest = max((m.total_bytes for m in models), default=0)
    actions = []
    for model in models:
        policy = context.policy(model)
        timeout = policy.idle_unload_after_s
        if timeout is None:
            timeout = context.config.governor.idle_unload_after_s
        if timeout is None or policy.pinned or policy.critical:
            continue
        if context.requests_in_flight(model):
            continue
        last_used = max(
            (t for t in (model.idle_since, context.usage(model).last_used_at) if t),
            default=None,
        )
        if last_used is None or now - last_used < timeout:
            continue
        cost = 1.0 + 0.5 * (1.0 - model.total_bytes / largest) if largest else 1.0
        actions.append(
            unload_action(model, NAME, round(cost, 4), f"idle for {now - last_used:.0f} s")
        )
    return actions
