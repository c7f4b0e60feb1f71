"""What a strategy plugin sees, and the rules every proposal must pass.

The governor builds one :class:`StrategyContext` per proposal round and passes it to every
``on_pressure`` hook. A strategy reads the context and returns :class:`~memwarden.core.types.
Action` proposals (a list, or an iterator that yields them cheapest first, which the core reads
only as far as it needs); it never acts itself, and never needs the governor or a registry. The
context is read-only: its data are frozen attrs classes and tuples, and its methods only compute.

Before the governor takes an action it checks it twice: when it is proposed
(:func:`action_problem`: a kind some executor handles, with the fields that kind needs) and just
before it executes it (:func:`policy_refusal`: pinned, critical and in-flight models). A
proposal that fails either check is dropped and reported as an event naming the strategy.
``docs/plugins.md`` (``on_pressure``) and ``docs/governor.md`` describe both.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping, Sequence

import attrs

from memwarden.core.config import Config, ModelPolicy
from memwarden.core.sessions import ManagedSession
from memwarden.core.types import (
    Action,
    ActionKind,
    LoadedModel,
    MemoryEstimate,
    ModelRef,
    PressureLevel,
    PressureReading,
)
from memwarden.core.units import format_bytes

# Identifies one loaded instance: (provider, instance id or, without one, the model name).
ModelKey = tuple[str, str]


def model_key(model: LoadedModel) -> ModelKey:
    """Identifies one loaded instance: two instances of one model differ in ``instance_id``."""
    return (model.provider, model.instance_id or model.name)


def action_target(action: Action) -> str | None:
    """What to hand to ``Provider.unload``: the instance id when there is one, else the name."""
    return action.instance_id or action.model


def action_key(action: Action) -> ModelKey | None:
    """The :func:`model_key` of the loaded model an action targets, or None."""
    target = action_target(action)
    if action.provider is None or target is None:
        return None
    return (action.provider, target)


@attrs.define
class Usage:
    """What the governor saw of one loaded model's use: requests it noticed and when."""

    uses: int = 0
    last_used_at: float | None = None
    last_idle_since: float | None = None
    was_busy: bool = False
    last_seen_at: float = 0.0

    def copy(self) -> Usage:
        """A copy (what strategies see); six times cheaper than ``attrs.evolve``, which counts
        when a strategy reads every one of thousands of loaded models."""
        return Usage(
            self.uses, self.last_used_at, self.last_idle_since, self.was_busy, self.last_seen_at
        )


