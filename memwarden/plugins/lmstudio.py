"""LM Studio, through the official ``lmstudio`` SDK.

Lists downloaded and loaded models, loads a new instance with a context length and a TTL, and
unloads instances by their identifier (or every instance of a model key). LM Studio reports a
loaded instance's file size, not its resident memory, so ``total_bytes`` is the file size.

The SDK's synchronous client waits up to a minute for a silent server; each operation here runs
in its own thread under ``timeout_s`` (``load_timeout_s`` for loads), and a late one has its
client closed so its threads end.

The SDK is the costliest import memwarden has (a third of a second): it is imported only once a
connect to the server succeeds, so a machine without LM Studio never pays for it
(core/netprobe.py). A refused connection is an answer: LM Studio is not running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from memwarden.core import netprobe
from memwarden.core.config import Config, seconds
from memwarden.core.errors import (
    MemwardenError,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
)
from memwarden.core.providers import Provider, ignored_options
from memwarden.core.types import AvailableModel, GenerateResult, LoadedModel, ProviderStatus
from memwarden.hookspecs import hookimpl

if TYPE_CHECKING:
    import lmstudio

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1:1234"
_START_HINT = (
    "start LM Studio and its API server (Developer tab, or `lms server start`), or set "
    "[plugins.lmstudio] host"
)


@attrs.frozen
class LMStudioOptions:
    """``[plugins.lmstudio]``."""

    # host:port of LM Studio's API server, without a scheme.
    host: str = attrs.field(default=DEFAULT_HOST)
    # The core gives every status and listing call a total deadline of its own (2 s) on top.
    timeout_s: float = seconds(5.0, minimum=0.01, maximum=3600.0)
    load_timeout_s: float = seconds(600.0, minimum=0.01, maximum=86_400.0)

    @host.validator
    def _host_has_a_port(self, attribute: attrs.Attribute[str], host: object) -> None:
        if not isinstance(host, str):
            raise TypeError(f"'{attribute.name}' must be a string such as 127.0.0.1:1234: {host!r}")
        bare = host.removeprefix("http://").removeprefix("ws://").rstrip("/")
        _, _, port = bare.rpartition(":")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"'{attribute.name}' must be host:port with a port from 1 to 65535 "
                f"(127.0.0.1:1234): {host[:200]!r}"
            )


OPTIONS = LMStudioOptions


# Runtime options (core.providers.LOAD_OPTION_KEYS) -> LM Studio's load config
# (lmstudio SDK LlmLoadModelConfig: evalBatchSize, flashAttention, llama[KV]CacheQuantizationType,
# tryMmap, offloadKVCacheToGpu). It has no micro-batch, SWA or parallel setting, and offloads a
# fraction of the layers (gpu.ratio), not a count.
_LMSTUDIO_CONFIG = {
    "batch_tokens": "evalBatchSize",
    "flash_attention": "flashAttention",
    "mmap": "tryMmap",
    "kv_offload": "offloadKVCacheToGpu",
}
# Cache types LM Studio accepts (LlmLlamaCacheQuantizationType).
_LMSTUDIO_CACHE_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def lmstudio_load_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """LM Studio's load config for runtime ``options``; those it cannot honour are named in a
    log line. ``runtime = "lmstudio"`` is honoured, another runtime's is not."""
    config = {key: options[option] for option, key in _LMSTUDIO_CONFIG.items() if option in options}
    honoured = {*_LMSTUDIO_CONFIG, *(["runtime"] if options.get("runtime") == "lmstudio" else [])}
    for option, key in (
        ("kv_type_k", "llamaKCacheQuantizationType"),
        ("kv_type_v", "llamaVCacheQuantizationType"),
    ):
        cache = str(options.get(option) or options.get("kv_type") or "").lower()
        if cache in _LMSTUDIO_CACHE_TYPES:
            config[key] = cache
            honoured |= {option, "kv_type"} if options.get(option) is None else {option}
    ignored_options("lmstudio", options, honoured)
    return config


