"""The degradation ladder, and making room before a load.

The governor turns pressure readings into actions. On a level change, or while a level above
NORMAL persists, it asks every strategy plugin (``on_pressure``) what it would do, orders the
proposals (:func:`order_actions`; read lazily, by cost, only as far as the action it takes),
takes the first, measures again, and repeats until the pressure is relieved or nothing is left
to try. ``ensure()`` plans evictions so that a model about to be loaded fits, or refuses with the
reason. Every level change and every action is an ``Event``
sent through ``warden.emit``. ``docs/governor.md`` describes the whole design.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from memwarden.core import admission, pressure
from memwarden.core.admission import PoolFit
from memwarden.core.config import GovernorConfig, ModelPolicy
from memwarden.core.errors import (
    InsufficientMemory,
    MemwardenError,
    ProviderError,
)
from memwarden.core.providers import (
    Provider,
    accepts_load_options,
    ignored_options,
    load_options,
)
from memwarden.core.sessions import SessionRegistry
from memwarden.core.strategy import (
    ModelKey,
    Refusal,
    StrategyContext,
    Usage,
    action_key,
    action_problem,
    action_target,
    model_key,
    policy_refusal,
    rankable,
    unload_action,
)
from memwarden.core.types import (
    Action,
    ActionKind,
    ActionRecord,
    DeviceSnapshot,
    Event,
    LoadedModel,
    MemoryEstimate,
    MemorySample,
    ModelRef,
    PoolKind,
    PressureLevel,
    PressureReading,
)

if TYPE_CHECKING:
    from memwarden.core.warden import Warden

# Action kinds the governor knows how to execute (ActionKind members, by their old names).
UNLOAD = ActionKind.UNLOAD
SHRINK_CONTEXT = ActionKind.SHRINK_CONTEXT
RELEASE_CACHE = ActionKind.RELEASE_CACHE
COMPRESS_CONTEXT = ActionKind.COMPRESS_CONTEXT
REFUSE_LOADS = ActionKind.REFUSE_LOADS

# The context ensure() sizes a model for when the caller does not say.
DEFAULT_CONTEXT_TOKENS = 4096
# How fast recent use stops protecting a model from eviction (seconds for a factor e).
RECENCY_DECAY_S = 600.0
# How long the governor remembers a model's priority and use after it was last seen loaded.
FORGET_AFTER_S = 3600.0


@attrs.frozen
class ActionOutcome:
    """One action the ladder or ensure() took, and what the next measurement showed."""

    action: Action
    ok: bool
    error: str | None = None
    # Managed bytes before minus after (what the runtimes report), when measured.
    measured_freed_bytes: int | None = None
    level_after: PressureLevel | None = None
    # The core's policy forbade the action (``error`` says why); nothing was done.
    refused: bool = False
    # A shrink-context reload: the model as the runtime reloaded it.
    reloaded: LoadedModel | None = None


@attrs.frozen
class RoundReport:
    """One run of the ladder."""

    trigger: PressureLevel
    outcomes: tuple[ActionOutcome, ...]
    relieved: bool
    level_after: PressureLevel
    # The bytes each pool (and the managed-memory cap) needed freed when the round began.
    needed_bytes: Mapping[str, int] = attrs.field(factory=dict)


@attrs.frozen
class LoadPlan:
    """What admission found for a load (``plan_load``, ``ensure()``, ``memwarden fit``): whether
    the models fit, and the evictions that make them fit."""

    models: tuple[ModelRef, ...]
    priority: int
    estimates: tuple[MemoryEstimate, ...]
    # Bytes short per pool id, under the managed cap (pressure.MANAGED_CAP) and in model slots
    # ("max_loaded_models"), before any eviction.
    needed: Mapping[str, int]
    evictions: tuple[Action, ...]
    fits: bool
    reason: str | None = None
    evictable_bytes: int = 0
    # Where the models' bytes go, each pool's budget (admission's placement).
    placement: tuple[PoolFit, ...] = ()
    # The loaded models the evictions unload, and why the others may not be evicted.
    evicted: tuple[LoadedModel, ...] = ()
    not_evictable: tuple[str, ...] = ()
    # Why loads are refused now, when they are (a load must then evict what it takes).
    refusing: str | None = None


@attrs.frozen
class LoadOutcome:
    """What ``Governor.admit_and_load`` did: the plan it carried out, and the loaded model."""

    loaded: LoadedModel
    plan: LoadPlan


@attrs.define
class ShrinkRecord:
    """A model the ladder shrank: the context to restore once pressure has ended."""

    name: str
    provider: str
    original_context_tokens: int
    shrunk_at: float
    # How long the level must stay NORMAL before the context is restored.
    hold_s: float


def order_actions(actions: Sequence[Action], needed: Mapping[str, int]) -> list[Action]:
    """The ladder's order: cheapest first; at equal cost an action whose expected bytes cover
    the deficit before one that does not; then the one that frees more.

    The deficit of an action is what its pool needs (``needed[action.pool_id]``), or the largest
    need of all when the action names no pool. Actions that expect to free nothing are dropped,
    except refusing new loads, which frees nothing but keeps things from getting worse.
    """
    overall = max(needed.values(), default=0)

    def sort_key(action: Action) -> tuple[float, bool, int, str, str]:
        # Inlined (deficit, action_target): the ladder orders thousands of proposals a round.
        pool = action.pool_id
        deficit = needed[pool] if pool is not None and pool in needed else overall
        freed = action.expected_freed_bytes
        return (
            action.cost,
            freed < deficit,  # does not cover the deficit
            -freed,
            action.strategy,
            action.instance_id or action.model or "",
        )

    useful = [a for a in actions if a.expected_freed_bytes > 0 or a.kind == REFUSE_LOADS]
    return sorted(useful, key=sort_key)


def _cost(action: Action) -> float:
    return action.cost


def merge_by_cost(streams: Sequence[Iterator[Action]]) -> Iterator[list[Action]]:
    """The actions of several streams, each in order of cost, in groups of equal cost from the
    cheapest up; a group lists its actions stream by stream, in each stream's order.

    A stream is read only up to its first action dearer than the group being built, so the
    caller that stops early leaves the rest unbuilt. :func:`order_actions` orders within a group
    exactly as it would have ordered everything at once (cost is its first key).
    """
    heads: list[tuple[float, int, Action]] = []
    for index, stream in enumerate(streams):
        first = next(stream, None)
        if first is not None:
            heads.append((first.cost, index, first))
    heapq.heapify(heads)
    while heads:
        cost = heads[0][0]
        group: list[Action] = []
        while heads and heads[0][0] == cost:
            _, index, action = heapq.heappop(heads)
            group.append(action)
            for action in streams[index]:
                if action.cost != cost:
                    heapq.heappush(heads, (action.cost, index, action))
                    break
                group.append(action)
        yield group


def eviction_cost(
    model: LoadedModel,
    policy: ModelPolicy,
    usage: Usage | None,
    *,
    now: float,
    lowest_priority: int,
    largest_bytes: int,
) -> float:
    """What evicting this model costs users, from 10 up; the lowest is evicted first.

    ``10 * (priority - lowest priority)`` dominates, so a higher priority is always kept over a
    lower one. Within a priority: recency (up to 5, decaying over ``RECENCY_DECAY_S``), frequency
    of use seen by the governor (up to 5) and size (up to 2 for the smallest, since evicting a
    big model frees more per user hurt). A request in flight adds 20.
    """
    # No Usage() for a model the governor has not seen used: thousands are costed per round.
    uses = usage.uses if usage is not None else 0
    last_used = (usage.last_used_at if usage is not None else None) or model.idle_since
    busy = model.requests_in_flight > 0
    recency = 0.0
    if busy:
        recency = 5.0
    elif last_used is not None:
        elapsed = now - last_used
        recency = 5.0 * math.exp(-elapsed / RECENCY_DECAY_S) if elapsed > 0 else 5.0
    frequency = 5.0 * uses / (uses + 5)
    size = 2.0 * (1.0 - model.total_bytes / largest_bytes) if largest_bytes > 0 else 0.0
    in_flight = 20.0 if busy else 0.0
    priority = 10.0 * (policy.priority - lowest_priority)
    return round(10.0 + priority + recency + frequency + size + in_flight, 4)


class Governor:
    """The ladder and load planning for one warden; create it once per warden. Strategies do
    not see it: each proposal round hands them a :class:`StrategyContext`."""

    def __init__(self, warden: Warden, *, clock: Callable[[], float] = time.time) -> None:
        self.warden = warden
        self.clock = clock
        # One governor per warden: the first one made is the one `warden.governor` gives, so a
        # program that builds its own (with its own clock, say) and the CLI share its state.
        if getattr(warden, "_governor", None) is None:
            warden._governor = self
        from memwarden.context.memory import memory_path

        # Managed sessions' windows are kept beside the state file (`memwarden context show`).
        self.sessions = SessionRegistry(memory_path(warden.config))
        self.refusing_reason: str | None = None
        # False: observe and report levels, but take no action (`memwarden watch --dry-run`).
        self.acting = True
        self.level = PressureLevel.NORMAL
        self.last_reading: PressureReading | None = None
        self.last_round: RoundReport | None = None
        self._loaded: list[LoadedModel] | None = None
        self._loaded_at = float("-inf")  # time.monotonic() of the last providers' listing
        self._previous: dict[str, PressureLevel] = {}
        self._priorities: dict[ModelKey, int] = {}
        self._policy_cache: dict[tuple[int, int], ModelPolicy] = {}
        self._usage: dict[ModelKey, Usage] = {}
        self._last_round_at: float | None = None
        self._lock = threading.RLock()
        # Contexts the ladder shrank, to restore once the level has stayed NORMAL long enough.
        self._shrunk: dict[ModelKey, ShrinkRecord] = {}
        self._restored_at: dict[ModelKey, float] = {}
        self._normal_since: float | None = None
        # Rejected and refused proposals already reported (one event each until the next round).
        self._reported: set[tuple[str, str, str, str | None]] = set()
        #: Called with no arguments whenever a load or unload made through memwarden changed the
        #: loaded models; the monitor wakes on it and measures at once instead of waiting for
        #: its interval (or, for the list of loaded models, for ``models_refresh_s``).
        self.change_listeners: list[Callable[[], None]] = []
        # The on_pressure subset that may refuse loads, by the registered implementations.
        self._refusal_hooks: dict[tuple[int, ...], Any] = {}
        # admission.candidates per reading (plan_load); _generation counts the changes to the
        # loaded models, priorities and use that make a kept answer stale.
        self._candidates: dict[
            tuple[Any, ...],
            tuple[PressureReading, admission.Candidates, dict[tuple[int, str], Action]],
        ] = {}
        self._generation = 0
        # warden.estimate answers (or errors) per (model, context), for the latest reading.
        self._estimates: tuple[
            PressureReading | None, dict[tuple[ModelRef, int], MemoryEstimate | MemwardenError]
        ] = (None, {})

    @property
    def config(self) -> GovernorConfig:
        return self.warden.config.governor

    # -- what strategies read --------------------------------------------------------------

    def loaded_models(self) -> list[LoadedModel]:
        """The models seen at the latest sample (one provider round-trip per sample)."""
        if self._loaded is None:
            self._loaded = self.warden.loaded_models()
        return list(self._loaded)

    def policy(self, model: LoadedModel) -> ModelPolicy:
        """``[models."<name>"]`` (by instance id, then name), with the priority ensure() or
        load() was given for this instance taking precedence."""
        policy = self.warden.config.model_policy(model.instance_id, model.name)
        priority = self._priorities.get(model_key(model))
        if priority is None or priority == policy.priority:
            return policy
        # Cached: the ladder asks for every loaded model's policy several times per round.
        cache_key = (id(policy), priority)
        evolved = self._policy_cache.get(cache_key)
        if evolved is None:
            evolved = self._policy_cache[cache_key] = attrs.evolve(policy, priority=priority)
        return evolved

    def models_changed(
        self, *, loaded: Sequence[LoadedModel] = (), unloaded: Sequence[LoadedModel] = ()
    ) -> None:
        """Note loads and unloads made through memwarden the moment they happen: the list of
        loaded models is updated without asking the runtimes, and every change listener (the
        monitor) is called, so a load that crosses the managed-memory cap is acted on at once."""
        with self._lock:
            self._generation += 1
            if self._loaded is not None and (loaded or unloaded):
                gone = {model_key(m) for m in unloaded}
                self._loaded = [m for m in self._loaded if model_key(m) not in gone]
                self._loaded.extend(loaded)
        for listener in list(self.change_listeners):
            listener()

    def set_priority(self, model: LoadedModel, priority: int) -> None:
        self._priorities[model_key(model)] = priority
        self._generation += 1

    def usage(self, model: LoadedModel) -> Usage | None:
        return self._usage.get(model_key(model))

    def record_use(self, model: LoadedModel) -> None:
        """Count a request to a model (for callers that route requests through memwarden)."""
        usage = self._usage.setdefault(model_key(model), Usage())
        usage.uses += 1
        usage.last_used_at = self.clock()
        self._generation += 1

    def eviction_costs(
        self,
        models: Sequence[LoadedModel],
        now: float | None = None,
        *,
        policy_of: Callable[[LoadedModel], ModelPolicy] | None = None,
    ) -> dict[ModelKey, float]:
        """:func:`eviction_cost` of each model, relative to the others in ``models``.
        ``policy_of``: where to read each model's policy (a strategy context's cached answers),
        else :meth:`policy`."""
        if not models:
            return {}
        now = self.clock() if now is None else now
        policy_of = policy_of or self.policy
        policies = [policy_of(m) for m in models]
        lowest = min(p.priority for p in policies)
        largest = max(m.total_bytes for m in models)
        usage = self._usage
        costs = {}
        for m, p in zip(models, policies, strict=True):
            key = model_key(m)
            costs[key] = eviction_cost(
                m, p, usage.get(key), now=now, lowest_priority=lowest, largest_bytes=largest
            )
        return costs

    def refusing(self, reading: PressureReading | None = None) -> str | None:
        """Why new loads are refused right now, or None. Set by a taken refuse-loads action, or
        proposed by a strategy for the current reading (so a dry run agrees with the ladder)."""
        if self.refusing_reason is not None:
            return self.refusing_reason
        reading = reading or self.last_reading
        if reading is None or reading.level < PressureLevel.CRITICAL:
            return None
        # Only the strategies that may propose refusing loads are asked (a strategy module
        # declares what it proposes in PROPOSES); the answer is the same as the whole ladder's,
        # at the cost of one strategy instead of every strategy sizing every loaded model.
        for action in self.proposals(reading, hook=self._refusal_hook()):
            if action.kind == REFUSE_LOADS:
                return action.description
        return None

    def _refusal_hook(self) -> Any:
        """``on_pressure`` without the strategies whose ``PROPOSES`` leaves out refuse-loads."""
        hook = self.warden.hook.on_pressure
        impls = hook.get_hookimpls()
        key = tuple(id(impl.plugin) for impl in impls)
        cached = self._refusal_hooks.get(key)
        if cached is not None:
            return cached
        others = [
            impl.plugin
            for impl in impls
            if REFUSE_LOADS not in getattr(impl.plugin, "PROPOSES", (REFUSE_LOADS,))
        ]
        subset = (
            self.warden.plugins.pm.subset_hook_caller("on_pressure", others) if others else hook
        )
        self._refusal_hooks = {key: subset}
        return subset

    def context(self, reading: PressureReading) -> StrategyContext:
        """What strategies see for ``reading``: built once per proposal round, and by tests
        that call ``on_pressure`` directly."""
        loaded = tuple(self.loaded_models())
        warden = self.warden

        # Sized once per (model, context) for this reading: shrink-context asks for every
        # loaded model at two contexts, many instances share one model, and the ladder builds a
        # context for its proposals and another for the check before it acts.
        with self._lock:
            if self._estimates[0] is not reading:
                self._estimates = (reading, {})
            estimates = self._estimates[1]

        def estimate(model: ModelRef, context_tokens: int) -> MemoryEstimate:
            key = (model, context_tokens)
            found = estimates.get(key)
            if found is None:
                try:
                    found = warden.estimate(model, context_tokens)
                except MemwardenError as exc:
                    found = exc
                estimates[key] = found
            if isinstance(found, MemwardenError):
                raise found
            return found

        def releasable() -> dict[str, int]:
            found = {}
            for name, provider in warden.providers().items():
                try:
                    found[name] = int(provider.releasable_cache_bytes())
                except Exception:  # an unreachable runtime has nothing to release
                    found[name] = 0
            return found

        def costs(models: Sequence[LoadedModel]) -> dict[ModelKey, float]:
            # The context's policies: asked once per model for the whole round.
            return self.eviction_costs(models, policy_of=context.policy)

        context = StrategyContext(
            reading=reading,
            now=self.clock(),
            loaded_models=loaded,
            sessions=tuple(self.sessions.all()),
            refusing_loads=self.refusing_reason,
            config=warden.config,
            policy_of=self.policy,
            usage_of=self.usage,
            costs_of=costs,
            estimate_of=estimate,
            releasable_of=releasable,
            # With nothing in flight through memwarden (the usual case), what the runtime
            # reports is the whole answer: no lock and no scan per model.
            in_flight_of=self._in_flight if warden.usage.serving() else None,
        )
        return context

    def _in_flight(self, model: LoadedModel) -> int:
        return model.requests_in_flight + self.warden.usage.in_flight(model.name, model.provider)

    def check(self, action: Action, context: StrategyContext) -> Refusal | None:
        """Whether the core's policy forbids ``action`` now (:func:`policy_refusal`): critical
        models are never unloaded or shrunk; pinned models and models serving a request only in
        an EMERGENCY. Applies to every strategy's proposals and to ensure()'s evictions."""
        return policy_refusal(action, context)

    # -- sampling and levels ---------------------------------------------------------------

    def sample(self, *, models_max_age_s: float = 0.0) -> PressureReading:
        """Measure every pool and every loaded model, and evaluate with hysteresis.

        ``models_max_age_s``: reuse the providers' list of loaded models if it is younger than
        this. Pools are always measured afresh; asking every runtime what it has loaded is the
        expensive part of a sample, and while all is well it rarely changes.
        """
        snapshot = self.warden.snapshot()
        now = time.monotonic()
        with self._lock:
            cached = self._loaded if now - self._loaded_at < models_max_age_s else None
        if cached is None:
            loaded = self.warden.loaded_models()
            self._loaded_at = now
        else:
            loaded = list(cached)
        return self._evaluate(snapshot, loaded)

    def _evaluate(self, snapshot: DeviceSnapshot, loaded: list[LoadedModel]) -> PressureReading:
        with self._lock:
            self._loaded = loaded
            self._observe_usage(loaded)
            return pressure.evaluate(
                snapshot,
                self.warden.config.pressure,
                managed_bytes=pressure.managed_bytes(loaded),
                previous=self._previous,
            )

    def _observe_usage(self, loaded: list[LoadedModel]) -> None:
        # A model counts as used when a request starts or its idle clock restarts.
        self._generation += 1
        now = self.clock()
        present = set()
        for model in loaded:
            key = model_key(model)
            present.add(key)
            usage = self._usage.get(key)
            if usage is None:
                self._usage[key] = Usage(last_idle_since=model.idle_since, last_seen_at=now)
                continue
            busy = model.requests_in_flight > 0
            if busy and not usage.was_busy:
                usage.uses += 1
            if busy:
                usage.last_used_at = now
            elif model.idle_since is not None and model.idle_since != usage.last_idle_since:
                if not usage.was_busy:
                    usage.uses += 1
                usage.last_used_at = model.idle_since
            usage.was_busy = busy
            usage.last_idle_since = model.idle_since
            usage.last_seen_at = now
        # A provider that missed one sample (a timeout) must not lose its models' priorities and
        # history: forget a model only once it has been gone for FORGET_AFTER_S.
        if len(self._usage) > len(present):
            gone = [
                k
                for k, u in self._usage.items()
                if k not in present and now - u.last_seen_at > FORGET_AFTER_S
            ]
            for key in gone:
                del self._usage[key]
                self._priorities.pop(key, None)
                self._shrunk.pop(key, None)
                self._restored_at.pop(key, None)

    def observe(self, reading: PressureReading) -> bool:
        """Take a reading as the current state; emit an event when the level changed. Every
        reading is persisted as a "sample" (the memory history)."""
        self.warden.persist("sample", MemorySample.of(reading))
        with self._lock:
            before = self.level
            self._previous = pressure.previous_levels(reading)
            self.last_reading = reading
            self.level = reading.level
            if reading.level != PressureLevel.NORMAL:
                self._normal_since = None
            elif self._normal_since is None:
                self._normal_since = self.clock()
            if reading.level < PressureLevel.CRITICAL and self.refusing_reason is not None:
                self.refusing_reason = None
                self.warden.emit(
                    Event(
                        kind="loads-allowed",
                        message=f"pressure fell to {reading.level}: new loads are allowed again",
                        level=reading.level,
                    )
                )
            if reading.level == before:
                return False
        self.warden.emit(
            Event(
                kind="level-changed",
                message=f"memory pressure {before} -> {reading.level}"
                + (f": {'; '.join(reading.reasons)}" if reading.reasons else ""),
                level=reading.level,
                data={
                    "from": before.name,
                    "to": reading.level.name,
                    "managed_bytes": reading.managed_bytes,
                    **{f"pool:{p.pool_id}": p.level.name for p in reading.pools},
                    **{f"used_percent:{p.pool_id}": p.used_percent for p in reading.pools},
                },
            )
        )
        self.warden.persist("reading", reading)
        return True

    # -- the ladder ------------------------------------------------------------------------

    def step(self, reading: PressureReading | None = None) -> RoundReport | None:
        """Observe a reading (sampling one if none is given) and run the ladder when the level
        changed to one above NORMAL, or stayed there for ``retrigger_interval_s``."""
        reading = reading if reading is not None else self.sample()
        changed = self.observe(reading)
        if reading.level == PressureLevel.NORMAL:
            if self._shrunk and self.acting:
                self.restore_one(reading)
            return None
        now = self.clock()
        interval = self.config.retrigger_interval_s
        if any(p.stalled for p in reading.pools):
            # PSI reports a 10 s average: after an action, stalls read high for a while even
            # once they have stopped. Acting again sooner would evict for a past stall.
            interval = max(interval, pressure.PSI_WINDOW_S)
        due = changed or self._last_round_at is None or now - self._last_round_at >= interval
        if not due:
            return None
        return self.relieve(reading)

    def propose(
        self,
        reading: PressureReading,
        needed: Mapping[str, int] | None = None,
        *,
        context: StrategyContext | None = None,
        hook: Any = None,
    ) -> list[Action]:
        """Every strategy's proposals for this reading that the core would take, in the order
        the ladder takes them: all of :meth:`proposals` (``memwarden plan`` shows them all).

        A proposal that no executor could carry out (:func:`action_problem`) is dropped with an
        ``action-rejected`` event, and one the core's policy forbids now (:meth:`check`) with an
        ``action-refused`` event; both name the strategy. ``hook``: ask only these strategies
        (a subset of ``on_pressure``), as :meth:`refusing` does.
        """
        return list(self.proposals(reading, needed, context=context, hook=hook))

    def proposals(
        self,
        reading: PressureReading,
        needed: Mapping[str, int] | None = None,
        *,
        context: StrategyContext | None = None,
        hook: Any = None,
    ) -> Iterator[Action]:
        """:meth:`propose`'s proposals one at a time, produced only as far as they are read.

        The ladder reads up to the action it takes next, so a strategy that yields its
        proposals cheapest first (``on_pressure`` returning an iterator) builds and the core
        checks only those up to the cheapest cost that any strategy offers, not one per loaded
        model. Every proposal yielded has passed :func:`action_problem` and :meth:`check`.
        """
        if needed is None:
            needed = pressure.relief_needed(reading, self.warden.config.pressure)
        context = context if context is not None else self.context(reading)
        hook = hook if hook is not None else self.warden.hook.on_pressure
        level = reading.level
        # Lists (the original contract) are checked whole as they come, in the strategies'
        # order; iterators only as far as they are read.
        streams: list[Iterator[Action]] = []
        checked: set[int] = set()
        for result in hook(reading=reading, context=context):
            if result is None:
                continue
            if isinstance(result, (list, tuple)):
                accepted = [a for a in result if self._acceptable(a, context, level)]
                accepted.sort(key=_cost)
                checked.update(id(a) for a in accepted)
                streams.append(iter(accepted))
            else:
                streams.append(self._ranked(result, context, level))
        for group in merge_by_cost(streams):
            accepted = [a for a in group if id(a) in checked or self._acceptable(a, context, level)]
            yield from order_actions(accepted, needed)

    def _acceptable(self, action: object, context: StrategyContext, level: PressureLevel) -> bool:
        """Whether the core would take a proposal now; reports why not as an event."""
        problem = action_problem(action, context)
        if problem is not None:
            self._report_rejected(action, problem, level)
            return False
        assert isinstance(action, Action)  # action_problem said so
        refusal = self.check(action, context)
        if refusal is not None:
            self._report_refused(action, refusal, level)
            return False
        return True

    def _ranked(
        self, result: object, context: StrategyContext, level: PressureLevel
    ) -> Iterator[Action]:
        """A strategy's iterator of proposals, checked to come cheapest first: a proposal
        cheaper than one it already yielded cannot take its place any more, so it is dropped
        with an ``action-rejected`` event. (Only what ordering needs is checked here;
        :meth:`_acceptable` checks the rest when the action is read.)"""
        if not isinstance(result, Iterable):
            self._report_rejected(
                result,
                "on_pressure must return a list of Actions, an iterator of Actions "
                f"(cheapest first) or None, not {type(result).__name__}",
                level,
            )
            return
        previous = float("-inf")
        for action in result:
            if not rankable(action):
                self._report_rejected(action, action_problem(action, context) or "", level)
                continue
            if action.cost < previous:
                self._report_rejected(
                    action,
                    f"cost {action.cost} came after cost {previous}: a strategy that returns "
                    "an iterator must yield its proposals cheapest first (or return a list)",
                    level,
                )
                continue
            previous = action.cost
            yield action

    def _report_rejected(self, action: object, problem: str, level: PressureLevel) -> None:
        strategy = getattr(action, "strategy", None) or "a strategy"
        kind = str(getattr(action, "kind", type(action).__name__))
        key = ("rejected", strategy, kind, getattr(action, "description", None))
        if key in self._reported:
            return
        self._reported.add(key)
        self.warden.emit(
            Event(
                kind="action-rejected",
                message=f"{strategy}: proposal rejected: {problem}",
                level=level,
                data={
                    "strategy": strategy,
                    "action": kind,
                    "model": getattr(action, "model", None),
                    "provider": getattr(action, "provider", None),
                    "problem": problem,
                },
            )
        )

    def _report_refused(self, action: Action, refusal: Refusal, level: PressureLevel) -> None:
        key = ("refused", action.strategy, str(action.kind), f"{refusal.model}:{refusal.rule}")
        if key in self._reported:
            return
        self._reported.add(key)
        self.warden.emit(
            Event(
                kind="action-refused",
                message=f"{action.strategy}: refused to {action.kind} {refusal.model}: "
                f"{refusal.reason}",
                level=level,
                data={
                    "strategy": action.strategy,
                    "action": str(action.kind),
                    "model": refusal.model,
                    "provider": action.provider,
                    "rule": refusal.rule,
                    "reason": refusal.reason,
                },
            )
        )

    def relieve(self, reading: PressureReading) -> RoundReport:
        """One ladder round: take the first proposal, measure, re-propose, until the level that
        triggered the round is left (relieved), nothing is left to propose, or
        ``max_actions_per_round`` actions were taken."""
        config_pressure = self.warden.config.pressure
        needed_at_start = pressure.relief_needed(reading, config_pressure)
        if not self.acting:
            self._last_round_at = self.clock()
            return RoundReport(
                trigger=reading.level,
                outcomes=(),
                relieved=False,
                level_after=reading.level,
                needed_bytes=needed_at_start,
            )
        attempted: set[tuple[str, str, str | None, str | None]] = set()
        # Models an action of this round targeted: none is shrunk and then evicted (or the
        # other way round) in the same round.
        touched: set[ModelKey] = set()
        self._reported.clear()
        outcomes: list[ActionOutcome] = []
        expected_total = 0
        current = reading
        relieved = exhausted = False
        while len(outcomes) < self.config.max_actions_per_round:
            needed = pressure.relief_needed(current, config_pressure)
            # Read only up to the first proposal this round has not tried or touched yet.
            action = next(
                (
                    a
                    for a in self.proposals(current, needed)
                    if _identity(a) not in attempted and action_key(a) not in touched
                ),
                None,
            )
            if action is None:
                exhausted = True
                break
            attempted.add(_identity(action))
            target = action_key(action)
            if target is not None and action.kind in (UNLOAD, SHRINK_CONTEXT):
                touched.add(target)
            outcome, current = self._take(action, current)
            if outcome.reloaded is not None:
                touched.add(model_key(outcome.reloaded))
            outcomes.append(outcome)
            if outcome.ok:
                expected_total += _expected_in_figure(outcome)
            # Relieved: the level that triggered this round is left. What remains of a lower
            # level is the next round's work, with that level's (gentler) strategies.
            if current.level < reading.level or current.level == PressureLevel.NORMAL:
                relieved = True
                break
            # Runtimes give memory back with a delay: once the actions taken are expected to
            # cover what was needed, the next round judges from a fresh sample.
            if needed_at_start and expected_total >= max(needed_at_start.values()):
                break
        self._last_round_at = self.clock()
        report = RoundReport(
            trigger=reading.level,
            outcomes=tuple(outcomes),
            relieved=relieved,
            level_after=current.level,
            needed_bytes=needed_at_start,
        )
        self.last_round = report
        if exhausted and not relieved:
            self.warden.emit(
                Event(
                    kind="ladder-exhausted",
                    message=f"pressure is {current.level} and no strategy proposes anything more",
                    level=current.level,
                    data=dict(pressure.relief_needed(current, config_pressure)),
                )
            )
        return report

    def _held(self, loaded: Sequence[LoadedModel], action: Action, reading: PressureReading) -> int:
        """What the loaded models hold in the action's pool's figure (admission.loaded_bytes):
        resident in system RAM, committed in GPU and unified memory."""
        snapshot = reading.snapshot
        pool_id = action.pool_id or admission.home_pool(snapshot)
        pool = snapshot.pool(pool_id) if pool_id is not None else None
        kind = pool.kind if pool is not None else PoolKind.SYSTEM
        return sum(admission.loaded_bytes(m, kind, self.warden.config) for m in loaded)

    def _take(
        self, action: Action, before: PressureReading
    ) -> tuple[ActionOutcome, PressureReading]:
        refusal = self.check(action, self.context(before))
        if refusal is not None:
            self._report_refused(action, refusal, before.level)
            return ActionOutcome(
                action=action, ok=False, error=refusal.reason, refused=True
            ), before
        error: str | None = None
        reloaded: LoadedModel | None = None
        held_before = self._held(self.loaded_models(), action, before)
        try:
            reloaded = self.execute(action)
        except MemwardenError as exc:
            error = exc.message
        except Exception as exc:
            # A provider bug must not stop the governor; it is reported as a failed action.
            error = f"{type(exc).__name__}: {exc}"
        after = self.sample()
        self.observe(after)
        # Judged in the figure that is real for the action's pool: in system RAM what the
        # processes hold (an eviction of a mostly untouched compute buffer frees little there).
        freed = held_before - self._held(self.loaded_models(), action, after)
        outcome = ActionOutcome(
            action=action,
            ok=error is None,
            error=error,
            measured_freed_bytes=freed,
            level_after=after.level,
            reloaded=reloaded,
        )
        data = {
            "action": str(action.kind),
            "strategy": action.strategy,
            "model": action.model,
            "instance": action.instance_id,
            "provider": action.provider,
            "pool_id": action.pool_id,
            "cost": action.cost,
            "expected_freed_bytes": action.expected_freed_bytes,
            "measured_freed_bytes": freed,
            "level_after": after.level.name,
        }
        self.warden.persist(
            "action",
            ActionRecord(
                at=self.clock(),
                kind=action.kind,
                strategy=action.strategy,
                description=action.description,
                ok=error is None,
                expected_freed_bytes=action.expected_freed_bytes,
                measured_freed_bytes=freed,
                level_before=before.level,
                level_after=after.level,
                model=action.model,
                provider=action.provider,
                pool_id=action.pool_id,
                error=error,
            ),
        )
        if error is None:
            self.warden.emit(
                Event(
                    kind="action-taken",
                    message=f"{action.strategy}: {action.description}",
                    level=after.level,
                    data=data,
                )
            )
        else:
            self.warden.emit(
                Event(
                    kind="action-failed",
                    message=f"{action.strategy}: {action.description} failed: {error}",
                    level=after.level,
                    data={**data, "error": error},
                )
            )
        return outcome, after

    def execute(self, action: Action) -> LoadedModel | None:
        """Carry out one action through its provider (or the governor's own state), without
        the policy check (:meth:`check`; the ladder and ensure() check first). Returns the
        reloaded model for shrink-context."""
        if action.kind == REFUSE_LOADS:
            self.refusing_reason = action.description
            return None
        if action.kind == COMPRESS_CONTEXT:
            self._compress(action)
            return None
        provider = self._provider_of(action)
        if action.kind == UNLOAD:
            provider.unload(action_target(action) or "")
            self.models_changed()
        elif action.kind == SHRINK_CONTEXT:
            reloaded = self._shrink(provider, action)
            self.models_changed()
            return reloaded
        elif action.kind == RELEASE_CACHE:
            provider.release_caches()
        else:
            raise ProviderError(
                f"action {action.kind!r} proposed by {action.strategy!r} has no executor",
                hint="strategies may propose only the ActionKind kinds: "
                + ", ".join(k.value for k in ActionKind),
            )
        return None

    def _provider_of(self, action: Action) -> Provider:
        providers = self.warden.providers()
        if action.provider is None or action.provider not in providers:
            raise ProviderError(
                f"{action.strategy}: action on {action.model!r} names provider "
                f"{action.provider!r}, which is not registered",
                hint=f"registered providers: {', '.join(sorted(providers)) or 'none'}",
            )
        return providers[action.provider]

    def _shrink(self, provider: Provider, action: Action) -> LoadedModel:
        if action.context_tokens is None:
            raise ProviderError(f"{action.strategy}: shrink-context names no context_tokens")
        old = next(
            (
                m
                for m in self.loaded_models()
                if model_key(m) == (provider.name, action_target(action))
            ),
            None,
        )
        reloaded = self._reload(
            provider, action_target(action) or "", action.model or "", action.context_tokens, old
        )
        original = action.from_context_tokens or (old.context_tokens if old else None)
        if original is not None and original > action.context_tokens:
            self._note_shrunk(old, reloaded, original)
        return reloaded

    def _reload(
        self,
        provider: Provider,
        target: str,
        name: str,
        context_tokens: int,
        old: LoadedModel | None,
    ) -> LoadedModel:
        provider.unload(target)
        reloaded = provider.load(name, context_tokens=context_tokens)
        if old is not None:
            priority = self._priorities.get(model_key(old))
            if priority is not None:
                self._priorities[model_key(reloaded)] = priority
        self._generation += 1
        return reloaded

    def _compress(self, action: Action) -> None:
        session_id = action.session_id
        budget = action.budget_tokens
        if session_id is None or budget is None:
            raise ProviderError(
                f"{action.strategy}: compress-context needs session_id and budget_tokens"
            )
        session = self.sessions.get(session_id)
        if session is None:
            raise ProviderError(f"session {session_id!r} is no longer registered")
        from memwarden.context import ContextTooLarge, compress, tokenizer_for

        tokenizer = tokenizer_for(session.model, self.warden.config)
        try:
            done = compress(
                self.warden, session.window, budget, tokenizer=tokenizer, session_id=session_id
            )
        except ContextTooLarge as exc:
            raise ProviderError(
                f"no compress_context plugin could fit session {session_id!r} in {budget} "
                f"tokens: {exc}",
                hint="enable a context-compression plugin, or disable compress-context",
            ) from None
        self.sessions.replace_window(session_id, done.window)

    # -- restoring shrunk contexts -------------------------------------------------------

    def _note_shrunk(self, old: LoadedModel | None, reloaded: LoadedModel, original: int) -> None:
        now = self.clock()
        hold = self.config.restore_after_s
        previous = self._shrunk.pop(model_key(old), None) if old is not None else None
        restored_at = self._restored_at.pop(model_key(old), None) if old is not None else None
        if restored_at is not None and now - restored_at < hold:
            # Restored, then shrunk again within the hold time: wait twice as long next time.
            hold = 2 * hold
        if previous is not None:
            original = max(original, previous.original_context_tokens)
            hold = max(hold, previous.hold_s)
        self._shrunk[model_key(reloaded)] = ShrinkRecord(
            name=reloaded.name,
            provider=reloaded.provider,
            original_context_tokens=original,
            shrunk_at=now,
            hold_s=hold,
        )

    def shrunk_contexts(self) -> dict[ModelKey, int]:
        """The models the ladder shrank and not yet restored, with the context each had."""
        return {k: r.original_context_tokens for k, r in self._shrunk.items()}

    def restore_one(self, reading: PressureReading) -> LoadedModel | None:
        """Reload one shrunk model with the context it had, once the level has stayed NORMAL
        for ``[governor] restore_after_s`` (twice that for a model that was restored and had to
        be shrunk again within that time), it serves no request, and the bigger context fits
        with the safety margin without raising the level. Highest priority first; one model
        per call. Emits ``context-restored`` (or ``context-restore-failed``)."""
        if self._normal_since is None or reading.level != PressureLevel.NORMAL:
            return None
        now = self.clock()
        normal_for = now - self._normal_since
        loaded = {model_key(m): m for m in self.loaded_models()}
        due = [
            (key, record)
            for key, record in self._shrunk.items()
            if key in loaded and normal_for >= record.hold_s
        ]
        due.sort(key=lambda kr: (-self.policy(loaded[kr[0]]).priority, kr[1].shrunk_at))
        providers = self.warden.providers()
        for key, record in due:
            model = loaded[key]
            original = record.original_context_tokens
            if model.context_tokens is None or model.context_tokens >= original:
                del self._shrunk[key]
                continue
            provider = providers.get(model.provider)
            if provider is None or self._in_flight(model) > 0:
                continue
            ref = ModelRef(name=model.name, provider=model.provider)
            try:
                bigger = self.warden.estimate(ref, original)
                smaller = self.warden.estimate(ref, model.context_tokens)
            except MemwardenError:
                continue
            if not self._restore_fits(reading, bigger, smaller):
                continue
            del self._shrunk[key]
            label = model.instance_id or model.name
            data: dict[str, str | int | float | bool | None] = {
                "model": model.name,
                "instance": model.instance_id,
                "provider": model.provider,
                "from_context_tokens": model.context_tokens,
                "context_tokens": original,
                "normal_for_s": round(normal_for, 3),
            }
            try:
                reloaded = self._reload(
                    provider, model.instance_id or model.name, model.name, original, model
                )
            except Exception as exc:
                error = exc.message if isinstance(exc, MemwardenError) else f"{exc}"
                self.warden.emit(
                    Event(
                        kind="context-restore-failed",
                        message=f"could not restore {label} to {original} tokens: {error}",
                        level=reading.level,
                        data={**data, "error": error},
                    )
                )
                self._loaded_at = float("-inf")
                return None
            self._restored_at[model_key(reloaded)] = now
            if self._loaded is not None:
                self._loaded = [reloaded if model_key(m) == key else m for m in self._loaded]
            self._loaded_at = float("-inf")
            self.warden.emit(
                Event(
                    kind="context-restored",
                    message=f"restored {label} to {original} tokens of context (from "
                    f"{model.context_tokens}) after {normal_for:.0f} s at NORMAL",
                    level=reading.level,
                    data={**data, "instance": reloaded.instance_id},
                )
            )
            return reloaded
        return None

    def _restore_fits(
        self, reading: PressureReading, bigger: MemoryEstimate, smaller: MemoryEstimate
    ) -> bool:
        # What the bigger context adds, per pool: it must fit above the safety margin and keep
        # the pool (and the managed cap) below the level at which the ladder would act again.
        snapshot = reading.snapshot
        extra: dict[str, int] = {}
        if bigger.per_pool:
            for share in bigger.per_pool:
                extra[share.pool_id] = extra.get(share.pool_id, 0) + share.bytes
            for share in smaller.per_pool:
                extra[share.pool_id] = extra.get(share.pool_id, 0) - share.bytes
        else:
            home = admission.home_pool(snapshot)
            if home is not None:
                extra[home] = bigger.total_bytes - smaller.total_bytes
        config = self.warden.config
        margin = config.budget.safety_margin_percent / 100.0
        calm = (config.pressure.warning_percent - config.pressure.hysteresis_percent) / 100.0
        for pool_id, more in extra.items():
            pool = snapshot.pool(pool_id)
            if pool is None or pool.total_bytes <= 0:
                return False
            left = pool.available_bytes - more
            if left < int(pool.total_bytes * margin):
                return False
            if 1.0 - left / pool.total_bytes >= calm:
                return False
        cap = config.pressure.max_managed_memory
        added = bigger.total_bytes - smaller.total_bytes
        return cap is None or reading.managed_bytes + added < int(cap) * calm

    # -- making room before a load ---------------------------------------------------------

    def plan_load(
        self,
        models: Sequence[ModelRef | str],
        priority: int | None = None,
        *,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        options: Mapping[str, Any] | None = None,
        reading: PressureReading | None = None,
        pool_id: str | None = None,
    ) -> LoadPlan:
        """Whether ``models`` may load and which loaded models to evict first, evicting nothing.

        This is :func:`memwarden.core.admission.admit` on the current reading, the loaded models,
        their policies and eviction costs: the one rule ``memwarden fit``, ``ensure()``,
        ``load()`` and ``generate`` share. ``priority`` defaults to the configured one
        (``[models."<name>"] priority``, else 0). While loads are refused (CRITICAL), only
        lower-priority models are evicted, and they must free what the load takes. ``pool_id``
        forces whole models into one pool (``memwarden fit --pool``).
        """
        refs = tuple(m if isinstance(m, ModelRef) else ModelRef(name=m) for m in models)
        if priority is None:
            priority = admission.configured_priority(self.warden.config, [r.name for r in refs])
        if reading is None:
            reading = self.sample()
            self.observe(reading)
        loaded = self.loaded_models()
        estimates = tuple(
            self.warden.estimate(ref, context_tokens, **dict(options or {})) for ref in refs
        )
        refused = self.refusing(reading)

        # Each model's policy once per plan: candidates() and the costs both ask for it.
        policies: dict[int, ModelPolicy] = {}

        def policy_of(model: LoadedModel) -> ModelPolicy:
            found = policies.get(id(model))
            if found is None:
                found = policies[id(model)] = self.policy(model)
            return found

        def costs(candidates: Sequence[LoadedModel]) -> list[float]:
            found = self.eviction_costs(candidates, policy_of=policy_of)
            return [found[model_key(m)] for m in candidates]

        refusing = None if refused is None else f"memory pressure is {reading.level}: {refused}"
        # Who may be evicted and at what cost changes only with the reading, the loaded models,
        # their priorities and use: kept per reading, so that planning among many loaded models
        # does not price every one of them again for each load.
        key = (
            id(reading),
            id(self._loaded),
            self._generation,
            id(self.warden.config),
            priority,
            refusing is not None,
        )
        with self._lock:
            cached = self._candidates.get(key)
        if cached is None or cached[0] is not reading:
            actions: dict[tuple[int, str], Action] = {}
            evictable = admission.candidates(
                loaded,
                reading.snapshot,
                policy_of=policy_of,
                costs=costs,
                priority=priority,
                refusing=refusing,
                config=self.warden.config,
            )
            with self._lock:
                if len(self._candidates) >= 8:
                    self._candidates.clear()
                self._candidates[key] = (reading, evictable, actions)
        else:
            _, evictable, actions = cached
        answer = admission.admit(
            estimates,
            reading.snapshot,
            loaded,
            policy_of=policy_of,
            costs=costs,
            config=self.warden.config,
            priority=priority,
            pool_id=pool_id,
            refusing=refusing,
            names=_names(refs),
            evictable=evictable,
        )
        why = f"make room for {_names(refs)}"
        evictions = []
        for eviction in answer.evictions:
            # The kept candidates' unload actions, made once per reading and load.
            action = actions.get((id(eviction), why))
            if action is None:
                action = unload_action(eviction.model, "ensure", eviction.cost, why)
                actions[(id(eviction), why)] = action
            evictions.append(action)
        return LoadPlan(
            models=refs,
            priority=priority,
            estimates=estimates,
            needed=answer.need.short,
            evictions=tuple(evictions),
            fits=answer.fits,
            reason=answer.reason,
            evictable_bytes=answer.evictable_bytes,
            placement=answer.need.placement,
            evicted=tuple(e.model for e in answer.evictions),
            not_evictable=answer.not_evictable,
            refusing=answer.need.refusing,
        )

    def ensure(
        self,
        models: Sequence[ModelRef | str],
        priority: int | None = None,
        *,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        options: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> LoadPlan:
        """Make room for ``models``: evict what :meth:`plan_load` chose, or raise
        :class:`InsufficientMemory` naming what is needed and what could be freed."""
        refs = tuple(m if isinstance(m, ModelRef) else ModelRef(name=m) for m in models)
        plan = self.plan_load(refs, priority, context_tokens=context_tokens, options=options)
        if not plan.fits:
            self._refuse(refs, plan.reason or "it does not fit")
        if dry_run:
            return plan
        current = self.last_reading
        assert current is not None  # plan_load sampled
        for action in plan.evictions:
            outcome, current = self._take(action, current)
            if outcome.refused:
                # The model became protected (pinned, busy) between the plan and the eviction.
                self._refuse(refs, f"evicting {action.model!r} was refused: {outcome.error}")
            if not outcome.ok:
                raise ProviderError(
                    f"could not make room for {_names(refs)}: unloading {action.model!r} "
                    f"failed: {outcome.error}",
                    hint="check the provider with `memwarden status`",
                )
        return plan

    def _refuse(self, refs: Sequence[ModelRef], reason: str) -> None:
        message = f"refused to load {_names(refs)}: {reason}"
        self.warden.emit(
            Event(
                kind="load-refused",
                message=message,
                level=self.level,
                data={"models": _names(refs)},
            )
        )
        raise InsufficientMemory(
            message,
            hint="free memory, lower the context, raise this load's priority, or unpin models "
            "(`memwarden plan` shows what the ladder would do)",
        )

    def load(
        self,
        model: ModelRef | str,
        priority: int | None = None,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        """``ensure()`` then load through the model's provider, remembering its priority
        (the configured one when none is given).

        ``options`` are estimate_model_size options: admission sizes the load with them, and
        their runtime options (``runtime``, ``batch_tokens``, ``kv_type``...;
        :data:`memwarden.core.providers.LOAD_OPTION_KEYS`) go to ``Provider.load`` so that the
        runtime loads what was budgeted."""
        return self.admit_and_load(
            model,
            priority,
            context_tokens=context_tokens,
            keep_alive_s=keep_alive_s,
            options=options,
        ).loaded

    def admit_and_load(
        self,
        model: ModelRef | str,
        priority: int | None = None,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LoadOutcome:
        """:meth:`load`, also returning the plan it carried out (what was evicted), for callers
        that report it (``memwarden load``)."""
        ref = model if isinstance(model, ModelRef) else ModelRef(name=model)
        provider = self._provider_for(ref)
        if ref.provider is None:
            ref = attrs.evolve(ref, provider=provider.name)
        plan = self.ensure(
            [ref],
            priority,
            context_tokens=context_tokens or DEFAULT_CONTEXT_TOKENS,
            options=options,
        )
        priority = plan.priority
        # The runtime loads with the options admission sized it with.
        runtime = load_options(options)
        if runtime and accepts_load_options(provider):
            loaded = provider.load(
                ref.name, context_tokens=context_tokens, keep_alive_s=keep_alive_s, options=runtime
            )
        else:
            if runtime:
                ignored_options(provider.name, runtime, ())
            loaded = provider.load(
                ref.name, context_tokens=context_tokens, keep_alive_s=keep_alive_s
            )
        self._priorities[model_key(loaded)] = priority
        self.models_changed(loaded=[loaded])
        evicted = [m.instance_id or m.name for m in plan.evicted]
        self.warden.emit(
            Event(
                kind="model-loaded",
                message=f"loaded {loaded.name} ({loaded.provider}) with priority {priority}"
                + (f", after evicting {', '.join(evicted)}" if evicted else ""),
                level=self.level,
                data={
                    "model": loaded.name,
                    "provider": loaded.provider,
                    "instance": loaded.instance_id,
                    "total_bytes": loaded.total_bytes,
                    "priority": priority,
                    "evicted": evicted,
                },
            )
        )
        return LoadOutcome(loaded=loaded, plan=plan)

    def _provider_for(self, ref: ModelRef) -> Provider:
        return self.warden.resolve(ref.path or ref.name, ref.provider)


# The key of LoadPlan.needed for the limit on concurrently loaded models.
MAX_LOADED = admission.MAX_LOADED


def _expected_in_figure(outcome: ActionOutcome) -> int:
    """What a taken action is expected to free, in the figure of its pool: an unload frees
    what its process held (measured from the loaded-model list at once, resident in system
    RAM), not the committed figure strategies propose with; other actions, their estimate."""
    expected = outcome.action.expected_freed_bytes
    if outcome.action.kind == UNLOAD and outcome.measured_freed_bytes is not None:
        return max(0, min(expected, outcome.measured_freed_bytes))
    return expected


def _identity(action: Action) -> tuple[str, str, str | None, str | None]:
    return (action.kind, action.strategy, action.provider, action_target(action))


def _names(refs: Sequence[ModelRef]) -> str:
    return ", ".join(repr(r.name) for r in refs)
