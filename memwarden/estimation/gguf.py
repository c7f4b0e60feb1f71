"""A streaming reader for the header of a GGUF file: metadata and tensor infos, never the weights.

GGUF (the llama.cpp model format) starts with a header: magic ``GGUF``, a version, the number of
tensors and of metadata pairs, the metadata, then one info record per tensor (name, shape, type,
offset), then the tensor data, aligned. Everything memwarden needs to size a model is in the
header, so a 40 GB file answers in milliseconds: the reader reads the header in chunks and skips
the payload of long arrays (the tokenizer's 100,000+ tokens) without keeping them.

Split models (``name-00001-of-00003.gguf``) keep their tensors across all parts; the first part
holds the metadata and ``split.count``. :func:`read_model` reads every part and sums the tensors.

Errors are :class:`~memwarden.core.errors.ModelFileError` naming the file, the byte offset and
what was being read.

The file is untrusted input. Every length and count is checked against what the rest of the file
can hold and against the limits below before anything is read or allocated for it, so a corrupted
or hostile header costs at most a few tens of MiB and a second, never an allocation it names.
Text from the file is shortened and escaped (:func:`shown`) before it goes into a message.
docs/estimation.md lists the limits and why each is what it is.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from memwarden.core.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# Arrays longer than this keep only their length and element type: they are the tokenizer's
# vocabulary, scores and merges, which sizing needs the count of, never the content.
KEEP_ARRAY_ITEMS = 4096
_CHUNK = 1 << 20
MiB = 1 << 20

# -- limits on what a header may ask for (docs/estimation.md, "Limits") ----------------------
# A metadata key: the GGUF specification caps keys at 65,535 bytes.
MAX_KEY_BYTES = 65_535
# A tensor name: llama.cpp refuses names of GGML_MAX_NAME (64) bytes or more, its NUL included.
MAX_TENSOR_NAME_BYTES = 63
# Dimensions of a tensor: GGML_MAX_DIMS.
MAX_TENSOR_DIMS = 4
# One string value that is kept (a chat template is tens of KiB).
MAX_STRING_BYTES = 4 * MiB
# All metadata kept together: keys, strings and the items of short arrays (32 bytes each).
MAX_METADATA_BYTES = 32 * MiB
# Metadata pairs and tensors of one file (a large model has a few dozen pairs and a few
# thousand tensors).
MAX_KV_COUNT = 65_536
MAX_TENSOR_COUNT = 65_536
# Elements of one array (a vocabulary has up to a few hundred thousand tokens).
MAX_ARRAY_ITEMS = 1 << 24
# Strings and nested arrays walked one by one across the whole header: each costs a step of
# Python, so this bounds the time of a header (8 million take about a second).
MAX_ITEMS_WALKED = 1 << 23
# Arrays of arrays nest at most this deep (llama.cpp reads no nested arrays at all).
MAX_ARRAY_DEPTH = 2
# What a kept item of a short array costs in memory, as a Python object in a list.
_ITEM_COST = 32
# Smallest encodings, to bound a count by the bytes left in the file: a metadata pair (key
# length, value type, one byte of value), a tensor info (name length, dims, type, offset).
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
_SHOWN_CHARS = 60


def shown(value: Any, limit: int = _SHOWN_CHARS) -> str:
    """``value`` for a message: at most ``limit`` characters of it, escaped, with "..." when
    cut. Text and bytes from a model file go through this, never into a message whole."""
    if isinstance(value, bytes | bytearray):
        text = repr(bytes(value[:limit]))
        return text + "..." if len(value) > limit else text
    if isinstance(value, str):
        text = repr(value[:limit])
        return text + "..." if len(value) > limit else text
    if isinstance(value, list | tuple):
        head = ", ".join(shown(item, 20) for item in value[:4])
        more = f", ... ({len(value)} items)" if len(value) > 4 else ""
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
        return f"{opening}{head}{more}{closing}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text[:limit] + "..." if len(text) > limit else text


@attrs.frozen
class GGMLType:
    """A tensor element type: ``block_size`` elements are stored in ``type_size`` bytes."""

    id: int
    name: str
    block_size: int
    type_size: int

    def row_bytes(self, elements: int) -> int:
        """Bytes for ``elements`` values of this type (ggml_row_size)."""
        return elements // self.block_size * self.type_size

    @property
    def bytes_per_element(self) -> float:
        return self.type_size / self.block_size


# ggml's type traits (ggml/src/ggml.c ``type_traits``): id -> (name, block size, bytes per block).
# Checked against the gguf package's GGML_QUANT_SIZES in the tests.
_GGML_TYPES = {
    0: ("f32", 1, 4),
    1: ("f16", 1, 2),
    2: ("q4_0", 32, 18),
    3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22),
    7: ("q5_1", 32, 24),
    8: ("q8_0", 32, 34),
    9: ("q8_1", 32, 40),
    10: ("q2_K", 256, 84),
    11: ("q3_K", 256, 110),
    12: ("q4_K", 256, 144),
    13: ("q5_K", 256, 176),
    14: ("q6_K", 256, 210),
    15: ("q8_K", 256, 292),
    16: ("iq2_xxs", 256, 66),
    17: ("iq2_xs", 256, 74),
    18: ("iq3_xxs", 256, 98),
    19: ("iq1_s", 256, 50),
    20: ("iq4_nl", 32, 18),
    21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82),
    23: ("iq4_xs", 256, 136),
    24: ("i8", 1, 1),
    25: ("i16", 1, 2),
    26: ("i32", 1, 4),
    27: ("i64", 1, 8),
    28: ("f64", 1, 8),
    29: ("iq1_m", 256, 56),
    30: ("bf16", 1, 2),
    34: ("tq1_0", 256, 54),
    35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17),
    40: ("nvfp4", 64, 36),
    41: ("q1_0", 128, 18),
}
GGML_TYPES: Mapping[int, GGMLType] = {
    type_id: GGMLType(type_id, name, block, size)
    for type_id, (name, block, size) in _GGML_TYPES.items()
}
GGML_TYPES_BY_NAME: Mapping[str, GGMLType] = {t.name.lower(): t for t in GGML_TYPES.values()}


def ggml_type(name: str) -> GGMLType:
    """The type called ``name`` ("f16", "q8_0", "Q4_K"...), or a clear error."""
    found = GGML_TYPES_BY_NAME.get(name.lower())
    if found is None:
        raise ValueError(f"unknown ggml type {name!r}; known: {', '.join(GGML_TYPES_BY_NAME)}")
    return found


@attrs.frozen
class ArraySummary:
    """A long metadata array, kept as its element type and length only."""

    item_type: str
    length: int

    def __len__(self) -> int:
        return self.length


@attrs.frozen
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: GGMLType
    offset: int  # from the start of the data section of its file
    part: int = 0  # which file of a split model holds it

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data (ggml_nbytes for a contiguous tensor)."""
        if not self.shape:
            return self.type.type_size
        return self.type.row_bytes(self.shape[0]) * math.prod(self.shape[1:])


