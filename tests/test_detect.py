"""Kernel event sources and the adaptive interval, on fixture files and fake descriptors."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from memwarden.core.config import Config, GovernorConfig, PressureConfig
from memwarden.core.detect import (
    AdaptiveInterval,
    CgroupV1Thresholds,
    CgroupV2Events,
    EventSource,
    binding_v1_cgroup,
    kernel_sources,
    parse_events,
    thresholds_for,
)
from memwarden.core.governor import Governor
from memwarden.core.monitor import Monitor
from memwarden.core.types import (
    DeviceSnapshot,
    MemoryPool,
    PoolKind,
    PoolPressure,
    PressureLevel,
    PressureReading,
)
from memwarden.testing.fakes import GIB, make_rig

MIB = 1 << 20
V1_UNLIMITED = "9223372036854771712\n"


def v1_cgroup(directory: Path, limit: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.limit_in_bytes").write_text(limit)
    (directory / "memory.usage_in_bytes").write_text("0\n")
    (directory / "cgroup.event_control").write_text("")
    return directory


def reading_at(used_bytes: int, total_bytes: int = 100 * GIB) -> PressureReading:
    pool = MemoryPool(
        id="system",
        kind=PoolKind.SYSTEM,
        name="System RAM",
        total_bytes=total_bytes,
        available_bytes=total_bytes - used_bytes,
        used_bytes=used_bytes,
        source="test",
    )
    percent = 100 * used_bytes / total_bytes
    level = PressureLevel.NORMAL if percent < 70 else PressureLevel.WARNING
    return PressureReading(
        level=level,
        pools=(PoolPressure("system", level, percent, total_bytes - used_bytes),),
        snapshot=DeviceSnapshot(pools=(pool,)),
    )


def test_memory_events_counters_are_parsed():
    text = "low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"
    assert parse_events(text) == {
        "low": 0,
        "high": 12,
        "max": 3,
        "oom": 1,
        "oom_kill": 1,
        "oom_group_kill": 0,
    }


def test_memory_events_fires_when_the_high_counter_rises(tmp_path):
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 4\nmax 0\noom 0\noom_kill 0\n")
    source = CgroupV2Events(events)
    events.write_text("low 0\nhigh 5\nmax 0\noom 0\noom_kill 0\n")
    try:
        assert source.fired() is True
    finally:
        source.close()


def test_memory_events_does_not_fire_when_only_low_changed(tmp_path):
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 4\nmax 0\noom 0\noom_kill 0\n")
    source = CgroupV2Events(events)
    events.write_text("low 9\nhigh 4\nmax 0\noom 0\noom_kill 0\n")
    try:
        assert source.fired() is False
    finally:
        source.close()


def test_memory_events_treats_pollerr_as_a_notification_not_a_failure(tmp_path):
    events = tmp_path / "memory.events"
    events.write_text("high 0\n")
    source = CgroupV2Events(events)
    try:
        assert (source.lost(select.POLLERR | select.POLLPRI), source.lost(select.POLLNVAL)) == (
            False,
            True,
        )
    finally:
        source.close()


def test_thresholds_cover_each_level_its_release_point_and_steps_above_half():
    pressure = PressureConfig(
        warning_percent=70.0, critical_percent=85.0, emergency_percent=95.0, hysteresis_percent=3.0
    )
    found = [round(t / (1000 * MIB) * 1000) / 10 for t in thresholds_for(1000 * MIB, pressure)]
    steps = [50 + 2.5 * i for i in range(21)]
    assert found == sorted(set(steps) | {67.0, 82.0, 92.0, 70.0, 85.0, 95.0})


def test_v1_thresholds_are_registered_through_event_control(tmp_path):
    directory = v1_cgroup(tmp_path / "memory" / "job", "1048576000\n")
    source = CgroupV1Thresholds(directory, [100 * MIB, 200 * MIB])
    try:
        lines = (directory / "cgroup.event_control").read_text().splitlines()
        fds = {line.split()[0] for line in lines}
        assert ([line.split()[2] for line in lines], fds) == (
            [str(100 * MIB), str(200 * MIB)],
            {str(source.fd)},
        )
    finally:
        source.close()


def test_a_v1_threshold_event_fires_once_per_signal(tmp_path):
    directory = v1_cgroup(tmp_path / "memory" / "job", "1048576000\n")
    source = CgroupV1Thresholds(directory, [100 * MIB])
    try:
        os.eventfd_write(source.fd, 1)  # what the kernel does when usage crosses
        assert (source.fired(), source.fired()) == (True, False)
    finally:
        source.close()


def test_the_binding_v1_cgroup_is_the_nearest_ancestor_with_a_limit(tmp_path):
    mount = v1_cgroup(tmp_path / "memory", V1_UNLIMITED)
    parent = v1_cgroup(mount / "jobs", "2147483648\n")
    own = v1_cgroup(parent / "job-1", V1_UNLIMITED)
    assert binding_v1_cgroup(own, mount) == (parent, 2 * GIB)


def test_no_v1_cgroup_binds_when_none_has_a_limit(tmp_path):
    mount = v1_cgroup(tmp_path / "memory", V1_UNLIMITED)
    own = v1_cgroup(mount / "job-1", V1_UNLIMITED)
    assert binding_v1_cgroup(own, mount) is None


def test_no_cgroup_source_is_armed_without_the_system_plugin():
    rig = make_rig()
    sources, statuses = kernel_sources(rig.warden)
    assert (sources, [s.detail for s in statuses]) == ([], ["the system plugin is not enabled"])


def test_the_interval_is_the_levels_when_far_from_the_next_level():
    interval = AdaptiveInterval(PressureConfig())
    interval.next_s(reading_at(30 * GIB), 1.0, now=0.0)
    assert interval.next_s(reading_at(30 * GIB), 1.0, now=1.0) == 1.0


def test_the_interval_shortens_to_half_the_time_left_at_the_rate_usage_rises():
    interval = AdaptiveInterval(PressureConfig(warning_percent=70.0))
    interval.next_s(reading_at(50 * GIB), 1.0, now=0.0)
    # 10 GiB/s, 10 GiB below 70%: crossing in 1 s, so sample again in 0.5 s.
    assert interval.next_s(reading_at(60 * GIB), 1.0, now=1.0) == 0.5


def test_the_interval_shortens_in_proportion_to_headroom_near_the_next_level():
    interval = AdaptiveInterval(PressureConfig(warning_percent=70.0))
    # 2% of the total left to 70%: 2/5 of the level's interval.
    assert round(interval.next_s(reading_at(68 * GIB), 1.0, now=0.0), 6) == 0.4


def test_the_interval_never_falls_below_its_minimum():
    interval = AdaptiveInterval(PressureConfig(warning_percent=70.0), min_s=0.05)
    interval.next_s(reading_at(10 * GIB), 1.0, now=0.0)
    assert interval.next_s(reading_at(69 * GIB), 1.0, now=0.001) == 0.05


def test_the_interval_never_exceeds_the_levels_when_it_is_below_the_minimum():
    interval = AdaptiveInterval(PressureConfig(), min_s=0.05)
    assert interval.next_s(reading_at(30 * GIB), 0.01, now=0.0) == 0.01


class PipeSource(EventSource):
    """A fake event source: a pipe the test writes to, as the kernel would signal."""

    name = "pipe"

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        super().__init__(self.read_end, "a test pipe")

    def fired(self) -> bool:
        return bool(os.read(self.fd, 64))

    def close(self) -> None:
        super().close()
        os.close(self.write_end)


def test_an_event_source_wakes_the_monitor_before_its_interval():
    rig = make_rig(Config(governor=GovernorConfig(interval_normal_s=30.0)))
    source = PipeSource()
    os.write(source.write_end, b"x")

    def stop_after_two(_reading: object, _report: object) -> None:
        if monitor.samples >= 2:
            monitor.stop()

    with Monitor(
        Governor(rig.warden), psi=False, events=False, on_reading=stop_after_two
    ) as monitor:
        monitor.sources.append(source)
        started = time.monotonic()
        monitor.run(duration_s=20.0)
        elapsed = time.monotonic() - started
    assert (monitor.event_wakeups, monitor.samples, elapsed < 10.0) == (1, 2, True)
