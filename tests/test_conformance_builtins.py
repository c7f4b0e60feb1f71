"""The shipped conformance suite, applied to memwarden's own built-in plugins."""

from __future__ import annotations

import pytest
import sqlite_utils

from memwarden.core.config import parse_config_data
from memwarden.core.types import Event
from memwarden.testing import DevicePluginContract, PersistencePluginContract, warden_with


class TestSystemPlugin(DevicePluginContract):
    @pytest.fixture
    def plugin(self):
        from memwarden.plugins import system

        return system


class TestSqliteStatePlugin(PersistencePluginContract):
    @pytest.fixture
    def plugin(self):
        from memwarden.plugins import sqlite_state

        return sqlite_state

    @pytest.fixture
    def config(self, tmp_path):
        return parse_config_data({"state": {"path": str(tmp_path / "state.db")}}, None)

    def test_events_land_in_their_table_once_flushed(self, warden, config, plugin):
        warden.emit(Event(kind="level-changed", message="up"))
        assert plugin.store_for(config).flush() is True
        rows = list(sqlite_utils.Database(config.state.resolved_path())["event"].rows)
        assert [(r["kind"], r["message"]) for r in rows] == [("level-changed", "up")]


class TestContractCatchesARaisingPlugin:
    """The suite must fail a plugin that raises, not hide it behind the core's isolation."""

    def test_raising_device_plugin_fails_the_contract(self):
        class Broken:
            from memwarden import hookimpl

            @hookimpl
            def detect_device(self, config):
                raise RuntimeError("boom")

        contract = DevicePluginContract()
        with pytest.raises(AssertionError, match="Broken in detect_device: RuntimeError: boom"):
            contract.test_detect_device_returns_pools_or_says_why_not(warden_with(Broken()))
