"""Turning a device snapshot into pressure levels."""

from __future__ import annotations

from collections.abc import Mapping

from memwarden.core.config import PressureConfig
from memwarden.core.types import (
    DeviceSnapshot,
    LoadedModel,
    MemoryPool,
    PoolPressure,
    PressureLevel,
    PressureReading,
)
from memwarden.core.units import format_bytes

# The window of the PSI averages the stall rules read (the kernel's avg10).
PSI_WINDOW_S = 10.0

# The key under which ``evaluate(previous=...)`` remembers the level of the managed-memory cap.
MANAGED_CAP = "max_managed_memory"


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
        reasons.append(
            f"{format_bytes(pool.available_bytes)} free < min_free "
            f"{format_bytes(int(config.min_free))}"
        )
    stalled_rule = False
    for stalled, threshold, kind, psi_level in (
        (pool.psi_full_avg10, config.psi_full_critical_percent, "all", PressureLevel.CRITICAL),
        (pool.psi_some_avg10, config.psi_some_warning_percent, "some", PressureLevel.WARNING),
    ):
        # 0 (or None, from code) turns a rule off: TOML has no null.
        if stalled is not None and threshold and stalled >= threshold:
            level = max(level, psi_level)
            stalled_rule = True
            reasons.append(
                f"{kind} tasks stalled on memory {stalled:.1f}% of the last 10 s "
                f"(PSI) >= {threshold:g}%"
            )
            break
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
        stalled=stalled_rule,
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
    cap_level = PressureLevel.NORMAL
    if cap is not None and cap > 0:
        share = managed_bytes / cap * 100.0
        for candidate in (PressureLevel.EMERGENCY, PressureLevel.CRITICAL, PressureLevel.WARNING):
            if share >= _threshold(config, candidate):
                cap_level = candidate
                break
        if managed_bytes > cap:
            cap_level = max(cap_level, PressureLevel.CRITICAL)
        held = previous.get(MANAGED_CAP)
        # The cap gets the same hysteresis as a pool, so one model's KV growth does not flap it.
        if held is not None and held > cap_level and managed_bytes <= cap:
            release_at = _threshold(config, held) - config.hysteresis_percent
            if share > release_at:
                cap_level = held
                reasons.append(
                    f"{MANAGED_CAP}: held at {held} until managed models fall below "
                    f"{release_at:g}% of the cap (hysteresis)"
                )
        if cap_level:
            reasons.append(
                f"managed models use {format_bytes(managed_bytes)} of max_managed_memory "
                f"{format_bytes(int(cap))}"
            )
        level = max(level, cap_level)
    return PressureReading(
        level=level,
        pools=pools,
        snapshot=snapshot,
        managed_bytes=managed_bytes,
        reasons=tuple(reasons),
        managed_level=cap_level,
    )


def previous_levels(reading: PressureReading) -> dict[str, PressureLevel]:
    """What to pass as ``previous`` to the next ``evaluate`` for hysteresis."""
    levels = {p.pool_id: p.level for p in reading.pools}
    levels[MANAGED_CAP] = reading.managed_level
    return levels


def relief_needed(reading: PressureReading, config: PressureConfig) -> dict[str, int]:
    """Bytes to free, per pool id (and ``MANAGED_CAP``), for each to read NORMAL again.

    The target is the level's release point: below ``warning_percent - hysteresis_percent`` and
    above ``min_free``, so a relieved pool does not rise straight back to WARNING.
    """
    target_percent = max(config.warning_percent - config.hysteresis_percent, 0.0)
    needed: dict[str, int] = {}
    for pool_pressure_ in reading.pools:
        if pool_pressure_.level == PressureLevel.NORMAL:
            continue
        pool = reading.snapshot.pool(pool_pressure_.pool_id)
        if pool is None:
            continue
        used = pool.total_bytes - pool.available_bytes
        bytes_needed = used - int(pool.total_bytes * target_percent / 100.0)
        if config.min_free is not None:
            bytes_needed = max(bytes_needed, int(config.min_free) - pool.available_bytes)
        needed[pool.id] = max(bytes_needed, 1)
    cap = config.max_managed_memory
    if cap is not None and cap > 0 and reading.managed_level != PressureLevel.NORMAL:
        bytes_needed = reading.managed_bytes - int(cap * target_percent / 100.0)
        needed[MANAGED_CAP] = max(bytes_needed, 1)
    return needed


def managed_bytes(models: list[LoadedModel]) -> int:
    return sum(m.total_bytes for m in models)
