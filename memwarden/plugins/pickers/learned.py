"""Picks by what the usage history learned: among capable models with at least
``MIN_CALLS`` recorded calls, the highest success rate, then the lowest median latency."""

from __future__ import annotations

from collections.abc import Sequence

from memwarden.core.config import NoOptions
from memwarden.core.picking import PickContext, capable
from memwarden.core.types import AvailableModel, ModelChoice, ModelRequest
from memwarden.hookspecs import hookimpl

OPTIONS = NoOptions
# Fewer calls than this teach nothing: the model is judged by size instead.
MIN_CALLS = 20


def rank(model: AvailableModel, context: PickContext) -> tuple[float, float, int, str]:
    """Sort key: learned success (higher first), median latency, then size and name."""
    stats = context.stats_of(model)
    known = stats is not None and stats.calls >= MIN_CALLS
    return (
        -(stats.success_rate if known and stats else 0.0),
        stats.median_latency_s if known and stats else float("inf"),
        model.size_bytes or 0,
        model.name,
    )


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
