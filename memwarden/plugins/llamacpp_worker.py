"""One embedded llama.cpp model in its own process: ``python -m memwarden.plugins.llamacpp_worker``.

It speaks JSON lines: the parent writes one request per line on stdin and reads one answer per
line on stdout. The first request loads the model; the worker exits when stdin closes, so a
parent that dies (even by SIGKILL) takes its workers with it, and their memory returns to the OS.

Requests: ``{"op": "load", "path": ..., "n_ctx": ..., "n_threads": ..., "settings": {...}}``
(settings override :data:`RUNTIME_SETTINGS`),
``{"op": "generate", "prompt": ..., "max_tokens": ...}``. Answers: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
from typing import Any, TextIO

# Run llama.cpp the way memwarden's estimator sizes it, and the way llama-server and Ollama run
# it: flash attention on, a sliding-window cache of window size (not full size), a 2048-token
# logical batch split into 512-token micro-batches. llama-cpp-python's own defaults differ
# (flash attention off, full-size SWA cache) and would cost more memory than estimated.
RUNTIME_SETTINGS: dict[str, Any] = {
    "flash_attn": True,
    "swa_full": False,
    "n_batch": 2048,
    "n_ubatch": 512,
    "type_k": "f16",
    "type_v": "f16",
    "n_seq_max": 1,
    "use_mmap": False,
}
# ggml type ids of the KV cache types llama.cpp accepts (ggml.h's enum ggml_type).
KV_TYPE_IDS = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_allocated_bytes() -> int | None:
    """Bytes this process has allocated through malloc (glibc), touched or not; None elsewhere.

    llama.cpp reserves its compute buffer for the worst case (every token of a micro-batch asking
    for logits), but a normal decode never touches most of it, so the resident size undercounts
    what the model may use. The allocation is the ceiling the resident size can reach.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _answer(out: TextIO, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


class Runtime:
    """llama.cpp's model and context, created the way llama-server creates them.

    Built on llama-cpp-python's thin wrappers rather than its ``Llama`` class: ``Llama`` also
    allocates a logits array of batch x vocabulary floats in Python (512 MiB for Gemma 3's
    262k-token vocabulary), which is the binding's cost, not the runtime's.
    """

    def __init__(
        self,
        path: str,
        n_ctx: int,
        n_threads: int | None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        from llama_cpp import _internals
        from llama_cpp import llama_cpp as capi

        self._capi = capi
        self.settings = {**RUNTIME_SETTINGS, **(settings or {})}
        run = self.settings
        model_params = capi.llama_model_default_params()
        # No mmap by default: the weights live in this process's anonymous memory, so what it
        # holds is what the model really costs and ending the process gives every byte back.
        if not run["use_mmap"]:
            model_params.load_mode = capi.LLAMA_LOAD_MODE_NONE
        model_params.n_gpu_layers = 0
        self.model = _internals.LlamaModel(path_model=path, params=model_params, verbose=False)
        params = capi.llama_context_default_params()
        # n_ctx is per sequence, as memwarden's estimate counts it; llama.cpp's is the total.
        params.n_ctx = n_ctx * int(run["n_seq_max"])
        params.n_seq_max = int(run["n_seq_max"])
        params.n_batch = int(run["n_batch"])
        params.n_ubatch = int(run["n_ubatch"])
        params.swa_full = bool(run["swa_full"])
        params.type_k = KV_TYPE_IDS[str(run["type_k"])]
        params.type_v = KV_TYPE_IDS[str(run["type_v"])]
        params.flash_attn_type = (
            capi.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if run["flash_attn"]
            else capi.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        if n_threads:
            params.n_threads = params.n_threads_batch = n_threads
        self.context = _internals.LlamaContext(model=self.model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(
            n_tokens=int(run["n_batch"]), embd=0, n_seq_max=1, verbose=False
        )
        self.sampler = _internals.LlamaSampler()
        self.sampler.add_greedy()

    def n_ctx(self) -> int:
        return self.context.n_ctx()

    def metadata(self) -> dict[str, str]:
        return self.model.metadata()

    def complete(self, prompt: str, max_tokens: int) -> tuple[str, int, int]:
        """Greedy completion; returns (text, prompt tokens, completion tokens)."""
        tokens = self.model.tokenize(prompt.encode(), add_bos=True, special=False)
        if len(tokens) + max_tokens > self.n_ctx():
            raise ValueError(
                f"prompt of {len(tokens)} tokens plus {max_tokens} to generate exceeds the "
                f"context of {self.n_ctx()} tokens"
            )
        self.context.kv_cache_clear()
        n_batch = int(self.settings["n_batch"])
        for start in range(0, len(tokens), n_batch):
            self.batch.set_batch(tokens[start : start + n_batch], n_past=start, logits_all=False)
            self.context.decode(self.batch)
        position = len(tokens)
        generated: list[int] = []
        for _ in range(max_tokens):
            token = self.sampler.sample(self.context, -1)
            if self._capi.llama_vocab_is_eog(self.model.vocab, token):
                break
            generated.append(token)
            self.batch.set_batch([token], n_past=position, logits_all=False)
            self.context.decode(self.batch)
            position += 1
        # detokenize, not token_to_piece: the latter returns its whole 32-byte buffer, NULs
        # included. Decoding all tokens at once keeps characters split across tokens whole.
        text = self.model.detokenize(generated).decode("utf-8", errors="replace")
        return text, len(tokens), len(generated)


def serve(requests: TextIO, out: TextIO) -> None:
    runtime: Runtime | None = None
    for line in requests:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "load":
                heap_before = heap_allocated_bytes()
                runtime = Runtime(
                    request["path"],
                    int(request["n_ctx"]),
                    request.get("n_threads"),
                    request.get("settings"),
                )
                heap_after = heap_allocated_bytes()
                _answer(
                    out,
                    ok=True,
                    pid=os.getpid(),
                    allocated_bytes=(
                        heap_after - heap_before
                        if heap_before is not None and heap_after is not None
                        else None
                    ),
                    n_ctx=runtime.n_ctx(),
                    # The GGUF header's scalar keys (llama.cpp leaves out the token arrays).
                    metadata=runtime.metadata(),
                )
            elif op == "generate":
                if runtime is None:
                    raise RuntimeError("no model loaded")
                text, prompt_tokens, completion_tokens = runtime.complete(
                    request["prompt"], int(request.get("max_tokens") or 64)
                )
                _answer(
                    out,
                    ok=True,
                    text=text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                )
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:
            _answer(out, ok=False, error=f"{type(exc).__name__}: {exc}")


def main() -> None:
    # llama.cpp logs to stdout/stderr from C; keep our stdout for answers only.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(KeyboardInterrupt):
        serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
