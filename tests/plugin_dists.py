"""Installing the example third-party distributions in tests/plugin_dist into the test venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DISTS = Path(__file__).parent / "plugin_dist"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@contextmanager
def installed(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """pip-install ``tests/plugin_dist/<name>`` for the block, then uninstall it. Built from a
    copy, so the build leaves nothing behind in the source tree."""
    source = tmp_path_factory.mktemp("dist") / name
    shutil.copytree(DISTS / name, source)
    subprocess.run(
        [*PIP, "install", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        subprocess.run([*PIP, "uninstall", "-y", name], check=True, capture_output=True)
