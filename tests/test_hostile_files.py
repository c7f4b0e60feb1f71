"""Hostile and careless inputs: a corrupted length, absurd metadata, special files, a crashing
estimator, bad command-line values. Each model case runs the CLI in a subprocess whose address
space is capped at 1 GiB (tests/hostile_gguf.py), so a regression that allocates what a file
asks for fails here instead of swapping the machine."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from gguf_files import isolate_model_stores, write_model
from hostile_gguf import map_header, patch, run_cli_limited, sparse_copy
from ollama_server import FakeOllama, serve

from memwarden.core.config import Config
from memwarden.core.errors import EstimateUnavailable, ModelFileError
from memwarden.core.types import Confidence, ModelRef
from memwarden.core.warden import Warden
from memwarden.estimation.gguf import read_header, read_model
from memwarden.estimation.model_files import ollama_blob
from memwarden.hookspecs import hookimpl
from memwarden.plugins.llamacpp import LlamaCppOptions, LlamaCppProvider

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")

FIFO_MESSAGE = "a FIFO (named pipe), not a model file"


@pytest.fixture(autouse=True)
def no_model_stores(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    isolate_model_stores(monkeypatch, home)
    return home


@pytest.fixture
def llama_file(tmp_path):
    return write_model(tmp_path / "llama.gguf")


def _value_offset(path: Path, key: str) -> int:
    """Where the value of metadata ``key`` starts: after its name and its 4-byte type."""
    data = path.read_bytes()
    return data.index(key.encode()) + len(key) + 4


def _set_uint32(path: Path, key: str, value: int) -> None:
    patch(path, _value_offset(path, key), struct.pack("<I", value))


def _set_int32(path: Path, key: str, value: int) -> None:
    """Make ``key`` (written as uint32) an int32 holding ``value``, negative allowed."""
    offset = _value_offset(path, key)
    patch(path, offset - 4, struct.pack("<Ii", 5, value))


def _error_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("error: "))


# -- a corrupted length never sizes an allocation ---------------------------------------------


@pytest.mark.slow
def test_corrupted_tensor_name_length_in_gemma_is_refused_within_the_memory_limit(
    gemma_gguf, tmp_path
):
    header = gemma_gguf.open("rb").read(7_000_000)
    layout = map_header(header)
    copy = sparse_copy(gemma_gguf, tmp_path / "gemma.gguf", layout.header_end)
    name_length = layout.of_kind("tensor name length")[5]
    patch(copy, name_length.offset, struct.pack("<Q", 200_000_000))

    run = run_cli_limited("estimate", str(copy))

    assert run.exit_code == 1
    assert _error_line(run.stderr) == (
        f"error: {copy}: corrupt header at byte {name_length.offset}: a tensor name length of "
        "200000000 (at most 63) while reading tensor info 6 of 236"
    )
    assert len(run.stderr) < 1000


def test_sparse_600_mb_file_with_a_500_mb_key_length_is_refused(llama_file, tmp_path):
    data = bytearray(llama_file.read_bytes())
    data[24:32] = struct.pack("<Q", 500_000_000)  # the first key's length
    path = tmp_path / "sparse.gguf"
    with path.open("wb") as out:
        out.write(data)
        out.truncate(600_000_000)

    run = run_cli_limited("estimate", str(path))

    assert run.exit_code == 1
    assert _error_line(run.stderr) == (
        f"error: {path}: corrupt header at byte 24: a key length of 500000000 (at most 65,535) "
        "while reading metadata entry 1 of 15"
    )


def test_string_length_beyond_the_file_is_truncation_not_an_allocation(tmp_path):
    path = write_model(tmp_path / "small.gguf", vocab=100)
    offset = _value_offset(path, "general.architecture")
    beyond = path.stat().st_size - offset  # within the 4 MiB limit, past the end
    patch(path, offset, struct.pack("<Q", beyond))
    with pytest.raises(ModelFileError) as raised:
        read_header(path)
    assert raised.value.message == (
        f"{path}: truncated at byte {path.stat().st_size} while reading the value of metadata "
        f"key 'general.architecture' (a string length of {beyond} at byte {offset})"
    )


def test_a_long_key_is_shortened_and_escaped_in_the_message(tmp_path):
    key = "\x1b[31m" + "k" * 10_000
    path = write_model(tmp_path / "m.gguf", extra={key: 1})
    patch(path, _value_offset(path, key) - 4, struct.pack("<I", 99))  # an unknown value type
    with pytest.raises(ModelFileError) as raised:
        read_header(path)
    message = raised.value.message
    assert "unknown value type 99 while reading the value of metadata key '\\x1b[31mkkk" in message
    assert "\x1b" not in message
    assert len(message) < 300


def test_a_tensor_count_beyond_the_limit_is_corruption(llama_file):
    patch(llama_file, 8, struct.pack("<Q", 1 << 20))
    with pytest.raises(ModelFileError, match=r"a tensor count of 1048576 \(at most 65,536\)"):
        read_header(llama_file)


def test_a_tensor_with_five_dimensions_is_corruption(llama_file):
    layout = map_header(llama_file.read_bytes())
    dims = layout.of_kind("dimension count")[0]
    patch(llama_file, dims.offset, struct.pack("<I", 5))
    with pytest.raises(ModelFileError, match="has 5 dimensions \\(at most 4\\)"):
        read_header(llama_file)


def test_a_tensor_whose_data_is_not_where_the_previous_ends_is_corruption(llama_file):
    layout = map_header(llama_file.read_bytes())
    offset = layout.of_kind("tensor offset")[1]
    patch(llama_file, offset.offset, struct.pack("<Q", 1 << 40))
    with pytest.raises(ModelFileError, match="data is at offset 1099511627776, where"):
        read_header(llama_file)


def test_arrays_nested_deeper_than_two_are_corruption(tmp_path):
    path = write_model(tmp_path / "m.gguf", extra={"nested": [[[1]]]})
    with pytest.raises(ModelFileError, match="arrays nested more than 2 deep"):
        read_header(path)


# -- metadata never sizes an allocation or a loop ----------------------------------------------


def test_block_count_of_100_million_in_a_small_file_is_refused(llama_file):
    _set_uint32(llama_file, "llama.block_count", 100_000_000)

    run = run_cli_limited("estimate", str(llama_file))

    assert run.exit_code == 1
    assert _error_line(run.stderr) == (
        f"error: {llama_file}: cannot size this model: llama.block_count is 100000000; it "
        "must be between 1 and 4,096"
    )


@pytest.mark.parametrize(
    "key", ["llama.embedding_length", "llama.block_count", "llama.context_length"]
)
def test_negative_shape_in_a_gguf_file_is_refused_naming_the_key(llama_file, key):
    _set_int32(llama_file, key, -4096)
    run = run_cli_limited("fit", str(llama_file))
    assert run.exit_code == 1
    assert f"cannot size this model: {key} is -4096; it must be between 1 and" in run.stderr
    assert "fits" not in run.stdout


def _show(**overrides):
    info = {
        "general.architecture": "llama",
        "general.parameter_count": 1_000_000_000,
        "llama.block_count": 16,
        "llama.embedding_length": 2048,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.context_length": 131072,
        "llama.vocab_size": 128256,
    }
    info.update(overrides)
    return {"details": {"quantization_level": "Q4_K_M"}, "model_info": info}


def test_block_count_of_100_million_through_metadata_is_refused(tmp_path):
    path = tmp_path / "show.json"
    path.write_text(json.dumps(_show(**{"llama.block_count": 100_000_000})))

    run = run_cli_limited("estimate", "llama3.2:1b", "--metadata", str(path))

    assert run.exit_code == 1
    assert _error_line(run.stderr) == (
        "error: llama3.2:1b: the provider's metadata cannot be sized: llama.block_count is "
        "100000000; it must be between 1 and 4,096"
    )


@pytest.mark.parametrize(
    "key", ["llama.embedding_length", "llama.block_count", "llama.context_length"]
)
def test_negative_metadata_is_refused_naming_the_key(key):
    warden = Warden(Config())
    with pytest.raises(EstimateUnavailable, match=f"{key} is -1; it must be between 1 and"):
        warden.estimate(ModelRef(name="llama3.2:1b"), 4096, metadata=_show(**{key: -1}))


def test_fractional_or_textual_head_count_is_refused():
    warden = Warden(Config())
    metadata = _show(**{"llama.attention.head_count": "32; rm -rf"})
    with pytest.raises(EstimateUnavailable, match="head_count is '32; rm -rf'; it must be a whole"):
        warden.estimate(ModelRef(name="llama3.2:1b"), 4096, metadata=metadata)


def test_infinite_parameter_count_is_no_count():
    warden = Warden(Config())
    with pytest.raises(EstimateUnavailable, match="no estimator could size 'mystery'"):
        warden.estimate(
            ModelRef(name="mystery"), 4096, metadata={"general.parameter_count": float("inf")}
        )


class AbsurdOllama(FakeOllama):
    """An Ollama whose /api/show reports 100 million blocks."""

    def show(self, body):
        status, answer = super().show(body)
        family = answer["details"]["family"]
        answer["model_info"][f"{family}.block_count"] = 100_000_000
        return status, answer


def test_block_count_of_100_million_from_ollama_show_is_refused(tmp_path):
    with serve(AbsurdOllama()) as (url, _):
        config = tmp_path / "memwarden.toml"
        config.write_text(f'[plugins.ollama]\nhost = "{url}"\n')
        run = run_cli_limited(
            "--config", str(config), "estimate", "llama3.2:latest", "--provider", "ollama"
        )
    assert run.exit_code == 1
    assert _error_line(run.stderr) == (
        "error: llama3.2:latest: the provider's metadata cannot be sized: llama.block_count is "
        "100000000; it must be between 1 and 4,096"
    )


def test_a_block_tensor_beyond_block_count_is_refused(tmp_path):
    path = write_model(tmp_path / "m.gguf", layers=4)
    _set_uint32(path, "llama.block_count", 2)
    with pytest.raises(ModelFileError, match=r"tensors of block 3, but llama\.block_count is 2"):
        Warden(Config()).estimate(ModelRef(name=str(path)), 4096)


# -- special files -------------------------------------------------------------------------------


def test_a_fifo_given_as_a_model_is_refused(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    run = run_cli_limited("estimate", str(fifo), timeout_s=60)
    assert run.exit_code == 1
    assert _error_line(run.stderr) == f"error: {fifo}: {FIFO_MESSAGE}"


def test_a_fifo_found_by_name_in_models_dirs_is_refused(tmp_path, write_config):
    models = tmp_path / "models"
    models.mkdir()
    os.mkfifo(models / "tiny.gguf")
    config = write_config(f'[plugins.gguf-estimator]\nmodels_dirs = ["{models}"]\n')
    run = run_cli_limited("--config", str(config), "estimate", "tiny", timeout_s=60)
    assert run.exit_code == 1
    assert _error_line(run.stderr) == f"error: {models / 'tiny.gguf'}: {FIFO_MESSAGE}"


def test_a_fifo_as_part_of_a_split_model_is_refused(tmp_path):
    write_model(tmp_path / "split.gguf", split_max_tensors=20)
    parts = sorted(tmp_path.glob("split-*.gguf"))
    assert [p.name for p in parts] == ["split-00001-of-00002.gguf", "split-00002-of-00002.gguf"]
    parts[1].unlink()
    os.mkfifo(parts[1])
    with pytest.raises(ModelFileError) as raised:
        read_model(parts[0])
    assert raised.value.message == f"{parts[1]}: {FIFO_MESSAGE}"


def test_a_fifo_as_metadata_file_is_refused(tmp_path):
    fifo = tmp_path / "show.json"
    os.mkfifo(fifo)
    run = run_cli_limited("estimate", "llama3.2:1b", "--metadata", str(fifo), timeout_s=60)
    assert run.exit_code == 1
    assert _error_line(run.stderr) == f"error: {fifo}: a FIFO (named pipe), not a model info file"


def test_a_fifo_as_ollama_manifest_is_no_model(tmp_path):
    manifest = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "tiny"
    manifest.mkdir(parents=True)
    os.mkfifo(manifest / "latest")
    assert ollama_blob("tiny", tmp_path) is None


def test_llamacpp_refuses_a_fifo_in_models_dir_before_starting_a_worker(tmp_path):
    os.mkfifo(tmp_path / "tiny.gguf")
    provider = LlamaCppProvider(LlamaCppOptions(models_dir=str(tmp_path)))
    with pytest.raises(ModelFileError) as raised:
        provider.load("tiny", context_tokens=512)
    assert raised.value.message == f"{(tmp_path / 'tiny.gguf').resolve()}: {FIFO_MESSAGE}"
    assert provider.loaded_models() == []


def test_llamacpp_does_not_list_a_fifo_as_a_model(tmp_path):
    os.mkfifo(tmp_path / "tiny.gguf")
    provider = LlamaCppProvider(LlamaCppOptions(models_dir=str(tmp_path)))
    assert provider.available_models() == []


# -- an estimator's internal error is reported as itself ---------------------------------------


class RecursingEstimator:
    @hookimpl(tryfirst=True)
    def estimate_model_size(self, model, context_tokens, options):
        raise RecursionError("maximum recursion depth exceeded")


def _warden_with(plugin: object) -> Warden:
    warden = Warden(Config())
    warden.plugins.register(plugin)
    return warden


def test_an_estimators_crash_is_reported_as_itself(llama_file):
    warden = _warden_with(RecursingEstimator())
    with pytest.raises(EstimateUnavailable) as raised:
        # The built-in estimators cannot size a name without a file, metadata or size.
        warden.estimate(ModelRef(name="mystery"), 4096)
    assert raised.value.message == (
        "estimator 'RecursingEstimator' failed while sizing 'mystery': RecursionError: maximum "
        "recursion depth exceeded"
    )


def test_an_estimators_crash_is_noted_when_another_answers(llama_file):
    warden = _warden_with(RecursingEstimator())
    result = warden.estimate(ModelRef(name=str(llama_file)), 4096)
    assert result.confidence is Confidence.HIGH
    assert result.notes[-1] == (
        "RecursingEstimator failed: RecursionError: maximum recursion depth exceeded"
    )


# -- command-line values -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e300"])
def test_watch_duration_must_be_a_finite_positive_number(run_cli, value):
    result = run_cli("watch", "--duration", value)
    assert result.exit_code == 2
    assert f"Invalid value for '--duration': '{value}' is not a number of seconds" in result.stderr


def test_plan_context_0_is_a_usage_error(run_cli):
    result = run_cli("plan", "--context", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--context': 0 is not in the range x>=1." in result.stderr
