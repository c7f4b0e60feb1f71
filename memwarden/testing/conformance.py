"""The plugin conformance suite: prove a plugin honours memwarden's contracts with one pytest run.

Subclass the contract for what your plugin does, give the fixtures that point it at your plugin,
and run ``pytest``::

    from memwarden.testing import DevicePluginContract

    class TestMyGpu(DevicePluginContract):
        @pytest.fixture
        def plugin(self):
            import memwarden_mygpu
            return memwarden_mygpu

Optional capabilities are class attributes (``supports_load = False`` on a read-only provider,
say); tests for a capability you do not declare are skipped with the reason, not failed.

Every contract registers your plugin through memwarden's real plugin manager, so a hook that
raises shows up as a failure here exactly as users would see it in ``memwarden plugins``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from memwarden.core.config import Config, ModelPolicy
from memwarden.core.errors import MemwardenError, ModelNotFound
from memwarden.core.governor import Governor
from memwarden.core.plugins import Plugins
from memwarden.core.providers import Provider
from memwarden.core.sessions import ManagedSession
from memwarden.core.strategy import StrategyContext, action_problem
from memwarden.core.types import (
    Action,
    ActionKind,
    AvailableModel,
    ContextWindow,
    DeviceSnapshot,
    DeviceUnavailable,
    Event,
    LoadedModel,
    MemoryEstimate,
    MemoryPool,
    Message,
    ModelRef,
    PoolKind,
    PressureLevel,
    PressureReading,
    ProviderStatus,
)
from memwarden.core.warden import Warden
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
    """For plugins implementing ``detect_device``."""

    def _detect(self, warden: Warden) -> list[Any]:
        results = warden.hook.detect_device(config=warden.config)
        assert_no_plugin_failures(warden)
        return results

    def test_detect_device_returns_pools_or_says_why_not(self, warden: Warden) -> None:
        for result in self._detect(warden):
            if isinstance(result, DeviceUnavailable):
                assert result.reason, "DeviceUnavailable must say why"
                assert result.source
            else:
                assert isinstance(result, Sequence), "return a list of MemoryPool"
                assert all(isinstance(pool, MemoryPool) for pool in result)

    def test_pools_have_consistent_sizes(self, warden: Warden) -> None:
        for pool in warden.snapshot().pools:
            assert pool.total_bytes > 0, f"{pool.id}: total_bytes must be positive"
            assert 0 <= pool.available_bytes <= pool.total_bytes, pool
            assert 0 <= pool.used_bytes <= pool.total_bytes, pool
            assert isinstance(pool.kind, PoolKind)
            assert pool.source, f"{pool.id}: name the plugin in `source`"

    def test_pool_ids_are_unique_and_stable(self, warden: Warden) -> None:
        first = [pool.id for pool in warden.snapshot().pools]
        second = [pool.id for pool in warden.snapshot().pools]
        assert len(first) == len(set(first)), f"duplicate pool ids: {first}"
        assert first == second, "pool ids must not change between snapshots"

    def test_processes_hold_no_more_than_the_pool(self, warden: Warden) -> None:
        for pool in warden.snapshot().pools:
            for process in pool.processes:
                assert process.pid > 0
                assert 0 <= process.used_bytes <= pool.total_bytes


class EstimatorPluginContract(_PluginContract):
    """For plugins implementing ``estimate_model_size``.

    Override ``model`` with a model your estimator can size and ``foreign_model`` with one it
    cannot (it must answer None, so that other estimators get their turn).
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
        assert isinstance(estimate, MemoryEstimate)
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
            assert estimate is not None
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

    def test_proposing_changes_nothing(
        self, warden: Warden, reading: PressureReading, context: StrategyContext
    ) -> None:
        before = warden.loaded_models()
        self._propose(warden, reading, context)
        assert warden.loaded_models() == before, "on_pressure only proposes; the core executes"


class ProviderContract:
    """For a :class:`~memwarden.core.providers.Provider`.

    Override ``provider`` (pointed at a real or loopback server) and ``loadable_model``. Declare
    ``supports_load = False`` for a read-only provider.
    """

    supports_load: bool = True

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

    def test_status_names_the_provider(self, provider: Provider) -> None:
        status = provider.status()
        assert isinstance(status, ProviderStatus)
        assert status.name == provider.name
        if not status.reachable:
            assert status.reason, "an unreachable provider says why"

    def test_available_models_belong_to_the_provider(self, provider: Provider) -> None:
        models = provider.available_models()
        assert all(isinstance(m, AvailableModel) for m in models)
        assert all(m.provider == provider.name for m in models)

    def test_load_then_unload(self, provider: Provider, loadable_model: str) -> None:
        self._require_load()
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
        with pytest.raises(ModelNotFound):
            provider.unload("memwarden-conformance/no-such-model:0b")


class CompressorPluginContract(_PluginContract):
    """For plugins implementing ``compress_context``."""

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
        result = warden.hook.compress_context(window=window, budget_tokens=budget)
        assert_no_plugin_failures(warden)
        if result is None:
            pytest.skip("the plugin declined this window")
        assert result.tokens <= budget
        pinned = [m for m in window.messages if m.pinned]
        assert all(m in result.messages for m in pinned)


class PersistencePluginContract(_PluginContract):
    """For plugins implementing ``persist_state``: every record kind is accepted."""

    def test_accepts_every_record_kind(self, warden: Warden) -> None:
        snapshot = DeviceSnapshot(pools=())
        reading = PressureReading(level=PressureLevel.NORMAL, pools=(), snapshot=snapshot)
        records = {
            "event": Event(kind="level-changed", message="conformance", level=PressureLevel.NORMAL),
            "reading": reading,
        }
        for kind, record in records.items():
            warden.hook.persist_state(kind=kind, record=record, config=warden.config)
        assert_no_plugin_failures(warden)
