"""Model shapes from the metadata a provider reports (Ollama's ``/api/show`` ``model_info``,
LM Studio's model info), for when the model file itself is out of reach."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memwarden.estimation.gguf import ArraySummary
from memwarden.estimation.sizing import (
    BITS_PER_WEIGHT,
    ModelShape,
    parameter_count,
    quantization_name,
    shape_from_metadata,
)

# When a provider leaves the vocabulary out (Ollama does unless asked verbosely): Llama 3's.
ASSUMED_VOCAB_SIZE = 128_256
# A dense transformer has about this many tensors per block (norms, q/k/v/o, gate/up/down).
TENSORS_PER_BLOCK = 11
SIZE_KEYS = ("size_bytes", "sizeBytes", "size")


def split_metadata(metadata: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(model_info, details) from a whole /api/show response or from model_info alone."""
    info = metadata.get("model_info")
    details = metadata.get("details")
    return (
        info if isinstance(info, Mapping) else metadata,
        details if isinstance(details, Mapping) else {},
    )


def reported_size(metadata: Mapping[str, Any]) -> int | None:
    for key in SIZE_KEYS:
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def weights_from_metadata(
    metadata: Mapping[str, Any], info: Mapping[str, Any], details: Mapping[str, Any]
) -> tuple[int, str] | None:
    """Weight bytes and where they came from, or None."""
    size = reported_size(metadata) or reported_size(info)
    if size:
        return size, "the size the provider reports"
    params = parameter_count(info.get("general.parameter_count")) or parameter_count(
        details.get("parameter_size")
    )
    quant = quantization_name(info.get("general.file_type")) or quantization_name(
        details.get("quantization_level")
    )
    if params and quant:
        bits = BITS_PER_WEIGHT[quant]
        return int(params * bits / 8), f"{params:,} parameters at {bits:g} bits ({quant})"
    return None


def shape_from_provider(metadata: Mapping[str, Any]) -> tuple[ModelShape, list[str]] | None:
    info, details = split_metadata(metadata)
    arch = info.get("general.architecture")
    if not isinstance(arch, str) or f"{arch}.block_count" not in info:
        return None
    weights = weights_from_metadata(metadata, info, details)
    if weights is None:
        return None
    weights_bytes, weights_source = weights
    notes = [f"weights from {weights_source}"]
    tokens = info.get("tokenizer.ggml.tokens")
    has_tokens = isinstance(tokens, list | ArraySummary) and len(tokens) > 0
    vocab = len(tokens) if has_tokens else info.get(f"{arch}.vocab_size")
    if not isinstance(vocab, int) or vocab <= 0:
        vocab = ASSUMED_VOCAB_SIZE
        notes.append(f"vocabulary size not reported; assumed {vocab:,}")
    layers = info[f"{arch}.block_count"]
    shape = shape_from_metadata(
        info,
        weights_bytes=weights_bytes,
        vocab_size=vocab,
        tensor_count=int(layers) * TENSORS_PER_BLOCK + 3 if isinstance(layers, int) else 0,
    )
    return shape, notes
