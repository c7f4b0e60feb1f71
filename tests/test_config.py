from __future__ import annotations

import pytest

from memwarden.core.config import ByteSize, Config, load_config
from memwarden.core.errors import ConfigError


def test_no_file_means_all_defaults():
    config = load_config()
    assert config == Config()
    assert config.pressure.warning_percent == 70.0
    assert config.budget.safety_margin_percent == 10.0


def test_values_from_the_file_override_defaults(write_config):
    path = write_config(
        """
        [pressure]
        warning_percent = 60
        max_managed_memory = "36GB"
        [plugins]
        disabled = ["sqlite-state"]
        [plugins.ollama]
        host = "http://127.0.0.1:11434"
        """
    )
    config = load_config(path)
    assert config.pressure.warning_percent == 60.0
    assert config.pressure.max_managed_memory == 36 * 10**9
    assert config.plugins.disabled == ("sqlite-state",)
    assert config.plugin_settings("ollama") == {"host": "http://127.0.0.1:11434"}


def test_config_is_found_through_the_environment(write_config, monkeypatch):
    path = write_config("[budget]\nsafety_margin_percent = 20\n", name="elsewhere.toml")
    monkeypatch.setenv("MEMWARDEN_CONFIG", str(path))
    assert load_config().budget.safety_margin_percent == 20.0


def test_config_in_the_working_directory_is_found(isolated_environment):
    (isolated_environment / "memwarden.toml").write_text("[state]\nenabled = false\n")
    assert load_config().state.enabled is False


def test_broken_toml_names_the_file_and_line(write_config):
    path = write_config("[pressure\nwarning_percent = 60\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert "line 1" in info.value.message
    assert info.value.exit_code == 2


def test_unknown_key_is_named_with_its_section(write_config):
    path = write_config("[pressure]\nwarn_percent = 60\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}: invalid configuration" in info.value.message
    assert "pressure.warn_percent: unknown key" in info.value.message


def test_wrong_type_says_what_is_expected(write_config):
    path = write_config('[pressure]\nwarning_percent = "high"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "pressure.warning_percent: expected a number, got 'high'" in info.value.message


def test_out_of_range_value_names_the_bound(write_config):
    path = write_config("[budget]\nsafety_margin_percent = 150\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "budget.safety_margin_percent: must be <= 100.0, got 150.0" in info.value.message


def test_thresholds_must_rise(write_config):
    path = write_config("[pressure]\nwarning_percent = 90\n")
    with pytest.raises(ConfigError, match="warning_percent < critical_percent"):
        load_config(path)


def test_every_problem_is_reported_at_once(write_config):
    path = write_config('[pressure]\nfoo = 1\n[state]\nenabled = "yes"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "pressure.foo: unknown key" in info.value.message
    assert "state.enabled: expected true or false, got 'yes'" in info.value.message


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1024, 1024),
        ("36GB", 36 * 10**9),
        ("512 MiB", 512 * 2**20),
        ("1.5GiB", int(1.5 * 2**30)),
    ],
)
def test_sizes_accept_units(text, expected):
    assert ByteSize.parse(text) == expected


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", -1, True])
def test_sizes_reject_nonsense(bad):
    with pytest.raises(ValueError):
        ByteSize.parse(bad)


def test_plugin_options_structure_a_plugin_section_with_clear_errors(write_config):
    import attrs

    @attrs.frozen
    class OllamaOptions:
        host: str = "http://127.0.0.1:11434"
        timeout_s: float = 5.0

    path = write_config('[plugins.ollama]\nhost = "http://gpu-box:11434"\ntimeout = 3\n')
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        config.plugin_options("ollama", OllamaOptions)
    assert "plugins.ollama.timeout: unknown key" in info.value.message

    good = load_config(write_config("[plugins.ollama]\ntimeout_s = 3\n", name="good.toml"))
    assert good.plugin_options("ollama", OllamaOptions).timeout_s == 3.0


def test_sources_say_where_each_value_came_from(write_config):
    config = load_config(write_config("[pressure]\ncritical_percent = 80\n"))
    sources = {key: source for key, _, source in config.sources()}
    assert sources["pressure.critical_percent"] == str(config.path)
    assert sources["pressure.warning_percent"] == "default"


def test_plugin_options_are_structured_once_per_config(write_config):
    import attrs

    @attrs.frozen
    class Options:
        timeout_s: float = 5.0

    config = load_config(write_config("[plugins.ollama]\ntimeout_s = 3\n"))
    first = config.plugin_options("ollama", Options)
    assert config.plugin_options("ollama", Options) is first
    changed = attrs.evolve(
        config, plugins=attrs.evolve(config.plugins, settings={"ollama": {"timeout_s": 9}})
    )
    assert changed.plugin_options("ollama", Options).timeout_s == 9.0
