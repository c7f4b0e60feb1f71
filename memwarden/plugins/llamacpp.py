"""An embedded llama.cpp runtime (``pip install 'memwarden[llamacpp]'``).

Each loaded model runs in its own worker process (:mod:`memwarden.plugins.llamacpp_worker`),
loaded without mmap, so the worker's memory is exactly what the model costs and unloading (the
worker exits) returns all of it to the OS. Models are the GGUF files in ``models_dir`` plus
explicit paths. It is a *fallback* provider: memwarden uses it for a model only when no other
reachable provider offers that model, so the whole loop works on a machine without Ollama or
LM Studio.

Workers belong to the process that loaded them: they exit when it exits (atexit, and each
worker exits when its stdin closes, which also covers a parent killed by a signal).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import platformdirs

from memwarden.core.config import Config, count, seconds
from memwarden.core.errors import ModelNotFound, ProviderError, ProviderUnavailable
from memwarden.core.providers import Provider, ignored_options
from memwarden.core.types import AvailableModel, GenerateResult, LoadedModel, ProviderStatus
from memwarden.estimation.gguf import check_regular
from memwarden.hookspecs import hookimpl

_INSTALL_HINT = "install the extra: pip install 'memwarden[llamacpp]'"


@attrs.frozen
class LlamaCppOptions:
    """``[plugins.llamacpp]``."""

    # Folder of GGUF files; default: the "models" folder in memwarden's user data directory.
    models_dir: str | None = None
    # More GGUF files, anywhere.
    models: tuple[str, ...] = ()
    # Used when a load names no context length.
    default_context_tokens: int = count(2048, minimum=1, maximum=10_000_000)
    # Unload a model idle this long (None: keep it until unloaded).
    keep_alive_s: float | None = seconds(None, optional=True)
    threads: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            [attrs.validators.instance_of(int), attrs.validators.ge(1)]
        ),
    )
    load_timeout_s: float = seconds(300.0, minimum=0.01, maximum=86_400.0)
    generate_timeout_s: float = seconds(300.0, minimum=0.01, maximum=86_400.0)

    def resolved_models_dir(self) -> Path:
        if self.models_dir:
            return Path(self.models_dir).expanduser()
        return platformdirs.user_data_path("memwarden") / "models"


OPTIONS = LlamaCppOptions


def process_memory_bytes(pid: int) -> int:
    """Memory only this process holds (USS) where the OS tells it, else its resident size."""
    import psutil  # only once a worker runs: `memwarden status` needs none

    process = psutil.Process(pid)
    try:
        return int(process.memory_full_info().uss)
    except (psutil.AccessDenied, AttributeError):
        return int(process.memory_info().rss)


class Worker:
    """One model in one process, spoken to by JSON lines."""

    def __init__(self, name: str, path: Path, keep_alive_s: float | None) -> None:
        self.name = name
        self.path = path
        self.keep_alive_s = keep_alive_s
        self.context_tokens: int | None = None
        # The settings it was loaded with, beside llamacpp_worker.RUNTIME_SETTINGS.
        self.settings: dict[str, Any] = {}
        self.metadata: dict[str, str] = {}
        # What llama.cpp allocated for the model, and what the bare worker held before it.
        self.allocated_bytes: int | None = None
        self.baseline_bytes = 0
        self.last_used = time.time()
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "memwarden.plugins.llamacpp_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def busy(self) -> bool:
        return self._lock.locked()

    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        with self._lock:
            try:
                stdin.write(json.dumps(payload) + "\n")
                stdin.flush()
            except (BrokenPipeError, OSError):
                raise self._died() from None
            ready, _, _ = select.select([stdout], [], [], timeout_s)
            if not ready:
                self.stop()
                raise ProviderError(
                    f"llamacpp: {self.name}: no answer to {payload['op']} within {timeout_s:g} s;"
                    " the worker was stopped",
                    hint="raise [plugins.llamacpp] load_timeout_s or generate_timeout_s",
                )
            line = stdout.readline()
            if not line:
                raise self._died()
            self.last_used = time.time()
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ProviderError(
                f"llamacpp: {self.name} ({self.path}): {payload['op']} failed: {answer['error']}",
                hint="check that the file is a GGUF model that this llama.cpp supports",
            )
        return answer

    def stream(self, payload: dict[str, Any], timeout_s: float) -> Iterator[dict[str, Any]]:
        """Send a ``stream`` request and yield each answer line, the final ``done`` one included.
        Closing the iterator early sends ``cancel`` and reads the stream to its end, so that the
        worker is ready for the next request."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        with self._lock:
            try:
                stdin.write(json.dumps({**payload, "op": "stream"}) + "\n")
                stdin.flush()
            except (BrokenPipeError, OSError):
                raise self._died() from None
            done = False
            try:
                while not done:
                    try:
                        answer = self._read(stdout, "stream", timeout_s)
                    except ProviderError:
                        done = True  # an error answer ends the stream; a dead worker too
                        raise
                    done = bool(answer.get("done"))
                    yield answer
            finally:
                if not done and self.alive():
                    with contextlib.suppress(BrokenPipeError, OSError):
                        stdin.write(json.dumps({"op": "cancel"}) + "\n")
                        stdin.flush()
                    with contextlib.suppress(ProviderError):
                        while not self._read(stdout, "stream", timeout_s).get("done"):
                            pass
                self.last_used = time.time()

    def _read(self, stdout: IO[str], op: str, timeout_s: float) -> dict[str, Any]:
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        if not ready:
            self.stop()
            raise ProviderError(
                f"llamacpp: {self.name}: no answer to {op} within {timeout_s:g} s;"
                " the worker was stopped",
                hint="raise [plugins.llamacpp] generate_timeout_s",
            )
        line = stdout.readline()
        if not line:
            raise self._died()
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ProviderError(
                f"llamacpp: {self.name} ({self.path}): {op} failed: {answer['error']}",
                hint="check the request's messages and options",
            )
        return answer

    def _died(self) -> ProviderError:
        code = self.process.wait(timeout=5)
        return ProviderError(
            f"llamacpp: the worker for {self.name} ({self.path}) exited with code {code}",
            hint="it may have run out of memory; `memwarden status` shows what is free",
        )

    def stop(self, grace_s: float = 5.0) -> None:
        """Close stdin (the worker exits by itself), then kill it if it lingers."""
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def as_loaded(self, provider: str) -> LoadedModel:
        resident = process_memory_bytes(self.pid)
        # Counted at its ceiling: the compute buffer is allocated but mostly untouched until a
        # large batch needs it, and the governor must not plan with memory that is spoken for.
        committed = self.baseline_bytes + (self.allocated_bytes or 0)
        return LoadedModel(
            name=self.name,
            provider=provider,
            total_bytes=max(resident, committed),
            resident_bytes=resident,
            context_tokens=self.context_tokens,
            idle_since=self.last_used,
            expires_at=self.last_used + self.keep_alive_s if self.keep_alive_s else None,
            pid=self.pid,
        )


