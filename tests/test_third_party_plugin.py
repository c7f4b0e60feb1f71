"""A real third-party distribution, installed with pip, found through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_dists import installed

MEMWARDEN = [sys.executable, "-m", "memwarden"]


@pytest.fixture(scope="module")
def installed_example_plugin(tmp_path_factory):
    with installed("memwarden-example", tmp_path_factory):
        yield


def memwarden(*args: str, plugins: str | None = None, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MEMWARDEN_PLUGINS", None)
    if plugins is not None:
        env["MEMWARDEN_PLUGINS"] = plugins
    return subprocess.run(
        [*MEMWARDEN, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def listing(result: subprocess.CompletedProcess) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_installed_plugin_is_loaded_and_listed(installed_example_plugin, tmp_path):
    plugins = listing(memwarden("plugins", "--json", cwd=tmp_path))
    example = plugins["example"]
    assert example["source"] == "entry point"
    assert example["distribution"] == "memwarden-example"
    assert example["version"] == "1.2.3"
    assert example["state"] == "enabled"
    assert example["hooks"] == ["detect_device", "register_commands"]


def test_installed_plugin_contributes_a_pool_and_a_command(installed_example_plugin, tmp_path):
    status = memwarden("status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    pools = {p["id"] for p in json.loads(status.stdout)["pools"]}
    assert {"system", "example:0"} <= pools
    hello = memwarden("example-hello", cwd=tmp_path)
    assert hello.stdout.strip() == "hello from memwarden-example"


def test_a_plugin_raising_in_a_hook_does_not_crash_status(installed_example_plugin, tmp_path):
    status = memwarden("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "System RAM" in status.stdout
    assert (
        "example-broken from memwarden-example failed in detect_device: "
        "RuntimeError: sensor exploded"
    ) in status.stdout
    plugins = listing(memwarden("plugins", "--json", cwd=tmp_path))
    assert plugins["example-broken"]["state"] == "failed"


def test_plugin_disabled_by_config(installed_example_plugin, tmp_path):
    (tmp_path / "memwarden.toml").write_text('[plugins]\ndisabled = ["example"]\n')
    plugins = listing(memwarden("plugins", "--json", cwd=tmp_path))
    assert plugins["example"]["state"] == "disabled"
    assert "plugins.disabled" in plugins["example"]["reason"]
    status = json.loads(memwarden("status", "--json", cwd=tmp_path).stdout)
    assert "example:0" not in {p["id"] for p in status["pools"]}


def test_plugin_disabled_by_environment(installed_example_plugin, tmp_path):
    plugins = listing(memwarden("plugins", "--json", plugins="builtins", cwd=tmp_path))
    assert plugins["example"]["state"] == "disabled"
    assert plugins["example"]["reason"] == "not listed in $MEMWARDEN_PLUGINS"
    assert plugins["system"]["state"] == "enabled"


def test_plugin_settings_reach_the_plugin(installed_example_plugin, tmp_path):
    (tmp_path / "memwarden.toml").write_text("[plugins.example]\ntotal_bytes = 4096\n")
    status = json.loads(memwarden("status", "--json", cwd=tmp_path).stdout)
    [example] = [p for p in status["pools"] if p["id"] == "example:0"]
    assert example["total_bytes"] == 4096
