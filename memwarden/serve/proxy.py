"""The model routes: OpenAI-compatible (``/v1/...``) and Ollama-native (``/api/...``).

Each request is resolved to its provider, admitted through the :class:`~memwarden.serve.gate.Gate`,
counted as in flight for as long as it is served (streams included: a model serving a stream is
not evicted below EMERGENCY), and forwarded to the runtime's own HTTP API with httpx. A client
that disconnects mid-stream closes the upstream request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from memwarden.core.errors import MemwardenError, ModelNotFound
from memwarden.core.picking import pick
from memwarden.core.providers import Provider
from memwarden.core.types import GenerateResult, ModelChoice, ModelRef, ModelRequest
from memwarden.core.usage import _Call
from memwarden.serve.context import CHAT_ROUTES, SESSION_HEADER, ContextFitter, Fitted
from memwarden.serve.context import HEADER as CONTEXT_HEADER
from memwarden.serve.gate import Busy, Gate, NeverFits

# Hop-by-hop and length headers that must not be copied between the two connections.
_DROP_HEADERS = {
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "host",
    "authorization",
    "content-encoding",
    # httpx asks for (and decodes) compression itself; the client gets the decoded bytes.
    "accept-encoding",
}


def upstream_base(provider: Provider) -> str | None:
    """The HTTP base URL of a provider's runtime, or None for one that has none (embedded)."""
    host = getattr(provider, "host", None)
    if not isinstance(host, str) or not host:
        return None
    if provider.name == "ollama":
        return host.rstrip("/")
    if provider.name == "lmstudio":
        return f"http://{host}" if "://" not in host else host
    return None


def openai_error(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    """An error body as OpenAI's API shapes it, so that any OpenAI client reports it."""
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
    )


def ollama_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """An error body as Ollama shapes it (``{"error": "..."}``)."""
    return JSONResponse({"error": message}, status_code=status)


