"""Admission: may these models be loaded now, and what has to make room for them first.

One function answers it for every way in: ``memwarden fit``, ``Governor.ensure()`` and
``Governor.load()``, ``memwarden load``, ``memwarden generate`` and ``Warden.generate`` (and, later,
the HTTP front door). Two rules would drift apart; one cannot. :func:`admit` runs three steps, each
a function of its own so that each can be read and tested alone:

1. :func:`need`: where the models' bytes go (**placement**) and what is short. An estimate with
   ``per_pool`` shares goes where it says; otherwise the whole model goes to the accelerator pool
   (GPU or unified) with the most room that fits, else to system RAM. Every pool keeps
   ``[budget] safety_margin_percent`` of its total free; the managed models stay within
   ``[pressure] max_managed_memory``; at most ``[governor] max_loaded_models`` are loaded.
2. :func:`choose`: which evictable models to evict, cheapest eviction cost first, then dropping,
   costliest first, any eviction the others already make unnecessary.
3. :func:`refusal`: when even evicting every evictable model is not enough, the sentence that
   names the model, what it needs, what there is, what could be freed, and what is not evictable
   and why.

Admission is pure: it reads a snapshot and the loaded models and decides. The governor carries
out the evictions (``Governor.ensure``); ``memwarden fit`` only shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import attrs

from memwarden.core import pressure
from memwarden.core.config import Config, ModelPolicy
from memwarden.core.providers import same_model
from memwarden.core.types import DeviceSnapshot, LoadedModel, MemoryEstimate, MemoryPool, PoolKind
from memwarden.core.units import format_bytes

# Keys of Need.short besides pool ids: the managed-memory cap, the model slots, and, while loads
# are refused, the bytes evictions must free before a load may go ahead.
MANAGED_CAP = pressure.MANAGED_CAP
MAX_LOADED = "max_loaded_models"
REFUSING = "refuse-loads"


@attrs.frozen
class PoolFit:
    """One pool's budget for the bytes placed in it."""

    pool_id: str
    pool_name: str
    total_bytes: int
    available_bytes: int
    safety_margin_bytes: int
    weights_bytes: int
    runtime_bytes: int  # KV cache + compute buffer + overhead
    headroom_bytes: int  # available - margin - weights - runtime; negative when it does not fit

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.runtime_bytes

    @property
    def fits(self) -> bool:
        return self.headroom_bytes >= 0


@attrs.frozen
class Need:
    """Step 1: where the models go and what is short before any eviction."""

    placement: tuple[PoolFit, ...]
    # What is missing: bytes per pool id, under MANAGED_CAP and REFUSING; model slots under
    # MAX_LOADED. Empty when the models fit as things are.
    short: Mapping[str, int]
    reason: str | None = None  # why the models cannot be placed at all (unknown pool, no pools)
    managed_bytes: int = 0
    cap_bytes: int | None = None
    loaded_count: int = 0
    slots: int | None = None
    refusing: str | None = None

    @property
    def fits(self) -> bool:
        return self.reason is None and not self.short


@attrs.frozen
class Eviction:
    """A loaded model admission would evict, its eviction cost, and what evicting it frees per
    key of :attr:`Need.short`."""

    model: LoadedModel
    cost: float
    frees: Mapping[str, int]


@attrs.frozen
class Admission:
    """The answer: whether the models may load, and the evictions that make room first."""

    estimates: tuple[MemoryEstimate, ...]
    priority: int
    need: Need
    evictions: tuple[Eviction, ...]
    fits: bool  # after the evictions
    reason: str | None = None  # the refusal text when it does not fit
    evictable: tuple[Eviction, ...] = ()
    not_evictable: tuple[str, ...] = ()  # "<model> is pinned", "<model> has priority 5 > 1"

    @property
    def evictable_bytes(self) -> int:
        return sum(e.model.total_bytes for e in self.evictable)


def configured_priority(config: Config, names: Sequence[str]) -> int:
    """The priority a load takes when the caller gives none: ``[models."<name>"] priority``
    (a bare Ollama name matches its ``:latest`` table), else the default; the lowest of several
    models, so that a load of several evicts only what each of them may evict."""
    priorities = []
    for name in names:
        policy = config.model_policy(name)
        if name not in config.models:
            policy = next((p for key, p in config.models.items() if same_model(key, name)), policy)
        priorities.append(policy.priority)
    return min(priorities, default=config.model_policy().priority)


