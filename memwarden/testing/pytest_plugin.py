"""memwarden's pytest plugin: fixtures for testing memwarden plugins, found by plain ``pytest``.

Installed with memwarden through the ``pytest11`` entry point, so a plugin author's tests use
these fixtures without a conftest.py::

    def test_my_device_plugin_reports_its_pool(memwarden_warden_with):
        warden = memwarden_warden_with(my_plugin)
        assert warden.snapshot().pool("fpga:0") is not None

Everything memwarden is imported inside the fixtures, so a pytest run that uses none of them
does not pay for importing memwarden.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from memwarden.core.config import Config
    from memwarden.core.warden import Warden
    from memwarden.testing.fakes import ManualClock, Rig


@pytest.fixture
def memwarden_config(tmp_path: Path) -> Config:
    """A default configuration whose state (the SQLite history) lives in this test's tmp_path,
    so no test reads or writes the user's history."""
    from memwarden.core.config import Config, StateConfig

    return Config(state=StateConfig(path=str(tmp_path / "memwarden-state.db")))


@pytest.fixture
def memwarden_warden_with(memwarden_config: Config) -> Callable[..., Warden]:
    """``memwarden_warden_with(plugin, config=None)``: a warden with only that plugin (no
    built-in or installed ones), registered through the real plugin manager. ``config``
    defaults to ``memwarden_config``."""
    from memwarden.testing.conformance import warden_with

    def make(plugin: object, config: Config | None = None) -> Warden:
        return warden_with(plugin, config if config is not None else memwarden_config)

    return make


@pytest.fixture
def memwarden_rig(memwarden_config: Config) -> Rig:
    """A scripted 100 GiB pool, an in-memory runtime (``memory``) and the built-in strategies:
    ``memwarden.testing.fakes.make_rig`` with ``memwarden_config``. Register your plugin with
    ``memwarden_rig.warden.plugins.register(plugin)``."""
    from memwarden.testing.fakes import make_rig

    return make_rig(memwarden_config)


@pytest.fixture
def memwarden_clock() -> ManualClock:
    """A clock that moves only when the test moves it: pass it as ``clock`` to ``Warden`` and
    ``Monitor`` (and its ``sleep`` to ``Monitor``)."""
    from memwarden.testing.fakes import ManualClock

    return ManualClock()
