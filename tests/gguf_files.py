"""Small GGUF files with the metadata shapes of real models, written with the gguf package."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType


def _quantized(shape: Sequence[int], qtype: Q) -> tuple[np.ndarray, list[int], Q]:
    """Zero bytes of the right size for a quantised tensor of ``shape`` (ne0 first)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    row_bytes = shape[0] // block * size
    # GGUFWriter takes a quantised tensor's shape in bytes, numpy order (outermost first).
    byte_shape = [*reversed(shape[1:]), row_bytes]
    return np.zeros(byte_shape, dtype=np.uint8), byte_shape, qtype


def _add(writer: gguf.GGUFWriter, name: str, shape: Sequence[int], qtype: Q) -> None:
    if qtype == Q.F32:
        writer.add_tensor(name, np.zeros(list(reversed(shape)), dtype=np.float32))
    else:
        data, raw_shape, raw_type = _quantized(shape, qtype)
        writer.add_tensor(name, data, raw_shape=raw_shape, raw_dtype=raw_type)


def write_model(
    path: Path,
    *,
    arch: str = "llama",
    layers: int = 4,
    embedding: int = 256,
    heads: int = 8,
    heads_kv: int | Sequence[int] = 2,
    head_dim: int = 32,
    feed_forward: int = 512,
    vocab: int = 5000,
    context: int = 8192,
    sliding_window: int | None = None,
    weight_type: Q = Q.Q8_0,
    experts: int = 0,
    split_max_tensors: int = 0,
    extra: dict | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    """A model of ``arch`` with real key names and tensor names, tiny tensors of zeros."""
    writer = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors, endianess=endianess)
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    if sliding_window:
        writer.add_sliding_window(sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([1] * vocab)
    for key, value in (extra or {}).items():
        writer.add_key_value(key, value, _value_type(value))
    kv_heads = [heads_kv] * layers if isinstance(heads_kv, int) else list(heads_kv)
    _add(writer, "token_embd.weight", (embedding, vocab), weight_type)
    for layer in range(layers):
        prefix = f"blk.{layer}."
        _add(writer, prefix + "attn_norm.weight", (embedding,), Q.F32)
        _add(writer, prefix + "attn_q.weight", (embedding, heads * head_dim), weight_type)
        _add(writer, prefix + "attn_k.weight", (embedding, kv_heads[layer] * head_dim), weight_type)
        _add(writer, prefix + "attn_v.weight", (embedding, kv_heads[layer] * head_dim), weight_type)
        _add(writer, prefix + "attn_output.weight", (heads * head_dim, embedding), weight_type)
        _add(writer, prefix + "ffn_norm.weight", (embedding,), Q.F32)
        if experts:
            # A mixture of experts, as llama.cpp's converter stores one: a router and the
            # experts' matrices stacked in 3-D tensors.
            _add(writer, prefix + "ffn_gate_inp.weight", (embedding, experts), Q.F32)
            shape = (embedding, feed_forward, experts)
            _add(writer, prefix + "ffn_gate_exps.weight", shape, weight_type)
            _add(writer, prefix + "ffn_up_exps.weight", shape, weight_type)
            _add(
                writer,
                prefix + "ffn_down_exps.weight",
                (feed_forward, embedding, experts),
                weight_type,
            )
            continue
        _add(writer, prefix + "ffn_gate.weight", (embedding, feed_forward), weight_type)
        _add(writer, prefix + "ffn_up.weight", (embedding, feed_forward), weight_type)
        _add(writer, prefix + "ffn_down.weight", (feed_forward, embedding), weight_type)
    _add(writer, "output_norm.weight", (embedding,), Q.F32)
    _add(writer, "output.weight", (embedding, vocab), weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_recurrent(
    path: Path,
    arch: str,
    keys: dict,
    *,
    layers: int = 4,
    embedding: int = 256,
    heads_kv: Sequence[int] | None = None,
    head_dim: int = 32,
    vocab: int = 1000,
) -> Path:
    """A recurrent (or hybrid) model of ``arch``: its state keys (``keys``, without the
    architecture prefix), and attention only where ``heads_kv`` gives a layer KV heads."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(layers)
    writer.add_context_length(8192)
    writer.add_embedding_length(embedding)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    if heads_kv is not None:
        writer.add_head_count(8)
        writer.add_head_count_kv(list(heads_kv))
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    for key, value in keys.items():
        writer.add_key_value(f"{arch}.{key}", value, _value_type(value))
    _add(writer, "token_embd.weight", (embedding, vocab), Q.Q8_0)
    for layer in range(layers):
        _add(writer, f"blk.{layer}.attn_norm.weight", (embedding,), Q.F32)
        _add(writer, f"blk.{layer}.ssm_in.weight", (embedding, 2 * embedding), Q.Q8_0)
    _add(writer, "output_norm.weight", (embedding,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_gemma3(path: Path, **kwargs) -> Path:
    """Gemma 3's shape: one KV head of 256, a 512-token sliding window on 5 of every 6 layers."""
    settings = dict(
        arch="gemma3",
        layers=12,
        embedding=256,
        heads=4,
        heads_kv=1,
        head_dim=256,
        feed_forward=512,
        context=32768,
        sliding_window=512,
    )
    settings.update(kwargs)
    return write_model(path, **settings)


def _value_type(value: object) -> gguf.GGUFValueType:
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    return gguf.GGUFValueType.ARRAY


def isolate_model_stores(monkeypatch, home: Path) -> None:
    """No real Ollama or LM Studio store of the machine running the tests is searched."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
