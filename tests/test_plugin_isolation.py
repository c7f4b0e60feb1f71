"""Third-party plugin faults stay with the plugin: wrong types, blocking hooks, names and pool ids
already taken. Each is recorded as a failure naming the plugin, and everything else works."""

from __future__ import annotations

import threading
import time

import pytest

from memwarden import hookimpl
from memwarden.core import warden as warden_module
from memwarden.core.config import Config
from memwarden.core.plugins import (
    ENTRY_POINT,
    PluginContractError,
    PluginInfo,
    Plugins,
    _Candidate,
)
from memwarden.core.providers import Provider
from memwarden.core.types import (
    AvailableModel,
    DeviceUnavailable,
    LoadedModel,
    MemoryPool,
    PoolKind,
    ProviderStatus,
)
from memwarden.core.warden import Warden

BUILTINS = (("system", "memwarden.plugins.system"),)


def make_warden(*plugins: object) -> Warden:
    manager = Plugins(Config(), builtins=BUILTINS, load_entry_points=False, env={})
    for plugin in plugins:
        manager.register(plugin)
    return Warden(Config(), manager)


def pool(pool_id: str, source: str) -> MemoryPool:
    return MemoryPool(
        id=pool_id,
        kind=PoolKind.GPU,
        name=pool_id,
        total_bytes=100,
        available_bytes=50,
        used_bytes=50,
        source=source,
    )


class Device:
    def __init__(self, name: str, answer: object) -> None:
        self.__name__ = name
        self.answer = answer

    @hookimpl
    def detect_device(self, config):
        return self.answer


def failures(warden: Warden) -> dict[str, str]:
    return {f.plugin: f.error for f in warden.plugin_failures}


def test_a_detect_device_that_returns_the_wrong_type_is_isolated_and_named():
    warden = make_warden(Device("weird", {"gpu": 1}))
    snapshot = warden.snapshot()
    assert [p.id for p in snapshot.pools] == ["system"]
    assert failures(warden) == {
        "weird": "PluginContractError: returned a dict; expected a list of MemoryPool, a "
        "DeviceUnavailable or None"
    }


def test_a_detect_device_that_returns_a_list_of_strings_is_isolated():
    warden = make_warden(Device("strings", ["gpu:0"]))
    assert [p.id for p in warden.snapshot().pools] == ["system"]
    assert failures(warden)["strings"].startswith("PluginContractError: returned a list of str")


def test_a_duplicate_pool_id_is_refused_naming_both_plugins_and_the_first_is_kept():
    warden = make_warden(
        Device("first", [pool("gpu:0", "first")]), Device("second", [pool("gpu:0", "second")])
    )
    [gpu] = [p for p in warden.snapshot().pools if p.id == "gpu:0"]
    assert gpu.source == "first"
    assert failures(warden) == {
        "second": "PluginContractError: reported pool id 'gpu:0', which plugin 'first' already "
        "reports; the first one is kept"
    }


class Blocking:
    __name__ = "blocking"

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    @hookimpl
    def detect_device(self, config):
        self.calls += 1
        self.release.wait(30)
        return [pool("slow:0", "blocking")]


def test_a_blocking_detect_device_misses_its_deadline_and_the_snapshot_goes_on(monkeypatch):
    monkeypatch.setattr(warden_module, "DEVICE_TIMEOUT_S", 0.2)
    blocking = Blocking()
    warden = make_warden(blocking)
    started = time.monotonic()
    snapshot = warden.snapshot()
    blocking.release.set()
    assert time.monotonic() - started < 5.0
    assert [p.id for p in snapshot.pools] == ["system"]
    assert snapshot.unavailable == (
        DeviceUnavailable(source="blocking", reason="no answer within 0.2 s"),
    )
    assert failures(warden) == {"blocking": "HookTimeout: no answer within 0.2 s"}


