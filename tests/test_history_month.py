"""The simulated month (benchmarks/history_month.py), shortened: exact rows per tier and table."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path

from memwarden.core.config import StateConfig

MONTH = Path(__file__).resolve().parents[1] / "benchmarks" / "history_month.py"
HOUR = 3600.0


def load_month():
    spec = importlib.util.spec_from_file_location("history_month", MONTH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["history_month"] = module
    spec.loader.exec_module(module)
    return module


def test_a_shortened_month_keeps_exact_rows_per_tier_and_table(tmp_path):
    month = load_month()
    # Two days at one sample a minute, 500 requests a day; the tiers scaled down with them:
    # full rate for 2 hours, one a minute for 12 hours, one an hour beyond; a request row for
    # 6 hours, hourly totals beyond.
    state = StateConfig(
        path=str(tmp_path / "month.db"),
        retention_full_rate_s=2 * HOUR,
        retention_per_minute_s=12 * HOUR,
        retention_usage_s=6 * HOUR,
    )
    store = month.simulate(
        tmp_path / "month.db", days=2, sample_every_s=60.0, requests_per_day=500, state=state
    )
    store.close()
    counts = month.table_counts(tmp_path / "month.db")
    # Newest sample at 47:59. Full rate from 45:59 rounded down to the minute (45:59): 121 rows.
    # One a minute from 35:00 (the hour boundary 12 hours back) to 45:59: 659. One an hour
    # before 35:00: 35. Two weekdays with one afternoon spike each: 8 level changes, 2 actions.
    assert counts == {
        "event": 8,
        "reading": 0,
        "action": 2,
        "usage": 92,  # the requests of the last 6 hours (seeded, so always these)
        "usage_hourly": 84,  # one row per model and hour that had requests before them
        "session": 1,
        "sample:0": 121,
        "sample:1": 659,
        "sample:2": 35,
    }


def test_a_shortened_month_folds_every_old_request_into_hourly_totals(tmp_path):
    month = load_month()
    state = StateConfig(path=str(tmp_path / "month.db"), retention_usage_s=6 * HOUR)
    store = month.simulate(
        tmp_path / "month.db", days=2, sample_every_s=60.0, requests_per_day=500, state=state
    )
    store.close()
    conn = sqlite3.connect(tmp_path / "month.db")
    raw = conn.execute("select count(*) from usage").fetchone()[0]
    folded = conn.execute("select sum(calls) from usage_hourly").fetchone()[0]
    assert raw + folded == 1040  # 500 a day and two weekday batches of 20
    oldest_raw = conn.execute("select min(started_at) from usage").fetchone()[0]
    newest = conn.execute("select max(started_at) from usage").fetchone()[0]
    newest_hour = conn.execute("select max(hour) from usage_hourly").fetchone()[0]
    assert newest - oldest_raw <= 7 * HOUR
    assert newest_hour < oldest_raw
