"""`memwarden models`, `load`, `unload` and `generate`, against a loopback Ollama."""

from __future__ import annotations

import socket

import pytest
import sqlite_utils
from ollama_server import serve


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_ollama():
    with serve() as (url, state):
        yield url, state


@pytest.fixture
def config(fake_ollama, write_config, tmp_path, monkeypatch):
    url, _ = fake_ollama
    models_dir = tmp_path / "gguf"
    models_dir.mkdir()
    path = write_config(
        f"""
[state]
path = "{tmp_path / "state.db"}"

[plugins.ollama]
host = "{url}"
retries = 0

[plugins.lmstudio]
host = "127.0.0.1:{_closed_port()}"

[plugins.llamacpp]
models_dir = "{models_dir}"
"""
    )
    monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))
    return path


def test_models_lists_available_models_across_providers(run_cli, config):
    data = run_cli("models", "--json").json()
    assert {m["name"] for m in data["available"] if m["provider"] == "ollama"} == {
        "llama3.2:latest",
        "deepseek-r1:latest",
    }


def test_models_shows_an_unreachable_provider_with_its_reason(run_cli, config):
    data = run_cli("models", "--json").json()
    [lmstudio] = [p for p in data["providers"] if p["name"] == "lmstudio"]
    assert not lmstudio["reachable"]
    assert "not reachable" in lmstudio["reason"]


def test_models_table_names_each_provider(run_cli, config):
    result = run_cli("models")
    assert result.exit_code == 0
    assert "ollama: reachable 0.5.1" in result.stdout
    assert "lmstudio: unreachable" in result.stdout
    assert "llama3.2:latest" in result.stdout


def test_load_with_ctx_loads_the_model_at_that_context(run_cli, config, fake_ollama):
    result = run_cli("load", "llama3.2", "--ctx", "8192", "--keep-alive", "300", "--json")
    assert result.exit_code == 0, result.stderr
    loaded = result.json()
    assert (loaded["provider"], loaded["name"], loaded["context_tokens"]) == (
        "ollama",
        "llama3.2:latest",
        8192,
    )


def test_loaded_model_appears_in_models(run_cli, config):
    run_cli("load", "llama3.2", "--ctx", "4096")
    loaded = run_cli("models", "--json").json()["loaded"]
    assert [(m["name"], m["context_tokens"]) for m in loaded] == [("llama3.2:latest", 4096)]


def test_unload_frees_the_model(run_cli, config, fake_ollama):
    _, state = fake_ollama
    run_cli("load", "llama3.2")
    result = run_cli("unload", "llama3.2", "--json")
    assert result.exit_code == 0, result.stderr
    assert [m["name"] for m in result.json()["unloaded"]] == ["llama3.2:latest"]
    assert state.loaded == {}


def test_unload_of_a_model_that_is_not_loaded_exits_1(run_cli, config):
    result = run_cli("unload", "llama3.2", "--json")
    assert result.exit_code == 1
    assert result.json()["error"]["code"] == "model-not-found"


def test_load_of_an_unknown_model_exits_1_with_a_hint(run_cli, config):
    result = run_cli("load", "no-such-model")
    assert result.exit_code == 1
    assert "no reachable provider offers model 'no-such-model'" in result.stderr
    assert "hint:" in result.stderr


def test_a_refused_load_shows_the_servers_out_of_memory_message(run_cli, config, fake_ollama):
    _, state = fake_ollama
    state.out_of_memory = True
    result = run_cli("load", "llama3.2", "--json")
    assert result.exit_code == 1
    error = result.json()["error"]
    assert error["code"] == "provider-error"
    assert "model requires more system memory" in error["message"]


