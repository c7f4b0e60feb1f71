"""`memwarden history`, `report`, `recommend` on a recorded history, and `memwarden pick`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from ollama_server import serve

from memwarden.core.config import StateConfig

MONTH = Path(__file__).resolve().parents[1] / "benchmarks" / "history_month.py"
GIB = 1 << 30


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Two simulated days (a sample a minute, 500 requests a day) with the default retention."""
    spec = importlib.util.spec_from_file_location("history_month", MONTH)
    assert spec is not None and spec.loader is not None
    month = importlib.util.module_from_spec(spec)
    sys.modules["history_month"] = month
    spec.loader.exec_module(month)
    path = tmp_path_factory.mktemp("recorded") / "memwarden.db"
    store = month.simulate(
        path, days=2, sample_every_s=60.0, requests_per_day=500, state=StateConfig(path=str(path))
    )
    store.close()
    return path


@pytest.fixture
def config(recorded, write_config, monkeypatch):
    path = write_config(f'[state]\npath = "{recorded}"\n')
    monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))
    monkeypatch.setenv("MEMWARDEN_PLUGINS", "system,sqlite-state")
    return path


def test_report_counts_time_at_each_level_and_what_the_actions_freed(run_cli, config):
    data = run_cli("report", "--since", "2d", "--json").json()
    assert data["samples"] == 2880
    assert data["level_changes"] == {"CRITICAL": 2, "NORMAL": 2, "WARNING": 4}
    assert data["actions"] == [
        {
            "kind": "unload",
            "strategy": "idle-unload",
            "taken": 2,
            "failed": 0,
            "freed_bytes": 2 * int(4.1 * GIB),
            "models": ["mistral:7b"],
        }
    ]
    # 500 requests a day, and the weekday batch of 20 to llava:7b on both days (a Monday and a
    # Tuesday).
    assert sum(u["requests"] for u in data["usage"]) == 1040


def test_report_for_people_says_what_was_done_and_freed(run_cli, config):
    result = run_cli("report", "--since", "2d")
    assert "  unload by idle-unload: 2 taken, freed 8.2 GiB (mistral:7b)" in result.stdout


def test_history_charts_the_window_with_one_column_per_slice(run_cli, config):
    data = run_cli("history", "--since", "24h", "--width", "48", "--json").json()
    assert len(data["columns"]) == 48
    assert [e["data"]["to"] for e in data["events"] if e["kind"] == "level-changed"] == [
        "WARNING",
        "CRITICAL",
        "WARNING",
        "NORMAL",
    ]


def test_history_draws_the_levels_under_the_chart(run_cli, config):
    result = run_cli("history", "--since", "24h", "--width", "48")
    [levels] = [line for line in result.stdout.splitlines() if line.startswith("level |")]
    assert levels.count("C") == 1
    assert set(levels[7:-1]) == {".", "w", "C"}


def test_history_for_one_model_shows_only_its_actions(run_cli, config):
    data = run_cli("history", "--since", "2d", "--model", "llama3.1:8b", "--json").json()
    assert (data["actions"], [u["model"] for u in data["usage"]]) == ([], ["llama3.1:8b"])


def test_a_since_that_is_neither_duration_nor_date_is_refused_with_exit_2(run_cli, config):
    result = run_cli("history", "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since 'yesterday' is neither a duration nor a date" in result.stderr


def test_recommend_states_evidence_for_each_piece_of_advice(run_cli, config):
    data = run_cli("recommend", "--since", "2d", "--json").json()
    assert [(r["kind"], r["subject"]) for r in data] == [
        ("keep", "llama3.1:8b"),
        ("keep", "qwen2.5-coder:7b"),
        ("unload", "mistral:7b"),
        ("context", "llama3.1:8b"),
        ("context", "llava:7b"),
        ("context", "nomic-embed-text"),
        ("context", "qwen2.5-coder:7b"),
        ("max_loaded_models", "[governor] max_loaded_models"),
    ]
    assert all(r["evidence"] for r in data)


def test_recommend_names_the_evictions_behind_an_unload(run_cli, config):
    data = run_cli("recommend", "--since", "2d", "--json").json()
    [unload] = [r for r in data if r["kind"] == "unload"]
    assert "evicted 2 times under pressure, freeing 8.2 GiB in all" in unload["evidence"]


@pytest.fixture
def ollama_config(write_config, tmp_path, monkeypatch):
    with serve() as (url, _):
        path = write_config(
            f'[state]\npath = "{tmp_path / "state.db"}"\n\n'
            f'[plugins.ollama]\nhost = "{url}"\nretries = 0\n\n'
            '[pick]\nprefer = ["deepseek-r1"]\n'
        )
        monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))
        monkeypatch.setenv(
            "MEMWARDEN_PLUGINS",
            "system,sqlite-state,ollama,metadata-estimator,heuristic-estimator,"
            "pick-preference,pick-loaded,pick-learned,pick-smallest",
        )
        yield path


def test_pick_chooses_the_configured_preference_and_says_why(run_cli, ollama_config):
    data = run_cli("pick", "--json").json()
    assert (data["model"]["name"], data["chooser"], data["reasons"]) == (
        "deepseek-r1:latest",
        "pick-preference",
        ["deepseek-r1:latest: first in [pick] prefer (#1), capable and fits now"],
    )


def test_pick_for_embeddings_with_no_embedding_model_exits_1_naming_each_model(
    run_cli, ollama_config
):
    result = run_cli("pick", "--task", "embed")
    assert result.exit_code == 1
    assert "ollama/llama3.2:latest: not an embedding model" in result.stderr


def test_report_lists_the_processes_that_wrote_the_history(run_cli, config):
    data = run_cli("report", "--since", "2d", "--json").json()
    assert [(s["pid"] > 0, s["ended_at"] is not None) for s in data["sessions"]] == [(True, True)]
