"""Counting tokens with the model's own tokenizer.

In order of preference: the GGUF file's vocabulary through llama-cpp-python (``vocab_only``: the
vocabulary is read, no weight is), cached per file version; and, only when no GGUF file is found
for the model (or llama-cpp-python is not installed), an estimate of one token per four
characters, which says so (``exact = False``). Ollama's and LM Studio's HTTP APIs offer no
tokenizer endpoint, so a model they serve is counted through its GGUF file where memwarden finds
it on disk (the same search the GGUF estimator uses).

A message's tokens are the tokens of its content, without the beginning-of-sequence token and
without the few tokens the chat template adds around each turn.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Protocol

import attrs

from memwarden.core.config import Config

# One token per this many characters: the documented estimate for English text.
CHARS_PER_TOKEN = 4
_CACHE_LIMIT = 4


class Tokenizer(Protocol):
    """Counts the tokens of a text the way one model does."""

    #: Where the counts come from: ``gguf:<file>`` or ``estimate``.
    source: str
    #: False when the counts are an estimate, not the model's own tokenizer.
    exact: bool

    def count(self, text: str) -> int:
        """The number of tokens ``text`` is to the model."""
        ...


@attrs.frozen
class EstimateTokenizer:
    """The last resort: ``ceil(characters / 4)``, said to be an estimate."""

    reason: str = "no tokenizer found for the model"
    source: str = "estimate"
    exact: bool = False

    def count(self, text: str) -> int:
        return -(-len(text) // CHARS_PER_TOKEN)


class GGUFTokenizer:
    """The vocabulary of a GGUF file, loaded by llama-cpp-python without its weights."""

    exact = True

    def __init__(self, path: Path) -> None:
        import llama_cpp

        self.path = path
        self.source = f"gguf:{path.name}"
        self._llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        """Free the vocabulary (before interpreter exit, when llama.cpp's bindings still work)."""
        with self._lock:
            self._llama.close()


_cache: dict[tuple[str, int, int], GGUFTokenizer] = {}
_cache_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    with _cache_lock:
        for tokenizer in _cache.values():
            tokenizer.close()
        _cache.clear()


def gguf_tokenizer(path: Path) -> GGUFTokenizer:
    """The tokenizer of the GGUF file at ``path``, loaded once per file version."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.pop(next(iter(_cache))).close()
            found = _cache[key] = GGUFTokenizer(path)
        return found


def tokenizer_for(model: str | None, config: Config | None = None) -> Tokenizer:
    """The best tokenizer memwarden has for ``model`` (a GGUF path or a model name of a runtime
    whose files it can find); an :class:`EstimateTokenizer` naming why when it has none."""
    if not model:
        return EstimateTokenizer("no model named")
    from memwarden.estimation.model_files import find_model_file
    from memwarden.plugins.gguf_estimator import search_settings

    try:
        path = find_model_file(model, search_settings(config))
    except OSError:
        path = None
    if path is None:
        return EstimateTokenizer(f"no GGUF file found for {model!r}")
    try:
        return gguf_tokenizer(path)
    except ImportError:
        return EstimateTokenizer("llama-cpp-python is not installed (memwarden[llamacpp])")
    except Exception as exc:  # a file llama.cpp cannot read: count, but say how
        return EstimateTokenizer(f"llama.cpp could not read the vocabulary of {path.name}: {exc}")
