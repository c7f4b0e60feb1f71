from __future__ import annotations

import json

import pytest
from gguf_files import isolate_model_stores, write_model


@pytest.fixture(autouse=True)
def no_model_stores(monkeypatch, tmp_path_factory):
    isolate_model_stores(monkeypatch, tmp_path_factory.mktemp("home"))


@pytest.fixture
def model_file(tmp_path):
    return write_model(tmp_path / "tiny.gguf")


def test_estimate_json_has_the_breakdown(run_cli, model_file):
    result = run_cli("estimate", str(model_file), "--ctx", "2048", "--json")
    assert result.exit_code == 0
    data = result.json()
    parts = ("weights_bytes", "kv_cache_bytes", "compute_bytes", "overhead_bytes")
    assert data["total_bytes"] == sum(data[part] for part in parts)
    assert data["kv_cache_bytes"] == 4 * 2048 * 2 * 64 * 2
    assert data["estimator"] == "gguf-estimator"


def test_estimate_table_names_every_part(run_cli, model_file):
    result = run_cli("estimate", str(model_file))
    assert result.exit_code == 0
    for part in ("weights", "KV cache", "compute buffer", "runtime overhead", "total"):
        assert part in result.stdout


def test_estimate_passes_kv_type_and_parallel(run_cli, model_file):
    base = run_cli("estimate", str(model_file), "--json").json()["kv_cache_bytes"]
    data = run_cli(
        "estimate", str(model_file), "--kv-type", "q8_0", "--parallel", "2", "--json"
    ).json()
    assert data["kv_cache_bytes"] == base * 2 * 34 // 64


def test_estimate_from_a_metadata_file(run_cli, tmp_path):
    show = {
        "details": {"quantization_level": "Q4_K_M"},
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": 1_000_000_000,
            "llama.block_count": 16,
            "llama.embedding_length": 2048,
            "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 8,
            "llama.context_length": 131072,
            "llama.vocab_size": 128256,
        },
    }
    path = tmp_path / "show.json"
    path.write_text(json.dumps(show))
    data = run_cli("estimate", "llama3.2:1b", "--metadata", str(path), "--json").json()
    assert data["estimator"] == "metadata-estimator"
    assert data["confidence"] == "medium"


def test_estimate_of_a_truncated_file_fails_with_the_reason(run_cli, model_file, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model_file.read_bytes()[:500])
    result = run_cli("estimate", str(cut))
    assert result.exit_code == 1
    assert "truncated at byte" in result.stderr
    assert "hint:" in result.stderr


def test_fit_answers_yes_with_exit_0(run_cli, model_file):
    # Pinned to system RAM, so the answer is the same on a host with a GPU.
    result = run_cli("fit", str(model_file), "--pool", "system", "--json")
    assert result.exit_code == 0
    data = result.json()
    assert data["fits"] is True
    assert data["pools"][0]["pool_id"] == "system"
    assert data["headroom_bytes"] > 0


def test_fit_answers_no_with_exit_3(run_cli, model_file, write_config):
    config = write_config("[budget]\nsafety_margin_percent = 100.0\n")
    result = run_cli("--config", str(config), "fit", str(model_file), "--pool", "system", "--json")
    assert result.exit_code == 3
    assert result.json()["fits"] is False


def test_fit_into_an_unknown_pool_is_bad_usage(run_cli, model_file):
    result = run_cli("fit", str(model_file), "--pool", "cuda:7")
    assert result.exit_code == 2
    assert "no memory pool 'cuda:7'" in result.stderr


def test_fit_max_ctx_stops_at_the_trained_context(run_cli, model_file):
    data = run_cli("fit", str(model_file), "--pool", "system", "--max-ctx", "--json").json()
    assert data["max_context_tokens"] == 8192
    assert data["memory_limit_context_tokens"] > 8192


def test_fit_with_gpu_layers_and_no_gpu_is_bad_usage(run_cli, model_file, write_config):
    config = write_config('[plugins]\ndisabled = ["nvidia", "amd", "apple"]\n')
    result = run_cli("--config", str(config), "fit", str(model_file), "--gpu-layers", "2")
    assert result.exit_code == 2
    assert "needs a GPU pool" in result.stderr