@attrs.frozen(slots=False)
class StrategyContext:
    """Everything a strategy may read to decide what to propose, at one reading.

    Stable for plugins: the attributes and methods documented here. Build one with
    ``Governor(warden).context(reading)`` (in tests); the governor builds its own for each
    proposal round.
    """

    # The pressure level per pool and overall, with the snapshot behind it.
    reading: PressureReading
    # The governor's clock (epoch seconds) when the context was built; compare idle times to it.
    now: float
    # The models loaded when the reading was taken, across every provider.
    loaded_models: tuple[LoadedModel, ...]
    # The managed sessions (conversations) whose context may be compressed.
    sessions: tuple[ManagedSession, ...]
    # Why new loads are refused now (a refuse-loads action was taken), or None.
    refusing_loads: str | None
    # The effective configuration ([governor], [pressure], [models."<name>"], ...).
    config: Config
    _policy_of: Callable[[LoadedModel], ModelPolicy] = attrs.field(alias="policy_of")
    _usage_of: Callable[[LoadedModel], Usage | None] = attrs.field(alias="usage_of")
    _costs_of: Callable[[Sequence[LoadedModel]], dict[ModelKey, float]] = attrs.field(
        alias="costs_of"
    )
    _estimate_of: Callable[[ModelRef, int], MemoryEstimate] = attrs.field(alias="estimate_of")
    _releasable_of: Callable[[], Mapping[str, int]] = attrs.field(alias="releasable_of")
    # None: nothing is in flight through memwarden, so the runtime's count is the answer.
    _in_flight_of: Callable[[LoadedModel], int] | None = attrs.field(alias="in_flight_of")

    @property
    def level(self) -> PressureLevel:
        """The overall pressure level of :attr:`reading`."""
        return self.reading.level

    def policy(self, model: LoadedModel) -> ModelPolicy:
        """The model's ``[models."<name>"]`` policy (by instance id, then name), with the
        priority it was loaded with through ``ensure()``/``load()`` taking precedence."""
        key = model_key(model)
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies[key] = self._policy_of(model)
        return policy

    @functools.cached_property
    def policies(self) -> tuple[ModelPolicy, ...]:
        """:meth:`policy` of every loaded model, in the order of :attr:`loaded_models`: looked
        up once per context, for strategies that read every model's policy."""
        # policy() inlined: this runs for every loaded model of every round.
        cache = self._policies
        policy_of = self._policy_of
        policies = []
        for model in self.loaded_models:
            key = model_key(model)
            policy = cache.get(key)
            if policy is None:
                policy = cache[key] = policy_of(model)
            policies.append(policy)
        return tuple(policies)

    def usage(self, model: LoadedModel) -> Usage:
        """What the governor observed of the model's use (a copy; zeros when nothing yet)."""
        usage = self._usage_of(model)
        return usage.copy() if usage is not None else Usage()

    def last_used(self, model: LoadedModel) -> float | None:
        """When the model was last used (epoch seconds): the later of ``idle_since`` as its
        runtime reports it and the governor's own record of its last request, or None when
        neither is known. Cheaper than :meth:`usage`, which copies."""
        usage = self._usage_of(model)
        seen = usage.last_used_at if usage is not None else None
        idle_since = model.idle_since
        if not idle_since:
            return seen or None
        return max(idle_since, seen) if seen else idle_since

    def requests_in_flight(self, model: LoadedModel) -> int:
        """Requests the model serves now: what its runtime reports plus calls made through
        memwarden. The core refuses to unload or shrink a busy model below EMERGENCY."""
        if self._in_flight_of is None:
            return model.requests_in_flight
        key = model_key(model)
        count = self._in_flight.get(key)
        if count is None:
            count = self._in_flight[key] = self._in_flight_of(model)
        return count

    # Answers per model for the life of this context: strategies ask for each model's policy
    # several times per round, and the core once more for each proposal.
    @functools.cached_property
    def _policies(self) -> dict[ModelKey, ModelPolicy]:
        return {}

    @functools.cached_property
    def _in_flight(self) -> dict[ModelKey, int]:
        return {}

    def eviction_costs(self, models: Sequence[LoadedModel]) -> dict[ModelKey, float]:
        """:func:`memwarden.core.governor.eviction_cost` of each model, relative to the others
        in ``models`` (priority, recency, frequency, size, requests in flight), by
        :func:`model_key`."""
        return self._costs_of(models)

    def eviction_cost(self, model: LoadedModel) -> float:
        """The model's eviction cost relative to every loaded model (10 and up)."""
        return self._all_costs[model_key(model)]

    @functools.cached_property
    def _all_costs(self) -> dict[ModelKey, float]:
        return self._costs_of(self.loaded_models)

    @functools.cached_property
    def releasable_cache_bytes(self) -> Mapping[str, int]:
        """Bytes each provider could give back by dropping caches it keeps only for reuse
        (``Provider.releasable_cache_bytes()``), by provider name; asked once per context."""
        return dict(self._releasable_of())

    def estimate(self, model: ModelRef, context_tokens: int) -> MemoryEstimate:
        """What ``model`` takes at ``context_tokens`` (``warden.estimate``); raises a
        :class:`~memwarden.core.errors.MemwardenError` when no estimator can size it."""
        return self._estimate_of(model, context_tokens)

    def find(self, action: Action) -> list[LoadedModel]:
        """The loaded models an action targets: its instance, or every instance of its model
        on its provider."""
        return list(self._find(action))

    def _find(self, action: Action) -> Sequence[LoadedModel]:
        # find() without the copy, for the core's checks of every proposal.
        if action.provider is None:
            return ()
        name = action.instance_id if action.instance_id is not None else action.model
        if name is None:
            return ()
        return self._by_key.get((action.provider, name), ())

    @functools.cached_property
    def _by_key(self) -> dict[ModelKey, list[LoadedModel]]:
        # Each model under its instance id and its name, so that finding is O(1) per action.
        index: dict[ModelKey, list[LoadedModel]] = {}
        for model in self.loaded_models:
            names = {model.name, model.instance_id or model.name}
            for name in names:
                index.setdefault((model.provider, name), []).append(model)
        return index


def unload_action(model: LoadedModel, strategy: str, cost: float, why: str) -> Action:
    """An ``unload`` action for a loaded model, as strategies and ensure() propose it."""
    label = model.instance_id or model.name
    return Action(
        kind=ActionKind.UNLOAD,
        strategy=strategy,
        description=f"unload {label} ({model.provider}, {format_bytes(model.total_bytes)}) "
        f"to {why}",
        expected_freed_bytes=model.total_bytes,
        cost=cost,
        model=model.name,
        provider=model.provider,
        instance_id=model.instance_id,
    )


