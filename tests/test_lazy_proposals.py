"""Strategies may return their proposals lazily, cheapest first: the core reads them only as far
as it needs, still checks every one it takes, and keeps the ladder's order. Lists (the original
contract) keep working."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import attrs

from memwarden.core.config import Config, GovernorConfig, ModelPolicy
from memwarden.core.governor import Governor, merge_by_cost, order_actions
from memwarden.core.strategy import StrategyContext, unload_action
from memwarden.core.types import Action, ActionKind, PressureReading
from memwarden.hookspecs import hookimpl
from memwarden.testing.fakes import GIB, make_rig


def events(rig, kind: str) -> list:
    return [e for e in rig.events if e.kind == kind]


class LazyBySize:
    """Proposes unloading every loaded model, smallest first (cost = GiB), as a generator that
    records how many proposals the core read."""

    def __init__(self, name: str = "lazy", offset: float = 0.0) -> None:
        self.name = name
        self.offset = offset
        self.built: list[str] = []

    @hookimpl
    def on_pressure(self, reading: PressureReading, context: StrategyContext) -> Iterator[Action]:
        return self._cheapest_first(context)

    def _cheapest_first(self, context: StrategyContext) -> Iterator[Action]:
        for model in sorted(context.loaded_models, key=lambda m: m.total_bytes):
            self.built.append(model.name)
            cost = self.offset + model.total_bytes / GIB
            yield unload_action(model, self.name, cost, "make room")


class ListBySize:
    """The same proposals as LazyBySize, as one list in no particular order (the old contract)."""

    @hookimpl
    def on_pressure(self, reading: PressureReading, context: StrategyContext) -> list[Action]:
        models = sorted(context.loaded_models, key=lambda m: -m.total_bytes)
        return [unload_action(m, "listed", m.total_bytes / GIB + 0.5, "make room") for m in models]


class OutOfOrder:
    """Yields a dear proposal, then a cheaper one: the second breaks the iterator contract."""

    @hookimpl
    def on_pressure(self, reading: PressureReading, context: StrategyContext) -> Iterator[Action]:
        by_name = {m.name: m for m in context.loaded_models}
        yield unload_action(by_name["m4"], "disorderly", 9.0, "dear first")
        yield unload_action(by_name["m1"], "disorderly", 1.0, "cheap after")


def rig_with(*strategies: object, models: dict[str, ModelPolicy] | None = None):
    rig = make_rig(Config(models=models or {}), builtin_strategies=False)
    for strategy in strategies:
        rig.warden.plugins.register(strategy)
    for i in range(1, 6):
        rig.provider.add_model(f"m{i}", i * GIB)
        rig.provider.load(f"m{i}")
    rig.device.set_used_percent(90)
    return rig


def test_the_ladder_reads_a_lazy_strategy_only_up_to_the_action_it_takes():
    lazy = LazyBySize()
    rig = rig_with(lazy)
    governor = Governor(rig.warden)
    first = next(governor.proposals(governor.sample()))
    assert (first.model, first.cost) == ("m1", 1.0)
    # The head of the stream, and the one after it that shows the cost group has ended.
    assert lazy.built == ["m1", "m2"]


def test_a_lazy_strategy_read_to_the_end_gives_the_same_order_as_a_list():
    lazy = LazyBySize()
    rig = rig_with(lazy, ListBySize())
    governor = Governor(rig.warden)
    reading = governor.sample()
    proposed = governor.propose(reading)
    assert [(a.strategy, a.model, a.cost) for a in proposed] == [
        ("lazy", "m1", 1.0),
        ("listed", "m1", 1.5),
        ("lazy", "m2", 2.0),
        ("listed", "m2", 2.5),
        ("lazy", "m3", 3.0),
        ("listed", "m3", 3.5),
        ("lazy", "m4", 4.0),
        ("listed", "m4", 4.5),
        ("lazy", "m5", 5.0),
        ("listed", "m5", 5.5),
    ]
    assert len(lazy.built) == 5


def test_merging_by_cost_orders_exactly_as_ordering_everything_at_once():
    def action(strategy: str, cost: float, freed_gib: int, model: str) -> Action:
        return Action(
            kind=ActionKind.UNLOAD,
            strategy=strategy,
            description=f"unload {model}",
            expected_freed_bytes=freed_gib * GIB,
            cost=cost,
            model=model,
            provider="memory",
        )

    a = [action("a", 1.0, 1, "x"), action("a", 1.0, 8, "y"), action("a", 3.0, 2, "z")]
    b = [action("b", 1.0, 8, "w"), action("b", 2.0, 1, "v"), action("b", 3.0, 9, "u")]
    needed = {"system": 5 * GIB}
    merged = [
        x for group in merge_by_cost([iter(a), iter(b)]) for x in order_actions(group, needed)
    ]
    assert merged == order_actions(a + b, needed)
    assert [x.model for x in merged] == ["y", "w", "x", "v", "u", "z"]


def test_a_legacy_list_returning_strategy_is_still_ordered_and_taken():
    rig = rig_with(ListBySize())
    governor = Governor(rig.warden)
    report = governor.step()
    assert report.outcomes[0].action.model == "m1"
    assert rig.provider.unloaded[0] == "m1#1"


def test_a_policy_refused_action_from_a_lazy_strategy_is_refused_and_logged():
    lazy = LazyBySize()
    rig = rig_with(lazy, models={"m1": ModelPolicy(critical=True)})
    governor = Governor(rig.warden)
    report = governor.step()
    # The critical model is never unloaded; the next cheapest is.
    assert "m1#1" not in rig.provider.unloaded
    assert report.outcomes[0].action.model == "m2"
    [refused] = events(rig, "action-refused")
    assert refused.data["strategy"] == "lazy"
    assert refused.data["rule"] == "critical"
    assert refused.data["model"] == "m1#1"


def test_a_lazy_strategy_that_yields_out_of_cost_order_has_that_proposal_rejected():
    rig = rig_with(OutOfOrder())
    governor = Governor(rig.warden)
    proposed = governor.propose(governor.sample())
    assert [(a.model, a.cost) for a in proposed] == [("m4", 9.0)]
    [rejected] = events(rig, "action-rejected")
    assert rejected.data["strategy"] == "disorderly"
    assert rejected.data["model"] == "m1"
    assert rejected.data["problem"] == (
        "cost 1.0 came after cost 9.0: a strategy that returns an iterator must yield its "
        "proposals cheapest first (or return a list)"
    )


def test_a_non_action_from_a_lazy_strategy_is_rejected_and_the_rest_still_read():
    class Mixed:
        @hookimpl
        def on_pressure(self, reading, context):
            model = context.loaded_models[0]
            yield "unload everything"
            yield unload_action(model, "mixed", 1.0, "make room")

    rig = rig_with(Mixed())
    governor = Governor(rig.warden)
    [action] = governor.propose(governor.sample())
    assert action.strategy == "mixed"
    [rejected] = events(rig, "action-rejected")
    assert rejected.data["problem"] == "a proposal must be an Action, not str"


def test_a_strategy_returning_neither_list_nor_iterator_gets_a_clear_rejection():
    class Wrong:
        @hookimpl
        def on_pressure(self, reading, context):
            return 42

    rig = rig_with(Wrong())
    governor = Governor(rig.warden)
    assert governor.propose(governor.sample()) == []
    [rejected] = events(rig, "action-rejected")
    assert rejected.data["problem"] == (
        "on_pressure must return a list of Actions, an iterator of Actions (cheapest first) "
        "or None, not int"
    )


def test_the_action_taken_is_checked_again_just_before_it_runs():
    # The policy changes between proposing and taking: the check before executing still holds.
    lazy = LazyBySize()
    rig = rig_with(lazy)
    governor = Governor(rig.warden)
    reading = governor.sample()
    action = next(governor.proposals(reading))
    rig.warden.config = attrs.evolve(rig.warden.config, models={"m1": ModelPolicy(critical=True)})
    outcome, _ = governor._take(action, reading)
    assert outcome.refused
    assert rig.provider.unloaded == []


def test_builtin_strategies_build_only_what_the_ladder_reads():
    # Priority eviction among 50 models: reading the first proposal builds a handful of
    # Actions, not 50, and matches the head of the full list.
    rig = make_rig(Config(governor=GovernorConfig(idle_unload_after_s=None)))
    rig.provider.add_model("m", 2 * GIB)
    governor = Governor(rig.warden)
    for i in range(50):
        governor.set_priority(rig.provider.load("m", context_tokens=4096), i % 5)
    rig.device.set_used_percent(90)
    reading = governor.sample()
    everything = governor.propose(reading)
    assert len(everything) > 50
    built: list[Action] = []
    original = Action.__init__

    def counting_init(self: Action, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    Action.__init__ = counting_init  # type: ignore[method-assign]
    try:
        head = list(itertools.islice(governor.proposals(reading), 3))
    finally:
        Action.__init__ = original  # type: ignore[method-assign]
    assert head == everything[:3]
    assert len(built) < 25


def test_a_lazy_strategy_that_fails_while_read_is_isolated_like_one_that_fails_when_called():
    class Breaks:
        @hookimpl
        def on_pressure(self, reading, context):
            yield unload_action(context.loaded_models[0], "breaks", 0.5, "first")
            raise RuntimeError("lost its runtime")

    rig = rig_with(Breaks(), ListBySize())
    governor = Governor(rig.warden)
    proposed = governor.propose(governor.sample())
    assert [(a.strategy, a.model) for a in proposed[:2]] == [("breaks", "m1"), ("listed", "m1")]
    assert len(proposed) == 6
    [failure] = rig.warden.plugin_failures
    assert failure.hook == "on_pressure"
    assert "lost its runtime" in failure.error


def test_a_proposal_whose_cost_is_not_a_number_is_rejected_not_sorted():
    class NotANumber:
        @hookimpl
        def on_pressure(self, reading, context):
            model = context.loaded_models[0]
            return [attrs.evolve(unload_action(model, "nan", 1.0, "x"), cost=float("nan"))]

    rig = rig_with(NotANumber(), ListBySize())
    governor = Governor(rig.warden)
    assert [a.strategy for a in governor.propose(governor.sample())] == ["listed"] * 5
    [rejected] = events(rig, "action-rejected")
    assert rejected.data["problem"] == (
        "cost and expected_freed_bytes must be numbers, not nan and 1073741824"
    )
