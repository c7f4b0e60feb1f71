"""The caches that keep planning cheap among many loaded models give the same answers."""

from __future__ import annotations

import attrs

from memwarden.core.governor import Governor
from memwarden.core.strategy import Usage
from memwarden.core.types import Action, ActionKind, PressureReading
from memwarden.hookspecs import hookimpl
from memwarden.testing.fakes import GIB, make_rig


class CountingStrategy:
    """A strategy that declares it only releases caches, and counts how often it is asked."""

    PROPOSES = frozenset({ActionKind.RELEASE_CACHE})

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_pressure(self, reading: PressureReading, context: object) -> list[Action]:
        self.calls += 1
        return []


def test_whether_loads_are_refused_asks_only_strategies_that_may_refuse_them():
    rig = make_rig()
    counting = CountingStrategy()
    rig.warden.plugins.register(counting)
    governor = Governor(rig.warden)
    rig.device.set_used_percent(88)
    reading = governor.sample()
    refused = governor.refusing(reading)
    assert (refused, counting.calls) == (
        "refuse new model loads while memory pressure is CRITICAL",
        0,
    )


def test_a_strategy_that_declares_nothing_is_asked_whether_loads_are_refused():
    rig = make_rig(builtin_strategies=False)
    counting = CountingStrategy()
    del CountingStrategy.PROPOSES  # restored below: the class attribute is shared
    try:
        rig.warden.plugins.register(counting)
        governor = Governor(rig.warden)
        rig.device.set_used_percent(88)
        refused = governor.refusing(governor.sample())
    finally:
        CountingStrategy.PROPOSES = frozenset({ActionKind.RELEASE_CACHE})
    assert (refused, counting.calls) == (None, 1)


def test_a_priority_set_after_a_plan_changes_the_next_plan_on_the_same_reading():
    rig = make_rig(total_bytes=100 * GIB, baseline_bytes=10 * GIB)
    rig.provider.add_model("a", 30 * GIB)
    rig.provider.add_model("b", 30 * GIB)
    rig.provider.add_model("new", 40 * GIB)
    governor = Governor(rig.warden)
    a = rig.provider.load("a")
    b = rig.provider.load("b")
    governor.set_priority(a, 1)
    governor.set_priority(b, 2)
    reading = governor.sample()
    governor.observe(reading)
    first = governor.plan_load(["new"], priority=5, reading=reading)
    governor.set_priority(a, 3)
    second = governor.plan_load(["new"], priority=5, reading=reading)
    assert (
        [m.instance_id for m in first.evicted],
        [m.instance_id for m in second.evicted],
    ) == (["a#1"], ["b#2"])


def test_plans_on_the_same_reading_evict_the_same_models():
    rig = make_rig(total_bytes=100 * GIB, baseline_bytes=10 * GIB)
    for name in ("a", "b", "c"):
        rig.provider.add_model(name, 20 * GIB)
        rig.provider.load(name)
    rig.provider.add_model("new", 40 * GIB)
    governor = Governor(rig.warden)
    reading = governor.sample()
    governor.observe(reading)
    plans = [governor.plan_load(["new"], priority=5, reading=reading) for _ in range(3)]
    assert [[a.instance_id for a in p.evictions] for p in plans] == [["a#1", "b#2"]] * 3


def test_a_usage_copy_has_every_field_of_the_original():
    usage = Usage(uses=3, last_used_at=1.5, last_idle_since=2.5, was_busy=True, last_seen_at=4.5)
    copied = usage.copy()
    assert (copied == usage, copied is usage, [f.name for f in attrs.fields(Usage)]) == (
        True,
        False,
        ["uses", "last_used_at", "last_idle_since", "was_busy", "last_seen_at"],
    )
