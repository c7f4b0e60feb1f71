"""Shrink context: reload a loaded model with a smaller context window.

Cost 3 to 9, rising with the model's priority above the lowest loaded one (the reload takes
seconds and drops its prompt cache), so the lowest priority is shrunk first and shrinking always
goes before evicting (10 and up). The new context is the old one times ``[governor]
shrink_factor``, never below ``min_context_tokens`` (per model or governor). The bytes it expects
to free are the estimate at the old context minus at the new one, so a model no estimator can
size is not proposed. Pinned and critical models and models serving a request are left alone;
the governor restores the old context once pressure has ended (``restore_after_s``).
"""

from __future__ import annotations

from collections.abc import Iterator

from memwarden.core.config import ModelPolicy, NoOptions
from memwarden.core.errors import MemwardenError
from memwarden.core.strategy import StrategyContext
from memwarden.core.types import (
    Action,
    ActionKind,
    LoadedModel,
    ModelRef,
    PressureLevel,
    PressureReading,
)
from memwarden.hookspecs import hookimpl

NAME = "shrink-context"
# Tuned through [governor] and [models."<name>"]; its own table takes no keys.
OPTIONS = NoOptions
COST = 3.0
# The most priority adds to the cost: shrinking stays below every eviction (10 and up).
PRIORITY_COST = 6.0
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.WARNING
# The action kinds it proposes (the governor asks only refuse-loads strategies whether
# loads are refused).
PROPOSES = frozenset({ActionKind.SHRINK_CONTEXT})


def shrink_cost(priority: int, lowest_priority: int) -> float:
    """3 for the lowest priority loaded, rising towards 9 with each step of priority above it."""
    steps = max(priority - lowest_priority, 0)
    return round(COST + PRIORITY_COST * steps / (steps + 1), 4)


@hookimpl
def on_pressure(reading: PressureReading, context: StrategyContext) -> Iterator[Action] | None:
    if reading.level < LEVEL:
        return None
    return _cheapest_first(context)


def _cheapest_first(context: StrategyContext) -> Iterator[Action]:
    config = context.config.governor
    policies = context.policies
    lowest = min((p.priority for p in policies), default=0)
    # (cost, model, policy, new context): the cost depends on priority alone, so candidates
    # are ranked before anything is sized, and only those the ladder reads are estimated.
    candidates: list[tuple[float, LoadedModel, ModelPolicy, int]] = []
    cost_of = {
        priority: shrink_cost(priority, lowest) for priority in {p.priority for p in policies}
    }
    for model, policy in zip(context.loaded_models, policies, strict=True):
        if policy.pinned or policy.critical:
            continue
        old = model.context_tokens
        floor = policy.min_context_tokens or config.min_context_tokens
        if old is None or old <= floor or context.requests_in_flight(model) > 0:
            continue
        new = max(int(old * config.shrink_factor), floor)
        candidates.append((cost_of[policy.priority], model, policy, new))
    candidates.sort(key=lambda candidate: candidate[0])
    # Bytes saved per (model, provider, old, new): instances of one model are sized once.
    savings: dict[tuple[str, str, int, int], int | None] = {}
    for cost, model, policy, new in candidates:
        old = model.context_tokens
        assert old is not None  # filtered above
        key = (model.name, model.provider, old, new)
        if key in savings:
            saved = savings[key]
        else:
            ref = ModelRef(name=model.name, provider=model.provider)
            try:
                saved = (
                    context.estimate(ref, old).total_bytes - context.estimate(ref, new).total_bytes
                )
            except MemwardenError:
                saved = None
            savings[key] = saved
        if saved is None or saved <= 0:
            continue
        label = model.instance_id or model.name
        yield Action(
            kind=ActionKind.SHRINK_CONTEXT,
            strategy=NAME,
            description=f"reload {label} with {new} instead of {old} tokens of context "
            f"(priority {policy.priority})",
            expected_freed_bytes=saved,
            cost=cost,
            model=model.name,
            provider=model.provider,
            instance_id=model.instance_id,
            context_tokens=new,
            from_context_tokens=old,
        )
