"""Apple Silicon unified memory: one pool that the CPU and the GPU share.

On arm64 macOS, RAM and "VRAM" are the same memory, so this plugin reports exactly one pool
(id "unified"). The core drops the ``system`` plugin's pool wherever a unified pool is
reported, since both are the same RAM. The numbers come from two commands, run
with a short timeout:

- ``sysctl hw.memsize iogpu.wired_limit_mb kern.memorystatus_vm_pressure_level``: the RAM
  size, the GPU wired-memory limit when an administrator set one (0 means the default), and
  the kernel's own pressure verdict (1 normal, 2 warn, 4 critical);
- ``vm_stat``: page counts, from which available memory is computed.

The pool's total is all of RAM; the GPU may wire only part of it (Metal's working-set limit),
given as ``gpu_limit_bytes`` with ``gpu_limit_source``. docs/devices.md has the sources.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import attrs

from memwarden.core.config import Config, NoOptions
from memwarden.core.types import DeviceUnavailable, MemoryPool, PoolKind
from memwarden.hookspecs import hookimpl

NAME = "apple"
# Takes no [plugins.apple] options: any key there is an unknown key.
OPTIONS = NoOptions
POOL_ID = "unified"
COMMAND_TIMEOUT_S = 2.0
GIB = 1024**3

# kern.memorystatus_vm_pressure_level returns xnu's dispatch levels, not its internal enum:
# bsd/kern/kern_memorystatus_notify.c, convert_internal_pressure_level_to_dispatch_level().
PRESSURE_LEVELS = {1: "normal", 2: "warning", 4: "critical"}

SYSCTL_KEYS = ("hw.memsize", "iogpu.wired_limit_mb", "kern.memorystatus_vm_pressure_level")

Runner = Callable[[Sequence[str]], str]


def is_apple_silicon(system: str | None = None, machine: str | None = None) -> bool:
    system = sys.platform if system is None else system
    machine = platform.machine() if machine is None else machine
    return system == "darwin" and machine == "arm64"


# -- parsing (text in, numbers out; tested against real recorded outputs) -----------------------

_VM_STAT_HEADER = re.compile(r"page size of (\d+) bytes")
_VM_STAT_LINE = re.compile(r'^"?([^:"]+)"?:\s+(\d+)\.?\s*$')


def parse_vm_stat(text: str) -> tuple[int, dict[str, int]]:
    """(page size in bytes, page count per label) from ``vm_stat`` output."""
    header = _VM_STAT_HEADER.search(text)
    if header is None:
        raise ValueError("vm_stat output has no 'page size of N bytes' header")
    counts = {}
    for line in text.splitlines()[1:]:
        match = _VM_STAT_LINE.match(line.strip())
        if match:
            counts[match.group(1).strip()] = int(match.group(2))
    return int(header.group(1)), counts


def available_bytes(page_size: int, counts: Mapping[str, int]) -> int:
    """Memory a new allocation can get without compressing or swapping anyone's data.

    That is free pages, plus file-backed pages (the file cache: clean ones are dropped, never
    written anywhere; speculative read-ahead pages are among them), plus purgeable pages (memory
    that apps marked disposable). These three do not overlap: vm_stat prints "Pages free"
    without the speculative pages, and purgeable pages are anonymous, never file-backed. It is
    what Activity Monitor leaves out of "Memory Used" (app memory is anonymous minus purgeable).
    Inactive anonymous pages are not counted: taking them means compressing someone's data.
    Without a "File-backed pages" line (very old vm_stat) fall back to free + speculative +
    inactive.
    """
    free = counts.get("Pages free", 0)
    if "File-backed pages" in counts:
        reclaimable = counts["File-backed pages"] + counts.get("Pages purgeable", 0)
    else:
        reclaimable = counts.get("Pages speculative", 0) + counts.get("Pages inactive", 0)
    return (free + reclaimable) * page_size


def parse_sysctl(text: str) -> dict[str, int]:
    """Integer values from ``sysctl KEY...`` output (``key: value`` lines). A key this macOS
    does not know (``iogpu.wired_limit_mb`` before macOS 14) is simply missing."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().lstrip("-").isdigit():
            values[key.strip()] = int(value)
    return values


def default_gpu_limit_bytes(memsize: int) -> int:
    """Metal's default ``recommendedMaxWorkingSetSize`` for a Mac with this much RAM.

    Two thirds of RAM up to 36 GiB, three quarters above, as llama.cpp logs it on real machines
    (16 GiB: 10922.67 MiB, 32 GiB: 21845.34 MiB, 64 GiB: 49152 MiB, 96 GiB: 73728 MiB); the
    sources are listed in docs/devices.md. Recent macOS releases report a little more; this
    errs on the safe side.
    """
    return memsize * 2 // 3 if memsize <= 36 * GIB else memsize * 3 // 4


@attrs.frozen
class AppleReading:
    memsize: int
    wired_limit_mb: int | None
    pressure_level: int | None
    page_size: int
    counts: Mapping[str, int]


def build_pool(reading: AppleReading) -> MemoryPool:
    if reading.wired_limit_mb:
        gpu_limit = min(reading.wired_limit_mb * 1024 * 1024, reading.memsize)
        gpu_limit_source = "sysctl iogpu.wired_limit_mb"
    else:
        gpu_limit = default_gpu_limit_bytes(reading.memsize)
        gpu_limit_source = "Metal default working set (2/3 of RAM up to 36 GiB, 3/4 above)"
    available = min(available_bytes(reading.page_size, reading.counts), reading.memsize)
    level = reading.pressure_level
    return MemoryPool(
        id=POOL_ID,
        kind=PoolKind.UNIFIED,
        name="Apple unified memory",
        total_bytes=reading.memsize,
        available_bytes=available,
        used_bytes=reading.memsize - available,
        source=NAME,
        os_pressure=PRESSURE_LEVELS.get(level, str(level)) if level is not None else None,
        gpu_limit_bytes=gpu_limit,
        gpu_limit_source=gpu_limit_source,
    )


def run_command(argv: Sequence[str]) -> str:
    completed = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    # sysctl exits non-zero when one of several keys is unknown, yet prints the others.
    return completed.stdout


def read(runner: Runner | None = None) -> AppleReading:
    runner = runner or run_command
    # Named output, not -n: with -n an unknown key would shift every later value by a line.
    values = parse_sysctl(runner(["/usr/sbin/sysctl", *SYSCTL_KEYS]))
    if "hw.memsize" not in values:
        raise ValueError("sysctl did not report hw.memsize")
    page_size, counts = parse_vm_stat(runner(["/usr/bin/vm_stat"]))
    return AppleReading(
        memsize=values["hw.memsize"],
        wired_limit_mb=values.get("iogpu.wired_limit_mb"),
        pressure_level=values.get("kern.memorystatus_vm_pressure_level"),
        page_size=page_size,
        counts=counts,
    )


@hookimpl
def detect_device(config: Config) -> list[MemoryPool] | DeviceUnavailable:
    if not is_apple_silicon():
        return DeviceUnavailable(
            source=NAME,
            reason=f"not Apple Silicon (platform {sys.platform}, {platform.machine()})",
        )
    try:
        reading = read()
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return DeviceUnavailable(source=NAME, reason=f"cannot read memory statistics: {exc}")
    return [build_pool(reading)]
