"""The degradation ladder, driven by a scripted device and an in-memory provider."""

from __future__ import annotations

import pytest

from memwarden.core.config import ByteSize, Config, GovernorConfig, ModelPolicy, PressureConfig
from memwarden.core.errors import InsufficientMemory
from memwarden.core.governor import Governor, order_actions
from memwarden.core.sessions import ManagedSession
from memwarden.core.types import Action, ContextWindow, Message, PressureLevel
from memwarden.testing.fakes import GIB, KV_BYTES_PER_TOKEN, make_rig


def config_with(**sections) -> Config:
    return Config(**sections)


def governor_for(rig) -> Governor:
    return Governor(rig.warden)


def kinds(rig) -> list[str]:
    return [e.kind for e in rig.events]


def action(kind="unload", cost=1.0, freed=GIB, model="m", pool_id=None) -> Action:
    return Action(
        kind=kind,
        strategy="test",
        description=f"{kind} {model}",
        expected_freed_bytes=freed,
        cost=cost,
        model=model,
        provider="memory",
        pool_id=pool_id,
    )


# -- levels -------------------------------------------------------------------------------


def test_a_level_change_is_an_event_with_the_pool_levels():
    rig = make_rig()
    governor = governor_for(rig)
    rig.device.set_used_percent(72)
    governor.observe(governor.sample())
    [event] = [e for e in rig.events if e.kind == "level-changed"]
    assert event.level is PressureLevel.WARNING
    assert event.data["from"] == "NORMAL"
    assert event.data["pool:system"] == "WARNING"


def test_hysteresis_holds_a_level_until_usage_falls_below_threshold_minus_margin():
    rig = make_rig()
    governor = governor_for(rig)
    levels = []
    for percent in (86, 84, 83, 81):
        rig.device.set_used_percent(percent)
        reading = governor.sample()
        governor.observe(reading)
        levels.append(reading.level)
    assert levels == [
        PressureLevel.CRITICAL,
        PressureLevel.CRITICAL,
        PressureLevel.CRITICAL,
        PressureLevel.WARNING,
    ]


def test_events_are_persisted_in_the_state_database(isolated_environment):
    rig = make_rig()
    governor = governor_for(rig)
    rig.device.set_used_percent(90)
    governor.observe(governor.sample())
    path = rig.warden.config.state.resolved_path()
    assert str(path).startswith(str(isolated_environment))
    events = rig.warden.read_state("event")
    assert path.exists()
    assert ("level-changed", PressureLevel.CRITICAL) in [(e.kind, e.level) for e in events]


# -- ordering -----------------------------------------------------------------------------


def test_cheaper_actions_come_first_whatever_they_free():
    cheap, dear = action(cost=1, freed=GIB, model="a"), action(cost=10, freed=50 * GIB, model="b")
    assert order_actions([dear, cheap], {"system": 5 * GIB}) == [cheap, dear]


def test_at_equal_cost_an_action_covering_the_deficit_comes_first():
    small = action(cost=10, freed=2 * GIB, model="small")
    enough = action(cost=10, freed=6 * GIB, model="enough")
    assert order_actions([small, enough], {"system": 5 * GIB})[0] is enough


def test_the_deficit_of_an_action_is_its_own_pools():
    # 3 GiB covers cuda:0's need but not the system pool's: it wins over a bigger uncovering one.
    on_gpu = action(cost=10, freed=3 * GIB, model="gpu", pool_id="cuda:0")
    big = action(cost=10, freed=4 * GIB, model="big")
    ordered = order_actions([big, on_gpu], {"system": 8 * GIB, "cuda:0": 2 * GIB})
    assert ordered == [on_gpu, big]


def test_actions_that_free_nothing_are_dropped_except_refusing_loads():
    nothing = action(freed=0, model="x")
    refuse = action(kind="refuse-loads", cost=0, freed=0, model=None)
    assert order_actions([nothing, refuse], {"system": GIB}) == [refuse]


# -- the ladder ---------------------------------------------------------------------------


