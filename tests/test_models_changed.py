"""Loads and unloads made through memwarden are known the moment they happen: the governor's list
of loaded models changes without asking the runtimes, and the monitor samples at once."""

from __future__ import annotations

import threading
import time

from memwarden.core.config import Config, GovernorConfig, PressureConfig, StateConfig
from memwarden.core.governor import Governor
from memwarden.core.monitor import Monitor
from memwarden.core.types import PressureLevel
from memwarden.testing.fakes import GIB, make_rig


def _rig(tmp_path, **governor):
    config = Config(
        state=StateConfig(enabled=False),
        pressure=PressureConfig(max_managed_memory=100 * GIB),
        governor=GovernorConfig(**governor),
    )
    rig = make_rig(config, total_bytes=1000 * GIB, baseline_bytes=10 * GIB)
    for name in ("a", "b"):
        rig.provider.add_model(name, 9 * GIB)
    return rig


def test_a_load_through_the_governor_is_in_its_list_without_asking_the_runtime(tmp_path):
    rig = _rig(tmp_path)
    governor = Governor(rig.warden)
    calls = []
    # The runtime lists nothing: the model can only be in the list because the load put it there.
    rig.provider.loaded_models = lambda: calls.append(1) or []  # type: ignore[method-assign]
    loaded = governor.load("a", context_tokens=1024)
    assert governor.loaded_models() == [loaded]
    assert calls == [1]  # admission's own sample, before the load


def test_a_load_through_the_governor_calls_every_change_listener_once(tmp_path):
    rig = _rig(tmp_path)
    governor = Governor(rig.warden)
    heard = []
    governor.change_listeners.append(lambda: heard.append("changed"))
    governor.load("a", context_tokens=1024)
    assert heard == ["changed"]


def test_an_unload_through_the_warden_leaves_the_governors_list_at_once(tmp_path):
    rig = _rig(tmp_path)
    governor = Governor(rig.warden)
    governor.load("a", context_tokens=1024)
    governor.load("b", context_tokens=1024)
    rig.warden.unload("a")
    assert [m.name for m in governor.loaded_models()] == ["b"]


def test_a_load_crossing_the_managed_cap_wakes_a_monitor_sleeping_a_minute(tmp_path):
    rig = _rig(tmp_path, interval_normal_s=60.0, models_refresh_s=60.0)
    rig.provider.add_model("big", 80 * GIB)
    governor = Governor(rig.warden)
    monitor = Monitor(governor, psi=False)
    runner = threading.Thread(target=monitor.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 5.0
        while monitor.samples < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        governor.load("big", context_tokens=1024)
        while monitor.samples < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert monitor.samples == 2
        assert governor.level == PressureLevel.WARNING
    finally:
        monitor.stop()
        runner.join(5.0)
        monitor.close()
