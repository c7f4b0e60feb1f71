"""One embedded llama.cpp model in its own process: ``python -m memwarden.plugins.llamacpp_worker``.

It speaks JSON lines: the parent writes one request per line on stdin and reads one answer per
line on stdout. The first request loads the model; the worker exits when stdin closes, so a
parent that dies (even by SIGKILL) takes its workers with it, and their memory returns to the OS.

Requests: ``{"op": "load", "path": ..., "n_ctx": ..., "n_threads": ..., "settings": {...}}``
(settings override :data:`RUNTIME_SETTINGS`),
``{"op": "generate", "prompt": ..., "max_tokens": ...}``. Answers: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.

``{"op": "stream", "prompt" or "messages", "max_tokens", "temperature", "top_p", "top_k",
"seed", "stop"}`` answers one ``{"ok": true, "piece": ...}`` line per piece of text and ends with
``{"ok": true, "done": true, "finish_reason", "prompt_tokens", "completion_tokens"}``; a
``{"op": "cancel"}`` line sent meanwhile ends the stream early (``finish_reason: "cancelled"``).
``messages`` are rendered with the GGUF's own chat template (``tokenizer.chat_template``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import sys
from collections.abc import Callable
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


def chat_prompt(runtime: Runtime, messages: list[dict[str, Any]]) -> tuple[str, list[str], bool]:
    """The prompt the GGUF's chat template makes of ``messages``, its stop strings, and whether
    the BOS token must be added (a GGUF's own template writes it; llama.cpp's built-in ones do
    not)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    # llama.cpp's metadata() leaves out long strings; ask for the template itself.
    capi = runtime._capi
    raw = capi.llama_model_chat_template(runtime.model.model, None)
    template = raw.decode("utf-8", errors="replace") if raw else None
    if not template:
        return _builtin_chat_prompt(runtime, messages), [], True
    model = runtime.model

    def text_of(token: int) -> str:
        return model.token_get_text(token) if token >= 0 else ""

    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=text_of(model.token_eos()),
        bos_token=text_of(model.token_bos()),
    )
    answer = formatter(messages=messages)
    stops = answer.stop if isinstance(answer.stop, list) else [answer.stop] if answer.stop else []
    return answer.prompt, [s for s in stops if s], False


def _builtin_chat_prompt(runtime: Runtime, messages: list[dict[str, Any]]) -> str:
    """For a GGUF without ``tokenizer.chat_template``: llama.cpp's built-in template named for
    the model's architecture family (``gemma3`` -> ``gemma``), as llama-server falls back."""
    capi = runtime._capi
    count = capi.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * count)()
    capi.llama_chat_builtin_templates(names, count)
    builtin = [n.decode() for n in names if n]
    architecture = runtime.metadata().get("general.architecture", "")
    family = next(
        (n for n in sorted(builtin, key=len, reverse=True) if architecture.startswith(n)), None
    )
    if family is None:
        raise ValueError(
            f"the GGUF has no chat template (tokenizer.chat_template), and llama.cpp has no "
            f"built-in one for architecture {architecture!r}"
        )
    keep = [
        (str(m.get("role", "user")).encode(), str(m.get("content", "")).encode()) for m in messages
    ]
    chat = (capi.llama_chat_message * len(keep))(
        *(capi.llama_chat_message(role=r, content=c) for r, c in keep)
    )
    size = 4096 + sum(len(c) for _, c in keep) * 2
    buffer = ctypes.create_string_buffer(size)
    written = capi.llama_chat_apply_template(family.encode(), chat, len(keep), True, buffer, size)
    if written < 0 or written > size:
        raise ValueError(f"llama.cpp could not apply its {family!r} chat template")
    return buffer.raw[:written].decode("utf-8", errors="replace")