def test_ladder_evicts_the_lowest_priority_first_and_stops_once_relieved():
    config = config_with(
        models={"low": ModelPolicy(priority=1), "high": ModelPolicy(priority=9)},
    )
    rig = make_rig(config)
    for name in ("low", "mid", "high"):
        rig.provider.add_model(name, 10 * GIB)
    governor = governor_for(rig)
    for name in ("low", "mid", "high"):
        rig.provider.load(name)
    rig.device.set_used_percent(88)
    report = governor.step()
    # "mid" has the default priority 0, below "low" (1): it goes first, and 78% is below
    # CRITICAL, so the round stops there; WARNING is the next round's work.
    assert rig.provider.unloaded == ["mid#2"]
    assert report.relieved
    assert report.level_after is PressureLevel.WARNING


def test_thrashing_with_memory_available_evicts_one_model_per_psi_window():
    config = config_with(
        models={"low": ModelPolicy(priority=1), "high": ModelPolicy(priority=9)},
        governor=GovernorConfig(retrigger_interval_s=0.1),
    )
    now = [1000.0]
    rig = make_rig(config)
    for name in ("low", "high"):
        rig.provider.add_model(name, 10 * GIB)
        rig.provider.load(name)
    governor = Governor(rig.warden, clock=lambda: now[0])
    rig.device.set_used_percent(40)
    rig.device.psi_full_avg10 = 35.0

    first = governor.step()
    assert first.trigger is PressureLevel.CRITICAL
    assert [o.action.kind for o in first.outcomes] == ["refuse-loads", "unload"]
    assert rig.provider.unloaded == ["low#1"]

    # The 10 s average still reads high just after: no second eviction inside its window...
    now[0] += 5.0
    assert governor.step() is None
    assert rig.provider.unloaded == ["low#1"]
    # ...but a stall that persists past it evicts the next model.
    now[0] += 6.0
    governor.step()
    assert rig.provider.unloaded == ["low#1", "high#2"]


def test_each_taken_action_is_an_event_with_expected_and_measured_bytes():
    rig = make_rig()
    rig.provider.add_model("m", 25 * GIB)
    governor = governor_for(rig)
    rig.provider.load("m")
    rig.device.set_used_percent(88)
    governor.step()
    [taken] = [e for e in rig.events if e.kind == "action-taken" and e.data["action"] == "unload"]
    assert taken.data["strategy"] == "priority-eviction"
    assert taken.data["expected_freed_bytes"] == 25 * GIB
    assert taken.data["measured_freed_bytes"] == 25 * GIB
    assert kinds(rig).index("level-changed") < kinds(rig).index("action-taken")


def test_pinned_models_are_never_evicted_by_priority():
    rig = make_rig(config_with(models={"keep": ModelPolicy(pinned=True)}))
    rig.provider.add_model("keep", 30 * GIB)
    governor = governor_for(rig)
    rig.provider.load("keep")
    rig.device.set_used_percent(88)
    report = governor.step()
    assert rig.provider.unloaded == []
    assert not report.relieved


def test_models_serving_requests_are_spared_at_critical():
    rig = make_rig()
    rig.provider.add_model("busy", 30 * GIB)
    governor = governor_for(rig)
    rig.provider.load("busy")
    rig.provider.set("busy#1", requests_in_flight=1)
    rig.device.set_used_percent(88)
    governor.step()
    assert rig.provider.unloaded == []


def test_models_serving_requests_are_evicted_in_an_emergency():
    rig = make_rig(config_with(models={"other": ModelPolicy(critical=True)}))
    rig.provider.add_model("busy", 40 * GIB)
    governor = governor_for(rig)
    rig.provider.load("busy")
    rig.provider.set("busy#1", requests_in_flight=2)
    rig.device.set_used_percent(97)
    governor.step()
    assert rig.provider.unloaded == ["busy#1"]
    [taken] = [e for e in rig.events if e.kind == "action-taken" and e.data["action"] == "unload"]
    assert taken.data["strategy"] == "priority-eviction"


