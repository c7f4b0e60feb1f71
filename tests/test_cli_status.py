from __future__ import annotations

import psutil


def test_status_shows_the_real_ram_and_a_pressure_level(run_cli):
    result = run_cli("status", "--json")
    assert result.exit_code == 0
    data = result.json()
    [system] = [p for p in data["pools"] if p["id"] == "system"]
    assert system["total_bytes"] > 0
    assert system["total_bytes"] <= psutil.virtual_memory().total
    assert data["pressure"] in {"NORMAL", "WARNING", "CRITICAL", "EMERGENCY"}


def test_status_says_no_provider_is_reachable(run_cli, monkeypatch):
    # The embedded llama.cpp provider is always reachable where it is installed; leave out
    # every provider plugin.
    monkeypatch.setenv("MEMWARDEN_PLUGINS", "system,sqlite-state")
    result = run_cli("status")
    assert result.exit_code == 0
    assert "Pressure:" in result.stdout
    assert "Providers: none reachable" in result.stdout


def test_plugins_lists_builtins(run_cli):
    result = run_cli("plugins", "--json")
    names = {p["name"] for p in result.json()}
    assert {"system", "sqlite-state"} <= names


def test_unknown_plugin_in_env_exits_2(run_cli, monkeypatch):
    monkeypatch.setenv("MEMWARDEN_PLUGINS", "builtins,nvidai")
    result = run_cli("status")
    assert result.exit_code == 2
    assert "unknown plugin 'nvidai'" in result.stderr


def test_tables_print_data_verbatim_not_as_markup(capsys):
    from memwarden.cli.output import Output

    Output().table(None, ["MODEL"], [["[bold]qwen:1234:[/bold]"]])
    Output().line("[plugins.system] :1234:")
    printed = capsys.readouterr().out
    assert "[bold]qwen:1234:[/bold]" in printed
    assert "[plugins.system] :1234:" in printed
