from __future__ import annotations

from memwarden.core.budget import MIN_CONTEXT_TOKENS, check_fit, max_context
from memwarden.core.config import BudgetConfig
from memwarden.core.types import (
    Confidence,
    DeviceSnapshot,
    MemoryEstimate,
    MemoryPool,
    ModelRef,
    PoolKind,
    PoolShare,
)

GiB = 1 << 30


def pool(pool_id="system", kind=PoolKind.SYSTEM, total=16 * GiB, available=8 * GiB):
    return MemoryPool(
        id=pool_id,
        kind=kind,
        name=pool_id,
        total_bytes=total,
        available_bytes=available,
        used_bytes=total - available,
        source="test",
    )


def estimate(weights=2 * GiB, kv=1 * GiB, context=4096, per_pool=(), trained=None):
    return MemoryEstimate(
        model=ModelRef(name="m"),
        context_tokens=context,
        weights_bytes=weights,
        kv_cache_bytes=kv,
        compute_bytes=0,
        overhead_bytes=0,
        confidence=Confidence.HIGH,
        estimator="test",
        per_pool=per_pool,
        trained_context_tokens=trained,
    )


def test_headroom_is_available_minus_margin_minus_model():
    result = check_fit(estimate(), DeviceSnapshot(pools=(pool(),)), BudgetConfig())
    fit = result.pools[0]
    assert fit.safety_margin_bytes == int(16 * GiB * 0.10)
    assert fit.headroom_bytes == 8 * GiB - int(1.6 * GiB) - 3 * GiB
    assert result.fits


def test_model_that_eats_into_the_margin_does_not_fit():
    snapshot = DeviceSnapshot(pools=(pool(available=4 * GiB),))
    result = check_fit(estimate(), snapshot, BudgetConfig())
    assert not result.fits
    assert result.headroom_bytes < 0


def test_margin_percent_comes_from_the_budget_config():
    snapshot = DeviceSnapshot(pools=(pool(),))
    result = check_fit(estimate(), snapshot, BudgetConfig(safety_margin_percent=50.0))
    assert not result.fits


def test_weights_and_runtime_are_reported_apart():
    fit = check_fit(estimate(), DeviceSnapshot(pools=(pool(),)), BudgetConfig()).pools[0]
    assert (fit.weights_bytes, fit.runtime_bytes) == (2 * GiB, 1 * GiB)


def test_a_gpu_with_room_is_preferred_to_system_ram():
    snapshot = DeviceSnapshot(
        pools=(pool(), pool("cuda:0", PoolKind.GPU, total=8 * GiB, available=7 * GiB))
    )
    assert check_fit(estimate(), snapshot, BudgetConfig()).pools[0].pool_id == "cuda:0"


def test_a_gpu_too_small_leaves_the_model_in_system_ram():
    snapshot = DeviceSnapshot(
        pools=(pool(), pool("cuda:0", PoolKind.GPU, total=4 * GiB, available=3 * GiB))
    )
    assert check_fit(estimate(), snapshot, BudgetConfig()).pools[0].pool_id == "system"


def test_named_pool_is_used_even_when_another_has_more_room():
    snapshot = DeviceSnapshot(
        pools=(pool(), pool("cuda:0", PoolKind.GPU, total=8 * GiB, available=7 * GiB))
    )
    result = check_fit(estimate(), snapshot, BudgetConfig(), pool_id="system")
    assert result.pools[0].pool_id == "system"


def test_unknown_pool_gives_a_reason_and_no_fit():
    result = check_fit(estimate(), DeviceSnapshot(pools=(pool(),)), BudgetConfig(), "cuda:9")
    assert not result.fits
    assert "no memory pool 'cuda:9'" in result.reason


def test_split_estimate_must_fit_every_pool_it_uses():
    shares = (PoolShare("cuda:0", 2 * GiB), PoolShare("system", 1 * GiB))
    snapshot = DeviceSnapshot(
        pools=(pool(), pool("cuda:0", PoolKind.GPU, total=4 * GiB, available=1 * GiB))
    )
    result = check_fit(estimate(per_pool=shares), snapshot, BudgetConfig())
    assert [p.pool_id for p in result.pools] == ["cuda:0", "system"]
    assert [p.fits for p in result.pools] == [False, True]
    assert not result.fits


def _fit_below(limit_tokens, trained=None):
    """A fit function whose model fits exactly up to ``limit_tokens`` tokens of context."""
    snapshot = DeviceSnapshot(pools=(pool(total=100 * GiB, available=100 * GiB),))
    usable = 90 * GiB  # available minus the 10% margin

    def fit_at(tokens):
        kv = usable if tokens <= limit_tokens else usable + 1
        model = estimate(weights=0, kv=kv, context=tokens, trained=trained)
        return check_fit(model, snapshot, BudgetConfig())

    return fit_at


def test_max_context_finds_the_largest_context_that_fits():
    assert max_context(_fit_below(50_000)).context_tokens == 50_000


def test_max_context_is_capped_at_the_trained_context_with_a_note():
    found = max_context(_fit_below(50_000, trained=32_768))
    assert found.context_tokens == 32_768
    assert found.memory_limit_tokens == 50_000
    assert "trained for 32,768" in found.notes[0]


def test_max_context_is_none_when_not_even_the_minimum_fits():
    found = max_context(_fit_below(MIN_CONTEXT_TOKENS - 1))
    assert found.context_tokens is None
