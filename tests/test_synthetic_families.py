"""The real llama.cpp against the estimate for two more architecture families: a Llama with
grouped-query attention and a Mamba, written with real shapes and zero weights
(benchmarks/synthetic_models.py; no small model of either ships on the package index)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memwarden.core.types import ModelRef
from memwarden.plugins.gguf_estimator import estimate_file

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MiB = 1 << 20


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("llama_cpp")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from synthetic_models import synthetic_model
    finally:
        sys.path.remove(str(BENCHMARKS))
    folder = tmp_path_factory.mktemp("synthetic")
    return {name: synthetic_model(name, folder) for name in ("llama", "mamba")}


def _measure(path: Path, runtime: str, ctx: int) -> dict:
    config = {"path": str(path), "runtime": runtime, "ctx": ctx, "settings": {}}
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "estimate_accuracy.py"), "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _estimate(path: Path, runtime: str, ctx: int):
    options = {"runtime": runtime, "prompt_tokens": min(ctx // 2, 1500)}
    return estimate_file(ModelRef(name=path.stem), path, ctx, options)


@pytest.mark.parametrize("family", ["llama", "mamba"])
def test_embedded_committed_figure_is_within_2_percent_of_the_heap(models, family):
    measured = _measure(models[family], "embedded", 4096)
    estimate = _estimate(models[family], "embedded", 4096)
    assert abs(estimate.total_bytes - measured["heap_bytes"]) <= 0.02 * measured["heap_bytes"]


@pytest.mark.parametrize("family", ["llama", "mamba"])
def test_embedded_resident_figure_is_within_16_mib_of_rss(models, family):
    measured = _measure(models[family], "embedded", 4096)
    estimate = _estimate(models[family], "embedded", 4096)
    assert abs(estimate.resident_bytes - measured["anon_bytes"]) <= 16 * MiB
