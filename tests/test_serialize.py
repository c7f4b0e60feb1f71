from __future__ import annotations

from memwarden.core.serialize import from_data, to_data
from memwarden.core.types import (
    Action,
    ActionKind,
    Confidence,
    Event,
    MemoryEstimate,
    ModelRef,
    PoolShare,
    PressureLevel,
)


def test_estimate_round_trips_and_shows_its_total():
    estimate = MemoryEstimate(
        model=ModelRef("gemma3:270m", provider="ollama"),
        context_tokens=4096,
        weights_bytes=100,
        kv_cache_bytes=20,
        compute_bytes=5,
        overhead_bytes=1,
        confidence=Confidence.HIGH,
        estimator="gguf",
        per_pool=(PoolShare("cuda:0", 126),),
    )
    data = to_data(estimate)
    assert data["total_bytes"] == 126
    assert from_data(data, MemoryEstimate) == estimate


def test_levels_are_written_by_name():
    event = Event(kind="level-changed", message="up", level=PressureLevel.CRITICAL)
    data = to_data(event)
    assert data["level"] == "CRITICAL"
    assert from_data(data, Event) == event


def test_action_round_trips():
    action = Action(
        kind="unload",
        strategy="idle-unload",
        description="unload idle model",
        expected_freed_bytes=10,
        cost=1.0,
        model="m",
        provider="memory",
        instance_id="m#1",
    )
    data = to_data(action)
    assert data["kind"] == "unload"
    assert from_data(data, Action) == action
    assert from_data(data, Action).kind is ActionKind.UNLOAD
