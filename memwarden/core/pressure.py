"""Turning a device snapshot into pressure levels."""

from __future__ import annotations

from collections.abc import Mapping

from memwarden.core.config import PressureConfig
from memwarden.core.types import (
    DeviceSnapshot,
    MemoryPool,
    PoolPressure,
    PressureLevel,
    PressureReading,
)


def _threshold(config: PressureConfig, level: PressureLevel) -> float:
    return {
        PressureLevel.WARNING: config.warning_percent,
        PressureLevel.CRITICAL: config.critical_percent,
        PressureLevel.EMERGENCY: config.emergency_percent,
    }.get(level, 0.0)


def pool_pressure(
    pool: MemoryPool, config: PressureConfig, previous: PressureLevel | None = None
) -> PoolPressure:
    """The level of one pool. With ``previous``, a level is only left once usage falls
    ``hysteresis_percent`` points below the threshold that raised it, so it does not flap."""
    used_percent = pool.used_fraction * 100.0
    level = PressureLevel.NORMAL
    reasons = []
    for candidate in (PressureLevel.EMERGENCY, PressureLevel.CRITICAL, PressureLevel.WARNING):
        if used_percent >= _threshold(config, candidate):
            level = candidate
            reasons.append(f"{used_percent:.1f}% used >= {_threshold(config, candidate):g}%")
            break
    if config.min_free is not None and pool.available_bytes < config.min_free:
        if level < PressureLevel.CRITICAL:
            level = PressureLevel.CRITICAL
        reasons.append(f"{pool.available_bytes} bytes free < min_free {int(config.min_free)}")
    if previous is not None and previous > level:
        release_at = _threshold(config, previous) - config.hysteresis_percent
        if used_percent > release_at:
            reasons.append(
                f"held at {previous} until usage falls below {release_at:g}% (hysteresis)"
            )
            level = previous
    return PoolPressure(
        pool_id=pool.id,
        level=level,
        used_percent=round(used_percent, 2),
        available_bytes=pool.available_bytes,
        reasons=tuple(reasons),
    )


def evaluate(
    snapshot: DeviceSnapshot,
    config: PressureConfig,
    *,
    managed_bytes: int = 0,
    previous: Mapping[str, PressureLevel] | None = None,
) -> PressureReading:
    """The pressure of every pool and overall (the worst of them, and of the managed-memory cap)."""
    previous = previous or {}
    pools = tuple(pool_pressure(p, config, previous.get(p.id)) for p in snapshot.pools)
    level = max((p.level for p in pools), default=PressureLevel.NORMAL)
    reasons = [f"{p.pool_id}: {r}" for p in pools for r in p.reasons]
    cap = config.max_managed_memory
    if cap is not None and cap > 0:
        share = managed_bytes / cap * 100.0
        cap_level = PressureLevel.NORMAL
        for candidate in (PressureLevel.EMERGENCY, PressureLevel.CRITICAL, PressureLevel.WARNING):
            if share >= _threshold(config, candidate):
                cap_level = candidate
                break
        if managed_bytes > cap:
            cap_level = max(cap_level, PressureLevel.CRITICAL)
        if cap_level:
            reasons.append(
                f"managed models use {managed_bytes} of max_managed_memory {int(cap)} bytes"
            )
        level = max(level, cap_level)
    return PressureReading(
        level=level,
        pools=pools,
        snapshot=snapshot,
        managed_bytes=managed_bytes,
        reasons=tuple(reasons),
    )
