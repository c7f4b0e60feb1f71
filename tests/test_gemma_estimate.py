"""The real Gemma 3 270M Q4_K_M file: its header, and the estimate against a real llama.cpp load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memwarden.core.types import ModelRef
from memwarden.estimation.gguf import read_model
from memwarden.plugins.gguf_estimator import estimate_file

pytestmark = pytest.mark.slow

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "estimate_accuracy.py"
MiB = 1 << 20


def test_real_gemma_header_is_read(gemma_gguf):
    model = read_model(gemma_gguf)
    assert model.architecture == "gemma3"
    assert len(model.tensors) == 236
    assert len(model.metadata["tokenizer.ggml.tokens"]) == 262_144
    assert model.metadata["gemma3.attention.sliding_window"] == 512


def test_real_gemma_weights_fill_the_file_after_its_header(gemma_gguf):
    model = read_model(gemma_gguf)
    from memwarden.estimation.gguf import read_header

    header = read_header(gemma_gguf)
    assert model.tensor_bytes() == header.file_bytes - header.data_offset


def _measure(gemma_gguf: Path, runtime: str, ctx: int, settings: dict) -> dict:
    config = {"path": str(gemma_gguf), "runtime": runtime, "ctx": ctx, "settings": settings}
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_embedded_committed_figure_is_within_2_percent_of_the_heap(gemma_gguf):
    pytest.importorskip("llama_cpp")
    measured = _measure(gemma_gguf, "embedded", 8192, {"type_k": "q8_0", "type_v": "q8_0"})
    options = {"runtime": "embedded", "kv_type": "q8_0", "prompt_tokens": 1500}
    estimate = estimate_file(ModelRef(name="gemma"), Path(gemma_gguf), 8192, options)
    assert abs(estimate.total_bytes - measured["heap_bytes"]) <= 0.02 * measured["heap_bytes"]


def test_llama_cpp_python_resident_figure_is_within_16_mib_of_rss(gemma_gguf):
    pytest.importorskip("llama_cpp")
    measured = _measure(gemma_gguf, "llama-cpp-python", 4096, {})
    options = {"runtime": "llama-cpp-python", "prompt_tokens": 1500}
    estimate = estimate_file(ModelRef(name="gemma"), Path(gemma_gguf), 4096, options)
    private = estimate.resident_bytes - estimate.resident.mapped_weights_bytes
    assert abs(private - measured["anon_bytes"]) <= 16 * MiB
