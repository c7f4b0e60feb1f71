"""One embedded llama.cpp model in its own process: ``python -m memwarden.plugins.llamacpp_worker``.

It speaks JSON lines: the parent writes one request per line on stdin and reads one answer per
line on stdout. The first request loads the model; the worker exits when stdin closes, so a
parent that dies (even by SIGKILL) takes its workers with it, and their memory returns to the OS.

Requests: ``{"op": "load", "path": ..., "n_ctx": ..., "n_threads": ...}``,
``{"op": "generate", "prompt": ..., "max_tokens": ...}``. Answers: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, TextIO


def _answer(out: TextIO, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def serve(requests: TextIO, out: TextIO) -> None:
    llama: Any = None
    for line in requests:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "load":
                from llama_cpp import Llama

                # use_mmap=False: the weights live in this process's anonymous memory, so its
                # RSS is what the model really costs and killing it gives every byte back.
                llama = Llama(
                    model_path=request["path"],
                    n_ctx=int(request["n_ctx"]),
                    n_threads=request.get("n_threads"),
                    use_mmap=False,
                    verbose=False,
                )
                _answer(
                    out,
                    ok=True,
                    pid=os.getpid(),
                    n_ctx=llama.n_ctx(),
                    # The GGUF header's scalar keys (llama.cpp leaves out the token arrays).
                    metadata=dict(llama.metadata),
                )
            elif op == "generate":
                if llama is None:
                    raise RuntimeError("no model loaded")
                completion = llama.create_completion(
                    request["prompt"], max_tokens=request.get("max_tokens") or 64
                )
                usage = completion.get("usage", {})
                _answer(
                    out,
                    ok=True,
                    text=completion["choices"][0]["text"],
                    prompt_tokens=usage.get("prompt_tokens"),
                    completion_tokens=usage.get("completion_tokens"),
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
