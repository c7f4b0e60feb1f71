"""Sizes a model from its GGUF file's header (tensor table and metadata): high confidence.

Finds the file behind the model's name (a path, the Ollama store, LM Studio's folder, configured
folders; see :mod:`memwarden.estimation.model_files`), reads only its header, and applies
:mod:`memwarden.estimation.sizing`. Settings, all optional::

    [plugins.gguf-estimator]
    ollama_models_dir = "~/.ollama/models"     # default: $OLLAMA_MODELS or ~/.ollama/models
    lmstudio_models_dir = "~/.lmstudio/models"  # default: that, then ~/.cache/lm-studio/models
    models_dirs = ["~/models"]                  # more folders to search for <name>.gguf
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import attrs

from memwarden.core.config import Config
from memwarden.core.errors import EstimateUnavailable, ModelFileError, ModelNotFound
from memwarden.core.types import Confidence, MemoryEstimate, ModelRef
from memwarden.estimation.gguf import GGUFModel, read_model, shown
from memwarden.estimation.model_files import ModelSearch, find_model_file, looks_like_path
from memwarden.estimation.sizing import (
    MAX_BLOCK_COUNT,
    REPACKED_TYPES,
    ModelShape,
    ShapeError,
    UnsupportedArchitecture,
    memory_estimate,
    shape_from_metadata,
)
from memwarden.hookspecs import hookimpl

NAME = "gguf-estimator"
_LAYER_PREFIX = "blk."
_INPUT_TENSORS = ("token_embd.", "per_layer_token_embd.")
# Header reads are cached per file version: `fit --max-ctx` asks for a dozen contexts.
_CACHE_LIMIT = 16


@attrs.frozen
class GGUFEstimatorOptions:
    ollama_models_dir: str | None = None
    lmstudio_models_dir: str | None = None
    models_dirs: tuple[str, ...] = ()


OPTIONS = GGUFEstimatorOptions


_cache: dict[tuple[str, int, int], GGUFModel] = {}
_cache_lock = threading.Lock()


def read_model_cached(path: Path) -> GGUFModel:
    try:
        stat = path.stat()
    except OSError:
        return read_model(path)  # raises the clear error
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        found = _cache.get(key)
    if found is not None:
        return found
    model = read_model(path)
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.pop(next(iter(_cache)))
        _cache[key] = model
    return model


def search_settings(config: Config | None) -> ModelSearch:
    options = (
        config.plugin_options(NAME, GGUFEstimatorOptions)
        if config is not None
        else GGUFEstimatorOptions()
    )
    return ModelSearch.defaults(
        ollama_models_dir=options.ollama_models_dir,
        lmstudio_models_dir=options.lmstudio_models_dir,
        models_dirs=options.models_dirs,
    )


def locate(model: ModelRef, options: dict[str, Any], config: Config | None) -> Path | None:
    """The model's GGUF file; an explicit path that does not exist is an error."""
    explicit = model.path or (model.name if looks_like_path(model.name) else None)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ModelNotFound(
                f"{path}: model file not found",
                hint="check the path; `memwarden estimate` takes a GGUF path or a model name "
                "from Ollama or LM Studio",
            )
        return path
    search = search_settings(config)
    found = find_model_file(model.name, search, model.provider)
    if found is None:
        # LM Studio reports a model's path relative to its models folder.
        metadata = options.get("metadata") or {}
        relative = metadata.get("path") if isinstance(metadata, dict) else None
        if isinstance(relative, str):
            found = find_model_file(relative, search, model.provider)
    return found


def shape_of(gguf: GGUFModel) -> ModelShape:
    """The sizing shape of a parsed GGUF model, with per-layer weight bytes.

    Raises ShapeError for metadata outside the sizing limits, and for a block tensor
    (``blk.N.*``) whose N is not below ``block_count`` (so no tensor name sizes a list)."""
    layer_bytes: dict[int, int] = {}
    output = 0
    inputs = 0
    repacked = 0
    for tensor in gguf.tensors:
        size = tensor.nbytes + (-tensor.nbytes) % gguf.alignment
        if _repacked(tensor):
            repacked += size
        if tensor.name.startswith(_LAYER_PREFIX):
            index = tensor.name.split(".", 2)[1]
            if index.isascii() and index.isdigit():
                if len(index) > 4 or int(index) >= MAX_BLOCK_COUNT:
                    raise ShapeError(
                        f"tensor {shown(tensor.name)} is in block {shown(index)}; a model has "
                        f"at most {MAX_BLOCK_COUNT:,} blocks"
                    )
                layer_bytes[int(index)] = layer_bytes.get(int(index), 0) + size
                continue
        if tensor.name.startswith(_INPUT_TENSORS):
            inputs += size
        else:
            output += size
    layers = max(layer_bytes, default=-1) + 1
    shape = shape_from_metadata(
        gguf.metadata,
        weights_bytes=gguf.tensor_bytes(),
        tensor_count=len(gguf.tensors),
        layer_weights_bytes=tuple(layer_bytes.get(i, 0) for i in range(layers)),
        output_weights_bytes=output,
        input_weights_bytes=inputs,
    )
    if layers > shape.block_count:
        raise ShapeError(
            f"the file has tensors of block {layers - 1}, but {shape.architecture}.block_count "
            f"is {shape.block_count}"
        )
    return attrs.evolve(shape, repacked_weights_bytes=repacked)


def _repacked(tensor: Any) -> bool:
    """Whether ggml's CPU backend repacks this tensor (a block matrix of a repackable type)."""
    return (
        tensor.name.startswith(_LAYER_PREFIX)
        and tensor.type.name in REPACKED_TYPES
        and len(tensor.shape) == 2
        and tensor.shape[1] % 8 == 0
    )


def estimate_file(
    model: ModelRef, path: Path, context_tokens: int, options: dict[str, Any]
) -> MemoryEstimate:
    """The estimate of the model in the GGUF file at ``path`` (header cached per version)."""
    return estimate_gguf(model, path, read_model_cached(path), context_tokens, options)


def estimate_gguf(
    model: ModelRef, path: Path, gguf: GGUFModel, context_tokens: int, options: dict[str, Any]
) -> MemoryEstimate:
    """The estimate of an already parsed GGUF model; a shape sizing cannot use is a
    ModelFileError naming the file and the key."""
    try:
        shape = shape_of(gguf)
    except UnsupportedArchitecture as exc:
        raise EstimateUnavailable(
            f"{path}: cannot size this model: {exc}",
            hint="memwarden sizes attention-only, Mamba, RWKV, Jamba, Granite hybrid, Falcon-H1 "
            "and LFM2 models (docs/estimation.md); for this one, load it and read what it holds "
            "with `memwarden models`",
        ) from None
    except ShapeError as exc:
        raise ModelFileError(
            f"{path}: cannot size this model: {exc}",
            hint="the file's metadata is missing, damaged or beyond any real model; download "
            "it again, or convert it again with llama.cpp",
        ) from None
    parts = f" ({len(gguf.paths)} split parts)" if len(gguf.paths) > 1 else ""
    return memory_estimate(
        attrs.evolve(model, path=str(path)),
        context_tokens,
        options,
        shape,
        confidence=Confidence.HIGH,
        estimator=NAME,
        notes=(f"read from {path}{parts}",),
    )


@hookimpl(tryfirst=True)
def estimate_model_size(
    model: ModelRef, context_tokens: int, options: dict[str, Any], config: Config
) -> MemoryEstimate | None:
    path = locate(model, options, config)
    if path is None:
        return None
    return estimate_file(model, path, context_tokens, options)
