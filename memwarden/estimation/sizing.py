"""The arithmetic of what a llama.cpp-based runtime allocates for a model, from its shape.

Every estimator (the GGUF file, a provider's metadata) describes the model as a
:class:`ModelShape` and the run as :class:`RunSettings`; :func:`estimate` does the rest. The
formulas follow llama.cpp's own allocation logic (``llama-context.cpp``, ``llama-kv-cache.cpp``,
``llama-graph.cpp``, ``ggml-backend.c``); docs/estimation.md derives each term and shows how
close the result is to a real load.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from memwarden.core.errors import EstimateUnavailable
from memwarden.core.types import (
    Confidence,
    MemoryEstimate,
    ModelRef,
    PoolShare,
    ResidentEstimate,
)
from memwarden.estimation.gguf import GGMLType, ggml_type, shown
from memwarden.estimation.profiles import profile_options

MiB = 1 << 20
# llama.cpp pads the KV cache size (cells) to this many; the flash-attention kernels need it.
KV_CELL_PADDING = 256
# Defaults of llama.cpp's context parameters (llama-server, Ollama and the C API agree).
DEFAULT_BATCH_TOKENS = 2048
DEFAULT_UBATCH_TOKENS = 512
F32_BYTES = 4
F16_BYTES = 2

# -- runtime bookkeeping, per unit of the model's shape --------------------------------------
# Each llama_vocab entry: the token's text, score and attributes (40 bytes), the text -> id hash
# map's node and bucket (72), and the id -> piece cache (32), plus heap text for long tokens.
VOCAB_ENTRY_BYTES = 155
# Each tensor of the model: its ggml_tensor header and name in the model's ggml contexts and maps.
TENSOR_HEADER_BYTES = 1100
# Per graph node that the context plans for (llama.cpp's graph_max_nodes): the scheduler's
# context buffer holds 2 x GGML_SCHED_MAX_SPLIT_INPUTS (30) tensor headers of 336 bytes per node
# (20,160), its four backend-id arrays 61 ints per node (976), and the two graph results' meta
# buffers one 368-byte tensor overhead plus graph arrays each (816).
GRAPH_NODE_BYTES = 20_160 + 976 + 816
# Per KV cell: position, shift and 2-D position (16 bytes) and its 256-bit sequence set (32), plus
# the cell index arrays the graph inputs use.
KV_CELL_META_BYTES = 52
# The CPU backend's thread work buffer and the decode bookkeeping (batch allocator, output
# ids): 2.7 to 6 MiB for 1 to 8 threads, measured with glibc's mallinfo2.
DECODE_WORK_BYTES = 3 * MiB

# -- limits of a model's shape (docs/estimation.md, "Limits") ---------------------------------
# Metadata outside these is damaged or hostile: no published model comes near them (the largest
# have about 128 blocks, embeddings of 16,384, 128 heads, 256 experts and contexts of 10 M).
MAX_BLOCK_COUNT = 4096
MAX_EMBEDDING_LENGTH = 1 << 20
MAX_CONTEXT_LENGTH = 1 << 24
MAX_HEAD_COUNT = 1 << 14
MAX_HEAD_LENGTH = 1 << 16  # key_length, value_length
MAX_FEED_FORWARD_LENGTH = 1 << 24
MAX_VOCAB_SIZE = 1 << 24
MAX_EXPERT_COUNT = 4096
# A run asked for: tokens per sequence and sequences at once.
MAX_RUN_CONTEXT = 1 << 32
MAX_RUN_PARALLEL = 1 << 16

# Which layers use sliding-window attention, per architecture, as llama.cpp's
# ``hparams.set_swa_pattern(n)`` sets them: layer il is SWA when il % n < n - 1.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2, "exaone4": 4}


@attrs.frozen
class ModelShape:
    """What sizing needs to know about a model, however it was learned."""

    architecture: str
    block_count: int
    embedding_length: int
    head_count: tuple[int, ...]  # per layer
    head_count_kv: tuple[int, ...]  # per layer; 0 for a layer without its own KV cache
    key_length: int
    value_length: int
    feed_forward_length: int
    vocab_size: int
    weights_bytes: int
    # Bytes of each repeating block's tensors, when the file's tensor table gives them.
    layer_weights_bytes: tuple[int, ...] = ()
    output_weights_bytes: int = 0  # output head (output.weight) and final norm
    input_weights_bytes: int = 0  # token embeddings: always kept on the CPU by llama.cpp
    tensor_count: int = 0
    context_length: int | None = None  # trained context
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] = ()
    expert_count: int = 0
    expert_used_count: int = 0
    expert_feed_forward_length: int = 0
    # Bytes of weights ggml's CPU backend repacks into interleaved private buffers at load
    # (Q4_0, Q4_K, IQ4_NL matrices of the blocks): with mmap they are copied out of the mapping.
    repacked_weights_bytes: int = 0
    # Recurrent state (Mamba, RWKV, hybrids; :func:`recurrent_shape`): which layers keep one,
    # and the float32 values of its two parts per sequence, llama.cpp's n_embd_r() (the conv or
    # token-shift state) and n_embd_s() (the SSM or WKV state).
    recurrent_layers: tuple[bool, ...] = ()
    recurrent_r_values: int = 0
    recurrent_s_values: int = 0
    # What the recurrent layers compute per token, for the compute buffer: Mamba's inner size
    # and its B and C (2 x groups x state), or RWKV's embedding for its time mix.
    ssm_inner_size: int = 0
    ssm_bc_size: int = 0
    ssm_conv_kernel: int = 0

    @property
    def kv_layers(self) -> int:
        return sum(1 for n in self.head_count_kv if n > 0)

    @property
    def ff_width(self) -> int:
        """The feed-forward width one token computes: the used experts' (each
        ``expert_feed_forward_length``, or ``feed_forward_length`` where the experts have no
        length of their own, as in Mixtral) for a mixture of experts, else the dense one."""
        if self.expert_count and self.expert_used_count:
            per_expert = self.expert_feed_forward_length or self.feed_forward_length
            return per_expert * self.expert_used_count
        return self.feed_forward_length


@attrs.frozen
class RunSettings:
    """How the runtime is asked to run the model (llama.cpp's context parameters)."""

    context_tokens: int  # per sequence
    kv_type_k: GGMLType
    kv_type_v: GGMLType
    parallel: int = 1
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    ubatch_tokens: int = DEFAULT_UBATCH_TOKENS
    flash_attention: bool = True
    swa_full: bool = False
    kv_unified: bool = False
    gpu_layers: int = 0
    pool_id: str | None = None
    # Weights mapped from the file (llama.cpp's default) rather than read into private memory.
    use_mmap: bool = False
    # The KV cache of offloaded layers stays in system RAM (llama.cpp --no-kv-offload).
    kv_offload: bool = True
    # Tokens in the cache when the resident figure is taken; None: a context filled up.
    prompt_tokens: int | None = None
    # What the Python binding allocates beside llama.cpp ("llama-cpp-python"), or None.
    binding: str | None = None

    @classmethod
    def from_options(cls, context_tokens: int, options: Mapping[str, Any]) -> RunSettings:
        """Settings from the ``options`` of the estimate_model_size hook, with clear errors."""
        kv_type = str(options.get("kv_type") or "f16")
        type_k = _cache_type(str(options.get("kv_type_k") or kv_type))
        type_v = _cache_type(str(options.get("kv_type_v") or kv_type))
        quantized_v = type_v.block_size > 1
        flash = options.get("flash_attention")
        # llama.cpp's default is "auto", which turns flash attention on wherever the backend
        # supports it (the CPU and every GPU backend); a quantised V cache requires it.
        flash_attention = True if flash is None else bool(flash) or quantized_v
        if not 0 < context_tokens <= MAX_RUN_CONTEXT:
            raise ValueError(
                f"context must be between 1 and {MAX_RUN_CONTEXT:,} tokens, got "
                f"{shown(context_tokens)}"
            )
        parallel = int(options.get("parallel") or 1)
        if not 0 < parallel <= MAX_RUN_PARALLEL:
            raise ValueError(
                f"parallel must be between 1 and {MAX_RUN_PARALLEL:,}, got {shown(parallel)}"
            )
        return cls(
            context_tokens=context_tokens,
            kv_type_k=type_k,
            kv_type_v=type_v,
            parallel=parallel,
            batch_tokens=int(options.get("batch_tokens") or DEFAULT_BATCH_TOKENS),
            ubatch_tokens=int(options.get("ubatch_tokens") or DEFAULT_UBATCH_TOKENS),
            flash_attention=flash_attention,
            swa_full=bool(options.get("swa_full", False)),
            kv_unified=bool(options.get("kv_unified", False)),
            gpu_layers=int(options.get("gpu_layers") or 0),
            pool_id=options.get("pool_id"),
            use_mmap=bool(options.get("mmap", False)),
            kv_offload=bool(options.get("kv_offload", True)),
            prompt_tokens=_positive_or_none(options.get("prompt_tokens"), "prompt_tokens"),
            binding=options.get("binding"),
        )


def _positive_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if int(value) <= 0:
        raise ValueError(f"{name} must be a positive number of tokens, got {value}")
    return int(value)


# Types llama.cpp accepts for its KV cache (``--cache-type-k/-v``).
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def _cache_type(name: str) -> GGMLType:
    if name.lower() not in KV_CACHE_TYPES:
        raise ValueError(f"unknown KV cache type {name!r}; use one of {', '.join(KV_CACHE_TYPES)}")
    return ggml_type(name)


def pad(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@attrs.frozen
class KVLayout:
    """How many cells each kind of layer's KV cache gets, per stream and in all."""

    streams: int
    cells_per_stream: int
    swa_cells_per_stream: int

    def cells(self, swa: bool) -> int:
        return (self.swa_cells_per_stream if swa else self.cells_per_stream) * self.streams


def kv_layout(shape: ModelShape, run: RunSettings) -> KVLayout:
    """llama.cpp's cache sizes: n_ctx = pad(context x parallel, 256); one stream per sequence
    unless the cache is unified; an SWA cache holds min(n_ctx_seq, pad(n_swa x n_seq + n_ubatch,
    256)) cells per stream unless ``swa_full``."""
    n_ctx = pad(run.context_tokens * run.parallel, KV_CELL_PADDING)
    streams = 1 if run.kv_unified else run.parallel
    per_stream = n_ctx // streams
    ubatch = min(run.ubatch_tokens, run.batch_tokens)
    swa_cells = per_stream
    if shape.sliding_window and any(shape.swa_layers) and not run.swa_full:
        window_sequences = run.parallel if run.kv_unified else 1
        swa_cells = min(
            per_stream, pad(shape.sliding_window * window_sequences + ubatch, KV_CELL_PADDING)
        )
    return KVLayout(streams=streams, cells_per_stream=per_stream, swa_cells_per_stream=swa_cells)


def _is_swa(shape: ModelShape, layer: int) -> bool:
    return bool(shape.swa_layers) and layer < len(shape.swa_layers) and shape.swa_layers[layer]


def _layer_kv_bytes(
    shape: ModelShape, run: RunSettings, layout: KVLayout, n_head_kv: int, swa: bool
) -> int:
    """Bytes of K and V cache of one layer: cells x (K row + V row) of n_head_kv x head size."""
    if n_head_kv <= 0:
        return 0
    k_row = run.kv_type_k.row_bytes(shape.key_length * n_head_kv)
    v_row = run.kv_type_v.row_bytes(shape.value_length * n_head_kv)
    return layout.cells(swa) * (k_row + v_row)


def kv_cache_layer_bytes(
    shape: ModelShape, run: RunSettings, layout: KVLayout, layers: range | None = None
) -> list[int]:
    """Bytes of K and V cache of each layer of ``layers`` (default: all)."""
    layers = range(len(shape.head_count_kv)) if layers is None else layers
    return [
        _layer_kv_bytes(shape, run, layout, shape.head_count_kv[layer], _is_swa(shape, layer))
        for layer in layers
        if layer < len(shape.head_count_kv)
    ]


def kv_cache_bytes(shape: ModelShape, run: RunSettings, layout: KVLayout) -> int:
    """Bytes of the whole KV cache: one product per kind of layer (its KV heads and whether it
    slides), times how many layers are of that kind, never a list per layer."""
    kinds = Counter(
        (n_head_kv, _is_swa(shape, layer)) for layer, n_head_kv in enumerate(shape.head_count_kv)
    )
    return sum(
        count * _layer_kv_bytes(shape, run, layout, n_head_kv, swa)
        for (n_head_kv, swa), count in kinds.items()
    )


def compute_buffer_bytes(shape: ModelShape, run: RunSettings, layout: KVLayout) -> int:
    """The compute buffer llama.cpp reserves: the peak of live tensors in the worst-case graph
    (a full ubatch, every token an output), as ggml's graph allocator packs it.

    Three moments compete for the peak: the output head (logits for every token of the ubatch),
    attention (K x Q scores for every cached cell, unless flash attention fuses them away, plus
    the masks, which live through every layer) and the feed-forward block.
    """
    n_tokens = min(run.ubatch_tokens, run.batch_tokens, run.context_tokens * run.parallel)
    hidden = shape.embedding_length * n_tokens * F32_BYTES
    logits = shape.vocab_size * n_tokens * F32_BYTES + 2 * hidden

    mask_bytes = F16_BYTES if run.flash_attention else F32_BYTES
    kinds = {_is_swa(shape, layer) for layer, n in enumerate(shape.head_count_kv) if n > 0}
    masks = 0
    for swa in kinds:
        cells = layout.swa_cells_per_stream if swa else layout.cells_per_stream
        masks += cells * n_tokens * mask_bytes
    n_head = max(shape.head_count, default=0)
    n_head_kv = max(shape.head_count_kv, default=0)
    qkv = (
        (n_head * shape.key_length + n_head_kv * (shape.key_length + shape.value_length))
        * n_tokens
        * F32_BYTES
    )
    attention = 0
    for swa in kinds:
        cells = layout.swa_cells_per_stream if swa else layout.cells_per_stream
        if run.flash_attention:
            scores = n_head * shape.value_length * n_tokens * F32_BYTES
        else:
            scores = cells * n_tokens * n_head * F32_BYTES
        attention = max(attention, qkv + scores + 2 * hidden)
    # A mixture of experts also holds the router's logits, one per expert and token.
    router = shape.expert_count * n_tokens * F32_BYTES
    feed_forward = 2 * shape.ff_width * n_tokens * F32_BYTES + 2 * hidden + router
    recurrent = recurrent_compute_bytes(shape, run, n_tokens) + 2 * hidden
    return max(logits, masks + attention, masks + feed_forward, recurrent)


def recurrent_compute_bytes(shape: ModelShape, run: RunSettings, n_tokens: int) -> int:
    """The live tensors of one recurrent layer over a micro-batch of ``n_tokens``: Mamba's
    in-projection (x and z of the inner size, and B and C), the convolution's input with its
    carried state, the scan's output and new states; RWKV's time-mix projections (r, k, v, g, w)
    and new WKV states. Follows the graph's shapes (llama-graph.cpp, build_rs); not measured."""
    if not any(shape.recurrent_layers):
        return 0
    sequences = max(1, run.parallel)
    state = shape.recurrent_s_values * sequences * F32_BYTES
    if shape.ssm_inner_size:
        conv_width = shape.ssm_inner_size + shape.ssm_bc_size
        projection = (shape.ssm_inner_size + conv_width) * n_tokens
        conv_input = (max(0, shape.ssm_conv_kernel - 1) + n_tokens) * conv_width
        scan = shape.ssm_inner_size * n_tokens
        return (projection + conv_input + scan) * F32_BYTES + state
    # RWKV, and short convolutions (LFM2): a handful of embedding-wide rows per token.
    return 6 * shape.embedding_length * n_tokens * F32_BYTES + state


def recurrent_state_bytes(shape: ModelShape, run: RunSettings, layers: range | None = None) -> int:
    """Bytes of recurrent state: llama.cpp's llama_memory_recurrent allocates, per recurrent
    layer, an r and an s tensor of float32, n_embd_r() and n_embd_s() values per row, one row
    per sequence (mem_size = max(1, n_seq_max)); llama-memory-recurrent.cpp, llama-model.cpp
    create_memory."""
    if not shape.recurrent_layers:
        return 0
    layers = range(len(shape.recurrent_layers)) if layers is None else layers
    count = sum(1 for i in layers if i < len(shape.recurrent_layers) and shape.recurrent_layers[i])
    per_layer = (shape.recurrent_r_values + shape.recurrent_s_values) * F32_BYTES
    return count * per_layer * max(1, run.parallel)


def overhead_bytes(shape: ModelShape, run: RunSettings, layout: KVLayout) -> int:
    """What the runtime allocates besides weights, KV cache and compute buffer, by its parts."""
    vocab = shape.vocab_size * VOCAB_ENTRY_BYTES
    tensors = shape.tensor_count * TENSOR_HEADER_BYTES
    # llama_context::graph_max_nodes(): max(1024, 8 x n_tensors).
    graph_nodes = max(1024, 8 * shape.tensor_count)
    graph = graph_nodes * GRAPH_NODE_BYTES
    cells = layout.cells(False) + (layout.cells(True) if any(shape.swa_layers) else 0)
    cell_meta = cells * KV_CELL_META_BYTES if shape.kv_layers else 0
    # The output buffer starts with room for one row of logits per sequence.
    outputs = shape.vocab_size * F32_BYTES * run.parallel
    binding, _ = binding_bytes(shape, run)
    return vocab + tensors + graph + cell_meta + outputs + DECODE_WORK_BYTES + binding


@attrs.frozen
class Breakdown:
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    gpu_bytes: int
    notes: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.overhead_bytes


def estimate(shape: ModelShape, run: RunSettings) -> Breakdown:
    """Weights, KV cache, compute buffer and overhead of ``shape`` run with ``run``."""
    layout = kv_layout(shape, run)
    compute = compute_buffer_bytes(shape, run, layout)
    notes: list[str] = []
    if shape.context_length and run.context_tokens > shape.context_length:
        notes.append(
            f"context {run.context_tokens} exceeds the {shape.context_length} tokens the model "
            "was trained for; quality may drop"
        )
    if any(shape.swa_layers) and shape.sliding_window:
        swa_count = sum(shape.swa_layers[: shape.block_count])
        notes.append(
            f"{swa_count} of {shape.block_count} layers use a {shape.sliding_window}-token "
            f"sliding window: {layout.swa_cells_per_stream} cells per sequence"
            + (" (swa_full)" if run.swa_full else "")
        )
    if not run.flash_attention:
        notes.append("flash attention off: the compute buffer holds the full attention scores")
    state = recurrent_state_bytes(shape, run)
    if state:
        notes.append(
            f"{sum(shape.recurrent_layers)} of {shape.block_count} layers keep a recurrent state "
            f"of {(shape.recurrent_r_values + shape.recurrent_s_values) * F32_BYTES:,} bytes per "
            f"sequence, {state / MiB:.1f} MiB in all, counted in the KV cache"
        )
    if shape.expert_count:
        notes.append(
            f"a mixture of {shape.expert_count} experts, {shape.expert_used_count} used per "
            "token: every expert's weights are loaded, the compute buffer holds the used ones'"
        )

    gpu_bytes = 0
    if run.gpu_layers > 0:
        # llama.cpp offloads the last n_gpu_layers blocks, then the output head; the token
        # embeddings stay on the CPU. KV cache of offloaded layers lives beside them.
        n_layers = shape.block_count
        offloaded = range(max(0, n_layers - run.gpu_layers), n_layers)
        if shape.layer_weights_bytes:
            layer_bytes = shape.layer_weights_bytes
            gpu_bytes += sum(layer_bytes[i] for i in offloaded if i < len(layer_bytes))
        else:
            gpu_bytes += _even_layer_bytes(shape) * len(offloaded)
        if run.kv_offload:
            gpu_bytes += sum(kv_cache_layer_bytes(shape, run, layout, offloaded))
            gpu_bytes += recurrent_state_bytes(shape, run, offloaded)
        if run.gpu_layers > n_layers:
            gpu_bytes += shape.output_weights_bytes
        gpu_bytes += compute
        notes.append(
            f"{min(run.gpu_layers, n_layers)} of {n_layers} layers offloaded to "
            f"{run.pool_id or 'the GPU'}; its compute buffer is counted there"
        )
    return Breakdown(
        weights_bytes=shape.weights_bytes,
        kv_cache_bytes=kv_cache_bytes(shape, run, layout) + state,
        compute_bytes=compute,
        overhead_bytes=overhead_bytes(shape, run, layout),
        gpu_bytes=gpu_bytes,
        notes=tuple(notes),
    )


# -- what the process holds: the resident figure -------------------------------------------

# Types whose block matrices ggml's CPU backend repacks into its CPU_REPACK buffer on x86-64 with
# AVX2 and on ARM with NEON (ggml-cpu/repack.cpp), rows a multiple of 8; token embeddings, read
# by GET_ROWS, never are.
REPACKED_TYPES = frozenset({"q4_0", "q4_K", "iq4_nl"})
# llama-cpp-python's LlamaTokenDataArray: id (int32), logit and p (float32) per vocabulary entry.
BINDING_TOKEN_DATA_BYTES = 12


@attrs.frozen
class ResidentBreakdown:
    """What the process holds in memory once loaded and after a prompt, by part.

    ``mapped_weights_bytes`` are the weights read through mmap: page cache, shared by every
    process that maps the same file and reclaimable by the kernel; counted once.
    """

    weights_bytes: int  # private copies of weights (all of them without mmap; repacked ones)
    mapped_weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int  # activations of one micro-batch, and the logits row
    overhead_bytes: int  # runtime heap touched (and the binding's, for llama-cpp-python)

    @property
    def total_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.mapped_weights_bytes
            + self.kv_cache_bytes
            + self.compute_bytes
            + self.overhead_bytes
        )


def graph_planning_bytes(shape: ModelShape) -> int:
    """The scheduler's graph-planning buffers: reserved for graph_max_nodes, barely touched on
    one backend (its split-input copies exist only where a graph crosses backends)."""
    return max(1024, 8 * shape.tensor_count) * GRAPH_NODE_BYTES


def activation_bytes(shape: ModelShape, run: RunSettings, layout: KVLayout) -> int:
    """The part of the compute buffer a prompt touches: ggml's allocator packs the real graph,
    which asks for one row of logits, not a micro-batch of them.

    Measured with RSS on llama.cpp's CPU backend (docs/estimation.md): the feed-forward block
    (gate, up and their product: three ``n_ff`` rows per token) beside four hidden-state rows,
    or without flash attention the score matrix and its f16 copy for the product with V,
    whichever is larger;
    plus the masks, which every layer reads. A global cache's mask covers the cells in use (the
    prompt, padded to 256); a sliding-window cache's covers all its cells.
    """
    prompt = run.prompt_tokens or run.context_tokens * run.parallel
    n_tokens = min(run.ubatch_tokens, run.batch_tokens, prompt)
    used = min(layout.cells_per_stream, pad(min(prompt, run.context_tokens), KV_CELL_PADDING))
    kinds = {_is_swa(shape, layer) for layer, n in enumerate(shape.head_count_kv) if n > 0}
    mask_bytes = F16_BYTES if run.flash_attention else F32_BYTES
    cells = {swa: min(layout.swa_cells_per_stream, used) if swa else used for swa in kinds}
    masks = sum(cells.values()) * n_tokens * mask_bytes
    feed_forward = n_tokens * F32_BYTES * (3 * shape.ff_width + 4 * shape.embedding_length)
    feed_forward = max(feed_forward, recurrent_compute_bytes(shape, run, n_tokens))
    attention = 0
    if not run.flash_attention:
        # The scores (softmax works in place), and the CPU backend's work buffer, where the
        # softmaxed scores are converted to f16 for their product with the f16 V cache: it is
        # allocated at the first decode and grows with the cells in use, so it is in no logged
        # buffer and not in the committed figure.
        n_head = max(shape.head_count, default=0)
        scores = max(cells.values(), default=0) * n_tokens * n_head
        attention = scores * (F32_BYTES + F16_BYTES)
    logits_row = shape.vocab_size * F32_BYTES
    return masks + max(feed_forward, attention) + logits_row


def binding_bytes(shape: ModelShape, run: RunSettings) -> tuple[int, int]:
    """What llama-cpp-python's ``Llama`` allocates beside llama.cpp: (committed, resident).

    ``scores``, an n_batch x n_vocab float32 array (numpy leaves it untouched unless
    ``logits_all``), ``input_ids`` (n_ctx int32), the token data array used by sampling, and
    ``LlamaBatch(n_batch, n_seq_max=n_ctx)``, whose sequence-id arrays take n_batch x n_ctx int32
    (malloc'd, touched only where tokens are written).
    """
    if run.binding != "llama-cpp-python":
        return 0, 0
    n_ctx = pad(run.context_tokens * run.parallel, KV_CELL_PADDING)
    scores = run.batch_tokens * shape.vocab_size * F32_BYTES
    token_data = shape.vocab_size * BINDING_TOKEN_DATA_BYTES
    seq_ids = run.batch_tokens * n_ctx * 4
    committed = scores + n_ctx * 4 + token_data + seq_ids
    return committed, token_data


def resident(shape: ModelShape, run: RunSettings) -> ResidentBreakdown:
    """What the process holds after loading and after a prompt (``run.prompt_tokens``, else a
    full context) in system RAM. Layers offloaded to a GPU hold nothing here but their share of
    the committed figure is the GPU's (see :func:`estimate`).

    - weights: read into private memory, or mapped (page cache) with ``use_mmap``, where only
      repacked matrices are copied out of the mapping;
    - KV cache: cleared at load, so every page is touched;
    - compute buffer: only the activations a real micro-batch writes (:func:`activation_bytes`);
    - overhead: all but the graph-planning buffers.
    """
    layout = kv_layout(shape, run)
    breakdown = estimate(shape, run)
    if run.use_mmap:
        private_weights = min(shape.repacked_weights_bytes, shape.weights_bytes)
        mapped = shape.weights_bytes
    else:
        private_weights, mapped = shape.weights_bytes, 0
    binding_committed, binding = binding_bytes(shape, run)
    overhead = breakdown.overhead_bytes - graph_planning_bytes(shape) - binding_committed
    return ResidentBreakdown(
        weights_bytes=private_weights,
        mapped_weights_bytes=mapped,
        kv_cache_bytes=breakdown.kv_cache_bytes,
        compute_bytes=activation_bytes(shape, run, layout),
        overhead_bytes=max(0, overhead) + binding,
    )


def memory_estimate(
    model: ModelRef,
    context_tokens: int,
    options: Mapping[str, Any],
    shape: ModelShape,
    *,
    confidence: Confidence,
    estimator: str,
    notes: Sequence[str] = (),
) -> MemoryEstimate:
    """The estimate of ``shape`` run as the estimate_model_size ``options`` ask, split per pool
    when layers are offloaded. Every shape-based estimator answers through this."""
    try:
        runtime = options.get("runtime")
        given = {key: value for key, value in options.items() if value is not None}
        profile = profile_options(
            runtime if isinstance(runtime, str) else None,
            model.provider,
            context_tokens=context_tokens,
            parallel=_positive_or_none(given.get("parallel"), "parallel"),
        )
        run = RunSettings.from_options(context_tokens, {**profile, **given})
    except ValueError as exc:
        raise EstimateUnavailable(f"{model.name}: {exc}", hint="fix the option") from None
    breakdown = estimate(shape, run)
    held = resident(shape, run)
    per_pool: tuple[PoolShare, ...] = ()
    if breakdown.gpu_bytes:
        per_pool = (
            PoolShare(pool_id=run.pool_id or "gpu", bytes=breakdown.gpu_bytes),
            PoolShare(pool_id="system", bytes=breakdown.total_bytes - breakdown.gpu_bytes),
        )
    return MemoryEstimate(
        model=model,
        context_tokens=context_tokens,
        weights_bytes=breakdown.weights_bytes,
        kv_cache_bytes=breakdown.kv_cache_bytes,
        compute_bytes=breakdown.compute_bytes,
        overhead_bytes=breakdown.overhead_bytes,
        confidence=confidence,
        estimator=estimator,
        per_pool=per_pool,
        notes=(*notes, *breakdown.notes),
        trained_context_tokens=shape.context_length,
        resident=ResidentEstimate(
            weights_bytes=held.weights_bytes,
            mapped_weights_bytes=held.mapped_weights_bytes,
            kv_cache_bytes=held.kv_cache_bytes,
            compute_bytes=held.compute_bytes,
            overhead_bytes=held.overhead_bytes,
            prompt_tokens=run.prompt_tokens or run.context_tokens * run.parallel,
        ),
    )


def _even_layer_bytes(shape: ModelShape) -> int:
    """Without a tensor table, the repeating blocks share the weights evenly: each block's."""
    body = shape.weights_bytes - shape.output_weights_bytes - shape.input_weights_bytes
    return max(0, body) // max(1, shape.block_count)


# -- reading a shape from GGUF-style metadata (the file's, or Ollama's model_info) ------------


class ShapeError(ValueError):
    """The metadata lacks a key that sizing cannot do without, or holds a value no model has."""


def shape_int(value: Any, key: str, low: int, high: int) -> int:
    """``value`` of metadata ``key`` as an integer in [low, high], or a ShapeError naming the
    key. Integral floats pass (JSON has no integers for some writers); booleans, text, NaN and
    fractions do not."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    if number is None:
        raise ShapeError(f"{key} is {shown(value)}; it must be a whole number")
    if not low <= number <= high:
        raise ShapeError(f"{key} is {shown(number)}; it must be between {low:,} and {high:,}")
    return number


def _per_layer(value: Any, layers: int, key: str, low: int, high: int) -> tuple[int, ...]:
    """A per-layer value: one number for every layer, or a list of exactly ``layers``."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) != layers:
            raise ShapeError(f"{key} has {len(value):,} entries for {layers:,} layers")
        return tuple(shape_int(v, f"{key}[{index}]", low, high) for index, v in enumerate(value))
    if hasattr(value, "__len__") and not isinstance(value, str | bytes):
        # A per-layer array too long for the reader to keep (ArraySummary): not one per layer.
        raise ShapeError(f"{key} has {len(value):,} entries for {layers:,} layers")
    return (shape_int(value, key, low, high),) * layers


def swa_layers_for(arch: str, metadata: Mapping[str, Any], layers: int) -> tuple[bool, ...]:
    """Which layers slide: an explicit per-layer pattern in the metadata, else llama.cpp's
    pattern for the architecture; none when the model has no sliding window."""
    if not metadata.get(f"{arch}.attention.sliding_window"):
        return ()
    key = f"{arch}.attention.sliding_window_pattern"
    explicit = metadata.get(key)
    if isinstance(explicit, Sequence) and not isinstance(explicit, str | bytes):
        if len(explicit) > MAX_BLOCK_COUNT:
            raise ShapeError(f"{key} has {len(explicit):,} entries for {layers:,} layers")
        return tuple(bool(v) for v in explicit)[:layers]
    if isinstance(explicit, int) and not isinstance(explicit, bool):
        period: int | None = shape_int(explicit, key, 1, MAX_BLOCK_COUNT)
    else:
        period = SWA_PATTERNS.get(arch)
    if not period:
        return ()
    return tuple(layer % period < period - 1 for layer in range(layers))


# -- recurrent state: which architectures keep one, and how it is sized -------------------

# llama.cpp's llm_arch_is_recurrent (llama-arch.cpp): every layer keeps a recurrent state.
RECURRENT_ARCHITECTURES = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# llm_arch_is_hybrid architectures memwarden sizes, and which of their layers are recurrent
# (llama-model.cpp load_hparams and create_memory's layer filters): those without KV heads, or
# (Falcon-H1) every layer, beside its attention.
HYBRID_RECURRENT_LAYERS = {
    "jamba": "no-kv-heads",
    "granitehybrid": "no-kv-heads",
    "lfm2": "no-kv-heads",
    "falcon-h1": "all",
}
# Hybrids llama.cpp runs whose state memwarden does not size yet: refused ("cannot size")
# rather than estimated without their state.
UNSIZED_ARCHITECTURES = frozenset(
    {
        "plamo2",
        "lfm2moe",
        "nemotron_h",
        "nemotron_h_moe",
        "qwen3next",
        "kimi-linear",
        "qwen35",
        "qwen35moe",
        "deepseek4",
    }
)
# Keys that only a recurrent model has: an architecture carrying them that is in no table above
# is refused too.
_RECURRENT_KEYS = ("ssm.conv_kernel", "ssm.state_size", "wkv.head_size", "shortconv.l_cache")
MAX_STATE_SIZE = 1 << 16  # ssm.state_size, wkv.head_size
MAX_CONV_KERNEL = 1 << 10  # ssm.conv_kernel, shortconv.l_cache


class UnsupportedArchitecture(ShapeError):
    """A model whose memory llama.cpp allocates in a way memwarden does not size (a recurrent
    or hybrid architecture without a formula here): no estimate rather than a wrong one."""


@attrs.frozen
class RecurrentShape:
    """The recurrent part of a shape: which layers keep a state, and its sizes."""

    layers: tuple[bool, ...] = ()
    r_values: int = 0
    s_values: int = 0
    inner_size: int = 0
    bc_size: int = 0
    conv_kernel: int = 0


def recurrent_shape(
    arch: str, metadata: Mapping[str, Any], head_count_kv: tuple[int, ...], embedding: int
) -> RecurrentShape:
    """The recurrent state of ``arch`` from its header, as llama.cpp's hparams compute it
    (llama-hparams.cpp): for RWKV, n_embd_r = token_shift_count x n_embd and n_embd_s =
    n_embd x wkv.head_size; for LFM2's short convolutions, n_embd_r = n_embd x (l_cache - 1);
    for Mamba, n_embd_r = (conv_kernel - 1) x (inner_size + 2 x group_count x state_size) and
    n_embd_s = state_size x inner_size. Raises UnsupportedArchitecture for a recurrent or hybrid
    architecture it has no formula for, and ShapeError naming a missing key."""
    layers = len(head_count_kv)
    recurrent = arch in RECURRENT_ARCHITECTURES or arch in HYBRID_RECURRENT_LAYERS
    if not recurrent:
        keys = [f"{arch}.{key}" for key in _RECURRENT_KEYS if f"{arch}.{key}" in metadata]
        if arch in UNSIZED_ARCHITECTURES or keys:
            what = (
                "a hybrid of attention and recurrent layers"
                if arch in UNSIZED_ARCHITECTURES
                else (f"recurrent state ({', '.join(keys)})")
            )
            raise UnsupportedArchitecture(
                f"architecture {shown(arch)} keeps {what}, and memwarden has no formula for "
                "its state size yet"
            )
        return RecurrentShape()

    def number(key: str, low: int, high: int, default: int | None = None) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        if value is None:
            raise ShapeError(
                f"{arch}.{key} is missing; a {arch} model's recurrent state is sized from it"
            )
        return shape_int(value, f"{arch}.{key}", low, high)

    rule = HYBRID_RECURRENT_LAYERS.get(arch, "all")
    which = (
        tuple(True for _ in range(layers))
        if rule == "all"
        else tuple(n == 0 for n in head_count_kv)
    )
    if arch.startswith(("rwkv", "arwkv")):
        head_size = number("wkv.head_size", 1, MAX_STATE_SIZE)
        shift = number("token_shift_count", 1, 16, 2)
        return RecurrentShape(
            layers=which, r_values=shift * embedding, s_values=embedding * head_size
        )
    if arch == "lfm2":
        cache = number("shortconv.l_cache", 1, MAX_CONV_KERNEL)
        return RecurrentShape(layers=which, r_values=embedding * (cache - 1))
    conv = number("ssm.conv_kernel", 1, MAX_CONV_KERNEL)
    inner = number("ssm.inner_size", 1, MAX_EMBEDDING_LENGTH)
    state = number("ssm.state_size", 1, MAX_STATE_SIZE)
    # Mamba 1 and Jamba have no groups (llama.cpp reads none: 0); Mamba 2 and the other
    # hybrids must say how many.
    groups = 0 if arch in ("mamba", "jamba") else number("ssm.group_count", 0, MAX_HEAD_COUNT)
    bc = 2 * groups * state
    return RecurrentShape(
        layers=which,
        r_values=(conv - 1) * (inner + bc),
        s_values=state * inner,
        inner_size=inner,
        bc_size=bc,
        conv_kernel=conv,
    )


def shape_from_metadata(
    metadata: Mapping[str, Any],
    *,
    weights_bytes: int,
    vocab_size: int | None = None,
    tensor_count: int = 0,
    layer_weights_bytes: tuple[int, ...] = (),
    output_weights_bytes: int = 0,
    input_weights_bytes: int = 0,
) -> ModelShape:
    """A shape from GGUF keys (``general.architecture``, ``<arch>.block_count``...).

    Every number is checked: positive where a model needs it, and within the architectural
    limits above (MAX_BLOCK_COUNT...), so neither a damaged file nor a provider's answer sizes
    a loop or an estimate beyond any real model. A ShapeError names the key.
    """
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ShapeError("general.architecture is missing")
    if not 0 < len(arch) <= 64:
        raise ShapeError(f"general.architecture is {shown(arch)}; it must be a short name")

    def get(key: str, default: Any = None) -> Any:
        value = metadata.get(f"{arch}.{key}", default)
        if value is None:
            raise ShapeError(f"{arch}.{key} is missing")
        return value

    def number(key: str, low: int, high: int, default: Any = None) -> int:
        return shape_int(get(key, default), f"{arch}.{key}", low, high)

    def optional(key: str, low: int, high: int) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        return None if value is None else shape_int(value, f"{arch}.{key}", low, high)

    layers = number("block_count", 1, MAX_BLOCK_COUNT)
    embedding = number("embedding_length", 1, MAX_EMBEDDING_LENGTH)
    # A recurrent model has no attention (its converter writes 0 heads, or nothing) and may
    # have no feed-forward block.
    stateful = arch in RECURRENT_ARCHITECTURES
    head_count = _per_layer(
        get("attention.head_count", 0 if stateful else None),
        layers,
        f"{arch}.attention.head_count",
        0,
        MAX_HEAD_COUNT,
    )
    head_count_kv = _per_layer(
        get("attention.head_count_kv", list(head_count)),
        layers,
        f"{arch}.attention.head_count_kv",
        0,
        MAX_HEAD_COUNT,
    )
    default_head = embedding // max(1, max(head_count, default=1))
    key_length = number("attention.key_length", 0, MAX_HEAD_LENGTH, default_head)
    value_length = number("attention.value_length", 0, MAX_HEAD_LENGTH, key_length)
    feed_forward_key = f"{arch}.feed_forward_length"
    feed_forward = get("feed_forward_length", 0 if stateful else 4 * embedding)
    if isinstance(feed_forward, Sequence) and not isinstance(feed_forward, str | bytes):
        feed_forward = max(
            _per_layer(feed_forward, layers, feed_forward_key, 0, MAX_FEED_FORWARD_LENGTH),
            default=0,
        )
    else:
        feed_forward = shape_int(feed_forward, feed_forward_key, 0, MAX_FEED_FORWARD_LENGTH)
    if vocab_size is None:
        tokens = metadata.get("tokenizer.ggml.tokens")
        if tokens is not None and hasattr(tokens, "__len__") and len(tokens):
            vocab_size = len(tokens)
        else:
            vocab_size = number("vocab_size", 0, MAX_VOCAB_SIZE, 0)
    vocab_size = shape_int(vocab_size, "the vocabulary size", 0, MAX_VOCAB_SIZE)
    window = optional("attention.sliding_window", 0, MAX_CONTEXT_LENGTH)
    context = optional("context_length", 1, MAX_CONTEXT_LENGTH)
    expert_count = optional("expert_count", 0, MAX_EXPERT_COUNT) or 0
    expert_used = optional("expert_used_count", 0, expert_count) or 0
    expert_ff = optional("expert_feed_forward_length", 0, MAX_FEED_FORWARD_LENGTH) or 0
    state = recurrent_shape(arch, metadata, head_count_kv, embedding)
    return ModelShape(
        architecture=arch,
        block_count=layers,
        embedding_length=embedding,
        head_count=head_count,
        head_count_kv=head_count_kv,
        key_length=key_length,
        value_length=value_length,
        feed_forward_length=feed_forward,
        vocab_size=vocab_size,
        weights_bytes=weights_bytes,
        layer_weights_bytes=layer_weights_bytes,
        output_weights_bytes=output_weights_bytes,
        input_weights_bytes=input_weights_bytes,
        tensor_count=tensor_count,
        context_length=context,
        sliding_window=window or None,
        swa_layers=swa_layers_for(arch, metadata, layers),
        expert_count=expert_count,
        expert_used_count=expert_used,
        expert_feed_forward_length=expert_ff,
        recurrent_layers=state.layers,
        recurrent_r_values=state.r_values,
        recurrent_s_values=state.s_values,
        ssm_inner_size=state.inner_size,
        ssm_bc_size=state.bc_size,
        ssm_conv_kernel=state.conv_kernel,
    )


# -- quantisation names and sizes, for estimators that have no tensor table -----------------

# llama.cpp's llama_ftype (general.file_type) -> the name Ollama and LM Studio show.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
# Average bits per weight of each quantisation mix over a whole model, as llama.cpp's
# `llama-quantize --help` lists them for a 7-8B model (mixes keep some tensors at higher types).
BITS_PER_WEIGHT = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q4_1": 5.0,
    "Q4_0": 4.55,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
    "MXFP4_MOE": 4.25,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "IQ3_M": 3.66,
    "IQ3_S": 3.44,
    "IQ3_XS": 3.3,
    "IQ3_XXS": 3.06,
    "Q2_K": 2.96,
    "Q2_K_S": 2.6,
    "IQ2_M": 2.7,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "TQ2_0": 2.06,
    "IQ1_M": 1.75,
    "TQ1_0": 1.69,
    "IQ1_S": 1.56,
}
_QUANT_IN_NAME = re.compile(
    r"(?<![a-z0-9])(" + "|".join(sorted(BITS_PER_WEIGHT, key=len, reverse=True)) + r")(?![a-z0-9])",
    re.IGNORECASE,
)
_PARAMS_IN_TEXT = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)\s*([kmbt])(?![a-z])", re.IGNORECASE)
_PARAM_UNITS = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
MAX_PARAMETER_COUNT = 10**15


def quantization_name(value: Any) -> str | None:
    """A quantisation's canonical name from a file type number or a name ("q4_k_m", "Q4_K_M")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return FILE_TYPES.get(value)
    if isinstance(value, str):
        match = _QUANT_IN_NAME.search(value)
        if match:
            return match.group(1).upper()
    return None


def parameter_count(value: Any) -> int | None:
    """A parameter count from a number or text such as "7B", "3.2B", "270M", "8x7B"."""
    if isinstance(value, bool):
        return None
    count: float | None = None
    if isinstance(value, int | float):
        count = value
    elif isinstance(value, str):
        text = value[:200]  # a name or a size label; never scan megabytes of it
        experts = re.search(r"(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*([kmbt])", text, re.IGNORECASE)
        match = _PARAMS_IN_TEXT.search(text)
        if experts:
            number, size, unit = experts.groups()
            count = float(number) * float(size) * _PARAM_UNITS[unit.lower()]
        elif match:
            count = float(match.group(1)) * _PARAM_UNITS[match.group(2).lower()]
    # Not a number, infinite, or beyond any model (a quadrillion parameters): no count.
    if count is None or not 0 < count <= MAX_PARAMETER_COUNT:
        return None
    return int(count)
