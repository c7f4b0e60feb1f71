"""Detection without polling fast: kernel event sources, and an interval that adapts.

The monitor sleeps in ``poll()`` between samples. Every :class:`EventSource` here is one file
descriptor it polls beside its wake-up pipe; when one fires, the monitor samples at once instead
of waiting for the level's interval. The sources, each armed only where the kernel offers it:

- :class:`PsiTrigger`: a Linux PSI trigger (``/proc/pressure/memory``): tasks stalled on memory
  for ``psi_stall_us`` within ``psi_window_us``.
- :class:`CgroupV2Events`: a cgroup v2 ``memory.events`` file, which the kernel marks modified
  (``POLLPRI``, and an inotify ``IN_MODIFY``) whenever its ``high``, ``max``, ``oom`` or
  ``oom_kill`` counters rise: usage went past ``memory.high`` or hit ``memory.max``.
- :class:`CgroupV1Thresholds`: cgroup v1 usage thresholds, registered through
  ``cgroup.event_control`` with an eventfd that the kernel signals each time the cgroup's usage
  crosses one of them, up or down. Thresholds sit at each pressure level, at each level's
  release point (hysteresis), and every 2.5% of the limit in between, so a sample follows any
  real movement of usage.

macOS's memory-pressure dispatch source is not reachable from the standard library (it needs
libdispatch's run loop); there the monitor relies on the adaptive interval.

When no event fires, :class:`AdaptiveInterval` shortens the level's interval as a pool's
headroom to its next level shrinks, and as the rate at which it shrinks rises: a pool that will
cross in two seconds is sampled well before then, one that is steady far below its threshold at
the level's interval. ``docs/performance.md`` has the measurements.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from memwarden.core.config import GovernorConfig, PressureConfig
from memwarden.core.types import PressureLevel, PressureReading

if TYPE_CHECKING:
    from memwarden.core.warden import Warden

# cgroup v1 writes "no limit" as a value near 2^63; anything above 2^62 means unlimited.
UNLIMITED_THRESHOLD = 1 << 62
# Thresholds every this share of the limit, from this share up, besides the levels' own.
THRESHOLD_STEP = 0.025
THRESHOLD_FROM = 0.5
# memory.events counters whose rise means the cgroup met its limits.
V2_EVENT_KEYS = ("high", "max", "oom", "oom_kill")
# The shortest interval the adaptive interval gives, and the headroom (share of a pool's total
# to its next level) below which it shortens the level's interval in proportion.
MIN_INTERVAL_S = 0.05
NEAR_SHARE = 0.05


@attrs.frozen
class SourceStatus:
    """Whether one kind of event source is armed, and if not, why not."""

    name: str
    armed: bool
    detail: str


class EventSource:
    """One file descriptor the monitor polls: ``mask`` the poll events to wait for.

    :meth:`fired` consumes what woke the poll and says whether it is worth a sample now;
    :meth:`lost` says whether the poll events mean the source is broken (it is then closed and
    left out).
    """

    name = "event source"
    mask = select.POLLIN

    def __init__(self, fd: int, detail: str) -> None:
        self.fd = fd
        self.detail = detail

    def fired(self) -> bool:
        """Consume the event; True when it calls for a sample."""
        return True

    def lost(self, events: int) -> bool:
        """Whether these poll events mean the source no longer works."""
        return bool(events & (select.POLLERR | select.POLLNVAL | select.POLLHUP))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- PSI -----------------------------------------------------------------------------------


@attrs.frozen
class PsiStatus:
    """Whether the PSI trigger is armed, and if not, why the monitor samples on a timer only."""

    armed: bool
    detail: str


class PsiTrigger(EventSource):
    """A Linux PSI trigger: ``poll()`` reports POLLPRI when tasks stall on memory for
    ``stall_us`` within ``window_us`` (Documentation/accounting/psi.rst)."""

    name = "psi"
    mask = select.POLLPRI

    def __init__(self, path: str, stall_us: int, window_us: int) -> None:
        self.path = path
        self.stall_us = stall_us
        self.window_us = window_us
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        try:
            os.write(fd, f"some {stall_us} {window_us}\0".encode())
        except OSError:
            os.close(fd)
            raise
        super().__init__(fd, f"armed on {path}: some {stall_us} us in {window_us} us")

    @classmethod
    def arm(cls, config: GovernorConfig) -> tuple[PsiTrigger | None, PsiStatus]:
        """The trigger ``[governor] psi_*`` asks for, or None and the reason it is not armed."""
        if not config.psi_trigger:
            return None, PsiStatus(False, "off ([governor] psi_trigger = false): timed sampling")
        try:
            trigger = cls(config.psi_path, config.psi_stall_us, config.psi_window_us)
        except FileNotFoundError:
            reason = f"{config.psi_path} does not exist (not Linux, or PSI disabled)"
        except PermissionError:
            reason = f"not permitted to write a trigger to {config.psi_path}"
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                reason = (
                    f"the kernel refused the trigger 'some {config.psi_stall_us} "
                    f"{config.psi_window_us}' (unprivileged triggers need a window that is a "
                    "multiple of 2 s)"
                )
            else:
                reason = f"cannot arm a trigger on {config.psi_path}: {exc.strerror}"
        else:
            return trigger, PsiStatus(True, trigger.detail)
        return None, PsiStatus(False, f"unavailable: {reason}; timed sampling only")


# -- cgroup v2: memory.events --------------------------------------------------------------


def parse_events(text: str) -> dict[str, int]:
    """The counters of a cgroup v2 ``memory.events`` file ("high 3\\nmax 0\\n...")."""
    counts = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            counts[key] = int(value)
    return counts


class CgroupV2Events(EventSource):
    """A cgroup v2 ``memory.events`` file: the kernel wakes ``poll()`` with POLLPRI (and
    POLLERR, which here is not a failure) whenever a counter changes; reading the file again
    re-arms it. Fires when ``high``, ``max``, ``oom`` or ``oom_kill`` rose."""

    name = "cgroup v2 memory.events"
    mask = select.POLLPRI

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(os.open(path, os.O_RDONLY), f"watching {path}")
        self.counts = self._read()

    def _read(self) -> dict[str, int]:
        return parse_events(os.pread(self.fd, 4096, 0).decode("ascii", "replace"))

    def fired(self) -> bool:
        before, self.counts = self.counts, self._read()
        return any(self.counts.get(k, 0) > before.get(k, 0) for k in V2_EVENT_KEYS)

    def lost(self, events: int) -> bool:
        return bool(events & select.POLLNVAL)


# -- cgroup v1: usage thresholds through an eventfd ----------------------------------------


def thresholds_for(limit_bytes: int, pressure: PressureConfig) -> list[int]:
    """Usage thresholds (bytes) for a cgroup limited to ``limit_bytes``: each level's percentage
    and its release point, and every ``THRESHOLD_STEP`` of the limit from ``THRESHOLD_FROM`` up."""
    shares = {
        pressure.warning_percent / 100,
        pressure.critical_percent / 100,
        pressure.emergency_percent / 100,
        (pressure.warning_percent - pressure.hysteresis_percent) / 100,
        (pressure.critical_percent - pressure.hysteresis_percent) / 100,
        (pressure.emergency_percent - pressure.hysteresis_percent) / 100,
    }
    steps = round((1.0 - THRESHOLD_FROM) / THRESHOLD_STEP)
    shares.update(THRESHOLD_FROM + i * THRESHOLD_STEP for i in range(steps + 1))
    return sorted({int(limit_bytes * s) for s in shares if 0 < s <= 1})


class CgroupV1Thresholds(EventSource):
    """cgroup v1 memory usage thresholds: one eventfd registered for each threshold through
    ``cgroup.event_control``; the kernel signals it whenever usage crosses one, either way."""

    name = "cgroup v1 usage thresholds"
    mask = select.POLLIN

    def __init__(self, directory: Path, thresholds: Sequence[int]) -> None:
        self.directory = directory
        self.thresholds = tuple(thresholds)
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            usage = os.open(directory / "memory.usage_in_bytes", os.O_RDONLY)
            try:
                control = os.open(directory / "cgroup.event_control", os.O_WRONLY | os.O_APPEND)
                try:
                    for threshold in self.thresholds:
                        os.write(control, f"{fd} {usage} {threshold}\n".encode())
                finally:
                    os.close(control)
            finally:
                # The kernel keeps what it needs; the usage file need not stay open.
                os.close(usage)
        except OSError:
            os.close(fd)
            raise
        mib = [f"{t / 2**20:.0f}" for t in (self.thresholds[0], self.thresholds[-1])]
        super().__init__(
            fd,
            f"{len(self.thresholds)} thresholds from {mib[0]} to {mib[1]} MiB on {directory}",
        )

    def fired(self) -> bool:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            return False
        return True


def binding_v1_cgroup(directory: Path, mount: Path) -> tuple[Path, int] | None:
    """The v1 memory cgroup whose limit binds ``directory`` (itself or the nearest ancestor up
    to ``mount`` with a limit), and that limit; None when none is limited."""
    level = directory
    while True:
        try:
            text = (level / "memory.limit_in_bytes").read_text()
        except OSError:
            return None
        limit = int(text.strip())
        if limit < UNLIMITED_THRESHOLD:
            return level, limit
        if level == mount or mount not in level.parents:
            return None
        level = level.parent


# -- finding what this machine offers ------------------------------------------------------


def kernel_sources(warden: Warden) -> tuple[list[EventSource], list[SourceStatus]]:
    """The cgroup event sources for the cgroup the system plugin measures, and a status for
    each kind (armed, or why not). Only where the system plugin runs on this machine's own
    files (``[plugins.system] root = "/"``): a recorded tree has no kernel behind it."""
    from memwarden.plugins import system  # the layout of the files the plugin reads

    if warden.plugins.pm.get_plugin(system.NAME) is None:
        return [], [SourceStatus("cgroup", False, "the system plugin is not enabled")]
    options = warden.config.plugin_options(system.NAME, system.SystemOptions)
    if options.root != "/":
        return [], [SourceStatus("cgroup", False, f"the system plugin reads {options.root}")]
    layout = system.layout_for(Path(options.root))
    sources: list[EventSource] = []
    statuses: list[SourceStatus] = []
    for level in layout.v2_levels:
        limited = any(
            system.parse_limit(_text(level / name) or "max") is not None
            for name in ("memory.max", "memory.high")
        )
        if not limited:
            continue
        _arm(lambda level=level: CgroupV2Events(level / "memory.events"), sources, statuses)
    if layout.v1_dir is not None:
        mount = _v1_mount(layout.v1_dir)
        binding = binding_v1_cgroup(layout.v1_dir, mount)
        if binding is None:
            statuses.append(
                SourceStatus(CgroupV1Thresholds.name, False, f"{layout.v1_dir} has no limit")
            )
        else:
            directory, limit = binding
            thresholds = thresholds_for(limit, warden.config.pressure)
            _arm(lambda: CgroupV1Thresholds(directory, thresholds), sources, statuses)
    if not statuses:
        statuses.append(SourceStatus("cgroup", False, "no memory cgroup with a limit"))
    return sources, statuses


def _arm(
    make: Callable[[], EventSource], sources: list[EventSource], statuses: list[SourceStatus]
) -> None:
    try:
        source = make()
    except OSError as exc:
        name = getattr(exc, "filename", None) or "a cgroup file"
        statuses.append(SourceStatus("cgroup", False, f"cannot watch {name}: {exc.strerror}"))
        return
    sources.append(source)
    statuses.append(SourceStatus(source.name, True, source.detail))


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _v1_mount(directory: Path) -> Path:
    # The memory controller's mount point: the highest ancestor that is still a memory cgroup.
    top = directory
    for parent in directory.parents:
        if not (parent / "memory.limit_in_bytes").is_file():
            break
        top = parent
    return top


# -- the interval between samples ----------------------------------------------------------


class AdaptiveInterval:
    """How long the monitor may sleep before the next sample when no event wakes it.

    The level's interval, shortened for the pool nearest to its next level: to half the time
    it would take to cross at the rate its usage rose since the previous sample, and in
    proportion to its headroom once that is below ``NEAR_SHARE`` of its total. Never below
    ``MIN_INTERVAL_S``.
    """

    def __init__(self, pressure: PressureConfig, *, min_s: float = MIN_INTERVAL_S) -> None:
        self.pressure = pressure
        self.min_s = min_s
        # Per pool id: (monitor clock, used bytes) at the previous sample.
        self._previous: dict[str, tuple[float, int]] = {}

    def next_level_percent(self, level: PressureLevel) -> float | None:
        return {
            PressureLevel.NORMAL: self.pressure.warning_percent,
            PressureLevel.WARNING: self.pressure.critical_percent,
            PressureLevel.CRITICAL: self.pressure.emergency_percent,
        }.get(level)

    def next_s(self, reading: PressureReading, base_s: float, now: float) -> float:
        """The sleep after ``reading``, taken at ``now`` (monitor clock), whose level's
        interval is ``base_s``."""
        interval = base_s
        levels = {p.pool_id: p.level for p in reading.pools}
        previous, self._previous = self._previous, {}
        for pool in reading.snapshot.pools:
            used = pool.total_bytes - pool.available_bytes
            self._previous[pool.id] = (now, used)
            percent = self.next_level_percent(levels.get(pool.id, reading.level))
            if percent is None or pool.total_bytes <= 0:
                continue
            headroom = int(pool.total_bytes * percent / 100) - used
            if headroom <= 0:
                return self.min_s
            share = headroom / pool.total_bytes
            if share < NEAR_SHARE:
                interval = min(interval, base_s * share / NEAR_SHARE)
            before = previous.get(pool.id)
            if before is not None and now > before[0]:
                rate = (used - before[1]) / (now - before[0])
                if rate > 0:
                    interval = min(interval, headroom / rate / 2)
        # Never longer than the level's interval, nor shorter than min_s (or it, if shorter).
        return max(min(self.min_s, base_s), min(interval, base_s))
