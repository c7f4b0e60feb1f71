"""The conformance suite fails plugins that do nothing or misbehave, and passes one that behaves.

Each test writes a third party's test module (a plugin and a contract subclass), runs it with
pytester, and checks the outcome of every contract test by name.
"""

from __future__ import annotations

import textwrap

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


def run_contract(pytester, source: str) -> dict[str, str]:
    """Run one test module in-process; the outcome of each test, by test name."""
    pytester.makepyfile(test_third_party=textwrap.dedent(source))
    recorder = pytester.inline_run("-p", "no:cacheprovider")
    passed, skipped, failed = recorder.listoutcomes()
    outcomes = {}
    for outcome, reports in ((PASSED, passed), (SKIPPED, skipped), (FAILED, failed)):
        for report in reports:
            outcomes[report.nodeid.rsplit("::", 1)[-1]] = outcome
    return outcomes


# -- devices ----------------------------------------------------------------------------------

DEVICE = """
import pytest
from memwarden import DeviceUnavailable, MemoryPool, PoolKind, hookimpl
from memwarden.testing import DevicePluginContract

class Plugin:
    {capabilities}
    @hookimpl
    def detect_device(self, config):
        {body}

class TestPlugin(DevicePluginContract):
    {capabilities}
    @pytest.fixture
    def plugin(self):
        return Plugin()
"""

DEVICE_TESTS = (
    "test_detect_device_returns_pools_or_says_why_not",
    "test_finds_a_device_in_the_default_scene",
    "test_pools_have_consistent_sizes",
    "test_pool_ids_are_unique_and_stable",
    "test_processes_hold_no_more_than_the_pool",
)

POOL = (
    'MemoryPool(id="fpga:0", kind=PoolKind.GPU, name="FPGA", total_bytes=8 * 2**30, '
    'available_bytes={available}, used_bytes=2 * 2**30, source="fpga")'
)


def device(body: str, capabilities: str = "pass") -> str:
    return DEVICE.format(body=body, capabilities=capabilities)


def test_a_device_plugin_that_reports_a_sound_pool_passes(pytester):
    outcomes = run_contract(pytester, device("return [" + POOL.format(available="6 * 2**30") + "]"))
    assert outcomes == dict.fromkeys(DEVICE_TESTS, PASSED)


def test_a_device_plugin_that_returns_none_fails(pytester):
    assert run_contract(pytester, device("return None")) == dict.fromkeys(DEVICE_TESTS, FAILED)


def test_a_device_plugin_that_returns_a_dict_fails(pytester):
    outcomes = run_contract(pytester, device('return {"fpga:0": 8 * 2**30}'))
    assert outcomes == dict(
        dict.fromkeys(DEVICE_TESTS, FAILED), test_finds_a_device_in_the_default_scene=PASSED
    )


def test_a_device_plugin_reporting_more_available_than_total_fails(pytester):
    outcomes = run_contract(pytester, device("return [" + POOL.format(available="9 * 2**30") + "]"))
    assert outcomes == dict(
        dict.fromkeys(DEVICE_TESTS, PASSED), test_pools_have_consistent_sizes=FAILED
    )


def test_a_device_plugin_finding_nothing_fails_unless_it_declares_so(pytester):
    body = 'return DeviceUnavailable(source="fpga", reason="no FPGA driver")'
    assert run_contract(pytester, device(body)) == dict(
        dict.fromkeys(DEVICE_TESTS, PASSED), test_finds_a_device_in_the_default_scene=FAILED
    )


def test_a_device_plugin_declaring_it_may_find_no_device_passes_with_a_reason(pytester):
    body = 'return DeviceUnavailable(source="fpga", reason="no FPGA driver")'
    outcomes = run_contract(pytester, device(body, capabilities="may_find_no_device = True"))
    assert outcomes == dict(
        dict.fromkeys(DEVICE_TESTS, PASSED), test_finds_a_device_in_the_default_scene=SKIPPED
    )


