"""Picks the smallest capable model that fits now: the least memory for the request."""

from __future__ import annotations

from collections.abc import Sequence

from memwarden.core.config import NoOptions
from memwarden.core.picking import PickContext, capable
from memwarden.core.types import AvailableModel, ModelChoice, ModelRequest
from memwarden.core.units import format_bytes
from memwarden.hookspecs import hookimpl

OPTIONS = NoOptions


@hookimpl(trylast=True)
def pick_model(
    request: ModelRequest, candidates: Sequence[AvailableModel], context: PickContext
) -> ModelChoice | None:
    able = capable(request, candidates)
    if not able:
        return None
    best = min(able, key=lambda m: (m.size_bytes is None, m.size_bytes or 0, m.name))
    size = "unknown size" if best.size_bytes is None else format_bytes(best.size_bytes)
    return ModelChoice(
        model=best,
        reasons=(f"{best.name}: the smallest of {len(able)} capable models that fit now ({size})",),
        chooser="pick-smallest",
    )
