"""Governor benchmarks: detection latency, idle CPU of `memwarden watch`, eviction planning.

    .venv/bin/python benchmarks/governor.py           # about 3 minutes
    .venv/bin/python benchmarks/governor.py --quick   # about 30 seconds

Prints one table. The scripted device and in-memory provider are the ones the tests use
(tests/governor_fakes.py), registered through the real plugin manager.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from memwarden.core.config import Config, PressureConfig, StateConfig
from memwarden.core.governor import Governor
from memwarden.core.monitor import Monitor
from memwarden.core.types import PressureLevel
from memwarden.hookspecs import hookimpl
from memwarden.testing.fakes import GIB, make_rig


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class PressureCallClock:
    """A strategy that proposes nothing and notes when on_pressure is first called."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.at: float | None = None

    @hookimpl
    def on_pressure(self, reading, context) -> None:
        if not self.called.is_set():
            self.at = time.perf_counter()
            self.called.set()


def detection_latency(trials: int, state_dir: str) -> list[float]:
    """Seconds from the scripted device crossing the CRITICAL threshold to on_pressure, with
    the real monitor loop at default settings (the crossing is not a real stall, so the PSI
    trigger does not fire: this is the timed-sampling path, the worst case)."""
    config = Config(state=StateConfig(path=os.path.join(state_dir, "latency.db")))
    rig = make_rig(config)
    clock = PressureCallClock()
    rig.warden.plugins.register(clock)
    governor = Governor(rig.warden)
    monitor = Monitor(governor)
    runner = threading.Thread(target=monitor.run, daemon=True)
    rig.device.set_used_percent(20)
    runner.start()
    latencies = []
    # Cross at phases spread evenly over the sampling interval (in a shuffled order), so that
    # a few dozen trials are not biased by where random draws happen to fall.
    interval = config.governor.interval_normal_s
    phases = [(i + 0.5) / trials * interval for i in range(trials)]
    random.Random(7).shuffle(phases)
    try:
        for phase in phases:
            time.sleep(phase)
            clock.called.clear()
            crossed = time.perf_counter()
            rig.device.set_used_percent(90)
            if not clock.called.wait(10.0):
                raise RuntimeError("on_pressure was not called within 10 s")
            latencies.append(clock.at - crossed)
            rig.device.set_used_percent(20)
            while governor.level != PressureLevel.NORMAL:
                time.sleep(0.01)
    finally:
        monitor.stop()
        runner.join(5.0)
        monitor.close()
    return latencies


def idle_watch_cpu(seconds: float, state_dir: str, json_lines: bool) -> float:
    """CPU time of an idle `memwarden watch` subprocess over ``seconds``, as % of one core."""
    env = os.environ.copy()
    env.update(
        {
            "XDG_DATA_HOME": os.path.join(state_dir, "data"),
            "XDG_CONFIG_HOME": os.path.join(state_dir, "config"),
            "MEMWARDEN_PLUGINS": "builtins",
        }
    )
    env.pop("MEMWARDEN_CONFIG", None)
    command = [sys.executable, "-m", "memwarden", "watch"] + (["--json"] if json_lines else [])
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE if json_lines else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=state_dir,
    )
    try:
        if json_lines:
            json.loads(process.stdout.readline())  # started: imports and set-up are done
        else:
            time.sleep(3.0)
        handle = psutil.Process(process.pid)
        before, wall_before = handle.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, wall_after = handle.cpu_times(), time.monotonic()
    finally:
        process.terminate()
        process.wait(10)
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (wall_after - wall_before)


def managed_cap_latency(trials: int, state_dir: str) -> list[float]:
    """Seconds from a load made through memwarden (``Governor.load``) taking the managed models
    past ``[pressure] max_managed_memory``'s warning share to on_pressure (from the call), with
    the real monitor loop at default settings. The pool itself stays far from its thresholds:
    only the cap is crossed. Between trials the model is unloaded through memwarden again."""
    config = Config(
        state=StateConfig(path=os.path.join(state_dir, "cap.db")),
        pressure=PressureConfig(max_managed_memory=100 * GIB),
    )
    rig = make_rig(config, total_bytes=1000 * GIB, baseline_bytes=10 * GIB)
    clock = PressureCallClock()
    rig.warden.plugins.register(clock)
    for i in range(7):
        rig.provider.add_model(f"m{i}", 9 * GIB)
        rig.provider.load(f"m{i}", context_tokens=4096)
    rig.provider.add_model("extra", 9 * GIB)
    governor = Governor(rig.warden)
    monitor = Monitor(governor)
    runner = threading.Thread(target=monitor.run, daemon=True)
    runner.start()
    latencies = []
    rng = random.Random(11)
    try:
        for _ in range(trials):
            time.sleep(rng.uniform(0.05, config.governor.interval_normal_s))
            clock.called.clear()
            # From the call (admission included), not from the runtime's answer: the monitor
            # may see the model before governor.load returns.
            started = time.perf_counter()
            governor.load("extra", context_tokens=4096)
            if not clock.called.wait(15.0):
                raise RuntimeError("on_pressure was not called within 15 s")
            latencies.append(clock.at - started)
            rig.warden.unload("extra", emergency=True)
            while governor.level != PressureLevel.NORMAL:
                time.sleep(0.01)
    finally:
        monitor.stop()
        runner.join(5.0)
        monitor.close()
    return latencies


