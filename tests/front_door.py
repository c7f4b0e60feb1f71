"""Helpers for the front-door tests: a memwarden serve on a free loopback port, backed by the
loopback Ollama-protocol server (tests/ollama_server.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ollama_server import MODELS, FakeModel, FakeOllama, serve

from memwarden.core.config import load_config
from memwarden.core.warden import Warden
from memwarden.serve.app import FrontDoor

# A third model the size of llama3.2: under a 4 GiB cap only one of the two fits at a time
# (each is estimated at 2.6 GiB at 4,096 tokens of context; loaded, each takes 1.9 GiB).
QWEN = FakeModel("qwen3:latest", 2019393189, "llama", "3.2B", "Q4_K_M", 131072)


def fake_ollama() -> FakeOllama:
    return FakeOllama(models={m.name: m for m in (*MODELS, QWEN)})


@contextmanager
def front_door(
    tmp_path: Path,
    *,
    config: str = "",
    token: str | None = None,
    host: str = "127.0.0.1",
    monitor: bool = False,
    fake: FakeOllama | None = None,
    announce: bool = False,
) -> Iterator[tuple[FrontDoor, FakeOllama]]:
    """Start a fake Ollama and ``memwarden serve`` in front of it; yield both."""
    with serve(fake or fake_ollama()) as (url, state):
        path = tmp_path / "memwarden.toml"
        path.write_text(
            f"""
[state]
path = "{tmp_path / "state.db"}"

[plugins]
disabled = ["lmstudio", "llamacpp"]

[plugins.ollama]
host = "{url}"
retries = 0
{config}
"""
        )
        warden = Warden(load_config(path))
        door = FrontDoor(
            warden,
            host=host,
            port=0,
            token=token,
            monitor=monitor,
            psi=False,
            announce=announce,
        )
        with door:
            yield door, state


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passed (generous: CI is busy)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
