"""The warden across providers: isolation of slow or broken ones, choosing a provider, usage
tracking and requests in flight."""

from __future__ import annotations

import threading
import time

import pytest

from memwarden.core import warden as warden_module
from memwarden.core.config import Config, StateConfig
from memwarden.core.errors import ModelBusy, ModelNotFound, ProviderError, ProviderUnavailable
from memwarden.core.plugins import Plugins
from memwarden.core.providers import Provider
from memwarden.core.types import AvailableModel, GenerateResult, LoadedModel, ProviderStatus
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl
from memwarden.plugins import sqlite_state
from memwarden.testing.fakes import ManualClock


class MemoryProvider(Provider):
    """A runtime that keeps its models in a dict: the provider contract, nothing else."""

    def __init__(
        self,
        name: str,
        models: tuple[str, ...],
        *,
        fallback: bool = False,
        delay_s: float = 0.0,
        down: bool = False,
    ) -> None:
        self.name = name
        self.fallback = fallback
        self.models = models
        self.delay_s = delay_s
        self.down = down
        self.loaded: dict[str, LoadedModel] = {}
        self.release = threading.Event()
        self.release.set()

    def _answer(self) -> None:
        time.sleep(self.delay_s)
        if self.down:
            raise ProviderUnavailable(f"{self.name}: connection refused")

    def status(self) -> ProviderStatus:
        self._answer()
        return ProviderStatus(name=self.name, reachable=True)

    def available_models(self) -> list[AvailableModel]:
        self._answer()
        return [AvailableModel(name=m, provider=self.name) for m in self.models]

    def loaded_models(self) -> list[LoadedModel]:
        self._answer()
        return list(self.loaded.values())

    def load(
        self, model: str, *, context_tokens: int | None = None, keep_alive_s: float | None = None
    ) -> LoadedModel:
        self._answer()
        loaded = LoadedModel(
            name=model, provider=self.name, total_bytes=1000, context_tokens=context_tokens
        )
        self.loaded[model] = loaded
        return loaded

    def unload(self, model: str) -> None:
        self._answer()
        del self.loaded[model]

    def generate(self, model: str, prompt: str, *, max_tokens: int | None = None) -> GenerateResult:
        self.release.wait(10)
        if prompt == "fail":
            raise ProviderError(f"{self.name}: the model failed")
        return GenerateResult(
            model=model, provider=self.name, text="ok", prompt_tokens=1, completion_tokens=2
        )


def make_warden(*providers: Provider, tmp_path=None, clock=time.monotonic) -> Warden:
    class Registers:
        @hookimpl
        def register_providers(self, register, config):
            for provider in providers:
                register(provider)

    state = StateConfig(path=str(tmp_path / "state.db")) if tmp_path else StateConfig(False)
    config = Config(state=state)
    plugins = Plugins(
        config,
        builtins=(("sqlite-state", "memwarden.plugins.sqlite_state"),),
        load_entry_points=False,
        env={},
    )
    plugins.register(Registers())
    return Warden(config, plugins, clock=clock)


def test_a_slow_provider_does_not_hold_up_the_others(monkeypatch):
    monkeypatch.setattr(warden_module, "PROVIDER_TIMEOUT_S", 0.3)
    warden = make_warden(MemoryProvider("slow", (), delay_s=2), MemoryProvider("quick", ()))
    started = time.monotonic()
    statuses = {s.name: s for s in warden.provider_statuses()}
    assert time.monotonic() - started < 1.0
    assert statuses["quick"].reachable
    assert not statuses["slow"].reachable
    assert "no answer within 0.3 s" in statuses["slow"].reason


def test_a_provider_that_is_down_is_left_out_of_the_model_lists():
    warden = make_warden(MemoryProvider("down", ("a",), down=True), MemoryProvider("up", ("b",)))
    assert [m.name for m in warden.available_models()] == ["b"]


def test_a_model_goes_to_the_provider_that_offers_it():
    warden = make_warden(MemoryProvider("one", ("a",)), MemoryProvider("two", ("b",)))
    assert warden.load("b").provider == "two"


def test_the_fallback_provider_serves_only_when_no_other_offers_the_model():
    embedded = MemoryProvider("embedded", ("a",), fallback=True)
    warden = make_warden(embedded, MemoryProvider("external", ("a",)))
    assert warden.resolve("a").name == "external"


def test_the_fallback_provider_serves_when_the_others_are_down():
    embedded = MemoryProvider("embedded", ("a",), fallback=True)
    warden = make_warden(embedded, MemoryProvider("external", ("a",), down=True))
    assert warden.resolve("a").name == "embedded"


def test_a_model_no_provider_offers_is_model_not_found():
    warden = make_warden(MemoryProvider("one", ("a",)))
    with pytest.raises(ModelNotFound, match="no reachable provider offers model 'z'"):
        warden.load("z")


