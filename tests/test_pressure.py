from __future__ import annotations

from memwarden.core.config import ByteSize, PressureConfig
from memwarden.core.pressure import evaluate, pool_pressure
from memwarden.core.types import DeviceSnapshot, MemoryPool, PoolKind, PressureLevel

GIB = 2**30


def ram(used_percent: float, total: int = 16 * GIB) -> MemoryPool:
    available = int(total * (1 - used_percent / 100))
    return MemoryPool(
        id="system",
        kind=PoolKind.SYSTEM,
        name="RAM",
        total_bytes=total,
        available_bytes=available,
        used_bytes=total - available,
        source="test",
    )


def test_levels_follow_the_default_thresholds():
    config = PressureConfig()
    assert pool_pressure(ram(50), config).level is PressureLevel.NORMAL
    assert pool_pressure(ram(71), config).level is PressureLevel.WARNING
    assert pool_pressure(ram(86), config).level is PressureLevel.CRITICAL
    assert pool_pressure(ram(96), config).level is PressureLevel.EMERGENCY


def test_free_memory_floor_raises_the_level_to_critical():
    config = PressureConfig(min_free=ByteSize(4 * GIB))
    assert pool_pressure(ram(80), config).level is PressureLevel.CRITICAL


def test_hysteresis_holds_a_level_until_usage_falls_clearly():
    config = PressureConfig()
    assert pool_pressure(ram(84), config, PressureLevel.CRITICAL).level is PressureLevel.CRITICAL
    assert pool_pressure(ram(81), config, PressureLevel.CRITICAL).level is PressureLevel.WARNING


def test_overall_level_is_the_worst_pool_and_the_managed_cap():
    config = PressureConfig(max_managed_memory=ByteSize(10 * GIB))
    snapshot = DeviceSnapshot(pools=(ram(10),))
    assert evaluate(snapshot, config, managed_bytes=GIB).level is PressureLevel.NORMAL
    over = evaluate(snapshot, config, managed_bytes=11 * GIB)
    assert over.level is PressureLevel.EMERGENCY
    assert any("max_managed_memory" in r for r in over.reasons)


def test_managed_cap_is_held_by_hysteresis():
    from memwarden.core.pressure import MANAGED_CAP

    config = PressureConfig(max_managed_memory=ByteSize(10 * GIB))
    snapshot = DeviceSnapshot(pools=(ram(10),))
    held = evaluate(
        snapshot,
        config,
        managed_bytes=int(8.4 * GIB),
        previous={MANAGED_CAP: PressureLevel.CRITICAL},
    )
    assert held.managed_level is PressureLevel.CRITICAL
    released = evaluate(
        snapshot,
        config,
        managed_bytes=int(8.1 * GIB),
        previous={MANAGED_CAP: PressureLevel.CRITICAL},
    )
    assert released.managed_level is PressureLevel.WARNING


def test_relief_needed_reaches_below_the_warning_release_point():
    from memwarden.core.pressure import relief_needed

    config = PressureConfig()
    reading = evaluate(DeviceSnapshot(pools=(ram(90, total=100 * GIB),)), config)
    # 90% used; NORMAL again below 70 - 3 = 67%: 23 GiB to free.
    needed = relief_needed(reading, config)
    assert needed.keys() == {"system"}
    assert abs(needed["system"] - 23 * GIB) <= 2


def test_relief_needed_is_empty_when_all_is_normal():
    from memwarden.core.pressure import relief_needed

    config = PressureConfig()
    assert relief_needed(evaluate(DeviceSnapshot(pools=(ram(20),)), config), config) == {}


def stalled(some: float | None, full: float | None, used_percent: float = 30) -> MemoryPool:
    import attrs

    return attrs.evolve(ram(used_percent), psi_some_avg10=some, psi_full_avg10=full)


def test_tasks_stalling_on_memory_raise_the_level_even_with_memory_available():
    config = PressureConfig()
    assert pool_pressure(stalled(2.0, 0.5), config).level is PressureLevel.NORMAL
    warning = pool_pressure(stalled(25.0, 1.0), config)
    assert warning.level is PressureLevel.WARNING
    assert "some tasks stalled on memory 25.0% of the last 10 s (PSI) >= 20%" in warning.reasons
    assert pool_pressure(stalled(40.0, 12.0), config).level is PressureLevel.CRITICAL


def test_psi_rules_can_be_turned_off():
    config = PressureConfig(psi_some_warning_percent=0.0, psi_full_critical_percent=0.0)
    assert pool_pressure(stalled(90.0, 80.0), config).level is PressureLevel.NORMAL