def test_a_device_plugin_declaring_it_may_find_no_device_still_fails_on_none(pytester):
    outcomes = run_contract(pytester, device("return None", "may_find_no_device = True"))
    assert outcomes == dict(
        dict.fromkeys(DEVICE_TESTS, FAILED), test_finds_a_device_in_the_default_scene=SKIPPED
    )


# -- estimators -------------------------------------------------------------------------------

ESTIMATOR = """
import pytest
from memwarden import Confidence, MemoryEstimate, ModelRef, hookimpl
from memwarden.testing import EstimatorPluginContract

@hookimpl
def estimate_model_size(model, context_tokens, options):
    if model.name != "tiny":
        return None
    {body}

class TestPlugin(EstimatorPluginContract):
    @pytest.fixture
    def plugin(self):
        import test_third_party
        return test_third_party

    @pytest.fixture
    def model(self):
        return ModelRef(name="tiny")
"""

ESTIMATE = (
    "return MemoryEstimate(model=model, context_tokens=context_tokens, weights_bytes=2**30, "
    "kv_cache_bytes={kv}, compute_bytes=0, overhead_bytes=0, confidence=Confidence.LOW, "
    'estimator="table")'
)

ESTIMATOR_TESTS = (
    "test_sizes_its_model_with_a_consistent_breakdown",
    "test_more_context_never_costs_less",
    "test_answers_none_for_a_model_it_cannot_size",
)


def test_an_estimator_that_sizes_its_model_passes(pytester):
    source = ESTIMATOR.format(body=ESTIMATE.format(kv="context_tokens * 2048"))
    assert run_contract(pytester, source) == dict.fromkeys(ESTIMATOR_TESTS, PASSED)


def test_an_estimator_that_never_answers_fails(pytester):
    assert run_contract(pytester, ESTIMATOR.format(body="return None")) == {
        "test_sizes_its_model_with_a_consistent_breakdown": FAILED,
        "test_more_context_never_costs_less": FAILED,
        "test_answers_none_for_a_model_it_cannot_size": PASSED,
    }


def test_an_estimator_whose_total_shrinks_with_more_context_fails(pytester):
    source = ESTIMATOR.format(body=ESTIMATE.format(kv="2**40 // context_tokens"))
    assert run_contract(pytester, source) == dict(
        dict.fromkeys(ESTIMATOR_TESTS, PASSED), test_more_context_never_costs_less=FAILED
    )


def test_an_estimator_returning_a_number_fails(pytester):
    assert run_contract(pytester, ESTIMATOR.format(body="return 2**30")) == {
        "test_sizes_its_model_with_a_consistent_breakdown": FAILED,
        "test_more_context_never_costs_less": FAILED,
        "test_answers_none_for_a_model_it_cannot_size": PASSED,
    }


# -- providers --------------------------------------------------------------------------------

PROVIDER = """
import pytest
from memwarden import (
    AvailableModel, LoadedModel, ModelNotFound, Provider, ProviderStatus, hookimpl,
)
from memwarden.testing import ProviderContract

class Good(Provider):
    name = "good"

    def __init__(self):
        self.loaded = {{}}

    def status(self):
        return ProviderStatus(name=self.name, reachable=True)

    def available_models(self):
        return [AvailableModel(name="tiny", provider=self.name, size_bytes=2**20)]

    def loaded_models(self):
        return list(self.loaded.values())

    def load(self, model, *, context_tokens=None, keep_alive_s=None):
        self.loaded[model] = LoadedModel(name=model, provider=self.name, total_bytes=2**20)
        return self.loaded[model]

    def unload(self, model):
        if self.loaded.pop(model, None) is None:
            raise ModelNotFound(f"good: {{model!r}} is not loaded")

class UnderTest(Good):
    {body}

class TestPlugin(ProviderContract):
    {capabilities}
    @pytest.fixture
    def provider(self):
        return UnderTest()

    @pytest.fixture
    def loadable_model(self):
        return "tiny"
"""

PROVIDER_TESTS = (
    "test_name_is_short_and_lower_case",
    "test_status_names_the_provider",
    "test_status_answers_reachable_in_the_default_scene",
    "test_available_models_belong_to_the_provider",
    "test_offers_its_loadable_model",
    "test_loaded_models_is_a_list_of_loaded_models",
    "test_load_then_unload",
    "test_unloading_an_unknown_model_is_model_not_found",
)

