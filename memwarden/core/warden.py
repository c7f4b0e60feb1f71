"""The warden: configuration plus plugins, and the few operations everything else builds on."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from memwarden.core import pressure
from memwarden.core.config import Config, load_config
from memwarden.core.errors import EstimateUnavailable, MemwardenError, ProviderError
from memwarden.core.plugins import Plugins
from memwarden.core.providers import Provider
from memwarden.core.types import (
    DeviceSnapshot,
    DeviceUnavailable,
    Event,
    LoadedModel,
    MemoryEstimate,
    MemoryPool,
    ModelRef,
    PluginFailure,
    PressureLevel,
    PressureReading,
    ProviderStatus,
)

log = logging.getLogger("memwarden")

# A provider that has not answered by then is reported unreachable; the others are not held up.
PROVIDER_TIMEOUT_S = 5.0


class Warden:
    """One configured memwarden.

    ``Warden.from_config()`` in programs; ``Warden(config, plugins)`` in tests.
    """

    def __init__(self, config: Config, plugins: Plugins | None = None) -> None:
        self.config = config
        self.plugins = plugins if plugins is not None else Plugins(config)
        self.plugins.failure_listeners.append(self._on_plugin_failure)
        self._providers: dict[str, Provider] | None = None

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
        return DeviceSnapshot(pools=tuple(pools), unavailable=tuple(unavailable))

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
        if result is None:
            raise EstimateUnavailable(
                f"no estimator could size {model.name!r}",
                hint="give the path of its GGUF file, or make its provider reachable",
            )
        return result

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

    def _each_provider(self, call: str) -> list[tuple[Provider, Any]]:
        """Call a method on every provider at once; a slow or failing one yields an exception."""
        providers = list(self.providers().values())
        if not providers:
            return []
        results: list[tuple[Provider, Any]] = []
        pool = ThreadPoolExecutor(max_workers=len(providers), thread_name_prefix="provider")
        futures = [(p, pool.submit(getattr(p, call))) for p in providers]
        for provider, future in futures:
            try:
                results.append((provider, future.result(timeout=PROVIDER_TIMEOUT_S)))
            except FutureTimeout:
                results.append(
                    (provider, TimeoutError(f"no answer within {PROVIDER_TIMEOUT_S:g} s"))
                )
            except Exception as exc:
                results.append((provider, exc))
        pool.shutdown(wait=False, cancel_futures=True)
        return results

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
            loaded.extend(result)
        return loaded

    # -- events and state ------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        log.info("%s: %s", event.kind, event.message)
        self.hook.on_event(event=event, warden=self)
        self.persist("event", event)

    def persist(self, kind: str, record: Any) -> None:
        if self.config.state.enabled:
            self.hook.persist_state(kind=kind, record=record, config=self.config)

    @property
    def plugin_failures(self) -> Sequence[PluginFailure]:
        return list(self.plugins.failures.values())

    def _on_plugin_failure(self, failure: PluginFailure) -> None:
        # Not routed through emit(): a failing on_event plugin would report itself forever.
        log.debug("recorded plugin failure %s", failure)
