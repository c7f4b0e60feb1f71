"""The shipped provider contract, applied to the three built-in providers."""

from __future__ import annotations

import pytest
from lmstudio_server import serve as serve_lmstudio
from ollama_server import serve as serve_ollama

from memwarden.plugins.llamacpp import LlamaCppOptions, LlamaCppProvider
from memwarden.plugins.lmstudio import LMStudioOptions, LMStudioProvider
from memwarden.plugins.ollama import OllamaOptions, OllamaProvider
from memwarden.testing import ProviderContract


class TestOllamaProvider(ProviderContract):
    @pytest.fixture
    def provider(self):
        with serve_ollama() as (url, _):
            yield OllamaProvider(OllamaOptions(host=url))

    @pytest.fixture
    def loadable_model(self):
        return "llama3.2"


class TestLMStudioProvider(ProviderContract):
    @pytest.fixture
    def provider(self):
        with serve_lmstudio() as (host, _):
            yield LMStudioProvider(LMStudioOptions(host=host))

    @pytest.fixture
    def loadable_model(self):
        return "gemma-3-270m-it"


@pytest.mark.slow
class TestLlamaCppProvider(ProviderContract):
    @pytest.fixture
    def provider(self, gemma_gguf):
        provider = LlamaCppProvider(LlamaCppOptions(models=(str(gemma_gguf),)))
        yield provider
        provider.unload_all()

    @pytest.fixture
    def loadable_model(self, gemma_gguf):
        return gemma_gguf.stem