# -- the figure each pool is budgeted with -------------------------------------------------


def uses_resident(kind: PoolKind, config: Config) -> bool:
    """Whether models are budgeted in a pool of ``kind`` with their resident figure: system RAM
    does unless ``[budget] ram_figure = "committed"``; GPU and unified memory never do (a GPU
    backend and Metal hold every byte they reserve)."""
    return kind is PoolKind.SYSTEM and config.budget.ram_figure == "resident"


def estimate_bytes(estimate: MemoryEstimate, kind: PoolKind, config: Config) -> int:
    """The bytes ``estimate`` needs in a pool of ``kind``: resident or committed."""
    return estimate.resident_bytes if uses_resident(kind, config) else estimate.total_bytes


def weights_in(estimate: MemoryEstimate, kind: PoolKind, config: Config) -> int:
    """The weights part of :func:`estimate_bytes` (the resident figure's private and mapped
    weights in system RAM)."""
    if uses_resident(kind, config) and estimate.resident is not None:
        return estimate.resident.weights_bytes + estimate.resident.mapped_weights_bytes
    return estimate.weights_bytes


def loaded_bytes(model: LoadedModel, kind: PoolKind, config: Config) -> int:
    """What a loaded model holds in a pool of ``kind``, in that pool's figure: its measured
    resident size in system RAM where the provider measures it, else its committed total."""
    if uses_resident(kind, config) and model.resident_bytes is not None:
        return min(model.resident_bytes, model.total_bytes)
    return model.total_bytes


def _kind(snapshot: DeviceSnapshot, pool_id: str) -> PoolKind:
    pool = snapshot.pool(pool_id)
    return pool.kind if pool is not None else PoolKind.SYSTEM


# -- step 1: need --------------------------------------------------------------------------


def pool_fit(pool: MemoryPool, needed: int, weights: int, margin_percent: float) -> PoolFit:
    """The budget of ``needed`` bytes (``weights`` of them model weights) in one pool."""
    margin = int(pool.total_bytes * margin_percent / 100)
    return PoolFit(
        pool_id=pool.id,
        pool_name=pool.name,
        total_bytes=pool.total_bytes,
        available_bytes=pool.available_bytes,
        safety_margin_bytes=margin,
        weights_bytes=weights,
        runtime_bytes=needed - weights,
        headroom_bytes=pool.available_bytes - margin - needed,
    )


def need(
    estimates: Sequence[MemoryEstimate],
    snapshot: DeviceSnapshot,
    *,
    config: Config,
    loaded: Sequence[LoadedModel] = (),
    pool_id: str | None = None,
    refusing: str | None = None,
) -> Need:
    """Place ``estimates`` in the snapshot's pools and work out what is short.

    ``pool_id`` forces whole-model estimates into one pool (``memwarden fit --pool``).
    ``refusing`` (why loads are refused now) adds a need under ``REFUSING``: the load goes ahead
    only if evictions free at least what it takes.
    """
    managed = pressure.managed_bytes(list(loaded))
    cap = config.pressure.max_managed_memory
    slots = config.governor.max_loaded_models
    context = {
        "managed_bytes": managed,
        "cap_bytes": int(cap) if cap is not None else None,
        "loaded_count": len(loaded),
        "slots": slots,
        "refusing": refusing,
    }
    if not snapshot.pools:
        return Need((), {}, "no memory pools: every device plugin is disabled", **context)
    if pool_id is not None and snapshot.pool(pool_id) is None:
        return Need((), {}, _unknown_pool(pool_id, snapshot), **context)
    margin_percent = config.budget.safety_margin_percent
    placed: dict[str, int] = {}
    weights: dict[str, int] = {}

    def add(target: str, total: int, weights_part: int) -> None:
        placed[target] = placed.get(target, 0) + total
        weights[target] = weights.get(target, 0) + weights_part

    for estimate in estimates:
        if estimate.per_pool:
            for share in estimate.per_pool:
                if snapshot.pool(share.pool_id) is None:
                    return Need((), {}, _unknown_pool(share.pool_id, snapshot), **context)
                part = estimate.weights_bytes * share.bytes // max(1, estimate.total_bytes)
                share_bytes = share.bytes
                if uses_resident(_kind(snapshot, share.pool_id), config):
                    # System RAM's share of a split model, no more than the process holds.
                    share_bytes = min(share.bytes, estimate.resident_bytes)
                    part = min(part, share_bytes)
                add(share.pool_id, share_bytes, part)
        else:
            target = pool_id or _place(estimate, snapshot, placed, margin_percent, config)
            kind = _kind(snapshot, target)
            add(
                target,
                estimate_bytes(estimate, kind, config),
                weights_in(estimate, kind, config),
            )
    placement = tuple(
        pool_fit(pool, placed[pool.id], weights[pool.id], margin_percent)
        for pool in snapshot.pools
        if pool.id in placed
    )
    short: dict[str, int] = {p.pool_id: -p.headroom_bytes for p in placement if not p.fits}
    total = sum(e.total_bytes for e in estimates)
    if cap is not None and managed + total > int(cap):
        short[MANAGED_CAP] = managed + total - int(cap)
    if slots is not None and len(loaded) + len(estimates) > slots:
        short[MAX_LOADED] = len(loaded) + len(estimates) - slots
    if refusing is not None:
        short[REFUSING] = total
    return Need(placement, short, None, **context)


