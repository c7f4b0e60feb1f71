"""The embedded llama.cpp provider: one worker process per model."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import psutil
import pytest

from memwarden.core.config import Config
from memwarden.core.errors import ModelNotFound, ProviderError
from memwarden.core.types import ModelRef
from memwarden.core.warden import Warden
from memwarden.plugins.llamacpp import LlamaCppOptions, LlamaCppProvider, process_memory_bytes

MIB = 1024**2
CONTEXT_TOKENS = 512


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_available_models_are_the_gguf_files_in_models_dir(tmp_path):
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (tmp_path / "notes.txt").write_text("not a model")
    provider = LlamaCppProvider(LlamaCppOptions(models_dir=str(tmp_path)))
    models = provider.available_models()
    assert [(m.name, m.size_bytes, m.gguf_path) for m in models] == [
        ("tiny", 64, str((tmp_path / "tiny.gguf").resolve()))
    ]


def test_unknown_model_is_model_not_found(tmp_path):
    provider = LlamaCppProvider(LlamaCppOptions(models_dir=str(tmp_path)))
    with pytest.raises(ModelNotFound, match="no GGUF file named 'missing'"):
        provider.load("missing")


def test_status_says_how_to_install_when_llama_cpp_is_missing(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a),
    )
    status = LlamaCppProvider().status()
    assert not status.reachable
    assert "llama-cpp-python is not installed" in status.reason


def test_a_worker_exits_when_the_process_that_started_it_is_killed():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from memwarden.plugins.llamacpp import Worker;"
            "w = Worker('m', Path('m.gguf'), None); print(w.pid, flush=True);"
            "import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker_pid = int(parent.stdout.readline())
    assert psutil.pid_exists(worker_pid)
    parent.kill()
    parent.wait()
    assert _wait_gone(worker_pid)


@pytest.mark.slow
def test_a_file_that_is_not_a_model_fails_to_load_with_the_runtimes_message(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 60)
    provider = LlamaCppProvider(LlamaCppOptions(models_dir=str(tmp_path)))
    with pytest.raises(ProviderError, match=r"broken .*load failed: ValueError"):
        provider.load("broken", context_tokens=CONTEXT_TOKENS)
    assert provider.loaded_models() == []


@pytest.fixture
def gemma_provider(gemma_gguf):
    provider = LlamaCppProvider(LlamaCppOptions(models=(str(gemma_gguf),)))
    yield provider
    provider.unload_all()


@pytest.mark.slow
def test_loaded_workers_memory_matches_the_estimate(gemma_provider, gemma_gguf):
    loaded = gemma_provider.load(gemma_gguf.stem, context_tokens=CONTEXT_TOKENS)
    estimate = Warden(Config()).estimate(
        ModelRef(name=gemma_gguf.stem, path=str(gemma_gguf)), CONTEXT_TOKENS
    )
    [worker] = gemma_provider._workers.values()
    # What llama.cpp allocated in the worker, measured there, against the estimate: the same
    # target as benchmarks/estimate_accuracy.py, 5 % or 16 MiB, whichever is larger.
    assert estimate.estimator == "gguf-estimator"
    tolerance = max(0.05 * estimate.total_bytes, 16 * MIB)
    assert abs(worker.allocated_bytes - estimate.total_bytes) <= tolerance
    # The model is counted at that ceiling; what is resident now is measured beside it.
    assert loaded.total_bytes >= worker.allocated_bytes
    assert gemma_gguf.stat().st_size <= loaded.resident_bytes <= loaded.total_bytes
    assert loaded.context_tokens == CONTEXT_TOKENS
    assert loaded.pid != psutil.Process().pid


def _tree_bytes() -> int:
    """Memory held by this test process and every process it started."""
    me = psutil.Process()
    total = 0
    for process in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process_memory_bytes(process.pid)
    return total


@pytest.mark.slow
def test_unload_ends_the_worker_and_its_memory_returns(gemma_provider, gemma_gguf):
    # System-wide free memory moves with whatever else runs; this process tree does not.
    before = _tree_bytes()
    loaded = gemma_provider.load(gemma_gguf.stem, context_tokens=CONTEXT_TOKENS)
    while_loaded = _tree_bytes()
    gemma_provider.unload(gemma_gguf.stem)
    assert _wait_gone(loaded.pid)
    after = _tree_bytes()
    assert gemma_provider.loaded_models() == []
    assert while_loaded - after >= 0.9 * loaded.resident_bytes
    assert after - before < 16 * MIB


@pytest.mark.slow
def test_generate_answers_and_counts_tokens(gemma_provider, gemma_gguf):
    result = gemma_provider.generate(gemma_gguf.stem, "The capital of France is", max_tokens=8)
    # Greedy decoding is deterministic: the exact text, with no NUL padding between pieces.
    assert result.text == " the capital of the country of France."
    assert (result.prompt_tokens, result.completion_tokens) == (6, 8)


@pytest.mark.slow
def test_a_model_idle_past_its_keep_alive_is_unloaded(gemma_gguf):
    provider = LlamaCppProvider(LlamaCppOptions(models=(str(gemma_gguf),), keep_alive_s=0.2))
    loaded = provider.load(gemma_gguf.stem, context_tokens=CONTEXT_TOKENS)
    time.sleep(0.3)
    assert provider.loaded_models() == []
    assert _wait_gone(loaded.pid)


@pytest.mark.slow
def test_a_worker_loaded_with_runtime_options_allocates_what_the_same_options_estimate(
    gemma_provider, gemma_gguf
):
    options = {"ubatch_tokens": 256, "kv_type": "q8_0"}
    gemma_provider.load(gemma_gguf.stem, context_tokens=CONTEXT_TOKENS, options=options)
    ref = ModelRef(name=gemma_gguf.stem, path=str(gemma_gguf))
    warden = Warden(Config())
    sized = warden.estimate(ref, CONTEXT_TOKENS, runtime="embedded", **options)
    default = warden.estimate(ref, CONTEXT_TOKENS, runtime="embedded")
    [worker] = gemma_provider._workers.values()
    assert worker.settings == {
        "n_ubatch": 256,
        "type_k": "q8_0",
        "type_v": "q8_0",
        "flash_attn": True,  # a quantised V cache needs it
    }
    tolerance = max(0.05 * sized.total_bytes, 16 * MIB)
    # The options were honoured: the allocation is the estimate with them, not without them
    # (half the micro-batch halves most of the compute buffer, about 250 MiB).
    assert abs(worker.allocated_bytes - sized.total_bytes) <= tolerance
    assert default.total_bytes - worker.allocated_bytes > 4 * tolerance