def test_emergency_unload_takes_pinned_models_but_never_critical_ones():
    config = config_with(
        models={"pinned": ModelPolicy(pinned=True), "vital": ModelPolicy(critical=True)}
    )
    rig = make_rig(config)
    rig.provider.add_model("pinned", 20 * GIB)
    rig.provider.add_model("vital", 20 * GIB)
    governor = governor_for(rig)
    rig.provider.load("pinned")
    rig.provider.load("vital")
    rig.device.set_used_percent(99)
    governor.step()
    assert rig.provider.unloaded == ["pinned#1"]
    assert "vital#2" in rig.provider.models


def test_idle_unload_takes_idle_models_at_warning_and_leaves_fresh_ones():
    rig = make_rig(config_with(governor=GovernorConfig(idle_unload_after_s=60.0)))
    rig.provider.add_model("idle", 10 * GIB)
    rig.provider.add_model("fresh", 10 * GIB)
    governor = governor_for(rig)
    rig.provider.load("idle")
    rig.provider.load("fresh")
    rig.provider.set("idle#1", idle_since=governor.clock() - 3600)
    rig.device.set_used_percent(75)
    governor.step()
    assert rig.provider.unloaded == ["idle#1"]


def test_idle_timeout_per_model_overrides_the_governor_default():
    config = config_with(
        governor=GovernorConfig(idle_unload_after_s=None),
        models={"short": ModelPolicy(idle_unload_after_s=5.0)},
    )
    rig = make_rig(config)
    rig.provider.add_model("short", 10 * GIB)
    governor = governor_for(rig)
    rig.provider.load("short")
    rig.provider.set("short#1", idle_since=governor.clock() - 10)
    rig.device.set_used_percent(75)
    governor.step()
    assert rig.provider.unloaded == ["short#1"]


def test_shrink_context_reloads_with_half_the_context_and_the_estimated_saving():
    rig = make_rig(config_with(governor=GovernorConfig(idle_unload_after_s=None)))
    rig.provider.add_model("m", 2 * GIB)
    governor = governor_for(rig)
    rig.provider.load("m", context_tokens=65536)  # 8 GiB of KV cache
    rig.device.set_used_percent(72)
    [proposal] = governor.propose(governor.sample())
    assert proposal.kind == "shrink-context"
    assert proposal.expected_freed_bytes == 32768 * KV_BYTES_PER_TOKEN
    governor.step()
    assert rig.provider.loads[1] == ("m", 32768)


def test_release_caches_goes_first_because_it_costs_nothing():
    rig = make_rig()
    rig.provider.add_model("m", 10 * GIB)
    governor = governor_for(rig)
    rig.provider.load("m")
    rig.provider.cache_bytes = 30 * GIB
    rig.device.set_used_percent(88)
    report = governor.step()
    # Refusing loads costs nothing too, but releasing 30 GiB covers the need: it goes first,
    # and relieves the pressure before anything else is taken.
    assert [o.action.kind for o in report.outcomes] == ["release-cache"]
    assert report.relieved
    assert rig.provider.unloaded == []


def test_compress_context_is_proposed_only_for_registered_sessions():
    rig = make_rig(config_with(governor=GovernorConfig(idle_unload_after_s=None)))
    governor = governor_for(rig)
    rig.device.set_used_percent(72)
    assert governor.propose(governor.sample()) == []
    window = ContextWindow(messages=(Message(role="user", content="x", tokens=8000),))
    governor.sessions.register(
        ManagedSession(session_id="s1", model="m", window=window, kv_bytes_per_token=1024)
    )
    [proposal] = governor.propose(governor.sample())
    assert proposal.kind == "compress-context"
    assert proposal.expected_freed_bytes == 4000 * 1024


def test_a_failed_action_is_an_event_and_the_ladder_goes_on():
    rig = make_rig()
    rig.provider.add_model("stuck", 20 * GIB)
    rig.provider.add_model("other", 20 * GIB)
    governor = governor_for(rig)
    rig.provider.load("stuck")
    rig.provider.load("other")
    for _ in range(3):  # used more often: evicted second
        governor.record_use(rig.provider.models["other#2"])
    rig.provider.failing.add("stuck#1")
    rig.device.set_used_percent(88)
    report = governor.step()
    assert "action-failed" in kinds(rig)
    [failed] = [e for e in rig.events if e.kind == "action-failed"]
    assert "refused to unload stuck#1" in failed.data["error"]
    assert rig.provider.unloaded == ["other#2"]
    assert report.relieved


