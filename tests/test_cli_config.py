from __future__ import annotations


def test_config_check_accepts_a_valid_file(run_cli, write_config):
    path = write_config("[pressure]\nwarning_percent = 65\n")
    result = run_cli("config", "check", str(path))
    assert result.exit_code == 0
    assert "valid" in result.stdout


def test_config_check_broken_toml_exits_2_naming_the_file(run_cli, write_config):
    path = write_config("[pressure\n")
    result = run_cli("config", "check", str(path))
    assert result.exit_code == 2
    assert str(path) in result.stderr
    assert "not valid TOML" in result.stderr


def test_config_check_unknown_key_exits_2_naming_the_key(run_cli, write_config):
    path = write_config("[budget]\nmargin = 5\n")
    result = run_cli("config", "check", str(path))
    assert result.exit_code == 2
    assert "budget.margin: unknown key" in result.stderr


def test_config_check_wrong_type_exits_2_naming_the_key(run_cli, write_config):
    path = write_config("[state]\nenabled = 1\n")
    result = run_cli("config", "check", str(path))
    assert result.exit_code == 2
    assert "state.enabled: expected true or false, got 1" in result.stderr


def test_config_check_json_reports_the_error_on_stdout(run_cli, write_config):
    path = write_config("[state]\nenabled = 1\n")
    result = run_cli("config", "check", str(path), "--json")
    assert result.exit_code == 2
    error = result.json()["error"]
    assert error["code"] == "config-invalid"
    assert "state.enabled" in error["message"]


def test_a_broken_config_stops_status_with_exit_2(run_cli, write_config):
    path = write_config("[pressure]\nwarning_percent = true\n")
    result = run_cli("--config", str(path), "status")
    assert result.exit_code == 2
    assert "pressure.warning_percent" in result.stderr


def test_config_show_lists_values_and_sources(run_cli, write_config):
    path = write_config("[pressure]\nwarning_percent = 65\n")
    result = run_cli("--config", str(path), "config", "show", "--json")
    assert result.exit_code == 0
    settings = {s["key"]: s for s in result.json()["settings"]}
    assert settings["pressure.warning_percent"] == {
        "key": "pressure.warning_percent",
        "value": 65.0,
        "source": str(path),
    }
    assert settings["pressure.critical_percent"]["source"] == "default"
