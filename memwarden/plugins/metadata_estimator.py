"""Sizes a model from the metadata its provider reports, when the file itself is out of reach.

Ollama's ``/api/show`` returns the GGUF metadata as ``model_info`` (``general.architecture``,
``<arch>.block_count``, ``<arch>.attention.head_count_kv``, ``general.parameter_count``,
``general.file_type``...); passed as ``options["metadata"]`` (the whole response or just
``model_info``), the same arithmetic as for a file applies. Without a tensor table the weights
come from the reported size, or the parameter count times the bits per weight of the file type;
the confidence is MEDIUM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memwarden.core.config import NoOptions
from memwarden.core.errors import EstimateUnavailable
from memwarden.core.types import Confidence, MemoryEstimate, ModelRef
from memwarden.estimation.metadata import shape_from_provider
from memwarden.estimation.sizing import ShapeError, memory_estimate
from memwarden.hookspecs import hookimpl

NAME = "metadata-estimator"
# Takes no [plugins.metadata-estimator] options: any key there is an unknown key.
OPTIONS = NoOptions


@hookimpl
def estimate_model_size(
    model: ModelRef, context_tokens: int, options: dict[str, Any]
) -> MemoryEstimate | None:
    metadata = options.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    try:
        found = shape_from_provider(metadata)
    except (ShapeError, ValueError, TypeError) as exc:
        raise EstimateUnavailable(
            f"{model.name}: the provider's metadata cannot be sized: {exc}",
            hint="give the path of the model's GGUF file instead",
        ) from None
    if found is None:
        return None
    shape, notes = found
    return memory_estimate(
        model,
        context_tokens,
        options,
        shape,
        confidence=Confidence.MEDIUM,
        estimator=NAME,
        notes=notes,
    )
