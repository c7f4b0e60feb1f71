"""Shrink context: reload a loaded model with a smaller context window.

Cost 3 (the reload takes seconds and drops its prompt cache). The new context is the old one
times ``[governor] shrink_factor``, never below ``min_context_tokens`` (per model or governor).
The bytes it expects to free are ``warden.estimate`` at the old context minus at the new one,
so a model no estimator can size is not proposed. Pinned models and models serving a request are
left alone.
"""

from __future__ import annotations

from memwarden.core.errors import MemwardenError
from memwarden.core.governor import SHRINK_CONTEXT, Governor
from memwarden.core.types import Action, ModelRef, PressureLevel, PressureReading
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

NAME = "shrink-context"
COST = 3.0


@hookimpl
def on_pressure(reading: PressureReading, warden: Warden) -> list[Action] | None:
    if reading.level < PressureLevel.WARNING:
        return None
    governor = Governor.for_warden(warden)
    config = warden.config.governor
    actions = []
    for model in governor.loaded_models():
        policy = governor.policy(model)
        if policy.pinned or policy.critical or model.requests_in_flight > 0:
            continue
        old = model.context_tokens
        floor = policy.min_context_tokens or config.min_context_tokens
        if old is None or old <= floor:
            continue
        new = max(int(old * config.shrink_factor), floor)
        ref = ModelRef(name=model.name, provider=model.provider)
        try:
            saved = warden.estimate(ref, old).total_bytes - warden.estimate(ref, new).total_bytes
        except MemwardenError:
            continue
        if saved <= 0:
            continue
        label = model.instance_id or model.name
        actions.append(
            Action(
                kind=SHRINK_CONTEXT,
                strategy=NAME,
                description=f"reload {label} with {new} instead of {old} tokens of context",
                expected_freed_bytes=saved,
                cost=COST,
                model=model.name,
                provider=model.provider,
                params={
                    "context_tokens": new,
                    "from_context_tokens": old,
                    **({"instance": model.instance_id} if model.instance_id else {}),
                },
            )
        )
    return actions
