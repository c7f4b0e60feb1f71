"""The system plugin: /proc/meminfo, cgroup v1 and v2 limits and PSI, read below a fixture root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from memwarden.core.config import Config, parse_config_data
from memwarden.core.errors import ConfigError
from memwarden.core.types import DeviceUnavailable, MemoryPool, PoolKind
from memwarden.plugins import apple, system

FIXTURES = Path(__file__).parent / "fixtures"
GIB = 1024**3
linux_only = pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="needs Linux /proc")


@pytest.fixture(autouse=True)
def fresh_layouts():
    system.forget_layouts()
    yield
    system.forget_layouts()


def config_with_root(root: Path) -> Config:
    return parse_config_data({"plugins": {"system": {"root": str(root)}}}, None)


def pool_at(root: Path) -> MemoryPool:
    [pool] = system.detect_device(config=config_with_root(root))
    return pool


@pytest.fixture
def copy_of(tmp_path):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(FIXTURES / name, tmp_path / name))

    return copy


# -- parsing ------------------------------------------------------------------------------------


def test_meminfo_values_are_bytes():
    values = system.parse_meminfo((FIXTURES / "cgroup_v1_this_machine/proc/meminfo").read_text())
    assert values["MemTotal"] == 24683656 * 1024
    assert values["MemAvailable"] == 24221056 * 1024


def test_psi_gives_some_and_full_avg10():
    text = (FIXTURES / "cgroup_v2_container/sys/fs/cgroup/memory.pressure").read_text()
    assert system.parse_psi(text) == (5.31, 3.02)


def test_psi_without_a_full_line_gives_none_for_full():
    # A PSI file may lack the "full" line (cpu.pressure before 5.13): no line, no value.
    assert system.parse_psi("some avg10=1.50 avg60=0.20 avg300=0.00 total=1234\n") == (1.5, None)


def test_limit_max_means_none():
    assert system.parse_limit("max\n") is None


def test_cgroup_v1_unlimited_value_means_none():
    assert system.parse_limit("9223372036854771712\n") is None


def test_limit_in_bytes_is_kept():
    assert system.parse_limit("8589934592\n") == 8 * GIB


def test_proc_self_cgroup_of_a_hybrid_machine_gives_both_paths():
    text = (FIXTURES / "cgroup_v1_this_machine/proc/self/cgroup").read_text()
    assert system.parse_proc_cgroup(text) == ("/", "/process_api/1b068cc12edfd74a14c27855b766d4f1")


def test_mountinfo_finds_the_v1_memory_and_the_v2_mounts_only():
    text = (FIXTURES / "cgroup_v1_this_machine/proc/self/mountinfo").read_text()
    assert system.parse_mountinfo(text) == [
        system.CgroupMount("/sys/fs/cgroup/memory", "/", 1),
        system.CgroupMount("/sys/fs/cgroup/unified", "/", 2),
    ]


def test_mountinfo_unescapes_spaces_in_mount_points():
    line = "41 31 0:38 / /mnt/my\\040cgroups rw,relatime - cgroup2 cgroup2 rw\n"
    assert system.parse_mountinfo(line) == [system.CgroupMount("/mnt/my cgroups", "/", 2)]


# -- cgroup v2 ----------------------------------------------------------------------------------


def test_v2_container_reports_its_8_gib_limit_not_the_64_gib_host():
    pool = pool_at(FIXTURES / "cgroup_v2_container")
    assert pool.total_bytes == 8 * GIB
    assert pool.limit_source == "cgroup v2 memory.max"


def test_v2_available_is_limit_minus_usage_plus_inactive_file_cache():
    # memory.current 6 GiB of which inactive_file 1 GiB: 8 - (6 - 1) = 3 GiB.
    pool = pool_at(FIXTURES / "cgroup_v2_container")
    assert pool.available_bytes == 3 * GIB
    assert pool.used_bytes == 5 * GIB


def test_v2_oom_kills_come_from_memory_events():
    assert pool_at(FIXTURES / "cgroup_v2_container").oom_kills == 2


def test_v2_psi_comes_from_the_limiting_cgroup():
    pool = pool_at(FIXTURES / "cgroup_v2_container")
    assert (pool.psi_some_avg10, pool.psi_full_avg10) == (5.31, 3.02)


def test_v2_swap_limit_of_zero_caps_the_host_swap():
    pool = pool_at(FIXTURES / "cgroup_v2_container")
    assert (pool.swap_total_bytes, pool.swap_used_bytes) == (0, 0)


def test_v2_limit_of_a_parent_cgroup_binds_a_container_without_its_own():
    pool = pool_at(FIXTURES / "cgroup_v2_nested")
    assert pool.total_bytes == 4 * GIB
    assert pool.limit_source.startswith("cgroup v2 memory.max of kubepods-burstable-pod")


def test_v2_memory_high_below_memory_max_is_the_usable_limit(copy_of):
    root = copy_of("cgroup_v2_container")
    (root / "sys/fs/cgroup/memory.high").write_text(f"{7 * GIB}\n")
    pool = pool_at(root)
    assert (pool.total_bytes, pool.limit_source) == (7 * GIB, "cgroup v2 memory.high")


def test_v2_limit_above_host_memory_leaves_the_host_total(copy_of):
    root = copy_of("cgroup_v2_container")
    (root / "sys/fs/cgroup/memory.max").write_text(f"{128 * GIB}\n")
    pool = pool_at(root)
    host = system.parse_meminfo((root / "proc/meminfo").read_text())
    assert (pool.total_bytes, pool.limit_source) == (host["MemTotal"], None)


def test_v2_cgroup_limit_change_is_seen_by_the_next_snapshot(copy_of):
    root = copy_of("cgroup_v2_container")
    pool_at(root)
    (root / "sys/fs/cgroup/memory.max").write_text(f"{6 * GIB}\n")
    assert pool_at(root).total_bytes == 6 * GIB


# -- cgroup v1 ----------------------------------------------------------------------------------


def test_v1_container_beside_a_v2_mount_reports_its_8_gib_limit():
    pool = pool_at(FIXTURES / "cgroup_v1_container")
    assert pool.total_bytes == 8 * GIB
    assert pool.limit_source == "cgroup v1 memory.limit_in_bytes"


def test_v1_available_is_limit_minus_usage_plus_total_inactive_file():
    # usage 7 GiB of which total_inactive_file 2 GiB: 8 - (7 - 2) = 3 GiB.
    assert pool_at(FIXTURES / "cgroup_v1_container").available_bytes == 3 * GIB


def test_v1_oom_kills_come_from_memory_oom_control():
    assert pool_at(FIXTURES / "cgroup_v1_container").oom_kills == 1


def test_v1_psi_comes_from_proc_pressure_memory():
    pool = pool_at(FIXTURES / "cgroup_v1_container")
    assert (pool.psi_some_avg10, pool.psi_full_avg10) == (0.52, 0.10)


def test_v1_parent_limit_from_hierarchical_memory_limit_binds(copy_of):
    root = copy_of("cgroup_v1_container")
    [directory] = (root / "sys/fs/cgroup/memory/docker").iterdir()
    (directory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    stat = directory / "memory.stat"
    stat.write_text(
        stat.read_text().replace(
            f"hierarchical_memory_limit {8 * GIB}", f"hierarchical_memory_limit {12 * GIB}"
        )
    )
    pool = pool_at(root)
    assert pool.total_bytes == 12 * GIB
    assert pool.limit_source == "cgroup v1 memory.limit_in_bytes of a parent cgroup"


def test_v1_unlimited_cgroup_of_this_machine_reports_the_host_memory():
    root = FIXTURES / "cgroup_v1_this_machine"
    pool = pool_at(root)
    assert pool.total_bytes == 24683656 * 1024
    assert pool.available_bytes == 24221056 * 1024
    assert pool.limit_source is None
    assert pool.oom_kills == 0


# -- without cgroups, and when files go missing -------------------------------------------------


def test_cgroup_path_outside_the_namespace_means_the_mount_top(copy_of):
    root = copy_of("cgroup_v2_container")
    (root / "proc/self/cgroup").write_text("0::/../../system.slice/docker-1.scope\n")
    assert pool_at(root).total_bytes == 8 * GIB


def test_without_proc_self_cgroup_the_host_memory_is_reported(copy_of):
    root = copy_of("cgroup_v2_container")
    (root / "proc/self/cgroup").unlink()
    pool = pool_at(root)
    assert pool.limit_source is None
    assert pool.total_bytes > 60 * GIB


def test_kernel_without_psi_reports_none(copy_of):
    root = copy_of("cgroup_v1_container")
    (root / "proc/pressure/memory").unlink()
    pool = pool_at(root)
    assert (pool.psi_some_avg10, pool.psi_full_avg10) == (None, None)


def test_unreadable_meminfo_makes_the_plugin_unavailable_naming_the_file(copy_of):
    root = copy_of("cgroup_v1_container")
    (root / "proc/meminfo").unlink()
    result = system.detect_device(config=config_with_root(root))
    assert isinstance(result, DeviceUnavailable)
    assert result.source == "system"
    assert f"cannot read {root / 'proc/meminfo'}" in result.reason


def test_cgroup_file_vanishing_after_discovery_falls_back_to_the_host(copy_of, caplog):
    root = copy_of("cgroup_v2_container")
    pool_at(root)
    (root / "sys/fs/cgroup/memory.current").unlink()
    pool = pool_at(root)
    assert pool.limit_source is None
    assert "cannot read the memory cgroup" in caplog.text


def test_files_are_found_once_per_root(copy_of):
    root = copy_of("cgroup_v2_container")
    pool_at(root)
    (root / "proc/self/cgroup").unlink()  # discovery is not repeated, so this goes unnoticed
    assert pool_at(root).limit_source == "cgroup v2 memory.max"


def test_unknown_option_is_a_config_error_naming_the_key():
    config = parse_config_data({"plugins": {"system": {"rooot": "/"}}}, None)
    with pytest.raises(ConfigError, match=r"plugins\.system\.rooot: unknown key"):
        system.detect_device(config=config)


# -- the real machine and Apple Silicon ---------------------------------------------------------


@linux_only
def test_this_machine_reports_the_real_total_memory():
    [pool] = system.detect_device(config=Config())
    assert pool.kind == PoolKind.SYSTEM
    assert pool.total_bytes <= psutil.virtual_memory().total
    assert 0 <= pool.available_bytes <= pool.total_bytes


def test_reports_ram_on_apple_silicon_and_leaves_deduplication_to_the_core(monkeypatch):
    monkeypatch.setattr(apple, "is_apple_silicon", lambda *args: True)
    [pool] = system.detect_device(config=Config())
    assert pool.id == "system"
