"""What the history says: usual times of use (the preload's prediction), contexts, windows."""

from __future__ import annotations

import pytest

from memwarden.core.errors import HistoryError
from memwarden.core.insights import History, UsualStart, parse_since, preloads, usual_starts
from memwarden.core.types import UsageRecord

DAY = 86_400.0


def window(usage: list[UsageRecord], days: int) -> History:
    return History(start=0.0, end=days * DAY, samples=(), events=(), actions=(), usage=tuple(usage))


def call(model: str, at: float) -> UsageRecord:
    return UsageRecord(model, "ollama", at, 1.0, True)


def morning_job(days: range, at_s: float = 9 * 3600 + 120) -> list[UsageRecord]:
    return [call("llava", d * DAY + at_s + n * 30) for d in days for n in range(10)]


def test_a_model_first_used_at_the_same_quarter_hour_most_days_has_a_usual_start():
    assert usual_starts(window(morning_job(range(5)), 7)) == [UsualStart("llava", 9 * 3600.0, 5, 7)]


def test_a_start_on_fewer_than_half_the_days_is_no_usual_start():
    assert usual_starts(window(morning_job(range(3)), 7)) == []


def test_requests_within_the_idle_hour_do_not_start_a_new_spell():
    usage = morning_job(range(5)) + morning_job(range(5), at_s=9 * 3600 + 1800)
    assert [u.slot_s for u in usual_starts(window(usage, 7))] == [9 * 3600.0]


def test_a_preload_is_advised_five_minutes_before_the_usual_start_with_its_evidence():
    [advice] = preloads(window(morning_job(range(5)), 7))
    assert advice.advice.startswith("preload llava at 08:55 UTC when memory allows")
    assert advice.evidence == (
        "its first request after an idle hour came between 09:00 and 09:15 UTC on 5 of 7 days",
    )


def test_a_model_kept_loaded_needs_no_preload():
    assert preloads(window(morning_job(range(5)), 7), kept={"llava"}) == []


def test_since_takes_a_duration_back_from_the_newest_sample():
    assert parse_since("90m", 10_000.0) == 10_000.0 - 5400


def test_since_takes_a_utc_date():
    assert parse_since("2026-11-20", 0.0) == 1_795_132_800.0


def test_since_refuses_anything_else_with_a_hint():
    with pytest.raises(HistoryError, match="give a duration such as 90m"):
        parse_since("last week", 0.0)
