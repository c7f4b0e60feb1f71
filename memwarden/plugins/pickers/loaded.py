"""Picks a capable model that is already loaded: no load to wait for, no memory to find. Among
several, the one with the best learned success and latency, else the smallest."""

from __future__ import annotations

from collections.abc import Sequence

from memwarden.core.config import NoOptions
from memwarden.core.picking import PickContext, capable, rank
from memwarden.core.types import AvailableModel, ModelChoice, ModelRequest
from memwarden.hookspecs import hookimpl

OPTIONS = NoOptions


@hookimpl
def pick_model(
    request: ModelRequest, candidates: Sequence[AvailableModel], context: PickContext
) -> ModelChoice | None:
    loaded = [m for m in capable(request, candidates) if context.is_loaded(m)]
    if not loaded:
        return None
    best = min(loaded, key=lambda m: rank(m, context))
    reasons = [f"{best.name}: already loaded in {best.provider}, no load needed"]
    stats = context.stats_of(best)
    if stats is not None and len(loaded) > 1:
        reasons.append(
            f"best of {len(loaded)} loaded: {stats.success_rate:.0%} of {stats.calls} calls "
            f"succeeded, median {stats.median_latency_s:.2f} s"
        )
    return ModelChoice(model=best, reasons=tuple(reasons), chooser="pick-loaded")
