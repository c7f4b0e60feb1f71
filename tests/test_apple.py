"""The apple plugin against vm_stat and sysctl output published from real Apple Silicon Macs
(sources in tests/fixtures/apple/README.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from memwarden.core.config import Config
from memwarden.core.plugins import Plugins
from memwarden.core.types import DeviceUnavailable, PoolKind
from memwarden.core.warden import Warden
from memwarden.plugins import apple

FIXTURES = Path(__file__).parent / "fixtures" / "apple"
MIB = 1024**2
GIB = 1024**3
M1_VM_STAT = (FIXTURES / "m1_16gb_vm_stat.txt").read_text()


def outputs(sysctl_file: str, vm_stat: str = M1_VM_STAT):
    """A command runner answering like macOS did, from recorded text."""
    sysctl = (FIXTURES / sysctl_file).read_text()

    def run(argv: Sequence[str]) -> str:
        return sysctl if argv[0].endswith("sysctl") else vm_stat

    return run


def test_vm_stat_page_size_comes_from_the_header():
    page_size, _ = apple.parse_vm_stat(M1_VM_STAT)
    assert page_size == 16384


def test_vm_stat_counts_are_read_by_label_including_quoted_ones():
    _, counts = apple.parse_vm_stat(M1_VM_STAT)
    assert counts["Pages free"] == 355378
    assert counts["File-backed pages"] == 148451
    assert counts["Translation faults"] == 587255247


def test_vm_stat_without_its_header_is_rejected():
    with pytest.raises(ValueError, match="page size"):
        apple.parse_vm_stat("Pages free: 1.\n")


def test_available_is_free_plus_file_backed_plus_purgeable_pages():
    page_size, counts = apple.parse_vm_stat(M1_VM_STAT)
    assert apple.available_bytes(page_size, counts) == (355378 + 148451 + 3946) * 16384


def test_available_without_file_backed_line_uses_free_speculative_and_inactive():
    counts = {"Pages free": 10, "Pages speculative": 2, "Pages inactive": 5}
    assert apple.available_bytes(4096, counts) == 17 * 4096


def test_sysctl_values_are_read_by_name():
    values = apple.parse_sysctl((FIXTURES / "m1_max_32gb_wired_limit_sysctl.txt").read_text())
    assert values == {
        "hw.memsize": 32 * GIB,
        "iogpu.wired_limit_mb": 26000,
        "kern.memorystatus_vm_pressure_level": 2,
    }


@pytest.mark.parametrize(
    ("ram_gib", "logged_mib"),
    # recommendedMaxWorkingSetSize as llama.cpp logged it on real Macs (README.md here).
    [(16, 10922.67), (32, 21845.34), (64, 49152.00), (96, 73728.00)],
)
def test_default_gpu_limit_matches_metal_on_real_macs(ram_gib, logged_mib):
    limit = apple.default_gpu_limit_bytes(ram_gib * GIB)
    assert limit / MIB == pytest.approx(logged_mib, abs=0.01)


def test_m1_pool_is_one_unified_pool_of_all_ram():
    [pool] = [apple.build_pool(apple.read(outputs("m1_16gb_sysctl.txt")))]
    assert (pool.id, pool.kind) == ("unified", PoolKind.UNIFIED)
    assert pool.total_bytes == 16 * GIB
    assert pool.available_bytes == (355378 + 148451 + 3946) * 16384
    assert pool.used_bytes == pool.total_bytes - pool.available_bytes


def test_default_wired_limit_gives_the_metal_default_gpu_share():
    pool = apple.build_pool(apple.read(outputs("m1_16gb_sysctl.txt")))
    assert pool.gpu_limit_bytes == 16 * GIB * 2 // 3
    assert pool.gpu_limit_source.startswith("Metal default working set")


def test_wired_limit_set_by_the_administrator_is_the_gpu_share():
    pool = apple.build_pool(apple.read(outputs("m1_max_32gb_wired_limit_sysctl.txt")))
    assert pool.gpu_limit_bytes == 26000 * MIB
    assert pool.gpu_limit_source == "sysctl iogpu.wired_limit_mb"


def test_macos_without_iogpu_sysctl_uses_the_default_gpu_share():
    pool = apple.build_pool(apple.read(outputs("macos13_no_iogpu_sysctl.txt")))
    assert pool.gpu_limit_bytes == 16 * GIB * 2 // 3


@pytest.mark.parametrize(
    ("sysctl_file", "verdict"),
    [
        ("m1_16gb_sysctl.txt", "normal"),
        ("m1_max_32gb_wired_limit_sysctl.txt", "warning"),
        ("macos13_no_iogpu_sysctl.txt", "critical"),
    ],
)
def test_kernel_pressure_level_becomes_the_os_pressure(sysctl_file, verdict):
    assert apple.build_pool(apple.read(outputs(sysctl_file))).os_pressure == verdict


def test_detect_device_on_apple_silicon_reports_the_unified_pool(monkeypatch):
    monkeypatch.setattr(apple, "is_apple_silicon", lambda *args: True)
    monkeypatch.setattr(apple, "run_command", outputs("m1_16gb_sysctl.txt"))
    [pool] = apple.detect_device(config=Config())
    assert pool.id == "unified"


def test_not_apple_silicon_is_unavailable_and_names_the_platform():
    if apple.is_apple_silicon():
        pytest.skip("this is an Apple Silicon Mac")
    result = apple.detect_device(config=Config())
    assert isinstance(result, DeviceUnavailable)
    assert result.reason.startswith("not Apple Silicon (platform ")


def test_intel_mac_is_not_apple_silicon():
    assert not apple.is_apple_silicon("darwin", "x86_64")


def test_failing_command_makes_the_plugin_unavailable_with_the_reason(monkeypatch):
    def hang(argv):
        raise apple.subprocess.TimeoutExpired(argv, apple.COMMAND_TIMEOUT_S)

    monkeypatch.setattr(apple, "is_apple_silicon", lambda *args: True)
    monkeypatch.setattr(apple, "run_command", hang)
    result = apple.detect_device(config=Config())
    assert isinstance(result, DeviceUnavailable)
    assert "cannot read memory statistics" in result.reason
    assert "timed out" in result.reason


def test_sysctl_without_memsize_makes_the_plugin_unavailable(monkeypatch):
    monkeypatch.setattr(apple, "is_apple_silicon", lambda *args: True)
    monkeypatch.setattr(apple, "run_command", lambda argv: "")
    result = apple.detect_device(config=Config())
    assert isinstance(result, DeviceUnavailable)
    assert "hw.memsize" in result.reason


def _mac_warden(monkeypatch, run_command) -> Warden:
    monkeypatch.setattr(apple, "is_apple_silicon", lambda *args: True)
    monkeypatch.setattr(apple, "run_command", run_command)
    config = Config()
    plugins = Plugins(
        config,
        builtins=[("system", "memwarden.plugins.system"), ("apple", "memwarden.plugins.apple")],
        load_entry_points=False,
        env={},
    )
    return Warden(config, plugins)


def test_on_a_mac_the_core_counts_the_ram_once_as_the_unified_pool(monkeypatch):
    snapshot = _mac_warden(monkeypatch, outputs("m1_16gb_sysctl.txt")).snapshot()
    assert [(p.id, p.source) for p in snapshot.pools] == [("unified", "apple")]


def test_on_a_mac_whose_apple_plugin_fails_the_system_pool_still_governs_the_ram(monkeypatch):
    def broken(argv):
        raise RuntimeError("sysctl is missing")

    snapshot = _mac_warden(monkeypatch, broken).snapshot()
    assert [(p.id, p.source) for p in snapshot.pools] == [("system", "system")]