def test_sustained_pressure_runs_the_ladder_again_after_the_retrigger_interval():
    now = [1000.0]
    rig = make_rig(config_with(models={"keep": ModelPolicy(pinned=True)}))
    governor = Governor(rig.warden, clock=lambda: now[0])
    rig.device.set_used_percent(88)
    assert governor.step() is not None  # level changed: a round
    now[0] += 1.0
    assert governor.step() is None  # same level, too soon
    now[0] += 5.0
    assert governor.step() is not None


def test_no_round_runs_at_normal():
    rig = make_rig()
    governor = governor_for(rig)
    rig.device.set_used_percent(20)
    assert governor.step() is None


def test_a_round_with_nothing_to_propose_reports_the_ladder_exhausted():
    rig = make_rig()
    governor = governor_for(rig)
    rig.device.set_used_percent(90)
    governor.refusing_reason = "already refusing"
    governor.step()
    assert "ladder-exhausted" in kinds(rig)


def test_dry_run_observes_but_takes_no_action():
    rig = make_rig()
    rig.provider.add_model("m", 20 * GIB)
    governor = governor_for(rig)
    governor.acting = False
    rig.provider.load("m")
    rig.device.set_used_percent(90)
    governor.step()
    assert rig.provider.unloaded == []
    assert "action-taken" not in kinds(rig)


# -- refusing loads -----------------------------------------------------------------------


def test_loads_are_refused_at_critical_with_a_clear_error():
    rig = make_rig()
    rig.provider.add_model("new", GIB)
    governor = governor_for(rig)
    rig.device.set_used_percent(88)
    governor.step()
    assert governor.refusing_reason is not None
    with pytest.raises(InsufficientMemory) as info:
        governor.ensure(["new"])
    assert "refused to load 'new': memory pressure is CRITICAL" in info.value.message
    assert info.value.hint
    assert "load-refused" in kinds(rig)


def test_loads_are_allowed_again_once_pressure_falls_below_critical():
    rig = make_rig()
    rig.provider.add_model("new", GIB)
    governor = governor_for(rig)
    rig.device.set_used_percent(88)
    governor.step()
    rig.device.set_used_percent(40)
    governor.step()
    assert governor.refusing_reason is None
    assert governor.ensure(["new"]).fits
    assert "loads-allowed" in kinds(rig)


# -- ensure -------------------------------------------------------------------------------


def test_at_critical_a_higher_priority_load_evicts_lower_priority_models_first():
    rig = make_rig(builtin_strategies=False)
    rig.provider.add_model("low", 20 * GIB)
    rig.provider.add_model("new", GIB)
    governor = governor_for(rig)
    rig.provider.load("low")
    governor.refusing_reason = "refuse new model loads while memory pressure is CRITICAL"
    rig.device.set_used_percent(88)
    plan = governor.ensure(["new"], priority=5, context_tokens=1)
    assert (plan.fits, rig.provider.unloaded) == (True, ["low#1"])


def test_at_critical_a_load_of_the_same_priority_is_refused_and_nothing_is_evicted():
    rig = make_rig(builtin_strategies=False)
    rig.provider.add_model("peer", 20 * GIB)
    rig.provider.add_model("new", GIB)
    governor = governor_for(rig)
    rig.provider.load("peer")
    governor.refusing_reason = "refuse new model loads while memory pressure is CRITICAL"
    rig.device.set_used_percent(88)
    with pytest.raises(InsufficientMemory) as info:
        governor.ensure(["new"], priority=0, context_tokens=1)
    assert info.value.message.startswith(
        "refused to load 'new': memory pressure is CRITICAL: refuse new model loads while "
        "memory pressure is CRITICAL; while loads are refused, a load goes ahead only by "
        "evicting lower-priority models that free at least what it takes"
    )
    assert info.value.message.endswith("not evictable: peer#1 has priority 0, not below 0")
    assert rig.provider.unloaded == []


