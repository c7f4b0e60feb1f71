"""End to end: the real governor, the real embedded llama.cpp runtime, the real Gemma 3 270M."""

from __future__ import annotations

import attrs
import psutil
import pytest

from memwarden.core.config import ByteSize, parse_config_data
from memwarden.core.governor import Governor
from memwarden.core.types import PressureLevel
from memwarden.core.warden import Warden

pytest.importorskip("llama_cpp")

PLUGINS = ["system", "llamacpp", "priority-eviction", "emergency-unload", "refuse-loads"]


@pytest.mark.slow
def test_cap_below_two_instances_unloads_the_lower_priority_one(gemma_gguf, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "gemma-low.gguf").symlink_to(gemma_gguf)
    (models / "gemma-high.gguf").symlink_to(gemma_gguf)
    config = parse_config_data(
        {
            "plugins": {"enabled": PLUGINS, "llamacpp": {"models_dir": str(models)}},
            "models": {"gemma-low": {"priority": 1}, "gemma-high": {"priority": 5}},
            "state": {"path": str(tmp_path / "state.db")},
        },
        None,
    )
    warden = Warden(config)
    provider = warden.providers()["llamacpp"]
    try:
        low = provider.load("gemma-low", context_tokens=2048)
        high = provider.load("gemma-high", context_tokens=2048)
        assert low.pid != high.pid
        low_resident = psutil.Process(low.pid).memory_full_info().uss
        managed = sum(m.total_bytes for m in warden.loaded_models())
        # The cap fits one instance with room to spare, but not both.
        cap = ByteSize(int(managed * 0.75))
        warden.config = attrs.evolve(
            config, pressure=attrs.evolve(config.pressure, max_managed_memory=cap)
        )
        governor = Governor(warden)

        report = governor.step()

        assert report is not None
        assert governor.last_reading.level is PressureLevel.NORMAL
        remaining = warden.loaded_models()
        assert [m.name for m in remaining] == ["gemma-high"]
        assert not psutil.pid_exists(low.pid) or psutil.Process(low.pid).status() == "zombie"
        assert psutil.pid_exists(high.pid)
        # Measured, not assumed: what the runtime holds now fits under the cap, and the
        # evicted worker's memory is back with the system.
        assert sum(m.total_bytes for m in remaining) <= cap
        resident_before = low_resident + psutil.Process(high.pid).memory_full_info().uss
        resident_after = sum(m.resident_bytes for m in remaining)
        assert resident_before - resident_after >= 0.9 * low_resident
    finally:
        provider.unload_all()
