"""Counts the calls made to models through memwarden: latency, success, tokens, and how many
requests each model is serving right now.

The governor reads :meth:`UsageTracker.in_flight` before it unloads a model: a model that is
serving a request is only unloaded in an emergency.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from memwarden.core.providers import same_model
from memwarden.core.types import GenerateResult, UsageRecord


def _key(provider: str, model: str) -> tuple[str, str]:
    return provider, model


@attrs.define
class _Call:
    """What the tracked block reports back so the record can carry token counts."""

    result: GenerateResult | None = None
    time_to_first_token_s: float | None = None


class UsageTracker:
    """Thread-safe counters of requests in flight, plus one record per finished call."""

    def __init__(self, on_record: Callable[[UsageRecord], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._in_flight: Counter[tuple[str, str]] = Counter()
        self._last_used: dict[tuple[str, str], float] = {}
        self._on_record = on_record

    def in_flight(self, model: str, provider: str | None = None) -> int:
        """Requests being served now by ``model`` (on ``provider``, or on any provider)."""
        with self._lock:
            return sum(
                count
                for (p, m), count in self._in_flight.items()
                if same_model(m, model) and (provider is None or p == provider)
            )

    def serving(self) -> bool:
        """Whether any request made through memwarden is in flight now."""
        with self._lock:
            return bool(self._in_flight)

    def last_used(self, model: str, provider: str) -> float | None:
        """When the last call to the model finished (epoch seconds), or None."""
        with self._lock:
            return self._last_used.get(_key(provider, model))

    @contextmanager
    def track(self, provider: str, model: str) -> Iterator[_Call]:
        """Count a call for as long as the block runs, then record how it went."""
        key = _key(provider, model)
        call = _Call()
        started_at = time.time()
        started = time.perf_counter()
        with self._lock:
            self._in_flight[key] += 1
        error: str | None = None
        try:
            yield call
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            latency_s = time.perf_counter() - started
            with self._lock:
                self._in_flight[key] -= 1
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]
                self._last_used[key] = time.time()
            result = call.result
            record = UsageRecord(
                model=model,
                provider=provider,
                started_at=started_at,
                latency_s=latency_s,
                success=error is None,
                prompt_tokens=result.prompt_tokens if result else None,
                completion_tokens=result.completion_tokens if result else None,
                error=error,
                time_to_first_token_s=call.time_to_first_token_s,
            )
            if self._on_record is not None:
                self._on_record(record)
