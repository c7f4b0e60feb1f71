"""The core checks what strategies propose, the ladder degrades the right models, and shrunk
contexts come back once pressure has ended."""

from __future__ import annotations

from memwarden.core.config import Config, GovernorConfig, ModelPolicy
from memwarden.core.governor import Governor
from memwarden.core.strategy import unload_action
from memwarden.core.types import Action, ActionKind
from memwarden.hookspecs import hookimpl
from memwarden.plugins.strategies.shrink_context import shrink_cost
from memwarden.testing.fakes import GIB, KV_BYTES_PER_TOKEN, make_rig


class Greedy:
    """A third-party-like strategy that proposes unloading every loaded model."""

    @hookimpl
    def on_pressure(self, reading, context):
        return [unload_action(m, "greedy", 5.0, "take it all") for m in context.loaded_models]


class Odd:
    """A strategy that proposes what no executor handles."""

    @hookimpl
    def on_pressure(self, reading, context):
        return [
            Action(
                kind="defragment",
                strategy="odd",
                description="defragment memory",
                expected_freed_bytes=GIB,
                cost=0.0,
            ),
            "unload everything",
        ]


def events(rig, kind: str):
    return [e for e in rig.events if e.kind == kind]


def greedy_rig(models: dict[str, ModelPolicy], **governor: object):
    rig = make_rig(
        Config(models=models, governor=GovernorConfig(**governor)), builtin_strategies=False
    )
    rig.warden.plugins.register(Greedy())
    return rig


# -- proposals the core cannot execute ------------------------------------------------------


def test_an_unknown_action_kind_is_rejected_when_proposed_naming_the_strategy():
    rig = make_rig(builtin_strategies=False)
    rig.warden.plugins.register(Odd())
    governor = Governor(rig.warden)
    rig.device.set_used_percent(90)
    assert governor.propose(governor.sample()) == []
    [rejected, not_an_action] = events(rig, "action-rejected")
    assert rejected.data["strategy"] == "odd"
    assert rejected.data["action"] == "defragment"
    assert rejected.message.startswith("odd: proposal rejected: no executor handles action kind")
    assert not_an_action.data["problem"] == "a proposal must be an Action, not str"


def test_a_known_kind_given_as_a_string_becomes_the_enum_member():
    action = Action(kind="unload", strategy="s", description="d", expected_freed_bytes=1, cost=1)
    assert action.kind is ActionKind.UNLOAD


def test_a_rejected_proposal_never_reaches_the_ladder():
    rig = make_rig(builtin_strategies=False)
    rig.warden.plugins.register(Odd())
    governor = Governor(rig.warden)
    rig.device.set_used_percent(90)
    report = governor.step()
    assert report.outcomes == ()
    assert events(rig, "action-taken") == events(rig, "action-failed") == []


# -- the core's policy: critical, pinned, in flight ------------------------------------------


def test_a_strategy_cannot_unload_a_critical_model_even_in_an_emergency():
    rig = greedy_rig({"vital": ModelPolicy(critical=True)})
    rig.provider.add_model("vital", 40 * GIB)
    vital = rig.provider.load("vital")
    rig.device.set_used_percent(99)
    Governor(rig.warden).step()
    assert rig.provider.unloaded == []
    [refused] = events(rig, "action-refused")
    assert refused.data == {
        "strategy": "greedy",
        "action": "unload",
        "model": vital.instance_id,
        "provider": "memory",
        "rule": "critical",
        "reason": "vital#1 is critical: it is never unloaded, at any level",
    }
    assert refused.message.startswith("greedy: refused to unload vital#1:")


def test_a_strategy_cannot_unload_a_pinned_model_below_emergency():
    rig = greedy_rig({"kept": ModelPolicy(pinned=True)})
    rig.provider.add_model("kept", 40 * GIB)
    rig.provider.load("kept")
    rig.device.set_used_percent(90)
    Governor(rig.warden).step()
    assert rig.provider.unloaded == []
    assert [e.data["rule"] for e in events(rig, "action-refused")] == ["pinned"]


def test_a_pinned_model_may_be_unloaded_in_an_emergency():
    rig = greedy_rig({"kept": ModelPolicy(pinned=True)})
    rig.provider.add_model("kept", 40 * GIB)
    rig.provider.load("kept")
    rig.device.set_used_percent(99)
    Governor(rig.warden).step()
    assert rig.provider.unloaded == ["kept#1"]
    assert events(rig, "action-refused") == []


