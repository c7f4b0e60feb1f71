"""Ollama, through the official ``ollama`` client.

Loaded models come from ``/api/ps`` with their real sizes and VRAM share; a load is a generate
call with no prompt, ``num_ctx`` and ``keep_alive``; an unload is the same with keep-alive 0.
Every call has a timeout; idempotent reads are retried a few times with backoff when a
connection breaks mid-answer, so a restarting server does not show as down. A refused connection
is an answer (Ollama is not running) and is not retried. The ``ollama`` SDK (and httpx and
pydantic under it) is imported only once a connect to the server succeeds (core/netprobe.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import attrs

from memwarden.core import netprobe
from memwarden.core.config import Config, count, seconds
from memwarden.core.errors import ModelNotFound, ProviderError, ProviderUnavailable
from memwarden.core.providers import Provider, ignored_options
from memwarden.core.types import AvailableModel, GenerateResult, LoadedModel, ProviderStatus
from memwarden.hookspecs import hookimpl

if TYPE_CHECKING:
    import ollama

T = TypeVar("T")

DEFAULT_HOST = "http://127.0.0.1:11434"
REFUSED_MEMORY_S = 10.0
_START_HINT = "start Ollama (`ollama serve`), or point [plugins.ollama] host or $OLLAMA_HOST at it"


@attrs.frozen
class OllamaOptions:
    """``[plugins.ollama]``."""

    # Default: $OLLAMA_HOST, then http://127.0.0.1:11434.
    host: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            lambda _, attribute, value: _check_host(attribute.name, value)
        ),
    )
    # For listing, showing and unloading; a load reads weights and gets load_timeout_s. The
    # core gives every status and listing call a total deadline of its own (2 s) on top.
    timeout_s: float = seconds(5.0, minimum=0.01, maximum=3600.0)
    load_timeout_s: float = seconds(600.0, minimum=0.01, maximum=86_400.0)
    # Extra attempts for idempotent reads whose connection broke (a refusal is not retried).
    retries: int = count(2, maximum=10)
    retry_backoff_s: float = seconds(0.1, maximum=60.0)


OPTIONS = OllamaOptions


def _check_host(key: str, host: str) -> None:
    if not isinstance(host, str):
        raise TypeError(f"'{key}' must be a string such as http://127.0.0.1:11434: {host!r}")
    try:
        port = urlsplit(host if "://" in host else f"http://{host}").port
    except ValueError:
        port = -1
    if port == -1 or port == 0:
        raise ValueError(
            f"'{key}' must be a URL with a port from 1 to 65535 (http://127.0.0.1:11434): "
            f"{host[:200]!r}"
        )


def normalise_host(host: str) -> str:
    """``localhost``, ``0.0.0.0:11434`` and ``http://host:port`` all name a server, as
    OLLAMA_HOST allows; 0.0.0.0 is where a server listens, not an address to call."""
    if "://" not in host:
        host = f"http://{host}"
    parts = urlsplit(host)
    hostname = parts.hostname or "127.0.0.1"
    if hostname == "0.0.0.0":
        hostname = "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    port = parts.port or (443 if parts.scheme == "https" else 11434)
    return f"{parts.scheme}://{hostname}:{port}{parts.path.rstrip('/')}"


# Runtime options (core.providers.LOAD_OPTION_KEYS) -> Ollama's per-request model options
# (api/types.go, Runner: num_batch, num_gpu, use_mmap). Flash attention, the cache type and
# parallel sequences are the server's settings (OLLAMA_FLASH_ATTENTION, OLLAMA_KV_CACHE_TYPE,
# OLLAMA_NUM_PARALLEL), not a request's.
_OLLAMA_OPTIONS = {"batch_tokens": "num_batch", "gpu_layers": "num_gpu", "mmap": "use_mmap"}


def ollama_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's request options for runtime ``options``; those it has no per-request setting
    for are named in a log line. ``runtime = "ollama"`` is honoured, another runtime's is not."""
    request = {key: options[option] for option, key in _OLLAMA_OPTIONS.items() if option in options}
    honoured = {*_OLLAMA_OPTIONS, *(["runtime"] if options.get("runtime") == "ollama" else [])}
    ignored_options("ollama", options, honoured)
    return request


