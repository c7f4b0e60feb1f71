"""`load` and `generate` take the runtime options `estimate` and `fit` take: admission sizes the
load with them, and the provider loads with those its runtime can honour."""

from __future__ import annotations

import logging
from collections.abc import Callable

from lmstudio_server import serve as serve_lmstudio
from ollama_server import serve as serve_ollama

from memwarden.core.config import Config
from memwarden.core.governor import Governor
from memwarden.core.providers import Provider, accepts_load_options, load_options
from memwarden.core.types import LoadedModel, ModelRef
from memwarden.hookspecs import hookimpl
from memwarden.plugins.llamacpp import worker_settings
from memwarden.plugins.lmstudio import LMStudioOptions, LMStudioProvider, lmstudio_load_config
from memwarden.plugins.ollama import OllamaOptions, OllamaProvider, ollama_options
from memwarden.testing.fakes import GIB, MemoryProvider, make_rig


def test_load_options_keep_only_the_runtime_options_that_are_set() -> None:
    options = {"batch_tokens": 256, "kv_type": None, "metadata": {"a": 1}, "pool_id": "cuda:0"}
    assert load_options(options) == {"batch_tokens": 256}


def test_governor_load_hands_the_runtime_options_to_the_provider() -> None:
    rig = make_rig()
    rig.provider.add_model("m", GIB)
    Governor(rig.warden).load(
        "m", options={"batch_tokens": 256, "kv_type": "q8_0", "metadata": {"x": 1}}
    )
    assert rig.provider.load_options == [{"batch_tokens": 256, "kv_type": "q8_0"}]


def test_warden_generate_loads_with_the_runtime_options() -> None:
    rig = make_rig()
    rig.provider.add_model("m", GIB)
    rig.warden.generate("m", "a b", options={"ubatch_tokens": 128})
    assert rig.provider.load_options == [{"ubatch_tokens": 128}]


class OldProvider(MemoryProvider):
    """A provider written before ``Provider.load`` took ``options``."""

    name = "old"

    def load(  # type: ignore[override]
        self, model: str, *, context_tokens: int | None = None, keep_alive_s: float | None = None
    ) -> LoadedModel:
        return super().load(model, context_tokens=context_tokens, keep_alive_s=keep_alive_s)


def test_only_a_provider_whose_load_takes_options_is_given_them() -> None:
    device = make_rig().device
    assert (
        accepts_load_options(OldProvider(device)),
        accepts_load_options(MemoryProvider(device)),
    ) == (
        False,
        True,
    )


class OldRuntimePlugin:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    @hookimpl
    def register_providers(self, register: Callable[[Provider], None], config: Config) -> None:
        register(self.provider)


def test_a_provider_without_options_loads_and_the_options_are_logged_as_ignored(caplog) -> None:
    rig = make_rig()
    old = OldProvider(rig.device)
    old.add_model("m", GIB)
    rig.provider.add_model("m", GIB)  # the rig's estimator sizes models by its provider's table
    rig.warden.plugins.register(OldRuntimePlugin(old))
    with caplog.at_level(logging.WARNING, logger="memwarden.providers"):
        Governor(rig.warden).load(ModelRef(name="m", provider="old"), options={"batch_tokens": 256})
    assert [m.name for m in old.models.values()] == ["m"]
    assert caplog.messages == [
        "old: ignored runtime option batch_tokens=256: the runtime has no per-load setting for it"
    ]


# -- each provider maps what its runtime can honour ------------------------------------------


def test_ollama_loads_with_num_batch_num_gpu_and_use_mmap(caplog) -> None:
    with serve_ollama() as (url, state):
        provider = OllamaProvider(OllamaOptions(host=url, timeout_s=2.0, retry_backoff_s=0.01))
        provider.load(
            "llama3.2",
            context_tokens=8192,
            options={"batch_tokens": 256, "gpu_layers": 10, "mmap": False, "runtime": "ollama"},
        )
        _, _, body = state.requests[0]
    assert body["options"] == {
        "num_batch": 256,
        "num_gpu": 10,
        "use_mmap": False,
        "num_ctx": 8192,
    }
    assert caplog.messages == []


