"""A third-party strategy, installed with pip and found through its entry point, that proposes
unloading every model: the core refuses what policy forbids, and `memwarden watch` shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ollama_server import FakeOllama, Loaded, serve
from plugin_dists import installed

# Ollama and every built-in strategy, plus the greedy one; no device plugin, so that the level
# comes from the managed-memory cap alone, whatever this host's memory reads.
PLUGINS = ",".join(
    [
        "ollama",
        "release-caches",
        "compress-context",
        "shrink-context",
        "idle-unload",
        "priority-eviction",
        "refuse-loads",
        "emergency-unload",
        "greedy",
    ]
)
MEMWARDEN = [sys.executable, "-m", "memwarden"]
CRITICAL_MODEL = "llama3.2:latest"
PINNED_MODEL = "deepseek-r1:latest"


@pytest.fixture(scope="module")
def installed_greedy_strategy(tmp_path_factory):
    with installed("memwarden-greedy", tmp_path_factory):
        yield


@pytest.fixture
def ollama_with_two_models():
    fake = FakeOllama()
    later = datetime.now(UTC) + timedelta(days=1)
    for name in (CRITICAL_MODEL, PINNED_MODEL):
        fake.loaded[name] = Loaded(model=fake.models[name], context_length=4096, expires_at=later)
    with serve(fake) as (url, state):
        yield url, state


def managed_bytes(fake: FakeOllama) -> int:
    return sum(fake.process(m)["size"] for m in fake.loaded.values())


def watch_once(tmp_path: Path, url: str, cap: int) -> list[dict]:
    config = tmp_path / "memwarden.toml"
    config.write_text(
        f"[pressure]\nmax_managed_memory = {cap}\n"
        f'[plugins.ollama]\nhost = "{url}"\n'
        f'[models."{CRITICAL_MODEL}"]\ncritical = true\n'
        f'[models."{PINNED_MODEL}"]\npinned = true\n'
        "[state]\nenabled = false\n"
    )
    env = dict(os.environ, MEMWARDEN_PLUGINS=PLUGINS)
    result = subprocess.run(
        [*MEMWARDEN, "--config", str(config), "watch", "--once", "--json", "--no-psi"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def unload_requests(fake: FakeOllama) -> list[str]:
    return [
        body["model"]
        for method, path, body in fake.requests
        if path == "/api/generate" and body.get("keep_alive") == 0
    ]


def test_watch_under_a_cap_refuses_the_greedy_strategy_and_unloads_nothing(
    installed_greedy_strategy, ollama_with_two_models, tmp_path
):
    url, fake = ollama_with_two_models
    cap = int(managed_bytes(fake) / 0.9)  # 90 % of the cap: CRITICAL
    lines = watch_once(tmp_path, url, cap)
    [reading] = [line for line in lines if line["type"] == "reading"]
    assert reading["level"] == "CRITICAL"
    refused = [line for line in lines if line.get("kind") == "action-refused"]
    assert sorted(
        (e["data"]["strategy"], e["data"]["model"], e["data"]["rule"]) for e in refused
    ) == [
        ("greedy", PINNED_MODEL, "pinned"),
        ("greedy", CRITICAL_MODEL, "critical"),
    ]
    assert unload_requests(fake) == []
    assert sorted(fake.loaded) == [PINNED_MODEL, CRITICAL_MODEL]


def test_in_an_emergency_the_greedy_strategy_unloads_the_pinned_model_but_not_the_critical_one(
    installed_greedy_strategy, ollama_with_two_models, tmp_path
):
    url, fake = ollama_with_two_models
    cap = int(managed_bytes(fake) / 0.97)  # 97 % of the cap: EMERGENCY
    lines = watch_once(tmp_path, url, cap)
    taken = [line["data"] for line in lines if line.get("kind") == "action-taken"]
    assert [(d["strategy"], d["model"]) for d in taken if d["action"] == "unload"] == [
        ("greedy", PINNED_MODEL)
    ]
    refused = [line["data"] for line in lines if line.get("kind") == "action-refused"]
    assert [(d["strategy"], d["model"], d["rule"]) for d in refused] == [
        ("greedy", CRITICAL_MODEL, "critical")
    ]
    assert unload_requests(fake) == [PINNED_MODEL]
    assert list(fake.loaded) == [CRITICAL_MODEL]