def test_a_strategy_cannot_unload_a_model_serving_a_request_below_emergency():
    rig = greedy_rig({})
    rig.provider.add_model("busy", 40 * GIB)
    rig.provider.load("busy")
    rig.provider.set("busy#1", requests_in_flight=1)
    rig.device.set_used_percent(90)
    Governor(rig.warden).step()
    assert rig.provider.unloaded == []
    [refused] = events(rig, "action-refused")
    assert refused.data["rule"] == "in-flight"


def test_calls_made_through_memwarden_count_as_requests_in_flight():
    rig = greedy_rig({})
    rig.provider.add_model("busy", 40 * GIB)
    rig.provider.load("busy")
    rig.device.set_used_percent(90)
    with rig.warden.usage.track("memory", "busy"):
        Governor(rig.warden).step()
    assert rig.provider.unloaded == []
    assert [e.data["rule"] for e in events(rig, "action-refused")] == ["in-flight"]


def test_the_check_before_executing_refuses_what_became_protected_since_the_proposal():
    rig = greedy_rig({})
    rig.provider.add_model("m", 40 * GIB)
    loaded = rig.provider.load("m")
    governor = Governor(rig.warden)
    rig.device.set_used_percent(90)
    reading = governor.sample()
    [action] = governor.propose(reading)
    rig.provider.set(loaded.instance_id, requests_in_flight=2)
    outcome, _ = governor._take(action, governor.sample())
    assert (outcome.ok, outcome.refused) == (False, True)
    assert rig.provider.unloaded == []


def test_a_refusal_is_reported_once_per_round():
    rig = greedy_rig({"vital": ModelPolicy(critical=True)})
    for name in ("vital", "spare"):
        rig.provider.add_model(name, 20 * GIB)
        rig.provider.load(name)
    rig.device.set_used_percent(90)
    Governor(rig.warden).step()
    assert [e.data["model"] for e in events(rig, "action-refused")] == ["vital#1"]
    assert rig.provider.unloaded == ["spare#2"]


# -- the ladder degrades the right things ----------------------------------------------------


def shrink_rig(models: dict[str, ModelPolicy] | None = None, **governor: object):
    config = Config(
        models=models or {},
        governor=GovernorConfig(idle_unload_after_s=None, **governor),
    )
    return make_rig(config)


def test_shrink_context_costs_rise_with_priority_and_stay_below_evictions():
    assert shrink_cost(0, 0) == 3.0
    assert 3.0 < shrink_cost(1, 0) < shrink_cost(5, 0) < shrink_cost(500, 0) < 9.0 + 1e-9


def test_contexts_are_shrunk_lowest_priority_first():
    rig = shrink_rig({"high": ModelPolicy(priority=5), "low": ModelPolicy(priority=1)})
    for name in ("high", "low"):
        rig.provider.add_model(name, GIB)
        rig.provider.load(name, context_tokens=65536)
    governor = Governor(rig.warden)
    rig.device.set_used_percent(75)
    shrinks = [a for a in governor.propose(governor.sample()) if a.kind == "shrink-context"]
    assert [(a.model, a.cost) for a in shrinks] == [("low", 3.0), ("high", 3.0 + 6.0 * 4 / 5)]


def test_a_model_shrunk_in_a_round_is_not_evicted_in_the_same_round():
    rig = shrink_rig()
    rig.provider.add_model("m", 2 * GIB)
    rig.provider.load("m", context_tokens=65536)  # 8 GiB of KV cache
    governor = Governor(rig.warden)
    rig.device.set_used_percent(90)  # 4 GiB freed by shrinking leaves it CRITICAL
    report = governor.step()
    assert [o.action.kind for o in report.outcomes] == ["refuse-loads", "shrink-context"]
    assert rig.provider.unloaded == ["m#1"]  # the shrink's reload, nothing more
    assert [m.context_tokens for m in rig.provider.models.values()] == [32768]
    assert not report.relieved


def test_a_model_shrunk_in_one_round_may_be_evicted_in_the_next():
    now = [1000.0]
    rig = shrink_rig()
    rig.provider.add_model("m", 2 * GIB)
    rig.provider.load("m", context_tokens=4096)
    governor = Governor(rig.warden, clock=lambda: now[0])
    rig.device.set_used_percent(90)
    governor.step()
    now[0] += 10.0
    governor.step()
    assert rig.provider.unloaded == ["m#1", "m#2"]
    assert rig.provider.models == {}


# -- restoring shrunk contexts ---------------------------------------------------------------


