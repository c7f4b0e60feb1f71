"""The embedded llama.cpp provider: one worker process per model."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from memwarden.core.config import Config
from memwarden.core.errors import EstimateUnavailable, ModelNotFound, ProviderError
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


def _kv_cache_bytes(metadata: dict[str, str], context_tokens: int) -> int:
    """K and V, f16, for every layer: what llama.cpp allocates at this context length."""
    arch = metadata["general.architecture"]
    layers = int(metadata[f"{arch}.block_count"])
    kv_heads = int(metadata[f"{arch}.attention.head_count_kv"])
    key_length = int(metadata[f"{arch}.attention.key_length"])
    value_length = int(metadata[f"{arch}.attention.value_length"])
    return layers * kv_heads * (key_length + value_length) * context_tokens * 2


def _expected_bytes(path: Path, metadata: dict[str, str]) -> tuple[int, str]:
    """The estimator's answer where one is installed; else the file plus the KV cache."""
    warden = Warden(Config())
    try:
        estimate = warden.estimate(ModelRef(name=path.stem, path=str(path)), CONTEXT_TOKENS)
        return estimate.total_bytes, estimate.estimator
    except EstimateUnavailable:
        kv_cache = _kv_cache_bytes(metadata, CONTEXT_TOKENS)
        return path.stat().st_size + kv_cache, "file + KV cache"


@pytest.fixture
def gemma_provider(gemma_gguf):
    provider = LlamaCppProvider(LlamaCppOptions(models=(str(gemma_gguf),)))
    yield provider
    provider.unload_all()


@pytest.mark.slow
def test_loaded_workers_memory_matches_the_estimate(gemma_provider, gemma_gguf):
    loaded = gemma_provider.load(gemma_gguf.stem, context_tokens=CONTEXT_TOKENS)
    metadata = gemma_provider.model_metadata(gemma_gguf.stem)
    expected, source = _expected_bytes(gemma_gguf, metadata)
    # The worker also holds the Python interpreter, llama.cpp's code and its compute buffers
    # (about 80 MiB on x86-64 Linux); 35 % covers them for this small model.
    assert loaded.total_bytes == pytest.approx(expected, rel=0.35), source
    assert loaded.total_bytes >= gemma_gguf.stat().st_size
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
    assert while_loaded - after >= 0.95 * loaded.total_bytes
    assert after - before < 16 * MIB


@pytest.mark.slow
def test_generate_answers_and_counts_tokens(gemma_provider, gemma_gguf):
    result = gemma_provider.generate(gemma_gguf.stem, "The capital of France is", max_tokens=4)
    assert result.completion_tokens == 4
    assert result.prompt_tokens > 0
    assert result.text


@pytest.mark.slow
def test_a_model_idle_past_its_keep_alive_is_unloaded(gemma_gguf):
    provider = LlamaCppProvider(LlamaCppOptions(models=(str(gemma_gguf),), keep_alive_s=0.2))
    loaded = provider.load(gemma_gguf.stem, context_tokens=CONTEXT_TOKENS)
    time.sleep(0.3)
    assert provider.loaded_models() == []
    assert _wait_gone(loaded.pid)