@attrs.frozen
class GGUFHeader:
    """The header of one GGUF file."""

    path: Path
    version: int
    metadata: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int  # where the tensor data starts in the file
    file_bytes: int


@attrs.frozen
class GGUFModel:
    """A model as its file or files describe it: the first part's metadata, all parts' tensors."""

    paths: tuple[Path, ...]
    metadata: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    file_bytes: int

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def tensor_bytes(self) -> int:
        """Bytes the weights take in memory: each tensor padded to the alignment."""
        return sum(_pad(t.nbytes, self.alignment) for t in self.tensors)


def _pad(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


# Value types of GGUF metadata: id -> (name, struct format or None for string/array).
_SCALARS = {
    0: ("uint8", "B"),
    1: ("int8", "b"),
    2: ("uint16", "H"),
    3: ("int16", "h"),
    4: ("uint32", "I"),
    5: ("int32", "i"),
    6: ("float32", "f"),
    7: ("bool", "?"),
    10: ("uint64", "Q"),
    11: ("int64", "q"),
    12: ("float64", "d"),
}
_STRING = 8
_ARRAY = 9


class _Reader:
    """Reads a file front to back through a buffer, tracking the offset for error messages.

    Every count it reads is checked before use (:meth:`count`), and what it keeps is charged to
    budgets, so no value in the file sizes an allocation or a loop beyond the module's limits.
    """

    def __init__(self, stream: BinaryIO, path: Path, file_bytes: int) -> None:
        self.stream = stream
        self.path = path
        self.file_bytes = file_bytes
        self.buffer = b""
        self.pos = 0  # in buffer
        self.base = 0  # file offset of buffer[0]
        self.endian = "<"
        self.what = "the header"
        self.kept_bytes = 0  # charged against MAX_METADATA_BYTES
        self.items_walked = 0  # charged against MAX_ITEMS_WALKED

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _truncated(self, detail: str) -> ModelFileError:
        return ModelFileError(
            f"{self.path}: truncated at byte {self.file_bytes} while reading {self.what} "
            f"({detail})",
            hint="the download or copy is incomplete, or the file is damaged; download the "
            "model again",
        )

    def corrupt(self, at: int, detail: str) -> ModelFileError:
        """The error for a value at byte ``at`` that no valid file holds."""
        return ModelFileError(
            f"{self.path}: corrupt header at byte {at}: {detail} while reading {self.what}",
            hint="the file is damaged or not a GGUF model; download it again",
        )

    def _fill(self, needed: int) -> None:
        if self.pos + needed <= len(self.buffer):
            return
        if self.offset + needed > self.file_bytes:
            raise self._truncated(f"it needs {needed} bytes at byte {self.offset}")
        rest = self.buffer[self.pos :]
        self.base += self.pos
        self.pos = 0
        chunk = self.stream.read(max(_CHUNK, needed - len(rest)))
        self.buffer = rest + chunk
        if len(self.buffer) < needed:
            # The file shrank while it was read.
            raise self._truncated(f"it ends at byte {self.base + len(self.buffer)}")

    def take(self, size: int) -> bytes:
        self._fill(size)
        data = self.buffer[self.pos : self.pos + size]
        self.pos += size
        return data

    def skip(self, size: int) -> None:
        if self.pos + size <= len(self.buffer):
            self.pos += size
            return
        target = self.offset + size
        if target > self.file_bytes:
            raise self._truncated(f"it needs {target} bytes")
        self.stream.seek(target)
        self.buffer = b""
        self.pos = 0
        self.base = target

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._fill(size)
        (value,) = struct.unpack_from(self.endian + fmt, self.buffer, self.pos)
        self.pos += size
        return value

    def count(self, what: str, limit: int, item_bytes: int = 1) -> int:
        """A 64-bit count or length, checked against ``limit`` and against what the rest of the
        file can hold at ``item_bytes`` or more per item."""
        at = self.offset
        value = self.scalar("Q")
        if value > limit:
            raise self.corrupt(at, f"{what} of {value} (at most {limit:,})")
        if value * item_bytes > self.file_bytes - self.offset:
            raise self._truncated(f"{what} of {value} at byte {at}")
        return value

    def keep(self, size: int) -> None:
        """Charge ``size`` bytes of kept metadata against MAX_METADATA_BYTES."""
        self.kept_bytes += size
        if self.kept_bytes > MAX_METADATA_BYTES:
            raise self.corrupt(self.offset, f"the metadata exceeds {MAX_METADATA_BYTES // MiB} MiB")

    def walk(self, items: int) -> None:
        """Charge ``items`` strings or arrays walked one by one against MAX_ITEMS_WALKED."""
        self.items_walked += items
        if self.items_walked > MAX_ITEMS_WALKED:
            raise self.corrupt(
                self.offset, f"the metadata holds more than {MAX_ITEMS_WALKED:,} strings"
            )

    def string(self, what: str = "a string length", limit: int = MAX_STRING_BYTES) -> str:
        length = self.count(what, limit)
        self.keep(length)
        raw = self.take(length)
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` length-prefixed strings without decoding them."""
        self.walk(count)
        # The hot loop of the whole reader (a vocabulary has 30,000 to 260,000 tokens): locals
        # only, and the buffer is refilled only when a length prefix would cross its end.
        unpack = struct.Struct(self.endian + "Q").unpack_from
        remaining = count
        while remaining:
            buffer, pos = self.buffer, self.pos
            end = len(buffer) - 8
            done = remaining
            for index in range(remaining):
                if pos > end:
                    done = index
                    break
                pos += 8 + unpack(buffer, pos)[0]
            remaining -= done
            if pos > len(buffer):
                # The last string runs past the buffer: check its length, then seek over it.
                overshoot = pos - len(buffer)
                self.pos = len(buffer)
                if self.offset + overshoot > self.file_bytes:
                    raise self._truncated(f"a string length runs to byte {self.offset + overshoot}")
                self.skip(overshoot)
            else:
                self.pos = pos
                if remaining:
                    self._fill(8)

    def value(self, value_type: int, depth: int = 0) -> Any:
        if value_type in _SCALARS:
            self.keep(_ITEM_COST)
            return self.scalar(_SCALARS[value_type][1])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            at = self.offset
            item_type = self.scalar("I")
            if item_type == _ARRAY and depth + 1 >= MAX_ARRAY_DEPTH:
                raise self.corrupt(at, f"arrays nested more than {MAX_ARRAY_DEPTH} deep")
            size = _item_bytes(item_type)
            length = self.count("an array length", MAX_ARRAY_ITEMS, size)
            return self.array(item_type, length, depth + 1)
        raise self.corrupt(self.offset - 4, f"unknown value type {value_type}")

    def array(self, item_type: int, length: int, depth: int) -> Any:
        if item_type in _SCALARS:
            name, fmt = _SCALARS[item_type]
            size = struct.calcsize(fmt)
            if length > KEEP_ARRAY_ITEMS:
                self.skip(size * length)
                return ArraySummary(name, length)
            self.keep(_ITEM_COST * length)
            raw = self.take(size * length)
            return list(struct.unpack(f"{self.endian}{length}{fmt}", raw))
        if item_type == _STRING:
            if length > KEEP_ARRAY_ITEMS:
                self.skip_strings(length)
                return ArraySummary("string", length)
            self.walk(length)
            return [self.string() for _ in range(length)]
        if item_type == _ARRAY:
            self.walk(length)
            self.keep(_ITEM_COST * length)
            return [self.value(_ARRAY, depth) for _ in range(length)]
        raise self.corrupt(self.offset - 12, f"unknown array element type {item_type}")


def _item_bytes(item_type: int) -> int:
    """The fewest bytes one array element of ``item_type`` takes in the file."""
    if item_type in _SCALARS:
        return struct.calcsize(_SCALARS[item_type][1])
    if item_type == _STRING:
        return 8
    if item_type == _ARRAY:
        return 12
    return 1


def open_regular(path: Path, what: str = "model file") -> tuple[BinaryIO, int]:
    """Open a model file for reading, and its size; refuse anything but a regular file.

    A FIFO, a device or a socket would block ``open`` or a read forever, or never end: the file
    is opened without blocking and checked with ``fstat`` before the first read, so a file
    swapped for a FIFO between a check and the open is refused too.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ModelFileError(
            f"{path}: {what} not found", hint="check the path or the model's name"
        ) from None
    except IsADirectoryError:
        raise not_regular(path, "a directory", what) from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_regular(path, file_kind(info.st_mode), what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        stream = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    return stream, info.st_size


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is, for a message: "a FIFO", "a directory"..."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def not_regular(path: Path, kind: str, what: str = "model file") -> ModelFileError:
    """The error for a path that is not a regular file."""
    return ModelFileError(
        f"{path}: {kind}, not a {what}",
        hint=f"give the path of a regular {'.gguf ' if what == 'model file' else ''}file; "
        "memwarden does not read pipes, devices or sockets",
    )


def check_regular(path: Path) -> os.stat_result:
    """``path``'s stat if it is a regular file (links followed), else a ModelFileError.

    For code that hands a path to something else to open (the llama.cpp runtime): a FIFO
    there would block it forever.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelFileError(
            f"{path}: model file not found", hint="check the path or the model's name"
        ) from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise not_regular(path, file_kind(info.st_mode))
    return info


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read the metadata and tensor infos of one GGUF file; raise ModelFileError if invalid."""
    path = Path(path)
    stream, file_bytes = open_regular(path)
    with stream:
        return _parse(_Reader(stream, path, file_bytes))


def _parse(reader: _Reader) -> GGUFHeader:
    path = reader.path
    reader.what = "the magic number"
    magic = reader.take(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path}: not a GGUF file (bad magic {magic!r} at byte 0, expected {GGUF_MAGIC!r})",
            hint="give the path of a .gguf model file; other formats (safetensors, GGML) are "
            "not supported",
        )
    reader.what = "the version"
    version = reader.scalar("I")
    if version & 0xFFFF == 0 and version not in SUPPORTED_VERSIONS:
        # A big-endian file: its version reads byte-swapped.
        reader.endian = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in SUPPORTED_VERSIONS:
        raise ModelFileError(
            f"{path}: unsupported GGUF version {version} (memwarden reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})",
            hint="convert the model again with a current llama.cpp, or upgrade memwarden",
        )
    reader.what = "the tensor and metadata counts"
    tensor_count = reader.count("a tensor count", MAX_TENSOR_COUNT, _MIN_TENSOR_INFO_BYTES)
    kv_count = reader.count("a metadata count", MAX_KV_COUNT, _MIN_KV_BYTES)

    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        reader.what = f"metadata entry {index + 1} of {kv_count}"
        key = reader.string("a key length", MAX_KEY_BYTES)
        reader.what = f"the value of metadata key {shown(key)}"
        value_type = reader.scalar("I")
        metadata[key] = reader.value(value_type)

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise ModelFileError(
            f"{path}: general.alignment is {shown(alignment)}; it must be a power of two",
            hint="the file is damaged; download it again",
        )

    tensors: list[TensorInfo] = []
    names: set[str] = set()
    expected_offset = 0
    for index in range(tensor_count):
        reader.what = f"tensor info {index + 1} of {tensor_count}"
        at = reader.offset
        name = reader.string("a tensor name length", MAX_TENSOR_NAME_BYTES)
        if name in names:
            raise reader.corrupt(at, f"a second tensor named {shown(name)}")
        names.add(name)
        reader.what = f"the info of tensor {shown(name)}"
        n_dims = reader.scalar("I")
        if n_dims > MAX_TENSOR_DIMS:
            raise reader.corrupt(
                reader.offset - 4,
                f"tensor {shown(name)} has {n_dims} dimensions (at most {MAX_TENSOR_DIMS})",
            )
        shape = struct.unpack(f"{reader.endian}{n_dims}Q", reader.take(8 * n_dims))
        type_id = reader.scalar("I")
        offset = reader.scalar("Q")
        ggml = GGML_TYPES.get(type_id)
        if ggml is None:
            raise ModelFileError(
                f"{path}: tensor {shown(name)} has unknown ggml type {type_id}",
                hint="the model uses a type newer than memwarden knows; upgrade memwarden",
            )
        tensor = TensorInfo(name=name, shape=tuple(shape), type=ggml, offset=offset)
        _check_tensor(reader, tensor, expected_offset)
        expected_offset = offset + _pad(tensor.nbytes, alignment)
        tensors.append(tensor)

    data_offset = _pad(reader.offset, alignment)
    header = GGUFHeader(
        path=path,
        version=version,
        metadata=metadata,
        tensors=tuple(tensors),
        alignment=alignment,
        data_offset=data_offset,
        file_bytes=reader.file_bytes,
    )
    _check_data_present(header)
    return header


def _check_tensor(reader: _Reader, tensor: TensorInfo, expected_offset: int) -> None:
    """The checks llama.cpp's gguf loader makes: sizes that fit in 63 bits, rows of whole
    blocks, and each tensor's data right after the previous one's (padded)."""
    name = shown(tensor.name)
    if any(dim >= 1 << 63 for dim in tensor.shape) or tensor.elements >= 1 << 63:
        raise reader.corrupt(reader.offset, f"tensor {name} has shape {tensor.shape}")
    if tensor.shape and tensor.shape[0] % tensor.type.block_size:
        raise reader.corrupt(
            reader.offset,
            f"tensor {name}'s rows of {tensor.shape[0]} are not whole blocks of "
            f"{tensor.type.block_size} ({tensor.type.name})",
        )
    if tensor.offset != expected_offset:
        raise reader.corrupt(
            reader.offset - 8,
            f"tensor {name}'s data is at offset {tensor.offset}, where {expected_offset} "
            "was expected",
        )


def _check_data_present(header: GGUFHeader) -> None:
    """A file cut short after its header still parses; its tensor data must reach the end."""
    if not header.tensors:
        return
    last = max(header.tensors, key=lambda t: t.offset + t.nbytes)
    end = header.data_offset + last.offset + last.nbytes
    if end > header.file_bytes:
        raise ModelFileError(
            f"{header.path}: truncated at byte {header.file_bytes} while reading the data of "
            f"tensor {last.name!r} (the header says the data ends at byte {end})",
            hint="the download or copy is incomplete; download the model again",
        )


_SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_parts(path: Path) -> list[Path]:
    """All parts of a split model named like ``name-00001-of-00003.gguf``, else ``[path]``."""
    match = _SPLIT_NAME.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    if not 1 <= int(match["index"]) <= count:
        return [path]  # "-00004-of-00003", "-00001-of-00000": not a split set's name
    return [
        path.with_name(f"{match['stem']}-{index:05d}-of-{count:05d}.gguf")
        for index in range(1, count + 1)
    ]


def read_model(path: str | os.PathLike[str]) -> GGUFModel:
    """Read a model's header; for a split model, every part's tensors (parts named by the
    ``-0000N-of-0000M`` convention, which ``split.count`` in the first part confirms)."""
    path = Path(path)
    parts = split_parts(path)
    first = read_header(parts[0])
    split_count = first.metadata.get("split.count")
    if isinstance(split_count, int) and split_count > 1 and len(parts) != split_count:
        raise ModelFileError(
            f"{parts[0]}: split.count says {shown(split_count)} parts, but the file name does not "
            "follow the name-00001-of-0000N.gguf convention",
            hint="keep the split files' original names, or merge them with llama-gguf-split",
        )
    headers = [first]
    tensor_count = len(first.tensors)
    for number, part in enumerate(parts[1:], start=2):
        if not part.exists():
            raise ModelFileError(
                f"{part}: part {number} of {len(parts)} of a split model is missing",
                hint="download every part of the model into the same folder",
            )
        headers.append(read_header(part))
        tensor_count += len(headers[-1].tensors)
        if tensor_count > MAX_TENSOR_COUNT:
            raise ModelFileError(
                f"{part}: the {number} parts read so far hold {tensor_count:,} tensors "
                f"(at most {MAX_TENSOR_COUNT:,})",
                hint="the split set is damaged; download the model again",
            )
    tensors = tuple(
        attrs.evolve(tensor, part=index)
        for index, header in enumerate(headers)
        for tensor in header.tensors
    )
    return GGUFModel(
        paths=tuple(parts),
        metadata=first.metadata,
        tensors=tensors,
        alignment=first.alignment,
        file_bytes=sum(h.file_bytes for h in headers),
    )
