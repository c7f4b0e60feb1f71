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


def test_estimate_is_within_target_of_a_real_llama_cpp_load(gemma_gguf):
    pytest.importorskip("llama_cpp")
    config = {
        "path": str(gemma_gguf),
        "ctx": 8192,
        "kv_type": "q8_0",
        "flash_attention": True,
        "swa_full": False,
        "parallel": 1,
    }
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    measured = json.loads(completed.stdout.strip().splitlines()[-1])["heap_bytes"]
    options = {key: config[key] for key in ("kv_type", "flash_attention", "swa_full", "parallel")}
    estimate = estimate_file(ModelRef(name="gemma"), Path(gemma_gguf), config["ctx"], options)
    assert abs(estimate.total_bytes - measured) <= max(0.05 * measured, 16 * MiB)