def planning(
    models: int, repeats: int, state_dir: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Seconds to plan among ``models`` loaded models (9 GiB each, the pool 83% used):
    admission's plan for a new model (``plan_load``) on a reading already planned on (the
    governor keeps who may be evicted, and at what cost, per reading); the ladder's next action
    at CRITICAL (every strategy asked, their proposals checked and ordered as far as the ladder
    reads them: what each step of a round costs); admission's first plan on a new reading; and
    every proposal at CRITICAL, checked and ordered (``memwarden plan``'s full list)."""
    config = Config(state=StateConfig(enabled=False))
    used = models * 9 + 100
    total = int(used / 0.83)
    rig = make_rig(config, total_bytes=total * GIB, baseline_bytes=100 * GIB)
    rig.provider.add_model("m", 9 * GIB)
    rig.provider.add_model("new", (total - used + 45) * GIB)
    governor = Governor(rig.warden)
    for i in range(models):
        loaded = rig.provider.load("m", context_tokens=4096)
        governor.set_priority(loaded, i % 5)
    reading = governor.sample()
    governor.observe(reading)
    ensure_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        plan = governor.plan_load(["new"], priority=10, reading=reading)
        ensure_times.append(time.perf_counter() - started)
    assert plan.fits and plan.evictions
    first_times = []
    for _ in range(repeats):
        fresh = governor.sample()
        governor.observe(fresh)
        started = time.perf_counter()
        governor.plan_load(["new"], priority=10, reading=fresh)
        first_times.append(time.perf_counter() - started)
    rig.device.set_used_percent(88)
    critical = governor.sample()
    ladder_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action = next(governor.proposals(critical))
        ladder_times.append(time.perf_counter() - started)
    all_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        actions = governor.propose(critical)
        all_times.append(time.perf_counter() - started)
    assert actions[0] == action
    return ensure_times, ladder_times, first_times, all_times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials, 10 s CPU window")
    args = parser.parse_args(argv)
    trials = 10 if args.quick else 40
    cpu_seconds = 10.0 if args.quick else 60.0
    repeats = 10 if args.quick else 50

    with tempfile.TemporaryDirectory() as state_dir:
        latencies = detection_latency(trials, state_dir)
        cpu_json = idle_watch_cpu(cpu_seconds, state_dir, json_lines=True)
        cpu_view = idle_watch_cpu(cpu_seconds, state_dir, json_lines=False)
        ensure_times, ladder_times, _, all_times = planning(1000, repeats, state_dir)

    ms = 1000.0
    rows = [
        (
            f"detection latency, threshold -> on_pressure ({trials} crossings)",
            f"{statistics.median(latencies) * ms:.0f} ms",
            f"{percentile(latencies, 0.99) * ms:.0f} ms",
        ),
        (
            f"idle `memwarden watch --json` CPU over {cpu_seconds:.0f} s",
            f"{cpu_json:.2f} % of one core",
            "",
        ),
        (
            f"idle `memwarden watch` (live view) CPU over {cpu_seconds:.0f} s",
            f"{cpu_view:.2f} % of one core",
            "",
        ),
        (
            f"ensure(): plan evictions among 1,000 loaded models ({repeats} runs)",
            f"{statistics.median(ensure_times) * ms:.1f} ms",
            f"{percentile(ensure_times, 0.99) * ms:.1f} ms",
        ),
        (
            f"ladder: next action from every strategy's proposals, 1,000 models ({repeats} runs)",
            f"{statistics.median(ladder_times) * ms:.1f} ms",
            f"{percentile(ladder_times, 0.99) * ms:.1f} ms",
        ),
        (
            f"all proposals, checked and ordered (`memwarden plan`), 1,000 models ({repeats} runs)",
            f"{statistics.median(all_times) * ms:.1f} ms",
            f"{percentile(all_times, 0.99) * ms:.1f} ms",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>20}  {'p99':>9}")
    for name, median, p99 in rows:
        print(f"{name:<{width}}  {median:>20}  {p99:>9}")


if __name__ == "__main__":
    main()
