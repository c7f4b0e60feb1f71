"""The pressure monitor: samples, hands each reading to the governor, sleeps, repeats.

It sleeps in ``poll()`` on a wake-up pipe (so ``stop()`` is safe from a signal handler and from
another thread) and, on Linux where the kernel allows it, on a PSI trigger that wakes it the
moment tasks stall on memory. Sampling is slow when all is well and faster as pressure rises;
between samples it uses no CPU.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import time
from collections.abc import Callable

import attrs

from memwarden.core.config import GovernorConfig
from memwarden.core.governor import Governor, RoundReport
from memwarden.core.types import PressureLevel, PressureReading

log = logging.getLogger("memwarden.monitor")


@attrs.frozen
class PsiStatus:
    """Whether the PSI trigger is armed, and if not, why the monitor samples on a timer only."""

    armed: bool
    detail: str


class PsiTrigger:
    """A Linux PSI trigger: ``poll()`` reports POLLPRI when tasks stall on memory for
    ``stall_us`` within ``window_us`` (Documentation/accounting/psi.rst)."""

    def __init__(self, path: str, stall_us: int, window_us: int) -> None:
        self.path = path
        self.stall_us = stall_us
        self.window_us = window_us
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        try:
            os.write(self.fd, f"some {stall_us} {window_us}\0".encode())
        except OSError:
            os.close(self.fd)
            raise

    def close(self) -> None:
        os.close(self.fd)

    @classmethod
    def arm(cls, config: GovernorConfig) -> tuple[PsiTrigger | None, PsiStatus]:
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
            return trigger, PsiStatus(
                True,
                f"armed on {config.psi_path}: some {config.psi_stall_us} us "
                f"in {config.psi_window_us} us",
            )
        return None, PsiStatus(False, f"unavailable: {reason}; timed sampling only")


class Monitor:
    """Runs a governor: sample, ``governor.step``, sleep for the level's interval, repeat."""

    def __init__(
        self,
        governor: Governor,
        *,
        on_reading: Callable[[PressureReading, RoundReport | None], None] | None = None,
        psi: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``clock`` (monotonic seconds) times ``run(duration_s=...)``. ``sleep`` replaces the
        wait between samples: a test passes a :class:`memwarden.testing.fakes.ManualClock` as
        ``clock`` and its ``sleep``, so the number of samples does not depend on how busy the
        machine is. With ``sleep`` given, ``stop()`` and PSI wake-ups are seen after it returns.
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
        deadline = None if duration_s is None else self.clock() + duration_s
        try:
            while not self._stopping:
                self.run_once()
                if once or self._stopping:
                    break
                timeout = self.interval_s(self.governor.level)
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
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
