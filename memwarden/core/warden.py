"""The warden: configuration plus plugins, and the few operations everything else builds on."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import attrs

from memwarden.core import pressure
from memwarden.core.config import Config, load_config
from memwarden.core.errors import (
    EstimateUnavailable,
    MemwardenError,
    ModelBusy,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
)
from memwarden.core.plugins import Plugins
from memwarden.core.providers import Provider, same_model
from memwarden.core.serialize import record_type
from memwarden.core.types import (
    AvailableModel,
    Confidence,
    DeviceSnapshot,
    DeviceUnavailable,
    Event,
    GenerateResult,
    LoadedModel,
    MemoryEstimate,
    MemoryPool,
    ModelRef,
    PluginFailure,
    PoolKind,
    PressureLevel,
    PressureReading,
    ProviderStatus,
    UsageRecord,
)
from memwarden.core.usage import UsageTracker

log = logging.getLogger("memwarden")


# A provider that has not answered by then is reported unreachable; the others are not held up.
PROVIDER_TIMEOUT_S = 5.0
# A provider found unreachable is asked again only after this long.
PROVIDER_RETRY_AFTER_S = 10.0


def _own_pools(pools: list[MemoryPool]) -> list[MemoryPool]:
    """The pools the core governs. A unified pool (Apple Silicon) is the machine's RAM, so a
    system pool beside it counts the same bytes twice and is dropped; where no plugin reports a
    unified pool, the system pool stands alone."""
    if any(p.kind is PoolKind.UNIFIED for p in pools):
        return [p for p in pools if p.kind is not PoolKind.SYSTEM]
    return pools


class Warden:
    """One configured memwarden.

    ``Warden.from_config()`` in programs; ``Warden(config, plugins)`` in tests. ``clock`` is
    the monotonic clock behind the providers' retry window; tests pass a
    :class:`memwarden.testing.fakes.ManualClock` so that no test waits for real time.
    """

    def __init__(
        self,
        config: Config,
        plugins: Plugins | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.plugins = plugins if plugins is not None else Plugins(config)
        self.plugins.failure_listeners.append(self._on_plugin_failure)
        self._providers: dict[str, Provider] | None = None
        # Provider name -> (monotonic time before which it is not asked again, why it is down).
        self._down_until: dict[str, tuple[float, str]] = {}
        self.usage = UsageTracker(on_record=self._on_usage)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Warden:
        return cls(load_config(path))

    @property
    def hook(self) -> Any:
        return self.plugins.hook

    # -- devices and pressure --------------------------------------------------------------

    def snapshot(self) -> DeviceSnapshot:
        pools: list[MemoryPool] = []
        unavailable: list[DeviceUnavailable] = []
        for result in self.hook.detect_device(config=self.config):
            if isinstance(result, DeviceUnavailable):
                unavailable.append(result)
            else:
                pools.extend(result)
        return DeviceSnapshot(pools=tuple(_own_pools(pools)), unavailable=tuple(unavailable))

    def pressure(
        self,
        snapshot: DeviceSnapshot | None = None,
        *,
        managed_bytes: int | None = None,
        previous: dict[str, PressureLevel] | None = None,
    ) -> PressureReading:
        snapshot = snapshot if snapshot is not None else self.snapshot()
        if managed_bytes is None:
            managed_bytes = sum(m.total_bytes for m in self.loaded_models())
        return pressure.evaluate(
            snapshot, self.config.pressure, managed_bytes=managed_bytes, previous=previous
        )

    # -- estimates -------------------------------------------------------------------------

    def estimate(self, model: ModelRef, context_tokens: int, **options: Any) -> MemoryEstimate:
        result = self.hook.estimate_model_size(
            model=model, context_tokens=context_tokens, options=options, config=self.config
        )
        if (result is None or result.confidence is Confidence.LOW) and model.provider:
            # The name alone was not enough for a precise answer: ask the model's provider where
            # its file is and how it describes the model's shape, and try again.
            enriched = self._ask_provider_about(model, options)
            if enriched is not None:
                better = self.hook.estimate_model_size(
                    model=enriched[0],
                    context_tokens=context_tokens,
                    options=enriched[1],
                    config=self.config,
                )
                result = better if better is not None else result
        if result is None:
            raise EstimateUnavailable(
                f"no estimator could size {model.name!r}",
                hint="give the path of its GGUF file, or make its provider reachable",
            )
        return result

    def _ask_provider_about(
        self, model: ModelRef, options: dict[str, Any]
    ) -> tuple[ModelRef, dict[str, Any]] | None:
        provider = self.providers().get(model.provider or "")
        if provider is None:
            return None
        try:
            path = model.path or next(
                (
                    m.gguf_path
                    for m in provider.available_models()
                    if m.gguf_path and same_model(m.name, model.name)
                ),
                None,
            )
            metadata = options.get("metadata") or provider.model_metadata(model.name)
        except MemwardenError as exc:
            log.info("provider %s cannot describe %s: %s", provider.name, model.name, exc)
            return None
        if path is None and not metadata:
            return None
        enriched_options = dict(options, metadata=metadata) if metadata else options
        return attrs.evolve(model, path=path), enriched_options

    # -- providers -------------------------------------------------------------------------

    def providers(self) -> dict[str, Provider]:
        if self._providers is None:
            found: dict[str, Provider] = {}

            def register(provider: Provider) -> None:
                if provider.name in found:
                    raise ProviderError(f"two providers are named {provider.name!r}")
                found[provider.name] = provider

            self.hook.register_providers(register=register, config=self.config)
            self._providers = found
        return self._providers

    def _each_provider(self, call: str, *args: Any) -> list[tuple[Provider, Any]]:
        """Call a method on every provider at once; a slow or failing one yields an exception.

        A provider found unreachable is not asked again for ``PROVIDER_RETRY_AFTER_S``: the
        monitor samples every second, and probing a runtime that is not running (LM Studio's
        SDK opens a websocket client per probe) would cost the idle governor real CPU.
        """
        providers = list(self.providers().values())
        if not providers:
            return []
        now = self.clock()
        asked = [p for p in providers if self._down_until.get(p.name, (0.0, ""))[0] <= now]
        answers: dict[str, Any] = {}
        if asked:
            pool = ThreadPoolExecutor(max_workers=len(asked), thread_name_prefix="provider")
            futures = [(p, pool.submit(getattr(p, call), *args)) for p in asked]
            for provider, future in futures:
                try:
                    answers[provider.name] = future.result(timeout=PROVIDER_TIMEOUT_S)
                except FutureTimeout:
                    answers[provider.name] = ProviderUnavailable(
                        f"{provider.name}: no answer within {PROVIDER_TIMEOUT_S:g} s"
                    )
                except Exception as exc:
                    answers[provider.name] = exc
                self._note_health(provider.name, answers[provider.name])
            pool.shutdown(wait=False, cancel_futures=True)
        results: list[tuple[Provider, Any]] = []
        for provider in providers:
            if provider.name in answers:
                results.append((provider, answers[provider.name]))
                continue
            reason = self._down_until[provider.name][1]
            if call == "status":
                results.append(
                    (provider, ProviderStatus(name=provider.name, reachable=False, reason=reason))
                )
            else:
                results.append((provider, ProviderUnavailable(f"{provider.name}: {reason}")))
        return results

    def _note_health(self, name: str, answer: Any) -> None:
        if isinstance(answer, ProviderStatus) and not answer.reachable:
            reason = answer.reason or "unreachable"
        elif isinstance(answer, ProviderUnavailable):
            reason = answer.message
        else:
            self._down_until.pop(name, None)
            return
        self._down_until[name] = (self.clock() + PROVIDER_RETRY_AFTER_S, reason)

    def provider_statuses(self) -> list[ProviderStatus]:
        statuses = []
        for provider, result in self._each_provider("status"):
            if isinstance(result, BaseException):
                reason = result.message if isinstance(result, MemwardenError) else str(result)
                result = ProviderStatus(name=provider.name, reachable=False, reason=reason)
            statuses.append(result)
        return statuses

    def loaded_models(self) -> list[LoadedModel]:
        loaded: list[LoadedModel] = []
        for provider, result in self._each_provider("loaded_models"):
            if isinstance(result, BaseException):
                log.info("provider %s: cannot list loaded models: %s", provider.name, result)
                continue
            for model in result:
                in_flight = self.usage.in_flight(model.name, provider.name)
                if in_flight > model.requests_in_flight:
                    model = attrs.evolve(model, requests_in_flight=in_flight)
                loaded.append(model)
        return loaded

    def available_models(self) -> list[AvailableModel]:
        available: list[AvailableModel] = []
        for provider, result in self._each_provider("available_models"):
            if isinstance(result, BaseException):
                log.info("provider %s: cannot list models: %s", provider.name, result)
                continue
            available.extend(result)
        return available

    def provider(self, name: str) -> Provider:
        providers = self.providers()
        if name not in providers:
            raise ProviderError(
                f"no provider is named {name!r}",
                hint=f"registered providers: {', '.join(sorted(providers)) or 'none'}",
            )
        return providers[name]

    def resolve(self, model: str, provider: str | None = None) -> Provider:
        """The provider that serves ``model``: the one named, else the first reachable one
        that offers it, fallback runtimes (the embedded llama.cpp) last."""
        if provider is not None:
            return self.provider(provider)
        offering = [
            p
            for p, models in self._each_provider("available_models")
            if not isinstance(models, BaseException)
            and any(same_model(m.name, model) or m.gguf_path == model for m in models)
        ]
        offering.sort(key=lambda p: p.fallback)
        if not offering:
            raise ModelNotFound(
                f"no reachable provider offers model {model!r}",
                hint="`memwarden models` lists what each provider offers; name one with --provider",
            )
        return offering[0]

    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        provider: str | None = None,
    ) -> LoadedModel:
        chosen = self.resolve(model, provider)
        return chosen.load(model, context_tokens=context_tokens, keep_alive_s=keep_alive_s)

    def unload(
        self, model: str, *, provider: str | None = None, emergency: bool = False
    ) -> list[LoadedModel]:
        """Unload every loaded instance of ``model``; a model serving requests made through
        memwarden is left alone unless ``emergency``. Returns what was unloaded."""
        matches = [
            m
            for m in self.loaded_models()
            if (provider is None or m.provider == provider)
            and (same_model(m.name, model) or m.instance_id == model)
        ]
        if not matches:
            raise ModelNotFound(
                f"model {model!r} is not loaded"
                + (f" in provider {provider!r}" if provider else ""),
                hint="`memwarden models` lists the loaded models",
            )
        busy = [m for m in matches if m.requests_in_flight > 0]
        if busy and not emergency:
            raise ModelBusy(
                f"model {model!r} is serving {sum(m.requests_in_flight for m in busy)} "
                "request(s) made through memwarden",
                hint="wait for them to finish; only an emergency unloads a busy model",
            )
        for loaded in matches:
            self.provider(loaded.provider).unload(loaded.instance_id or loaded.name)
        return matches

    def in_flight(self, model: str, provider: str | None = None) -> int:
        """Requests made through memwarden that ``model`` is serving now."""
        return self.usage.in_flight(model, provider)

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        provider: str | None = None,
        max_tokens: int | None = None,
    ) -> GenerateResult:
        """Send a prompt to a model through its provider, counting the call."""
        chosen = self.resolve(model, provider)
        with self.usage.track(chosen.name, model) as call:
            call.result = chosen.generate(model, prompt, max_tokens=max_tokens)
        return call.result

    def _on_usage(self, record: UsageRecord) -> None:
        self.persist("usage", record)

    # -- events and state ------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        log.info("%s: %s", event.kind, event.message)
        self.hook.on_event(event=event, warden=self)
        self.persist("event", event)

    def persist(self, kind: str, record: Any) -> None:
        if self.config.state.enabled:
            self.hook.persist_state(kind=kind, record=record, config=self.config)

    def read_state(self, kind: str, *, since: float | None = None, limit: int = 100) -> list[Any]:
        """The newest ``limit`` records of ``kind`` (one of ``hookspecs.PERSISTED_KINDS``) that
        happened at or after ``since``, oldest first; empty when state is off or no persistence
        plugin can read. The way into memwarden's history for reports and plugins."""
        record_type(kind)
        if not self.config.state.enabled:
            return []
        records = self.hook.read_state(kind=kind, since=since, limit=limit, config=self.config)
        return list(records or ())

    @property
    def plugin_failures(self) -> Sequence[PluginFailure]:
        return list(self.plugins.failures.values())

    def _on_plugin_failure(self, failure: PluginFailure) -> None:
        # Once per plugin and hook: a plugin failing on every sample must not flood the event
        # log, and an on_event or persist_state plugin that fails while this very event is
        # emitted fails a second time, which is not emitted again.
        log.debug("recorded plugin failure %s", failure)
        if failure.hook is None or failure.count > 1:
            return
        self.emit(
            Event(
                kind="plugin-failed",
                message=f"plugin {failure.plugin!r} failed in {failure.hook}: {failure.error}",
                data={
                    "plugin": failure.plugin,
                    "hook": failure.hook,
                    "error": failure.error,
                    "distribution": failure.distribution,
                },
            )
        )
