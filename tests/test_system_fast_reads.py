"""The system plugin keeps kernel files open between snapshots, and only kernel files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from memwarden.plugins import system


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="no /proc/meminfo here")
def test_proc_meminfo_stays_open_and_reads_whole_each_time():
    system.forget_layouts()
    first = system._read(Path("/proc/meminfo"))
    fd = system._open_files.get("/proc/meminfo")
    second = system._read(Path("/proc/meminfo"))
    assert (
        first.startswith("MemTotal:"),
        second.startswith("MemTotal:"),
        fd is not None,
        system._open_files.get("/proc/meminfo") == fd,
    ) == (True, True, True, True)
    system.forget_layouts()


def test_a_recorded_file_is_read_afresh_after_it_is_rewritten(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1 kB\n")
    system._read(meminfo)
    meminfo.write_text("MemTotal: 2 kB\n")
    assert (system._read(meminfo), str(meminfo) in system._open_files) == (
        "MemTotal: 2 kB\n",
        False,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_proc_self_files_are_not_kept_open():
    system._read(Path("/proc/self/cgroup"))
    assert "/proc/self/cgroup" not in system._open_files


def test_forgetting_the_layouts_closes_the_kept_files():
    if Path("/proc/meminfo").is_file():
        system._read(Path("/proc/meminfo"))
    system.forget_layouts()
    assert system._open_files == {}