def test_generate_records_its_usage(run_cli, config, tmp_path):
    result = run_cli("generate", "llama3.2", "why is the sky blue", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["completion_tokens"] == 12
    [row] = list(sqlite_utils.Database(tmp_path / "state.db")["usage"].rows)
    assert (row["model"], row["provider"], row["success"]) == ("llama3.2", "ollama", 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 12)
    assert row["latency_s"] > 0


def test_the_embedded_runtime_is_reachable_when_ollama_and_lm_studio_are_down(
    run_cli, write_config, tmp_path, monkeypatch
):
    path = write_config(
        f"""
[plugins.ollama]
host = "127.0.0.1:{_closed_port()}"
retries = 0

[plugins.lmstudio]
host = "127.0.0.1:{_closed_port()}"

[plugins.llamacpp]
models_dir = "{tmp_path}"
"""
    )
    monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    result = run_cli("status")
    assert "Providers: llamacpp" in result.stdout
    available = run_cli("models", "--json").json()["available"]
    assert [(m["provider"], m["name"]) for m in available] == [("llamacpp", "tiny")]


@pytest.fixture
def capped_config(fake_ollama, write_config, tmp_path, monkeypatch):
    """Ollama on loopback, with LLMs capped at 6 GB together: either test model fits, not both."""
    url, _ = fake_ollama

    def write(cap: str, extra: str = "") -> None:
        path = write_config(
            f"""
{extra}
[pressure]
max_managed_memory = "{cap}"

[state]
path = "{tmp_path / "state.db"}"

[plugins]
enabled = ["system", "sqlite-state", "ollama", "metadata-estimator", "heuristic-estimator"]

[plugins.ollama]
host = "{url}"
retries = 0
""",
            name="capped.toml",
        )
        monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))

    return write


def test_a_load_that_cannot_fit_is_refused_with_exit_3_and_nothing_loads(
    run_cli, capped_config, fake_ollama
):
    _, state = fake_ollama
    capped_config("100MB")
    result = run_cli("load", "llama3.2", "--ctx", "4096", "--json")
    assert result.exit_code == 3, result.stderr
    error = result.json()["error"]
    assert error["code"] == "insufficient-memory"
    assert "refused to load 'llama3.2'" in error["message"]
    assert "short by max_managed_memory" in error["message"]
    assert state.loaded == {}


