"""Property-based fuzzing of the GGUF header reader and the sizing, on mutated real headers.

Each example overwrites a few of the header's counts, lengths and type codes with interesting
values, or flips bytes in its first few hundred KiB, then reads the file and sizes the model.
Across every example: no exception but the project's own (MemwardenError), at most 2 s of CPU,
and at most 256 MiB allocated. The allocation bound is enforced on every example by capping the
process's address space at its size before the run plus 256 MiB (RLIMIT_AS, Linux), so an
example that asks for more fails with MemoryError; tracemalloc, which slows the reader tenfold,
measures the peak of every eighth example for the report. The file is a sparse copy of the
model (the header, then a hole) mutated in place and restored after each example.

``MEMWARDEN_FUZZ_EXAMPLES`` raises the number of examples for a longer local run; CI runs the
default, derandomized so that it is the same run every time.
"""

from __future__ import annotations

import contextlib
import os
import resource
import struct
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from gguf_files import write_gemma3
from hostile_gguf import Field, HeaderMap, map_header, sparse_copy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memwarden.core.errors import MemwardenError
from memwarden.core.types import ModelRef
from memwarden.estimation.gguf import read_model
from memwarden.plugins.gguf_estimator import estimate_gguf

MiB = 1 << 20
MAX_CPU_S = 2.0
MAX_ALLOCATED_BYTES = 256 * MiB
EXAMPLES = int(os.environ.get("MEMWARDEN_FUZZ_EXAMPLES", "0"))
# One example in this many is traced by tracemalloc for the peak it allocated.
TRACE_EVERY = 8
TRACED_SLOWDOWN = 15
# Byte flips land in the header's first this many bytes (the counts, the keys and the start of
# the vocabulary), or among the tensor infos at its end.
FLIP_SPAN = 300_000

INTERESTING = [
    *range(10),
    12, 13, 24, 31, 32, 33, 63, 64, 65, 255, 256, 4095, 4096, 4097,
    (1 << 16) - 1, 1 << 16, 1 << 20, 1 << 22, 1 << 23, (1 << 24) + 1, 100_000_000,
    (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40, 1 << 50,
    (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
]  # fmt: skip


@attrs.frozen
class Target:
    path: Path
    layout: HeaderMap
    original: bytes  # the header as written, to restore after each example


@attrs.define
class Tally:
    examples: int = 0
    outcomes: Counter = attrs.field(factory=Counter)
    worst_cpu_s: float = 0.0
    worst_cpu_case: str = ""
    worst_peak_bytes: int = 0
    worst_peak_case: str = ""

    def report(self) -> str:
        return (
            f"{self.examples} examples; outcomes {dict(self.outcomes)}; worst CPU, untraced "
            f"{self.worst_cpu_s * 1000:.0f} ms ({self.worst_cpu_case}); worst traced peak "
            f"{self.worst_peak_bytes / MiB:.1f} MiB ({self.worst_peak_case})"
        )


def _target(source: Path, folder: Path) -> Target:
    with source.open("rb") as file:
        head = file.read(16 * MiB)
    layout = map_header(head)
    path = sparse_copy(source, folder / source.name, layout.header_end)
    return Target(path=path, layout=layout, original=head[: layout.header_end])


@pytest.fixture(scope="module")
def synthetic_target(tmp_path_factory) -> Target:
    folder = tmp_path_factory.mktemp("fuzz-synthetic")
    return _target(write_gemma3(folder / "source.gguf"), tmp_path_factory.mktemp("fuzz-copy"))


@pytest.fixture(scope="module")
def gemma_target(gemma_gguf, tmp_path_factory) -> Target:
    return _target(gemma_gguf, tmp_path_factory.mktemp("fuzz-gemma"))


def _mutations(target: Target) -> st.SearchStrategy:
    fields = target.layout.fields
    size = len(target.original)
    overwrite = st.tuples(
        st.just("field"),
        st.integers(0, len(fields) - 1),
        st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 64) - 1)),
    )
    flip_offsets = st.one_of(
        st.integers(0, min(FLIP_SPAN, size) - 1),
        st.integers(target.layout.tensor_infos_offset, size - 1),
    )
    flip = st.tuples(st.just("byte"), flip_offsets, st.integers(0, 255))
    return st.lists(st.one_of(overwrite, flip), min_size=1, max_size=4)


