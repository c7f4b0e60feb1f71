"""Hostile GGUF files for the tests: where a real header keeps its lengths and counts, a sparse
copy of the real Gemma file to mutate, and a way to run the CLI under a memory limit."""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import attrs

# GGUF value types whose size is fixed: id -> bytes.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING = 8
_ARRAY = 9


@attrs.frozen
class Field:
    """A length, count or code in a GGUF header: where it is, how wide, and what it is."""

    offset: int
    width: int  # 4 or 8 bytes, little-endian
    kind: str  # "tensor count", "key length", "string length", "array length", ...


@attrs.frozen
class HeaderMap:
    fields: tuple[Field, ...]
    tensor_infos_offset: int
    header_end: int  # the end of the last tensor info

    def of_kind(self, kind: str) -> list[Field]:
        return [f for f in self.fields if f.kind == kind]


def map_header(data: bytes, strings_per_array: int = 50) -> HeaderMap:
    """The offsets of every count, length and type code of a little-endian GGUF header; of the
    strings of a long array, only the first ``strings_per_array`` lengths are listed."""
    fields: list[Field] = []
    pos = 8

    def u32(kind: str) -> int:
        nonlocal pos
        fields.append(Field(pos, 4, kind))
        (value,) = struct.unpack_from("<I", data, pos)
        pos += 4
        return value

    def u64(kind: str) -> int:
        nonlocal pos
        fields.append(Field(pos, 8, kind))
        (value,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        return value

    def skip_string(kind: str, listed: bool = True) -> None:
        nonlocal pos
        if listed:
            length = u64(kind)
        else:
            (length,) = struct.unpack_from("<Q", data, pos)
            pos += 8
        pos += length

    def value(value_type: int) -> None:
        nonlocal pos
        if value_type in _FIXED:
            pos += _FIXED[value_type]
        elif value_type == _STRING:
            skip_string("string length")
        elif value_type == _ARRAY:
            item_type = u32("array item type")
            length = u64("array length")
            if item_type in _FIXED:
                pos += _FIXED[item_type] * length
            else:
                for index in range(length):
                    if item_type == _STRING:
                        skip_string("string length", listed=index < strings_per_array)
                    else:
                        value(item_type)

    tensor_count = u64("tensor count")
    kv_count = u64("metadata count")
    for _ in range(kv_count):
        skip_string("key length")
        value(u32("value type"))
    tensor_infos = pos
    for _ in range(tensor_count):
        skip_string("tensor name length")
        dims = u32("dimension count")
        for _ in range(dims):
            u64("dimension")
        u32("tensor type")
        u64("tensor offset")
    return HeaderMap(fields=tuple(fields), tensor_infos_offset=tensor_infos, header_end=pos)


def sparse_copy(source: Path, target: Path, header_bytes: int) -> Path:
    """The first ``header_bytes`` of ``source`` followed by a hole up to its full size: a file
    that reads like the model but takes only its header on disk."""
    with source.open("rb") as src:
        head = src.read(header_bytes)
    with target.open("wb") as out:
        out.write(head)
        out.truncate(source.stat().st_size)
    return target


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(data)


MEMORY_LIMIT_BYTES = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


@attrs.frozen
class LimitedRun:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


def run_cli_limited(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> LimitedRun:
    """``memwarden ARGS`` in a subprocess whose address space is capped at 1 GiB, so a
    regression that allocates what a hostile file asks for fails (MemoryError) instead of
    swapping the machine. A run that blocks is killed after ``timeout_s``."""
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-c", "from memwarden.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=_limit_memory,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return LimitedRun(
        exit_code=completed.returncode,
        stdout=completed.stdout,
        stderr=completed.stderr,
        seconds=time.monotonic() - started,
    )
