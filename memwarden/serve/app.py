"""``memwarden serve``: the governor and an HTTP front door in one process.

:func:`create_app` builds the Starlette application over one warden (its governor is the one that
admits every load); :class:`FrontDoor` runs it with uvicorn and runs the governor's
:class:`~memwarden.core.monitor.Monitor` on a background thread, as ``memwarden watch`` does.
docs/serve.md describes every route.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import queue
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from memwarden.core.errors import ConfigError, MemwardenError
from memwarden.core.monitor import Monitor
from memwarden.core.types import Event, PressureReading, UsageRecord
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl
from memwarden.serve import daemon
from memwarden.serve.control import Control
from memwarden.serve.gate import Gate
from memwarden.serve.metrics import Metrics
from memwarden.serve.proxy import Proxy, upstream_base

log = logging.getLogger("memwarden")

TOKEN_ENV = "MEMWARDEN_TOKEN"
DASHBOARD = Path(__file__).parent / "dashboard"
# Reads of a stream may pause for as long as a runtime takes to produce the next token.
UPSTREAM_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


class TokenRequired(ConfigError):
    """``memwarden serve`` was asked to listen beyond loopback without a token."""

    code = "serve-token-required"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def configured_token(warden: Warden) -> str | None:
    """The token that guards the front door: ``$MEMWARDEN_TOKEN``, else ``[serve] token``."""
    return os.environ.get(TOKEN_ENV) or warden.config.serve.token or None


def check_access(host: str, token: str | None) -> None:
    """Refuse to listen on anything but loopback without a token."""
    if token is None and not is_loopback(host):
        raise TokenRequired(
            f"memwarden serve would listen on {host}, beyond this machine, without a token",
            hint=f"set [serve] token in the config or ${TOKEN_ENV}, or listen on 127.0.0.1",
        )


class _TokenGuard:
    """Requires ``Authorization: Bearer <token>`` on every state-changing request (any method
    but GET and HEAD: control actions, and model requests, which load and evict models)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.expected is not None
            and scope["type"] == "http"
            and scope["method"] not in ("GET", "HEAD")
        ):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {
                        "error": {
                            "message": "this memwarden requires a token for state-changing "
                            "requests: send Authorization: Bearer <token>",
                            "type": "invalid_request_error",
                            "code": "token_required" if not given else "token_invalid",
                        }
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@attrs.define
class _Tap:
    """Receives every event through the on_event hook, like any plugin would."""

    listeners: list[Callable[[Event], None]]

    @hookimpl
    def on_event(self, event: Event, warden: Warden) -> None:
        for listener in self.listeners:
            listener(event)


class _Recorder:
    """Persists usage records on a thread of its own: a SQLite write per request must not hold
    up the event loop that serves every other request."""

    def __init__(self, persist: Callable[[UsageRecord], None]) -> None:
        self.persist = persist
        self.queue: queue.SimpleQueue[UsageRecord | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="memwarden-usage", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (record := self.queue.get()) is not None:
            try:
                self.persist(record)
            except Exception as exc:  # a failing persistence plugin is isolated by pluggy
                log.warning("could not record usage: %s", exc)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(10)


class Services:
    """Everything the routes share: the gate, the proxy, the control API and the metrics."""

    def __init__(self, warden: Warden) -> None:
        self.warden = warden
        # UsageTracker calls its recorder on the thread that ends the call: the event loop.
        self._persist_usage = warden.usage._on_record
        self.recorder = _Recorder(self._persist_usage) if self._persist_usage else None
        if self.recorder is not None:
            warden.usage._on_record = self.recorder.queue.put
        self.metrics = Metrics(warden.governor)
        self.gate = Gate(warden, on_refusal=self.metrics.refusal, on_load=self.metrics.loaded)
        self.control = Control(warden, self.gate)
        self.client: httpx.AsyncClient | None = None
        self.proxy: Proxy | None = None
        self.tap = _Tap([self.control.event, self.metrics.event])
        warden.plugins.register(self.tap)

    def on_reading(self, reading: PressureReading, _round: object) -> None:
        self.control.reading(reading)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.warden.plugins.pm.unregister(self.tap)
        if self.recorder is not None:
            self.warden.usage._on_record = self._persist_usage
            self.recorder.close()
            self.recorder = None


def create_app(warden: Warden, *, token: str | None = None) -> Starlette:
    """The front door's ASGI application over ``warden``. ``app.state.services`` holds the
    gate, proxy, control API and metrics (tests and :class:`FrontDoor` read them)."""
    # Register the runtimes before the first request, so none of them pays for it.
    warden.providers()
    services = Services(warden)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT, limits=limits) as client:
            services.client = client
            services.proxy = Proxy(services.gate, client, on_request=services.metrics.request)
            try:
                yield
            finally:
                services.close()

    def proxy() -> Proxy:
        assert services.proxy is not None, "the app's lifespan has not started"
        return services.proxy

    async def openai_route(request: Request) -> Response:
        return await proxy().openai(request)

    async def native_route(request: Request) -> Response:
        return await proxy().native(request)

    async def models(request: Request) -> JSONResponse:
        available = await anyio.to_thread.run_sync(warden.available_models)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}
                    for m in available
                ],
            }
        )

    async def ollama_listing(request: Request) -> Response:
        """``/api/tags`` and ``/api/ps``: Ollama's own answer, passed through."""
        ollama = warden.providers().get("ollama")
        base = upstream_base(ollama) if ollama is not None else None
        if base is None or services.client is None:
            return JSONResponse({"models": []})
        try:
            answer = await services.client.get(base + request.url.path)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"ollama ({base}): {exc}"}, status_code=502)
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    async def metrics(request: Request) -> Response:
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")

    async def dashboard(request: Request) -> Response:
        return FileResponse(DASHBOARD / "index.html", media_type="text/html")

    async def dashboard_file(request: Request) -> Response:
        name = request.path_params["name"]
        path = DASHBOARD / name
        if "/" in name or not path.is_file():
            return JSONResponse({"error": f"no dashboard file {name!r}"}, status_code=404)
        return FileResponse(path)

    control = services.control
    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", openai_route, methods=["POST"]),
        Route("/v1/completions", openai_route, methods=["POST"]),
        Route("/v1/embeddings", openai_route, methods=["POST"]),
        Route("/api/chat", native_route, methods=["POST"]),
        Route("/api/generate", native_route, methods=["POST"]),
        Route("/api/embed", native_route, methods=["POST"]),
        Route("/api/tags", ollama_listing, methods=["GET"]),
        Route("/api/ps", ollama_listing, methods=["GET"]),
        Route("/health", control.health, methods=["GET"]),
        Route("/memory/status", control.status, methods=["GET"]),
        Route("/memory/report", control.report, methods=["GET"]),
        Route("/memory/components", control.components, methods=["GET"]),
        Route("/memory/plan", control.plan, methods=["GET"]),
        Route("/memory/components/{model:path}/load", control.load, methods=["POST"]),
        Route("/memory/components/{model:path}/unload", control.unload, methods=["POST"]),
        Route("/memory/optimize", control.optimize, methods=["POST"]),
        Route("/memory/emergency-cleanup", control.emergency_cleanup, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/", dashboard, methods=["GET"]),
        Route("/dashboard/{name}", dashboard_file, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    app.add_middleware(_TokenGuard, token=token)
    return app


class FrontDoor:
    """One ``memwarden serve`` process: the monitor on a thread, uvicorn in the caller's.

    ``start()`` in a thread of its own (tests, benchmarks), or ``run()`` to block until a signal.
    """

    def __init__(
        self,
        warden: Warden,
        *,
        host: str = "127.0.0.1",
        port: int = 11435,
        token: str | None = None,
        monitor: bool = True,
        psi: bool | None = None,
        announce: bool = False,
    ) -> None:
        """``announce``: record where it listens (serve.json) so that the command line finds
        it (``memwarden serve`` does; tests and embedders need not)."""
        check_access(host, token)
        self.announce = announce
        self.warden = warden
        self.host = host
        self.app = create_app(warden, token=token)
        self.services: Services = self.app.state.services
        self.monitor = (
            Monitor(warden.governor, on_reading=self.services.on_reading, psi=psi)
            if monitor
            else None
        )
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose, for port 0), once started."""
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def _start_monitor(self) -> None:
        if self.monitor is not None:
            thread = threading.Thread(
                target=self.monitor.run, name="memwarden-monitor", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _announce_when_started(self) -> None:
        if not self.announce:
            return

        def wait() -> None:
            while not self.server.started and not self.server.should_exit:
                threading.Event().wait(0.02)
            if self.server.started:
                daemon.announce(self.url)

        threading.Thread(target=wait, name="memwarden-announce", daemon=True).start()

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (uvicorn's handlers), then stop the monitor."""
        self._start_monitor()
        self._announce_when_started()
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
        # handler that was there before: make that one a no-op, so that this process finishes
        # its own clean-up and exits 0 instead of dying by the signal.
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, _ignore) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_monitor()
            if self.announce:
                daemon.withdraw()

    def start(self, timeout_s: float = 20.0) -> FrontDoor:
        """Serve on a background thread; return once it accepts connections."""
        self._start_monitor()
        self._announce_when_started()
        thread = threading.Thread(target=self.server.run, name="memwarden-serve", daemon=True)
        thread.start()
        self._threads.append(thread)
        ready = threading.Event()

        def wait() -> None:
            while not self.server.started and thread.is_alive():
                ready.wait(0.01)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(timeout_s)
        if not self.server.started:
            self.stop()
            raise MemwardenError(
                f"memwarden serve did not start on {self.host}:{self.server.config.port} "
                f"within {timeout_s:g} s",
                hint="is the port taken? pick another with --port",
            )
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._stop_monitor()
        for thread in self._threads:
            thread.join(10)
        if self.announce:
            daemon.withdraw()

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def __enter__(self) -> FrontDoor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.monitor is not None:
            self.monitor.close()


def _ignore(signum: int, frame: object) -> None:
    """Signal handler for after uvicorn's own: the shutdown is already under way."""


def describe(door: FrontDoor) -> dict[str, Any]:
    """What ``memwarden serve`` prints once it listens."""
    return {"url": door.url, "monitor": door.monitor is not None}