def test_a_load_evicts_a_lower_priority_model_to_stay_under_the_cap(
    run_cli, capped_config, fake_ollama
):
    _, state = fake_ollama
    capped_config("6GB")
    assert run_cli("load", "deepseek-r1", "--ctx", "4096").exit_code == 0
    result = run_cli("load", "llama3.2", "--ctx", "4096", "--priority", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert set(state.loaded) == {"llama3.2:latest"}


def test_a_load_does_not_evict_a_higher_priority_model(run_cli, capped_config, fake_ollama):
    _, state = fake_ollama
    capped_config("6GB", extra='[models."deepseek-r1:latest"]\npriority = 5\n')
    assert run_cli("load", "deepseek-r1", "--ctx", "4096").exit_code == 0
    result = run_cli("load", "llama3.2", "--ctx", "4096", "--priority", "1")
    assert result.exit_code == 3
    assert "deepseek-r1:latest has priority 5 > 1" in result.stderr
    assert set(state.loaded) == {"deepseek-r1:latest"}


def test_a_provider_model_is_sized_from_the_providers_own_description(capped_config):
    from memwarden.core.types import Confidence, ModelRef
    from memwarden.core.warden import Warden

    capped_config("6GB")
    warden = Warden.from_config()
    estimate = warden.estimate(ModelRef("llama3.2", provider="ollama"), 4096)
    # No file is reachable, so the warden asked Ollama (/api/show) for the model's shape.
    assert estimate.estimator == "metadata-estimator"
    assert estimate.confidence is Confidence.MEDIUM
    assert estimate.kv_cache_bytes > 0


def test_generate_on_a_model_that_does_not_fit_is_refused_with_exit_3(
    run_cli, capped_config, fake_ollama
):
    _, state = fake_ollama
    capped_config("100MB")
    result = run_cli("generate", "llama3.2", "why is the sky blue", "--json")
    assert result.exit_code == 3, result.stderr
    error = result.json()["error"]
    assert error["code"] == "insufficient-memory"
    assert error["message"].startswith("refused to load 'llama3.2': ")
    assert state.loaded == {}


def test_generate_on_a_model_that_fits_loads_it_through_admission(
    run_cli, capped_config, fake_ollama, tmp_path
):
    _, state = fake_ollama
    capped_config("6GB")
    result = run_cli("generate", "llama3.2", "why is the sky blue", "--json")
    assert result.exit_code == 0, result.stderr
    assert set(state.loaded) == {"llama3.2:latest"}
    events = sqlite_utils.Database(tmp_path / "state.db")["event"].rows_where(
        "kind = ?", ["model-loaded"]
    )
    assert [e["message"] for e in events] == ["loaded llama3.2:latest (ollama) with priority 0"]


def test_generate_makes_room_by_evicting_a_lower_priority_model(
    run_cli, capped_config, fake_ollama
):
    _, state = fake_ollama
    capped_config("6GB")
    assert run_cli("load", "deepseek-r1", "--ctx", "4096").exit_code == 0
    result = run_cli("generate", "llama3.2", "hello", "--priority", "1")
    assert result.exit_code == 0, result.stderr
    assert set(state.loaded) == {"llama3.2:latest"}


def test_load_says_what_it_evicted(run_cli, capped_config, fake_ollama):
    capped_config("6GB")
    assert run_cli("load", "deepseek-r1", "--ctx", "4096").exit_code == 0
    result = run_cli("load", "llama3.2", "--ctx", "4096", "--priority", "1")
    assert result.exit_code == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith("evicted deepseek-r1:latest from ollama to make room: ")
    assert first.endswith(" GiB freed")
    assert second.startswith("loaded llama3.2:latest in ollama: ")
    assert second.endswith(", context 4096, priority 1")


def test_load_json_lists_what_it_evicted(run_cli, capped_config, fake_ollama):
    capped_config("6GB")
    assert run_cli("load", "deepseek-r1", "--ctx", "4096").exit_code == 0
    data = run_cli("load", "llama3.2", "--ctx", "4096", "--priority", "1", "--json").json()
    assert (data["name"], data["priority"]) == ("llama3.2:latest", 1)
    assert [(m["name"], m["provider"]) for m in data["evicted"]] == [
        ("deepseek-r1:latest", "ollama")
    ]


def test_load_without_a_priority_takes_the_configured_one(run_cli, capped_config, fake_ollama):
    capped_config("6GB", extra='[models."llama3.2:latest"]\npriority = 3\n')
    data = run_cli("load", "llama3.2", "--ctx", "4096", "--json").json()
    assert data["priority"] == 3


def test_load_passes_its_runtime_options_to_ollama(run_cli, config, fake_ollama):
    _, state = fake_ollama
    result = run_cli("load", "llama3.2", "--batch", "256", "--no-mmap", "--json")
    assert result.exit_code == 0, result.stderr
    [body] = [b for m, p, b in state.requests if p == "/api/generate"]
    assert body["options"] == {"num_batch": 256, "use_mmap": False}


def test_load_sizes_its_admission_with_the_runtime_options(run_cli, capped_config, fake_ollama):
    # 4,096 tokens fit under the 6 GB cap (test_load_without_a_priority...); 8 sequences of
    # 8,192 tokens need 16 times the KV cache, and the load is refused before Ollama sees it.
    _, state = fake_ollama
    capped_config("6GB")
    result = run_cli("load", "llama3.2", "--ctx", "8192", "--parallel", "8", "--json")
    assert result.exit_code == 3, result.stderr
    assert result.json()["error"]["code"] == "insufficient-memory"
    assert state.loaded == {}


def test_generate_loads_with_its_runtime_options(run_cli, config, fake_ollama):
    _, state = fake_ollama
    result = run_cli("generate", "llama3.2", "hello", "--batch", "128", "--json")
    assert result.exit_code == 0, result.stderr
    load_body = next(b for m, p, b in state.requests if p == "/api/generate" and not b["prompt"])
    assert load_body["options"] == {"num_batch": 128}
