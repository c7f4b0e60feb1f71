"""The plugin conformance suite: prove a plugin honours memwarden's contracts with one pytest run.

Subclass the contract for what your plugin does, give the fixtures that point it at your plugin,
and run ``pytest``::

    from memwarden.testing import DevicePluginContract

    class TestMyGpu(DevicePluginContract):
        @pytest.fixture
        def plugin(self):
            import memwarden_mygpu
            return memwarden_mygpu

A plugin that answers nothing in the contract's default scene fails it: a device plugin must
report pools or a ``DeviceUnavailable`` with a reason, an estimator must size its ``model``, a
compressor must compress, a provider must answer, and a persistence plugin must read back what it
stored. What a plugin legitimately does not do it declares as a class attribute on the subclass
(``may_find_no_device = True``, ``supports_load = False``, ``supports_read = False``...); the tests
that need it are then skipped with the reason, not failed. Each contract's docstring lists its
capabilities.

The same fixtures are on offer to any test through the ``memwarden`` pytest plugin (installed with
memwarden): ``memwarden_config``, ``memwarden_warden_with``, ``memwarden_rig``, ``memwarden_clock``.

Every contract registers your plugin through memwarden's real plugin manager, so a hook that
raises shows up as a failure here exactly as users would see it in ``memwarden plugins``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from memwarden.core.config import Config, ModelPolicy, StateConfig
from memwarden.core.errors import MemwardenError, ModelNotFound
from memwarden.core.governor import Governor
from memwarden.core.plugins import Plugins
from memwarden.core.providers import Provider, same_model
from memwarden.core.serialize import to_data
from memwarden.core.sessions import ManagedSession
from memwarden.core.strategy import StrategyContext, action_problem
from memwarden.core.types import (
    Action,
    ActionKind,
    ActionRecord,
    AvailableModel,
    ContextWindow,
    DeviceSnapshot,
    DeviceUnavailable,
    Event,
    LoadedModel,
    MemoryEstimate,
    MemoryPool,
    MemorySample,
    Message,
    ModelRef,
    PoolKind,
    PoolPressure,
    PressureLevel,
    PressureReading,
    ProviderStatus,
    UsageRecord,
)
from memwarden.core.warden import Warden
from memwarden.hookspecs import PERSISTED_KINDS
from memwarden.testing.fakes import GIB, KV_BYTES_PER_TOKEN, Rig, make_rig


def warden_with(plugin: object, config: Config | None = None) -> Warden:
    """A warden that has only the given plugin: no built-ins, no installed third-party ones."""
    config = config or Config()
    plugins = Plugins(config, builtins=(), load_entry_points=False, env={})
    plugins.register(plugin)
    return Warden(config, plugins)


def assert_no_plugin_failures(warden: Warden) -> None:
    failures = [f"{f.plugin} in {f.hook}: {f.error}" for f in warden.plugin_failures]
    assert not failures, "the plugin raised inside a hook: " + "; ".join(failures)


def sample_records() -> dict[str, Any]:
    """One record of every kind in ``hookspecs.PERSISTED_KINDS``, each field set to something a
    lossy store would get wrong (nested pools, a level by name, floats, None beside values)."""
    pool = MemoryPool(
        id="cuda:0",
        kind=PoolKind.GPU,
        name="Conformance GPU",
        total_bytes=24 * GIB,
        available_bytes=3 * GIB,
        used_bytes=21 * GIB,
        source="conformance",
        psi_some_avg10=12.5,
    )
    snapshot = DeviceSnapshot(
        pools=(pool,),
        unavailable=(DeviceUnavailable(source="apple", reason="not Apple Silicon"),),
        taken_at=1_700_000_000.25,
    )
    reading = PressureReading(
        level=PressureLevel.CRITICAL,
        pools=(
            PoolPressure(
                pool_id="cuda:0",
                level=PressureLevel.CRITICAL,
                used_percent=87.5,
                available_bytes=3 * GIB,
                reasons=("87.5 % used",),
            ),
        ),
        snapshot=snapshot,
        managed_bytes=9 * GIB,
        reasons=("cuda:0 at 87.5 %",),
        taken_at=1_700_000_000.5,
        managed_level=PressureLevel.WARNING,
    )
    records = {
        "event": Event(
            kind="action-taken",
            message="unloaded llama3.2 (2.0 GiB)",
            level=PressureLevel.CRITICAL,
            data={"model": "llama3.2", "freed_bytes": 2 * GIB, "cost": 1.5, "forced": False},
            at=1_700_000_001.75,
        ),
        "reading": reading,
        "usage": UsageRecord(
            model="llama3.2",
            provider="ollama",
            started_at=1_700_000_002.0,
            latency_s=0.375,
            success=False,
            prompt_tokens=12,
            error="ProviderUnavailable: connection refused",
            time_to_first_token_s=0.125,
        ),
        "action": ActionRecord(
            at=1_700_000_003.5,
            kind=ActionKind.UNLOAD,
            strategy="idle-unload",
            description="unload llama3.2 (idle 10 min)",
            ok=True,
            expected_freed_bytes=2 * GIB,
            measured_freed_bytes=2 * GIB - 4096,
            level_before=PressureLevel.CRITICAL,
            level_after=PressureLevel.WARNING,
            model="llama3.2",
            provider="ollama",
            pool_id="cuda:0",
        ),
        "sample": MemorySample.of(reading),
    }
    assert tuple(records) == PERSISTED_KINDS, "sample_records is missing a persisted kind"
    return records


def _declared(contract: object, capability: str, why: str) -> None:
    """Skip, naming the capability, when the subclass declared that it lacks it."""
    if not getattr(contract, capability):
        pytest.skip(f"the plugin declares {capability} = False: {why}")


class _PluginContract:
    @pytest.fixture
    def plugin(self) -> object:
        """Override: return your plugin (a module or an object with @hookimpl functions)."""
        pytest.fail("override the `plugin` fixture to return the plugin under test")

    @pytest.fixture
    def config(self) -> Config:
        """Override to hand your plugin a configuration (e.g. ``[plugins.<name>]`` settings)."""
        return Config()

    @pytest.fixture
    def warden(self, plugin: object, config: Config) -> Warden:
        return warden_with(plugin, config)


class DevicePluginContract(_PluginContract):
    """For plugins implementing ``detect_device``.

    In the default scene (your ``config``, this host) the plugin must report at least one pool.
    Capability: ``may_find_no_device = True`` for a plugin that legitimately sees nothing here
    (a GPU plugin on a CI runner without that GPU); it must then answer a ``DeviceUnavailable``
    that says why, never None.
    """

    may_find_no_device: bool = False

    def _detect(self, warden: Warden) -> list[Any]:
        results = warden.hook.detect_device(config=warden.config)
        assert_no_plugin_failures(warden)
        return results

    def _answer(self, warden: Warden) -> Any:
        results = self._detect(warden)
        assert results, (
            "detect_device returned None: return the pools you measured, or a "
            "DeviceUnavailable saying why you see none"
        )
        assert len(results) == 1, f"one plugin, one answer: {results!r}"
        return results[0]

    def _pools(self, warden: Warden) -> list[MemoryPool]:
        answer = self._answer(warden)
        return [] if isinstance(answer, DeviceUnavailable) else list(answer)

    def test_detect_device_returns_pools_or_says_why_not(self, warden: Warden) -> None:
        answer = self._answer(warden)
        if isinstance(answer, DeviceUnavailable):
            assert answer.reason, "DeviceUnavailable must say why"
            assert answer.source, "DeviceUnavailable must name the plugin in `source`"
            return
        assert isinstance(answer, Sequence) and not isinstance(answer, str | bytes), (
            f"return a list of MemoryPool, not {type(answer).__name__}"
        )
        wrong = [type(pool).__name__ for pool in answer if not isinstance(pool, MemoryPool)]
        assert not wrong, f"return MemoryPool instances, not {', '.join(wrong)}"
        assert answer, "an empty list says nothing: return a DeviceUnavailable saying why"

    def test_finds_a_device_in_the_default_scene(self, warden: Warden) -> None:
        if self.may_find_no_device:
            pytest.skip("the plugin declares may_find_no_device = True")
        answer = self._answer(warden)
        assert not isinstance(answer, DeviceUnavailable), (
            f"the plugin found no device here ({answer.reason}); if that is right on this host, "
            "declare may_find_no_device = True on the contract subclass"
        )

    def test_pools_have_consistent_sizes(self, warden: Warden) -> None:
        for pool in self._pools(warden):
            assert pool.total_bytes > 0, f"{pool.id}: total_bytes must be positive"
            assert 0 <= pool.available_bytes <= pool.total_bytes, (
                f"{pool.id}: available_bytes {pool.available_bytes} is outside "
                f"0..total_bytes ({pool.total_bytes})"
            )
            assert 0 <= pool.used_bytes <= pool.total_bytes, (
                f"{pool.id}: used_bytes {pool.used_bytes} is outside "
                f"0..total_bytes ({pool.total_bytes})"
            )
            assert isinstance(pool.kind, PoolKind)
            assert pool.source, f"{pool.id}: name the plugin in `source`"

    def test_pool_ids_are_unique_and_stable(self, warden: Warden) -> None:
        first = [pool.id for pool in self._pools(warden)]
        second = [pool.id for pool in self._pools(warden)]
        assert len(first) == len(set(first)), f"duplicate pool ids: {first}"
        assert first == second, "pool ids must not change between snapshots"

    def test_processes_hold_no_more_than_the_pool(self, warden: Warden) -> None:
        for pool in self._pools(warden):
            for process in pool.processes:
                assert process.pid > 0
                assert 0 <= process.used_bytes <= pool.total_bytes


class EstimatorPluginContract(_PluginContract):
    """For plugins implementing ``estimate_model_size``.

    Override ``model`` with a model your estimator can size (it must: an estimator that never
    answers fails) and ``foreign_model`` with one it cannot (it must answer None, so that other
    estimators get their turn). More context never costs less.
    """

    context_lengths: tuple[int, ...] = (512, 4096, 32768)

    @pytest.fixture
    def model(self) -> ModelRef:
        pytest.fail("override the `model` fixture with a ModelRef your estimator can size")

    @pytest.fixture
    def foreign_model(self) -> ModelRef:
        return ModelRef(name="memwarden-conformance/no-such-model:0b")

    @pytest.fixture
    def options(self) -> dict[str, Any]:
        return {}

    def _estimate(
        self, warden: Warden, model: ModelRef, ctx: int, options: dict[str, Any]
    ) -> MemoryEstimate | None:
        result = warden.hook.estimate_model_size(
            model=model, context_tokens=ctx, options=options, config=warden.config
        )
        assert_no_plugin_failures(warden)
        return result

    def test_sizes_its_model_with_a_consistent_breakdown(
        self, warden: Warden, model: ModelRef, options: dict[str, Any]
    ) -> None:
        estimate = self._estimate(warden, model, 4096, options)
        assert isinstance(estimate, MemoryEstimate), (
            f"estimate_model_size must size the `model` fixture {model!r}; it answered {estimate!r}"
        )
        parts = (
            estimate.weights_bytes,
            estimate.kv_cache_bytes,
            estimate.compute_bytes,
            estimate.overhead_bytes,
        )
        assert all(part >= 0 for part in parts)
        assert estimate.total_bytes == sum(parts)
        assert estimate.weights_bytes > 0
        assert estimate.context_tokens == 4096
        assert estimate.estimator, "name your estimator in `estimator`"
        if estimate.per_pool:
            assert sum(share.bytes for share in estimate.per_pool) == estimate.total_bytes

    def test_more_context_never_costs_less(
        self, warden: Warden, model: ModelRef, options: dict[str, Any]
    ) -> None:
        totals = []
        for ctx in self.context_lengths:
            estimate = self._estimate(warden, model, ctx, options)
            assert isinstance(estimate, MemoryEstimate), (
                f"no estimate at {ctx} tokens: {estimate!r}"
            )
            assert estimate.context_tokens == ctx, f"asked for {ctx} tokens: {estimate!r}"
            totals.append(estimate.total_bytes)
        assert totals == sorted(totals), f"totals for {self.context_lengths}: {totals}"

    def test_answers_none_for_a_model_it_cannot_size(
        self, warden: Warden, foreign_model: ModelRef
    ) -> None:
        try:
            result = self._estimate(warden, foreign_model, 4096, {})
        except MemwardenError:
            return  # a clear, deliberate error is acceptable too
        assert result is None


# The share of the scripted pool used, for a default scene at each level.
SCENE_USED_PERCENT = {
    PressureLevel.WARNING: 75.0,
    PressureLevel.CRITICAL: 90.0,
    PressureLevel.EMERGENCY: 97.0,
}
# The protected scene: one model of each kind the core protects, and one it does not.
PROTECTED_MODELS = {
    "vital": ModelPolicy(critical=True),
    "kept": ModelPolicy(pinned=True),
}


def strategy_scene(
    plugin: object,
    config: Config,
    level: PressureLevel,
    *,
    protected: bool = False,
) -> Rig:
    """A rig for a strategy alone (no built-in strategy): a scripted 100 GiB pool at ``level``,
    an in-memory provider with three loaded models idle for 1 s, 10 min and 2 h (4096 tokens of
    context each) holding 1 GiB of releasable cache, and one managed session.

    ``protected``: the models are instead a critical one, a pinned one, one serving a request
    and one unprotected, all idle for 2 h.
    """
    if protected:
        config = attrs.evolve(config, models={**config.models, **PROTECTED_MODELS})
    rig = make_rig(config, builtin_strategies=False)
    rig.warden.plugins.register(plugin)
    now = time.time()
    if protected:
        scene = (("vital", 4, 7200), ("kept", 6, 7200), ("busy", 8, 7200), ("spare", 2, 7200))
    else:
        scene = (("small", 2, 1), ("medium", 8, 600), ("large", 20, 7200))
    for name, size_gib, idle_s in scene:
        rig.provider.add_model(name, size_gib * GIB)
        loaded = rig.provider.load(name, context_tokens=4096)
        rig.provider.set(loaded.instance_id or name, idle_since=now - idle_s)
        if name == "busy":
            rig.provider.set(loaded.instance_id or name, requests_in_flight=1)
    rig.provider.cache_bytes = GIB
    rig.device.set_used_percent(SCENE_USED_PERCENT[level])
    return rig


def _register_session(governor: Governor, rig: Rig) -> None:
    [first, *_] = rig.provider.loaded_models()
    window = ContextWindow(messages=(Message(role="user", content="x" * 100, tokens=8000),))
    governor.sessions.register(
        ManagedSession(
            session_id="conformance",
            model=first.name,
            provider=first.provider,
            window=window,
            kv_bytes_per_token=KV_BYTES_PER_TOKEN,
        )
    )


class StrategyPluginContract(_PluginContract):
    """For plugins implementing ``on_pressure(reading, context)``.

    Your strategy runs alone (no built-in strategy) in a rig from :mod:`memwarden.testing.fakes`
    (:func:`strategy_scene`): the *default scene* is a scripted pool at the level your strategy
    acts at, an in-memory provider with three loaded models, releasable caches and a managed
    session. Declare:

    - ``acts_at``: the lowest level your strategy proposes at (default CRITICAL);
    - ``acts_in_default_scene = False`` if proposing nothing there is right for your strategy
      (otherwise a strategy that proposes nothing fails: it would do nothing for users either).

    Every proposal must be executable (a known ``ActionKind`` with the fields it needs), and no
    proposal may target a critical model, or a pinned or busy one below EMERGENCY: the core
    would refuse them, and the contract flags a strategy that tries. Override ``rig`` or
    ``reading`` to set another scene.
    """

    acts_at: PressureLevel = PressureLevel.CRITICAL
    acts_in_default_scene: bool = True

    @pytest.fixture
    def level(self) -> PressureLevel:
        """The level of the default scene: ``acts_at`` unless overridden."""
        return self.acts_at

    @pytest.fixture
    def rig(self, plugin: object, config: Config, level: PressureLevel) -> Rig:
        return strategy_scene(plugin, config, level)

    @pytest.fixture
    def warden(self, rig: Rig) -> Warden:
        return rig.warden

    @pytest.fixture
    def governor(self, rig: Rig) -> Governor:
        governor = Governor(rig.warden)
        _register_session(governor, rig)
        return governor

    @pytest.fixture
    def reading(self, governor: Governor) -> PressureReading:
        reading = governor.sample()
        governor.observe(reading)
        return reading

    @pytest.fixture
    def context(self, governor: Governor, reading: PressureReading) -> StrategyContext:
        return governor.context(reading)

    def _propose(self, warden: Warden, reading: PressureReading, context: StrategyContext) -> list:
        results = warden.hook.on_pressure(reading=reading, context=context)
        assert_no_plugin_failures(warden)
        return [action for proposal in results if proposal for action in proposal]

    def test_an_iterator_yields_cheapest_first(
        self, warden: Warden, reading: PressureReading, context: StrategyContext
    ) -> None:
        for result in warden.hook.on_pressure(reading=reading, context=context):
            if result is None or isinstance(result, (list, tuple)):
                continue
            costs = [action.cost for action in result]
            assert costs == sorted(costs), (
                f"on_pressure returned an iterator whose costs are {costs}: an iterator must "
                "yield its proposals cheapest first (the core reads it only as far as it needs); "
                "return a list to have the core sort them"
            )

    def test_proposals_are_well_formed(
        self, warden: Warden, reading: PressureReading, context: StrategyContext
    ) -> None:
        for action in self._propose(warden, reading, context):
            assert isinstance(action, Action), f"proposals must be Action, not {action!r}"
            assert action.kind and action.strategy and action.description
            assert action.expected_freed_bytes >= 0
            assert action.cost >= 0

    def test_proposes_something_in_the_default_scene(
        self, warden: Warden, reading: PressureReading, context: StrategyContext
    ) -> None:
        if not self.acts_in_default_scene:
            pytest.skip("the strategy declares acts_in_default_scene = False")
        actions = self._propose(warden, reading, context)
        assert actions, (
            f"the strategy proposed nothing at {reading.level} with "
            f"{len(context.loaded_models)} loaded models; declare acts_at (the level it acts "
            "at) or acts_in_default_scene = False if that is right"
        )

    def test_every_proposed_action_is_executable(
        self, warden: Warden, reading: PressureReading, context: StrategyContext
    ) -> None:
        for action in self._propose(warden, reading, context):
            problem = action_problem(action, context)
            assert problem is None, f"{action!r} cannot be executed: {problem}"

    def test_actions_on_a_model_name_a_loaded_model_and_its_provider(
        self, warden: Warden, reading: PressureReading, context: StrategyContext
    ) -> None:
        loaded = {(m.provider, m.instance_id or m.name) for m in warden.loaded_models()}
        loaded |= {(m.provider, m.name) for m in warden.loaded_models()}
        for action in self._propose(warden, reading, context):
            if action.model is not None and action.kind != ActionKind.COMPRESS_CONTEXT:
                assert (action.provider, action.model) in loaded, action

    @pytest.mark.parametrize("scene_level", ["acts_at", "EMERGENCY"])
    def test_never_proposes_what_the_core_must_refuse(
        self, plugin: object, config: Config, level: PressureLevel, scene_level: str
    ) -> None:
        at = level if scene_level == "acts_at" else PressureLevel.EMERGENCY
        rig = strategy_scene(plugin, config, max(at, level), protected=True)
        governor = Governor(rig.warden)
        reading = governor.sample()
        governor.observe(reading)
        context = governor.context(reading)
        for action in self._propose(rig.warden, reading, context):
            if not isinstance(action, Action):
                continue
            refusal = governor.check(action, context)
            assert refusal is None, (
                f"{action.strategy} proposed {action.kind} of {refusal.model} at "
                f"{reading.level}, which the core refuses ({refusal.rule}): {refusal.reason}"
            )

    def test_proposes_only_the_kinds_it_declares(
        self,
        plugin: object,
        warden: Warden,
        reading: PressureReading,
        context: StrategyContext,
    ) -> None:
        # The governor asks only strategies that declare refuse-loads whether loads are
        # refused: a strategy that proposes a kind its PROPOSES leaves out would be skipped.
        declared = getattr(plugin, "PROPOSES", None)
        if declared is None:
            pytest.skip("the strategy declares no PROPOSES")
        for action in self._propose(warden, reading, context):
            assert action.kind in declared, (
                f"{action.strategy} proposed {action.kind}, which its PROPOSES "
                f"({', '.join(sorted(str(k) for k in declared))}) leaves out"
            )

    def test_proposing_changes_nothing(
        self, warden: Warden, reading: PressureReading, context: StrategyContext
    ) -> None:
        before = warden.loaded_models()
        self._propose(warden, reading, context)
        assert warden.loaded_models() == before, "on_pressure only proposes; the core executes"


class ProviderContract:
    """For a :class:`~memwarden.core.providers.Provider`.

    Override ``provider`` (pointed at a real or loopback server) and ``loadable_model`` (a model
    the provider offers, and can load). In the default scene the provider must answer: its status
    is reachable and it offers ``loadable_model``. Capabilities: ``supports_load = False`` for a
    read-only provider; ``may_be_unreachable = True`` for one whose runtime may not run where the
    tests do (then its status must say why, and the tests that need the runtime are skipped).
    """

    supports_load: bool = True
    may_be_unreachable: bool = False

    @pytest.fixture
    def provider(self) -> Provider:
        pytest.fail("override the `provider` fixture to return your Provider instance")

    @pytest.fixture
    def loadable_model(self) -> str:
        pytest.fail("override `loadable_model` with the name of a model the provider can load")

    def _require_load(self) -> None:
        if not self.supports_load:
            pytest.skip("the provider declares supports_load = False")

    def test_name_is_short_and_lower_case(self, provider: Provider) -> None:
        assert provider.name and provider.name == provider.name.lower()
        assert " " not in provider.name

    def _status(self, provider: Provider) -> ProviderStatus:
        status = provider.status()
        assert isinstance(status, ProviderStatus), (
            f"status() must return a ProviderStatus, not {type(status).__name__}"
        )
        return status

    def _require_runtime(self, provider: Provider) -> None:
        if self.may_be_unreachable and not self._status(provider).reachable:
            pytest.skip("the runtime is not reachable here (may_be_unreachable = True)")

    def test_status_names_the_provider(self, provider: Provider) -> None:
        status = self._status(provider)
        assert status.name == provider.name
        if not status.reachable:
            assert status.reason, "an unreachable provider says why"

    def test_status_answers_reachable_in_the_default_scene(self, provider: Provider) -> None:
        if self.may_be_unreachable:
            pytest.skip("the provider declares may_be_unreachable = True")
        status = self._status(provider)
        assert status.reachable, (
            f"status() says unreachable ({status.reason}); point the `provider` fixture at a "
            "running (or loopback) runtime, or declare may_be_unreachable = True"
        )

    def test_available_models_belong_to_the_provider(self, provider: Provider) -> None:
        self._require_runtime(provider)
        models = provider.available_models()
        assert isinstance(models, Sequence), (
            f"available_models() must return a list, not {type(models).__name__}"
        )
        assert all(isinstance(m, AvailableModel) for m in models), models
        assert all(m.provider == provider.name for m in models), models

    def test_offers_its_loadable_model(self, provider: Provider, loadable_model: str) -> None:
        self._require_runtime(provider)
        names = [m.name for m in provider.available_models()]
        assert any(same_model(name, loadable_model) for name in names), (
            f"available_models() does not list {loadable_model!r}: {names}"
        )

    def test_loaded_models_is_a_list_of_loaded_models(self, provider: Provider) -> None:
        self._require_runtime(provider)
        loaded = provider.loaded_models()
        assert isinstance(loaded, Sequence), (
            f"loaded_models() must return a list, not {type(loaded).__name__}"
        )
        assert all(isinstance(m, LoadedModel) and m.provider == provider.name for m in loaded)

    def test_load_then_unload(self, provider: Provider, loadable_model: str) -> None:
        self._require_load()
        self._require_runtime(provider)
        loaded = provider.load(loadable_model, context_tokens=512)
        assert isinstance(loaded, LoadedModel)
        assert loaded.provider == provider.name
        assert loaded.total_bytes > 0
        names = {m.name for m in provider.loaded_models()}
        assert loaded.name in names
        provider.unload(loaded.name)
        assert loaded.name not in {m.name for m in provider.loaded_models()}

    def test_unloading_an_unknown_model_is_model_not_found(self, provider: Provider) -> None:
        self._require_load()
        self._require_runtime(provider)
        with pytest.raises(ModelNotFound):
            provider.unload("memwarden-conformance/no-such-model:0b")


class CompressorPluginContract(_PluginContract):
    """For plugins implementing ``compress_context``.

    In the default scene (a pinned system prompt and twenty turns, to fit in a third of their
    tokens) the plugin must compress. Capability: ``may_decline = True`` for a compressor that
    handles only some windows (then override ``window`` with one it handles to test it).
    """

    may_decline: bool = False

    @pytest.fixture
    def window(self) -> ContextWindow:
        messages = [Message(role="system", content="You are terse.", tokens=5, pinned=True)]
        for turn in range(20):
            role = "user" if turn % 2 == 0 else "assistant"
            messages.append(Message(role=role, content=f"turn {turn} " * 20, tokens=40))
        return ContextWindow(messages=tuple(messages))

    def test_result_fits_the_budget_and_keeps_pinned_messages(
        self, warden: Warden, window: ContextWindow
    ) -> None:
        budget = window.tokens // 3
        from memwarden.context import CompressionContext, EstimateTokenizer

        context = CompressionContext(tokenizer=EstimateTokenizer(), config=warden.config)
        result = warden.hook.compress_context(window=window, budget_tokens=budget, context=context)
        assert_no_plugin_failures(warden)
        if result is None and self.may_decline:
            pytest.skip("the plugin declined this window (may_decline = True)")
        assert result is not None, (
            "compress_context returned None for the default window; compress it, or declare "
            "may_decline = True"
        )
        assert isinstance(result, ContextWindow), (
            f"return a ContextWindow, not {type(result).__name__}"
        )
        assert result.tokens <= budget, f"{result.tokens} tokens, over the budget of {budget}"
        pinned = [m for m in window.messages if m.pinned]
        assert all(m in result.messages for m in pinned), "pinned messages must be kept"


class PersistencePluginContract(_PluginContract):
    """For plugins implementing ``persist_state`` and ``read_state``: every record kind in
    ``hookspecs.PERSISTED_KINDS`` is accepted, and read back equal (compared through
    ``to_data``), newest last, within ``limit`` and ``since``.

    ``config`` puts ``[state] path`` in a fresh temporary folder for each test. Capability:
    ``supports_read = False`` for a plugin that only ships records elsewhere (a metrics exporter);
    the read-back tests are then skipped.
    """

    supports_read: bool = True

    @pytest.fixture
    def config(self, tmp_path: Any) -> Config:
        return Config(state=StateConfig(path=str(tmp_path / "state.db")))

    @pytest.fixture
    def records(self) -> dict[str, Any]:
        """Override to store other records; keep one of every kind."""
        return sample_records()

    def _store(self, warden: Warden, kind: str, record: Any) -> None:
        warden.hook.persist_state(kind=kind, record=record, config=warden.config)
        assert_no_plugin_failures(warden)

    def _read(self, warden: Warden, kind: str, since: float | None, limit: int) -> list[Any]:
        _declared(self, "supports_read", "it keeps no state it can read back")
        result = warden.hook.read_state(kind=kind, since=since, limit=limit, config=warden.config)
        assert_no_plugin_failures(warden)
        assert result is not None, (
            "read_state returned None: give back what persist_state stored, or declare "
            "supports_read = False"
        )
        assert isinstance(result, Sequence), f"return a list, not {type(result).__name__}"
        return list(result)

    def _events(self) -> list[Event]:
        return [
            Event(kind="level-changed", message=f"event {n}", data={"n": n}, at=1_000.0 + n)
            for n in range(3)
        ]

    def test_accepts_every_record_kind(self, warden: Warden, records: dict[str, Any]) -> None:
        for kind, record in records.items():
            self._store(warden, kind, record)

    def test_reads_back_every_record_kind_equal(
        self, warden: Warden, records: dict[str, Any]
    ) -> None:
        for kind, record in records.items():
            self._store(warden, kind, record)
        for kind, record in records.items():
            read = self._read(warden, kind, None, 10)
            assert [to_data(r) for r in read] == [to_data(record)], f"{kind} records differ"

    def test_reads_the_newest_records_last_within_the_limit(self, warden: Warden) -> None:
        events = self._events()
        for event in events:
            self._store(warden, "event", event)
        read = self._read(warden, "event", None, 2)
        assert [to_data(r) for r in read] == [to_data(e) for e in events[1:]]

    def test_reads_only_records_since_the_time_given(self, warden: Warden) -> None:
        events = self._events()
        for event in events:
            self._store(warden, "event", event)
        read = self._read(warden, "event", events[1].at, 10)
        assert [to_data(r) for r in read] == [to_data(e) for e in events[1:]]

    def test_reads_nothing_of_a_kind_never_stored(self, warden: Warden) -> None:
        self._store(warden, "event", self._events()[0])
        assert self._read(warden, "usage", None, 10) == []
