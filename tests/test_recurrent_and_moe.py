"""Architectures beyond attention-only: the recurrent state of Mamba, RWKV and hybrid models,
mixtures of experts, and a clear "cannot size" for what memwarden has no formula for.

Synthetic GGUF files (tests/gguf_files.py); every figure is computed by hand from llama.cpp's
formulas (llama-hparams.cpp n_embd_r/n_embd_s, llama-memory-recurrent.cpp: float32 r and s
tensors per recurrent layer, one row per sequence)."""

from __future__ import annotations

import pytest
from gguf_files import isolate_model_stores, write_model, write_recurrent

from memwarden.core.config import Config
from memwarden.core.errors import EstimateUnavailable, ModelFileError
from memwarden.core.types import ModelRef
from memwarden.core.warden import Warden
from memwarden.estimation.gguf import read_model
from memwarden.plugins.gguf_estimator import shape_of

MAMBA = {
    "ssm.conv_kernel": 4,
    "ssm.inner_size": 512,
    "ssm.state_size": 16,
    "ssm.time_step_rank": 16,
}
# Per layer, float32: r = (conv_kernel - 1) x (inner + 2 x groups x state) = 3 x 512 = 1,536,
# s = state x inner = 16 x 512 = 8,192: 38,912 bytes per sequence.
MAMBA_LAYER_BYTES = (3 * 512 + 16 * 512) * 4
# One attention layer's f16 cache at 4,096 cells: 2 KV heads x 32 x (K + V) x 2 bytes per cell.
ATTENTION_LAYER_BYTES = 4096 * 2 * 32 * 2 * 2


@pytest.fixture(autouse=True)
def no_model_stores(monkeypatch, tmp_path_factory):
    isolate_model_stores(monkeypatch, tmp_path_factory.mktemp("home"))


@pytest.fixture
def warden():
    return Warden(Config())


def estimate(warden, path, context=4096, **options):
    return warden.estimate(ModelRef(name=str(path)), context, **options)


def test_mamba_state_is_conv_and_ssm_state_per_layer(warden, tmp_path):
    path = write_recurrent(tmp_path / "mamba.gguf", "mamba", MAMBA)
    assert estimate(warden, path).kv_cache_bytes == 4 * MAMBA_LAYER_BYTES == 155_648


def test_recurrent_state_has_one_row_per_sequence(warden, tmp_path):
    path = write_recurrent(tmp_path / "mamba.gguf", "mamba", MAMBA)
    assert estimate(warden, path, parallel=3).kv_cache_bytes == 3 * 155_648


def test_recurrent_state_does_not_grow_with_the_context(warden, tmp_path):
    path = write_recurrent(tmp_path / "mamba.gguf", "mamba", MAMBA)
    assert estimate(warden, path, context=65_536).kv_cache_bytes == 155_648


def test_mamba2_groups_widen_the_conv_state(warden, tmp_path):
    path = write_recurrent(tmp_path / "m2.gguf", "mamba2", {**MAMBA, "ssm.group_count": 2})
    # r = 3 x (512 + 2 x 2 x 16) = 1,728; s = 8,192.
    assert estimate(warden, path).kv_cache_bytes == 4 * (1728 + 8192) * 4 == 158_720


def test_mamba2_without_a_group_count_names_the_missing_key(warden, tmp_path):
    path = write_recurrent(tmp_path / "m2.gguf", "mamba2", MAMBA)
    with pytest.raises(ModelFileError, match=r"mamba2\.ssm\.group_count is missing"):
        estimate(warden, path)


def test_rwkv6_state_is_token_shift_and_wkv_state(warden, tmp_path):
    path = write_recurrent(tmp_path / "rwkv.gguf", "rwkv6", {"wkv.head_size": 64})
    # r = token_shift_count (default 2) x 256; s = 256 x 64.
    assert estimate(warden, path).kv_cache_bytes == 4 * (2 * 256 + 256 * 64) * 4 == 270_336


def test_rwkv7_token_shift_count_from_the_header(warden, tmp_path):
    keys = {"wkv.head_size": 64, "token_shift_count": 1}
    path = write_recurrent(tmp_path / "rwkv7.gguf", "rwkv7", keys)
    assert estimate(warden, path).kv_cache_bytes == 4 * (256 + 256 * 64) * 4 == 266_240


def test_jamba_keeps_state_in_its_mamba_layers_and_a_cache_in_its_attention_layer(warden, tmp_path):
    path = write_recurrent(tmp_path / "jamba.gguf", "jamba", MAMBA, heads_kv=[0, 2, 0, 0])
    assert (
        estimate(warden, path).kv_cache_bytes
        == (3 * MAMBA_LAYER_BYTES + ATTENTION_LAYER_BYTES)
        == 1_165_312
    )


