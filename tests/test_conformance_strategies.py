"""The shipped strategy contract: every built-in strategy passes it, and a do-nothing strategy
and misbehaving ones fail it."""

from __future__ import annotations

import importlib
import textwrap

import pytest

from memwarden.core.plugins import BUILTIN_PLUGINS
from memwarden.testing import StrategyPluginContract

pytest_plugins = ["pytester"]

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

    @pytest.fixture
    def level(self, strategy_module):
        return strategy_module.LEVEL


# -- negative tests: the contract fails strategies that do nothing or misbehave --------------

CONTRACT_RUN = """
import pytest

from memwarden.core.strategy import unload_action
from memwarden.core.types import Action, PressureLevel
from memwarden.hookspecs import hookimpl
from memwarden.testing import StrategyPluginContract


class Strategy:
{body}


class TestStrategy(StrategyPluginContract):
    acts_at = PressureLevel.CRITICAL

    @pytest.fixture
    def plugin(self):
        return Strategy()
"""


def run_contract(pytester, body: str):
    pytester.makepyfile(CONTRACT_RUN.format(body=textwrap.indent(textwrap.dedent(body), "    ")))
    return pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")


def failed_tests(result) -> set[str]:
    return {r.nodeid.split("::")[-1] for r in result.reprec.getreports() if r.failed}


def test_a_do_nothing_strategy_fails_the_contract(pytester):
    result = run_contract(
        pytester,
        """
        @hookimpl
        def on_pressure(self, reading, context):
            return None
        """,
    )
    assert failed_tests(result) == {"test_proposes_something_in_the_default_scene"}


def test_a_do_nothing_strategy_that_declares_it_passes(pytester):
    pytester.makepyfile(
        CONTRACT_RUN.format(
            body="    @hookimpl\n    def on_pressure(self, reading, context):\n        return []"
        ).replace("acts_at = PressureLevel.CRITICAL", "acts_in_default_scene = False")
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    assert failed_tests(result) == set()
    result.assert_outcomes(passed=7, skipped=2)


def test_a_strategy_whose_iterator_is_not_cheapest_first_fails_the_contract(pytester):
    result = run_contract(
        pytester,
        """
        @hookimpl
        def on_pressure(self, reading, context):
            from memwarden.core.strategy import unload_action

            models = [
                m
                for m, p in zip(context.loaded_models, context.policies)
                if not (p.critical or p.pinned or context.requests_in_flight(m))
            ]
            for cost, model in zip((9.0, 1.0), models[:2]):
                yield unload_action(model, "backwards", cost, "out of order")
        """,
    )
    assert failed_tests(result) == {"test_an_iterator_yields_cheapest_first"}


def test_a_strategy_proposing_a_kind_its_proposes_leaves_out_fails_the_contract(pytester):
    result = run_contract(
        pytester,
        """
        from memwarden.core.types import ActionKind
        PROPOSES = frozenset({ActionKind.UNLOAD})

        @hookimpl
        def on_pressure(self, reading, context):
            provider = context.loaded_models[0].provider
            return [
                Action(kind="release-cache", strategy="sneaky", description="drop",
                       expected_freed_bytes=1, cost=0.0, provider=provider)
            ]
        """,
    )
    assert failed_tests(result) == {"test_proposes_only_the_kinds_it_declares"}


def test_a_strategy_proposing_an_unknown_kind_fails_the_contract(pytester):
    result = run_contract(
        pytester,
        """
        @hookimpl
        def on_pressure(self, reading, context):
            return [
                Action(kind="defragment", strategy="odd", description="defragment memory",
                       expected_freed_bytes=1, cost=0.0)
            ]
        """,
    )
    assert failed_tests(result) == {"test_every_proposed_action_is_executable"}


def test_a_strategy_unloading_a_critical_model_fails_the_contract(pytester):
    result = run_contract(
        pytester,
        """
        @hookimpl
        def on_pressure(self, reading, context):
            return [unload_action(m, "greedy", 5.0, "make room") for m in context.loaded_models]
        """,
    )
    assert failed_tests(result) == {
        "test_never_proposes_what_the_core_must_refuse[acts_at]",
        "test_never_proposes_what_the_core_must_refuse[EMERGENCY]",
    }


def test_a_strategy_shrinking_to_a_bigger_context_fails_the_contract(pytester):
    result = run_contract(
        pytester,
        """
        @hookimpl
        def on_pressure(self, reading, context):
            return [
                Action(kind="shrink-context", strategy="grow", description="grow",
                       expected_freed_bytes=1, cost=3.0, model=m.name, provider=m.provider,
                       instance_id=m.instance_id, context_tokens=m.context_tokens * 2)
                for m in context.loaded_models
            ]
        """,
    )
    assert "test_every_proposed_action_is_executable" in failed_tests(result)
