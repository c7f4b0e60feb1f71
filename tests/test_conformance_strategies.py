"""The shipped strategy contract, applied to every built-in degradation strategy."""

from __future__ import annotations

import importlib

import pytest

from memwarden.core.plugins import BUILTIN_PLUGINS
from memwarden.testing import StrategyPluginContract

STRATEGIES = [(name, module) for name, module in BUILTIN_PLUGINS if ".strategies." in module]


def test_every_strategy_is_covered():
    assert len(STRATEGIES) == 7


@pytest.fixture(params=STRATEGIES, ids=[name for name, _ in STRATEGIES])
def strategy_module(request):
    return importlib.import_module(request.param[1])


class TestBuiltinStrategies(StrategyPluginContract):
    @pytest.fixture
    def plugin(self, strategy_module):
        return strategy_module

    def test_the_critical_scene_draws_a_proposal_from_the_eviction_strategies(
        self, plugin, warden, reading
    ):
        actions = self._propose(warden, reading)
        if plugin.__name__.endswith(("priority_eviction", "refuse_loads", "idle_unload")):
            assert actions, f"{plugin.__name__} proposed nothing at {reading.level}"
