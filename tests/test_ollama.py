"""The Ollama provider against a loopback server that answers as Ollama's API documentation
says, driven through the real ``ollama`` client."""

from __future__ import annotations

import socket
import time

import pytest
from ollama_server import serve

from memwarden.core.config import parse_config_data
from memwarden.core.errors import ModelNotFound, ProviderError, ProviderUnavailable
from memwarden.plugins.ollama import OllamaOptions, OllamaProvider, normalise_host
from memwarden.testing.fakes import ManualClock


@pytest.fixture
def fake():
    with serve() as (url, state):
        yield url, state


@pytest.fixture
def provider(fake):
    url, _ = fake
    return OllamaProvider(OllamaOptions(host=url, timeout_s=2.0, retry_backoff_s=0.01))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_status_reports_the_server_version(provider):
    status = provider.status()
    assert status.reachable
    assert status.version == "0.5.1"


def test_available_models_come_from_tags_with_their_details(provider):
    models = {m.name: m for m in provider.available_models()}
    llama = models["llama3.2:latest"]
    assert llama.size_bytes == 2019393189
    assert (llama.family, llama.parameters, llama.quantization) == ("llama", "3.2B", "Q4_K_M")


def test_load_sends_an_empty_prompt_with_num_ctx_and_keep_alive(provider, fake):
    _, state = fake
    provider.load("llama3.2", context_tokens=8192, keep_alive_s=600)
    method, path, body = state.requests[0]
    assert (method, path) == ("POST", "/api/generate")
    assert body["prompt"] == ""
    assert body["options"] == {"num_ctx": 8192}
    assert body["keep_alive"] == 600


def test_loaded_model_reports_real_size_vram_share_context_and_expiry(provider):
    before = time.time()
    loaded = provider.load("llama3.2", context_tokens=8192, keep_alive_s=600)
    assert loaded.name == "llama3.2:latest"
    assert loaded.total_bytes == 2019393189 + 8192 * 2048
    assert loaded.gpu_bytes == loaded.total_bytes // 2
    assert loaded.context_tokens == 8192
    assert before + 590 < loaded.expires_at < time.time() + 610


def test_a_model_whose_keep_alive_expired_is_no_longer_loaded(provider, fake):
    _, state = fake
    state.clock = ManualClock(start=time.time())
    provider.load("llama3.2", keep_alive_s=60)
    state.clock.advance(61)
    assert provider.loaded_models() == []


def test_a_model_within_its_keep_alive_stays_loaded(provider, fake):
    _, state = fake
    state.clock = ManualClock(start=time.time())
    provider.load("llama3.2", keep_alive_s=60)
    state.clock.advance(59)
    assert [m.name for m in provider.loaded_models()] == ["llama3.2:latest"]


def test_unload_sends_keep_alive_zero_and_the_model_leaves_ps(provider, fake):
    _, state = fake
    provider.load("llama3.2")
    provider.unload("llama3.2")
    _, _, body = state.requests[-1]
    assert body["keep_alive"] == 0
    assert provider.loaded_models() == []


def test_model_metadata_is_shows_model_info(provider):
    metadata = provider.model_metadata("llama3.2")
    assert metadata["llama.block_count"] == 28
    assert metadata["llama.attention.head_count_kv"] == 8


def test_generate_reports_tokens(provider):
    result = provider.generate("llama3.2", "why is the sky blue")
    assert result.text.startswith("The sky is blue")
    assert (result.prompt_tokens, result.completion_tokens) == (5, 12)


def test_unknown_model_is_model_not_found(provider):
    with pytest.raises(ModelNotFound, match="not found, try pulling it first"):
        provider.load("no-such-model")


def test_out_of_memory_load_failure_keeps_the_servers_message(provider, fake):
    _, state = fake
    state.out_of_memory = True
    with pytest.raises(ProviderError) as raised:
        provider.load("llama3.2")
    assert "model requires more system memory (9.6 GiB) than is available (3.2 GiB)" in str(
        raised.value
    )
    assert "HTTP 500" in raised.value.message


def test_malformed_json_is_a_provider_error_that_says_so(provider, fake):
    _, state = fake
    state.malformed = True
    with pytest.raises(ProviderError, match="malformed JSON"):
        provider.available_models()


def test_malformed_json_makes_status_unreachable_with_the_reason(provider, fake):
    _, state = fake
    state.malformed = True
    status = provider.status()
    assert not status.reachable
    assert "malformed JSON" in status.reason


def test_server_down_is_provider_unavailable():
    down = OllamaProvider(
        OllamaOptions(host=f"127.0.0.1:{_closed_port()}", retries=1, retry_backoff_s=0.01)
    )
    with pytest.raises(ProviderUnavailable, match="connection refused"):
        down.loaded_models()


def test_server_down_status_says_why():
    down = OllamaProvider(OllamaOptions(host=f"127.0.0.1:{_closed_port()}", retries=0))
    status = down.status()
    assert not status.reachable
    assert "not reachable" in status.reason


def test_a_slow_server_times_out_within_the_configured_limit(fake):
    url, state = fake
    state.delay_s = 1.5
    slow = OllamaProvider(OllamaOptions(host=url, timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=r"no answer to ps within 0.3 s"):
        slow.loaded_models()
    assert time.monotonic() - started < 1.2


def test_a_refused_connection_is_an_answer_and_is_not_retried():
    # With three retries 10 s apart, a retried refusal would take 70 s.
    provider = OllamaProvider(
        OllamaOptions(host=f"127.0.0.1:{_closed_port()}", retries=3, retry_backoff_s=10.0)
    )
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=r"not reachable \(connection refused\)"):
        provider.available_models()
    assert time.monotonic() - started < 5.0


def test_host_comes_from_ollama_host_when_config_has_none(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:12345")
    assert OllamaProvider().host == "http://127.0.0.1:12345"


def test_host_in_config_wins_over_ollama_host(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "elsewhere:1")
    config = parse_config_data({"plugins": {"ollama": {"host": "localhost"}}}, None)
    options = config.plugin_options("ollama", OllamaOptions)
    assert OllamaProvider(options).host == "http://localhost:11434"


def test_normalise_host_keeps_scheme_and_path():
    assert normalise_host("https://box.example/ollama/") == "https://box.example:443/ollama"


def test_a_server_found_down_is_not_retried_again_at_once():
    down = OllamaProvider(
        OllamaOptions(host=f"127.0.0.1:{_closed_port()}", retries=3, retry_backoff_s=0.2)
    )
    with pytest.raises(ProviderUnavailable):
        down.loaded_models()
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        down.loaded_models()
    assert time.monotonic() - started < 0.2
