"""A stand-in for the ``pynvml`` module (nvidia-ml-py) that replays recorded NVML answers.

It keeps the real module's names, return shapes and error classes: ``NVMLError`` carries the
NVML return code in ``.value``, memory info objects have the fields of ``c_nvmlMemory_t`` /
``c_nvmlMemory_v2_t``, process entries have ``pid`` and ``usedGpuMemory`` (None when the driver
cannot attribute memory). Tests put it in ``sys.modules["pynvml"]``; test_nvidia.py checks that
every name used here exists in the real module.

A recording (tests/fixtures/nvidia_h100/nvml_raw.json) holds, per device, either
``{"ok": value}`` or ``{"error": code}`` for each query; record.py beside it wrote it.
"""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
nvmlMemory_v2 = 0x02000028

# The real module's strings for these codes (NVMLError._errcode_to_string).
_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
}

NAMES = (
    "NVMLError",
    "NVML_SUCCESS",
    "NVML_ERROR_UNINITIALIZED",
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_LIBRARY_NOT_FOUND",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_GPU_IS_LOST",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    "nvmlMemory_v2",
    "nvmlInit",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
)

RECORDING = Path(__file__).parent / "fixtures" / "nvidia_h100" / "nvml_raw.json"


def load_recording() -> dict[str, Any]:
    return json.loads(RECORDING.read_text())


class FakeNvml(types.ModuleType):
    """Build with a recording; ``init_error`` makes nvmlInit fail with that code."""

    def __init__(self, recording: dict[str, Any], init_error: int | None = None) -> None:
        super().__init__("pynvml")
        self.recording = copy.deepcopy(recording)
        self.init_error = init_error
        self.calls: list[str] = []
        self.initialised = False

        class NVMLError(Exception):
            def __init__(self, value: int) -> None:
                super().__init__(value)
                self.value = value

            def __str__(self) -> str:
                return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")

        self.NVMLError = NVMLError
        for name in NAMES:
            if name.startswith("NVML_") or name == "nvmlMemory_v2":
                setattr(self, name, globals()[name])

    # -- helpers -----------------------------------------------------------------------------

    def _answer(self, handle: int, query: str) -> Any:
        self._check_initialised()
        answer = self.recording["devices"][handle][query]
        if "error" in answer:
            raise self.NVMLError(answer["error"])
        return answer["ok"]

    def _check_initialised(self) -> None:
        if not self.initialised:
            raise self.NVMLError(NVML_ERROR_UNINITIALIZED)

    # -- the pynvml API ------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")
        self._check_initialised()
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_initialised()
        return self.recording["driver_version"]

    def nvmlDeviceGetCount(self) -> int:
        self._check_initialised()
        return len(self.recording["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check_initialised()
        self.calls.append(f"nvmlDeviceGetHandleByIndex({index})")
        return index  # the real handle is an opaque ctypes pointer

    def nvmlDeviceGetName(self, handle: int) -> str:
        self._check_initialised()
        return self.recording["devices"][handle]["name"]

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        self._check_initialised()
        return self.recording["devices"][handle]["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> Any:
        self.calls.append(f"nvmlDeviceGetMemoryInfo(v{2 if version else 1})")
        fields = self._answer(handle, "memory_v2" if version else "memory_v1")
        return types.SimpleNamespace(**fields)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return [types.SimpleNamespace(**p) for p in self._answer(handle, "compute_processes")]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        return [types.SimpleNamespace(**p) for p in self._answer(handle, "graphics_processes")]