# Runtime options (core.providers.LOAD_OPTION_KEYS) -> the worker's load settings
# (llamacpp_worker.RUNTIME_SETTINGS).
_WORKER_SETTINGS = {
    "batch_tokens": "n_batch",
    "ubatch_tokens": "n_ubatch",
    "flash_attention": "flash_attn",
    "swa_full": "swa_full",
    "parallel": "n_seq_max",
    "mmap": "use_mmap",
}


def worker_settings(
    options: Mapping[str, Any], context_tokens: int | None = None
) -> dict[str, Any]:
    """The worker's load settings for runtime ``options``: ``runtime`` is a profile
    (estimation.profiles, with its rules for ``context_tokens``) whose values the options given
    override. The worker runs on the CPU: ``gpu_layers`` (and with it ``kv_offload``) is
    ignored with a log line."""
    if not options:
        return {}
    from memwarden.estimation.profiles import profile_options

    runtime = options.get("runtime")
    parallel = options.get("parallel")
    profile = profile_options(
        runtime if isinstance(runtime, str) else None,
        context_tokens=context_tokens,
        parallel=int(parallel) if parallel else None,
    )
    merged = {**profile, **options}
    settings = {key: merged[option] for option, key in _WORKER_SETTINGS.items() if option in merged}
    cache = merged.get("kv_type")
    for option, key in (("kv_type_k", "type_k"), ("kv_type_v", "type_v")):
        value = merged.get(option) or cache
        if value:
            settings[key] = str(value).lower()
    # llama.cpp needs flash attention for a quantised V cache; the estimate assumes it too.
    if settings.get("type_v", "f16") not in ("f32", "f16", "bf16"):
        settings["flash_attn"] = True
    honoured = {"runtime", "kv_type", "kv_type_k", "kv_type_v", *_WORKER_SETTINGS}
    if not merged.get("gpu_layers"):
        honoured |= {"gpu_layers", "kv_offload"}
    ignored_options("llamacpp", {k: v for k, v in options.items() if k != "binding"}, honoured)
    return settings


