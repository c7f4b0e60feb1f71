from __future__ import annotations

import pytest
from gguf_files import isolate_model_stores, write_gemma3, write_model

from memwarden.core.config import Config
from memwarden.core.errors import EstimateUnavailable
from memwarden.core.types import Confidence, ModelRef
from memwarden.core.warden import Warden
from memwarden.estimation.gguf import read_model
from memwarden.estimation.sizing import (
    DECODE_WORK_BYTES,
    GRAPH_NODE_BYTES,
    KV_CELL_META_BYTES,
    TENSOR_HEADER_BYTES,
    VOCAB_ENTRY_BYTES,
)

MiB = 1 << 20


@pytest.fixture(autouse=True)
def no_model_stores(monkeypatch, tmp_path_factory):
    isolate_model_stores(monkeypatch, tmp_path_factory.mktemp("home"))


@pytest.fixture
def warden():
    return Warden(Config())


@pytest.fixture
def llama_file(tmp_path):
    # 4 layers, 8 query heads sharing 2 KV heads of 32: grouped-query attention.
    return write_model(tmp_path / "llama.gguf")


def estimate(warden, path, context=4096, **options):
    return warden.estimate(ModelRef(name=str(path)), context, **options)


def test_gguf_file_is_sized_by_the_gguf_estimator_with_high_confidence(warden, llama_file):
    result = estimate(warden, llama_file)
    assert result.estimator == "gguf-estimator"
    assert result.confidence is Confidence.HIGH


def test_weights_are_the_sum_of_tensor_sizes(warden, llama_file):
    assert estimate(warden, llama_file).weights_bytes == read_model(llama_file).tensor_bytes()


def test_kv_cache_counts_kv_heads_not_query_heads(warden, llama_file):
    # layers x cells x n_head_kv x (key + value length) x 2 bytes (f16)
    assert estimate(warden, llama_file).kv_cache_bytes == 4 * 4096 * 2 * (32 + 32) * 2


def test_kv_cache_cells_are_padded_to_256(warden, llama_file):
    assert estimate(warden, llama_file, context=1000).kv_cache_bytes == 4 * 1024 * 2 * 64 * 2


def test_q8_0_cache_takes_34_bytes_per_32_values(warden, llama_file):
    row = 2 * 32 // 32 * 34  # one K row of 2 heads x 32 values
    assert estimate(warden, llama_file, kv_type="q8_0").kv_cache_bytes == 4 * 4096 * 2 * row


def test_q4_0_cache_takes_18_bytes_per_32_values(warden, llama_file):
    row = 2 * 32 // 32 * 18
    assert estimate(warden, llama_file, kv_type="q4_0").kv_cache_bytes == 4 * 4096 * 2 * row


def test_parallel_sequences_each_get_the_context(warden, llama_file):
    one = estimate(warden, llama_file).kv_cache_bytes
    assert estimate(warden, llama_file, parallel=3).kv_cache_bytes == 3 * one


def test_per_layer_kv_head_counts_are_honoured(warden, tmp_path):
    path = write_model(tmp_path / "m.gguf", heads_kv=[2, 0, 4, 1])
    assert estimate(warden, path).kv_cache_bytes == (2 + 0 + 4 + 1) * 4096 * 64 * 2


def test_gemma3_sliding_layers_hold_window_plus_ubatch_cells(warden, tmp_path):
    path = write_gemma3(tmp_path / "gemma.gguf")
    # 12 layers: 2 global (5 and 11) with every cell, 10 sliding with pad(512 + 512, 256) cells.
    per_cell = 1 * (256 + 256) * 2
    expected = 2 * 32768 * per_cell + 10 * 1024 * per_cell
    assert estimate(warden, path, context=32768).kv_cache_bytes == expected


def test_sliding_window_never_exceeds_the_context(warden, tmp_path):
    path = write_gemma3(tmp_path / "gemma.gguf")
    assert estimate(warden, path, context=512).kv_cache_bytes == 12 * 512 * 512 * 2


def test_swa_full_gives_sliding_layers_the_whole_context(warden, tmp_path):
    path = write_gemma3(tmp_path / "gemma.gguf")
    result = estimate(warden, path, context=8192, swa_full=True)
    assert result.kv_cache_bytes == 12 * 8192 * 512 * 2


def test_explicit_sliding_window_pattern_overrides_the_architecture_default(warden, tmp_path):
    pattern = [True, False] * 6
    path = write_gemma3(
        tmp_path / "g.gguf", extra={"gemma3.attention.sliding_window_pattern": pattern}
    )
    expected = 6 * 8192 * 1024 + 6 * 1024 * 1024
    assert estimate(warden, path, context=8192).kv_cache_bytes == expected


def test_compute_buffer_holds_logits_for_a_full_ubatch(warden, llama_file):
    result = estimate(warden, llama_file)
    logits = 5000 * 512 * 4
    hidden = 256 * 512 * 4
    assert result.compute_bytes == logits + 2 * hidden


def test_compute_buffer_follows_the_ubatch(warden, llama_file):
    result = estimate(warden, llama_file, ubatch_tokens=128)
    assert result.compute_bytes == 5000 * 128 * 4 + 2 * 256 * 128 * 4


