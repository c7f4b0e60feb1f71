"""One daemon for everything: while `memwarden serve` runs, `load`, `unload`, `models` and
`status` go through it."""

from __future__ import annotations

import json

import pytest
from front_door import front_door, wait_for

from memwarden.core.config import load_config
from memwarden.core.warden import Warden
from memwarden.serve import daemon
from memwarden.serve.app import FrontDoor


@pytest.fixture
def running(tmp_path, monkeypatch):
    with front_door(tmp_path, announce=True) as (door, fake):
        monkeypatch.setenv("MEMWARDEN_CONFIG", str(tmp_path / "memwarden.toml"))
        assert wait_for(lambda: daemon.state_path().exists())
        yield door, fake


def test_serve_records_where_it_listens(running):
    door, _ = running
    assert json.loads(daemon.state_path().read_text())["url"] == door.url


def test_load_goes_through_the_running_daemons_governor(running, run_cli):
    door, fake = running
    loaded = run_cli("load", "qwen3", "--json").json()
    kinds = [e.kind for e in door.services.control.events]
    assert (loaded["name"], sorted(fake.loaded), "model-loaded" in kinds) == (
        "qwen3:latest",
        ["qwen3:latest"],
        True,
    )


def test_a_refused_load_through_the_daemon_exits_3(tmp_path, monkeypatch, run_cli):
    config = '[pressure]\nmax_managed_memory = "2GiB"\n'
    with front_door(tmp_path, config=config, announce=True):
        monkeypatch.setenv("MEMWARDEN_CONFIG", str(tmp_path / "memwarden.toml"))
        result = run_cli("load", "qwen3")
    assert result.exit_code == 3
    assert "refused to load 'qwen3'" in result.stderr


def test_unload_goes_through_the_running_daemon(running, run_cli):
    _, fake = running
    run_cli("load", "qwen3")
    result = run_cli("unload", "qwen3")
    assert (result.stdout.startswith("unloaded qwen3:latest from ollama: "), fake.loaded) == (
        True,
        {},
    )


def test_models_lists_what_the_daemon_has_loaded(running, run_cli):
    run_cli("load", "llama3.2")
    loaded = run_cli("models", "--json").json()["loaded"]
    assert [(m["name"], m["provider"]) for m in loaded] == [("llama3.2:latest", "ollama")]


def test_status_names_the_daemon(running, run_cli):
    door, _ = running
    assert run_cli("status", "--json").json()["daemon"] == door.url


def test_a_record_left_by_a_dead_daemon_is_ignored(tmp_path):
    daemon.state_path().parent.mkdir(parents=True, exist_ok=True)
    daemon.state_path().write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": 2**22 + 1}))
    assert daemon.find_daemon() is None


def test_memwarden_serve_url_none_acts_locally(running, monkeypatch):
    monkeypatch.setenv("MEMWARDEN_SERVE_URL", "none")
    assert daemon.find_daemon() is None


def test_stopping_the_daemon_removes_its_record(tmp_path):
    with front_door(tmp_path, announce=True):
        assert wait_for(lambda: daemon.state_path().exists())
    assert not daemon.state_path().exists()


@pytest.mark.slow
def test_an_embedded_model_loaded_through_the_daemon_outlives_the_command(
    gemma_gguf, tmp_path, monkeypatch, run_cli
):
    config = tmp_path / "memwarden.toml"
    config.write_text(
        f"""
[state]
path = "{tmp_path / "state.db"}"

[plugins]
disabled = ["ollama", "lmstudio"]

[plugins.llamacpp]
models_dir = "{gemma_gguf.parent}"
default_context_tokens = 2048
"""
    )
    monkeypatch.setenv("MEMWARDEN_CONFIG", str(config))
    door = FrontDoor(Warden(load_config(config)), port=0, monitor=False, announce=True)
    with door:
        assert wait_for(lambda: daemon.state_path().exists())
        result = run_cli("load", "gemma-3-270m-q4_k_m")
        after = [m.name for m in door.warden.loaded_models()]
    assert result.exit_code == 0, result.stderr
    assert "models live in the process that loads them" not in result.stderr
    assert after == ["gemma-3-270m-q4_k_m"]


def test_the_serve_command_runs_until_sigterm_and_then_withdraws(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys

    import httpx
    from ollama_server import serve

    with serve() as (url, _):
        config = tmp_path / "memwarden.toml"
        config.write_text(
            f'[state]\nenabled = false\n[plugins]\ndisabled = ["lmstudio", "llamacpp"]\n'
            f'[plugins.ollama]\nhost = "{url}"\n'
        )
        monkeypatch.setenv("MEMWARDEN_CONFIG", str(config))
        process = subprocess.Popen(
            [sys.executable, "-m", "memwarden", "serve", "--port", "0", "--no-psi"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert wait_for(lambda: daemon.state_path().exists(), timeout_s=30)
            base = json.loads(daemon.state_path().read_text())["url"]
            health = httpx.get(f"{base}/health", timeout=10).json()
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
    assert (health["service"], code, daemon.state_path().exists()) == ("memwarden", 0, False)


def test_plan_answers_from_the_daemons_governor(tmp_path, monkeypatch, run_cli):
    config = '[pressure]\nmax_managed_memory = "4GiB"\n'
    with front_door(tmp_path, config=config, announce=True) as (door, _):
        monkeypatch.setenv("MEMWARDEN_CONFIG", str(tmp_path / "memwarden.toml"))
        assert wait_for(lambda: daemon.state_path().exists())
        run_cli("load", "llama3.2")
        planned = run_cli("plan", "--load", "qwen3", "--json").json()
        served = [line for line in door.services.control.events if line.kind == "model-loaded"]
    load_plan = planned["load_plan"]
    assert (load_plan["fits"], [m["name"] for m in load_plan["evicted"]], len(served)) == (
        True,
        ["llama3.2:latest"],
        1,
    )


def test_loads_runtime_options_go_to_the_daemon(running, run_cli):
    door, _ = running

    def error_after_load(*flags: str) -> float:
        assert run_cli("load", "qwen3", *flags).exit_code == 0
        run_cli("unload", "qwen3")
        line = 'memwarden_estimate_error_ratio{model="qwen3:latest",provider="ollama"}'
        rows = door.services.metrics.render().decode().splitlines()
        [value] = [row.split(" ")[-1] for row in rows if row.startswith(line)]
        return float(value)

    # A q8_0 KV cache is smaller: the daemon's estimate shrinks, the fake's load does not.
    assert error_after_load("--kv-type", "q8_0") > error_after_load()
