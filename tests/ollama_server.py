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
import select
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


ANSWER = "The sky is blue because it is the color of the sky."
EMBEDDING = [0.25, -0.5, 0.125]


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


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
    # Streams (the OpenAI-compatible and native routes): seconds between chunks; while
    # ``hold_streams`` is clear, every stream stops after its first chunk until it is set (or the
    # client goes away, counted in ``disconnects``).
    chunk_delay_s: float = 0.0
    hold_streams: threading.Event = attrs.field(factory=lambda: _set(threading.Event()))
    streams_started: int = 0
    disconnects: int = 0

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
            if route == ("GET", "/v1/models"):
                return 200, {
                    "object": "list",
                    "data": [
                        {
                            "id": m.name,
                            "object": "model",
                            "created": 1746889608,
                            "owned_by": "library",
                        }
                        for m in self.models.values()
                    ],
                }
            if method == "POST" and path in STREAMING_ROUTES:
                return self.serve_model(path, body)
            return 404, "404 page not found"

    def serve_model(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """The model-serving routes: load the model on demand at the default context, as Ollama
        does, and answer with :data:`ANSWER` (or :data:`EMBEDDING`)."""
        name = body.get("model", "")
        model = self.find(name)
        if model is None:
            if path.startswith("/v1/"):
                return 404, {
                    "error": {
                        "message": f'model "{name}" not found, try pulling it first',
                        "type": "api_error",
                        "param": None,
                        "code": None,
                    }
                }
            return 404, {"error": f'model "{name}" not found, try pulling it first'}
        options = body.get("options") or {}
        context = int(options.get("num_ctx", 4096))
        current = self.loaded.get(model.name)
        if current is None or current.context_length != context:
            self.loaded[model.name] = Loaded(
                model=model,
                context_length=context,
                expires_at=self.now() + timedelta(minutes=5),
            )
        return 200, Reply(path=path, model=name, body=body)

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


STREAMING_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/api/chat",
    "/api/embed",
)


@attrs.define
class Reply:
    """What a model-serving route answers, built when it is sent (streamed or whole)."""

    path: str
    model: str
    body: dict[str, Any]

    @property
    def streaming(self) -> bool:
        if self.path in ("/v1/embeddings", "/api/embed"):
            return False
        if self.path.startswith("/api/"):
            return self.body.get("stream", True) is not False
        return bool(self.body.get("stream"))

    def prompt_tokens(self) -> int:
        if self.path == "/v1/chat/completions" or self.path == "/api/chat":
            text = " ".join(str(m.get("content", "")) for m in self.body.get("messages", []))
        elif self.path == "/v1/embeddings" or self.path == "/api/embed":
            text = str(self.body.get("input", ""))
        else:
            text = str(self.body.get("prompt", ""))
        return len(text.split())

    def pieces(self) -> list[str]:
        words = ANSWER.split(" ")
        return [w if i == 0 else f" {w}" for i, w in enumerate(words)]

    def whole(self) -> dict[str, Any]:
        prompt = self.prompt_tokens()
        done = len(self.pieces())
        usage = {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
        if self.path == "/v1/chat/completions":
            return {
                "id": "chatcmpl-917",
                "object": "chat.completion",
                "created": 1746889608,
                "model": self.model,
                "system_fingerprint": "fp_ollama",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        if self.path == "/v1/completions":
            return {
                "id": "cmpl-917",
                "object": "text_completion",
                "created": 1746889608,
                "model": self.model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": ANSWER, "index": 0, "finish_reason": "stop"}],
                "usage": usage,
            }
        if self.path == "/v1/embeddings":
            return {
                "object": "list",
                "data": [{"object": "embedding", "embedding": EMBEDDING, "index": 0}],
                "model": self.model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        if self.path == "/api/embed":
            return {
                "model": self.model,
                "embeddings": [EMBEDDING],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": prompt,
            }
        return self.native(ANSWER, done=True)

    def native(self, text: str, *, done: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {"model": self.model, "created_at": "2025-05-10T08:06:48Z"}
        answer["message"] = {"role": "assistant", "content": text}
        answer["done"] = done
        if done:
            answer.update(
                done_reason="stop",
                total_duration=5043500667,
                load_duration=5025959,
                prompt_eval_count=self.prompt_tokens(),
                prompt_eval_duration=325953000,
                eval_count=len(self.pieces()),
                eval_duration=4709213000,
            )
        return answer

    def chunks(self) -> list[bytes]:
        """The stream, as Ollama sends it: SSE ``data:`` lines on /v1, NDJSON on /api."""
        pieces = self.pieces()
        if self.path.startswith("/api/"):
            lines = [self.native(p, done=False) for p in pieces] + [self.native("", done=True)]
            return [json.dumps(line).encode() + b"\n" for line in lines]
        events = []
        for index, piece in enumerate([*pieces, None]):
            finish = "stop" if piece is None else None
            if self.path == "/v1/chat/completions":
                delta = {"role": "assistant", "content": piece or ""}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                kind, ident = "chat.completion.chunk", "chatcmpl-917"
            else:
                choice = {"text": piece or "", "index": 0, "finish_reason": finish}
                kind, ident = "text_completion", "cmpl-917"
            del index
            events.append(
                {
                    "id": ident,
                    "object": kind,
                    "created": 1746889608,
                    "model": self.model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [choice],
                }
            )
        return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [
            b"data: [DONE]\n\n"
        ]


def _client_gone(sock: Any) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, 0x2) == b""  # MSG_PEEK: EOF means the client closed
    except OSError:
        return True


def _stream(handler: BaseHTTPRequestHandler, fake: FakeOllama, reply: Reply) -> None:
    content_type = "application/x-ndjson" if reply.path.startswith("/api/") else "text/event-stream"
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    with fake.lock:
        fake.streams_started += 1
    try:
        for index, chunk in enumerate(reply.chunks()):
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            handler.wfile.flush()
            if index == 0:
                while not fake.hold_streams.wait(0.02):
                    if _client_gone(handler.connection) or fake.released.is_set():
                        with fake.lock:
                            fake.disconnects += 1
                        handler.close_connection = True
                        return
            if fake.chunk_delay_s:
                time.sleep(fake.chunk_delay_s)
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        with fake.lock:
            fake.disconnects += 1
        handler.close_connection = True


def _handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold every answer back by about 40 ms.
        disable_nagle_algorithm = True

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
            if isinstance(answer, Reply):
                if answer.streaming:
                    _stream(self, fake, answer)
                    return
                answer = answer.whole()
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
