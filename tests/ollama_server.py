"""A loopback Ollama server for tests: the documented endpoints, answers shaped as in Ollama's
API documentation (docs/api.md), and switchable faults.

Fault modes for the neighbours a memory tool must survive: ``drip_s`` sends each answer one byte
at a time (no per-read timeout ever fires), ``hang`` reads the request and never answers,
``answers`` replaces what one endpoint answers (a 500, the wrong shape, nulls), ``version`` sets
what /api/version says (a 10 MB string), and ``faulty_paths`` limits drip and hang to some
endpoints (a server that answers its version but hangs on /api/ps).

It keeps Ollama's keep-alive semantics: a generate call with an empty prompt loads the model
and keeps it for ``keep_alive`` (default 5 minutes), keep-alive 0 unloads it, and /api/ps
reports each loaded model with its ``expires_at``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

GIB = 1024**3


def _details(family: str, parameter_size: str, quantization: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": parameter_size,
        "quantization_level": quantization,
    }


@attrs.define
class FakeModel:
    name: str
    size: int
    family: str
    parameter_size: str
    quantization: str
    context_length: int
    digest: str = "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163"


MODELS = (
    FakeModel("llama3.2:latest", 2019393189, "llama", "3.2B", "Q4_K_M", 131072),
    FakeModel("deepseek-r1:latest", 4683075271, "qwen2", "7.6B", "Q4_K_M", 131072),
)


@attrs.define
class Loaded:
    model: FakeModel
    context_length: int
    expires_at: datetime


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _keep_alive(value: Any) -> timedelta | None:
    """Ollama's keep_alive: seconds as a number, or a duration string such as "5m"; negative
    keeps the model loaded forever (None here)."""
    if value is None:
        return timedelta(minutes=5)
    if isinstance(value, str):
        units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        for suffix in ("ms", "s", "m", "h"):
            if value.endswith(suffix):
                value = float(value[: -len(suffix)]) * units[suffix]
                break
        else:
            value = float(value)
    if value < 0:
        return None
    return timedelta(seconds=value)


@attrs.define
class FakeOllama:
    models: dict[str, FakeModel] = attrs.field(factory=lambda: {m.name: m for m in MODELS})
    loaded: dict[str, Loaded] = attrs.field(factory=dict)
    # Faults: seconds to stall before any answer; answer garbage instead of JSON; fail loads
    # with Ollama's out-of-memory message.
    delay_s: float = 0.0
    malformed: bool = False
    out_of_memory: bool = False
    drip_s: float = 0.0
    hang: bool = False
    faulty_paths: tuple[str, ...] | None = None
    answers: dict[str, tuple[int, Any]] = attrs.field(factory=dict)
    version: str = "0.5.1"
    requests: list[tuple[str, str, Any]] = attrs.field(factory=list)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    # The server's wall clock (keep-alive expiry); a test passes a ManualClock to move it.
    clock: Callable[[], float] = time.time
    # Set when the server shuts down: hung and dripping answers end then.
    released: threading.Event = attrs.field(factory=threading.Event)

    def faulty(self, path: str) -> bool:
        return self.faulty_paths is None or path in self.faulty_paths

    def find(self, name: str) -> FakeModel | None:
        return self.models.get(name) or self.models.get(f"{name}:latest")

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def expire(self) -> None:
        now = self.now()
        for name in [n for n, m in self.loaded.items() if m.expires_at <= now]:
            del self.loaded[name]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            self.expire()
            route = (method, path)
            if path in self.answers:
                return self.answers[path]
            if route == ("GET", "/api/version"):
                return 200, {"version": self.version}
            if route == ("GET", "/api/tags"):
                return 200, {"models": [self.tag(m) for m in self.models.values()]}
            if route == ("GET", "/api/ps"):
                return 200, {"models": [self.process(m) for m in self.loaded.values()]}
            if route == ("POST", "/api/show"):
                return self.show(body)
            if route == ("POST", "/api/generate"):
                return self.generate(body)
            return 404, "404 page not found"

    def tag(self, model: FakeModel) -> dict[str, Any]:
        return {
            "name": model.name,
            "model": model.name,
            "modified_at": "2025-05-10T08:06:48.639712648-07:00",
            "size": model.size,
            "digest": model.digest,
            "details": _details(model.family, model.parameter_size, model.quantization),
        }

    def process(self, loaded: Loaded) -> dict[str, Any]:
        model = loaded.model
        # The KV cache grows the resident size past the file: 2 KiB per token of context here.
        size = model.size + loaded.context_length * 2048
        return {
            "name": model.name,
            "model": model.name,
            "size": size,
            "digest": model.digest,
            "details": _details(model.family, model.parameter_size, model.quantization),
            "expires_at": _iso(loaded.expires_at),
            "size_vram": size // 2,
            "context_length": loaded.context_length,
        }

    def show(self, body: dict[str, Any]) -> tuple[int, Any]:
        model = self.find(body.get("model", ""))
        if model is None:
            return 404, {"error": f"model '{body.get('model')}' not found"}
        return 200, {
            "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model.name}\n',
            "parameters": 'stop                           "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": _details(model.family, model.parameter_size, model.quantization),
            "model_info": {
                "general.architecture": model.family,
                "general.file_type": 15,
                "general.parameter_count": 3212749888,
                "general.quantization_version": 2,
                f"{model.family}.attention.head_count": 24,
                f"{model.family}.attention.head_count_kv": 8,
                f"{model.family}.block_count": 28,
                f"{model.family}.context_length": model.context_length,
                f"{model.family}.embedding_length": 3072,
            },
            "capabilities": ["completion"],
        }

    def generate(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("model", "")
        model = self.find(name)
        if model is None:
            return 404, {"error": f'model "{name}" not found, try pulling it first'}
        created_at = _iso(self.now())
        keep_alive = _keep_alive(body.get("keep_alive"))
        prompt = body.get("prompt") or ""
        if not prompt and keep_alive == timedelta(0):
            self.loaded.pop(model.name, None)
            return 200, {
                "model": name,
                "created_at": created_at,
                "response": "",
                "done": True,
                "done_reason": "unload",
            }
        if self.out_of_memory:
            return 500, {
                "error": "model requires more system memory (9.6 GiB) than is available (3.2 GiB)"
            }
        options = body.get("options") or {}
        expires_at = self.now() + (keep_alive or timedelta(days=365 * 100))
        self.loaded[model.name] = Loaded(
            model=model,
            context_length=int(options.get("num_ctx", 4096)),
            expires_at=expires_at,
        )
        if not prompt:
            return 200, {"model": name, "created_at": created_at, "response": "", "done": True}
        words = prompt.split()
        return 200, {
            "model": name,
            "created_at": created_at,
            "response": "The sky is blue because it is the color of the sky.",
            "done": True,
            "context": [1, 2, 3],
            "total_duration": 5043500667,
            "load_duration": 5025959,
            "prompt_eval_count": len(words),
            "prompt_eval_duration": 325953000,
            "eval_count": 12,
            "eval_duration": 4709213000,
        }


def _handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            if fake.delay_s:
                time.sleep(fake.delay_s)
            if fake.hang and fake.faulty(self.path):
                fake.released.wait()
                return
            status, answer = fake.handle(method, self.path, body)
            if fake.malformed:
                payload = b'{"models": [{"name": "llama3.2:latest", "size": '
            elif isinstance(answer, str):
                payload = answer.encode()
            else:
                payload = json.dumps(answer).encode()
            self.send_response(status)
            content_type = "text/plain" if isinstance(answer, str) else "application/json"
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            # The client may have given up waiting (the timeout tests).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if fake.drip_s and fake.faulty(self.path):
                    for offset in range(len(payload)):
                        self.wfile.write(payload[offset : offset + 1])
                        self.wfile.flush()
                        if fake.released.wait(fake.drip_s):
                            return
                else:
                    self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


@contextmanager
def serve(fake: FakeOllama | None = None) -> Iterator[tuple[str, FakeOllama]]:
    """Run a fake Ollama on 127.0.0.1 at an ephemeral port; yields its URL and state."""
    fake = fake or FakeOllama()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        fake.released.set()
        server.shutdown()
        server.server_close()
