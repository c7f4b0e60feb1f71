"""Whether an estimate fits a memory pool, and with how much to spare.

A pool's budget has three boundaries: the model's weights, then what the model needs beside them
(KV cache, compute buffer, runtime overhead), then a safety margin kept free for the operating
system and other programs (``[budget] safety_margin_percent`` of the pool's total, default 10%).
What the pool has available now must cover all three; what is left is the headroom.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from memwarden.core.config import BudgetConfig
from memwarden.core.types import DeviceSnapshot, MemoryEstimate, MemoryPool, PoolKind

# The smallest context worth loading a model with; --max-ctx answers at least this or "no fit".
MIN_CONTEXT_TOKENS = 256
MAX_SEARCH_CONTEXT_TOKENS = 1 << 21


@attrs.frozen
class PoolFit:
    """One pool's budget for one estimate."""

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
class FitResult:
    """The answer of ``memwarden fit``: the pools the model needs and whether each has room."""

    estimate: MemoryEstimate
    pools: tuple[PoolFit, ...]
    reason: str | None = None  # why no pool was considered (unknown pool, no pools)

    @property
    def fits(self) -> bool:
        return bool(self.pools) and all(p.fits for p in self.pools)

    @property
    def headroom_bytes(self) -> int | None:
        return min((p.headroom_bytes for p in self.pools), default=None)


def pool_fit(pool: MemoryPool, needed: int, weights: int, budget: BudgetConfig) -> PoolFit:
    margin = int(pool.total_bytes * budget.safety_margin_percent / 100)
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


def check_fit(
    estimate: MemoryEstimate,
    snapshot: DeviceSnapshot,
    budget: BudgetConfig,
    pool_id: str | None = None,
) -> FitResult:
    """Fit ``estimate`` into the snapshot's pools.

    An estimate split across pools (layers offloaded to a GPU) must fit in each of them. Otherwise
    the whole model goes in one pool: ``pool_id`` if given, else the accelerator pool (GPU or
    unified) with the most headroom that fits, else system RAM.
    """
    if estimate.per_pool:
        fits = []
        for share in estimate.per_pool:
            pool = snapshot.pool(share.pool_id)
            if pool is None:
                return FitResult(estimate, (), reason=_unknown_pool(share.pool_id, snapshot))
            weights = estimate.weights_bytes * share.bytes // max(1, estimate.total_bytes)
            fits.append(pool_fit(pool, share.bytes, weights, budget))
        return FitResult(estimate, tuple(fits))

    if pool_id is not None:
        pool = snapshot.pool(pool_id)
        if pool is None:
            return FitResult(estimate, (), reason=_unknown_pool(pool_id, snapshot))
        return FitResult(estimate, (_whole(pool, estimate, budget),))
    if not snapshot.pools:
        return FitResult(estimate, (), reason="no memory pools: every device plugin is disabled")
    candidates = [_whole(pool, estimate, budget) for pool in snapshot.pools]
    accelerators = [
        fit
        for fit, pool in zip(candidates, snapshot.pools, strict=True)
        if pool.kind in (PoolKind.GPU, PoolKind.UNIFIED) and fit.fits
    ]
    if accelerators:
        return FitResult(estimate, (max(accelerators, key=lambda f: f.headroom_bytes),))
    system = [
        fit
        for fit, pool in zip(candidates, snapshot.pools, strict=True)
        if pool.kind is PoolKind.SYSTEM
    ]
    best = max(system or candidates, key=lambda f: f.headroom_bytes)
    return FitResult(estimate, (best,))


def _whole(pool: MemoryPool, estimate: MemoryEstimate, budget: BudgetConfig) -> PoolFit:
    return pool_fit(pool, estimate.total_bytes, estimate.weights_bytes, budget)


def _unknown_pool(pool_id: str, snapshot: DeviceSnapshot) -> str:
    known = ", ".join(p.id for p in snapshot.pools) or "none"
    return f"no memory pool {pool_id!r} (pools: {known})"


@attrs.frozen
class MaxContext:
    """The largest context that fits, and the fit at that context."""

    context_tokens: int | None  # None: not even MIN_CONTEXT_TOKENS fits
    fit: FitResult  # at context_tokens, or at MIN_CONTEXT_TOKENS when nothing fits
    memory_limit_tokens: int | None  # what memory alone would allow, before the trained cap
    notes: tuple[str, ...] = ()


def max_context(
    fit_at: Callable[[int], FitResult],
    upper_tokens: int | None = None,
) -> MaxContext:
    """Binary search for the largest context where ``fit_at(context)`` fits.

    The estimate grows with the context, so the search is monotone. The upper end is the model's
    trained context when the estimator knows it: memwarden reports what memory would allow beyond
    it as a note, but never recommends more than the model was trained for.
    """
    low_fit = fit_at(MIN_CONTEXT_TOKENS)
    if not low_fit.fits:
        return MaxContext(None, low_fit, None, ("not even 256 tokens of context fit",))
    trained = low_fit.estimate.trained_context_tokens
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