def _apply(target: Target, mutations: list[tuple[str, int, int]]) -> list[tuple[int, bytes]]:
    """Write the mutations into the file; return what to write back afterwards."""
    writes = []
    for kind, where, value in mutations:
        if kind == "field":
            field: Field = target.layout.fields[where]
            mask = (1 << (8 * field.width)) - 1
            fmt = "<I" if field.width == 4 else "<Q"
            writes.append((field.offset, struct.pack(fmt, value & mask)))
        else:
            writes.append((where, bytes([value])))
    restore = []
    with target.path.open("r+b") as file:
        for offset, data in writes:
            restore.append((offset, target.original[offset : offset + len(data)]))
            file.seek(offset)
            file.write(data)
    return restore


def _restore(target: Target, restore: list[tuple[int, bytes]]) -> None:
    with target.path.open("r+b") as file:
        for offset, data in reversed(restore):
            file.seek(offset)
            file.write(data)


def _describe(target: Target, mutations: list[tuple[str, int, int]]) -> str:
    parts = []
    for kind, where, value in mutations:
        if kind == "field":
            field = target.layout.fields[where]
            parts.append(f"{field.kind} at {field.offset} = {value}")
        else:
            parts.append(f"byte {where} = {value}")
    return "; ".join(parts)


def _read_and_size(path: Path, context_tokens: int, gpu_layers: int) -> str:
    """Read the header and size the model; the outcome's name (the error's class, or "sized")."""
    try:
        gguf = read_model(path)
        options = {"kv_type": "f16", "gpu_layers": gpu_layers, "pool_id": "gpu"}
        estimate_gguf(ModelRef(name=str(path)), path, gguf, context_tokens, options)
    except MemwardenError as exc:
        return type(exc).__name__
    return "sized"


@contextlib.contextmanager
def _address_space_headroom(headroom: int) -> Iterator[bool]:
    """Cap the process's address space at its current size plus ``headroom`` (Linux); yields
    whether the cap is in place. The soft limit is put back afterwards."""
    if not sys.platform.startswith("linux"):
        yield False
        return
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _fuzz(target: Target, max_examples: int) -> Tally:
    tally = Tally()

    @settings(
        max_examples=EXAMPLES or max_examples,
        deadline=None,  # measured below in CPU time, which other tests' load does not inflate
        derandomize=not EXAMPLES,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        mutations=_mutations(target),
        context_tokens=st.integers(1, 1 << 22),
        gpu_layers=st.sampled_from([0, 0, 1, 7, 10_000]),
    )
    def example(mutations, context_tokens, gpu_layers):
        traced = not capped or tally.examples % TRACE_EVERY == 0
        restore = _apply(target, mutations)
        try:
            if traced:
                tracemalloc.start()
            started = time.thread_time()
            outcome = _read_and_size(target.path, context_tokens, gpu_layers)
            cpu_s = time.thread_time() - started
            peak = tracemalloc.get_traced_memory()[1] if traced else 0
        finally:
            tracemalloc.stop()
            _restore(target, restore)
        case = _describe(target, mutations)
        tally.examples += 1
        tally.outcomes[outcome] += 1
        if traced:
            # tracemalloc makes the reader about ten times slower: its CPU time says nothing.
            assert cpu_s <= MAX_CPU_S * TRACED_SLOWDOWN, f"{case}: {cpu_s:.2f} s of CPU, traced"
            if peak > tally.worst_peak_bytes:
                tally.worst_peak_bytes, tally.worst_peak_case = peak, case
            assert peak <= MAX_ALLOCATED_BYTES, f"{case}: {peak / MiB:.0f} MiB allocated"
        else:
            if cpu_s > tally.worst_cpu_s:
                tally.worst_cpu_s, tally.worst_cpu_case = cpu_s, case
            assert cpu_s <= MAX_CPU_S, f"{case}: {cpu_s:.2f} s of CPU"

    with _address_space_headroom(MAX_ALLOCATED_BYTES) as capped:
        example()
    print(tally.report())
    return tally


def test_mutated_synthetic_headers_fail_only_with_memwarden_errors_in_bounds(synthetic_target):
    tally = _fuzz(synthetic_target, max_examples=200)
    # The unmutated parts still parse: some examples are sized, others refused.
    assert tally.outcomes["sized"] > 0
    assert tally.outcomes["ModelFileError"] > 0


@pytest.mark.slow
def test_mutated_gemma_headers_fail_only_with_memwarden_errors_in_bounds(gemma_target):
    tally = _fuzz(gemma_target, max_examples=300)
    assert tally.outcomes["sized"] > 0
    assert tally.outcomes["ModelFileError"] > 0
