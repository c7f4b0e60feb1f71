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
    # Ollama's runner: num_batch 512 (n_ubatch = n_batch), cache type OLLAMA_KV_CACHE_TYPE,
    # flash attention OLLAMA_FLASH_ATTENTION, OLLAMA_NUM_PARALLEL sequences, mmap on.
    "ollama": {
        "batch_tokens": 512,
        "ubatch_tokens": 512,
        "flash_attention": False,
        "swa_full": False,
        "kv_type": "f16",
        "mmap": True,
    },
    # LM Studio's llama.cpp engine defaults: evaluation batch 512, flash attention off, f16
    # cache, "try mmap" on.
    "lmstudio": {
        "batch_tokens": 512,
        "ubatch_tokens": 512,
        "flash_attention": False,
        "swa_full": False,
        "kv_type": "f16",
        "mmap": True,
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


def ollama_context_tokens(environ: Mapping[str, str] | None = None) -> int:
    """Ollama's default context: OLLAMA_CONTEXT_LENGTH, else 4,096 tokens."""
    value = (environ if environ is not None else os.environ).get("OLLAMA_CONTEXT_LENGTH", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else 4096


def profile_options(
    name: str | None, provider: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The options of runtime profile ``name``, else of ``provider``'s runtime, else none.

    Raises ValueError for an unknown profile name.
    """
    chosen = name or PROVIDER_PROFILES.get(provider or "")
    if chosen is None:
        return {}
    if chosen not in PROFILES:
        raise ValueError(f"unknown runtime {chosen!r}; use one of {', '.join(PROFILES)}")
    options = dict(PROFILES[chosen])
    if chosen == "ollama":
        options.update(ollama_environment(environ if environ is not None else os.environ))
    return options