def test_a_blocking_detect_device_is_not_called_again_while_its_call_runs(monkeypatch):
    monkeypatch.setattr(warden_module, "DEVICE_TIMEOUT_S", 0.2)
    blocking = Blocking()
    warden = make_warden(blocking)
    warden.snapshot()
    second = warden.snapshot()
    blocking.release.set()
    assert blocking.calls == 1
    [unavailable] = second.unavailable
    assert unavailable.reason.startswith("no answer within 0.2 s (its call of ")


class Runtime(Provider):
    def __init__(self, name: str, models: tuple[str, ...]) -> None:
        self.name = name
        self.models = models

    def status(self) -> ProviderStatus:
        return ProviderStatus(name=self.name, reachable=True)

    def available_models(self) -> list[AvailableModel]:
        return [AvailableModel(name=m, provider=self.name) for m in self.models]

    def loaded_models(self) -> list[LoadedModel]:
        return []

    def load(self, model, *, context_tokens=None, keep_alive_s=None) -> LoadedModel:
        raise NotImplementedError

    def unload(self, model: str) -> None:
        raise NotImplementedError


class Registers:
    def __init__(self, name: str, *providers: object) -> None:
        self.__name__ = name
        self.providers = providers

    @hookimpl
    def register_providers(self, register, config):
        for provider in self.providers:
            register(provider)


def test_a_provider_name_already_taken_is_refused_and_the_others_kept():
    warden = make_warden(
        Registers("real", Runtime("ollama", ("a",))),
        Registers("copycat", Runtime("ollama", ("b",)), Runtime("mine", ("c",))),
    )
    assert sorted(warden.providers()) == ["mine", "ollama"]
    assert [m.name for m in warden.available_models() if m.provider == "ollama"] == ["a"]
    assert failures(warden) == {
        "copycat": "PluginContractError: registered a provider named 'ollama', a name plugin "
        "'real' already registered; this one is refused"
    }


def test_registering_something_that_is_not_a_provider_is_refused():
    warden = make_warden(Registers("odd", "ollama"), Registers("real", Runtime("r", ())))
    assert list(warden.providers()) == ["r"]
    assert failures(warden) == {
        "odd": "PluginContractError: registered a str, not a memwarden Provider"
    }


class ImpostorPlugins(Plugins):
    """Discovers one entry point named like a built-in, as an installed distribution would."""

    def _discover_entry_points(self) -> list[_Candidate]:
        info = PluginInfo(
            name="system",
            source=ENTRY_POINT,
            module="impostor:plugin",
            distribution="memwarden-impostor",
            version="0.1",
        )
        return [_Candidate(info=info, load=lambda: Device("system", [pool("x", "impostor")]))]


def test_an_entry_point_named_like_a_builtin_is_refused_and_the_builtin_kept():
    plugins = ImpostorPlugins(Config(), builtins=BUILTINS, env={})
    listing = [(i.name, i.source, i.state, i.reason) for i in plugins.plugin_list()]
    assert listing == [
        ("system", "built-in", "enabled", None),
        (
            "system",
            "entry point",
            "refused",
            "its name 'system' is taken by the built-in plugin from memwarden.plugins.system; "
            "rename its entry point",
        ),
    ]
    assert [p.id for p in Warden(Config(), plugins).snapshot().pools] == ["system"]


def test_a_plugin_failing_the_same_way_every_time_is_logged_once(caplog):
    warden = make_warden(Device("weird", "not a list"))
    with caplog.at_level("WARNING", logger="memwarden.plugins"):
        for _ in range(3):
            warden.snapshot()
    assert len(caplog.records) == 1
    assert [f.count for f in warden.plugin_failures] == [3]


def test_a_plugin_options_attribute_that_is_not_an_attrs_class_is_refused():
    class Odd:
        __name__ = "odd"
        OPTIONS = dict

        @hookimpl
        def detect_device(self, config):
            return None

    manager = Plugins(Config(), builtins=(), load_entry_points=False, env={})
    with pytest.raises(PluginContractError, match="OPTIONS must be an attrs class, got type"):
        manager.register(Odd())
