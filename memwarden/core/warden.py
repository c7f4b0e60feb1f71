"""The warden: configuration plus plugins, and the few operations everything else builds on."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from memwarden.core import pressure
from memwarden.core.calls import Calls
from memwarden.core.config import Config, load_config
from memwarden.core.errors import (
    EstimateUnavailable,
    MemwardenError,
    ModelBusy,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
)
from memwarden.core.plugins import HookAnswer, PluginContractError, Plugins
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
from memwarden.estimation.model_files import looks_like_path

if TYPE_CHECKING:
    from memwarden.core.governor import Governor

log = logging.getLogger("memwarden")


# A provider that has not answered by then is reported unreachable; the others are not held up.
# A total deadline, whatever the provider's own (per-read) timeouts: `memwarden status` must
# finish within 5 s whatever a runtime does.
PROVIDER_TIMEOUT_S = 2.0
# The same for every device plugin's detect_device on each snapshot.
DEVICE_TIMEOUT_S = 2.0
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
        # Provider calls in progress, at most one per provider and method (core/calls.py).
        self._calls = Calls()
        self.usage = UsageTracker(on_record=self._on_usage)
        self._governor: Governor | None = None
        self._providers_lock = threading.Lock()

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Warden:
        return cls(load_config(path))

    @property
    def hook(self) -> Any:
        return self.plugins.hook

    # -- devices and pressure --------------------------------------------------------------

    def snapshot(self) -> DeviceSnapshot:
        """Every device plugin's pools, each plugin under a deadline and checked: a plugin that
        blocks, returns the wrong type or reports a pool id another plugin already reported is
        recorded as failed (by name) and left out; everything else is measured as usual."""
        pools: list[MemoryPool] = []
        unavailable: list[DeviceUnavailable] = []
        owners: dict[str, str] = {}
        for answer in self.plugins.call_each(
            "detect_device", deadline_s=DEVICE_TIMEOUT_S, kwargs={"config": self.config}
        ):
            if answer.missed is not None:
                unavailable.append(DeviceUnavailable(source=answer.plugin, reason=answer.missed))
                continue
            result = answer.result
            if result is None:
                continue
            if isinstance(result, DeviceUnavailable):
                unavailable.append(result)
                continue
            if not isinstance(result, list | tuple) or not all(
                isinstance(p, MemoryPool) for p in result
            ):
                self._contract_broken(
                    answer,
                    "detect_device",
                    f"returned {_kind_of(result)}; expected a list of MemoryPool, a "
                    "DeviceUnavailable or None",
                )
                continue
            for pool in result:
                owner = owners.setdefault(pool.id, answer.plugin)
                if owner != answer.plugin:
                    self._contract_broken(
                        answer,
                        "detect_device",
                        f"reported pool id {pool.id!r}, which plugin {owner!r} already "
                        "reports; the first one is kept",
                    )
                    continue
                pools.append(pool)
        return DeviceSnapshot(pools=tuple(_own_pools(pools)), unavailable=tuple(unavailable))

    def _contract_broken(self, answer: HookAnswer, hook: str, what: str) -> None:
        self.plugins.record_failure(answer.plugin, hook, PluginContractError(what))

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
        """The memory ``model`` takes at ``context_tokens``: the first estimator's answer.

        An estimator that crashed (a bug, MemoryError, RecursionError) is isolated by the
        plugin manager; when no other estimator answered, the error says which plugin failed
        and how, instead of suggesting that the model could not be found.
        """
        failures_before = {
            key: failure.count
            for key, failure in self.plugins.failures.items()
            if key[1] == "estimate_model_size"
        }
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
        failed = [
            failure
            for key, failure in self.plugins.failures.items()
            if key[1] == "estimate_model_size" and failure.count > failures_before.get(key, 0)
        ]
        if result is None and failed:
            first = failed[0]
            raise EstimateUnavailable(
                f"estimator {first.plugin!r} failed while sizing {model.name!r}: "
                f"{first.error[:200]}",
                hint=f"this is a bug in the plugin {first.plugin!r}: report it with the model "
                "file; `memwarden plugins` shows its state",
            )
        if result is None:
            raise EstimateUnavailable(
                f"no estimator could size {model.name!r}",
                hint="give the path of its GGUF file, or make its provider reachable",
            )
        if failed:
            notes = tuple(f"{f.plugin} failed: {f.error[:200]}" for f in failed)
            result = attrs.evolve(result, notes=(*result.notes, *notes))
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
                    for m in self._call_provider(provider, "available_models")
                    if m.gguf_path and same_model(m.name, model.name)
                ),
                None,
            )
            metadata = options.get("metadata") or self._call_provider(
                provider, "model_metadata", model.name
            )
        except MemwardenError as exc:
            log.info("provider %s cannot describe %s: %s", provider.name, model.name, exc)
            return None
        if path is None and not metadata:
            return None
        enriched_options = dict(options, metadata=metadata) if metadata else options
        return attrs.evolve(model, path=path), enriched_options

    # -- providers -------------------------------------------------------------------------

    def providers(self) -> dict[str, Provider]:
        """Every registered runtime by name. A plugin that registers a name already taken, or
        something that is not a :class:`Provider`, is recorded as failed and that registration
        refused; the first registration of a name (in plugin registration order) is kept."""
        if self._providers is None:
            # Registration runs once: concurrent first callers (the front door's first requests)
            # wait for it instead of racing it and registering nothing.
            with self._providers_lock:
                if self._providers is None:
                    self._providers = self._register_providers()
        return self._providers

    def _register_providers(self) -> dict[str, Provider]:
        registered: dict[str, list[Any]] = {}

        def registrar(plugin: str) -> dict[str, Any]:
            mine = registered.setdefault(plugin, [])
            return {"register": mine.append, "config": self.config}

        answers = self.plugins.call_each(
            "register_providers", deadline_s=PROVIDER_TIMEOUT_S, kwargs_for=registrar
        )
        found: dict[str, Provider] = {}
        owners: dict[str, str] = {}
        for answer in answers:
            # A plugin that missed its deadline may still be registering: take nothing.
            offered = registered.get(answer.plugin, []) if answer.missed is None else []
            for provider in list(offered):
                if not isinstance(provider, Provider):
                    self._contract_broken(
                        answer,
                        "register_providers",
                        f"registered {_kind_of(provider)}, not a memwarden Provider",
                    )
                elif provider.name in found:
                    self._contract_broken(
                        answer,
                        "register_providers",
                        f"registered a provider named {provider.name!r}, a name plugin "
                        f"{owners[provider.name]!r} already registered; this one is refused",
                    )
                else:
                    found[provider.name] = provider
                    owners[provider.name] = answer.plugin
        return found

    def _each_provider(self, call: str, *args: Any) -> list[tuple[Provider, Any]]:
        """Call a method on every provider at once; a slow or failing one yields an exception.

        Each call runs under a total deadline (``PROVIDER_TIMEOUT_S``) on a daemon thread, at
        most one per provider and method: a runtime that dribbles its answer or hangs is
        reported unreachable after the deadline, its client is closed, and the call still
        running is awaited by the next caller instead of a new one being started.

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
        started = [
            (
                p,
                *self._calls.start(
                    (p.name, call, args), f"{p.name}.{call}", getattr(p, call), *args
                ),
            )
            for p in asked
        ]
        for provider, pending, fresh in started:
            deadline_s = PROVIDER_TIMEOUT_S
            pending.wait(pending.started_at + deadline_s - self._calls.clock())
            if pending.done:
                answers[provider.name] = (
                    pending.error if pending.error is not None else pending.result
                )
            else:
                answers[provider.name] = ProviderUnavailable(
                    f"{provider.name}: no answer within {deadline_s:g} s (to {call})"
                    + ("" if fresh else " (still busy with an earlier call)"),
                    hint="the runtime is hung or overloaded; memwarden asks again later",
                )
                if not pending.abandoned:
                    pending.abandoned = True
                    self._close_late(provider)
            self._note_health(provider.name, answers[provider.name])
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

    def _call_provider(self, provider: Provider, call: str, *args: Any) -> Any:
        """One provider method under the same total deadline as ``_each_provider``."""
        pending = self._calls.call(
            (provider.name, call, args),
            f"{provider.name}.{call}",
            PROVIDER_TIMEOUT_S,
            getattr(provider, call),
            *args,
        )
        if not pending.done:
            self._close_late(provider)
            raise ProviderUnavailable(
                f"{provider.name}: no answer within {PROVIDER_TIMEOUT_S:g} s (to {call})",
                hint="the runtime is hung or overloaded; memwarden asks again later",
            )
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _close_late(self, provider: Provider) -> None:
        """Close the connections of a provider whose call missed its deadline, so the call still
        reading from it ends, on a thread of its own: closing may block too."""
        self._calls.start(
            (provider.name, "close"), f"{provider.name}.close", _close_quietly, provider
        )

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
        loaded = chosen.load(model, context_tokens=context_tokens, keep_alive_s=keep_alive_s)
        if self._governor is not None:
            self._governor.models_changed(loaded=[loaded])
        return loaded

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
        if self._governor is not None:
            self._governor.models_changed(unloaded=matches)
        return matches

    def in_flight(self, model: str, provider: str | None = None) -> int:
        """Requests made through memwarden that ``model`` is serving now."""
        return self.usage.in_flight(model, provider)

    def model_ref(
        self, model: str, provider: str | None = None, *, need_provider: bool = False
    ) -> ModelRef:
        """What a model name means, the same for ``estimate``, ``fit``, ``plan --load``,
        ``load`` and ``generate``: a GGUF path stays a path; otherwise the provider is the one
        named, else the first reachable one that offers the model (:meth:`resolve`, the embedded
        llama.cpp's ``models_dir`` included), so that :meth:`estimate` can ask it for the
        model's file. A name no provider offers is left to the estimators' own search of the
        model stores, unless ``need_provider`` (a load), where it is :class:`ModelNotFound`.
        """
        path = model if looks_like_path(model) else None
        if provider is None and (need_provider or path is None):
            try:
                provider = self.resolve(model).name
            except ModelNotFound:
                if need_provider:
                    raise
        return ModelRef(name=model, provider=provider, path=path)

    @property
    def governor(self) -> Governor:
        """The governor of this warden (one per warden), which admits every load."""
        if self._governor is None:
            from memwarden.core.governor import Governor

            self._governor = Governor(self)
        return self._governor

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        provider: str | None = None,
        max_tokens: int | None = None,
        priority: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> GenerateResult:
        """Send a prompt to a model through its provider, counting the call.

        A model that is not loaded yet is loaded through admission first (``Governor.load``):
        room is made, or the call is refused with :class:`InsufficientMemory`, exactly as
        ``memwarden load`` would, instead of letting the runtime load it behind memwarden's
        back. ``priority`` is the load's (default: the configured one); ``options``, its
        runtime options (``batch_tokens``, ``kv_type``...), sized by admission and passed to
        the provider's ``load`` (:meth:`Governor.load`). A model already loaded is used as it is.
        """
        ref = self.model_ref(model, provider, need_provider=True)
        chosen = self.provider(ref.provider or "")
        if not self._is_loaded(chosen, model):
            self.governor.load(ref, priority, options=options)
        with self.usage.track(chosen.name, model) as call:
            call.result = chosen.generate(model, prompt, max_tokens=max_tokens)
        return call.result

    def _is_loaded(self, provider: Provider, model: str) -> bool:
        names = {model, Path(model).stem} if looks_like_path(model) else {model}
        try:
            loaded = self._call_provider(provider, "loaded_models")
        except MemwardenError:
            return False
        return any(
            m.instance_id in names or any(same_model(m.name, n) for n in names) for m in loaded
        )

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


def _close_quietly(provider: Provider) -> None:
    try:
        provider.close()
    except Exception as exc:
        log.info("provider %s: closing its connections failed: %s", provider.name, exc)


def _kind_of(value: object) -> str:
    """What a plugin returned, named without echoing it (it may be huge)."""
    if isinstance(value, list | tuple):
        kinds = sorted({type(item).__name__ for item in value})
        return f"a {type(value).__name__} of {', '.join(kinds) or 'nothing'}"
    return f"a {type(value).__name__}"