def _sampler(request: dict[str, Any]) -> Any:
    """Greedy at temperature 0 (the default); otherwise top-k, top-p, temperature, then a draw
    seeded with ``seed`` (so that a seeded request repeats)."""
    from llama_cpp import _internals

    sampler = _internals.LlamaSampler()
    temperature = float(request.get("temperature") or 0.0)
    if temperature <= 0:
        sampler.add_greedy()
        return sampler
    if request.get("top_k"):
        sampler.add_top_k(int(request["top_k"]))
    if request.get("top_p") is not None:
        sampler.add_top_p(float(request["top_p"]), 1)
    sampler.add_temp(temperature)
    seed = request.get("seed")
    sampler.add_dist(int(seed) if seed is not None else int.from_bytes(os.urandom(4), "little"))
    return sampler


def stream(
    runtime: Runtime, request: dict[str, Any], out: TextIO, cancelled: Callable[[], bool]
) -> None:
    """Answer a ``stream`` request piece by piece (see the module docstring)."""
    model, context = runtime.model, runtime.context
    stops = [s for s in (request.get("stop") or []) if s]
    if request.get("messages") is not None:
        prompt, template_stops, add_bos = chat_prompt(runtime, request["messages"])
        stops += template_stops
        tokens = model.tokenize(prompt.encode(), add_bos=add_bos, special=True)
    else:
        prompt = str(request.get("prompt", ""))
        tokens = model.tokenize(prompt.encode(), add_bos=True, special=False)
    max_tokens = int(request.get("max_tokens") or 256)
    max_tokens = min(max_tokens, runtime.n_ctx() - len(tokens))
    if max_tokens <= 0:
        raise ValueError(
            f"the prompt of {len(tokens)} tokens fills the context of {runtime.n_ctx()} tokens"
        )
    sampler = _sampler(request)
    context.kv_cache_clear()
    n_batch = int(runtime.settings["n_batch"])
    for start in range(0, len(tokens), n_batch):
        runtime.batch.set_batch(tokens[start : start + n_batch], n_past=start, logits_all=False)
        context.decode(runtime.batch)
    position = len(tokens)
    generated: list[int] = []
    text = sent = ""  # the text so far, and what of it was answered
    finish = "length"
    cut = False  # a stop string ended the text
    for _ in range(max_tokens):
        if cancelled():
            finish = "cancelled"
            break
        token = sampler.sample(context, -1)
        if runtime._capi.llama_vocab_is_eog(model.vocab, token):
            finish = "stop"
            break
        generated.append(token)
        text = model.detokenize(generated).decode("utf-8", errors="replace")
        hit = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if hit >= 0:
            if hit > len(sent):
                _answer(out, ok=True, piece=text[len(sent) : hit])
            finish, cut = "stop", True
            break
        # Hold back a character split across tokens, and text that may begin a stop string.
        ready = len(text) - (1 if text.endswith("\ufffd") else 0)
        for stop in stops:
            for size in range(min(len(stop) - 1, ready), 0, -1):
                if text[:ready].endswith(stop[:size]):
                    ready -= size
                    break
        if ready > len(sent):
            _answer(out, ok=True, piece=text[len(sent) : ready])
            sent = text[:ready]
        runtime.batch.set_batch([token], n_past=position, logits_all=False)
        context.decode(runtime.batch)
        position += 1
    if not cut and len(text) > len(sent):
        _answer(out, ok=True, piece=text[len(sent) :])
    _answer(
        out,
        ok=True,
        done=True,
        finish_reason=finish,
        prompt_tokens=len(tokens),
        completion_tokens=len(generated),
    )


def _cancel_requested(requests: TextIO) -> Callable[[], bool]:
    """Whether a ``cancel`` line has arrived on ``requests`` (checked without blocking)."""
    state = {"cancelled": False}

    def check() -> bool:
        if state["cancelled"]:
            return True
        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select([requests], [], [], 0)
            if ready:
                line = requests.readline()
                state["cancelled"] = not line or json.loads(line).get("op") == "cancel"
        return state["cancelled"]

    return check


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
            elif op == "stream":
                if runtime is None:
                    raise RuntimeError("no model loaded")
                stream(runtime, request, out, _cancel_requested(requests))
            elif op == "cancel":
                continue  # a stream that ended before its cancel arrived
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
