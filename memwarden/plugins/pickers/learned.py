"""Picks by what the usage history learned: among capable models with at least
``MIN_CALLS`` recorded calls, the highest success rate, then the lowest median latency."""

from __future__ import annotations

from collections.abc import Sequence

from memwarden.core.config import NoOptions
from memwarden.core.picking import MIN_CALLS, PickContext, capable, rank
from memwarden.core.types import AvailableModel, ModelChoice, ModelRequest
from memwarden.hookspecs import hookimpl

OPTIONS = NoOptions


@hookimpl
def pick_model(
    request: ModelRequest, candidates: Sequence[AvailableModel], context: PickContext
) -> ModelChoice | None:
    known = [
        m
        for m in capable(request, candidates)
        if (s := context.stats_of(m)) is not None and s.calls >= MIN_CALLS
    ]
    if not known:
        return None
    best = min(known, key=lambda m: rank(m, context))
    stats = context.stats_of(best)
    assert stats is not None
    return ModelChoice(
        model=best,
        reasons=(
            f"{best.name}: {stats.success_rate:.0%} of {stats.calls} recorded calls succeeded, "
            f"median latency {stats.median_latency_s:.2f} s"
            + (f", first token {stats.median_ttft_s:.2f} s" if stats.median_ttft_s else ""),
            f"best learned of {len(known)} capable models with {MIN_CALLS}+ calls",
        ),
        chooser="pick-learned",
    )
