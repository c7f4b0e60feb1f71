"""A simulated month of history through the sqlite-state store: how large the file grows.

One memory sample a second and 10,000 requests a day across four models (and, on weekdays, a
batch of 20 requests to a fifth at 09:00), with a busy afternoon that reaches WARNING and
CRITICAL and an action that frees memory each time. Everything goes
through :class:`memwarden.plugins.sqlite_state.Store` as the governor's records would, with the
default ``[state]`` retention: full rate for an hour, one sample a minute for a week, one an hour
beyond; one row per request for a week, hourly totals beyond.

Run: .venv/bin/python benchmarks/history_month.py [--days N] [--path FILE] [--json]

The same simulation, shortened, is the fixture of tests/test_history_month.py and the recorded
history that docs/history.md shows `memwarden history`, `report`, `recommend` and `pick` on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from memwarden.core.config import StateConfig
from memwarden.core.types import (
    ActionKind,
    ActionRecord,
    Event,
    MemorySample,
    PoolSample,
    PressureLevel,
    UsageRecord,
)
from memwarden.plugins.sqlite_state import Store

GIB = 1 << 30
DAY_S = 86_400
# 2026-11-02 00:00 UTC, a Monday: the simulated month starts here.
START = 1_793_577_600.0
POOL_BYTES = 32 * GIB
# model -> (provider, share of requests, mean latency s, mean prompt tokens, completion tokens)
MODELS: dict[str, tuple[str, float, float, int, int]] = {
    "llama3.1:8b": ("ollama", 0.55, 2.4, 900, 350),
    "qwen2.5-coder:7b": ("ollama", 0.27, 3.1, 1800, 420),
    "nomic-embed-text": ("ollama", 0.175, 0.08, 300, 0),
    "mistral:7b": ("ollama", 0.005, 2.9, 700, 300),
}
# Flush every this many records: the producer waits for the writer as the governor would not,
# so that the bounded queue never drops a record of the simulation.
FLUSH_EVERY = 4000


def _used_bytes(t: float) -> tuple[int, PressureLevel]:
    """Memory use over a day: quiet at night, busy 9-18 h, a peak at 14-15 h on weekdays."""
    hour = (t - START) % DAY_S / 3600
    weekday = int((t - START) // DAY_S) % 7 < 5
    base = 0.35 + (0.25 * math.sin(math.pi * (hour - 8) / 11) if 8 <= hour <= 19 else 0.0)
    if weekday and 14 <= hour < 14.25:
        base = 0.88  # the afternoon spike: CRITICAL, and an eviction brings it back down
    elif weekday and 13.5 <= hour < 15:
        base = max(base, 0.74)
    base += 0.01 * math.sin(t / 7.0)
    level = (
        PressureLevel.CRITICAL
        if base >= 0.85
        else PressureLevel.WARNING
        if base >= 0.70
        else PressureLevel.NORMAL
    )
    return int(POOL_BYTES * base), level


def _requests(rng: random.Random, day_start: float, per_day: int) -> list[UsageRecord]:
    """One day's requests, mostly in working hours, in time order."""
    names = list(MODELS)
    weights = [MODELS[n][1] for n in names]
    records = []
    for _ in range(per_day):
        hour = rng.gauss(13.0, 3.0) % 24
        model = rng.choices(names, weights)[0]
        provider, _, latency, prompt, completion = MODELS[model]
        failed = rng.random() < (0.08 if model == "mistral:7b" else 0.01)
        records.append(
            UsageRecord(
                model=model,
                provider=provider,
                started_at=day_start + hour * 3600,
                latency_s=round(rng.expovariate(1 / latency), 3),
                success=not failed,
                prompt_tokens=int(rng.expovariate(1 / prompt)) + 1,
                completion_tokens=None if failed or completion == 0 else completion,
                error="ProviderError: the model failed" if failed else None,
                time_to_first_token_s=None if completion == 0 else round(rng.uniform(0.15, 0.6), 3),
            )
        )
    return sorted(records, key=lambda r: r.started_at)


