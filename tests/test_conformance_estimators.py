"""The shipped estimator contract, applied to the three built-in estimators."""

from __future__ import annotations

import pytest
from gguf_files import isolate_model_stores, write_model
from test_estimators import OLLAMA_SHOW

from memwarden.core.types import ModelRef
from memwarden.testing import EstimatorPluginContract


@pytest.fixture(autouse=True)
def no_model_stores(monkeypatch, tmp_path_factory):
    isolate_model_stores(monkeypatch, tmp_path_factory.mktemp("home"))


class TestGgufEstimator(EstimatorPluginContract):
    @pytest.fixture
    def plugin(self):
        from memwarden.plugins import gguf_estimator

        return gguf_estimator

    @pytest.fixture
    def model(self, tmp_path):
        return ModelRef(name=str(write_model(tmp_path / "llama.gguf")))


class TestMetadataEstimator(EstimatorPluginContract):
    @pytest.fixture
    def plugin(self):
        from memwarden.plugins import metadata_estimator

        return metadata_estimator

    @pytest.fixture
    def model(self):
        return ModelRef(name="llama3.1:8b", provider="ollama")

    @pytest.fixture
    def options(self):
        return {"metadata": OLLAMA_SHOW}


class TestHeuristicEstimator(EstimatorPluginContract):
    @pytest.fixture
    def plugin(self):
        from memwarden.plugins import heuristic_estimator

        return heuristic_estimator

    @pytest.fixture
    def model(self):
        return ModelRef(name="qwen2.5:7b-instruct-q8_0")
