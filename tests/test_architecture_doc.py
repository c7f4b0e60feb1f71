"""docs/architecture.md walks one sample through the code by name: every name must exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memwarden.core import admission, calls, monitor, pressure, strategy, warden
from memwarden.core.governor import Governor, order_actions
from memwarden.core.plugins import Plugins
from memwarden.core.providers import Provider
from memwarden.core.usage import UsageTracker

DOC = Path(__file__).parent.parent / "docs" / "architecture.md"

OWNERS = {
    "Monitor": monitor.Monitor,
    "PsiTrigger": monitor.PsiTrigger,
    "Governor": Governor,
    "Warden": warden.Warden,
    "Plugins": Plugins,
    "Provider": Provider,
    "UsageTracker": UsageTracker,
    "pressure": pressure,
    "admission": admission,
}
FUNCTIONS = {
    "order_actions": order_actions,
    "action_problem": strategy.action_problem,
    "policy_refusal": strategy.policy_refusal,
    "_own_pools": warden._own_pools,
    "DEVICE_TIMEOUT_S": warden.DEVICE_TIMEOUT_S,
}


def walk() -> str:
    text = DOC.read_text()
    start = text.index("## One sample, from device to action")
    return text[start : text.index("\n## ", start + 1)]


def named() -> list[str]:
    return sorted(set(re.findall(r"`([A-Za-z_]+(?:\.[A-Za-z_]+)?)`", walk())))


def test_the_walk_names_the_functions_it_describes():
    names = named()
    assert "Governor.relieve" in names and "Warden.snapshot" in names and len(names) > 25


@pytest.mark.parametrize("name", named())
def test_every_function_the_walk_names_exists(name):
    owner, _, attribute = name.partition(".")
    if attribute and owner in OWNERS:
        assert hasattr(OWNERS[owner], attribute), f"docs/architecture.md names {name}"
    elif not attribute and owner in OWNERS:
        assert OWNERS[owner] is not None
    elif not attribute and owner in FUNCTIONS:
        assert FUNCTIONS[owner] is not None
    else:
        # Config keys, event kinds, hook names and types: checked where they are documented.
        assert owner in KNOWN_OTHER_NAMES, f"docs/architecture.md names {name}: add it here"


KNOWN_OTHER_NAMES = {
    "memwarden",
    "select",
    "max_managed_memory",
    "detect_device",
    "DeviceSnapshot",
    "level-changed",
    "retrigger_interval_s",
    "StrategyContext",
    "ActionKind",
    "action-rejected",
    "action-refused",
    "action-taken",
    "action-failed",
    "ladder-exhausted",
    "max_actions_per_round",
    "RoundReport",
    "on_event",
    "persist_state",
    "sqlite-state",
    "min_free",
    "calls",
    "estimate_model_size",
}
assert calls  # the walk names core/calls.py by path