def _place(
    estimate: MemoryEstimate,
    snapshot: DeviceSnapshot,
    placed: Mapping[str, int],
    margin_percent: float,
    config: Config,
) -> str:
    """The pool a whole model goes to: the accelerator with the most room that fits (committed
    figure), else system RAM, else (no system pool) the pool with the most room."""

    def room(pool: MemoryPool) -> int:
        margin = int(pool.total_bytes * margin_percent / 100)
        return pool.available_bytes - margin - placed.get(pool.id, 0)

    accelerators = [
        p
        for p in snapshot.pools
        if p.kind in (PoolKind.GPU, PoolKind.UNIFIED)
        and room(p) >= estimate_bytes(estimate, p.kind, config)
    ]
    if accelerators:
        return max(accelerators, key=room).id
    system = [p for p in snapshot.pools if p.kind is PoolKind.SYSTEM]
    return max(system or snapshot.pools, key=room).id


def _unknown_pool(pool_id: str, snapshot: DeviceSnapshot) -> str:
    known = ", ".join(p.id for p in snapshot.pools) or "none"
    return f"no memory pool {pool_id!r} (pools: {known})"


def frees(
    model: LoadedModel, snapshot: DeviceSnapshot, config: Config | None = None
) -> dict[str, int]:
    """What evicting a loaded model gives back, per key of :attr:`Need.short`.

    Its ``gpu_bytes`` count towards the GPU pool when there is exactly one (a ``LoadedModel``
    does not say which GPU; with several, no GPU relief is counted rather than guessed); the rest
    counts towards the model's home pool, unified memory where there is one, else system RAM,
    in that pool's figure (:func:`loaded_bytes`: resident in system RAM).
    """
    return _frees(model, *_relief_pools(snapshot), config)


def _relief_pools(snapshot: DeviceSnapshot) -> tuple[str | None, str | None, PoolKind]:
    # The one GPU pool (None when there are none or several), the home pool and its kind: what
    # frees() needs of a snapshot, found once for all the loaded models.
    gpus = [p.id for p in snapshot.pools if p.kind is PoolKind.GPU]
    home = home_pool(snapshot)
    kind = _kind(snapshot, home) if home is not None else PoolKind.SYSTEM
    return (gpus[0] if len(gpus) == 1 else None), home, kind


def _frees(
    model: LoadedModel,
    gpu: str | None,
    home: str | None,
    home_kind: PoolKind,
    config: Config | None,
) -> dict[str, int]:
    gains: dict[str, int] = {
        MANAGED_CAP: model.total_bytes,
        MAX_LOADED: 1,
        REFUSING: model.total_bytes,
    }
    on_gpu = 0
    if gpu is not None and model.gpu_bytes:
        on_gpu = gains[gpu] = model.gpu_bytes
    if home is not None:
        held = model.total_bytes
        if config is not None:
            held = loaded_bytes(model, home_kind, config)
        gains[home] = gains.get(home, 0) + max(0, held - on_gpu)
    return gains


def home_pool(snapshot: DeviceSnapshot) -> str | None:
    """Where a model's memory lands when nothing places it: unified memory, else system RAM."""
    for kind in (PoolKind.UNIFIED, PoolKind.SYSTEM):
        for pool in snapshot.pools:
            if pool.kind is kind:
                return pool.id
    return snapshot.pools[0].id if snapshot.pools else None


# -- step 2: choice ------------------------------------------------------------------------


