"""A simulated fleet: memwarden's resources and estimates against count-based placement.

1,000 hosts of mixed kinds (24 GB GPUs, 16-128 GB unified memory, CPU-only boxes) take a
day-long trace of model requests. Two placements are compared on the same hosts and trace:

- ``memwarden``: each host declares what LLMs may take there (its memory less the safety margin
  and what other processes held when it started: ``memwarden fleet node-args``); a model asks for
  its estimate (within a few percent of what it really takes) and goes to the host with the most
  room left that fits; when none fits, idle models are evicted where that makes room, else the
  request is refused. Each host's agent evicts models (idle first, then least recently used)
  when another process grows and the host would run out of memory.
- ``count``: each host runs at most N models (N per host, as llama-swap and Ollama's
  ``OLLAMA_MAX_LOADED_MODELS`` do), placed on the host with the fewest; memory is not checked,
  so a host whose models and other processes exceed its memory has an out-of-memory event (its
  models are killed).

Reported: out-of-memory events, evictions, refusals, the memory models used (time-averaged, of
all the fleet's memory), and how the planner's time per placement grows with the host count.

    python benchmarks/fleet_sim.py [--hosts 1000] [--requests 40000] [--seed 7] [--json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import time
from dataclasses import dataclass, field

GB = 1024**3
DAY_S = 86_400
KEEP_ALIVE_S = 600.0
PARALLEL = 4  # requests one loaded model serves at once
VARIANTS = 12  # fine-tunes per base model: distinct models of the same size
SAFETY_MARGIN = 0.10
# (name, bytes at its default context, share of requests): Zipf-like popularity.
MODELS = (
    ("llama3.2:1b", 1.6 * GB, 0.22),
    ("llama3.2:3b", 3.2 * GB, 0.20),
    ("qwen2.5:7b", 6.1 * GB, 0.18),
    ("llama3.1:8b", 6.8 * GB, 0.14),
    ("gemma3:12b", 10.5 * GB, 0.10),
    ("qwen2.5:14b", 11.8 * GB, 0.07),
    ("gemma3:27b", 19.5 * GB, 0.05),
    ("qwen2.5:32b", 22.5 * GB, 0.03),
    ("llama3.3:70b", 45.0 * GB, 0.01),
)


@dataclass
class Host:
    id: int
    kind: str
    capacity: int  # memory models may use at all (VRAM, or unified/RAM less the OS)
    background: int  # other processes now
    declared: int = 0  # memwarden's resource: capacity - margin - background at start
    models: dict[str, Model] = field(default_factory=dict)
    crashed_until: float = 0.0

    def loaded_bytes(self) -> int:
        return sum(m.true_bytes for m in self.models.values())

    def requested_bytes(self) -> int:
        return sum(m.requested_bytes for m in self.models.values())


@dataclass
class Model:
    name: str
    true_bytes: int
    requested_bytes: int
    busy_until: float
    last_used: float
    ends: list[float] = field(default_factory=list)  # requests in flight (end times)

    def has_slot(self, now: float) -> bool:
        self.ends = [end for end in self.ends if end > now]
        return len(self.ends) < PARALLEL


def make_hosts(n: int, rng: random.Random) -> list[Host]:
    hosts = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.35:
            kind, capacity = "gpu-24gb", 24 * GB
            background = int(rng.uniform(0.3, 1.5) * GB)  # display, CUDA contexts of others
        elif roll < 0.75:
            total = rng.choice((16, 32, 64, 96, 128)) * GB
            kind, capacity = f"unified-{total // GB}gb", int(total * 0.75)  # Metal's limit
            background = int(total * rng.uniform(0.15, 0.35))
        else:
            total = rng.choice((32, 64, 128)) * GB
            kind, capacity = f"cpu-{total // GB}gb", total - 4 * GB
            background = int(total * rng.uniform(0.05, 0.25))
        hosts.append(Host(i, kind, capacity, background))
    for host in hosts:
        host.declared = max(0, int(host.capacity * (1 - SAFETY_MARGIN)) - host.background)
    return hosts


def make_trace(n: int, n_hosts: int, rng: random.Random) -> list[tuple[float, str, object]]:
    """Requests with a daytime peak, and other processes growing on hosts now and then."""
    names = [m[0] for m in MODELS]
    weights = [m[2] for m in MODELS]
    events: list[tuple[float, str, object]] = []
    for _ in range(n):
        while True:  # thinning: twice as many requests at 14:00 as at night
            t = rng.uniform(0, DAY_S)
            if rng.random() < 0.5 + 0.5 * max(0.0, 1 - abs(t / 3600 - 14) / 8):
                break
        model = f"{rng.choices(names, weights)[0]}#{int(rng.paretovariate(1.2)) % VARIANTS}"
        events.append((t, "request", (model, rng.expovariate(1 / 600.0))))
    for host in range(n_hosts):  # about two bursts of another process per host per day
        for _ in range(rng.choice((0, 1, 2, 2, 3))):
            start = rng.uniform(0, DAY_S)
            events.append((start, "grow", (host, rng.uniform(0.1, 0.45), rng.uniform(1800, 7200))))
    events.sort(key=lambda e: e[0])
    return events


class Fleet:
    def __init__(self, hosts: list[Host], policy: str, per_host: int, rng: random.Random) -> None:
        self.hosts = hosts
        self.policy = policy
        self.per_host = per_host
        self.rng = rng
        self.where: dict[str, list[Host]] = {}
        self.stats = {"served": 0, "refused": 0, "evictions": 0, "oom_events": 0, "lost": 0}
        self.place_s = 0.0
        self.placements = 0
        self.used_samples: list[float] = []

    # -- helpers ----------------------------------------------------------------------------

    def _expire(self, host: Host, now: float) -> None:
        for name, model in list(host.models.items()):
            if now - max(model.busy_until, model.last_used) > KEEP_ALIVE_S:
                self._remove(host, name)

    def _remove(self, host: Host, name: str) -> None:
        host.models.pop(name, None)
        self.where[name] = [h for h in self.where.get(name, []) if h is not host]

    def _evict_lru(self, host: Host, now: float, idle_only: bool) -> bool:
        candidates = [m for m in host.models.values() if not idle_only or m.busy_until <= now]
        if not candidates:
            return False
        victim = min(candidates, key=lambda m: m.last_used)
        self._remove(host, victim.name)
        self.stats["evictions"] += 1
        return True

    def expire_all(self, now: float) -> None:
        for host in self.hosts:
            if host.models:
                self._expire(host, now)

    def _oom_check(self, host: Host, now: float) -> None:
        if host.models and host.loaded_bytes() + host.background > host.capacity:
            self.stats["oom_events"] += 1
            self.stats["lost"] += len(host.models)
            for name in list(host.models):
                self._remove(host, name)
            host.crashed_until = now + 120.0  # the runtime restarts

    # -- placement ----------------------------------------------------------------------------

    def place(self, name: str, true_bytes: int, now: float) -> Host | None:
        started = time.perf_counter()
        try:
            return self._place(name, true_bytes, now)
        finally:
            self.place_s += time.perf_counter() - started
            self.placements += 1

    def _place(self, name: str, true_bytes: int, now: float) -> Host | None:
        # A second instance of a busy model goes to another host.
        live = [h for h in self.hosts if h.crashed_until <= now and name not in h.models]
        if self.policy == "memwarden":
            requested = int(true_bytes * self.rng.uniform(0.97, 1.05))  # the estimate's error
            best, room = None, -1
            for host in live:
                free = host.declared - host.requested_bytes()
                if free >= requested and free > room:
                    best, room = host, free
            if best is None:  # evict idle models where that makes room
                for host in sorted(live, key=lambda h: h.declared, reverse=True):
                    if host.declared < requested:
                        break
                    self._expire(host, now)
                    idle = sorted(
                        (m for m in host.models.values() if m.busy_until <= now),
                        key=lambda m: m.last_used,
                    )
                    free = host.declared - host.requested_bytes()
                    need = [m for m in idle]
                    if free + sum(m.requested_bytes for m in need) < requested:
                        continue
                    while free < requested:
                        victim = need.pop(0)
                        self._remove(host, victim.name)
                        self.stats["evictions"] += 1
                        free += victim.requested_bytes
                    best = host
                    break
            if best is None:
                return None
        else:
            requested = true_bytes
            hosts = [h for h in live if len(h.models) < self.per_host]
            if hosts:
                best = min(hosts, key=lambda h: (len(h.models), h.id))
            else:
                best = None
                for host in live:
                    self._expire(host, now)
                    if len(host.models) < self.per_host or self._evict_lru(host, now, True):
                        best = host
                        break
                if best is None:
                    return None
        best.models[name] = Model(name, true_bytes, requested, now, now)
        self.where.setdefault(name, []).append(best)
        return best

    # -- events ---------------------------------------------------------------------------

    def request(self, now: float, name: str, true_bytes: int, duration_s: float) -> None:
        hosts = [h for h in self.where.get(name, []) if h.models[name].has_slot(now)]
        host = hosts[0] if hosts else self.place(name, true_bytes, now)
        if host is None:
            self.stats["refused"] += 1
            return
        model = host.models[name]
        model.ends.append(now + duration_s)
        model.busy_until = max(model.busy_until, now + duration_s)
        model.last_used = now
        self.stats["served"] += 1
        if self.policy == "count":
            self._oom_check(host, now)

    def grow(self, now: float, host: Host, extra: int) -> None:
        host.background += extra
        if self.policy == "memwarden":  # the node agent keeps the host out of OOM
            self._expire(host, now)
            limit = int(host.capacity * (1 - SAFETY_MARGIN / 2))
            while host.loaded_bytes() + host.background > limit:
                if not (self._evict_lru(host, now, True) or self._evict_lru(host, now, False)):
                    break
        self._oom_check(host, now)

    def sample(self) -> None:
        used = sum(h.loaded_bytes() for h in self.hosts)
        self.used_samples.append(used / sum(h.capacity for h in self.hosts))


def run(policy: str, n_hosts: int, n_requests: int, seed: int, per_host: int = 3) -> dict:
    rng = random.Random(seed)
    hosts = make_hosts(n_hosts, rng)
    trace = make_trace(n_requests, n_hosts, rng)
    fleet = Fleet(hosts, policy, per_host, random.Random(seed + 1))
    sizes = {m[0]: int(m[1]) for m in MODELS}
    shrinks: list[tuple[float, int, int]] = []  # (when, host, bytes) the grown process ends
    next_sample = 0.0
    for now, kind, data in trace:
        while shrinks and shrinks[0][0] <= now:
            _, host_id, extra = heapq.heappop(shrinks)
            hosts[host_id].background -= extra
        while next_sample <= now:
            fleet.expire_all(next_sample)
            fleet.sample()
            next_sample += 300.0
        if kind == "request":
            name, duration = data
            fleet.request(now, name, sizes[name.split("#")[0]], duration)
        else:
            host_id, fraction, length = data
            extra = int(hosts[host_id].capacity * fraction)
            fleet.grow(now, hosts[host_id], extra)
            heapq.heappush(shrinks, (now + length, host_id, extra))
    return {
        "policy": policy if policy == "memwarden" else f"count (N={per_host})",
        **fleet.stats,
        "memory_used_percent": round(100 * sum(fleet.used_samples) / len(fleet.used_samples), 1),
        "placement_us": round(1e6 * fleet.place_s / max(1, fleet.placements), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run("memwarden", args.hosts, args.requests, args.seed)]
    rows.append(run("count", args.hosts, args.requests, args.seed, per_host=3))
    scaling = []
    for n in (100, 300, 1000, 3000):
        row = run("memwarden", n, args.requests * n // args.hosts, args.seed)
        scaling.append({"hosts": n, "placement_us": row["placement_us"]})
    if args.json:
        print(json.dumps({"policies": rows, "planner_scaling": scaling}, indent=2))
        return
    columns = ("policy", "served", "refused", "oom_events", "lost", "evictions")
    print(f"{args.hosts} hosts, {args.requests} requests over a day (seed {args.seed})")
    print(" ".join(f"{c:>16}" for c in (*columns, "memory_used_%")))
    for row in rows:
        values = [row[c] for c in columns] + [row["memory_used_percent"]]
        print(" ".join(f"{v!s:>16}" for v in values))
    print("\nplanner time per placement (memwarden, requests scaled with hosts)")
    for row in scaling:
        print(f"  {row['hosts']:>5} hosts: {row['placement_us']:>8} us")


if __name__ == "__main__":
    main()
