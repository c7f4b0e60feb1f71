"""System RAM: the pool every machine has, with Linux cgroup limits and PSI honoured.

On Linux the numbers come from files, all read below a configurable root (``[plugins.system]
root``, default "/") so that a recorded container tree can stand in for the real one:

- ``/proc/meminfo``: the host's MemTotal, MemAvailable and swap (the same file psutil reads);
- the process's own memory cgroup, found through ``/proc/self/cgroup`` and
  ``/proc/self/mountinfo``, for cgroup v2 (``memory.max``, ``memory.high``, ``memory.current``,
  ``memory.stat``, ``memory.events``) and for cgroup v1 (``memory.limit_in_bytes``,
  ``memory.usage_in_bytes``, ``memory.stat``, ``memory.oom_control``);
- PSI from ``/proc/pressure/memory`` (or the limiting v2 cgroup's ``memory.pressure``).

Elsewhere psutil measures the pool. On Apple Silicon the ``apple`` plugin reports the same RAM
as one unified pool; the core then drops this plugin's pool, so a Mac whose apple plugin fails
still has its RAM governed.

Where each number comes from, and why available memory in a cgroup is computed the way it is, is
written up in docs/devices.md.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from pathlib import Path

import attrs

from memwarden.core.config import Config
from memwarden.core.types import DeviceUnavailable, MemoryPool, PoolKind
from memwarden.hookspecs import hookimpl

NAME = "system"
POOL_ID = "system"
POOL_NAME = "System RAM"

log = logging.getLogger("memwarden.plugins.system")

# cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (2^63 - 1 rounded down to a page, e.g.
# 9223372036854771712); no machine has 2^62 bytes, so anything above that means unlimited.
UNLIMITED_THRESHOLD = 1 << 62


@attrs.frozen
class SystemOptions:
    """``[plugins.system]``."""

    # Every file is read below this directory; tests and demos point it at a recorded tree.
    root: str = "/"


OPTIONS = SystemOptions

# -- parsing (text in, numbers out; tested against recorded files) ----------------------------


# The only /proc/meminfo lines a snapshot needs; matching just these keeps parsing cheap.
_MEMINFO = re.compile(r"^(MemTotal|MemFree|MemAvailable|SwapTotal|SwapFree):\s+(\d+)", re.M)


def parse_meminfo(text: str) -> dict[str, int]:
    """The totals of ``/proc/meminfo`` a pool needs, in bytes (the kernel writes kB = KiB)."""
    return {key: int(value) * 1024 for key, value in _MEMINFO.findall(text)}


def parse_psi(text: str) -> tuple[float | None, float | None]:
    """The ``avg10`` percentages of the ``some`` and ``full`` lines of a PSI file."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key == "avg10":
                found[kind] = float(value)
    return found.get("some"), found.get("full")


_FLAT_KEYED = re.compile(r"^(\S+) (-?\d+)$", re.M)


def parse_flat_keyed(text: str, keys: tuple[str, ...] | None = None) -> dict[str, int]:
    """A cgroup "flat keyed" file (``memory.stat``, ``memory.events``, ``memory.oom_control``);
    only ``keys`` when given (memory.stat has some 50 lines and is read on every snapshot)."""
    pattern = _FLAT_KEYED if keys is None else _keyed_pattern(keys)
    return {key: int(value) for key, value in pattern.findall(text)}


