"""Configuration mistakes found before they bite: plugin tables checked like the rest, values that
would overflow a sleep, files that are not config files, and an empty plugin list."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memwarden.core.config import GovernorConfig, load_config
from memwarden.core.errors import ConfigError
from memwarden.core.plugins import Plugins


def check(run_cli, write_config, text: str):
    return run_cli("config", "check", str(write_config(text)))


def problems(result) -> list[str]:
    """The "key: what is wrong" lines of an invalid-configuration error."""
    lines = result.stderr.splitlines()
    return [line.strip() for line in lines[1:] if not line.strip().startswith("hint:")]


def test_config_check_lists_plugin_and_core_problems_at_once(run_cli, write_config):
    result = check(
        run_cli,
        write_config,
        "[budget]\nmargin = 5\n\n[plugins.ollama]\ntimeot_s = 3\n\n[plugins.system]\nroot = 1\n",
    )
    assert result.exit_code == 2
    assert problems(result) == [
        "budget.margin: unknown key",
        "plugins.ollama.timeot_s: unknown key",
        "plugins.system.root: expected a string, got 1",
    ]


def test_a_misspelt_plugin_table_is_an_error_naming_the_known_plugins(run_cli, write_config):
    result = check(run_cli, write_config, '[plugins.olama]\nhost = "http://127.0.0.1:1"\n')
    assert result.exit_code == 2
    [problem] = problems(result)
    assert problem.startswith("plugins.olama: no installed plugin is named 'olama' (installed: ")
    assert "ollama" in problem


def test_an_unknown_plugin_in_enabled_is_an_error_from_config_check(run_cli, write_config):
    result = check(run_cli, write_config, '[plugins]\nenabled = ["nosuch"]\n')
    assert result.exit_code == 2
    [problem] = problems(result)
    assert problem.startswith("plugins.enabled: unknown plugin 'nosuch' (installed: ")


def test_an_empty_enabled_list_is_an_error(run_cli, write_config):
    result = check(run_cli, write_config, "[plugins]\nenabled = []\n")
    assert result.exit_code == 2
    [problem] = problems(result)
    assert problem.startswith("plugins.enabled: names no plugin, so nothing would be measured")


def test_an_empty_plugins_environment_variable_is_an_error(run_cli, monkeypatch):
    monkeypatch.setenv("MEMWARDEN_PLUGINS", "")
    result = run_cli("status")
    assert result.exit_code == 2
    assert "$MEMWARDEN_PLUGINS is set but names no plugin" in result.stderr


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("retries = -1", "plugins.ollama.retries: must be >= 0, got -1"),
        ("timeout_s = nan", "plugins.ollama.timeout_s: must be a finite number, got nan"),
        ("timeout_s = -2.0", "plugins.ollama.timeout_s: must be >= 0.01, got -2.0"),
        ("load_timeout_s = inf", "plugins.ollama.load_timeout_s: must be a finite number, got inf"),
        (
            'host = "http://127.0.0.1:99999"',
            "plugins.ollama.host: must be a URL with a port from 1 to 65535 "
            "(http://127.0.0.1:11434), got 'http://127.0.0.1:99999'",
        ),
    ],
)
def test_ollama_option_ranges_are_checked(run_cli, write_config, table, expected):
    result = check(run_cli, write_config, f"[plugins.ollama]\n{table}\n")
    assert result.exit_code == 2
    assert problems(result) == [expected]


def test_a_bad_lmstudio_port_is_an_error(run_cli, write_config):
    result = check(run_cli, write_config, '[plugins.lmstudio]\nhost = "localhost:0"\n')
    assert problems(result) == [
        "plugins.lmstudio.host: must be host:port with a port from 1 to 65535 "
        "(127.0.0.1:1234), got 'localhost:0'"
    ]


def test_a_key_for_a_plugin_that_takes_no_options_is_unknown(run_cli, write_config):
    result = check(run_cli, write_config, "[plugins.nvidia]\ngpu = 0\n")
    assert problems(result) == ["plugins.nvidia.gpu: unknown key"]


def test_a_strategy_table_takes_no_keys_since_governor_tunes_strategies(run_cli, write_config):
    result = check(run_cli, write_config, "[plugins.idle-unload]\nafter_s = 60\n")
    assert problems(result) == ["plugins.idle-unload.after_s: unknown key"]


def test_a_plugin_table_typo_stops_start_up_too(run_cli, write_config):
    path = write_config("[plugins.ollama]\nretries = -1\n")
    result = run_cli("--config", str(path), "status")
    assert result.exit_code == 2
    assert "plugins.ollama.retries: must be >= 0, got -1" in result.stderr


def test_a_valid_file_with_plugin_tables_passes_config_check(run_cli, write_config):
    text = (
        '[plugins.ollama]\nhost = "localhost:11434"\ntimeout_s = 3\nretries = 0\n\n'
        '[plugins.lmstudio]\nhost = "127.0.0.1:1234"\n\n[plugins.llamacpp]\nthreads = 4\n'
    )
    result = check(run_cli, write_config, text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().endswith(": valid")


@pytest.mark.parametrize("value", ["inf", "1e300", "3e6"])
def test_an_absurd_governor_interval_is_rejected(run_cli, write_config, value):
    result = check(run_cli, write_config, f"[governor]\ninterval_normal_s = {value}\n")
    assert result.exit_code == 2
    [problem] = problems(result)
    assert problem.startswith("governor.interval_normal_s: must be ")


def test_a_psi_path_that_is_a_regular_file_is_refused(tmp_path):
    ordinary = tmp_path / "notes.txt"
    ordinary.write_text("my notes, which a PSI trigger would overwrite\n")
    with pytest.raises(ValueError, match="is an ordinary file with data in it"):
        GovernorConfig(psi_path=str(ordinary))
    assert ordinary.read_text() == "my notes, which a PSI trigger would overwrite\n"


def test_a_psi_path_that_does_not_exist_is_accepted(tmp_path):
    config = GovernorConfig(psi_path=str(tmp_path / "no-such-psi"))
    assert config.psi_path == str(tmp_path / "no-such-psi")


def test_a_directory_as_config_is_not_called_not_found(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert (
        info.value.message == f"{tmp_path}: is a directory, not a config file (named by --config)"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_config_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "memwarden.toml"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "memwarden", "--config", str(fifo), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "is not a regular file (a FIFO, socket or device)" in result.stderr
    assert "not found" not in result.stderr


def test_a_byte_order_mark_is_explained(run_cli, tmp_path):
    path = tmp_path / "memwarden.toml"
    path.write_bytes(b"\xef\xbb\xbf[pressure]\nwarning_percent = 60\n")
    result = run_cli("config", "check", str(path))
    assert result.exit_code == 2
    assert "starts with a UTF-8 byte-order mark (BOM)" in result.stderr
    assert "save it as UTF-8 without BOM" in result.stderr


def test_plugins_check_their_tables_when_registered_by_hand(write_config):
    from memwarden.plugins.ollama import OllamaOptions

    class Mine:
        __name__ = "mine"
        OPTIONS = OllamaOptions

    config = load_config(write_config("[plugins.mine]\nretries = -3\n"))
    manager = Plugins(config, builtins=(), load_entry_points=False, env={})
    with pytest.raises(ConfigError, match=r"plugins\.mine\.retries: must be >= 0, got -3"):
        manager.register(Mine())


def test_watch_refuses_a_nan_duration(run_cli):
    result = run_cli("watch", "--duration", "nan")
    assert result.exit_code == 2
    assert "'nan' is not a number of seconds between 0 (excluded) and 31,622,400" in result.stderr


def test_an_unwritable_state_path_is_named_once(tmp_path, caplog, write_config):
    from memwarden.core.types import Event
    from memwarden.core.warden import Warden

    blocker = tmp_path / "file"
    blocker.write_text("")
    path = write_config(f'[state]\npath = "{blocker}/sub/memwarden.db"\n')
    warden = Warden.from_config(path)
    with caplog.at_level("WARNING", logger="memwarden.plugins"):
        warden.emit(Event(kind="test", message="hello"))
        # Writes are queued: the writer fails on its first batch, and the next records say so.
        from memwarden.plugins import sqlite_state

        assert sqlite_state.store_for(warden.config).flush() is False
        for _ in range(3):
            warden.emit(Event(kind="test", message="hello"))
    [record] = caplog.records
    assert str(blocker) in record.getMessage()