DO_NOTHING_PROVIDER = """
    def status(self):
        return None

    def available_models(self):
        return None

    def loaded_models(self):
        return None

    def load(self, model, *, context_tokens=None, keep_alive_s=None):
        return None

    def unload(self, model):
        return None
"""


def provider(body: str = "pass", capabilities: str = "pass") -> str:
    return PROVIDER.format(
        body=textwrap.indent(textwrap.dedent(body), "    ").strip(), capabilities=capabilities
    )


def test_a_provider_that_answers_passes(pytester):
    assert run_contract(pytester, provider()) == dict.fromkeys(PROVIDER_TESTS, PASSED)


def test_a_provider_that_does_nothing_fails(pytester):
    assert run_contract(pytester, provider(DO_NOTHING_PROVIDER)) == dict(
        dict.fromkeys(PROVIDER_TESTS, FAILED), test_name_is_short_and_lower_case=PASSED
    )


def test_a_provider_whose_status_is_a_dict_fails(pytester):
    body = """
    def status(self):
        return {"name": self.name, "reachable": True}
    """
    assert run_contract(pytester, provider(body)) == dict(
        dict.fromkeys(PROVIDER_TESTS, PASSED),
        test_status_names_the_provider=FAILED,
        test_status_answers_reachable_in_the_default_scene=FAILED,
    )


def test_a_provider_listing_models_under_another_name_fails(pytester):
    body = """
    def available_models(self):
        return [AvailableModel(name="tiny", provider="someone-else")]
    """
    assert run_contract(pytester, provider(body)) == dict(
        dict.fromkeys(PROVIDER_TESTS, PASSED), test_available_models_belong_to_the_provider=FAILED
    )


def test_an_unreachable_provider_fails_unless_it_declares_so(pytester):
    body = """
    def status(self):
        return ProviderStatus(name=self.name, reachable=False, reason="connection refused")
    """
    assert run_contract(pytester, provider(body)) == dict(
        dict.fromkeys(PROVIDER_TESTS, PASSED),
        test_status_answers_reachable_in_the_default_scene=FAILED,
    )
    declared = run_contract(pytester, provider(body, "may_be_unreachable = True"))
    assert declared == dict(
        dict.fromkeys(PROVIDER_TESTS, SKIPPED),
        test_name_is_short_and_lower_case=PASSED,
        test_status_names_the_provider=PASSED,
    )


# -- compressors ------------------------------------------------------------------------------

COMPRESSOR = """
import pytest
from memwarden import ContextWindow, hookimpl
from memwarden.testing import CompressorPluginContract

@hookimpl
def compress_context(window, budget_tokens):
    {body}

class TestPlugin(CompressorPluginContract):
    {capabilities}
    @pytest.fixture
    def plugin(self):
        import test_third_party
        return test_third_party
"""

COMPRESSOR_TEST = "test_result_fits_the_budget_and_keeps_pinned_messages"

KEEP_PINNED_AND_RECENT = """pinned = [m for m in window.messages if m.pinned]
    rest = [m for m in window.messages if not m.pinned]
    used = sum(m.tokens for m in pinned)
    kept = []
    for m in reversed(rest):
        if used + m.tokens > budget_tokens:
            break
        kept.insert(0, m)
        used += m.tokens
    return ContextWindow(messages=tuple(pinned + kept))"""


def compressor(body: str, capabilities: str = "pass") -> str:
    return COMPRESSOR.format(body=body, capabilities=capabilities)


def test_a_compressor_that_keeps_pinned_and_recent_turns_passes(pytester):
    assert run_contract(pytester, compressor(KEEP_PINNED_AND_RECENT)) == {COMPRESSOR_TEST: PASSED}


def test_a_compressor_that_declines_fails_unless_it_declares_so(pytester):
    assert run_contract(pytester, compressor("return None")) == {COMPRESSOR_TEST: FAILED}
    declared = run_contract(pytester, compressor("return None", "may_decline = True"))
    assert declared == {COMPRESSOR_TEST: SKIPPED}


