"""GGUF files of real architectures' shapes, with zero weights, for benchmarks/estimate_accuracy.py.

No second small GGUF model ships on the package index (the smallest other one is a 7B, several
GB), so the accuracy table's second and third families are written here with the ``gguf``
package: tensor names, shapes and types as llama.cpp's converter writes them, every weight zero.
llama.cpp loads and runs them like any model; what it allocates and touches depends on the
shapes, not on the values.

- ``llama``: a Llama-architecture model with grouped-query attention (8 layers, 1,024 wide,
  16 query heads sharing 4 KV heads of 64, feed-forward 2,816, 32,000 tokens), about the shape
  of TinyLlama's blocks: no sliding window, unlike Gemma 3;
- ``mamba``: Mamba-130M's shape (24 layers, 768 wide, inner 1,536, state 16, convolution 4,
  time-step rank 48) with a 32,000-token vocabulary: a recurrent state and no KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
VOCAB = 32_000


def _add(writer: gguf.GGUFWriter, name: str, shape: Sequence[int], qtype: Q) -> None:
    """A tensor of zeros of ``shape`` (ne0 first) and type ``qtype``."""
    if qtype == Q.F32:
        writer.add_tensor(name, np.zeros(list(reversed(shape)), dtype=np.float32))
        return
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    byte_shape = [*reversed(shape[1:]), shape[0] // block * size]
    writer.add_tensor(
        name, np.zeros(byte_shape, dtype=np.uint8), raw_shape=byte_shape, raw_dtype=qtype
    )


def _vocabulary(writer: gguf.GGUFWriter) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(VOCAB)])
    writer.add_token_scores([0.0] * VOCAB)
    writer.add_token_types([1] * VOCAB)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_llama(path: Path) -> Path:
    """The Llama-architecture model described above, Q8_0 matrices."""
    layers, embd, heads, heads_kv, head, ff = 8, 1024, 16, 4, 64, 2816
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(layers)
    writer.add_context_length(131_072)
    writer.add_embedding_length(embd)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    _vocabulary(writer)
    _add(writer, "token_embd.weight", (embd, VOCAB), Q.Q8_0)
    for layer in range(layers):
        prefix = f"blk.{layer}."
        _add(writer, prefix + "attn_norm.weight", (embd,), Q.F32)
        _add(writer, prefix + "attn_q.weight", (embd, heads * head), Q.Q8_0)
        _add(writer, prefix + "attn_k.weight", (embd, heads_kv * head), Q.Q8_0)
        _add(writer, prefix + "attn_v.weight", (embd, heads_kv * head), Q.Q8_0)
        _add(writer, prefix + "attn_output.weight", (heads * head, embd), Q.Q8_0)
        _add(writer, prefix + "ffn_norm.weight", (embd,), Q.F32)
        _add(writer, prefix + "ffn_gate.weight", (embd, ff), Q.Q8_0)
        _add(writer, prefix + "ffn_up.weight", (embd, ff), Q.Q8_0)
        _add(writer, prefix + "ffn_down.weight", (ff, embd), Q.Q8_0)
    _add(writer, "output_norm.weight", (embd,), Q.F32)
    _add(writer, "output.weight", (embd, VOCAB), Q.Q8_0)
    _finish(writer)
    return path


def write_mamba(path: Path) -> Path:
    """The Mamba model described above (llama.cpp's LLM_ARCH_MAMBA tensors), Q8_0 matrices and
    float32 convolution, time-step and state tensors; the output head tied to the embeddings."""
    layers, embd, inner, state, conv, dt_rank = 24, 768, 1536, 16, 4, 48
    writer = gguf.GGUFWriter(path, "mamba")
    writer.add_block_count(layers)
    writer.add_context_length(1 << 20)
    writer.add_embedding_length(embd)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    for key, value in (
        ("conv_kernel", conv),
        ("inner_size", inner),
        ("state_size", state),
        ("time_step_rank", dt_rank),
    ):
        writer.add_key_value(f"mamba.ssm.{key}", value, gguf.GGUFValueType.UINT32)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    _vocabulary(writer)
    _add(writer, "token_embd.weight", (embd, VOCAB), Q.Q8_0)
    for layer in range(layers):
        prefix = f"blk.{layer}."
        _add(writer, prefix + "attn_norm.weight", (embd,), Q.F32)
        _add(writer, prefix + "ssm_in.weight", (embd, 2 * inner), Q.Q8_0)
        _add(writer, prefix + "ssm_conv1d.weight", (conv, inner), Q.F32)
        _add(writer, prefix + "ssm_conv1d.bias", (inner,), Q.F32)
        _add(writer, prefix + "ssm_x.weight", (inner, dt_rank + 2 * state), Q.Q8_0)
        _add(writer, prefix + "ssm_dt.weight", (dt_rank, inner), Q.F32)
        _add(writer, prefix + "ssm_dt.bias", (inner,), Q.F32)
        _add(writer, prefix + "ssm_a", (state, inner), Q.F32)
        _add(writer, prefix + "ssm_d", (inner,), Q.F32)
        _add(writer, prefix + "ssm_out.weight", (inner, embd), Q.Q8_0)
    _add(writer, "output_norm.weight", (embd,), Q.F32)
    _finish(writer)
    return path


WRITERS = {"llama": write_llama, "mamba": write_mamba}


def synthetic_model(name: str, folder: Path) -> Path:
    """The synthetic model ``name`` ("llama", "mamba") in ``folder``, written once."""
    path = folder / f"synthetic-{name}.gguf"
    if not path.exists():
        WRITERS[name](path)
    return path
