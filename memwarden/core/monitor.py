"""The pressure monitor: samples, hands each reading to the governor, sleeps, repeats.

It sleeps in ``poll()`` on a wake-up pipe (so ``stop()`` is safe from a signal handler and from
another thread) and, on Linux where the kernel allows it, on the event sources of
:mod:`memwarden.core.detect`: a PSI trigger that wakes it the moment tasks stall on memory, and
cgroup events (v1 usage thresholds, v2 ``memory.events``) the moment usage crosses a level.
Sampling is slow when all is well and faster as pressure rises or headroom shrinks
(:class:`~memwarden.core.detect.AdaptiveInterval`); between samples it uses no CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import Callable

from memwarden.core.config import GovernorConfig
from memwarden.core.detect import (
    AdaptiveInterval,
    EventSource,
    PsiStatus,
    PsiTrigger,
    SourceStatus,
    kernel_sources,
)
from memwarden.core.governor import Governor, RoundReport
from memwarden.core.types import PressureLevel, PressureReading

# PsiStatus and PsiTrigger live in memwarden.core.detect; importable from here as before.
__all__ = ["Monitor", "PsiStatus", "PsiTrigger"]

log = logging.getLogger("memwarden.monitor")


class Monitor:
    """Runs a governor: sample, ``governor.step``, sleep for the level's interval, repeat."""

    def __init__(
        self,
        governor: Governor,
        *,
        on_reading: Callable[[PressureReading, RoundReport | None], None] | None = None,
        psi: bool | None = None,
        events: bool | None = None,
        adaptive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``clock`` (monotonic seconds) times ``run(duration_s=...)``. ``sleep`` replaces the
        wait between samples: a test passes a :class:`memwarden.testing.fakes.ManualClock` as
        ``clock`` and its ``sleep``, so the number of samples does not depend on how busy the
        machine is. With ``sleep`` given, ``stop()`` and PSI wake-ups are seen after it returns.
        ``events`` (default ``[governor] kernel_events``) arms the cgroup event sources;
        ``adaptive`` (default ``[governor] adaptive_interval``) lets headroom shorten the wait.
        """
        self.governor = governor
        self.clock = clock
        self._sleep = sleep
        self.config: GovernorConfig = governor.warden.config.governor
        self.on_reading = on_reading
        self.samples = 0
        self.psi_wakeups = 0
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        if psi is False:
            self.psi: PsiTrigger | None = None
            self.psi_status = PsiStatus(False, "off: timed sampling")
        else:
            self.psi, self.psi_status = PsiTrigger.arm(self.config)
        log.info("PSI trigger %s", self.psi_status.detail)
        # Kernel events beside PSI: cgroup usage thresholds (v1) and memory.events (v2).
        self.event_wakeups = 0
        self.sources: list[EventSource] = []
        self.source_status: list[SourceStatus] = []
        if events is None:
            events = self.config.kernel_events
        if events:
            self.sources, self.source_status = kernel_sources(governor.warden)
            for status in self.source_status:
                log.info("%s: %s", status.name, status.detail)
        if adaptive is None:
            adaptive = self.config.adaptive_interval
        self.adaptive = AdaptiveInterval(governor.warden.config.pressure) if adaptive else None
        # Loads and unloads made through memwarden wake the loop at once.
        governor.change_listeners.append(self.wake)

    def interval_s(self, level: PressureLevel) -> float:
        return {
            PressureLevel.NORMAL: self.config.interval_normal_s,
            PressureLevel.WARNING: self.config.interval_warning_s,
            PressureLevel.CRITICAL: self.config.interval_critical_s,
            PressureLevel.EMERGENCY: self.config.interval_emergency_s,
        }[level]

    def stop(self) -> None:
        """Ask the loop to end after the current sample; safe in a signal handler."""
        self._stopping = True
        # A full or closed pipe means the loop is waking anyway.
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def wake(self) -> None:
        """Sample now instead of at the end of the interval (the loaded models changed); safe
        from any thread."""
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"w")

    @property
    def stopping(self) -> bool:
        return self._stopping

    def run_once(self) -> tuple[PressureReading, RoundReport | None]:
        governor = self.governor
        # While all is well the models loaded a few seconds ago will do; under pressure, and
        # before the ladder acts on a reading, every runtime is asked again.
        calm = governor.level == PressureLevel.NORMAL
        reading = governor.sample(models_max_age_s=governor.config.models_refresh_s if calm else 0)
        if calm and reading.level > PressureLevel.NORMAL:
            reading = governor.sample()
        report = self.governor.step(reading)
        self.samples += 1
        if self.on_reading is not None:
            self.on_reading(self.governor.last_reading or reading, report)
        return reading, report

    def run(self, *, duration_s: float | None = None, once: bool = False) -> None:
        """Sample until ``stop()``, ``duration_s`` has passed, or after one sample (``once``)."""
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        if self.psi is not None:
            poller.register(self.psi.fd, select.POLLPRI)
        for source in self.sources:
            poller.register(source.fd, source.mask)
        deadline = None if duration_s is None else self.clock() + duration_s
        try:
            while not self._stopping:
                reading, _ = self.run_once()
                if once or self._stopping:
                    break
                timeout = self.interval_s(self.governor.level)
                if self.adaptive is not None:
                    timeout = self.adaptive.next_s(
                        self.governor.last_reading or reading, timeout, self.clock()
                    )
                if deadline is not None:
                    left = deadline - self.clock()
                    if left <= 0:
                        break
                    timeout = min(timeout, left)
                for fd, mask in self._wait(poller, timeout):
                    if fd == self._wake_read:
                        self._drain()
                    elif self.psi is not None and fd == self.psi.fd:
                        if mask & (select.POLLERR | select.POLLNVAL):
                            self._lose_psi(poller)
                        else:
                            self.psi_wakeups += 1
                    else:
                        self._source_event(poller, fd, mask)
                if deadline is not None and self.clock() >= deadline:
                    break
        finally:
            poller.unregister(self._wake_read)

    def _wait(self, poller: select.poll, timeout_s: float) -> list[tuple[int, int]]:
        """Sleep until the next sample is due, a stop, or a PSI wake-up; what woke us."""
        if self._sleep is None:
            return poller.poll(timeout_s * 1000.0)
        ready = poller.poll(0)
        self._sleep(timeout_s)
        return ready

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 64):
                pass

    def _source_event(self, poller: select.poll, fd: int, mask: int) -> None:
        source = next((s for s in self.sources if s.fd == fd), None)
        if source is None:
            return
        if source.lost(mask):
            poller.unregister(fd)
            source.close()
            self.sources.remove(source)
            log.warning("%s failed; no longer watched", source.name)
        elif source.fired():
            self.event_wakeups += 1

    def _lose_psi(self, poller: select.poll) -> None:
        assert self.psi is not None
        poller.unregister(self.psi.fd)
        self.psi.close()
        self.psi = None
        self.psi_status = PsiStatus(False, "the PSI trigger failed; timed sampling only")
        log.warning("PSI trigger failed; falling back to timed sampling")

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.governor.change_listeners.remove(self.wake)
        if self.psi is not None:
            self.psi.close()
            self.psi = None
        for source in self.sources:
            source.close()
        self.sources = []
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
