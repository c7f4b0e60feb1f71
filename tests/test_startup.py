"""Start-up stays cheap: a provider's SDK is imported only when its server is there, rich only for
tables, sqlite-utils only for the first write, and importlib.metadata only when some installed
distribution declares a memwarden entry point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from memwarden.core import netprobe
from memwarden.core.plugins import any_entry_points


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_status(tmp_path: Path) -> tuple[dict, list[str]]:
    """`memwarden status --json` in a fresh interpreter, with Ollama and LM Studio pointed at
    closed ports; returns its JSON and which of the heavy modules it imported."""
    config = tmp_path / "memwarden.toml"
    config.write_text(
        f'[plugins.ollama]\nhost = "127.0.0.1:{_closed_port()}"\n\n'
        f'[plugins.lmstudio]\nhost = "127.0.0.1:{_closed_port()}"\n\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n'
    )
    script = (
        "import sys, json\n"
        "from memwarden.cli import main\n"
        "try:\n"
        f"    main(['--config', {str(config)!r}, 'status', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('ollama', 'lmstudio', 'httpx', 'pydantic', 'sqlite_utils', 'numpy', 'rich',\n"
        "         'llama_cpp', 'importlib.metadata')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr)\n"
    )
    env = {**os.environ, "MEMWARDEN_PLUGINS": "builtins"}
    env.pop("MEMWARDEN_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    return json.loads(done.stdout), json.loads(done.stderr.strip().splitlines()[-1])


def test_status_with_no_runtime_running_imports_no_provider_sdk(tmp_path):
    status, imported = _run_status(tmp_path)
    assert {p["name"]: p["reachable"] for p in status["providers"]} == {
        "ollama": False,
        "lmstudio": False,
        "llamacpp": True,
    }
    assert imported == []


def test_status_reports_a_refused_connection_as_the_reason(tmp_path):
    status, _ = _run_status(tmp_path)
    reasons = {p["name"]: p["reason"] for p in status["providers"]}
    assert reasons["ollama"].endswith(": not reachable (connection refused)")
    assert reasons["lmstudio"].endswith(": not reachable (connection refused)")


def test_unreachable_says_connection_refused_for_a_closed_port():
    assert netprobe.unreachable("127.0.0.1", _closed_port()) == "connection refused"


def test_unreachable_is_none_for_a_listening_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert netprobe.unreachable("127.0.0.1", server.getsockname()[1]) is None


def test_host_port_reads_urls_and_bare_host_ports():
    assert netprobe.host_port("http://127.0.0.1:11434/api", 1) == ("127.0.0.1", 11434)
    assert netprobe.host_port("localhost:1234", 1) == ("localhost", 1234)
    assert netprobe.host_port("https://box.example/ollama", 1) == ("box.example", 443)
    assert netprobe.host_port("box.example", 11434) == ("box.example", 11434)


def test_any_entry_points_finds_a_declared_group(tmp_path):
    dist = tmp_path / "someplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "entry_points.txt").write_text("[console_scripts]\nx = y\n\n[memwarden]\nmine = m\n")
    assert any_entry_points("memwarden", [str(tmp_path)]) is True


def test_any_entry_points_is_false_without_the_group(tmp_path):
    dist = tmp_path / "other-1.0.dist-info"
    dist.mkdir()
    (dist / "entry_points.txt").write_text("[console_scripts]\nmemwarden = y\n")
    (tmp_path / "bare-1.0.dist-info").mkdir()
    assert any_entry_points("memwarden", [str(tmp_path), str(tmp_path / "missing")]) is False


def test_nvidia_without_a_driver_answers_without_importing_pynvml(monkeypatch):
    from memwarden.core.config import Config
    from memwarden.plugins import nvidia

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(nvidia, "_driver_present", lambda: False)
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    nvidia.shutdown()
    try:
        result = nvidia.detect_device(config=Config())
    finally:
        nvidia.shutdown()
    assert result.reason == (
        "the NVIDIA driver's NVML library (libnvidia-ml) was not found: no NVIDIA driver "
        "(no /proc/driver/nvidia, no /dev/nvidiactl)"
    )
    assert "pynvml" not in sys.modules
