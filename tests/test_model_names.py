"""One name, one meaning: a GGUF file in the embedded runtime's models_dir is found by name,
without --provider, by `estimate`, `fit`, `plan --load`, `load` and `generate` alike."""

from __future__ import annotations

import socket

import pytest
from gguf_files import isolate_model_stores, write_model


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def models_dir(tmp_path, tmp_path_factory, write_config, monkeypatch):
    """A models_dir with tiny.gguf, the runtimes that could offer another model down, and the
    estimators' own model stores empty: only the embedded runtime can say where "tiny" is."""
    pytest.importorskip("llama_cpp")
    isolate_model_stores(monkeypatch, tmp_path_factory.mktemp("home"))
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder / "tiny.gguf")
    path = write_config(
        f"""
[plugins]
disabled = ["nvidia", "amd", "apple"]

[plugins.ollama]
host = "127.0.0.1:{_closed_port()}"
retries = 0

[plugins.lmstudio]
host = "127.0.0.1:{_closed_port()}"

[plugins.llamacpp]
models_dir = "{folder}"
"""
    )
    monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))
    return folder


def test_estimate_finds_a_model_in_models_dir_by_name(run_cli, models_dir):
    result = run_cli("estimate", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert (data["model"]["provider"], data["estimator"]) == ("llamacpp", "gguf-estimator")
    assert data["model"]["path"] == str(models_dir / "tiny.gguf")


def test_fit_finds_a_model_in_models_dir_by_name(run_cli, models_dir):
    result = run_cli("fit", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["estimate"]["estimator"] == "gguf-estimator"


def test_plan_load_finds_a_model_in_models_dir_by_name(run_cli, models_dir):
    result = run_cli("plan", "--load", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    [estimate] = result.json()["load_plan"]["estimates"]
    assert (estimate["estimator"], estimate["model"]["provider"]) == ("gguf-estimator", "llamacpp")


def test_the_name_means_the_same_model_to_estimate_and_to_load(models_dir):
    from memwarden.core.warden import Warden

    warden = Warden.from_config()
    ref = warden.model_ref("tiny")
    assert (ref.provider, warden.model_ref("tiny", need_provider=True)) == ("llamacpp", ref)
    assert warden.governor._provider_for(ref).name == "llamacpp"


def test_a_name_no_provider_offers_is_left_to_the_estimators(models_dir):
    from memwarden.core.types import ModelRef
    from memwarden.core.warden import Warden

    assert Warden.from_config().model_ref("elsewhere") == ModelRef("elsewhere")


@pytest.fixture
def gemma_in_models_dir(gemma_gguf, tmp_path, write_config, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "gemma.gguf").symlink_to(gemma_gguf)
    path = write_config(
        f"""
[pressure]
max_managed_memory = "800MB"

[plugins]
enabled = ["system", "llamacpp", "gguf-estimator", "heuristic-estimator"]

[plugins.llamacpp]
models_dir = "{folder}"
"""
    )
    monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))


@pytest.mark.slow
@pytest.mark.parametrize("command", [["load", "gemma"], ["generate", "gemma", "hello"]])
def test_under_an_800_mb_cap_load_and_generate_both_refuse_gemma(
    run_cli, gemma_in_models_dir, command
):
    pytest.importorskip("llama_cpp")
    result = run_cli(*command, "--json")
    assert result.exit_code == 3, result.stdout + result.stderr
    message = result.json()["error"]["message"]
    assert message.startswith("refused to load 'gemma': 'gemma' need(s) ")
    assert "short by max_managed_memory " in message
    assert " bytes" not in message


@pytest.mark.slow
def test_under_an_800_mb_cap_fit_says_gemma_does_not_fit(run_cli, gemma_in_models_dir):
    pytest.importorskip("llama_cpp")
    result = run_cli("fit", "gemma", "--json")
    assert result.exit_code == 3
    assert result.json()["needed_bytes"]["max_managed_memory"] > 0
