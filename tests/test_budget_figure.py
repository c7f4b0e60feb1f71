"""Each pool is budgeted with the figure that is real for it: resident in system RAM,
committed in GPU and unified memory, and ``[budget] ram_figure`` overrides system RAM's."""

from __future__ import annotations

import pytest

from memwarden.core.admission import frees, need
from memwarden.core.config import BudgetConfig, Config, ModelPolicy
from memwarden.core.governor import Governor
from memwarden.core.types import (
    Confidence,
    DeviceSnapshot,
    LoadedModel,
    MemoryEstimate,
    MemoryPool,
    ModelRef,
    PoolKind,
    PressureLevel,
    ResidentEstimate,
)
from memwarden.testing.fakes import make_rig

MiB = 1 << 20
GiB = 1 << 30


def pool(pool_id: str, kind: PoolKind, available: int, total: int = 10 * GiB) -> MemoryPool:
    return MemoryPool(
        id=pool_id,
        kind=kind,
        name=pool_id,
        total_bytes=total,
        available_bytes=available,
        used_bytes=total - available,
        source="test",
    )


def gemma_like() -> MemoryEstimate:
    """859 MiB committed (a 514 MiB compute buffer), 329 MiB resident."""
    return MemoryEstimate(
        model=ModelRef(name="gemma"),
        context_tokens=4096,
        weights_bytes=235 * MiB,
        kv_cache_bytes=27 * MiB,
        compute_bytes=514 * MiB,
        overhead_bytes=83 * MiB,
        confidence=Confidence.HIGH,
        estimator="test",
        resident=ResidentEstimate(
            weights_bytes=235 * MiB,
            mapped_weights_bytes=0,
            kv_cache_bytes=27 * MiB,
            compute_bytes=23 * MiB,
            overhead_bytes=44 * MiB,
            prompt_tokens=4096,
        ),
    )


def config(ram_figure: str = "resident") -> Config:
    return Config(budget=BudgetConfig(safety_margin_percent=0.0, ram_figure=ram_figure))


def test_system_ram_is_budgeted_with_the_resident_figure() -> None:
    snapshot = DeviceSnapshot(pools=(pool("system", PoolKind.SYSTEM, 500 * MiB),))
    result = need([gemma_like()], snapshot, config=config())
    assert (result.fits, result.placement[0].needed_bytes) == (True, 329 * MiB)


def test_ram_figure_committed_budgets_system_ram_with_the_committed_figure() -> None:
    snapshot = DeviceSnapshot(pools=(pool("system", PoolKind.SYSTEM, 500 * MiB),))
    result = need([gemma_like()], snapshot, config=config("committed"))
    assert (result.fits, dict(result.short)) == (False, {"system": 359 * MiB})


def test_a_gpu_pool_is_budgeted_with_the_committed_figure() -> None:
    snapshot = DeviceSnapshot(pools=(pool("cuda:0", PoolKind.GPU, 500 * MiB),))
    result = need([gemma_like()], snapshot, config=config(), pool_id="cuda:0")
    assert (result.placement[0].needed_bytes, dict(result.short)) == (
        859 * MiB,
        {"cuda:0": 359 * MiB},
    )


def test_a_unified_pool_is_budgeted_with_the_committed_figure() -> None:
    snapshot = DeviceSnapshot(pools=(pool("unified", PoolKind.UNIFIED, 500 * MiB),))
    result = need([gemma_like()], snapshot, config=config())
    assert (result.placement[0].needed_bytes, dict(result.short)) == (
        859 * MiB,
        {"unified": 359 * MiB},
    )


def test_a_gpu_too_small_for_the_committed_figure_sends_the_model_to_ram() -> None:
    snapshot = DeviceSnapshot(
        pools=(
            pool("cuda:0", PoolKind.GPU, 500 * MiB),
            pool("system", PoolKind.SYSTEM, 500 * MiB),
        )
    )
    result = need([gemma_like()], snapshot, config=config())
    assert [(p.pool_id, p.needed_bytes) for p in result.placement] == [("system", 329 * MiB)]


