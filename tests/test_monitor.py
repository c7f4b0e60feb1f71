"""The monitor loop: sampling, speeding up under pressure, PSI fallback, stopping."""

from __future__ import annotations

import threading
import time

import pytest

from memwarden.core.config import Config, GovernorConfig
from memwarden.core.governor import Governor
from memwarden.core.monitor import Monitor, PsiTrigger
from memwarden.core.types import PressureLevel
from memwarden.testing.fakes import ManualClock, make_rig


def test_once_takes_one_sample_and_reports_it():
    rig = make_rig()
    seen = []
    with Monitor(Governor(rig.warden), psi=False, on_reading=lambda r, _: seen.append(r)) as m:
        m.run(once=True)
    assert len(seen) == 1
    assert seen[0].level is PressureLevel.NORMAL


def test_the_interval_shortens_as_the_level_rises():
    rig = make_rig()
    with Monitor(Governor(rig.warden), psi=False) as monitor:
        intervals = [monitor.interval_s(level) for level in PressureLevel]
    assert intervals == sorted(intervals, reverse=True)
    assert intervals[0] > intervals[-1]


def test_sampling_is_faster_under_pressure():
    # Binary fractions, so the manual clock lands exactly on the deadline.
    config = Config(governor=GovernorConfig(interval_normal_s=1.0, interval_critical_s=0.125))
    counts = {}
    for percent in (20, 88):
        rig = make_rig(config)
        rig.device.set_used_percent(percent)
        clock = ManualClock()
        with Monitor(Governor(rig.warden), psi=False, clock=clock, sleep=clock.sleep) as monitor:
            monitor.run(duration_s=1.0)
            counts[percent] = monitor.samples
    assert counts == {20: 1, 88: 8}


def test_a_timed_run_ends_when_its_duration_has_passed_on_the_clock():
    rig = make_rig(Config(governor=GovernorConfig(interval_normal_s=0.25)))
    clock = ManualClock(start=50.0)
    with Monitor(Governor(rig.warden), psi=False, clock=clock, sleep=clock.sleep) as monitor:
        monitor.run(duration_s=1.0)
    assert (clock(), monitor.samples) == (51.0, 4)


def test_stop_from_another_thread_ends_the_loop_at_once():
    rig = make_rig(Config(governor=GovernorConfig(interval_normal_s=30.0)))
    with Monitor(Governor(rig.warden), psi=False) as monitor:
        threading.Timer(0.1, monitor.stop).start()
        started = time.monotonic()
        monitor.run()
        assert time.monotonic() - started < 5.0
        assert monitor.samples == 1


def test_a_missing_psi_file_falls_back_to_timed_sampling_and_says_so(tmp_path):
    config = GovernorConfig(psi_path=str(tmp_path / "no-such-psi"))
    trigger, status = PsiTrigger.arm(config)
    assert trigger is None
    assert not status.armed
    assert "does not exist" in status.detail
    assert "timed sampling" in status.detail


def test_a_psi_trigger_can_be_switched_off():
    trigger, status = PsiTrigger.arm(GovernorConfig(psi_trigger=False))
    assert trigger is None
    assert "psi_trigger = false" in status.detail


def test_a_refused_trigger_is_reported_not_raised(tmp_path):
    # A regular file accepts the write, so emulate the kernel's refusal with a directory.
    config = GovernorConfig(psi_path=str(tmp_path))
    trigger, status = PsiTrigger.arm(config)
    assert trigger is None
    assert status.detail.startswith("unavailable: ")


def _psi_writable() -> bool:
    trigger, _ = PsiTrigger.arm(GovernorConfig())
    if trigger is None:
        return False
    trigger.close()
    return True


@pytest.mark.skipif(not _psi_writable(), reason="this kernel does not allow a PSI trigger here")
def test_the_monitor_arms_a_psi_trigger_where_the_kernel_allows():
    rig = make_rig()
    with Monitor(Governor(rig.warden)) as monitor:
        assert monitor.psi_status.armed
        assert "some 150000 us in 2000000 us" in monitor.psi_status.detail
        monitor.run(once=True)


def _count_listings(rig) -> list[int]:
    calls = [0]
    listing = rig.provider.loaded_models

    def counted():
        calls[0] += 1
        return listing()

    rig.provider.loaded_models = counted
    return calls


def test_at_normal_the_runtimes_are_asked_for_their_models_only_every_few_seconds():
    rig = make_rig(Config(governor=GovernorConfig(models_refresh_s=60.0)))
    calls = _count_listings(rig)
    with Monitor(Governor(rig.warden), psi=False) as monitor:
        for _ in range(5):
            monitor.run_once()
    assert rig.device.calls == 5  # the pools are measured at every sample
    assert calls[0] == 1


def test_under_pressure_every_sample_asks_the_runtimes_again():
    rig = make_rig(Config(governor=GovernorConfig(models_refresh_s=60.0)))
    rig.device.set_used_percent(88)
    calls = _count_listings(rig)
    with Monitor(Governor(rig.warden), psi=False) as monitor:
        for _ in range(3):
            monitor.run_once()
    assert calls[0] >= 3
