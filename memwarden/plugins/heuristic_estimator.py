"""The estimator of last resort: parameter count x bits per weight, LOW confidence.

Used when neither the file nor a provider's layer shapes are at hand. The parameter count comes
from the metadata (``general.parameter_count``, Ollama's ``parameter_size``, LM Studio's
``paramsString``) or the model's name ("llama3.2:3b", "gemma-3-270m"); the quantisation from
``general.file_type``, ``quantization_level`` or the name, else Q4_K_M (what Ollama and LM
Studio download by default). The KV cache and compute buffer follow rules of thumb for modern
grouped-query-attention models; docs/estimation.md says how rough they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memwarden.core.config import NoOptions
from memwarden.core.errors import EstimateUnavailable
from memwarden.core.types import Confidence, MemoryEstimate, ModelRef
from memwarden.estimation.gguf import ggml_type
from memwarden.estimation.metadata import reported_size, split_metadata
from memwarden.estimation.sizing import (
    BITS_PER_WEIGHT,
    DEFAULT_UBATCH_TOKENS,
    F32_BYTES,
    MAX_RUN_CONTEXT,
    MAX_RUN_PARALLEL,
    MiB,
    parameter_count,
    quantization_name,
)
from memwarden.hookspecs import hookimpl

NAME = "heuristic-estimator"
# Takes no [plugins.heuristic-estimator] options: any key there is an unknown key.
OPTIONS = NoOptions
DEFAULT_QUANTIZATION = "Q4_K_M"
# f16 KV cache bytes per token per parameter: Llama 3 8B (32 layers x 8 KV heads x 128 x 2 x
# 2 bytes = 128 KiB per token for 8.0e9 parameters). Qwen 2.5 7B needs half, Llama 2 7B (no GQA)
# four times as much.
KV_F16_BYTES_PER_TOKEN_PER_PARAM = 131_072 / 8.03e9
# Logits for a full ubatch over a Llama-3-sized vocabulary dominate a CPU compute buffer.
ASSUMED_VOCAB_SIZE = 128_256
RUNTIME_OVERHEAD_BYTES = 64 * MiB
PARAM_KEYS = ("general.parameter_count", "parameter_size", "paramsString", "params_string")


def _first(mappings: tuple[Mapping[str, Any], ...], keys: tuple[str, ...]) -> Any:
    for mapping in mappings:
        for key in keys:
            if mapping.get(key) is not None:
                return mapping[key]
    return None


@hookimpl(trylast=True)
def estimate_model_size(
    model: ModelRef, context_tokens: int, options: dict[str, Any]
) -> MemoryEstimate | None:
    metadata = options.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    info, details = split_metadata(metadata)
    sources = (metadata, info, details)
    notes: list[str] = ["rule of thumb: no model file or layer shapes were available"]
    params = parameter_count(_first(sources, PARAM_KEYS)) or parameter_count(model.name)
    size = reported_size(metadata) or reported_size(info)
    if not params and size is None:  # a zero parameter count sizes nothing
        return None
    quant = quantization_name(
        _first(sources, ("general.file_type", "quantization_level"))
    ) or quantization_name(model.name)
    if quant is None:
        quant = DEFAULT_QUANTIZATION
        notes.append(f"quantisation unknown; assumed {quant}")
    bits = BITS_PER_WEIGHT[quant]
    if size is not None:
        weights = size
        params = params or int(size * 8 / bits)
        notes.append("weights: the size the provider reports")
    else:
        assert params is not None
        weights = int(params * bits / 8)
        notes.append(f"weights: {params:,} parameters x {bits:g} bits ({quant})")
    kv_type = str(options.get("kv_type") or "f16")
    try:
        kv_bytes_per_element = ggml_type(kv_type).bytes_per_element
    except ValueError:
        kv_bytes_per_element = 2.0
    parallel = int(options.get("parallel") or 1)
    if not (0 < context_tokens <= MAX_RUN_CONTEXT and 0 < parallel <= MAX_RUN_PARALLEL):
        raise EstimateUnavailable(
            f"{model.name}: cannot size {context_tokens:,} tokens x {parallel:,} sequences",
            hint=f"ask for 1 to {MAX_RUN_CONTEXT:,} tokens and 1 to {MAX_RUN_PARALLEL:,} sequences",
        )
    tokens = context_tokens * parallel
    kv = int(params * KV_F16_BYTES_PER_TOKEN_PER_PARAM * tokens * kv_bytes_per_element / 2)
    ubatch = min(int(options.get("ubatch_tokens") or DEFAULT_UBATCH_TOKENS), tokens)
    compute = ASSUMED_VOCAB_SIZE * ubatch * F32_BYTES
    return MemoryEstimate(
        model=model,
        context_tokens=context_tokens,
        weights_bytes=weights,
        kv_cache_bytes=kv,
        compute_bytes=compute,
        overhead_bytes=RUNTIME_OVERHEAD_BYTES,
        confidence=Confidence.LOW,
        estimator=NAME,
        notes=tuple(notes),
    )
