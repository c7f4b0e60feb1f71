"""The LM Studio provider, driven through the real ``lmstudio`` SDK against a loopback server
that speaks the SDK's websocket protocol (tests/lmstudio_server.py)."""

from __future__ import annotations

import socket
import time

import pytest
from lmstudio_server import serve

from memwarden.core.errors import ModelNotFound, ProviderError, ProviderUnavailable
from memwarden.plugins.lmstudio import LMStudioOptions, LMStudioProvider


@pytest.fixture
def fake():
    with serve() as (host, state):
        yield host, state


@pytest.fixture
def provider(fake):
    host, _ = fake
    return LMStudioProvider(LMStudioOptions(host=host, timeout_s=5.0))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load_parameters(state) -> dict:
    return next(m for ns, m in state.received if m.get("endpoint") == "loadModel")[
        "creationParameter"
    ]


def test_status_is_reachable_when_the_greeting_answers(provider):
    assert provider.status().reachable


def test_available_models_are_the_downloaded_ones(provider):
    models = {m.name: m for m in provider.available_models()}
    gemma = models["gemma-3-270m-it"]
    assert gemma.size_bytes == 253113024
    assert (gemma.family, gemma.parameters, gemma.max_context_tokens) == ("gemma3", "270M", 32768)


def test_load_sends_the_context_length_and_ttl(provider, fake):
    _, state = fake
    provider.load("gemma-3-270m-it", context_tokens=2048, keep_alive_s=90)
    parameters = _load_parameters(state)
    fields = parameters["loadConfigStack"]["layers"][0]["config"]["fields"]
    assert {"key": "llm.load.contextLength", "value": 2048} in fields
    assert parameters["ttlMs"] == 90_000


def test_loaded_instance_reports_its_identifier_size_and_context(provider):
    loaded = provider.load("gemma-3-270m-it", context_tokens=2048)
    assert loaded.instance_id == "gemma-3-270m-it"
    assert loaded.total_bytes == 253113024
    assert loaded.context_tokens == 2048
    assert provider.loaded_models() == [loaded]


def test_a_second_instance_gets_its_own_identifier(provider):
    first = provider.load("gemma-3-270m-it")
    second = provider.load("gemma-3-270m-it")
    assert first.instance_id != second.instance_id
    assert len(provider.loaded_models()) == 2


def test_unload_by_identifier_leaves_the_other_instance(provider):
    provider.load("gemma-3-270m-it")
    second = provider.load("gemma-3-270m-it")
    provider.unload(second.instance_id)
    assert [m.instance_id for m in provider.loaded_models()] == ["gemma-3-270m-it"]


def test_unload_by_model_key_unloads_every_instance(provider):
    provider.load("gemma-3-270m-it")
    provider.load("gemma-3-270m-it")
    provider.unload("gemma-3-270m-it")
    assert provider.loaded_models() == []


def test_unloading_what_is_not_loaded_is_model_not_found(provider):
    with pytest.raises(ModelNotFound, match="no loaded instance"):
        provider.unload("gemma-3-270m-it")


def test_loading_an_unknown_model_is_model_not_found(provider):
    with pytest.raises(ModelNotFound, match="'no-such-model' not found"):
        provider.load("no-such-model")


def test_a_refused_load_keeps_lm_studios_message(provider, fake):
    _, state = fake
    state.out_of_memory = True
    with pytest.raises(ProviderError, match="insufficient system resources"):
        provider.load("gemma-3-270m-it")


def test_malformed_answers_are_a_provider_error_that_says_so(provider, fake):
    _, state = fake
    state.malformed = True
    with pytest.raises(ProviderError, match="malformed data"):
        provider.available_models()


def test_server_down_is_provider_unavailable():
    down = LMStudioProvider(LMStudioOptions(host=f"127.0.0.1:{_closed_port()}"))
    with pytest.raises(ProviderUnavailable, match="not reachable"):
        down.loaded_models()


def test_server_down_status_says_why():
    port = _closed_port()
    status = LMStudioProvider(LMStudioOptions(host=f"127.0.0.1:{port}")).status()
    assert not status.reachable
    assert status.reason == f"lmstudio (127.0.0.1:{port}): not reachable (connection refused)"


def test_a_silent_server_times_out_within_the_configured_limit(fake):
    host, state = fake
    state.delay_s = 3.0
    slow = LMStudioProvider(LMStudioOptions(host=host, timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=r"no answer to list loaded models within 0.5 s"):
        slow.loaded_models()
    assert time.monotonic() - started < 2.0


def test_generate_answers_with_token_counts(provider):
    result = provider.generate("gemma-3-270m-it", "The capital of France is", max_tokens=3)
    assert result.text == "Paris is the"
    assert (result.prompt_tokens, result.completion_tokens) == (5, 3)


def test_generate_loads_the_model_when_no_instance_is(provider):
    provider.generate("gemma-3-270m-it", "hello")
    assert [m.name for m in provider.loaded_models()] == ["gemma-3-270m-it"]


def test_one_sdk_client_serves_repeated_calls(provider, fake):
    _, state = fake
    for _ in range(5):
        provider.loaded_models()
    assert state.greetings == 1


def test_a_client_that_failed_is_replaced_by_a_new_one(provider, fake):
    _, state = fake
    provider.loaded_models()
    state.malformed = True
    with pytest.raises(ProviderError):
        provider.loaded_models()
    state.malformed = False
    provider.loaded_models()
    assert state.greetings == 2