def test_without_flash_attention_the_scores_can_dominate_the_compute_buffer(warden, llama_file):
    flash = estimate(warden, llama_file, context=65536)
    plain = estimate(warden, llama_file, context=65536, flash_attention=False)
    scores = 65536 * 512 * 8 * 4  # cells x tokens x query heads x f32
    assert plain.compute_bytes > scores > flash.compute_bytes


def test_quantised_v_cache_forces_flash_attention(warden, llama_file):
    forced = estimate(warden, llama_file, context=65536, kv_type="q8_0", flash_attention=False)
    assert forced.compute_bytes == estimate(warden, llama_file, context=65536).compute_bytes


def test_overhead_is_built_from_vocabulary_tensors_graph_and_cells(warden, llama_file):
    result = estimate(warden, llama_file)
    tensors = 39
    expected = (
        5000 * VOCAB_ENTRY_BYTES
        + tensors * TENSOR_HEADER_BYTES
        + max(1024, 8 * tensors) * GRAPH_NODE_BYTES
        + 4096 * KV_CELL_META_BYTES
        + 5000 * 4
        + DECODE_WORK_BYTES
    )
    assert result.overhead_bytes == expected


def test_gpu_layers_split_the_estimate_between_pools(warden, llama_file):
    whole = estimate(warden, llama_file)
    result = estimate(warden, llama_file, gpu_layers=2, pool_id="cuda:0")
    pools = {share.pool_id: share.bytes for share in result.per_pool}
    assert set(pools) == {"cuda:0", "system"}
    assert sum(pools.values()) == whole.total_bytes
    # Two of four layers' KV cache and the compute buffer go to the GPU.
    assert pools["cuda:0"] > whole.kv_cache_bytes // 2 + whole.compute_bytes


def test_context_beyond_training_adds_a_note(warden, llama_file):
    notes = estimate(warden, llama_file, context=16384).notes
    assert any("trained for" in note for note in notes)


def test_unknown_kv_type_is_a_clear_error(warden, llama_file):
    with pytest.raises(EstimateUnavailable, match="unknown KV cache type 'q3'"):
        estimate(warden, llama_file, kv_type="q3")


OLLAMA_SHOW = {
    "details": {"parameter_size": "8.0B", "quantization_level": "Q4_K_M", "family": "llama"},
    "model_info": {
        "general.architecture": "llama",
        "general.parameter_count": 8030261248,
        "general.file_type": 15,
        "llama.block_count": 32,
        "llama.context_length": 131072,
        "llama.embedding_length": 4096,
        "llama.feed_forward_length": 14336,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.vocab_size": 128256,
        "tokenizer.ggml.tokens": None,
    },
}


def test_ollama_metadata_is_sized_with_medium_confidence(warden):
    result = warden.estimate(ModelRef(name="llama3.1:8b"), 8192, metadata=OLLAMA_SHOW)
    assert result.estimator == "metadata-estimator"
    assert result.confidence is Confidence.MEDIUM


def test_ollama_metadata_kv_cache_uses_the_reported_shape(warden):
    result = warden.estimate(ModelRef(name="llama3.1:8b"), 8192, metadata=OLLAMA_SHOW)
    # 32 layers x 8192 cells x 8 KV heads x (128 + 128) x 2 bytes = 1 GiB, Llama 3 8B's known size.
    assert result.kv_cache_bytes == 1 << 30


def test_ollama_metadata_weights_come_from_parameters_and_file_type(warden):
    result = warden.estimate(ModelRef(name="llama3.1:8b"), 8192, metadata=OLLAMA_SHOW)
    assert result.weights_bytes == int(8030261248 * 4.89 / 8)


def test_metadata_and_file_agree_on_the_kv_cache(warden, llama_file):
    metadata = dict(read_model(llama_file).metadata)
    metadata["size_bytes"] = read_model(llama_file).tensor_bytes()
    from_file = estimate(warden, llama_file)
    from_metadata = warden.estimate(ModelRef(name="elsewhere"), 4096, metadata=metadata)
    assert from_metadata.estimator == "metadata-estimator"
    assert from_metadata.kv_cache_bytes == from_file.kv_cache_bytes
    assert from_metadata.compute_bytes == from_file.compute_bytes


def test_name_alone_falls_back_to_the_heuristic_with_low_confidence(warden):
    result = warden.estimate(ModelRef(name="qwen2.5:7b-instruct-q8_0"), 4096)
    assert result.estimator == "heuristic-estimator"
    assert result.confidence is Confidence.LOW
    assert result.weights_bytes == int(7e9 * 8.5 / 8)


def test_lmstudio_info_without_shapes_uses_the_reported_size(warden):
    info = {"architecture": "gemma3", "sizeBytes": 253_000_000, "paramsString": "270M"}
    result = warden.estimate(
        ModelRef(name="gemma-3-270m-it", provider="lmstudio"), 4096, metadata=info
    )
    assert result.estimator == "heuristic-estimator"
    assert result.weights_bytes == 253_000_000


def test_model_nobody_can_size_is_estimate_unavailable(warden):
    with pytest.raises(EstimateUnavailable, match="no estimator could size 'mystery'"):
        warden.estimate(ModelRef(name="mystery"), 4096)


def test_truncated_file_reaches_the_user_as_a_model_file_error(warden, llama_file, tmp_path):
    from memwarden.core.errors import ModelFileError

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(llama_file.read_bytes()[:3000])
    with pytest.raises(ModelFileError, match="truncated"):
        estimate(warden, cut)