def _morning_batch(seed: int, day: int) -> list[UsageRecord]:
    """A weekday job: 20 requests to llava:7b from 09:00 (the night's photos described), the only
    use of that model. Its own random stream, so that the rest of the simulation does not depend
    on it."""
    if day % 7 >= 5:
        return []
    rng = random.Random(seed * 1000 + day)
    start = START + day * DAY_S + 9 * 3600 + rng.uniform(0, 300)
    return [
        UsageRecord(
            model="llava:7b",
            provider="ollama",
            started_at=start + n * 15.0,
            latency_s=round(rng.expovariate(1 / 2.9), 3),
            success=True,
            prompt_tokens=int(rng.expovariate(1 / 700)) + 1,
            completion_tokens=300,
            time_to_first_token_s=round(rng.uniform(0.15, 0.6), 3),
        )
        for n in range(20)
    ]


def simulate(
    path: Path,
    *,
    days: float = 30.0,
    sample_every_s: float = 1.0,
    requests_per_day: int = 10_000,
    state: StateConfig | None = None,
    seed: int = 14,
) -> Store:
    """Write ``days`` of simulated history to ``path``; the store, flushed."""
    state = state or StateConfig(path=str(path))
    store = Store(path, state)
    rng = random.Random(seed)
    end = START + days * DAY_S
    pending = 0
    previous = PressureLevel.NORMAL
    day = 0
    requests: list[UsageRecord] = []
    t = START
    while t < end:
        if t >= START + day * DAY_S:
            requests = _requests(rng, START + day * DAY_S, requests_per_day)
            requests = sorted(requests + _morning_batch(seed, day), key=lambda r: r.started_at)
            day += 1
        while requests and requests[0].started_at <= t:
            store.put("usage", requests.pop(0))
            pending += 1
        used, level = _used_bytes(t)
        store.put(
            "sample",
            MemorySample(
                taken_at=t,
                level=level,
                managed_bytes=int(used * 0.6),
                pools=(PoolSample("system", POOL_BYTES, used, level),),
            ),
        )
        pending += 1
        if level != previous:
            store.put(
                "event",
                Event(
                    kind="level-changed",
                    message=f"memory pressure {previous} -> {level}",
                    level=level,
                    data={"from": previous.name, "to": level.name},
                    at=t,
                ),
            )
            if level == PressureLevel.CRITICAL:
                store.put(
                    "action",
                    ActionRecord(
                        at=t + 0.5,
                        kind=ActionKind.UNLOAD,
                        strategy="idle-unload",
                        description="unload mistral:7b (idle 41 min, priority 0)",
                        ok=True,
                        expected_freed_bytes=int(4.4 * GIB),
                        measured_freed_bytes=int(4.1 * GIB),
                        level_before=PressureLevel.CRITICAL,
                        level_after=PressureLevel.WARNING,
                        model="mistral:7b",
                        provider="ollama",
                        pool_id="system",
                    ),
                )
            previous = level
        if pending >= FLUSH_EVERY:
            store.flush()
            pending = 0
        t += sample_every_s
    store.flush()
    return store


def table_counts(path: Path) -> dict[str, int]:
    """Rows per table, and per sample tier (``sample:0`` full rate, 1 per minute, 2 per hour)."""
    conn = sqlite3.connect(path)
    try:
        counts = {
            table: conn.execute(f"select count(*) from [{table}]").fetchone()[0]
            for table in ("event", "reading", "action", "usage", "usage_hourly", "session")
        }
        for tier, rows in conn.execute("select tier, count(*) from sample group by tier"):
            counts[f"sample:{tier}"] = rows
    finally:
        conn.close()
    return counts


def file_bytes(path: Path) -> int:
    """The database with its WAL checkpointed into it, as it rests on disk."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("pragma wal_checkpoint(truncate)")
    finally:
        conn.close()
    return os.path.getsize(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--path", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="memwarden-month-")
    path = args.path or Path(folder) / "memwarden.db"
    started = time.perf_counter()
    store = simulate(path, days=args.days)
    store.close()
    elapsed = time.perf_counter() - started
    size = file_bytes(path)
    counts = table_counts(path)
    result = {
        "days": args.days,
        "samples": int(args.days * DAY_S),
        "requests": int(args.days * 10_000),
        "file_mib": round(size / (1 << 20), 2),
        "rows": counts,
        "seconds": round(elapsed, 1),
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{args.days:g} simulated days: {result['samples']:,} samples, {result['requests']:,}")
    print(f"requests -> {result['file_mib']} MiB on disk ({elapsed:.0f} s to write)")
    for table, rows in counts.items():
        print(f"  {table:<14} {rows:>9,} rows")


if __name__ == "__main__":
    main()