def test_a_bare_ollama_name_means_its_latest_tag():
    warden = make_warden(MemoryProvider("ollama", ("llama3.2:latest",)))
    assert warden.resolve("llama3.2").name == "ollama"


def test_requests_in_flight_are_counted_while_a_call_runs():
    provider = MemoryProvider("one", ("a",))
    warden = make_warden(provider)
    warden.load("a")
    provider.release.clear()
    caller = threading.Thread(target=warden.generate, args=("a", "hello"))
    caller.start()
    deadline = time.monotonic() + 5
    while warden.in_flight("a") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert warden.in_flight("a") == 1
        assert [m.requests_in_flight for m in warden.loaded_models()] == [1]
    finally:
        provider.release.set()
        caller.join()
    assert warden.in_flight("a") == 0


def test_a_model_serving_a_request_is_not_unloaded():
    provider = MemoryProvider("one", ("a",))
    warden = make_warden(provider)
    warden.load("a")
    with warden.usage.track("one", "a"), pytest.raises(ModelBusy):
        warden.unload("a")
    assert "a" in provider.loaded


def test_an_emergency_unloads_a_model_serving_a_request():
    provider = MemoryProvider("one", ("a",))
    warden = make_warden(provider)
    warden.load("a")
    with warden.usage.track("one", "a"):
        warden.unload("a", emergency=True)
    assert provider.loaded == {}


def test_each_call_is_persisted_with_latency_and_tokens(tmp_path):
    import sqlite_utils

    warden = make_warden(MemoryProvider("one", ("a",)), tmp_path=tmp_path)
    warden.load("a")
    warden.generate("a", "hello")
    assert sqlite_state.store_for(warden.config).flush() is True
    [row] = list(sqlite_utils.Database(tmp_path / "state.db")["usage"].rows)
    assert (row["success"], row["prompt_tokens"], row["completion_tokens"]) == (1, 1, 2)
    assert row["latency_s"] >= 0


def test_a_failed_call_is_persisted_with_its_error(tmp_path):
    import sqlite_utils

    warden = make_warden(MemoryProvider("one", ("a",)), tmp_path=tmp_path)
    warden.load("a")
    with pytest.raises(ProviderError):
        warden.generate("a", "fail")
    assert sqlite_state.store_for(warden.config).flush() is True
    [row] = list(sqlite_utils.Database(tmp_path / "state.db")["usage"].rows)
    assert row["success"] == 0
    assert "the model failed" in row["error"]
    assert warden.in_flight("a") == 0


def test_a_provider_without_generate_says_so():
    class ListOnly(MemoryProvider):
        generate = Provider.generate

    warden = make_warden(ListOnly("listonly", ("a",)))
    warden.load("a")
    with pytest.raises(ProviderError, match="cannot generate text through memwarden"):
        warden.generate("a", "hello")


def test_a_call_to_a_bare_ollama_name_counts_against_its_latest_tag():
    provider = MemoryProvider("ollama", ("llama3.2:latest",))
    warden = make_warden(provider)
    warden.load("llama3.2:latest")
    with warden.usage.track("ollama", "llama3.2"):
        assert [m.requests_in_flight for m in warden.loaded_models()] == [1]


class CountingProvider(MemoryProvider):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0

    def _answer(self) -> None:
        self.asked += 1
        super()._answer()


def test_a_provider_found_down_is_not_asked_again_until_the_retry_window_passes():
    clock = ManualClock()
    down = CountingProvider("down", ("a",), down=True)
    warden = make_warden(down, MemoryProvider("up", ("b",)), clock=clock)

    warden.loaded_models()
    warden.loaded_models()
    [status] = [s for s in warden.provider_statuses() if s.name == "down"]

    assert down.asked == 1
    assert not status.reachable
    assert "connection refused" in status.reason
    down.down = False
    clock.advance(warden_module.PROVIDER_RETRY_AFTER_S + 0.1)
    assert {s.name: s.reachable for s in warden.provider_statuses()} == {"down": True, "up": True}
    assert down.asked == 2


def test_concurrent_first_calls_register_the_providers_once():
    registrations = []

    class Slow:
        @hookimpl
        def register_providers(self, register, config):
            registrations.append(1)
            time.sleep(0.2)
            register(MemoryProvider("memory", ()))

    config = Config()
    plugins = Plugins(config, builtins=(), load_entry_points=False, env={})
    plugins.register(Slow())
    warden = warden_module.Warden(config, plugins)
    seen = []
    threads = [
        threading.Thread(target=lambda: seen.append(sorted(warden.providers()))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [["memory"]] * 4
    assert registrations == [1]