def test_a_load_without_a_priority_takes_the_configured_one():
    rig = make_rig(config_with(models={"new": ModelPolicy(priority=7)}))
    rig.provider.add_model("new", GIB)
    governor = governor_for(rig)
    loaded = governor.load("new", context_tokens=1)
    assert governor.policy(loaded).priority == 7
    [event] = [e for e in rig.events if e.kind == "model-loaded"]
    assert event.data["priority"] == 7


def test_ensure_evicts_only_what_is_needed_cheapest_first():
    rig = make_rig(total_bytes=100 * GIB, baseline_bytes=10 * GIB)
    for name, size in (("a", 20 * GIB), ("b", 20 * GIB), ("c", 20 * GIB), ("new", 30 * GIB)):
        rig.provider.add_model(name, size)
    governor = governor_for(rig)
    for name in ("a", "b", "c"):
        rig.provider.load(name)
    for _ in range(3):  # used often: kept longest
        governor.record_use(rig.provider.models["a#1"])
    # 70 GiB used; room with a 10% margin: 100 - 70 - 10 = 20 GiB; 30 GiB needed -> evict one.
    plan = governor.ensure(["new"])
    assert plan.fits
    assert len(plan.evictions) == 1
    assert rig.provider.unloaded == [plan.evictions[0].instance_id]
    assert "a#1" in rig.provider.models


def test_ensure_drops_evictions_that_turn_out_unneeded():
    rig = make_rig(total_bytes=100 * GIB, baseline_bytes=10 * GIB)
    rig.provider.add_model("small", 5 * GIB)
    rig.provider.add_model("big", 50 * GIB)
    rig.provider.add_model("new", 40 * GIB)
    governor = governor_for(rig)
    governor.set_priority(rig.provider.load("small"), 0)
    governor.set_priority(rig.provider.load("big"), 1)
    # 65 used, room 25: 15.5 GiB short. The lower-priority "small" is cheaper and taken first,
    # but cannot cover it; "big" then covers it alone, and "small" is dropped again.
    plan = governor.plan_load(["new"], priority=1)
    assert [a.instance_id for a in plan.evictions] == ["big#2"]


def test_ensure_refuses_when_even_evicting_everything_evictable_is_not_enough():
    rig = make_rig(
        config_with(models={"pinned": ModelPolicy(pinned=True)}),
        total_bytes=100 * GIB,
        baseline_bytes=10 * GIB,
    )
    rig.provider.add_model("pinned", 40 * GIB)
    rig.provider.add_model("spare", 10 * GIB)
    rig.provider.add_model("huge", 60 * GIB)
    governor = governor_for(rig)
    rig.provider.load("pinned")
    rig.provider.load("spare")
    with pytest.raises(InsufficientMemory) as info:
        governor.ensure(["huge"])
    # The model, what it needs, what there is, what could be freed, what is kept and why.
    assert info.value.message == (
        "refused to load 'huge': 'huge' need(s) 60.5 GiB at 4,096 tokens of context "
        "(60.5 GiB in pool system); there is 30.0 GiB free in pool system above its safety "
        "margin (40.0 GiB available, 10.0 GiB kept free); short by pool system 30.5 GiB. "
        "Evicting every model that may be evicted (1 model, 10.0 GiB) still leaves pool system "
        "20.5 GiB missing; not evictable: pinned#1 is pinned"
    )
    assert rig.provider.unloaded == []


def test_ensure_never_evicts_a_higher_priority_model():
    rig = make_rig(total_bytes=100 * GIB, baseline_bytes=10 * GIB)
    rig.provider.add_model("important", 60 * GIB)
    rig.provider.add_model("new", 40 * GIB)
    governor = governor_for(rig)
    governor.load("important", priority=5)
    with pytest.raises(InsufficientMemory, match="priority 5 > 1"):
        governor.ensure(["new"], priority=1)


def test_ensure_honours_the_managed_memory_cap():
    rig = make_rig(config_with(pressure=PressureConfig(max_managed_memory=ByteSize(30 * GIB))))
    rig.provider.add_model("gemma", 20 * GIB)
    governor = governor_for(rig)
    first = governor.load("gemma", priority=1, context_tokens=1)
    second = governor.load("gemma", priority=5, context_tokens=1)
    assert rig.provider.unloaded == [first.instance_id]
    assert list(rig.provider.models) == [second.instance_id]


