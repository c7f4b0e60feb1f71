"""A loopback LM Studio API server for tests, speaking the protocol the ``lmstudio`` SDK uses.

What the SDK (1.5) does, and this server answers:

- ``GET /lmstudio-greeting`` over plain HTTP: the probe, answered ``{"lmstudio": true}``.
- A websocket per API namespace at ``ws://host:port/<namespace>`` (``system``, ``llm``,
  ``embedding``). The client's first message is ``{"authVersion": 1, "clientIdentifier": ...,
  "clientPasskey": ...}``; the server answers ``{"success": true}``.
- Remote calls: ``{"type": "rpcCall", "endpoint": ..., "callId": n, "parameter": ...}``,
  answered ``{"type": "rpcResult", "callId": n, "result": ...}`` or ``{"type": "rpcError",
  "callId": n, "error": {"title": ..., ...}}``.
- Channels (loading a model): ``{"type": "channelCreate", "endpoint": "loadModel",
  "channelId": n, "creationParameter": {...}}``, answered by ``channelSend`` messages
  (``startLoading``, ``loadProgress``, ``success`` with the instance's identifier) and
  ``channelClose``, or by ``channelError``.

The websocket framing is wsproto's (the library httpx-ws, the SDK's transport, is built on).
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

NOT_FOUND_CODE = "generic.noModelMatchingQuery"
# Channel endpoint -> the FakeLMStudio method that answers it.
CHANNELS = {"loadModel": "load", "getOrLoad": "get_or_load", "predict": "predict"}


def _downloaded(key: str, size: int, arch: str, params: str, max_ctx: int) -> dict[str, Any]:
    return {
        "type": "llm",
        "modelKey": key,
        "format": "gguf",
        "displayName": key.split("/")[-1],
        "path": f"lmstudio-community/{key}-GGUF/{key}-Q4_K_M.gguf",
        "sizeBytes": size,
        "vision": False,
        "trainedForToolUse": False,
        "maxContextLength": max_ctx,
        "paramsString": params,
        "architecture": arch,
    }


DOWNLOADED = (
    _downloaded("qwen2.5-7b-instruct", 4683073952, "qwen2", "7B", 32768),
    _downloaded("gemma-3-270m-it", 253113024, "gemma3", "270M", 32768),
)


@attrs.define
class FakeLMStudio:
    downloaded: list[dict[str, Any]] = attrs.field(factory=lambda: [dict(m) for m in DOWNLOADED])
    # identifier -> instance info
    loaded: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    # Faults: stall every websocket answer; refuse loads as LM Studio does when memory is short;
    # answer remote calls with results that do not match the schema.
    delay_s: float = 0.0
    out_of_memory: bool = False
    malformed: bool = False
    # Connects and greets, but every listing fails as LM Studio does when it is out of memory.
    failing_lists: bool = False
    received: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)
    # HTTP probes of /lmstudio-greeting: a new SDK client makes one before it connects.
    greetings: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def rpc(self, namespace: str, endpoint: str, parameter: Any) -> Any:
        """The result of a remote call; raises _RemoteError for an rpcError."""
        if self.malformed:
            return [{"identifier": 42}] if endpoint == "listLoaded" else {"surprise": True}
        if self.failing_lists and endpoint in ("listLoaded", "listDownloadedModels"):
            raise _RemoteError({"title": "Out of memory: cannot list models"})
        if (namespace, endpoint) == ("system", "listDownloadedModels"):
            return self.downloaded
        if endpoint == "listLoaded":
            return [i for i in self.loaded.values() if i["type"] == namespace]
        if endpoint == "getModelInfo":
            identifier = parameter["specifier"]["query"]["identifier"]
            if identifier not in self.loaded:
                raise _RemoteError(_not_found(identifier))
            return self.loaded[identifier]
        if endpoint == "unloadModel":
            if self.loaded.pop(parameter["identifier"], None) is None:
                raise _RemoteError(_not_found(parameter["identifier"]))
            return None
        raise _RemoteError({"title": f"Unknown endpoint {endpoint!r}"})

    def load(self, parameter: dict[str, Any]) -> list[dict[str, Any]]:
        """The channel messages that answer a loadModel channel."""
        key = parameter["modelKey"]
        model = next((m for m in self.downloaded if m["modelKey"] == key), None)
        if model is None:
            raise _RemoteError(_not_found(key))
        if self.out_of_memory:
            raise _RemoteError(
                {
                    "title": "Failed to load model",
                    "cause": "Model loading was stopped due to insufficient system resources. "
                    "Continuing to load the model would likely overload your system and "
                    "cause it to freeze.",
                    "suggestion": "Try loading a smaller model or lower the context length.",
                }
            )
        context = model["maxContextLength"]
        for layer in parameter["loadConfigStack"]["layers"]:
            for field in layer["config"]["fields"]:
                if field["key"] == "llm.load.contextLength":
                    context = field["value"]
        identifier = parameter.get("identifier") or key
        suffix = 2
        while identifier in self.loaded:
            identifier = f"{key}:{suffix}"
            suffix += 1
        instance = {
            **model,
            "identifier": identifier,
            "instanceReference": f"ref-{identifier}",
            "contextLength": context,
            "ttlMs": parameter.get("ttlMs"),
        }
        self.loaded[identifier] = instance
        info = {k: instance[k] for k in ("identifier", "instanceReference", "path")}
        return [
            {"type": "resolved", "info": model},
            {"type": "startLoading"},
            {"type": "loadProgress", "progress": 0.5},
            {"type": "success", "info": info},
        ]

    def get_or_load(self, parameter: dict[str, Any]) -> list[dict[str, Any]]:
        """``llm.model(key)``: the loaded instance of the key, or a new one."""
        key = parameter["identifier"]
        instance = next((i for i in self.loaded.values() if i["modelKey"] == key), None)
        if instance is None:
            return self.load(
                {
                    "modelKey": key,
                    "loadConfigStack": parameter["loadConfigStack"],
                    "ttlMs": parameter.get("loadTtlMs"),
                }
            )
        info = {k: instance[k] for k in ("identifier", "instanceReference", "path")}
        return [{"type": "alreadyLoaded", "info": info}]

    def predict(self, parameter: dict[str, Any]) -> list[dict[str, Any]]:
        """A completion: two fragments, then the statistics."""
        identifier = parameter["modelSpecifier"]["query"]["identifier"]
        instance = self.loaded.get(identifier)
        if instance is None:
            raise _RemoteError(_not_found(identifier))
        max_tokens = None
        for layer in parameter["predictionConfigStack"]["layers"]:
            for field in layer["config"]["fields"]:
                if field["key"] == "llm.prediction.maxPredictedTokens":
                    max_tokens = field["value"]["value"] if field["value"]["checked"] else None
        words = ["Paris", " is", " the", " capital", " of", " France"][:max_tokens]
        fragments = [
            {
                "type": "fragment",
                "fragment": {
                    "content": word,
                    "tokensCount": 1,
                    "containsDrafted": False,
                    "reasoningType": "none",
                },
            }
            for word in words
        ]
        # One token per word of the prompt: enough to check that counts reach the caller.
        prompt_tokens = sum(
            len(part["text"].split())
            for message in parameter["history"]["messages"]
            for part in message["content"]
        )
        stats = {
            "stopReason": "maxPredictedTokensReached" if max_tokens else "eosFound",
            "promptTokensCount": prompt_tokens,
            "predictedTokensCount": len(words),
            "totalTokensCount": prompt_tokens + len(words),
        }
        model_info = {
            k: v
            for k, v in instance.items()
            if k not in ("identifier", "instanceReference", "contextLength", "ttlMs")
        }
        return [
            {"type": "promptProcessingProgress", "progress": 1.0},
            *fragments,
            {
                "type": "success",
                "stats": stats,
                "modelInfo": model_info,
                "loadModelConfig": {"fields": []},
                "predictionConfig": {"fields": []},
            },
        ]

    def answer(self, namespace: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        with self.lock:
            self.received.append((namespace, message))
            kind = message.get("type")
            if kind == "rpcCall":
                call_id = message["callId"]
                try:
                    result = self.rpc(namespace, message["endpoint"], message.get("parameter"))
                except _RemoteError as exc:
                    return [{"type": "rpcError", "callId": call_id, "error": exc.error}]
                if result is None:
                    return [{"type": "rpcResult", "callId": call_id}]
                return [{"type": "rpcResult", "callId": call_id, "result": result}]
            if kind == "channelCreate" and message["endpoint"] in CHANNELS:
                channel_id = message["channelId"]
                handler = getattr(self, CHANNELS[message["endpoint"]])
                try:
                    sends = handler(message["creationParameter"])
                except _RemoteError as exc:
                    return [{"type": "channelError", "channelId": channel_id, "error": exc.error}]
                sent = [
                    {"type": "channelSend", "channelId": channel_id, "message": m} for m in sends
                ]
                return [*sent, {"type": "channelClose", "channelId": channel_id}]
            return []


class _RemoteError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("title"))
        self.error = error


def _not_found(what: str) -> dict[str, Any]:
    return {
        "title": f"No model found that matches the query {what!r}",
        "displayData": {"code": NOT_FOUND_CODE, "query": {"identifier": what}},
    }


def _handler(fake: FakeLMStudio) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0].decode()
            if b"upgrade: websocket" not in head.lower():
                self.http(sock, request_line)
                return
            self.websocket(sock, head)

        def http(self, sock: socket.socket, request_line: str) -> None:
            if request_line.startswith("GET /lmstudio-greeting "):
                with fake.lock:
                    fake.greetings += 1
                status, body = "200 OK", b'{"lmstudio":true}'
            else:
                status, body = "404 Not Found", b"Not Found"
            sock.sendall(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

        def websocket(self, sock: socket.socket, head: bytes) -> None:
            ws = WSConnection(ConnectionType.SERVER)
            ws.receive_data(head)
            namespace = ""
            authenticated = False
            while True:
                for event in ws.events():
                    if isinstance(event, Request):
                        namespace = event.target.strip("/")
                        sock.sendall(ws.send(AcceptConnection()))
                    elif isinstance(event, Ping):
                        sock.sendall(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        with contextlib.suppress(Exception):
                            sock.sendall(ws.send(event.response()))
                        return
                    elif isinstance(event, TextMessage):
                        message = json.loads(event.data)
                        if fake.delay_s:
                            time.sleep(fake.delay_s)
                        if not authenticated:
                            authenticated = "clientIdentifier" in message
                            answers = [{"success": authenticated, "error": "bad auth"}]
                        else:
                            answers = fake.answer(namespace, message)
                        for answer in answers:
                            sock.sendall(ws.send(Message(data=json.dumps(answer))))
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                ws.receive_data(data)

    return Handler


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def serve(fake: FakeLMStudio | None = None) -> Iterator[tuple[str, FakeLMStudio]]:
    """Run a fake LM Studio on 127.0.0.1 at an ephemeral port; yields its api_host and state."""
    fake = fake or FakeLMStudio()
    server = _Server(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