def test_evicting_a_model_frees_its_resident_size_in_system_ram() -> None:
    snapshot = DeviceSnapshot(pools=(pool("system", PoolKind.SYSTEM, 500 * MiB),))
    loaded = LoadedModel(
        name="old", provider="llamacpp", total_bytes=898 * MiB, resident_bytes=100 * MiB
    )
    assert frees(loaded, snapshot, config())["system"] == 100 * MiB


def test_evicting_a_model_frees_its_committed_size_in_unified_memory() -> None:
    snapshot = DeviceSnapshot(pools=(pool("unified", PoolKind.UNIFIED, 500 * MiB),))
    loaded = LoadedModel(
        name="old", provider="llamacpp", total_bytes=898 * MiB, resident_bytes=100 * MiB
    )
    assert frees(loaded, snapshot, config())["unified"] == 898 * MiB


def test_an_unknown_ram_figure_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="ram_figure"):
        BudgetConfig(ram_figure="average")


# -- the ladder measures what it frees in the pool's figure ----------------------------------


def ladder_scene():
    """System RAM of 100 GiB at 90% used (CRITICAL), two models loaded: "reserved" commits
    24 GiB but its process holds 3 GiB (a compute buffer reserved and never touched), "busy"
    commits and holds 12 GiB. "reserved" has the lower priority, so it is evicted first."""
    policies = {"reserved": ModelPolicy(priority=1), "busy": ModelPolicy(priority=5)}
    rig = make_rig(Config(models=policies))
    rig.provider.add_model("reserved", 24 * GiB, resident_bytes=3 * GiB)
    rig.provider.add_model("busy", 12 * GiB)
    rig.provider.load("reserved")
    rig.provider.load("busy")
    rig.device.set_used_percent(90)
    return rig


def test_an_eviction_in_system_ram_is_measured_as_its_resident_bytes() -> None:
    rig = ladder_scene()
    report = Governor(rig.warden).step()
    assert report is not None
    first = next(o for o in report.outcomes if o.action.kind == "unload")
    assert (first.action.model, first.measured_freed_bytes) == ("reserved", 3 * GiB)


def test_the_ladder_goes_on_when_the_resident_bytes_freed_leave_the_pool_critical() -> None:
    # 23 GiB are needed (90% down to 67%). Counted by its committed 24 GiB, evicting
    # "reserved" would look enough and the round would stop at CRITICAL; counted by the 3 GiB
    # its process held, it is not, and the ladder evicts "busy" too (87% -> 75%: WARNING).
    rig = ladder_scene()
    report = Governor(rig.warden).step()
    assert report is not None
    assert [
        (o.action.model, o.measured_freed_bytes)
        for o in report.outcomes
        if o.action.kind == "unload"
    ] == [("reserved", 3 * GiB), ("busy", 12 * GiB)]
    assert (report.relieved, report.level_after) == (True, PressureLevel.WARNING)


def test_an_eviction_counted_in_committed_bytes_ends_the_round_at_critical() -> None:
    # [budget] ram_figure = "committed": the operator asked for the committed figure, and the
    # round judges by it: 24 GiB expected covers the 23 GiB needed, so the round waits for a
    # fresh sample, unrelieved.
    policies = {"reserved": ModelPolicy(priority=1), "busy": ModelPolicy(priority=5)}
    rig = make_rig(Config(models=policies, budget=BudgetConfig(ram_figure="committed")))
    rig.provider.add_model("reserved", 24 * GiB, resident_bytes=3 * GiB)
    rig.provider.add_model("busy", 12 * GiB)
    rig.provider.load("reserved")
    rig.provider.load("busy")
    rig.device.set_used_percent(90)
    report = Governor(rig.warden).step()
    assert report is not None
    assert [
        (o.action.model, o.measured_freed_bytes)
        for o in report.outcomes
        if o.action.kind == "unload"
    ] == [("reserved", 24 * GiB)]
    assert (report.relieved, report.level_after) == (False, PressureLevel.CRITICAL)
