"""`memwarden plan` and `memwarden watch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from memwarden.cli import AppContext, cli
from memwarden.testing.fakes import GIB, make_rig


def invoke(rig, *args: str):
    app = AppContext(None)
    app._warden = rig.warden
    return CliRunner().invoke(cli, list(args), obj=app, catch_exceptions=False)


def test_plan_shows_no_action_without_pressure():
    rig = make_rig()
    result = invoke(rig, "plan")
    assert result.exit_code == 0
    assert "No pressure: the ladder would do nothing." in result.stdout


def test_plan_json_lists_the_ordered_actions_without_taking_them():
    rig = make_rig()
    rig.provider.add_model("m", 30 * GIB)
    rig.provider.load("m")
    rig.device.set_used_percent(90)
    result = invoke(rig, "plan", "--json")
    data = json.loads(result.stdout)
    assert data["level"] == "CRITICAL"
    assert [a["kind"] for a in data["actions"]] == ["refuse-loads", "unload"]
    assert data["actions"][1]["target"] == "m#1"
    assert all(a["expected_to_run"] for a in data["actions"])
    assert rig.provider.unloaded == []


def test_plan_table_marks_what_the_ladder_would_take():
    rig = make_rig()
    rig.provider.add_model("m", 30 * GIB)
    rig.provider.load("m")
    rig.device.set_used_percent(90)
    result = invoke(rig, "plan")
    assert "The ladder would take" in result.stdout
    assert "priority-eviction" in result.stdout


def test_plan_load_shows_the_evictions_that_make_room():
    rig = make_rig(total_bytes=100 * GIB, baseline_bytes=10 * GIB)
    rig.provider.add_model("old", 50 * GIB)
    rig.provider.add_model("new", 40 * GIB)
    rig.provider.load("old")
    result = invoke(rig, "plan", "--load", "new", "--provider", "memory", "--context", "1")
    assert "Loading new: fits after evicting:" in result.stdout
    assert "unload old#1" in result.stdout
    assert rig.provider.unloaded == []


def test_watch_once_json_prints_started_reading_and_stopped_lines():
    rig = make_rig()
    rig.device.set_used_percent(75)
    result = invoke(rig, "watch", "--once", "--json", "--no-psi")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["type"] for line in lines if line["type"] != "event"] == [
        "started",
        "reading",
        "stopped",
    ]
    [reading] = [line for line in lines if line["type"] == "reading"]
    assert reading["level"] == "WARNING"
    assert reading["pools"][0]["id"] == "system"
    assert any(line["type"] == "event" and line["kind"] == "level-changed" for line in lines)


def test_watch_once_shows_a_view_for_people():
    rig = make_rig()
    result = invoke(rig, "watch", "--once", "--no-psi")
    assert result.exit_code == 0
    assert "pressure NORMAL" in result.stdout
    assert "stopped (once) after 1 sample(s)" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_watch_stops_cleanly_on_a_signal(signum, write_config):
    config = write_config("[governor]\ninterval_normal_s = 30\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "memwarden", "--config", str(config), "watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        started = json.loads(process.stdout.readline())
        assert started["type"] == "started"
        assert json.loads(process.stdout.readline())["type"] == "reading"
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    stopped = json.loads(out.splitlines()[-1])
    assert stopped == {**stopped, "type": "stopped", "reason": f"signal {signum.name}"}
    assert "Traceback" not in err
