"""The sqlite-state history store: tiers of samples, retention, schema versions, batched writes."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlite_utils

from memwarden.core.config import Config, StateConfig, parse_config_data
from memwarden.core.errors import ConfigError, StateError
from memwarden.core.governor import Governor
from memwarden.core.types import (
    ActionKind,
    ActionRecord,
    Event,
    MemorySample,
    PoolSample,
    PressureLevel,
    UsageRecord,
)
from memwarden.plugins import sqlite_state
from memwarden.plugins.sqlite_state import Store
from memwarden.testing.fakes import GIB, make_rig

HOUR = 3600.0
DAY = 86_400.0


def sample(at: float, used_gib: float = 4.0, level: PressureLevel = PressureLevel.NORMAL):
    return MemorySample(
        taken_at=at,
        level=level,
        managed_bytes=int(used_gib * GIB),
        pools=(PoolSample("system", 16 * GIB, int(used_gib * GIB), level),),
    )


def tier_counts(path) -> dict[int, int]:
    rows = sqlite3.connect(path).execute("select tier, count(*) from sample group by tier")
    return dict(rows.fetchall())


@pytest.fixture
def short_tiers(tmp_path) -> StateConfig:
    """Full rate for a minute, one a minute for an hour, one an hour for a day."""
    return StateConfig(
        path=str(tmp_path / "state.db"),
        retention_full_rate_s=60.0,
        retention_per_minute_s=HOUR,
        retention_samples_s=DAY,
        retention_events_s=HOUR,
        retention_usage_s=HOUR,
        retention_usage_hourly_s=DAY,
    )


def test_three_hours_of_samples_a_second_keep_exact_rows_per_tier(tmp_path, short_tiers):
    store = Store(tmp_path / "state.db", short_tiers)
    for second in range(3 * 3600):
        store.put("sample", sample(float(second)))
    assert store.flush() is True
    store.close()
    # Newest sample at 10799 s. Full rate from the minute boundary a minute before it (10680 s):
    # 120 rows. One a minute from the hour boundary an hour before it (3600 s) up to 10680 s:
    # 118 rows. One an hour before 3600 s: 1 row.
    assert tier_counts(tmp_path / "state.db") == {0: 120, 1: 118, 2: 1}


def test_a_downsampled_row_holds_the_peak_of_its_bucket_and_how_many_it_stands_for(
    tmp_path, short_tiers
):
    store = Store(tmp_path / "state.db", short_tiers)
    store.put("sample", sample(0.0, used_gib=2.0))
    store.put("sample", sample(30.0, used_gib=9.0, level=PressureLevel.CRITICAL))
    store.put("sample", sample(59.0, used_gib=3.0))
    store.put("sample", sample(200.0))
    assert store.flush() is True
    [first, *_] = store.read("sample", None, 10)
    assert first == MemorySample(
        taken_at=0.0,
        level=PressureLevel.CRITICAL,
        managed_bytes=9 * GIB,
        pools=(PoolSample("system", 16 * GIB, 9 * GIB, PressureLevel.CRITICAL),),
        count=3,
    )


def test_samples_past_retention_are_deleted(tmp_path, short_tiers):
    store = Store(tmp_path / "state.db", short_tiers)
    store.put("sample", sample(0.0))
    store.put("sample", sample(2 * DAY))
    assert store.flush() is True
    assert [s.taken_at for s in store.read("sample", None, 10)] == [2 * DAY]


def test_usage_older_than_its_retention_is_folded_into_hourly_totals(tmp_path, short_tiers):
    store = Store(tmp_path / "state.db", short_tiers)
    for n in range(4):
        store.put(
            "usage",
            UsageRecord(
                model="llama",
                provider="ollama",
                started_at=100.0 + n,
                latency_s=0.5 + n,
                success=n != 3,
                prompt_tokens=10,
                completion_tokens=20,
                time_to_first_token_s=0.25,
            ),
        )
    store.put("usage", UsageRecord("llama", "ollama", 3 * HOUR, 1.0, True))
    assert store.flush() is True
    store.close()
    db = sqlite_utils.Database(tmp_path / "state.db")
    assert [r["started_at"] for r in db["usage"].rows] == [3 * HOUR]
    assert list(db["usage_hourly"].rows) == [
        {
            "hour": 0.0,
            "model": "llama",
            "provider": "ollama",
            "calls": 4,
            "failures": 1,
            "latency_s_sum": 8.0,
            "latency_s_max": 3.5,
            "ttft_s_sum": 1.0,
            "ttft_calls": 4,
            "prompt_tokens": 40,
            "completion_tokens": 80,
        }
    ]


def test_events_past_retention_are_deleted(tmp_path, short_tiers):
    store = Store(tmp_path / "state.db", short_tiers)
    store.put("event", Event(kind="old", message="old", at=0.0))
    store.put("event", Event(kind="new", message="new", at=2 * HOUR))
    assert store.flush() is True
    assert [e.kind for e in store.read("event", None, 10)] == ["new"]


def test_a_new_file_records_schema_version_1(tmp_path):
    store = Store(tmp_path / "state.db", StateConfig(path=str(tmp_path / "state.db")))
    store.put("event", Event(kind="x", message="x", at=1.0))
    assert store.flush() is True
    rows = sqlite3.connect(tmp_path / "state.db").execute("select version from schema_version")
    assert rows.fetchall() == [(1,)]


def legacy_file(path) -> None:
    """The layout before schema versions: each record as JSON in `record`."""
    db = sqlite_utils.Database(path)
    event = Event(kind="level-changed", message="up", level=PressureLevel.WARNING, at=5.0)
    db["event"].insert(
        {
            "written_at": 6.0,
            "kind": "level-changed",
            "recorded_at": 5.0,
            "record": json.dumps(
                {
                    "kind": event.kind,
                    "message": event.message,
                    "level": "WARNING",
                    "data": {},
                    "at": 5.0,
                }
            ),
        }
    )
    db["usage"].insert(
        {
            "written_at": 8.0,
            "model": "llama",
            "record": json.dumps(
                {
                    "model": "llama",
                    "provider": "ollama",
                    "started_at": 7.0,
                    "latency_s": 0.5,
                    "success": True,
                    "prompt_tokens": 3,
                    "completion_tokens": None,
                    "error": None,
                }
            ),
        }
    )
    db.conn.close()


def test_a_file_from_before_schema_versions_is_migrated_with_its_records(tmp_path):
    legacy_file(tmp_path / "state.db")
    store = Store(tmp_path / "state.db", StateConfig(path=str(tmp_path / "state.db")))
    store.put("event", Event(kind="later", message="later", at=9.0))
    assert store.flush() is True
    assert [(e.kind, e.level, e.at) for e in store.read("event", None, 10)] == [
        ("level-changed", PressureLevel.WARNING, 5.0),
        ("later", None, 9.0),
    ]
    assert store.read("usage", None, 10) == [UsageRecord("llama", "ollama", 7.0, 0.5, True, 3)]
    versions = sqlite3.connect(tmp_path / "state.db").execute("select version from schema_version")
    assert versions.fetchall() == [(1,)]


def test_a_file_from_before_schema_versions_is_read_before_any_write(tmp_path):
    legacy_file(tmp_path / "state.db")
    config = Config(state=StateConfig(path=str(tmp_path / "state.db")))
    [event] = sqlite_state.read_state("event", None, 10, config)
    assert (event.kind, event.at) == ("level-changed", 5.0)


def test_a_file_from_a_newer_memwarden_is_not_written_and_says_so(tmp_path):
    db = sqlite_utils.Database(tmp_path / "state.db")
    db["schema_version"].insert({"version": 99, "applied_at": 0.0})
    db.conn.close()
    with pytest.raises(StateError, match="schema version 99; this memwarden reads up to version 1"):
        sqlite_state.ensure_schema(sqlite_utils.Database(tmp_path / "state.db"), tmp_path)


def test_records_are_committed_by_the_writer_thread_not_the_caller(tmp_path):
    config = StateConfig(path=str(tmp_path / "state.db"), flush_interval_s=30.0)
    store = Store(tmp_path / "state.db", config)
    store.put("event", Event(kind="x", message="x", at=1.0))
    assert store.committed == 0
    assert store.flush() is True
    assert store.committed == 1


def test_a_full_queue_drops_records_counts_them_and_raises_once(tmp_path):
    config = StateConfig(path=str(tmp_path / "state.db"), queue_size=100, flush_interval_s=30.0)
    store = Store(tmp_path / "state.db", config)
    store._queue.put(sqlite_state._STOP)  # the writer stops; nothing drains the queue
    store._thread.join(5)
    raised = []
    for n in range(103):
        try:
            store.put("event", Event(kind="x", message="x", at=float(n)))
        except sqlite_state.StateWriteFailed as exc:
            raised.append(str(exc))
    assert store.dropped == 3
    assert raised == [
        f"cannot write history to {store.path}: the write queue is full (100 records); raise "
        "[state] queue_size, or find what makes writing slow"
    ]


def test_the_governor_persists_a_sample_for_every_reading(tmp_path):
    rig = make_rig(Config(state=StateConfig(path=str(tmp_path / "state.db"))))
    governor = Governor(rig.warden)
    for percent in (40, 90):
        rig.device.set_used_percent(percent)
        governor.observe(governor.sample())
    samples = rig.warden.read_state("sample")
    assert [(s.level, s.count) for s in samples] == [
        (PressureLevel.NORMAL, 1),
        (PressureLevel.CRITICAL, 1),
    ]


def test_the_governor_persists_each_action_with_its_measured_effect(tmp_path):
    rig = make_rig(Config(state=StateConfig(path=str(tmp_path / "state.db"))))
    rig.provider.add_model("llama", 8 * GIB)
    rig.provider.load("llama", context_tokens=4096)
    rig.device.set_used_percent(90)
    Governor(rig.warden).step()
    actions = rig.warden.read_state("action")
    assert all(isinstance(a, ActionRecord) for a in actions)
    assert [(a.kind, a.model, a.ok, a.level_before, a.measured_freed_bytes) for a in actions] == [
        (ActionKind.REFUSE_LOADS, None, True, PressureLevel.CRITICAL, 0),
        (ActionKind.SHRINK_CONTEXT, "llama", True, PressureLevel.CRITICAL, GIB // 4),
    ]


def test_retention_keys_out_of_order_are_a_config_error_naming_them():
    with pytest.raises(ConfigError, match="retention_full_rate_s <= retention_per_minute_s"):
        parse_config_data(
            {"state": {"retention_full_rate_s": 7200, "retention_per_minute_s": 3600}}, None
        )


def test_a_retention_below_its_minimum_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="retention_full_rate_s"):
        parse_config_data({"state": {"retention_full_rate_s": 1}}, None)
