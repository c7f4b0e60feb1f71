from __future__ import annotations

import types

import pytest

from memwarden import hookimpl
from memwarden.core.config import Config, parse_config_data
from memwarden.core.errors import ModelFileError, UnknownPluginError
from memwarden.core.plugins import Plugins
from memwarden.core.types import MemoryPool, ModelRef, PoolKind
from memwarden.core.warden import Warden

BUILTINS = (
    ("system", "memwarden.plugins.system"),
    ("sqlite-state", "memwarden.plugins.sqlite_state"),
)


def make_plugins(config: Config | None = None, env: dict[str, str] | None = None) -> Plugins:
    return Plugins(config or Config(), builtins=BUILTINS, load_entry_points=False, env=env or {})


def pool(pool_id: str) -> MemoryPool:
    return MemoryPool(
        id=pool_id,
        kind=PoolKind.GPU,
        name=pool_id,
        total_bytes=100,
        available_bytes=50,
        used_bytes=50,
        source="test",
    )


class GoodDevice:
    @hookimpl
    def detect_device(self, config):
        return [pool("good:0")]


class BrokenDevice:
    @hookimpl
    def detect_device(self, config):
        raise RuntimeError("sensor exploded")


def test_builtins_are_registered_by_module_path_like_any_plugin():
    plugins = make_plugins()
    names = {info.name: info for info in plugins.plugin_list()}
    assert names["system"].source == "built-in"
    assert names["system"].hooks == ["detect_device"]
    assert names["system"].state == "enabled"
    assert plugins.pm.get_plugin("system") is not None


def test_a_plugin_that_raises_is_isolated_and_named():
    plugins = make_plugins()
    plugins.register(GoodDevice())
    plugins.register(BrokenDevice())
    warden = Warden(Config(), plugins)

    snapshot = warden.snapshot()

    assert {p.id for p in snapshot.pools} >= {"system", "good:0"}
    [failure] = warden.plugin_failures
    assert failure.plugin == "BrokenDevice"
    assert failure.hook == "detect_device"
    assert failure.error == "RuntimeError: sensor exploded"
    states = {info.name: info.state for info in plugins.plugin_list()}
    assert states["BrokenDevice"] == "failed"
    assert states["GoodDevice"] == "enabled"


def test_repeated_failures_are_counted_not_duplicated():
    plugins = make_plugins()
    plugins.register(BrokenDevice())
    warden = Warden(Config(), plugins)
    warden.snapshot()
    warden.snapshot()
    [failure] = warden.plugin_failures
    assert failure.count == 2


def test_a_deliberate_memwarden_error_reaches_the_caller():
    class StrictEstimator:
        @hookimpl(tryfirst=True)
        def estimate_model_size(self, model, context_tokens, options):
            raise ModelFileError(f"{model.path}: truncated GGUF file")

    plugins = make_plugins()
    plugins.register(StrictEstimator())
    with pytest.raises(ModelFileError, match="truncated"):
        Warden(Config(), plugins).estimate(ModelRef("m", path="/x.gguf"), 512)


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load():
    plugins = Plugins(
        Config(),
        builtins=(*BUILTINS, ("ghost", "memwarden.plugins.does_not_exist")),
        load_entry_points=False,
        env={},
    )
    info = {i.name: i for i in plugins.plugin_list()}
    assert info["ghost"].state == "failed"
    assert "ModuleNotFoundError" in info["ghost"].reason
    assert info["system"].state == "enabled"
    assert Warden(Config(), plugins).snapshot().pool("system") is not None


def test_env_restricts_which_plugins_load():
    plugins = make_plugins(env={"MEMWARDEN_PLUGINS": "system"})
    states = {i.name: (i.state, i.reason) for i in plugins.plugin_list()}
    assert states["system"] == ("enabled", None)
    assert states["sqlite-state"] == ("disabled", "not listed in $MEMWARDEN_PLUGINS")
    assert plugins.pm.get_plugin("sqlite-state") is None


def test_config_disables_a_builtin():
    config = parse_config_data({"plugins": {"disabled": ["sqlite-state"]}}, None)
    plugins = make_plugins(config)
    states = {i.name: i.state for i in plugins.plugin_list()}
    assert states == {"system": "enabled", "sqlite-state": "disabled"}


def test_config_enabled_list_with_builtins_token():
    config = parse_config_data({"plugins": {"enabled": ["builtins"]}}, None)
    assert {i.state for i in make_plugins(config).plugin_list()} == {"enabled"}


def test_unknown_plugin_name_in_config_is_a_clear_error():
    config = parse_config_data({"plugins": {"disabled": ["nvidai"]}}, None)
    with pytest.raises(UnknownPluginError) as info:
        make_plugins(config)
    assert "unknown plugin 'nvidai'" in info.value.message
    assert "system" in info.value.hint


def test_unknown_plugin_name_in_env_is_a_clear_error():
    with pytest.raises(UnknownPluginError, match=r"\$MEMWARDEN_PLUGINS: unknown plugin 'nope'"):
        make_plugins(env={"MEMWARDEN_PLUGINS": "builtins,nope"})


def test_a_module_plugin_can_be_registered_directly():
    module = types.ModuleType("my_devices")

    @hookimpl
    def detect_device(config):
        return [pool("mine:0")]

    module.detect_device = detect_device
    plugins = make_plugins()
    plugins.register(module)
    assert Warden(Config(), plugins).snapshot().pool("mine:0") is not None