class LMStudioProvider(Provider):
    name = "lmstudio"

    def __init__(self, options: LMStudioOptions | None = None) -> None:
        self.options = options or LMStudioOptions()
        self.host = self.options.host.removeprefix("http://").removeprefix("ws://").rstrip("/")
        # One SDK client, kept while it works: each new client starts a websocket thread and
        # probes the server (tens of milliseconds of CPU), and the monitor asks LM Studio what
        # it has loaded every few seconds, every sample under pressure.
        self._client: lmstudio.Client | None = None
        self._client_lock = threading.Lock()

    def _connected_client(self) -> lmstudio.Client:
        with self._client_lock:
            if self._client is None:
                down = netprobe.unreachable(*netprobe.host_port(self.host, 1234))
                if down is not None:
                    raise ProviderUnavailable(
                        f"lmstudio ({self.host}): not reachable ({down})", hint=_START_HINT
                    )
                import lmstudio

                client = lmstudio.Client(self.host)
                try:
                    client.__enter__()  # probes the server; closed below if it fails
                except BaseException:
                    client.close()
                    raise
                self._client = client
            return self._client

    def _discard(self, client: lmstudio.Client) -> None:
        """Close a client that failed or hung: the next call starts afresh."""
        with self._client_lock:
            if self._client is client:
                self._client = None
        client.close()

    def _call(
        self,
        action: str,
        call: Callable[[lmstudio.Client], T],
        *,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> T:
        """Run one SDK operation under a deadline, mapping its errors."""
        timeout_s = timeout_s if timeout_s is not None else self.options.timeout_s
        outcome: dict[str, Any] = {}
        client_box: list[lmstudio.Client] = []

        def run() -> None:
            try:
                client = self._connected_client()
            except BaseException as exc:
                outcome["error"] = exc
                return
            client_box.append(client)
            try:
                outcome["result"] = call(client)
            except BaseException as exc:
                import lmstudio

                outcome["error"] = exc
                if not isinstance(exc, lmstudio.LMStudioModelNotFoundError | MemwardenError):
                    self._discard(client)

        thread = threading.Thread(target=run, name=f"lmstudio-{action}", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            for client in client_box:
                self._discard(client)
            raise ProviderUnavailable(
                f"lmstudio ({self.host}): no answer to {action} within {timeout_s:g} s",
                hint="LM Studio is busy or hung; raise [plugins.lmstudio] timeout_s if it is "
                "only slow",
            )
        if "error" in outcome:
            raise self._map_error(action, model, outcome["error"]) from None
        return outcome["result"]

    def _map_error(self, action: str, model: str | None, exc: BaseException) -> MemwardenError:
        where = f"lmstudio ({self.host})"
        # The server's text is untrusted: never echo megabytes of it.
        text = str(exc) if len(str(exc)) <= 300 else f"{str(exc)[:300]}..."
        if isinstance(exc, MemwardenError):
            return exc
        import httpx
        import lmstudio
        import msgspec

        if isinstance(exc, lmstudio.LMStudioModelNotFoundError):
            return ModelNotFound(
                f"{where}: model {model!r} not found",
                hint="`lms get MODEL` downloads it; `memwarden models` lists what is there",
            )
        if isinstance(exc, lmstudio.LMStudioServerError):
            return ProviderError(
                f"{where}: {action} failed: {text}",
                hint="the message above is LM Studio's own; `memwarden status` shows free memory",
            )
        if isinstance(
            exc, msgspec.ValidationError | ValueError | KeyError | TypeError | AttributeError
        ) or (isinstance(exc, lmstudio.LMStudioClientError) and "unexpected" in str(exc)):
            return ProviderError(
                f"{where}: answered {action} with malformed data ({type(exc).__name__}: {text})",
                hint="check that LM Studio, and not another program, listens on that port",
            )
        if isinstance(
            exc,
            lmstudio.LMStudioClientError
            | lmstudio.LMStudioWebsocketError
            | lmstudio.LMStudioTimeoutError
            | httpx.HTTPError
            | OSError,
        ):
            return ProviderUnavailable(f"{where}: not reachable ({text})", hint=_START_HINT)
        return ProviderError(f"{where}: {action} failed: {type(exc).__name__}: {text}")

    # -- the contract ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the SDK client, so that a call still waiting on a hung server ends."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def status(self) -> ProviderStatus:
        """Reachable only when LM Studio answers *and* lists its loaded and downloaded models:
        one that connects but fails to list is failing, not reachable with no models."""
        try:
            self._call("greeting", lambda client: None)
        except MemwardenError as exc:
            return ProviderStatus(name=self.name, reachable=False, reason=exc.message)
        for listing in (self.loaded_models, self.available_models):
            try:
                listing()
            except MemwardenError as exc:
                return ProviderStatus(
                    name=self.name, reachable=False, reason=f"connects but fails: {exc.message}"
                )
        return ProviderStatus(name=self.name, reachable=True)

    def available_models(self) -> list[AvailableModel]:
        downloaded = self._call("list downloaded models", lambda c: c.list_downloaded_models())
        return [
            AvailableModel(
                name=m.model_key,
                provider=self.name,
                size_bytes=m.info.size_bytes,
                family=m.info.architecture,
                parameters=m.info.params_string,
                max_context_tokens=getattr(m.info, "max_context_length", None),
                # LM Studio reports a path inside its own models folder, not a usable file path.
                gguf_path=None,
            )
            for m in downloaded
        ]

    def _instances(self, client: lmstudio.Client) -> list[tuple[Any, LoadedModel]]:
        """Every loaded instance, LLM or embedding model, with the session that unloads it."""
        found = []
        for session in (client.llm, client.embedding):
            for handle in session.list_loaded():
                info = handle.get_info()
                loaded = LoadedModel(
                    name=info.model_key,
                    provider=self.name,
                    total_bytes=info.size_bytes,
                    context_tokens=getattr(info, "context_length", None),
                    instance_id=info.identifier,
                )
                found.append((session, loaded))
        return found

    def _loaded(self, client: lmstudio.Client) -> list[LoadedModel]:
        return [loaded for _, loaded in self._instances(client)]

    def loaded_models(self) -> list[LoadedModel]:
        return self._call("list loaded models", self._loaded)

    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        """Load a new instance; runtime ``options`` become its load config
        (:func:`lmstudio_load_config`)."""
        arguments: dict[str, Any] = {}
        config = lmstudio_load_config(options or {})
        if context_tokens:
            config["contextLength"] = context_tokens
        if config:
            arguments["config"] = config
        if keep_alive_s is not None:
            # LM Studio's TTL is whole seconds; a negative keep-alive means "forever".
            arguments["ttl"] = None if keep_alive_s < 0 else max(1, round(keep_alive_s))

        def load(client: lmstudio.Client) -> LoadedModel:
            handle = client.llm.load_new_instance(model, **arguments)
            info = handle.get_info()
            return LoadedModel(
                name=info.model_key,
                provider=self.name,
                total_bytes=info.size_bytes,
                context_tokens=info.context_length,
                instance_id=info.identifier,
            )

        return self._call("load", load, model=model, timeout_s=self.options.load_timeout_s)

    def unload(self, model: str) -> None:
        """Unload every instance of this model key, or the instance with this identifier."""

        def unload(client: lmstudio.Client) -> None:
            instances = self._instances(client)
            # A model key names all its instances; LM Studio's first instance of a model also
            # takes the key as its identifier, so the key is matched first.
            targets = [(s, m) for s, m in instances if m.name == model] or [
                (s, m) for s, m in instances if m.instance_id == model
            ]
            if not targets:
                raise ModelNotFound(
                    f"lmstudio ({self.host}): no loaded instance of {model!r}",
                    hint="`memwarden models` lists the loaded instances and their identifiers",
                )
            for session, target in targets:
                session.unload(str(target.instance_id))

        self._call("unload", unload, model=model)

    def generate(self, model: str, prompt: str, *, max_tokens: int | None = None) -> GenerateResult:
        """A completion by the loaded instance of ``model`` (LM Studio loads it if needed)."""
        config = {"maxTokens": max_tokens} if max_tokens else None

        def complete(client: lmstudio.Client) -> GenerateResult:
            result = client.llm.model(model).complete(prompt, config=config)
            return GenerateResult(
                model=model,
                provider=self.name,
                text=result.content,
                prompt_tokens=result.stats.prompt_tokens_count,
                completion_tokens=result.stats.predicted_tokens_count,
            )

        return self._call("generate", complete, model=model, timeout_s=self.options.load_timeout_s)


@hookimpl
def register_providers(register: Callable[[Provider], None], config: Config) -> None:
    register(LMStudioProvider(config.plugin_options("lmstudio", LMStudioOptions)))
