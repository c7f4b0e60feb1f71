"""Picks the first model of the caller's own names, then of ``[pick] prefer``, that can serve the
request and fits now."""

from __future__ import annotations

from collections.abc import Sequence

from memwarden.core.config import NoOptions
from memwarden.core.picking import PickContext, capable
from memwarden.core.providers import same_model
from memwarden.core.types import AvailableModel, ModelChoice, ModelRequest
from memwarden.hookspecs import hookimpl

OPTIONS = NoOptions  # [pick] prefer and [pick.aliases] configure it


@hookimpl(tryfirst=True)
def pick_model(
    request: ModelRequest, candidates: Sequence[AvailableModel], context: PickContext
) -> ModelChoice | None:
    able = capable(request, candidates)
    for source, names in (
        ("asked for", request.preferred),
        ("first in [pick] prefer", context.config.pick.prefer),
    ):
        for rank, name in enumerate(names, start=1):
            for model in able:
                if same_model(model.name, name):
                    where = f"{source}" if source == "asked for" else f"{source} (#{rank})"
                    return ModelChoice(
                        model=model,
                        reasons=(f"{model.name}: {where}, capable and fits now",),
                        chooser="pick-preference",
                    )
    return None