_live_providers: weakref.WeakSet[LlamaCppProvider] = weakref.WeakSet()


@atexit.register
def _stop_all_workers() -> None:
    for provider in list(_live_providers):
        provider.unload_all()


class LlamaCppProvider(Provider):
    name = "llamacpp"
    fallback = True

    def __init__(self, options: LlamaCppOptions | None = None) -> None:
        self.options = options or LlamaCppOptions()
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        _live_providers.add(self)

    def _require_runtime(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ProviderUnavailable(
                "llamacpp: llama-cpp-python is not installed", hint=_INSTALL_HINT
            )

    def _files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        folder = self.options.resolved_models_dir()
        if folder.is_dir():
            for path in sorted(folder.glob("*.gguf")):
                found.setdefault(path.stem, path.resolve())
        for explicit in self.options.models:
            path = Path(explicit).expanduser()
            found.setdefault(path.stem, path.resolve())
        return found

    def _find(self, model: str) -> tuple[str, Path]:
        as_path = Path(model).expanduser()
        if as_path.suffix == ".gguf":
            if not as_path.exists():
                raise ModelNotFound(
                    f"llamacpp: model file {as_path} not found",
                    hint="check the path",
                )
            # A FIFO or device would block the worker's llama.cpp forever in open().
            check_regular(as_path)
            return as_path.stem, as_path.resolve()
        files = self._files()
        if model not in files:
            raise ModelNotFound(
                f"llamacpp: no GGUF file named {model!r} in "
                f"{self.options.resolved_models_dir()} or [plugins.llamacpp] models",
                hint="put the .gguf file in models_dir, list it in [plugins.llamacpp] models, "
                "or give its path",
            )
        check_regular(files[model])
        return model, files[model]

    def _reap(self) -> None:
        """Drop workers that died, and unload those idle past their keep-alive."""
        now = time.time()
        with self._lock:
            for name, worker in list(self._workers.items()):
                # A worker busy answering is not idle, however long the answer takes.
                expired = (
                    worker.keep_alive_s is not None
                    and not worker.busy()
                    and now - worker.last_used > worker.keep_alive_s
                )
                if expired or not worker.alive():
                    del self._workers[name]
                    worker.stop()

    # -- the contract ----------------------------------------------------------------------

    def status(self) -> ProviderStatus:
        try:
            self._require_runtime()
        except ProviderUnavailable as exc:
            reason = f"{exc.message}; {exc.hint}" if exc.hint else exc.message
            return ProviderStatus(name=self.name, reachable=False, reason=reason)
        version = _installed_version("llama_cpp_python")
        return ProviderStatus(name=self.name, reachable=True, version=f"{version} (embedded)")

    def available_models(self) -> list[AvailableModel]:
        self._require_runtime()
        return [
            AvailableModel(
                name=name,
                provider=self.name,
                size_bytes=path.stat().st_size if path.is_file() else None,
                gguf_path=str(path),
            )
            for name, path in self._files().items()
            # A FIFO, device or folder named *.gguf is no model; loading it by name says why.
            if path.is_file() or not path.exists()
        ]

    def loaded_models(self) -> list[LoadedModel]:
        self._reap()
        with self._lock:
            workers = list(self._workers.values())
        if not workers:
            return []
        import psutil

        loaded = []
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                loaded.append(worker.as_loaded(self.name))
        return loaded

    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        """Load ``model`` in a worker of its own, with ``options`` mapped to the worker's
        settings (:func:`worker_settings`); a loaded model asked for with another context or
        other settings is reloaded."""
        self._require_runtime()
        self._reap()
        name, path = self._find(model)
        n_ctx = context_tokens or self.options.default_context_tokens
        settings = worker_settings(options or {}, n_ctx)
        with self._lock:
            current = self._workers.get(name)
        if current is not None:
            if current.context_tokens == n_ctx and current.settings == settings:
                return current.as_loaded(self.name)
            self.unload(name)
        worker = Worker(
            name, path, keep_alive_s if keep_alive_s is not None else self.options.keep_alive_s
        )
        try:
            worker.baseline_bytes = process_memory_bytes(worker.pid)
            request = {"op": "load", "path": str(path), "n_ctx": n_ctx}
            if settings:
                request["settings"] = settings
            answer = worker.request(
                {**request, "n_threads": self.options.threads}, self.options.load_timeout_s
            )
        except BaseException:
            worker.stop()
            raise
        # The worker reports llama.cpp's n_ctx, all sequences together; memwarden's is per one.
        worker.context_tokens = int(answer["n_ctx"]) // int(settings.get("n_seq_max", 1))
        worker.settings = settings
        worker.allocated_bytes = answer.get("allocated_bytes")
        worker.metadata = dict(answer.get("metadata") or {})
        with self._lock:
            self._workers[name] = worker
        return worker.as_loaded(self.name)

    def unload(self, model: str) -> None:
        name = self._find(model)[0] if model.endswith(".gguf") else model
        with self._lock:
            worker = self._workers.pop(name, None)
        if worker is None:
            raise ModelNotFound(
                f"llamacpp: {model!r} is not loaded in this process",
                hint="embedded models live in the memwarden process that loaded them",
            )
        worker.stop()

    def unload_all(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.stop()

    def model_metadata(self, model: str) -> Mapping[str, Any] | None:
        """The GGUF header of a loaded model, as llama.cpp read it (values are strings)."""
        with self._lock:
            worker = self._workers.get(model)
        return dict(worker.metadata) if worker is not None else None

    def generate(self, model: str, prompt: str, *, max_tokens: int | None = None) -> GenerateResult:
        name = self._find(model)[0]
        with self._lock:
            worker = self._workers.get(name)
        if worker is None or not worker.alive():
            self.load(model)
            with self._lock:
                worker = self._workers[name]
        answer = worker.request(
            {"op": "generate", "prompt": prompt, "max_tokens": max_tokens},
            self.options.generate_timeout_s,
        )
        return GenerateResult(
            model=name,
            provider=self.name,
            text=answer["text"],
            prompt_tokens=answer.get("prompt_tokens"),
            completion_tokens=answer.get("completion_tokens"),
        )

    def stream(self, model: str, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Stream a completion from a loaded (or loadable) model: ``request`` has ``prompt``
        or ``messages`` (rendered with the GGUF's chat template) and the sampling options
        ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed`` and ``stop``. Yields
        ``{"piece": text}`` answers, then ``{"done": True, "finish_reason", "prompt_tokens",
        "completion_tokens"}``. ``memwarden serve`` streams embedded models with it."""
        name = self._find(model)[0]
        with self._lock:
            worker = self._workers.get(name)
        if worker is None or not worker.alive():
            self.load(model)
            with self._lock:
                worker = self._workers[name]
        keys = ("prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop")
        payload = {k: request[k] for k in keys if request.get(k) is not None}
        return worker.stream(payload, self.options.generate_timeout_s)


@functools.cache
def _installed_version(dist: str) -> str:
    """A distribution's version from its ``NAME-VERSION.dist-info`` folder name on sys.path:
    importlib.metadata (and the email parser it imports) would cost `memwarden status` more
    than everything else it does for the embedded runtime."""
    prefix = f"{dist.lower()}-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.lower().startswith(prefix) and name.endswith(".dist-info"):
                return name[len(prefix) : -len(".dist-info")]
    import importlib.metadata

    return importlib.metadata.version(dist)


@hookimpl
def register_providers(register: Callable[[Provider], None], config: Config) -> None:
    register(LlamaCppProvider(config.plugin_options("llamacpp", LlamaCppOptions)))
