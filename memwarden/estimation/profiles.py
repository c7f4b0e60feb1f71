"""What each runtime does by default, as estimate options: ``--runtime NAME``.

One table, documented with its sources in docs/estimation.md ("Runtime profiles"). A model named
through a provider (``ModelRef.provider``) takes that provider's profile; options given
explicitly override the profile's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# Each profile: the estimate_model_size options the runtime's defaults amount to.
PROFILES: dict[str, dict[str, Any]] = {
    # llama.cpp's common params (common/common.h): -b 2048, -ub 512, -fa auto (on for the CPU
    # and GPU backends), --swa-full off, f16 cache, mmap on, one sequence per slot.
    "llama-server": {
        "batch_tokens": 2048,
        "ubatch_tokens": 512,
        "flash_attention": True,
        "swa_full": False,
        "kv_type": "f16",
        "mmap": True,
    },
    # llama_cpp.Llama's keyword defaults: n_batch 512, n_ubatch 512, flash_attn False, swa_full
    # left to llama_context_default_params (true), use_mmap True; the class also allocates its
    # own arrays (scores of n_batch x n_vocab floats among them).
    "llama-cpp-python": {
        "batch_tokens": 512,
        "ubatch_tokens": 512,
        "flash_attention": False,
        "swa_full": True,
        "kv_type": "f16",
        "mmap": True,
        "binding": "llama-cpp-python",
    },
    # Ollama 0.33 (ollama/ollama v0.33.0-rc2, fb30760): every GGUF model runs in llama-server,
    # launched with -c num_ctx x OLLAMA_NUM_PARALLEL and -np OLLAMA_NUM_PARALLEL
    # (llm/llama_server.go:375-376), -b and -ub both num_batch (appendBatchArgs, :590-592),
    # --flash-attn auto unless OLLAMA_FLASH_ATTENTION is set (LlamaServerFlashAttention,
    # :597-612; auto is on for the CPU, Metal, CUDA 6.0+, ROCm and Vulkan, ml/device.go:571),
    # --cache-type-k/-v OLLAMA_KV_CACHE_TYPE only when set (:394-396, else llama-server's f16),
    # no --swa-full, mmap unless use_mmap is false (appendLoadModeArgs). num_batch defaults to
    # 512, and to 1,024 or 2,048 above 4,096 or 32,768 tokens of context (server/sched.go:798-801,
    # generationBatchForContext): :func:`ollama_batch_tokens`.
    "ollama": {
        "batch_tokens": 512,
        "ubatch_tokens": 512,
        "flash_attention": True,
        "swa_full": False,
        "kv_type": "f16",
        "mmap": True,
    },
    # LM Studio's llama.cpp engine (lmstudio-ai/lmstudio-js, packages/lms-kv-config/src/schema.ts
    # at 6ec11db): llm.load.llama.evalBatchSize 2048 (line 354), physicalBatchSize 512 (356-363),
    # flashAttention false (365), tryMmap true (484), k/vCacheQuantizationType f16 unchecked
    # (486-497), offloadKVCacheToGpu true (328), numParallelSessions 4 sharing one unified KV
    # cache, useUnifiedKvCache true (336-341): one cache of contextLength cells, sized here as
    # one sequence.
    "lmstudio": {
        "batch_tokens": 2048,
        "ubatch_tokens": 512,
        "flash_attention": False,
        "swa_full": False,
        "kv_type": "f16",
        "mmap": True,
        "kv_unified": True,
    },
    # memwarden's worker (plugins/llamacpp_worker.py RUNTIME_SETTINGS): as llama-server, but
    # weights read into private memory so that ending the process frees every byte.
    "embedded": {
        "batch_tokens": 2048,
        "ubatch_tokens": 512,
        "flash_attention": True,
        "swa_full": False,
        "kv_type": "f16",
        "mmap": False,
    },
}
# The profile a model named through a provider takes.
PROVIDER_PROFILES = {"ollama": "ollama", "lmstudio": "lmstudio", "llamacpp": "embedded"}


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def ollama_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The options Ollama's server environment sets: OLLAMA_KV_CACHE_TYPE,
    OLLAMA_FLASH_ATTENTION and OLLAMA_NUM_PARALLEL (a quantised cache needs flash attention,
    which Ollama then turns on as llama.cpp requires)."""
    options: dict[str, Any] = {}
    if environ.get("OLLAMA_FLASH_ATTENTION"):
        options["flash_attention"] = _truthy(environ["OLLAMA_FLASH_ATTENTION"])
    cache = environ.get("OLLAMA_KV_CACHE_TYPE", "").strip().lower()
    if cache:
        options["kv_type"] = cache
    parallel = environ.get("OLLAMA_NUM_PARALLEL", "").strip()
    if parallel.isdigit() and int(parallel) > 0:
        options["parallel"] = int(parallel)
    return options


# Ollama's automatic num_batch by the context of all sequences (server/sched.go:798-801,
# generationBatchForContext): above 32,768 tokens 2,048, above 4,096 1,024, else 512. (On a GPU
# it steps down again when the larger batch would not fit; a CPU load always fits.)
OLLAMA_BATCH_STEPS = ((32_768, 2048), (4096, 1024))


def ollama_batch_tokens(context_tokens: int) -> int:
    """The num_batch Ollama picks for ``context_tokens`` (num_ctx x parallel sequences) when no
    num_batch is given; it is both llama-server's -b and -ub."""
    for above, batch in OLLAMA_BATCH_STEPS:
        if context_tokens > above:
            return batch
    return 512


def ollama_context_tokens(environ: Mapping[str, str] | None = None, vram_bytes: int = 0) -> int:
    """Ollama's default context: OLLAMA_CONTEXT_LENGTH, else by the GPUs' total memory
    (server/routes.go:2048-2057): 262,144 tokens from 47 GiB, 32,768 from 23 GiB, else 4,096."""
    value = (environ if environ is not None else os.environ).get("OLLAMA_CONTEXT_LENGTH", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    if vram_bytes >= 47 << 30:
        return 262_144
    if vram_bytes >= 23 << 30:
        return 32_768
    return 4096


def profile_options(
    name: str | None,
    provider: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    context_tokens: int | None = None,
    parallel: int | None = None,
) -> dict[str, Any]:
    """The options of runtime profile ``name``, else of ``provider``'s runtime, else none.

    With ``context_tokens`` (per sequence) the rules that depend on the run apply: Ollama's
    num_batch grows with the context of all its sequences (``parallel`` given, else its
    environment's). Raises ValueError for an unknown profile name.
    """
    chosen = name or PROVIDER_PROFILES.get(provider or "")
    if chosen is None:
        return {}
    if chosen not in PROFILES:
        raise ValueError(f"unknown runtime {chosen!r}; use one of {', '.join(PROFILES)}")
    options = dict(PROFILES[chosen])
    if chosen == "ollama":
        options.update(ollama_environment(environ if environ is not None else os.environ))
        if context_tokens:
            sequences = parallel or int(options.get("parallel") or 1)
            batch = ollama_batch_tokens(context_tokens * sequences)
            options["batch_tokens"] = options["ubatch_tokens"] = batch
    return options
