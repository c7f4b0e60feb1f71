"""Calls into plugins and runtimes under a total deadline, so that no neighbour holds memwarden
hostage.

A runtime that answers one byte at a time defeats every per-read timeout (httpx's, the Ollama
client's), and a device plugin can block in a driver call. So each such call runs on a daemon
thread, which the interpreter does not join at exit, and the caller waits for it only until
the call's deadline. At most one call is outstanding per key (a provider and method, or a
plugin and hook): a caller that finds the previous call still running awaits that call instead
of starting another, so a hung neighbour costs one thread, not one per sample.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger("memwarden.calls")


class PendingCall:
    """One call running on its own daemon thread; ``wait`` for it, then read its outcome."""

    def __init__(self, label: str, started_at: float) -> None:
        self.label = label
        self.started_at = started_at
        self.result: Any = None
        self.error: BaseException | None = None
        # Set by the caller that gave up waiting: a late answer is logged, never used.
        self.abandoned = False
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Whether the call finished within ``timeout_s`` (0 or less: no waiting)."""
        if timeout_s <= 0:
            return self._done.is_set()
        return self._done.wait(timeout_s)

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self.result = function(*args)
        except BaseException as exc:
            self.error = exc
        finally:
            self._done.set()
            if self.abandoned:
                log.info("%s answered late; its answer was not used", self.label)


class Calls:
    """Outstanding calls by key, at most one each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pending: dict[Hashable, PendingCall] = {}
        self._lock = threading.Lock()

    def start(
        self, key: Hashable, label: str, function: Callable[..., Any], *args: Any
    ) -> tuple[PendingCall, bool]:
        """The call for ``key``: the one still running, else a new one started now. The flag
        says whether it is new."""
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None and not pending.done:
                return pending, False
            pending = PendingCall(label, self.clock())
            self._pending[key] = pending
        thread = threading.Thread(
            target=pending._run, args=(function, args), name=label, daemon=True
        )
        thread.start()
        return pending, True

    def running(self) -> int:
        """How many calls are still running (abandoned ones included)."""
        with self._lock:
            return sum(1 for p in self._pending.values() if not p.done)

    def call(
        self, key: Hashable, label: str, deadline_s: float, function: Callable[..., Any], *args: Any
    ) -> PendingCall:
        """Start (or join) the call for ``key`` and wait until ``deadline_s`` after it started.

        A call that was already running when asked and has outlived its deadline is not waited
        for at all: the neighbour is stuck, and every caller after the first would otherwise
        pay the whole deadline again.
        """
        pending, _ = self.start(key, label, function, *args)
        pending.wait(pending.started_at + deadline_s - self.clock())
        if not pending.done:
            pending.abandoned = True
        return pending