def test_a_compressor_that_drops_the_pinned_message_fails(pytester):
    body = "return ContextWindow(messages=tuple(m for m in window.messages[-3:]))"
    assert run_contract(pytester, compressor(body)) == {COMPRESSOR_TEST: FAILED}


def test_a_compressor_over_the_budget_fails(pytester):
    assert run_contract(pytester, compressor("return window")) == {COMPRESSOR_TEST: FAILED}


# -- persistence ------------------------------------------------------------------------------

PERSISTENCE = """
import pytest
from memwarden import hookimpl
from memwarden.core.serialize import record_time
from memwarden.testing import PersistencePluginContract

class Store:
    {capabilities}
    def __init__(self):
        self.rows = []

    @hookimpl
    def persist_state(self, kind, record, config):
        {store}

    @hookimpl
    def read_state(self, kind, since, limit, config):
        {read}

class TestPlugin(PersistencePluginContract):
    {capabilities}
    @pytest.fixture
    def plugin(self):
        return Store()
"""

GOOD_STORE = "self.rows.append((kind, record))"
GOOD_READ = """records = [r for k, r in self.rows if k == kind]
        records = [r for r in records if since is None or record_time(r) >= since]
        return sorted(records, key=record_time)[-limit:]"""

PERSISTENCE_TESTS = (
    "test_accepts_every_record_kind",
    "test_reads_back_every_record_kind_equal",
    "test_reads_the_newest_records_last_within_the_limit",
    "test_reads_only_records_since_the_time_given",
    "test_reads_nothing_of_a_kind_never_stored",
)


def persistence(store: str = GOOD_STORE, read: str = GOOD_READ, capabilities: str = "pass"):
    return PERSISTENCE.format(store=store, read=read, capabilities=capabilities)


def test_a_store_that_reads_back_what_it_stored_passes(pytester):
    assert run_contract(pytester, persistence()) == dict.fromkeys(PERSISTENCE_TESTS, PASSED)


def test_a_store_that_does_nothing_fails(pytester):
    assert run_contract(pytester, persistence(store="pass", read="return None")) == dict(
        dict.fromkeys(PERSISTENCE_TESTS, FAILED), test_accepts_every_record_kind=PASSED
    )


def test_a_store_that_drops_readings_fails(pytester):
    store = 'if kind != "reading":\n            self.rows.append((kind, record))'
    assert run_contract(pytester, persistence(store=store)) == dict(
        dict.fromkeys(PERSISTENCE_TESTS, PASSED), test_reads_back_every_record_kind_equal=FAILED
    )


def test_a_store_that_reads_back_oldest_first_beyond_the_limit_fails(pytester):
    read = "return [r for k, r in self.rows if k == kind][:limit]"
    assert run_contract(pytester, persistence(read=read)) == dict(
        dict.fromkeys(PERSISTENCE_TESTS, PASSED),
        test_reads_the_newest_records_last_within_the_limit=FAILED,
        test_reads_only_records_since_the_time_given=FAILED,
    )


def test_a_write_only_store_that_declares_so_skips_the_read_back(pytester):
    outcomes = run_contract(
        pytester, persistence(read="return None", capabilities="supports_read = False")
    )
    assert outcomes == dict(
        dict.fromkeys(PERSISTENCE_TESTS, SKIPPED), test_accepts_every_record_kind=PASSED
    )


# -- the pytest plugin ------------------------------------------------------------------------


def test_a_third_party_project_finds_the_fixtures_with_plain_pytest(pytester):
    pytester.makepyfile(
        test_mine="""
        from memwarden import hookimpl

        class Fpga:
            @hookimpl
            def detect_device(self, config):
                return None

        def test_fixtures(memwarden_config, memwarden_warden_with, memwarden_rig, memwarden_clock):
            warden = memwarden_warden_with(Fpga())
            assert warden.config is memwarden_config
            assert memwarden_config.state.path.endswith("memwarden-state.db")
            assert [p.id for p in memwarden_rig.warden.snapshot().pools] == ["system"]
            memwarden_clock.sleep(2.5)
            assert memwarden_clock() == 1002.5
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