def test_ollama_logs_the_options_that_are_server_settings(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="memwarden.providers"):
        request = ollama_options({"kv_type": "q8_0", "flash_attention": True, "batch_tokens": 64})
    assert request == {"num_batch": 64}
    assert caplog.messages == [
        "ollama: ignored runtime options flash_attention=True, kv_type='q8_0': the runtime has "
        "no per-load setting for them"
    ]


def test_lmstudio_loads_with_its_load_config() -> None:
    with serve_lmstudio() as (host, state):
        provider = LMStudioProvider(LMStudioOptions(host=host, timeout_s=5.0))
        provider.load(
            "gemma-3-270m-it",
            context_tokens=2048,
            options={
                "batch_tokens": 256,
                "flash_attention": True,
                "kv_type": "q8_0",
                "kv_type_v": "q4_0",
                "mmap": False,
            },
        )
        parameters = next(m for _, m in state.received if m.get("endpoint") == "loadModel")[
            "creationParameter"
        ]
    fields = parameters["loadConfigStack"]["layers"][0]["config"]["fields"]
    assert sorted((f["key"], f["value"]) for f in fields) == [
        ("llm.load.contextLength", 2048),
        ("llm.load.llama.evalBatchSize", 256),
        ("llm.load.llama.flashAttention", True),
        ("llm.load.llama.kCacheQuantizationType", {"checked": True, "value": "q8_0"}),
        ("llm.load.llama.tryMmap", False),
        ("llm.load.llama.vCacheQuantizationType", {"checked": True, "value": "q4_0"}),
    ]


def test_lmstudio_logs_the_options_it_has_no_setting_for(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="memwarden.providers"):
        config = lmstudio_load_config({"ubatch_tokens": 128, "parallel": 2, "swa_full": True})
    assert config == {}
    assert caplog.messages == [
        "lmstudio: ignored runtime options parallel=2, swa_full=True, ubatch_tokens=128: the "
        "runtime has no per-load setting for them"
    ]


def test_the_embedded_worker_takes_every_option_as_its_settings() -> None:
    settings = worker_settings(
        {
            "batch_tokens": 1024,
            "ubatch_tokens": 256,
            "flash_attention": False,
            "swa_full": True,
            "kv_type_k": "q8_0",
            "parallel": 2,
            "mmap": True,
        }
    )
    assert settings == {
        "n_batch": 1024,
        "n_ubatch": 256,
        "flash_attn": False,
        "swa_full": True,
        "n_seq_max": 2,
        "use_mmap": True,
        "type_k": "q8_0",
    }


def test_the_embedded_worker_takes_a_runtime_profile_with_the_given_options_over_it() -> None:
    settings = worker_settings({"runtime": "llama-cpp-python", "ubatch_tokens": 128})
    assert settings == {
        "n_batch": 512,
        "n_ubatch": 128,
        "flash_attn": False,
        "swa_full": True,
        "use_mmap": True,
        "type_k": "f16",
        "type_v": "f16",
    }


def test_a_quantised_v_cache_turns_flash_attention_on_in_the_worker() -> None:
    settings = worker_settings({"kv_type": "q4_0", "flash_attention": False})
    assert settings == {"flash_attn": True, "type_k": "q4_0", "type_v": "q4_0"}


def test_the_embedded_worker_ignores_gpu_layers_with_a_log_line(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="memwarden.providers"):
        settings = worker_settings({"gpu_layers": 8, "kv_offload": False})
    assert settings == {}
    assert caplog.messages == [
        "llamacpp: ignored runtime options gpu_layers=8, kv_offload=False: the runtime has no "
        "per-load setting for them"
    ]


def test_the_embedded_worker_takes_ollamas_batch_for_the_context_it_loads(monkeypatch) -> None:
    for name in ("OLLAMA_NUM_PARALLEL", "OLLAMA_KV_CACHE_TYPE", "OLLAMA_FLASH_ATTENTION"):
        monkeypatch.delenv(name, raising=False)
    settings = worker_settings({"runtime": "ollama"}, context_tokens=8192)
    assert (settings["n_batch"], settings["n_ubatch"]) == (1024, 1024)
