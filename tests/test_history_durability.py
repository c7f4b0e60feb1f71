"""The history store under real faults: a process killed mid-burst, two processes on one file, a
read-only disk and a full one. Each uses real processes or real filesystems."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memwarden import hookimpl
from memwarden.core.config import Config, StateConfig
from memwarden.core.governor import Governor
from memwarden.core.types import Event, PressureLevel
from memwarden.plugins import sqlite_state
from memwarden.testing.fakes import make_rig

WRITER = Path(__file__).with_name("history_writer.py")


def start_writer(path: Path, count: int, tag: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(count), tag, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )


def messages(path: Path, tag: str) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("select message from event where kind = ?", (tag,)).fetchall()
    finally:
        conn.close()
    return {int(row[0]) for row in rows}


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("pragma integrity_check").fetchone()[0]
    finally:
        conn.close()


def kill_after_acks(path: Path, acks: int) -> int:
    """Start a writer of an endless burst, kill -9 it after ``acks`` acknowledgements; the
    number of records it last said were acknowledged."""
    child = start_writer(path, 10_000_000, "burst")
    acked = 0
    try:
        assert child.stdout is not None
        for _ in range(acks):
            line = child.stdout.readline()
            assert line.startswith("acked "), line
            acked = int(line.split()[1])
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    return acked


def test_kill_9_during_a_burst_loses_nothing_acknowledged_in_20_of_20_runs(tmp_path):
    rng = random.Random(14)
    results = []
    for run in range(20):
        path = tmp_path / f"kill{run}.db"
        acked = kill_after_acks(path, rng.randint(1, 40))
        kept = messages(path, "burst")
        results.append((set(range(acked)) <= kept, integrity(path)))
    assert results == [(True, "ok")] * 20


def test_two_processes_writing_one_file_leave_it_intact_with_every_record(tmp_path):
    path = tmp_path / "shared.db"
    children = [start_writer(path, 3000, tag, "--samples") for tag in ("one", "two")]
    for child in children:
        child.communicate(timeout=60)
    assert [child.returncode for child in children] == [0, 0]
    assert integrity(path) == "ok"
    assert (messages(path, "one"), messages(path, "two")) == (set(range(3000)), set(range(3000)))


class Seen:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def on_event(self, event, warden):
        self.events.append(event)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        sqlite_state.close_all()
        subprocess.run(["umount", "-l", str(where)], check=False)


def governed_steps(path: Path, steps: int) -> tuple[list[Event], list[PressureLevel]]:
    """A warden storing history at ``path``; the governor steps through rising and falling
    pressure, flushing the store after each step. Events seen, and the level after each step."""
    rig = make_rig(Config(state=StateConfig(path=str(path))))
    seen = Seen()
    rig.warden.plugins.register(seen)
    governor = Governor(rig.warden)
    levels = []
    for n in range(steps):
        rig.device.set_used_percent(90 if n % 2 == 0 else 40)
        governor.step()
        sqlite_state.store_for(rig.warden.config).flush()
        levels.append(governor.level)
    return seen.events, levels


def test_a_read_only_disk_is_reported_once_and_the_governor_goes_on(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "size=1m,ro") as where:
        events, levels = governed_steps(where / "memwarden.db", 6)
    failures = [e for e in events if e.kind == "plugin-failed"]
    assert [(e.data["plugin"], e.data["hook"]) for e in failures] == [
        ("sqlite-state", "persist_state")
    ]
    assert f"{where} is on a read-only file system" in str(failures[0].data["error"])
    assert levels == [PressureLevel.CRITICAL, PressureLevel.NORMAL] * 3


def test_a_full_disk_is_reported_once_and_the_governor_goes_on(tmp_path):
    with mounted_tmpfs(tmp_path / "full", "size=256k") as where:
        # Fill the disk but for a few pages: the history's first batches fit, later ones do not.
        with contextlib.suppress(OSError), open(where / "filler", "wb") as filler:
            filler.write(b"\0" * (256 * 1024 - 48 * 1024))
        events, levels = governed_steps(where / "memwarden.db", 40)
    failures = [e for e in events if e.kind == "plugin-failed"]
    assert [(e.data["plugin"], e.data["hook"]) for e in failures] == [
        ("sqlite-state", "persist_state")
    ]
    assert "database or disk is full" in str(failures[0].data["error"])
    assert levels == [PressureLevel.CRITICAL, PressureLevel.NORMAL] * 20


FSIZE_CHILD = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
from memwarden.core.config import StateConfig
from memwarden.core.types import Event
from memwarden.plugins.sqlite_state import Store, StateWriteFailed
path = sys.argv[1]
store = Store(Path(path), StateConfig(path=path, flush_interval_s=0.01))
reports = []
for n in range(3000):
    try:
        store.put("event", Event(kind="fill", message="x" * 200, at=float(n)))
    except StateWriteFailed as exc:
        reports.append(str(exc))
    if n % 50 == 49:
        store.flush()
print(len(reports), store.committed > 0, store.dropped > 0)
print(reports[0] if reports else "")
"""


def test_a_file_size_limit_is_reported_once_and_writing_goes_on_failing_quietly(tmp_path):
    """The full disk without root: RLIMIT_FSIZE makes every write past 256 KiB fail."""
    done = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(tmp_path / "limited.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    counts, report = done.stdout.splitlines()
    assert counts == "1 True True"
    assert report.startswith(f"cannot write history to {tmp_path / 'limited.db'}: ")
