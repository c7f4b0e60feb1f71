"""End-to-end detection: a real process allocates memory in steps across CRITICAL inside a
memory cgroup with a limit, and a real monitor in the same cgroup reaches ``on_pressure``.

    sudo .venv/bin/python benchmarks/detect_e2e.py            # 20 crossings each way
    sudo .venv/bin/python benchmarks/detect_e2e.py --quick    # 8

Needs a cgroup v1 memory controller that this process may create a child in (root, or a
delegated sub-tree); elsewhere it says why it skipped (there is no cgroup v2 variant yet). The
child gets a 512 MiB limit; the monitor (``memwarden.core.monitor.Monitor`` with the system
plugin and a strategy that notes the time of each ``on_pressure``) runs in it, and for each
trial an allocator process joins it and touches 8 MiB every 10 ms until it is past 92% of the
limit, holds that for 1.5 s and exits. Latency: from the start of the step that took the
cgroup's working set (usage minus inactive file cache, what the system plugin counts as used)
past ``critical_percent`` to the first ``on_pressure`` at CRITICAL or above. Three ways, in the
same run: kernel events and the adaptive interval (the defaults), the adaptive interval alone,
and timed sampling at the level's interval only (as before).
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

LIMIT_BYTES = 512 << 20
STEP_BYTES = 8 << 20
STEP_PAUSE_S = 0.010
UP_TO_SHARE = 0.92
CRITICAL_PERCENT = 85.0

ALLOCATOR = r"""
import os, sys, time
directory, limit, step, pause, up_to = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    float(sys.argv[4]), float(sys.argv[5])
def used():
    usage = int(open(os.path.join(directory, "memory.usage_in_bytes")).read())
    for line in open(os.path.join(directory, "memory.stat")):
        if line.startswith("total_inactive_file "):
            return usage - int(line.split()[1])
    return usage
held = []
while True:
    started = time.monotonic()
    held.append(b"\1" * step)  # written, so every page is touched and charged
    after = used()
    print(f"S {started:.6f} {after}", flush=True)
    if after >= up_to * limit:
        break
    time.sleep(pause)
time.sleep(1.5)  # held past the 1 s interval at NORMAL, so timed sampling sees it too
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


# -- the monitor, run inside the cgroup -----------------------------------------------------


def run_monitor(mode: str) -> None:
    from memwarden.core.config import Config, GovernorConfig, StateConfig
    from memwarden.core.governor import Governor
    from memwarden.core.monitor import Monitor
    from memwarden.core.plugins import Plugins
    from memwarden.core.types import PressureLevel
    from memwarden.core.warden import Warden
    from memwarden.hookspecs import hookimpl

    class Noter:
        @hookimpl
        def on_pressure(self, reading, context) -> None:
            if reading.level >= PressureLevel.CRITICAL:
                print(f"P {time.monotonic():.6f} {reading.level.name}", flush=True)

        @hookimpl
        def on_event(self, event, warden) -> None:
            if event.kind == "level-changed":
                print(f"L {time.monotonic():.6f} {event.data['to']}", flush=True)

    config = Config(
        state=StateConfig(enabled=False),
        governor=GovernorConfig(
            kernel_events=mode == "events",
            adaptive_interval=mode != "timer",
            psi_trigger=mode == "events",
        ),
    )
    plugins = Plugins(config, load_entry_points=False, env={"MEMWARDEN_PLUGINS": "system"})
    plugins.register(Noter())
    governor = Governor(Warden(config, plugins))
    monitor = Monitor(governor)
    armed = [f"{s.name}: {s.detail}" for s in monitor.source_status if s.armed]
    print("; ".join(armed) or "no event source", flush=True)
    try:
        monitor.run()
    finally:
        monitor.close()


# -- the driver ------------------------------------------------------------------------------


def own_v1_memory_cgroup() -> Path | None:
    from memwarden.plugins import system

    return system.layout_for(Path("/")).v1_dir


def make_child(parent: Path) -> Path | None:
    child = parent / f"memwarden-bench-{os.getpid()}"
    try:
        child.mkdir()
        (child / "memory.limit_in_bytes").write_text(str(LIMIT_BYTES))
    except OSError as exc:
        print(f"cannot create a memory cgroup under {parent}: {exc}", file=sys.stderr)
        if child.exists():
            child.rmdir()
        return None
    return child


def _join(child: Path) -> None:
    (child / "cgroup.procs").write_text(str(os.getpid()))


# How the monitor runs: kernel events and the adaptive interval; the adaptive interval alone;
# timed sampling at the level's interval only (as before detect.py).
MODES = ("events", "adaptive", "timer")


def trials(child: Path, count: int, mode: str) -> tuple[list[float], str]:
    """Latencies (seconds) of ``count`` crossings with the monitor in ``mode`` (MODES)."""
    here = Path(__file__).resolve()
    monitor = subprocess.Popen(
        [sys.executable, str(here), "--monitor", mode],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _join(child),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert monitor.stdout is not None
        for line in monitor.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    sources = lines.get(timeout=60).strip()
    latencies: list[float] = []
    try:
        for _ in range(count):
            time.sleep(0.3)
            while not lines.empty():
                lines.get_nowait()
            allocator = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    ALLOCATOR,
                    str(child),
                    str(LIMIT_BYTES),
                    str(STEP_BYTES),
                    str(STEP_PAUSE_S),
                    str(UP_TO_SHARE),
                ],
                capture_output=True,
                text=True,
                preexec_fn=lambda: _join(child),
                check=True,
            )
            crossed = next(
                float(started)
                for _, started, used in (s.split() for s in allocator.stdout.splitlines())
                if int(used) >= CRITICAL_PERCENT / 100 * LIMIT_BYTES
            )
            pressure_at = None
            deadline = time.monotonic() + 10.0
            normal = False
            while time.monotonic() < deadline and not normal:
                try:
                    kind, at, level = lines.get(timeout=0.5).split()
                except queue.Empty:
                    continue
                if kind == "P" and pressure_at is None and float(at) >= crossed - 0.5:
                    pressure_at = float(at)
                normal = kind == "L" and level == "NORMAL" and pressure_at is not None
            if pressure_at is None:
                raise RuntimeError("on_pressure was not called within 10 s of the crossing")
            latencies.append(pressure_at - crossed)
    finally:
        monitor.terminate()
        monitor.wait(10)
    return latencies, sources


def measure(count: int, modes: tuple[str, ...] = MODES) -> dict[str, tuple[list[float], str]] | str:
    """Latencies per mode (MODES), or why they could not be measured here."""
    parent = own_v1_memory_cgroup()
    if parent is None:
        return "no cgroup v1 memory controller for this process"
    child = make_child(parent)
    if child is None:
        return f"cannot create a child memory cgroup under {parent}"
    try:
        return {mode: trials(child, count, mode) for mode in modes}
    finally:
        for _ in range(50):
            try:
                child.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 crossings instead of 20")
    parser.add_argument("--monitor", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.monitor:
        run_monitor(args.monitor)
        return 0
    found = measure(8 if args.quick else 20)
    if isinstance(found, str):
        print(f"skipped: {found}")
        return 0
    for name, (latencies, sources) in found.items():
        ms = [x * 1000 for x in latencies]
        print(
            f"{name:8}  median {statistics.median(ms):6.1f} ms  p99 {percentile(ms, 0.99):6.1f} ms"
            f"  max {max(ms):6.1f} ms  ({len(ms)} crossings; {sources})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
