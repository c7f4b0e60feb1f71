"""How much one snapshot of the memory pools costs, per device plugin and in total.

The monitor takes a snapshot up to ten times a second, so each plugin's ``detect_device`` must
stay far below 100 ms; this prints microseconds per call (median and 99th percentile) after a
warm-up call that pays for one-time work (finding cgroup files, starting NVML).

Run: .venv/bin/python benchmarks/snapshot_cost.py [--calls N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from memwarden.core.config import Config
from memwarden.core.warden import Warden
from memwarden.plugins import amd, apple, nvidia, system

PLUGINS = {"system": system, "nvidia": nvidia, "apple": apple, "amd": amd}


def _time_calls(call: Callable[[], object], calls: int) -> tuple[list[float], object]:
    result = call()  # warm-up: one-time discovery and library start-up
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        result = call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples, result


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _describe(result: object) -> str:
    if isinstance(result, list):
        return ", ".join(pool.id for pool in result) or "no pools"
    if result is None:
        return "silent"
    return f"unavailable: {getattr(result, 'reason', result)}"[:70]


def measure(calls: int) -> list[dict[str, object]]:
    config = Config()
    rows = []
    for name, module in PLUGINS.items():
        samples, result = _time_calls(lambda m=module: m.detect_device(config=config), calls)
        rows.append(
            {
                "plugin": name,
                "median_us": statistics.median(samples),
                "p99_us": _percentile(samples, 0.99),
                "result": _describe(result),
            }
        )
    warden = Warden(config)
    samples, snapshot = _time_calls(warden.snapshot, calls)
    rows.append(
        {
            "plugin": "warden.snapshot()",
            "median_us": statistics.median(samples),
            "p99_us": _percentile(samples, 0.99),
            "result": ", ".join(p.id for p in snapshot.pools),  # type: ignore[attr-defined]
        }
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per plugin")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = measure(args.calls)
    print(
        f"Snapshot cost, {args.calls} calls each ({sys.platform}, Python {sys.version.split()[0]})"
    )
    print(f"{'PLUGIN':<20} {'MEDIAN us':>10} {'P99 us':>10}  RESULT")
    for row in rows:
        print(
            f"{row['plugin']:<20} {row['median_us']:>10.1f} {row['p99_us']:>10.1f}  {row['result']}"
        )
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
