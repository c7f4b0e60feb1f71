"""NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``): one pool per GPU.

NVML is initialised once, on the first snapshot, and shut down when the process exits; device
handles, names and UUIDs are read once and kept. A snapshot then costs one memory query and two
process-list queries per GPU. Without the library or the driver the plugin reports itself
unavailable with the reason; it never raises.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import threading
import time
from types import ModuleType
from typing import Any

import attrs

from memwarden.core.config import Config, NoOptions
from memwarden.core.types import DeviceUnavailable, MemoryPool, PoolKind, PoolProcess
from memwarden.hookspecs import hookimpl

NAME = "nvidia"
# Takes no [plugins.nvidia] options: any key there is an unknown key.
OPTIONS = NoOptions

# After NVML failed to start (no driver), try again only this often: a snapshot runs up to ten
# times a second and each attempt loads a shared library.
RETRY_AFTER_S = 60.0

INSTALL_HINT = "install it with: pip install 'memwarden[nvidia]'"


@attrs.define
class Gpu:
    index: int
    handle: Any
    name: str
    uuid: str | None
    # False once the driver said nvmlDeviceGetMemoryInfo_v2 is missing or unsupported.
    memory_v2: bool = True


@attrs.define
class Session:
    """NVML as initialised in this process."""

    nvml: ModuleType
    gpus: list[Gpu]
    driver_version: str | None = None


_lock = threading.Lock()
_session: Session | None = None
_failure: tuple[float, str] | None = None  # (monotonic time, reason) of the last failed start
_atexit_registered = False


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes for names and UUIDs.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def describe_nvml_error(nvml: ModuleType, exc: BaseException) -> str:
    code = getattr(exc, "value", None)
    if code == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", object()):
        return "the NVIDIA driver's NVML library (libnvidia-ml) was not found: no NVIDIA driver"
    if code == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
        return "the NVIDIA driver is installed but not loaded (no GPU, or the module failed)"
    if code == getattr(nvml, "NVML_ERROR_NO_PERMISSION", object()):
        return "no permission to open the NVIDIA device files (/dev/nvidia*)"
    if code == getattr(nvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", object()):
        return "the NVML library and the loaded driver differ in version (reboot after an update)"
    return f"NVML failed: {exc}"


def _start(nvml: ModuleType) -> Session:
    nvml.nvmlInit()
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            try:
                uuid: str | None = _text(nvml.nvmlDeviceGetUUID(handle))
            except nvml.NVMLError:
                uuid = None
            gpus.append(Gpu(index, handle, _text(nvml.nvmlDeviceGetName(handle)), uuid))
        try:
            driver: str | None = _text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError:
            driver = None
    except BaseException:
        nvml.nvmlShutdown()
        raise
    return Session(nvml=nvml, gpus=gpus, driver_version=driver)


def session() -> Session | str:
    """The NVML session, started on first use; or why there is none."""
    global _session, _failure, _atexit_registered
    with _lock:
        if _session is not None:
            return _session
        if _failure is not None and time.monotonic() - _failure[0] < RETRY_AFTER_S:
            return _failure[1]
        if sys.platform == "linux" and "pynvml" not in sys.modules and not _driver_present():
            # No driver: pynvml's import and its failing search for libnvidia-ml would cost
            # every `memwarden status` tens of milliseconds for a known answer.
            reason = (
                "the NVIDIA driver's NVML library (libnvidia-ml) was not found: no NVIDIA driver "
                "(no /proc/driver/nvidia, no /dev/nvidiactl)"
            )
            _failure = (time.monotonic(), reason)
            return reason
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            reason = f"the nvidia-ml-py package (pynvml) is not installed; {INSTALL_HINT}"
            _failure = (time.monotonic(), reason)
            return reason
        try:
            _session = _start(nvml)
        except nvml.NVMLError as exc:
            reason = describe_nvml_error(nvml, exc)
            _failure = (time.monotonic(), reason)
            return reason
        except OSError as exc:
            reason = f"cannot load NVML: {exc}"
            _failure = (time.monotonic(), reason)
            return reason
        _failure = None
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        return _session


def _driver_present() -> bool:
    """Whether the Linux NVIDIA kernel driver is loaded (its proc directory or control device)."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def shutdown() -> None:
    """Shut NVML down (at exit, or in tests); the next snapshot starts it again."""
    global _session, _failure
    with _lock:
        current, _session, _failure = _session, None, None
        if current is not None:
            # NVMLError: the driver went away first; there is nothing left to release.
            with contextlib.suppress(current.nvml.NVMLError):
                current.nvml.nvmlShutdown()


def _memory(nvml: ModuleType, gpu: Gpu) -> tuple[int, int, int]:
    """(total, used, free), with used = total - free: memory the driver reserves for itself
    (which the v2 query reports apart, and v1 counts as used) cannot hold a model either."""
    if gpu.memory_v2 and hasattr(nvml, "nvmlMemory_v2"):
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(gpu.handle, version=nvml.nvmlMemory_v2)
            return int(info.total), int(info.total) - int(info.free), int(info.free)
        except nvml.NVMLError as exc:
            unsupported = (nvml.NVML_ERROR_FUNCTION_NOT_FOUND, nvml.NVML_ERROR_NOT_SUPPORTED)
            if getattr(exc, "value", None) not in unsupported:
                raise
            gpu.memory_v2 = False
    info = nvml.nvmlDeviceGetMemoryInfo(gpu.handle)
    return int(info.total), int(info.total) - int(info.free), int(info.free)


def _processes(nvml: ModuleType, gpu: Gpu) -> tuple[PoolProcess, ...]:
    by_pid: dict[int, int] = {}
    for query in (
        nvml.nvmlDeviceGetComputeRunningProcesses,
        nvml.nvmlDeviceGetGraphicsRunningProcesses,
    ):
        try:
            found = query(gpu.handle)
        except nvml.NVMLError:
            continue  # not supported on this GPU or driver: memory is still reported
        for process in found:
            # None when the driver cannot attribute memory (Windows WDDM, some vGPU setups).
            used = process.usedGpuMemory or 0
            # A process doing compute and graphics is listed twice with the same allocation.
            by_pid[int(process.pid)] = max(by_pid.get(int(process.pid), 0), int(used))
    return tuple(PoolProcess(pid=pid, used_bytes=used) for pid, used in sorted(by_pid.items()))


def measure(current: Session) -> list[MemoryPool] | DeviceUnavailable:
    nvml = current.nvml
    pools = []
    errors = []
    for gpu in current.gpus:
        try:
            total, used, free = _memory(nvml, gpu)
            processes = _processes(nvml, gpu)
        except nvml.NVMLError as exc:
            errors.append(f"cuda:{gpu.index} ({gpu.name}): {describe_nvml_error(nvml, exc)}")
            continue
        pools.append(
            MemoryPool(
                id=f"cuda:{gpu.index}",
                kind=PoolKind.GPU,
                name=gpu.name,
                total_bytes=total,
                available_bytes=free,
                used_bytes=used,
                source=NAME,
                uuid=gpu.uuid,
                processes=processes,
            )
        )
    if not pools:
        if errors:
            return DeviceUnavailable(source=NAME, reason="; ".join(errors))
        return DeviceUnavailable(source=NAME, reason="NVML is running but reports no GPU")
    return pools


@hookimpl
def detect_device(config: Config) -> list[MemoryPool] | DeviceUnavailable:
    current = session()
    if isinstance(current, str):
        return DeviceUnavailable(source=NAME, reason=current)
    return measure(current)