def choose(
    short: Mapping[str, int], candidates: Sequence[Eviction]
) -> tuple[tuple[Eviction, ...], dict[str, int]]:
    """Pick evictions from ``candidates`` (cheapest first) until nothing is short.

    Greedy in cost order: a candidate is taken when it frees something still short. Greedy picks
    can over-evict (a cheap small model taken first, then a big one that alone covers the need),
    so once everything is covered the picks are revisited costliest first and any whose gains the
    others already cover is dropped. Returns the evictions and what is still short after them
    (zero or less everywhere when they suffice).
    """
    remaining = dict(short)
    # Plain loops over the few keys of ``remaining``: admission among thousands of loaded models
    # may take hundreds of evictions, and this runs for each.
    still = sum(1 for v in remaining.values() if v > 0)  # keys not yet covered
    chosen: list[Eviction] = []
    for candidate in candidates:
        if not still:
            break
        gains = candidate.frees
        for key in gains:
            if remaining.get(key, 0) > 0:
                break
        else:
            continue
        chosen.append(candidate)
        for key, gain in gains.items():
            if key in remaining:
                before = remaining[key]
                after = remaining[key] = before - gain
                still += (after > 0) - (before > 0)
    if not still:
        # By position: comparing attrs objects to find one in the list costs O(n) each.
        for index in reversed(range(len(chosen))):
            gains = chosen[index].frees
            for key, value in remaining.items():
                if value + gains.get(key, 0) > 0:
                    break
            else:
                del chosen[index]
                for key in remaining:
                    remaining[key] += gains.get(key, 0)
    return tuple(chosen), remaining


# -- step 3: the refusal text --------------------------------------------------------------


def refusal(
    names: str,
    estimates: Sequence[MemoryEstimate],
    need: Need,
    still_short: Mapping[str, int],
    evictable: Sequence[Eviction],
    not_evictable: Sequence[str],
) -> str:
    """Why ``names`` cannot load: what they need, what there is, what evicting every evictable
    model would free, what would still be missing, and what may not be evicted and why."""
    if need.reason is not None:
        return f"cannot place {names}: {need.reason}"
    total = sum(e.total_bytes for e in estimates)
    contexts = sorted({e.context_tokens for e in estimates})
    where = ", ".join(f"{format_bytes(p.needed_bytes)} in pool {p.pool_id}" for p in need.placement)
    parts = [
        f"{names} need(s) {format_bytes(total)} at {'/'.join(f'{c:,}' for c in contexts)} "
        f"tokens of context ({where})"
    ]
    if need.refusing is not None:
        parts.insert(
            0,
            f"{need.refusing}; while loads are refused, a load goes ahead only by evicting "
            "lower-priority models that free at least what it takes",
        )
    limits = [_what_there_is(key, need) for key in need.short if key != REFUSING]
    parts.append("there is " + "; ".join(limits) if limits else "memory itself has room")
    parts.append("short by " + ", ".join(_shortfall(k, v) for k, v in need.short.items()))
    freed = sum(e.model.total_bytes for e in evictable)
    missing = ", ".join(_shortfall(k, v) for k, v in still_short.items() if v > 0)
    text = "; ".join(parts) + (
        f". Evicting every model that may be evicted ({_count(len(evictable), 'model')}, "
        f"{format_bytes(freed)}) still leaves {missing} missing"
    )
    if not_evictable:
        text += f"; not evictable: {'; '.join(not_evictable[:10])}"
        if len(not_evictable) > 10:
            text += f" and {len(not_evictable) - 10} more"
    return text


def _what_there_is(key: str, need: Need) -> str:
    if key == MANAGED_CAP:
        return (
            f"max_managed_memory {format_bytes(need.cap_bytes)} with "
            f"{format_bytes(need.managed_bytes)} in use by loaded models"
        )
    if key == MAX_LOADED:
        return f"max_loaded_models {need.slots} with {need.loaded_count} loaded"
    fit = next(p for p in need.placement if p.pool_id == key)
    room = max(fit.available_bytes - fit.safety_margin_bytes, 0)
    return (
        f"{format_bytes(room)} free in pool {key} above its safety margin "
        f"({format_bytes(fit.available_bytes)} available, "
        f"{format_bytes(fit.safety_margin_bytes)} kept free)"
    )


