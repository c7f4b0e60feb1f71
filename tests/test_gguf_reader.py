from __future__ import annotations

import struct

import gguf
import pytest
from gguf_files import write_gemma3, write_model

from memwarden.core.errors import ModelFileError
from memwarden.estimation.gguf import GGML_TYPES, ArraySummary, read_header, read_model


@pytest.fixture
def llama_file(tmp_path):
    return write_model(tmp_path / "llama.gguf")


def test_ggml_type_table_matches_the_gguf_package():
    theirs = {int(t): sizes for t, sizes in gguf.GGML_QUANT_SIZES.items()}
    ours = {t.id: (t.block_size, t.type_size) for t in GGML_TYPES.values()}
    assert ours == theirs


def test_reader_agrees_with_gguf_reader_on_every_tensor(llama_file):
    reference = gguf.GGUFReader(llama_file)
    header = read_header(llama_file)
    assert [(t.name, t.shape, t.type.id, t.nbytes) for t in header.tensors] == [
        (t.name, tuple(int(n) for n in t.shape), int(t.tensor_type), int(t.n_bytes))
        for t in reference.tensors
    ]
    assert header.data_offset == reference.data_offset


def test_reader_keeps_scalar_metadata(llama_file):
    metadata = read_header(llama_file).metadata
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.block_count"] == 4
    assert metadata["llama.attention.head_count_kv"] == 2
    assert metadata["tokenizer.ggml.model"] == "llama"


def test_long_arrays_keep_only_their_length(llama_file):
    metadata = read_header(llama_file).metadata
    assert metadata["tokenizer.ggml.tokens"] == ArraySummary("string", 5000)
    assert len(metadata["tokenizer.ggml.scores"]) == 5000


def test_short_arrays_keep_their_values(tmp_path):
    path = write_model(tmp_path / "m.gguf", heads_kv=[2, 0, 2, 1])
    assert read_header(path).metadata["llama.attention.head_count_kv"] == [2, 0, 2, 1]


def test_custom_alignment_moves_the_data_offset(tmp_path):
    path = write_model(tmp_path / "m.gguf", extra={"general.alignment": 64})
    header = read_header(path)
    assert header.alignment == 64
    assert header.data_offset == gguf.GGUFReader(path).data_offset
    assert header.data_offset % 64 == 0


def test_split_model_sums_tensors_of_every_part(tmp_path):
    whole = read_model(write_model(tmp_path / "whole.gguf"))
    write_model(tmp_path / "split.gguf", split_max_tensors=15)
    split = read_model(tmp_path / "split-00001-of-00003.gguf")
    assert len(split.paths) == 3
    assert split.metadata["split.count"] == 3
    assert split.tensor_bytes() == whole.tensor_bytes()
    assert {t.part for t in split.tensors} == {0, 1, 2}


def test_split_model_with_a_missing_part_names_it(tmp_path):
    write_model(tmp_path / "split.gguf", split_max_tensors=15)
    (tmp_path / "split-00002-of-00003.gguf").unlink()
    with pytest.raises(ModelFileError, match=r"split-00002-of-00003.gguf: part 2 of 3"):
        read_model(tmp_path / "split-00001-of-00003.gguf")


def test_file_truncated_in_the_metadata_says_where_and_what(llama_file, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(llama_file.read_bytes()[:2000])
    with pytest.raises(ModelFileError) as raised:
        read_header(cut)
    message = str(raised.value)
    assert str(cut) in message
    assert "truncated at byte" in message
    assert "tokenizer.ggml.tokens" in message
    assert "download" in raised.value.hint


def test_file_truncated_in_the_tensor_data_names_the_tensor(llama_file, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(llama_file.read_bytes()[:-1000])
    with pytest.raises(ModelFileError, match=r"while reading the data of tensor 'output.weight'"):
        read_header(cut)


def test_file_with_bad_magic_is_not_gguf(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        read_header(path)


def test_unsupported_version_is_named(llama_file, tmp_path):
    data = bytearray(llama_file.read_bytes())
    data[4:8] = struct.pack("<I", 7)
    path = tmp_path / "v7.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="unsupported GGUF version 7"):
        read_header(path)


def test_absurd_string_length_is_reported_as_corruption(llama_file, tmp_path):
    data = bytearray(llama_file.read_bytes())
    # The first metadata key's length prefix follows magic, version and the two counts.
    data[24:32] = struct.pack("<Q", 1 << 50)
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt header at byte 24"):
        read_header(path)


def test_missing_file_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        read_header(tmp_path / "nope.gguf")


def test_gemma3_metadata_reads_its_sliding_window(tmp_path):
    metadata = read_header(write_gemma3(tmp_path / "g.gguf")).metadata
    assert metadata["gemma3.attention.sliding_window"] == 512


def test_big_endian_file_reads_like_a_little_endian_one(tmp_path):
    little = read_header(write_model(tmp_path / "le.gguf"))
    big = read_header(write_model(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG))
    assert big.metadata["llama.block_count"] == little.metadata["llama.block_count"]
    assert [(t.name, t.shape, t.nbytes) for t in big.tensors] == [
        (t.name, t.shape, t.nbytes) for t in little.tensors
    ]
