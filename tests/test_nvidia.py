"""The nvidia plugin, against NVML answers recorded on a real H100 and replayed by a fake pynvml."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fake_pynvml import NAMES, FakeNvml, load_recording

from memwarden.core.config import Config
from memwarden.core.serialize import to_data
from memwarden.core.types import DeviceUnavailable
from memwarden.plugins import nvidia

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia_h100"


@pytest.fixture(autouse=True)
def fresh_nvml_session():
    nvidia.shutdown()
    yield
    nvidia.shutdown()


@pytest.fixture
def install(monkeypatch):
    def put(fake: object) -> object:
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return put


def detect():
    return nvidia.detect_device(config=Config())


def test_fake_pynvml_uses_only_names_the_real_module_has():
    import importlib

    real = importlib.import_module("pynvml")
    missing = [name for name in NAMES if not hasattr(real, name)]
    assert missing == []
    codes = [name for name in NAMES if name.startswith("NVML_")]
    assert {name: getattr(real, name) for name in codes} == {
        name: getattr(FakeNvml(load_recording()), name) for name in codes
    }


def test_replayed_h100_recording_gives_the_pools_the_plugin_reported_on_the_real_gpu(install):
    install(FakeNvml(load_recording()))
    recorded_on_h100 = json.loads((FIXTURES / "plugin_pools.json").read_text())
    assert to_data(detect()) == recorded_on_h100


def test_h100_pool_carries_name_uuid_and_the_process_holding_memory(install):
    raw = load_recording()
    install(FakeNvml(raw))
    [pool] = detect()
    device = raw["devices"][0]
    assert pool.id == "cuda:0"
    assert pool.name == "NVIDIA H100 80GB HBM3"
    assert pool.uuid == device["uuid"]
    assert pool.total_bytes == device["memory_v2"]["ok"]["total"]
    assert pool.available_bytes == device["memory_v2"]["ok"]["free"]
    assert [(p.pid, p.used_bytes) for p in pool.processes] == [(raw["holder_pid"], 2690646016)]


def test_driver_reserved_memory_counts_as_used(install):
    raw = load_recording()
    install(FakeNvml(raw))
    [pool] = detect()
    memory = raw["devices"][0]["memory_v2"]["ok"]
    assert pool.used_bytes == memory["used"] + memory["reserved"]


def test_nvml_is_initialised_once_and_handles_are_reused(install):
    fake = install(FakeNvml(load_recording()))
    for _ in range(5):
        detect()
    assert fake.calls.count("nvmlInit") == 1
    assert fake.calls.count("nvmlDeviceGetHandleByIndex(0)") == 1


def test_shutdown_releases_nvml(install):
    fake = install(FakeNvml(load_recording()))
    detect()
    nvidia.shutdown()
    assert fake.calls[-1] == "nvmlShutdown"
    assert not fake.initialised


def test_nvml_is_shut_down_when_the_process_exits(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from fake_pynvml import FakeNvml, load_recording
        fake = FakeNvml(load_recording())
        sys.modules["pynvml"] = fake
        import atexit
        atexit.register(lambda: print("calls:", ",".join(fake.calls)))
        from memwarden.core.config import Config
        from memwarden.plugins import nvidia
        nvidia.detect_device(config=Config())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    # atexit runs the last-registered handler first; the plugin registers its shutdown on the
    # first snapshot, after the printer above, so the printer sees the shutdown already done.
    calls = done.stdout.strip().removeprefix("calls: ").split(",")
    assert calls[0] == "nvmlInit"
    assert calls[-1] == "nvmlShutdown"


def test_memory_falls_back_to_v1_when_the_driver_lacks_the_v2_query(install):
    raw = load_recording()
    raw["devices"][0]["memory_v2"] = {"error": 13}  # NVML_ERROR_FUNCTION_NOT_FOUND
    fake = install(FakeNvml(raw))
    [pool] = detect()
    detect()
    v1 = raw["devices"][0]["memory_v1"]["ok"]
    assert (pool.total_bytes, pool.available_bytes) == (v1["total"], v1["free"])
    # Asked once, then remembered as missing.
    assert fake.calls.count("nvmlDeviceGetMemoryInfo(v2)") == 1


def test_process_with_unattributed_memory_counts_zero_bytes(install):
    raw = load_recording()
    raw["devices"][0]["compute_processes"]["ok"][0]["usedGpuMemory"] = None
    install(FakeNvml(raw))
    [pool] = detect()
    assert [(p.pid, p.used_bytes) for p in pool.processes] == [(raw["holder_pid"], 0)]


def test_process_listed_for_compute_and_graphics_appears_once(install):
    raw = load_recording()
    process = raw["devices"][0]["compute_processes"]["ok"][0]
    raw["devices"][0]["graphics_processes"]["ok"] = [process]
    install(FakeNvml(raw))
    [pool] = detect()
    assert len(pool.processes) == 1


def test_unsupported_process_query_still_reports_memory(install):
    raw = load_recording()
    raw["devices"][0]["compute_processes"] = {"error": 3}  # NVML_ERROR_NOT_SUPPORTED
    install(FakeNvml(raw))
    [pool] = detect()
    assert pool.total_bytes == raw["devices"][0]["memory_v2"]["ok"]["total"]
    assert pool.processes == ()


def test_lost_gpu_makes_the_plugin_unavailable_with_the_reason(install):
    raw = load_recording()
    raw["devices"][0]["memory_v2"] = {"error": 15}  # NVML_ERROR_GPU_IS_LOST
    install(FakeNvml(raw))
    result = detect()
    assert isinstance(result, DeviceUnavailable)
    assert "cuda:0" in result.reason
    assert "GPU is lost" in result.reason


def test_no_driver_library_is_unavailable_not_an_error(install):
    install(FakeNvml(load_recording(), init_error=12))  # NVML_ERROR_LIBRARY_NOT_FOUND
    result = detect()
    assert result == DeviceUnavailable(
        source="nvidia",
        reason="the NVIDIA driver's NVML library (libnvidia-ml) was not found: no NVIDIA driver",
    )


def test_driver_not_loaded_is_unavailable_with_the_reason(install):
    install(FakeNvml(load_recording(), init_error=9))  # NVML_ERROR_DRIVER_NOT_LOADED
    result = detect()
    assert isinstance(result, DeviceUnavailable)
    assert "driver is installed but not loaded" in result.reason


def test_missing_package_is_unavailable_and_says_how_to_install(install):
    install(None)  # makes `import pynvml` raise ImportError
    result = detect()
    assert isinstance(result, DeviceUnavailable)
    assert "nvidia-ml-py" in result.reason
    assert "memwarden[nvidia]" in result.reason


def test_failed_start_is_not_retried_on_every_snapshot(install):
    fake = install(FakeNvml(load_recording(), init_error=9))
    detect()
    detect()
    assert fake.calls.count("nvmlInit") == 1


def test_failed_start_is_retried_after_the_retry_interval(install, monkeypatch):
    fake = install(FakeNvml(load_recording(), init_error=9))
    detect()
    clock = nvidia.time.monotonic() + nvidia.RETRY_AFTER_S + 1
    monkeypatch.setattr(nvidia.time, "monotonic", lambda: clock)
    fake.init_error = None
    [pool] = detect()
    assert pool.id == "cuda:0"
