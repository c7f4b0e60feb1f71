"""A scripted device and an in-memory provider, for deterministic tests of strategies and of
the governor (memwarden's own, and a strategy plugin author's).

Both are real plugins registered through the real plugin manager: the device plugin's
``detect_device`` reports one scripted pool, and the provider is a real ``Provider`` subclass
whose loads and unloads move bytes in that pool, as a runtime's would::

    rig = make_rig()
    rig.provider.add_model("llama", 4 * GIB)
    rig.provider.load("llama", context_tokens=4096)
    rig.device.set_used_percent(90)
    Governor(rig.warden).step()
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from memwarden.core.config import Config
from memwarden.core.errors import ModelNotFound
from memwarden.core.plugins import BUILTIN_PLUGINS, Plugins
from memwarden.core.providers import Provider
from memwarden.core.types import (
    AvailableModel,
    Confidence,
    Event,
    GenerateResult,
    LoadedModel,
    MemoryEstimate,
    MemoryPool,
    ModelRef,
    PoolKind,
    ProviderStatus,
)
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

GIB = 2**30
# What the scripted runtime charges per token of context (its KV cache), and what the test
# estimator says: the two agree, as a good estimator and a runtime would.
KV_BYTES_PER_TOKEN = 128 * 1024


class ManualClock:
    """A clock that moves only when a test moves it, for tests that must not depend on how busy
    the machine is. Pass it as ``clock`` (``Warden``, ``Monitor``) and its :meth:`sleep` as
    ``sleep`` (``Monitor``)::

        clock = ManualClock()
        monitor = Monitor(governor, psi=False, clock=clock, sleep=clock.sleep)
        monitor.run(duration_s=1.0)   # returns at once; the clock reads 1 s later
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep`` would do, without the wait: the clock moves ``seconds`` ahead."""
        self.advance(max(seconds, 0.0))


class ScriptedDevice:
    """One system pool whose usage the test sets; loaded models add to it."""

    def __init__(self, total_bytes: int = 100 * GIB, baseline_bytes: int = 10 * GIB) -> None:
        self.total_bytes = total_bytes
        self.baseline_bytes = baseline_bytes  # what everything but the models uses
        self.models_bytes = 0
        self.calls = 0
        # Linux PSI stall shares (percent of the last 10 s) the pool reports; None: no PSI.
        self.psi_some_avg10: float | None = None
        self.psi_full_avg10: float | None = None

    def set_used_percent(self, percent: float) -> None:
        """Set what other programs use so that the pool reads ``percent`` used."""
        self.baseline_bytes = int(self.total_bytes * percent / 100) - self.models_bytes

    @property
    def used_bytes(self) -> int:
        return min(self.baseline_bytes + self.models_bytes, self.total_bytes)

    @hookimpl
    def detect_device(self, config: Config) -> list[MemoryPool]:
        self.calls += 1
        used = self.used_bytes
        return [
            MemoryPool(
                id="system",
                kind=PoolKind.SYSTEM,
                name="Scripted RAM",
                total_bytes=self.total_bytes,
                available_bytes=self.total_bytes - used,
                used_bytes=used,
                source="scripted-device",
                psi_some_avg10=self.psi_some_avg10,
                psi_full_avg10=self.psi_full_avg10,
            )
        ]


class MemoryProvider(Provider):
    """A runtime that lives in a dict: ``load`` takes bytes from the scripted device."""

    name = "memory"

    def __init__(self, device: ScriptedDevice) -> None:
        self.device = device
        self.models: dict[str, LoadedModel] = {}
        self.sizes: dict[str, int] = {}  # weights bytes per model name
        # What the process really holds, per model name, where it differs from the committed
        # figure (a runtime that reserves a compute buffer it never touches).
        self.resident_sizes: dict[str, int] = {}
        self.unloaded: list[str] = []
        self.loads: list[tuple[str, int | None]] = []
        self.load_options: list[dict[str, Any]] = []  # the runtime options of each load
        self.failing: set[str] = set()
        self.cache_bytes = 0
        self._ids = itertools.count(1)

    def add_model(
        self, name: str, weights_bytes: int, *, resident_bytes: int | None = None
    ) -> None:
        """Offer model ``name``; with ``resident_bytes``, a loaded instance holds that much of
        the pool (and reports it as ``LoadedModel.resident_bytes``) whatever it commits."""
        self.sizes[name] = weights_bytes
        if resident_bytes is not None:
            self.resident_sizes[name] = resident_bytes

    def _footprint(self, name: str, context_tokens: int | None) -> int:
        return self.sizes[name] + (context_tokens or 0) * KV_BYTES_PER_TOKEN

    def status(self) -> ProviderStatus:
        return ProviderStatus(name=self.name, reachable=True)

    def available_models(self) -> list[AvailableModel]:
        return [
            AvailableModel(name=n, provider=self.name, size_bytes=s) for n, s in self.sizes.items()
        ]

    def loaded_models(self) -> list[LoadedModel]:
        return list(self.models.values())

    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        instance = f"{model}#{next(self._ids)}"
        loaded = LoadedModel(
            name=model,
            provider=self.name,
            total_bytes=self._footprint(model, context_tokens),
            context_tokens=context_tokens,
            idle_since=time.time(),
            instance_id=instance,
            resident_bytes=self.resident_sizes.get(model),
        )
        self.models[instance] = loaded
        self.device.models_bytes += _held(loaded)
        self.loads.append((model, context_tokens))
        self.load_options.append(dict(options or {}))
        return loaded

    def unload(self, model: str) -> None:
        if model in self.failing:
            raise RuntimeError(f"runtime refused to unload {model}")
        loaded = self.models.pop(model)
        self.device.models_bytes -= _held(loaded)
        self.unloaded.append(model)

    def generate(self, model: str, prompt: str, *, max_tokens: int | None = None) -> GenerateResult:
        """Answer with the prompt reversed, from a loaded model (so usage can be counted)."""
        if not any(m.name == model for m in self.models.values()):
            raise ModelNotFound(f"memory: model {model!r} is not loaded")
        words = prompt.split()
        return GenerateResult(
            model=model,
            provider=self.name,
            text=" ".join(reversed(words)),
            prompt_tokens=len(words),
            completion_tokens=len(words),
        )

    def set(self, instance: str, **changes: object) -> None:
        """Change what the runtime reports about a loaded instance (idle time, requests)."""
        self.models[instance] = attrs.evolve(self.models[instance], **changes)

    def releasable_cache_bytes(self) -> int:
        return self.cache_bytes

    def release_caches(self) -> int:
        released, self.cache_bytes = self.cache_bytes, 0
        self.device.baseline_bytes -= released
        return released


def _held(model: LoadedModel) -> int:
    """What a loaded instance takes from the scripted pool: what its process holds."""
    return model.total_bytes if model.resident_bytes is None else model.resident_bytes


class MemoryRuntimePlugin:
    """Registers the in-memory provider and sizes its models the way it charges them."""

    def __init__(self, provider: MemoryProvider) -> None:
        self.provider = provider

    @hookimpl
    def register_providers(self, register: Callable[[Provider], None], config: Config) -> None:
        register(self.provider)

    @hookimpl
    def estimate_model_size(
        self, model: ModelRef, context_tokens: int, options: dict[str, Any]
    ) -> MemoryEstimate:
        return MemoryEstimate(
            model=model,
            context_tokens=context_tokens,
            weights_bytes=self.provider.sizes[model.name],
            kv_cache_bytes=context_tokens * KV_BYTES_PER_TOKEN,
            compute_bytes=0,
            overhead_bytes=0,
            confidence=Confidence.HIGH,
            estimator="memory-runtime",
        )


@attrs.define
class Rig:
    warden: Warden
    device: ScriptedDevice
    provider: MemoryProvider
    events: list[Event]


class EventRecorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def on_event(self, event: Event, warden: Warden) -> None:
        self.events.append(event)


def make_rig(
    config: Config | None = None, *, builtin_strategies: bool = True, **device_args: int
) -> Rig:
    """A warden with the state plugin (and the built-in strategies, unless told not to), plus
    the fakes."""
    config = config or Config()
    device = ScriptedDevice(**device_args)
    provider = MemoryProvider(device)
    # No real device plugin: the scripted device is the only pool, on any machine.
    allowed = ["sqlite-state"]
    if builtin_strategies:
        allowed += [n for n, module in BUILTIN_PLUGINS if ".strategies." in module]
    plugins = Plugins(config, load_entry_points=False, env={"MEMWARDEN_PLUGINS": ",".join(allowed)})
    plugins.register(device, None)
    plugins.register(MemoryRuntimePlugin(provider))
    recorder = EventRecorder()
    plugins.register(recorder)
    return Rig(
        warden=Warden(config, plugins), device=device, provider=provider, events=recorder.events
    )