def _shortfall(key: str, value: int) -> str:
    if key == MAX_LOADED:
        return f"max_loaded_models {_count(value, 'model slot')}"
    if key == REFUSING:
        return f"{format_bytes(value)} to evict (loads are refused)"
    name = "max_managed_memory" if key == MANAGED_CAP else f"pool {key}"
    return f"{name} {format_bytes(value)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# What may be evicted, cheapest first, and why each other loaded model may not be.
Candidates = tuple[tuple[Eviction, ...], tuple[str, ...]]


def candidates(
    loaded: Sequence[LoadedModel],
    snapshot: DeviceSnapshot,
    *,
    policy_of: Callable[[LoadedModel], ModelPolicy],
    costs: Callable[[Sequence[LoadedModel]], Sequence[float]],
    priority: int,
    refusing: str | None = None,
    config: Config | None = None,
) -> Candidates:
    """The loaded models a load of ``priority`` may evict, as :class:`Eviction` cheapest first,
    and a sentence for each one it may not (pinned, critical, busy, higher priority). What each
    frees is counted in its pool's figure under ``config`` (:func:`frees`)."""
    evictable: list[LoadedModel] = []
    kept: list[str] = []
    for model in loaded:
        policy = policy_of(model)
        label = model.instance_id or model.name
        if policy.critical or policy.pinned:
            kept.append(f"{label} is {'critical' if policy.critical else 'pinned'}")
        elif model.requests_in_flight > 0:
            kept.append(f"{label} has {model.requests_in_flight} request(s) in flight")
        elif policy.priority > priority:
            kept.append(f"{label} has priority {policy.priority} > {priority}")
        elif refusing is not None and policy.priority == priority:
            kept.append(f"{label} has priority {policy.priority}, not below {priority}")
        else:
            evictable.append(model)
    prices = costs(evictable) if evictable else []
    gpu, home, home_kind = _relief_pools(snapshot)
    found = sorted(
        (
            Eviction(model, cost, _frees(model, gpu, home, home_kind, config))
            for model, cost in zip(evictable, prices, strict=True)
        ),
        key=lambda e: e.cost,
    )
    return tuple(found), tuple(kept)


# -- the entry point -----------------------------------------------------------------------


def admit(
    estimates: Sequence[MemoryEstimate],
    snapshot: DeviceSnapshot,
    loaded: Sequence[LoadedModel],
    *,
    policy_of: Callable[[LoadedModel], ModelPolicy],
    costs: Callable[[Sequence[LoadedModel]], Sequence[float]],
    config: Config,
    priority: int,
    pool_id: str | None = None,
    refusing: str | None = None,
    names: str | None = None,
    evictable: Candidates | None = None,
) -> Admission:
    """Whether ``estimates`` may be loaded beside ``loaded``, and what to evict first.

    ``policy_of`` gives a loaded model's policy (pinned, critical, priority); ``costs`` prices
    evicting each of a list of models (``Governor.eviction_costs``). Models that are pinned or
    critical, serve a request, or have a priority above ``priority`` are not evicted. While loads
    are refused (``refusing``: the reason), only models of a lower priority are, and they must
    free at least what the load takes. ``names`` is how the refusal text names the models.
    ``evictable``: :func:`candidates` for these arguments, when the caller kept them (the
    governor does, per reading).
    """
    names = names or ", ".join(repr(e.model.name) for e in estimates)
    needed = need(
        estimates, snapshot, config=config, loaded=loaded, pool_id=pool_id, refusing=refusing
    )
    if evictable is None:
        evictable = candidates(
            loaded,
            snapshot,
            policy_of=policy_of,
            costs=costs,
            priority=priority,
            refusing=refusing,
            config=config,
        )
    candidates_found, kept = evictable
    if needed.reason is not None:
        reason = refusal(names, estimates, needed, {}, candidates_found, kept)
        return Admission(
            tuple(estimates), priority, needed, (), False, reason, candidates_found, kept
        )
    chosen, still_short = choose(needed.short, candidates_found)
    fits = all(v <= 0 for v in still_short.values())
    reason = (
        None if fits else refusal(names, estimates, needed, still_short, candidates_found, kept)
    )
    return Admission(
        estimates=tuple(estimates),
        priority=priority,
        need=needed,
        evictions=chosen if fits else (),
        fits=fits,
        reason=reason,
        evictable=candidates_found,
        not_evictable=kept,
    )


# -- the largest context -------------------------------------------------------------------

# The smallest context worth loading a model with; --max-ctx answers at least this or "no fit".
MIN_CONTEXT_TOKENS = 256
MAX_SEARCH_CONTEXT_TOKENS = 1 << 21


