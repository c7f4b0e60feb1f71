from __future__ import annotations

import pytest

from memwarden.core.config import GovernorConfig, ModelPolicy, load_config
from memwarden.core.errors import ConfigError


def test_governor_defaults_sample_faster_as_pressure_rises():
    governor = load_config().governor
    assert (
        governor.interval_normal_s
        > governor.interval_warning_s
        > governor.interval_critical_s
        > governor.interval_emergency_s
    )
    assert governor.max_loaded_models is None
    assert governor.psi_trigger is True


def test_governor_values_from_the_file_override_defaults(write_config):
    path = write_config(
        "[governor]\nmax_loaded_models = 3\ninterval_normal_s = 2\npsi_trigger = false\n"
    )
    governor = load_config(path).governor
    assert governor == GovernorConfig(max_loaded_models=3, interval_normal_s=2.0, psi_trigger=False)


def test_model_policies_are_keyed_by_model_name(write_config):
    path = write_config(
        """
        [models."llama3.1:8b"]
        priority = 5
        pinned = true
        [models.embedder]
        critical = true
        idle_unload_after_s = 60
        """
    )
    config = load_config(path)
    assert config.model_policy("llama3.1:8b") == ModelPolicy(priority=5, pinned=True)
    assert config.model_policy("embedder").idle_unload_after_s == 60.0
    assert config.model_policy("embedder").critical is True


def test_model_policy_falls_back_to_the_next_name_then_the_default(write_config):
    config = load_config(write_config('[models."gemma"]\npriority = 2\n'))
    assert config.model_policy("instance-7", "gemma").priority == 2
    assert config.model_policy("unknown") == ModelPolicy()


def test_bad_model_policy_names_the_model_and_key(write_config):
    path = write_config('[models."llama3"]\npriority = "high"\npinnd = true\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "models.llama3.priority: expected an integer, got 'high'" in info.value.message
    assert "models.llama3.pinnd: unknown key" in info.value.message


def test_model_policy_must_be_a_table(write_config):
    with pytest.raises(ConfigError, match="must be a table"):
        load_config(write_config("[models]\nllama3 = 5\n"))


def test_unknown_governor_key_is_named(write_config):
    with pytest.raises(ConfigError, match=r"governor\.max_models: unknown key"):
        load_config(write_config("[governor]\nmax_models = 2\n"))


def test_max_loaded_models_must_be_positive(write_config):
    with pytest.raises(ConfigError, match=r"governor\.max_loaded_models: must be >= 1, got 0"):
        load_config(write_config("[governor]\nmax_loaded_models = 0\n"))


def test_psi_stall_must_fit_in_its_window(write_config):
    with pytest.raises(ConfigError, match=r"psi_stall_us .* must be less than psi_window_us"):
        load_config(write_config("[governor]\npsi_stall_us = 3000000\n"))


def test_governor_and_model_keys_are_listed_with_their_source(write_config):
    path = write_config('[governor]\nmax_loaded_models = 2\n[models."gemma"]\npinned = true\n')
    sources = {key: (value, origin) for key, value, origin in load_config(path).sources()}
    assert sources["governor.max_loaded_models"] == (2, str(path))
    assert sources["governor.interval_normal_s"] == (1.0, "default")
    assert sources["models.gemma.pinned"] == (True, str(path))