def shrunk_rig(now: list[float], **governor: object):
    """One model shrunk from 131072 to 65536 tokens (16 -> 8 GiB of KV), pressure then gone."""
    rig = shrink_rig(**governor)
    rig.provider.add_model("m", 2 * GIB)
    rig.provider.load("m", context_tokens=131072)
    gov = Governor(rig.warden, clock=lambda: now[0])
    rig.device.set_used_percent(72)
    gov.step()
    assert [c for _, c in rig.provider.loads] == [131072, 65536]
    rig.device.set_used_percent(30)
    return rig, gov


def test_a_shrunk_context_is_restored_after_the_hold_time_at_normal():
    now = [1000.0]
    rig, governor = shrunk_rig(now)
    governor.step()  # NORMAL from now on
    now[0] += 59.0
    governor.step()
    assert len(rig.provider.loads) == 2
    now[0] += 2.0
    governor.step()
    assert rig.provider.loads[-1] == ("m", 131072)
    [restored] = events(rig, "context-restored")
    assert restored.data["from_context_tokens"] == 65536
    assert restored.data["context_tokens"] == 131072
    assert governor.shrunk_contexts() == {}


def test_the_hold_time_is_configurable():
    now = [1000.0]
    rig, governor = shrunk_rig(now, restore_after_s=5.0)
    governor.step()
    now[0] += 6.0
    governor.step()
    assert rig.provider.loads[-1] == ("m", 131072)


def test_a_context_is_not_restored_when_the_bigger_one_would_not_fit_with_the_margin():
    now = [1000.0]
    rig, governor = shrunk_rig(now)
    rig.device.set_used_percent(62)  # NORMAL, but 8 GiB more would read 70 %: WARNING
    governor.step()
    now[0] += 120.0
    governor.step()
    assert len(rig.provider.loads) == 2
    assert events(rig, "context-restored") == []


def test_a_model_serving_a_request_is_not_restored():
    now = [1000.0]
    rig, governor = shrunk_rig(now)
    [instance] = rig.provider.models
    rig.provider.set(instance, requests_in_flight=1)
    governor.step()
    now[0] += 120.0
    governor.step()
    assert len(rig.provider.loads) == 2


def test_one_model_is_restored_per_step_highest_priority_first():
    now = [1000.0]
    models = {"high": ModelPolicy(priority=5), "low": ModelPolicy(priority=1)}
    rig = shrink_rig(models)
    for name in ("low", "high"):
        rig.provider.add_model(name, GIB)
        rig.provider.load(name, context_tokens=65536)
    governor = Governor(rig.warden, clock=lambda: now[0])
    rig.device.set_used_percent(80)
    governor.step()
    assert sorted(governor.shrunk_contexts().values()) == [65536, 65536]
    rig.device.set_used_percent(20)
    governor.step()
    now[0] += 61.0
    governor.step()
    assert rig.provider.loads[-1] == ("high", 65536)
    governor.step()
    assert rig.provider.loads[-1] == ("low", 65536)
    assert [e.data["model"] for e in events(rig, "context-restored")] == ["high", "low"]


def test_a_model_shrunk_again_soon_after_a_restore_waits_twice_as_long():
    now = [1000.0]
    rig, governor = shrunk_rig(now)
    governor.step()
    now[0] += 61.0
    governor.step()  # restored to 131072
    assert len(events(rig, "context-restored")) == 1
    now[0] += 10.0
    rig.device.set_used_percent(80)  # pressure is back within the hold time: shrunk again
    governor.step()
    assert rig.provider.loads[-1] == ("m", 65536)
    rig.device.set_used_percent(30)
    governor.step()
    now[0] += 61.0
    governor.step()
    assert len(events(rig, "context-restored")) == 1  # not yet: it oscillated
    now[0] += 60.0
    governor.step()
    assert len(events(rig, "context-restored")) == 2
    assert rig.provider.loads[-1] == ("m", 131072)


def test_pressure_returning_restarts_the_hold_and_the_first_context_is_restored():
    now = [1000.0]
    rig, governor = shrunk_rig(now)
    governor.step()
    now[0] += 50.0
    rig.device.set_used_percent(72)
    governor.step()  # WARNING again: shrunk once more, to 32768
    assert rig.provider.loads[-1] == ("m", 32768)
    rig.device.set_used_percent(30)
    now[0] += 1.0
    governor.step()
    now[0] += 59.0
    governor.step()
    assert events(rig, "context-restored") == []
    now[0] += 2.0
    governor.step()
    assert rig.provider.loads[-1] == ("m", 131072)
    assert KV_BYTES_PER_TOKEN * 131072 == 16 * GIB