@functools.cache
def _keyed_pattern(keys: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(rf"^({'|'.join(map(re.escape, keys))}) (-?\d+)$", re.M)


def parse_limit(text: str) -> int | None:
    """A cgroup limit in bytes, or None for none ("max" in v2, a value near 2^63 in v1)."""
    value = text.strip()
    if value == "max":
        return None
    number = int(value)
    return None if number >= UNLIMITED_THRESHOLD else number


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and its cgroup v1 ``memory`` controller path."""
    v2_path = v1_memory_path = None
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_memory_path = path
    return v2_path, v1_memory_path


@attrs.frozen
class CgroupMount:
    mount_point: str
    # The directory of the hierarchy that is mounted there ("/" unless in a cgroup namespace
    # or a bind mount of a sub-tree).
    hierarchy_root: str
    version: int


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup v2 mount and the cgroup v1 ``memory`` mount from ``/proc/self/mountinfo``."""
    mounts = []
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype == "cgroup2":
            mounts.append(CgroupMount(_unescape(fields[4]), _unescape(fields[3]), 2))
        elif fstype == "cgroup" and "memory" in super_options:
            mounts.append(CgroupMount(_unescape(fields[4]), _unescape(fields[3]), 1))
    return mounts


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return (
        path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
        .replace("\\134", "\\")
    )  # fmt: skip


# -- finding the files once ----------------------------------------------------------------


@attrs.frozen
class Layout:
    """Which files one snapshot reads, found once per root (a snapshot runs up to 10x/s)."""

    meminfo: Path
    psi: Path | None
    # Own v2 cgroup first, then its ancestors, each that has memory.max (the root has none).
    v2_levels: tuple[Path, ...] = ()
    v1_dir: Path | None = None


def _under(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


# Kernel files stay open between snapshots and are read again with pread at offset 0 (procfs
# and cgroupfs regenerate their text for each read from the start): 7 us instead of 12 us for
# an open, read and close of /proc/meminfo. Only /proc and /sys: a recorded tree's files are
# opened afresh, so a test that rewrites one is read as written. Not /proc/self, which names
# the process that opened it (a forked child would read its parent's).
_open_files: dict[str, int] = {}
_open_lock = threading.Lock()
_KERNEL_PREFIXES = ("/proc/", "/sys/")


def _read(path: Path) -> str:
    name = str(path)
    if name.startswith(_KERNEL_PREFIXES) and not name.startswith("/proc/self/"):
        with _open_lock:
            fd = _open_files.get(name)
            if fd is not None:
                try:
                    data = os.pread(fd, 65536, 0)
                except OSError:
                    # The cgroup was removed, say: open it afresh (or fail) below.
                    del _open_files[name]
                    os.close(fd)
                else:
                    if len(data) < 65536:
                        return data.decode("ascii", "replace")
            else:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                data = os.pread(fd, 65536, 0)
                _open_files[name] = fd
                if len(data) < 65536:
                    return data.decode("ascii", "replace")
    # os.read rather than open(): half the cost, and these files are read ten times a second.
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


def _read_or_none(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return _read(path)
    except OSError:
        return None


def _own_directory(root: Path, mount: CgroupMount, own_path: str) -> Path:
    mount_dir = _under(root, mount.mount_point)
    relative = own_path
    if mount.hierarchy_root != "/" and own_path.startswith(mount.hierarchy_root):
        relative = own_path[len(mount.hierarchy_root) :]
    # Inside a cgroup namespace /proc/self/cgroup may name a path the mount does not show (or
    # one above it, "/../.."); the mount's own top is then our cgroup.
    if ".." in Path(relative).parts:
        return mount_dir
    candidate = _under(mount_dir, relative)
    return candidate if candidate.is_dir() else mount_dir


def discover(root: Path) -> Layout:
    meminfo = _under(root, "/proc/meminfo")
    psi: Path | None = _under(root, "/proc/pressure/memory")
    if _read_or_none(psi) is None:  # no PSI in this kernel, or psi=0 (reading fails)
        psi = None
    own = _read_or_none(_under(root, "/proc/self/cgroup"))
    if own is None:
        return Layout(meminfo=meminfo, psi=psi)
    v2_path, v1_path = parse_proc_cgroup(own)
    mounts_text = _read_or_none(_under(root, "/proc/self/mountinfo")) or ""
    mounts = parse_mountinfo(mounts_text) or [
        CgroupMount("/sys/fs/cgroup", "/", 2),
        CgroupMount("/sys/fs/cgroup/unified", "/", 2),
        CgroupMount("/sys/fs/cgroup/memory", "/", 1),
    ]
    v2_levels: list[Path] = []
    v1_dir = None
    for mount in mounts:
        if mount.version == 2 and v2_path is not None and not v2_levels:
            top = _under(root, mount.mount_point)
            level = _own_directory(root, mount, v2_path)
            while True:
                if (level / "memory.max").is_file():
                    v2_levels.append(level)
                if level == top or top not in level.parents:
                    break
                level = level.parent
        elif mount.version == 1 and v1_path is not None and v1_dir is None:
            directory = _own_directory(root, mount, v1_path)
            if (directory / "memory.limit_in_bytes").is_file():
                v1_dir = directory
    return Layout(meminfo=meminfo, psi=psi, v2_levels=tuple(v2_levels), v1_dir=v1_dir)


_layouts: dict[Path, Layout] = {}


def layout_for(root: Path) -> Layout:
    layout = _layouts.get(root)
    if layout is None:
        layout = _layouts[root] = discover(root)
    return layout


def forget_layouts() -> None:
    """Find the files again on the next snapshot (the process moved to another cgroup)."""
    _layouts.clear()
    with _open_lock:
        for fd in _open_files.values():
            os.close(fd)
        _open_files.clear()


# -- measuring -----------------------------------------------------------------------------


@attrs.frozen
class CgroupReading:
    limit_bytes: int
    # What can still be allocated before the kernel must reclaim hard or kill: see _headroom.
    available_bytes: int
    source: str
    oom_kills: int | None
    psi_file: Path | None = None
    swap_limit_bytes: int | None = None
    swap_used_bytes: int | None = None


def _headroom(limit: int, usage: int, stat: dict[str, int], inactive_key: str) -> int:
    # The cgroup's usage counts its page cache. Before the OOM killer runs, the kernel reclaims
    # that cache; inactive file pages go first and cheaply, active ones only after they age. So
    # what a new allocation can really get is limit - (usage - inactive_file): the "working set"
    # that kubelet and `docker stats` subtract. Counting active file pages too would promise
    # memory the kernel gives back only by thrashing.
    reclaimable = min(stat.get(inactive_key, 0), usage)
    return max(0, limit - (usage - reclaimable))


def read_cgroup_v2(levels: tuple[Path, ...]) -> CgroupReading | None:
    """The tightest limit between our cgroup and the root, or None when none is set."""
    tightest: CgroupReading | None = None
    for level in levels:
        limits = []
        hard = parse_limit(_read(level / "memory.max"))
        if hard is not None:
            limits.append((hard, "cgroup v2 memory.max"))
        # Above memory.high the kernel throttles and reclaims the cgroup hard: a model that
        # spills over it runs, but at a crawl. Treat it as the usable limit.
        high_text = _read_or_none(level / "memory.high")
        high = parse_limit(high_text) if high_text is not None else None
        if high is not None and (hard is None or high < hard):
            limits.append((high, "cgroup v2 memory.high"))
        if not limits:
            continue
        limit, source = min(limits)
        usage = int(_read(level / "memory.current"))
        if tightest is not None and limit - usage >= tightest.available_bytes:
            continue  # cannot be tighter even before counting its reclaimable cache
        stat = parse_flat_keyed(_read_or_none(level / "memory.stat") or "", ("inactive_file",))
        events = parse_flat_keyed(_read_or_none(level / "memory.events") or "")
        available = _headroom(limit, usage, stat, "inactive_file")
        if tightest is not None and available >= tightest.available_bytes:
            continue
        swap_limit_text = _read_or_none(level / "memory.swap.max")
        swap_used_text = _read_or_none(level / "memory.swap.current")
        tightest = CgroupReading(
            limit_bytes=limit,
            available_bytes=available,
            source=source if level == levels[0] else f"{source} of {level.name}",
            oom_kills=events.get("oom_kill"),
            psi_file=level / "memory.pressure",
            swap_limit_bytes=parse_limit(swap_limit_text) if swap_limit_text else None,
            swap_used_bytes=int(swap_used_text) if swap_used_text else None,
        )
    return tightest


def read_cgroup_v1(directory: Path) -> CgroupReading | None:
    own_limit = parse_limit(_read(directory / "memory.limit_in_bytes"))
    stat = parse_flat_keyed(
        _read(directory / "memory.stat"), ("total_inactive_file", "hierarchical_memory_limit")
    )
    # With use_hierarchy (always on since 5.x kernels) an ancestor's limit binds us too; the
    # kernel sums it up as hierarchical_memory_limit.
    inherited = stat.get("hierarchical_memory_limit")
    inherited = None if inherited is None or inherited >= UNLIMITED_THRESHOLD else inherited
    candidates = [
        (limit, source)
        for limit, source in (
            (own_limit, "cgroup v1 memory.limit_in_bytes"),
            (inherited, "cgroup v1 memory.limit_in_bytes of a parent cgroup"),
        )
        if limit is not None
    ]
    if not candidates:
        return None
    limit, source = min(candidates)
    usage = int(_read(directory / "memory.usage_in_bytes"))
    oom = parse_flat_keyed(_read_or_none(directory / "memory.oom_control") or "")
    return CgroupReading(
        limit_bytes=limit,
        available_bytes=_headroom(limit, usage, stat, "total_inactive_file"),
        source=source,
        oom_kills=oom.get("oom_kill"),
    )


def read_v1_oom_kills(directory: Path) -> int | None:
    oom = parse_flat_keyed(_read_or_none(directory / "memory.oom_control") or "")
    return oom.get("oom_kill")


def measure_linux(root: Path) -> MemoryPool | DeviceUnavailable:
    layout = layout_for(root)
    try:
        host = parse_meminfo(_read(layout.meminfo))
    except OSError as exc:
        forget_layouts()
        return DeviceUnavailable(
            source=NAME, reason=f"cannot read {layout.meminfo}: {exc.strerror or exc}"
        )
    try:
        total = host["MemTotal"]
        available = host.get("MemAvailable", host.get("MemFree", 0))
    except KeyError:
        return DeviceUnavailable(source=NAME, reason=f"{layout.meminfo} has no MemTotal line")
    swap_total = host.get("SwapTotal")
    swap_free = host.get("SwapFree")
    swap_used = swap_total - swap_free if swap_total is not None and swap_free is not None else None

    limit_source = None
    oom_kills = None
    psi_file = layout.psi
    try:
        readings = []
        if layout.v2_levels:
            readings.append(read_cgroup_v2(layout.v2_levels))
        if layout.v1_dir is not None:
            v1 = read_cgroup_v1(layout.v1_dir)
            readings.append(v1)
            if v1 is None:
                oom_kills = read_v1_oom_kills(layout.v1_dir)
    except (OSError, ValueError) as exc:
        # The cgroup was removed or the process moved: find the files again next time.
        log.warning("cannot read the memory cgroup (%s); reporting the host's memory", exc)
        forget_layouts()
        readings = []
    limited = [r for r in readings if r is not None]
    if limited:
        cgroup = min(limited, key=lambda r: r.available_bytes)
        oom_kills = cgroup.oom_kills
        if cgroup.limit_bytes < total:
            total = cgroup.limit_bytes
            limit_source = cgroup.source
        available = min(available, cgroup.available_bytes)
        if cgroup.psi_file is not None and (cgroup.psi_file).is_file():
            psi_file = cgroup.psi_file
        if cgroup.swap_limit_bytes is not None and swap_total is not None:
            swap_total = min(swap_total, cgroup.swap_limit_bytes)
            swap_used = cgroup.swap_used_bytes
    psi_text = _read_or_none(psi_file)
    psi_some, psi_full = parse_psi(psi_text) if psi_text else (None, None)
    available = min(available, total)
    return MemoryPool(
        id=POOL_ID,
        kind=PoolKind.SYSTEM,
        name=POOL_NAME,
        total_bytes=total,
        available_bytes=available,
        used_bytes=total - available,
        source=NAME,
        limit_source=limit_source,
        swap_total_bytes=swap_total,
        swap_used_bytes=swap_used,
        psi_some_avg10=psi_some,
        psi_full_avg10=psi_full,
        oom_kills=oom_kills,
    )


def measure_psutil() -> MemoryPool:
    import psutil  # not on Linux, where the files above are read directly (and faster)

    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return MemoryPool(
        id=POOL_ID,
        kind=PoolKind.SYSTEM,
        name=POOL_NAME,
        total_bytes=memory.total,
        available_bytes=memory.available,
        used_bytes=memory.total - memory.available,
        source=NAME,
        swap_total_bytes=swap.total,
        swap_used_bytes=swap.used,
    )


@hookimpl
def detect_device(config: Config) -> list[MemoryPool] | DeviceUnavailable | None:
    options = config.plugin_options(NAME, SystemOptions)
    if sys.platform.startswith("linux") or options.root != "/":
        result = measure_linux(Path(options.root))
        return result if isinstance(result, DeviceUnavailable) else [result]
    return [measure_psutil()]