def test_falcon_h1_layers_keep_both_a_state_and_a_cache(warden, tmp_path):
    keys = {**MAMBA, "ssm.group_count": 1}
    path = write_recurrent(tmp_path / "fh1.gguf", "falcon-h1", keys, heads_kv=[2, 2, 2, 2])
    # r = 3 x (512 + 2 x 16) = 1,632; s = 8,192; every layer also has an attention cache.
    assert (
        estimate(warden, path).kv_cache_bytes
        == (4 * (1632 + 8192) * 4 + 4 * ATTENTION_LAYER_BYTES)
        == 4_351_488
    )


def test_lfm2_short_convolutions_keep_l_cache_minus_one_rows(warden, tmp_path):
    path = write_recurrent(
        tmp_path / "lfm2.gguf", "lfm2", {"shortconv.l_cache": 3}, heads_kv=[0, 2, 0, 2]
    )
    # r = 256 x (3 - 1) floats in the 2 convolution layers; no s.
    assert (
        estimate(warden, path).kv_cache_bytes
        == (2 * 256 * 2 * 4 + 2 * ATTENTION_LAYER_BYTES)
        == 2_101_248
    )


def test_the_resident_figure_holds_the_state_which_is_cleared_at_load(warden, tmp_path):
    path = write_recurrent(tmp_path / "mamba.gguf", "mamba", MAMBA)
    assert estimate(warden, path).resident.kv_cache_bytes == 155_648


def test_the_state_is_named_in_a_note(warden, tmp_path):
    path = write_recurrent(tmp_path / "mamba.gguf", "mamba", MAMBA)
    assert (
        "4 of 4 layers keep a recurrent state of 38,912 bytes per sequence, 0.1 MiB in all, "
        "counted in the KV cache"
    ) in estimate(warden, path).notes


def test_an_unsized_hybrid_is_estimate_unavailable_naming_its_architecture(warden, tmp_path):
    path = write_recurrent(tmp_path / "q3n.gguf", "qwen3next", MAMBA, heads_kv=[0, 0, 0, 2])
    with pytest.raises(EstimateUnavailable) as caught:
        estimate(warden, path)
    assert caught.value.message == (
        f"{path}: cannot size this model: architecture 'qwen3next' keeps a hybrid of attention "
        "and recurrent layers, and memwarden has no formula for its state size yet"
    )


def test_an_unknown_architecture_with_recurrent_keys_is_estimate_unavailable(warden, tmp_path):
    path = write_recurrent(tmp_path / "m3.gguf", "mamba3", MAMBA, heads_kv=[0, 0, 0, 0])
    with pytest.raises(EstimateUnavailable, match=r"recurrent state \(mamba3\.ssm\.conv_kernel, "):
        estimate(warden, path)


# -- mixtures of experts -------------------------------------------------------------------


def moe(tmp_path, used: int):
    return write_model(
        tmp_path / f"moe{used}.gguf",
        feed_forward=2048,
        vocab=1000,
        experts=8,
        extra={"llama.expert_count": 8, "llama.expert_used_count": used},
    )


def test_every_experts_weights_are_counted(tmp_path):
    shape = shape_of(read_model(moe(tmp_path, 2)))
    # Attention and norms (176,128 bytes), the router (256 x 8 float32) and three stacked
    # expert matrices of 8 x 2,048 x 256 q8_0 values (272 bytes per 256 values): 4,456,448 each.
    assert shape.layer_weights_bytes[0] == 176_128 + 8192 + 3 * 4_456_448 == 13_553_664


def test_the_compute_buffer_holds_the_used_experts_feed_forward(warden, tmp_path):
    # masks 4,096 x 512 f16, 2 used experts x 2,048 x 512 tokens x 2 (gate, up) float32, two
    # hidden rows, the router's 8 logits per token.
    expected = 4096 * 512 * 2 + 2 * 2 * 2048 * 512 * 4 + 2 * 256 * 512 * 4 + 8 * 512 * 4
    assert estimate(warden, moe(tmp_path, 2)).compute_bytes == expected == 22_036_480


def test_more_used_experts_grow_the_compute_buffer_not_the_weights(warden, tmp_path):
    two, four = estimate(warden, moe(tmp_path, 2)), estimate(warden, moe(tmp_path, 4))
    assert (four.weights_bytes - two.weights_bytes, four.compute_bytes - two.compute_bytes) == (
        0,
        2 * 2 * 2048 * 512 * 4,
    )


def test_experts_without_their_own_length_use_the_feed_forward_length(warden, tmp_path):
    # Mixtral's header: expert_count and expert_used_count, the experts' width in
    # feed_forward_length. The same file with expert_feed_forward_length agrees.
    mixtral = estimate(warden, moe(tmp_path, 2))
    explicit = write_model(
        tmp_path / "explicit.gguf",
        feed_forward=2048,
        vocab=1000,
        experts=8,
        extra={
            "llama.expert_count": 8,
            "llama.expert_used_count": 2,
            "llama.expert_feed_forward_length": 2048,
        },
    )
    assert estimate(warden, explicit).compute_bytes == mixtral.compute_bytes