def test_ensure_honours_the_limit_on_loaded_models():
    rig = make_rig(config_with(governor=GovernorConfig(max_loaded_models=2)))
    for name in ("a", "b", "c"):
        rig.provider.add_model(name, GIB)
    governor = governor_for(rig)
    governor.load("a")
    governor.load("b")
    governor.load("c")
    assert len(rig.provider.models) == 2
    assert rig.provider.unloaded == ["a#1"]


def test_ensure_plans_for_1000_loaded_models():
    rig = make_rig(total_bytes=10_000 * GIB, baseline_bytes=100 * GIB)
    rig.provider.add_model("m", 9 * GIB)
    rig.provider.add_model("new", 50 * GIB)
    governor = governor_for(rig)
    for _ in range(1000):
        rig.provider.load("m")
    # 91 % used is CRITICAL, where loads are refused: a load above the loaded models' priority
    # may still evict them. Room 10000 - 9100 - 1000 = -100: 150 GiB to free, 17 models of 9 GiB.
    plan = governor.plan_load(["new"], priority=1)
    assert plan.fits
    assert len(plan.evictions) == 17


# -- the cap e2e pattern, in memory ---------------------------------------------------------


def test_cap_below_two_instances_unloads_the_lower_priority_one():
    rig = make_rig(config_with(pressure=PressureConfig(max_managed_memory=ByteSize(30 * GIB))))
    rig.provider.add_model("gemma", 20 * GIB)
    governor = governor_for(rig)
    low = rig.provider.load("gemma")
    high = rig.provider.load("gemma")
    governor.set_priority(low, 1)
    governor.set_priority(high, 5)
    report = governor.step()
    assert report.trigger >= PressureLevel.CRITICAL
    assert rig.provider.unloaded == [low.instance_id]
    assert report.level_after < PressureLevel.CRITICAL


def test_a_priority_survives_a_sample_in_which_the_provider_did_not_answer():
    rig = make_rig()
    rig.provider.add_model("m", GIB)
    governor = governor_for(rig)
    loaded = governor.load("m", priority=7)
    hidden, rig.provider.models = rig.provider.models, {}
    governor.sample()  # the provider's list came back empty (a timeout, say)
    rig.provider.models = hidden
    governor.sample()
    assert governor.policy(loaded).priority == 7


def test_ensure_refuses_at_critical_even_before_a_ladder_round():
    rig = make_rig()
    rig.provider.add_model("new", GIB)
    governor = governor_for(rig)
    rig.device.set_used_percent(88)
    with pytest.raises(InsufficientMemory, match="memory pressure is CRITICAL"):
        governor.ensure(["new"])


def test_ensure_dry_run_plans_but_unloads_nothing():
    rig = make_rig(total_bytes=100 * GIB, baseline_bytes=10 * GIB)
    rig.provider.add_model("old", 50 * GIB)
    rig.provider.add_model("new", 40 * GIB)
    governor = governor_for(rig)
    rig.provider.load("old")
    plan = governor.ensure(["new"], dry_run=True)
    assert [a.instance_id for a in plan.evictions] == ["old#1"]
    assert rig.provider.unloaded == []


def test_a_round_takes_at_most_max_actions_per_round():
    config = config_with(governor=GovernorConfig(max_actions_per_round=2))
    rig = make_rig(config)
    for name in ("a", "b", "c", "d"):
        rig.provider.add_model(name, GIB)
        rig.provider.load(name)
    governor = governor_for(rig)
    rig.device.set_used_percent(99)
    report = governor.step()
    assert len(report.outcomes) == 2


def test_the_ladder_reports_exhaustion_after_taking_all_it_could():
    rig = make_rig(config_with(models={"keep": ModelPolicy(pinned=True)}))
    rig.provider.add_model("spare", GIB)
    rig.provider.add_model("keep", 40 * GIB)
    governor = governor_for(rig)
    rig.provider.load("spare")
    rig.provider.load("keep")
    rig.device.set_used_percent(90)
    report = governor.step()
    assert rig.provider.unloaded == ["spare#1"]
    assert not report.relieved
    assert kinds(rig)[-1] == "ladder-exhausted"