class Proxy:
    """Forwards model requests once the gate admitted them."""

    def __init__(
        self,
        gate: Gate,
        client: httpx.AsyncClient,
        *,
        on_request: Callable[[str, int], None] | None = None,
    ) -> None:
        self.gate = gate
        self.warden = gate.warden
        self.client = client
        self.on_request = on_request
        # Compresses chat requests that would not fit their model's context (serve/context.py).
        self.fitter: ContextFitter | None = ContextFitter(self.warden)

    # -- the routes ------------------------------------------------------------------------

    async def openai(self, request: Request) -> Response:
        """``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""
        return await self._serve(request, native=False)

    async def native(self, request: Request) -> Response:
        """``POST /api/chat``, ``/api/generate``, ``/api/embed`` (Ollama's own API)."""
        return await self._serve(request, native=True)

    async def _serve(self, request: Request, *, native: bool) -> Response:
        path = request.url.path
        error = ollama_error if native else _openai_error_for
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            return self._done(path, None, error(400, f"the request body is not JSON: {exc}"))
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            return self._done(
                path, None, error(400, "the request names no model ('model' is missing)")
            )
        choice: ModelChoice | None = None
        if model == AUTO_MODEL or model in self.warden.config.pick.aliases:
            try:
                choice = await anyio.to_thread.run_sync(self._pick, model, path, body, native)
            except ModelNotFound as exc:
                return self._done(path, choice, error(404, exc.message))
            model = body["model"] = choice.model.name
        try:
            ref = await self.gate.resolve(model)
        except ModelNotFound as exc:
            return self._done(path, choice, error(404, exc.message))
        except MemwardenError as exc:
            return self._done(path, choice, error(502, exc.message))
        provider = self.warden.provider(ref.provider or "")
        base = upstream_base(provider)
        embedded = base is None and not native and path in EMBEDDED_ROUTES
        embedded = embedded and callable(getattr(provider, "stream", None))
        if not embedded and (base is None or (native and provider.name != "ollama")):
            return self._done(
                path,
                choice,
                error(
                    501,
                    f"model {model!r} is served by provider {provider.name!r}, which memwarden "
                    f"cannot forward {path} to",
                ),
            )
        context_tokens = _context_tokens(body) if native else None
        # Counted from before admission: a model chosen to serve this request is in flight
        # from the moment it is loaded, so no other admission evicts it in between.
        tracked = self.warden.usage.track(provider.name, model)
        call = tracked.__enter__()
        started = time.perf_counter()
        try:
            await self.gate.admit(ref, context_tokens)
        except Busy as exc:
            _leave(tracked, exc)
            response = error(503, exc.message)
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return self._done(path, choice, response)

        except NeverFits as exc:
            _leave(tracked, exc)
            return self._done(path, choice, error(507 if native else 400, exc.message, "never"))
        except MemwardenError as exc:
            _leave(tracked, exc)
            return self._done(path, choice, error(502, exc.message))
        except BaseException as exc:
            _leave(tracked, exc)
            raise
        serving = self.gate.loaded(ref)
        if serving is not None:
            # A use, for the eviction cost's recency and frequency.
            self.gate.governor.record_use(serving)
        fitted = None
        if path in CHAT_ROUTES and self.fitter is not None:
            try:
                fitted = await anyio.to_thread.run_sync(
                    self.fitter.fit, body, model, serving, request.headers.get(SESSION_HEADER)
                )
            except BaseException as exc:
                _leave(tracked, exc)
                raise
            if fitted is not None:
                body = {**body, "messages": fitted.messages}
        if embedded:
            return self._done(
                path,
                choice,
                _with_context(
                    fitted,
                    await _embedded(provider, ref.name, model, path, body, tracked, call, started),
                ),
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_HEADERS}
        rewritten = choice is not None or fitted is not None
        content = json.dumps(body).encode() if rewritten else await request.body()
        upstream = self.client.build_request("POST", base + path, content=content, headers=headers)
        try:
            answer = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            _leave(tracked, exc)
            return self._done(path, choice, error(502, f"{provider.name} ({base}): {exc}"))
        except BaseException as exc:
            _leave(tracked, exc)
            raise
        streaming = answer.headers.get("content-type", "").startswith(
            ("text/event-stream", "application/x-ndjson")
        )
        if not streaming:
            try:
                content = await answer.aread()
            finally:
                await answer.aclose()
            call.result = _tokens(model, provider.name, content)
            _leave(tracked, None if answer.status_code < 400 else _Failed(answer.status_code))
            if fitted is not None and fitted.session_id and answer.status_code < 400:
                assert self.fitter is not None
                await anyio.to_thread.run_sync(
                    self.fitter.remember_reply, fitted.session_id, content
                )
            return self._done(
                path,
                choice,
                _with_context(
                    fitted,
                    Response(
                        content, status_code=answer.status_code, headers=_copy(answer.headers)
                    ),
                ),
            )
        stream = _Stream(answer, tracked, call, started, model, provider.name)
        response = _StreamResponse(
            stream, status_code=answer.status_code, headers=_copy(answer.headers)
        )
        return self._done(path, choice, _with_context(fitted, response))

    def _pick(self, asked: str, path: str, body: dict[str, Any], native: bool) -> ModelChoice:
        """``"model": "auto"`` or a ``[pick.aliases]`` name: the ``pick_model`` hook chooses."""
        task = "embed" if "embed" in path else "chat"
        context = _context_tokens(body) if native else None
        request = ModelRequest(
            task=task,
            min_context_tokens=context or 0,
            preferred=() if asked == AUTO_MODEL else (asked,),
        )
        choice, _ = pick(self.warden, request)
        # The provider that offers the chosen model serves it, whatever else shares its name.
        self.gate.remember(choice.model.name, ModelRef(choice.model.name, choice.model.provider))
        return choice

    def _done(self, path: str, choice: ModelChoice | None, response: Response) -> Response:
        if choice is not None:
            response.headers[PICK_HEADER] = pick_header(choice)
        if self.on_request is not None:
            self.on_request(path, response.status_code)
        return response


# The model name that asks memwarden to choose (``pick_model``), and the header that says what it
# chose and why.
AUTO_MODEL = "auto"
PICK_HEADER = "X-Memwarden-Model-Choice"


def pick_header(choice: ModelChoice) -> str:
    """``provider/model; chooser; reason; reason``, in ASCII as HTTP headers must be."""
    text = "; ".join(
        (f"{choice.model.provider}/{choice.model.name}", choice.chooser, *choice.reasons)
    )
    return text.encode("ascii", "replace").decode("ascii")[:1000]


# The OpenAI routes an embedded runtime (a provider with a ``stream`` method) serves itself.
EMBEDDED_ROUTES = ("/v1/chat/completions", "/v1/completions")
_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed")


async def _embedded(
    provider: Provider,
    name: str,
    model: str,
    path: str,
    body: dict[str, Any],
    tracked: AbstractContextManager[_Call],
    call: _Call,
    started: float,
) -> Response:
    """Serve an OpenAI request from an embedded runtime's token stream, streamed (SSE) or
    whole, in the shapes OpenAI's API uses."""
    chat = path == "/v1/chat/completions"
    payload: dict[str, Any] = {k: body[k] for k in _SAMPLING if body.get(k) is not None}
    if body.get("max_completion_tokens") is not None and "max_tokens" not in payload:
        payload["max_tokens"] = body["max_completion_tokens"]
    stop = body.get("stop")
    if stop:
        payload["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if chat:
        payload["messages"] = body.get("messages") or []
    else:
        payload["prompt"] = body.get("prompt") or ""
    answers = provider.stream(name, payload)  # type: ignore[attr-defined]
    stream = _EmbeddedStream(answers, tracked, call, started, model, provider.name, chat)
    if body.get("stream"):
        return _StreamResponse(
            stream, status_code=200, headers={"content-type": "text/event-stream"}
        )
    try:
        text = "".join([piece async for piece in stream.pieces()])
    except MemwardenError as exc:
        stream.error = exc
        return _openai_error_for(502, exc.message)
    finally:
        await stream.close()
    done = stream.final
    usage = {
        "prompt_tokens": done.get("prompt_tokens"),
        "completion_tokens": done.get("completion_tokens"),
        "total_tokens": (done.get("prompt_tokens") or 0) + (done.get("completion_tokens") or 0),
    }
    finish = _finish(done)
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish}
    return JSONResponse(
        {
            "id": stream.ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": stream.created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    )


def _finish(done: dict[str, Any]) -> str:
    return "length" if done.get("finish_reason") == "length" else "stop"


def _openai_error_for(status: int, message: str, code: str | None = None) -> JSONResponse:
    if status == 503:
        return openai_error(status, message, "server_overloaded", "model_busy")
    if code == "never":
        return openai_error(status, message, "insufficient_memory", "model_does_not_fit")
    if status == 404:
        return openai_error(status, message, "invalid_request_error", "model_not_found")
    if status == 400:
        return openai_error(status, message, "invalid_request_error", None)
    return openai_error(status, message, "api_error", None)


def _context_tokens(body: dict[str, Any]) -> int | None:
    options = body.get("options")
    if isinstance(options, dict) and isinstance(options.get("num_ctx"), int):
        return int(options["num_ctx"])
    return None


def _with_context(fitted: Fitted | None, response: Response) -> Response:
    """``response`` with the header that says how its request's context was fitted."""
    if fitted is not None and fitted.header is not None:
        response.headers[CONTEXT_HEADER] = fitted.header
    return response


def _copy(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _DROP_HEADERS}


class _Failed(Exception):
    """The runtime answered with an error status (recorded as the call's error)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered HTTP {status}")


def _leave(tracked: AbstractContextManager[_Call], exc: BaseException | None) -> None:
    """End a tracked call, recording ``exc`` as its error."""
    if exc is None:
        tracked.__exit__(None, None, None)
        return
    try:
        tracked.__exit__(type(exc), exc, exc.__traceback__)
    except BaseException as raised:
        if raised is not exc:
            raise


def _tokens(model: str, provider: str, content: bytes) -> GenerateResult | None:
    """Token counts from an OpenAI ``usage`` object or Ollama's final fields, where present."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if isinstance(usage, dict):
        return GenerateResult(
            model=model,
            provider=provider,
            text="",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )
    if data.get("done") is True:
        return GenerateResult(
            model=model,
            provider=provider,
            text="",
            prompt_tokens=data.get("prompt_eval_count"),
            completion_tokens=data.get("eval_count"),
        )
    return None


class _Stream:
    """One streamed answer: passes chunks through, notes the time to the first one and the
    token counts of the last, and ends the tracked call exactly once."""

    def __init__(
        self,
        answer: httpx.Response,
        tracked: AbstractContextManager[_Call],
        call: _Call,
        started: float,
        model: str,
        provider: str,
    ) -> None:
        self.answer = answer
        self.tracked = tracked
        self.call = call
        self.started = started
        self.model = model
        self.provider = provider
        self.closed = False
        self.error: BaseException | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        tail = b""
        try:
            async for chunk in self.answer.aiter_bytes():
                if self.call.time_to_first_token_s is None:
                    self.call.time_to_first_token_s = time.perf_counter() - self.started
                tail = (tail + chunk)[-4096:]
                yield chunk
            self.call.result = _stream_tokens(self.model, self.provider, tail)
        except BaseException as exc:  # the client went away (cancelled), or the runtime failed
            self.error = exc
            raise
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the upstream answer (ending the runtime's work) and end the tracked call."""
        if self.closed:
            return
        self.closed = True
        try:
            with anyio.CancelScope(shield=True):
                await self.answer.aclose()
        finally:
            _leave(self.tracked, self.error)


class _EmbeddedStream:
    """An embedded runtime's answers (``provider.stream``) as OpenAI SSE events; the runtime's
    iterator is advanced on worker threads and closed (which cancels the generation) whatever
    ends the stream."""

    def __init__(
        self,
        answers: Iterator[dict[str, Any]],
        tracked: AbstractContextManager[_Call],
        call: _Call,
        started: float,
        model: str,
        provider: str,
        chat: bool,
    ) -> None:
        self.answers = answers
        self.tracked = tracked
        self.call = call
        self.started = started
        self.model = model
        self.provider = provider
        self.chat = chat
        self.ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.final: dict[str, Any] = {}
        self.closed = False
        self.error: BaseException | None = None

    async def pieces(self) -> AsyncIterator[str]:
        """The text, piece by piece; ``final`` holds the closing answer once they are done."""
        while True:
            answer = await anyio.to_thread.run_sync(next, self.answers, None)
            if answer is None:
                return
            if answer.get("done"):
                self.final = answer
                self.call.result = GenerateResult(
                    model=self.model,
                    provider=self.provider,
                    text="",
                    prompt_tokens=answer.get("prompt_tokens"),
                    completion_tokens=answer.get("completion_tokens"),
                )
                return
            if self.call.time_to_first_token_s is None:
                self.call.time_to_first_token_s = time.perf_counter() - self.started
            yield str(answer.get("piece", ""))

    def _event(self, piece: str | None, finish: str | None) -> bytes:
        if self.chat:
            delta = {"role": "assistant", "content": piece or ""}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece or "", "finish_reason": finish}
        event = {
            "id": self.ident,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self.pieces():
                yield self._event(piece, None)
            yield self._event(None, _finish(self.final))
            yield b"data: [DONE]\n\n"
        except MemwardenError as exc:
            self.error = exc
            error = {"error": {"message": exc.message, "type": "api_error", "code": None}}
            yield b"data: " + json.dumps(error).encode() + b"\n\n"
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the runtime's iterator (cancelling what it still generates) and end the call."""
        if self.closed:
            return
        self.closed = True
        close = getattr(self.answers, "close", None)
        try:
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)
        finally:
            _leave(self.tracked, self.error)


class _StreamResponse(StreamingResponse):
    """A streamed answer that closes its upstream whatever ends it: the end of the stream, or a
    client that went away (Starlette cancels the response then, before or during the stream)."""

    def __init__(
        self, stream: _Stream | _EmbeddedStream, *, status_code: int, headers: dict[str, str]
    ) -> None:
        super().__init__(stream.chunks(), status_code=status_code, headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except BaseException as exc:
            if self.stream.error is None:
                self.stream.error = exc
            raise
        finally:
            await self.stream.close()


def _stream_tokens(model: str, provider: str, tail: bytes) -> GenerateResult | None:
    """Token counts from the last event of a stream that carries them."""
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line.startswith(b"{"):
            continue
        found = _tokens(model, provider, line)
        if found is not None:
            return found
    return None