class OllamaProvider(Provider):
    name = "ollama"

    def __init__(self, options: OllamaOptions | None = None) -> None:
        self.options = options or OllamaOptions()
        self.host = normalise_host(
            self.options.host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        )
        # After a refused connection, retries are skipped for a while: a server that is plainly
        # down must not cost every listing the whole backoff.
        self._refused_at: float | None = None
        # One client per timeout, kept: building one (its HTTP pool and TLS context) costs tens
        # of milliseconds of CPU, and the monitor lists loaded models every few seconds.
        self._clients: dict[float, ollama.Client] = {}
        self._clients_lock = threading.Lock()

    def _client(self, timeout_s: float) -> ollama.Client:
        import ollama

        with self._clients_lock:
            client = self._clients.get(timeout_s)
            if client is None:
                client = self._clients[timeout_s] = ollama.Client(host=self.host, timeout=timeout_s)
            return client

    def _call(
        self,
        action: str,
        call: Callable[[ollama.Client], T],
        *,
        model: str | None = None,
        timeout_s: float | None = None,
        idempotent: bool = True,
    ) -> T:
        """Run one client call, mapping every failure to a memwarden error."""
        timeout_s = timeout_s if timeout_s is not None else self.options.timeout_s
        if not self._clients:
            # No client yet (or closed): a connect first, so that a server that is not
            # running costs a refused connect, not an SDK import and a retried request.
            down = netprobe.unreachable(*netprobe.host_port(self.host, 11434))
            if down is not None:
                self._refused_at = time.monotonic()
                raise ProviderUnavailable(
                    f"ollama ({self.host}): not reachable ({down})", hint=_START_HINT
                )
        import httpx
        import ollama
        import pydantic

        recently_refused = (
            self._refused_at is not None and time.monotonic() - self._refused_at < REFUSED_MEMORY_S
        )
        attempts = 1 + (self.options.retries if idempotent and not recently_refused else 0)
        for attempt in range(attempts):
            try:
                answer = call(self._client(timeout_s))
                self._refused_at = None
                return answer
            except (ConnectionError, httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                if attempt + 1 < attempts and not _refused(exc):
                    time.sleep(self.options.retry_backoff_s * 2**attempt)
                    continue
                self._refused_at = time.monotonic()
                raise ProviderUnavailable(
                    f"ollama ({self.host}): not reachable ({_connection_reason(exc)})",
                    hint=_START_HINT,
                ) from None
            except httpx.TimeoutException:
                raise ProviderUnavailable(
                    f"ollama ({self.host}): no answer to {action} within {timeout_s:g} s",
                    hint="the server is overloaded or hung; raise [plugins.ollama] timeout_s "
                    "if it is only slow",
                ) from None
            except ollama.ResponseError as exc:
                raise self._response_error(action, model, exc) from None
            except (json.JSONDecodeError, pydantic.ValidationError, TypeError) as exc:
                raise ProviderError(
                    f"ollama ({self.host}): answered {action} with malformed JSON "
                    f"({type(exc).__name__}: {_first_line(exc)})",
                    hint="check that Ollama, and not another program, listens on that port",
                ) from None
            except httpx.HTTPError as exc:
                raise ProviderUnavailable(
                    f"ollama ({self.host}): {action} failed: {_clip(str(exc), 300)}",
                    hint=_START_HINT,
                ) from None
        raise AssertionError("unreachable")

    def _response_error(
        self, action: str, model: str | None, exc: ollama.ResponseError
    ) -> ProviderError | ModelNotFound:
        if exc.status_code == 404:
            return ModelNotFound(
                f"ollama ({self.host}): model {model!r} not found ({_clip(str(exc.error), 300)})",
                hint=f"`ollama pull {model}`, or pick one from `memwarden models`",
            )
        return ProviderError(
            f"ollama ({self.host}): {action} failed: {_clip(str(exc.error), 300)} "
            f"(HTTP {exc.status_code})",
            hint="the message above is Ollama's own; `memwarden status` shows free memory",
        )

    # -- the contract ----------------------------------------------------------------------

    def close(self) -> None:
        """Close every client, so that a call still reading from a hung server ends; the next
        call builds new ones."""
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def status(self) -> ProviderStatus:
        """Reachable only when the server answers its version *and* lists its loaded and
        downloaded models: a server that answers /api/version but fails /api/ps (out of
        memory, the wrong shape) is failing, not reachable with no models."""

        def version(client: ollama.Client) -> str:
            # The client has no call for /api/version; its HTTP client is used directly.
            response = client._client.get("/api/version")
            response.raise_for_status()
            return _clip(str(response.json()["version"]), 64)

        try:
            found = self._call("version", version)
        except (ProviderUnavailable, ProviderError) as exc:
            return ProviderStatus(name=self.name, reachable=False, reason=exc.message)
        except Exception as exc:
            import httpx

            if not isinstance(exc, KeyError | TypeError | httpx.HTTPStatusError):
                raise
            return ProviderStatus(
                name=self.name,
                reachable=False,
                reason=f"ollama ({self.host}): unexpected answer to /api/version "
                f"({_clip(str(exc), 200)})",
            )
        for listing in (self.loaded_models, self.available_models):
            try:
                listing()
            except (ProviderUnavailable, ProviderError) as exc:
                return ProviderStatus(
                    name=self.name,
                    reachable=False,
                    version=found,
                    reason=f"answers /api/version ({found}) but fails: {exc.message}",
                )
        return ProviderStatus(name=self.name, reachable=True, version=found)

    def available_models(self) -> list[AvailableModel]:
        listing = self._call("list", lambda client: client.list())
        models = []
        for m in listing.models:
            if not m.model:
                raise self._malformed("list", "a model without its name")
            models.append(
                AvailableModel(
                    name=str(m.model),
                    provider=self.name,
                    size_bytes=int(m.size) if m.size is not None else None,
                    family=m.details.family if m.details else None,
                    parameters=m.details.parameter_size if m.details else None,
                    quantization=m.details.quantization_level if m.details else None,
                )
            )
        return models

    def loaded_models(self) -> list[LoadedModel]:
        running = self._call("ps", lambda client: client.ps())
        models = []
        for m in running.models:
            name = m.model or m.name
            if not name:
                raise self._malformed("ps", "a loaded model without its name")
            if m.size is None:
                # Counting it as 0 bytes would hide its memory from the governor.
                raise self._malformed("ps", f"loaded model {_clip(name, 100)!r} without its size")
            models.append(
                LoadedModel(
                    name=str(name),
                    provider=self.name,
                    total_bytes=int(m.size),
                    gpu_bytes=int(m.size_vram or 0),
                    context_tokens=m.context_length or None,
                    expires_at=m.expires_at.timestamp() if m.expires_at else None,
                )
            )
        return models

    def _malformed(self, action: str, what: str) -> ProviderError:
        return ProviderError(
            f"ollama ({self.host}): answered {action} with {what}",
            hint="check that Ollama, and not another program, listens on that port",
        )

    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        """Load through ``/api/generate`` with an empty prompt; runtime ``options`` become
        Ollama's request options (:func:`ollama_options`)."""
        request = ollama_options(options or {})
        if context_tokens:
            request["num_ctx"] = context_tokens
        self._call(
            "load",
            lambda client: client.generate(
                model=model,
                prompt="",
                options=request or None,
                keep_alive=keep_alive_s,
                stream=False,
            ),
            model=model,
            timeout_s=self.options.load_timeout_s,
            idempotent=False,
        )
        for loaded in self.loaded_models():
            if loaded.name in (model, f"{model}:latest"):
                return loaded
        raise ProviderError(
            f"ollama ({self.host}): loaded {model!r}, but /api/ps does not list it",
            hint="its keep-alive may have expired at once; give a longer --keep-alive",
        )

    def unload(self, model: str) -> None:
        self._call(
            "unload",
            lambda client: client.generate(model=model, prompt="", keep_alive=0, stream=False),
            model=model,
            idempotent=False,
        )

    def model_metadata(self, model: str) -> Mapping[str, Any] | None:
        shown = self._call("show", lambda client: client.show(model), model=model)
        return dict(shown.modelinfo) if shown.modelinfo else None

    def generate(self, model: str, prompt: str, *, max_tokens: int | None = None) -> GenerateResult:
        options = {"num_predict": max_tokens} if max_tokens else None
        answer = self._call(
            "generate",
            lambda client: client.generate(
                model=model, prompt=prompt, options=options, stream=False
            ),
            model=model,
            timeout_s=self.options.load_timeout_s,
            idempotent=False,
        )
        return GenerateResult(
            model=model,
            provider=self.name,
            text=answer.response,
            prompt_tokens=answer.prompt_eval_count,
            completion_tokens=answer.eval_count,
        )


def _refused(exc: BaseException) -> bool:
    """Whether a connection error is a refusal (nothing listens there), through httpx's
    wrapping: an answer, not a hiccup to retry."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "refused" in str(exc).lower()


def _connection_reason(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the connection broke: {exc}"
    return "connection refused"


def _first_line(exc: BaseException) -> str:
    return _clip(str(exc).splitlines()[0], 300) if str(exc) else ""


def _clip(text: str, limit: int) -> str:
    """A runtime's text as memwarden may echo it: a 10 MB version string is not repeated."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more)"


@hookimpl
def register_providers(register: Callable[[Provider], None], config: Config) -> None:
    register(OllamaProvider(config.plugin_options("ollama", OllamaOptions)))
