"""The conformance suite applied to the device plugins, each where it has something to report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fake_pynvml import FakeNvml, load_recording

from memwarden.core.config import parse_config_data
from memwarden.testing import DevicePluginContract

FIXTURES = Path(__file__).parent / "fixtures"


class TestSystemPluginInACgroupV2Container(DevicePluginContract):
    @pytest.fixture
    def plugin(self):
        from memwarden.plugins import system

        return system

    @pytest.fixture
    def config(self):
        root = FIXTURES / "cgroup_v2_container"
        return parse_config_data({"plugins": {"system": {"root": str(root)}}}, None)


class TestNvidiaPluginReplayingTheH100(DevicePluginContract):
    @pytest.fixture
    def plugin(self, monkeypatch):
        from memwarden.plugins import nvidia

        monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(load_recording()))
        nvidia.shutdown()
        yield nvidia
        nvidia.shutdown()


class TestNvidiaPluginWithoutADriver(DevicePluginContract):
    may_find_no_device = True

    @pytest.fixture
    def plugin(self, monkeypatch):
        from memwarden.plugins import nvidia

        monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(load_recording(), init_error=12))
        nvidia.shutdown()
        yield nvidia
        nvidia.shutdown()


class TestApplePluginOnAnM1(DevicePluginContract):
    @pytest.fixture
    def plugin(self, monkeypatch):
        from memwarden.plugins import apple

        sysctl = (FIXTURES / "apple/m1_16gb_sysctl.txt").read_text()
        vm_stat = (FIXTURES / "apple/m1_16gb_vm_stat.txt").read_text()
        monkeypatch.setattr(apple, "is_apple_silicon", lambda *args: True)
        monkeypatch.setattr(
            apple, "run_command", lambda argv: sysctl if argv[0].endswith("sysctl") else vm_stat
        )
        return apple


class TestAmdPluginOnASysfsTree(DevicePluginContract):
    @pytest.fixture
    def plugin(self):
        from memwarden.plugins import amd

        return amd

    @pytest.fixture
    def config(self):
        root = FIXTURES / "amd_sysfs"
        return parse_config_data({"plugins": {"amd": {"root": str(root)}}}, None)