def action_problem(action: object, context: StrategyContext) -> str | None:
    """Why the core could not execute a proposal, or None when it could.

    A proposal must be an :class:`Action` of a known :class:`ActionKind` with the fields its kind
    needs: ``unload`` a loaded model and its provider; ``shrink-context`` that too, and
    ``context_tokens`` below the model's current context; ``release-cache`` a provider;
    ``compress-context`` a registered ``session_id`` and a positive ``budget_tokens``.
    """
    if not isinstance(action, Action):
        return f"a proposal must be an Action, not {type(action).__name__}"
    if not isinstance(action.kind, ActionKind):
        known = ", ".join(k.value for k in ActionKind)
        return f"no executor handles action kind {action.kind!r} (known: {known})"
    if not _is_number(action.cost) or not _is_number(action.expected_freed_bytes):
        return (
            f"cost and expected_freed_bytes must be numbers, not {action.cost!r} and "
            f"{action.expected_freed_bytes!r}"
        )
    if action.expected_freed_bytes < 0 or action.cost < 0:
        return "expected_freed_bytes and cost must not be negative"
    kind = action.kind
    if kind in (ActionKind.UNLOAD, ActionKind.SHRINK_CONTEXT):
        if action.model is None or action.provider is None:
            return f"a {kind} action needs model and provider"
        targets = context._find(action)
        if not targets:
            return f"{action_target(action)!r} is not loaded in provider {action.provider!r}"
        if kind == ActionKind.SHRINK_CONTEXT:
            if action.context_tokens is None or action.context_tokens < 1:
                return "a shrink-context action needs context_tokens (1 or more)"
            for model in targets:
                current = model.context_tokens
                if current is not None and action.context_tokens >= current:
                    return (
                        f"shrink-context to {action.context_tokens} tokens does not shrink "
                        f"{model.instance_id or model.name} (now {current} tokens)"
                    )
    elif kind == ActionKind.RELEASE_CACHE:
        if action.provider is None:
            return "a release-cache action needs provider"
    elif kind == ActionKind.COMPRESS_CONTEXT:
        if action.session_id is None or action.budget_tokens is None:
            return "a compress-context action needs session_id and budget_tokens"
        if action.budget_tokens < 1:
            return "a compress-context action needs budget_tokens of 1 or more"
        if action.session_id not in {s.session_id for s in context.sessions}:
            return f"session {action.session_id!r} is not registered"
    return None


def _is_number(value: object) -> bool:
    # NaN is not: it would compare false with everything and scramble the ladder's order.
    return isinstance(value, numbers.Real) and value == value


def rankable(action: object) -> bool:
    """Whether the core can order a proposal by its cost (an Action with a numeric cost)."""
    return isinstance(action, Action) and _is_number(action.cost)


@attrs.frozen
class Refusal:
    """Why the core will not take an action: the rule (``critical``, ``pinned``,
    ``in-flight``), the model it protects, and a sentence."""

    rule: str
    model: str
    reason: str

    def __str__(self) -> str:
        return self.reason


def policy_refusal(action: Action, context: StrategyContext) -> Refusal | None:
    """Whether the core's policy forbids an action at the context's level.

    ``unload`` and ``shrink-context`` never touch a ``critical`` model; below EMERGENCY they do
    not touch a ``pinned`` model or one serving a request. Other kinds are not restricted.
    """
    if action.kind not in (ActionKind.UNLOAD, ActionKind.SHRINK_CONTEXT):
        return None
    targets = context._find(action)
    below_emergency = context.level < PressureLevel.EMERGENCY
    if not targets and action.model is not None:
        # Not (or no longer) listed: judge by the configuration alone.
        policy = context.config.model_policy(action.instance_id, action.model)
        return _refusal(action, action_target(action) or action.model, policy, 0, context.level)
    for model in targets:
        policy = context.policy(model)
        # Requests in flight matter only below EMERGENCY (and are asked for only then).
        in_flight = context.requests_in_flight(model) if below_emergency else 0
        refusal = _refusal(
            action, model.instance_id or model.name, policy, in_flight, context.level
        )
        if refusal is not None:
            return refusal
    return None


def _refusal(
    action: Action, label: str, policy: ModelPolicy, in_flight: int, level: PressureLevel
) -> Refusal | None:
    # policy_refusal's rules for one target model.
    if not (policy.critical or policy.pinned or in_flight > 0):
        return None
    below_emergency = level < PressureLevel.EMERGENCY
    verb = "unloaded" if action.kind == ActionKind.UNLOAD else "shrunk"
    if policy.critical:
        return Refusal("critical", label, f"{label} is critical: it is never {verb}, at any level")
    if policy.pinned and below_emergency:
        return Refusal(
            "pinned",
            label,
            f"{label} is pinned: it is {verb} only in an EMERGENCY (now {level})",
        )
    if in_flight > 0 and below_emergency:
        return Refusal(
            "in-flight",
            label,
            f"{label} is serving {in_flight} request(s): it is {verb} only in an "
            f"EMERGENCY (now {level})",
        )
    return None