class Verdict(Protocol):
    """What :func:`max_context` reads of an answer: an :class:`Admission` or a ``LoadPlan``."""

    @property
    def fits(self) -> bool: ...

    @property
    def estimates(self) -> tuple[MemoryEstimate, ...]: ...


V = TypeVar("V", bound=Verdict)


@attrs.frozen
class MaxContext(Generic[V]):
    """The largest context that is admitted, and the admission at that context."""

    context_tokens: int | None  # None: not even MIN_CONTEXT_TOKENS fits
    fit: V  # at context_tokens, or at MIN_CONTEXT_TOKENS when nothing fits
    memory_limit_tokens: int | None  # what memory alone would allow, before the trained cap
    notes: tuple[str, ...] = ()


def max_context(
    fit_at: Callable[[int], V],
    upper_tokens: int | None = None,
) -> MaxContext[V]:
    """Binary search for the largest context where ``fit_at(context).fits``.

    ``fit_at`` is admission at one context (``memwarden fit --max-ctx`` passes the same
    ``Governor.plan_load`` that ``load`` uses). The estimate grows with the context, so the
    search is monotone. The upper end is the model's trained context when the estimator knows it:
    memwarden reports what memory would allow beyond it as a note, but never recommends more than
    the model was trained for.
    """
    low_fit = fit_at(MIN_CONTEXT_TOKENS)
    if not low_fit.fits:
        return MaxContext(None, low_fit, None, ("not even 256 tokens of context fit",))
    trained = low_fit.estimates[0].trained_context_tokens
    ceiling = upper_tokens or MAX_SEARCH_CONTEXT_TOKENS
    low, high = MIN_CONTEXT_TOKENS, ceiling
    best = low_fit
    high_fit = fit_at(high)
    if high_fit.fits:
        low, best = high, high_fit
    else:
        while high - low > 1:
            middle = (low + high) // 2
            middle_fit = fit_at(middle)
            if middle_fit.fits:
                low, best = middle, middle_fit
            else:
                high = middle
    notes: list[str] = []
    memory_limit = low
    chosen, chosen_fit = low, best
    if trained and low > trained:
        chosen, chosen_fit = trained, fit_at(trained)
        notes.append(
            f"memory allows {low:,} tokens, but the model was trained for {trained:,}; "
            f"answering {trained:,}"
        )
    elif trained:
        notes.append(f"the model was trained for {trained:,} tokens")
    if low == ceiling and not trained:
        notes.append(f"searched up to {ceiling:,} tokens")
    return MaxContext(chosen, chosen_fit, memory_limit, tuple(notes))


# -- what a host may give LLMs, for a cluster scheduler (docs/fleet.md) ----------------------

#: The custom resource each pool kind is declared as on a Ray node (or a Kubernetes extended
#: resource). Unified memory is where Metal puts a model, so it counts as accelerator memory.
NODE_RESOURCE = {
    PoolKind.SYSTEM: "llm_ram_bytes",
    PoolKind.GPU: "llm_gpu_bytes",
    PoolKind.UNIFIED: "llm_gpu_bytes",
}


def node_resources(
    snapshot: DeviceSnapshot, config: Config, loaded: Sequence[LoadedModel] = ()
) -> dict[str, int]:
    """What LLMs may take on this host, per resource name of :data:`NODE_RESOURCE`.

    The same budget :func:`need` admits a load with: per pool, what is available now plus what
    the managed models already hold, less the pool's safety margin; summed per pool kind, and no
    more than ``[pressure] max_managed_memory``. A cluster scheduler places a model where its
    estimate fits in these; the node's governor keeps the host within them afterwards.
    """
    margin_percent = config.budget.safety_margin_percent
    held: dict[str, int] = {}
    for model in loaded:
        target = home_pool(snapshot)
        if target is not None:
            kind = _kind(snapshot, target)
            held[target] = held.get(target, 0) + loaded_bytes(model, kind, config)
    resources: dict[str, int] = {}
    for pool in snapshot.pools:
        margin = int(pool.total_bytes * margin_percent / 100)
        room = max(0, pool.available_bytes + held.get(pool.id, 0) - margin)
        name = NODE_RESOURCE[pool.kind]
        resources[name] = resources.get(name, 0) + room
    cap = config.pressure.max_managed_memory
    if cap is not None:
        resources = {name: min(value, int(cap)) for name, value in resources.items()}
    return resources
