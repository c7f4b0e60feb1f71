"""`memwarden device`: the pools of this machine, and a cgroup limit through a fixture root."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import pytest

from memwarden.plugins import nvidia, system

FIXTURES = Path(__file__).parent / "fixtures"
GIB = 1024**3


@pytest.fixture(autouse=True)
def fresh_layouts():
    system.forget_layouts()
    yield
    system.forget_layouts()


@pytest.fixture
def container_config(write_config):
    return write_config(f'[plugins.system]\nroot = "{FIXTURES / "cgroup_v2_container"}"\n')


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="needs Linux /proc")
def test_device_json_lists_the_system_pool_with_the_real_total(run_cli):
    result = run_cli("device", "--json")
    assert result.exit_code == 0
    [pool] = [p for p in result.json()["pools"] if p["id"] == "system"]
    host_total = system.parse_meminfo(Path("/proc/meminfo").read_text())["MemTotal"]
    if pool["limit_source"] is None:
        assert pool["total_bytes"] == host_total
    else:  # run inside a memory-limited container
        assert pool["total_bytes"] < host_total


def test_device_json_honours_the_cgroup_limit_of_a_fixture_root(run_cli, container_config):
    result = run_cli("--config", str(container_config), "device", "--json")
    [pool] = [p for p in result.json()["pools"] if p["id"] == "system"]
    assert pool["total_bytes"] == 8 * GIB
    assert pool["limit_source"] == "cgroup v2 memory.max"
    assert pool["oom_kills"] == 2


def test_device_json_lists_unavailable_plugins_with_their_reasons(run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    nvidia.shutdown()
    result = run_cli("device", "--json")
    nvidia.shutdown()
    reasons = {u["source"]: u["reason"] for u in result.json()["unavailable"]}
    assert "nvidia-ml-py" in reasons["nvidia"]


def test_device_table_shows_the_limit_source_and_psi(run_cli, container_config):
    result = run_cli("--config", str(container_config), "device")
    assert result.exit_code == 0
    [row] = [line for line in result.stdout.splitlines() if line.startswith("system")]
    assert "8.0 GiB" in row
    assert "cgroup v2 memory.max" in row
    assert "5.31/3.02" in row


@pytest.mark.skipif(
    bool(glob.glob("/sys/class/drm/card*/device/mem_info_vram_total")), reason="has an AMD GPU"
)
def test_device_table_says_why_a_plugin_sees_nothing(run_cli):
    result = run_cli("device")
    assert "Unavailable:" in result.stdout
    assert "amd: no amdgpu card with VRAM" in result.stdout


def test_status_uses_the_same_cgroup_limited_pool(run_cli, container_config):
    result = run_cli("--config", str(container_config), "status", "--json")
    [pool] = [p for p in result.json()["pools"] if p["id"] == "system"]
    assert pool["total_bytes"] == 8 * GIB


def test_plugins_lists_the_four_device_plugins(run_cli):
    plugins = {p["name"]: p for p in run_cli("plugins", "--json").json()}
    for name in ("system", "nvidia", "apple", "amd"):
        assert plugins[name]["state"] == "enabled"
        assert plugins[name]["hooks"] == ["detect_device"]
