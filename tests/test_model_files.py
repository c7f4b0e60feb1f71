from __future__ import annotations

import hashlib
import json

import pytest
from gguf_files import isolate_model_stores, write_model

from memwarden.core.config import Config
from memwarden.core.errors import ModelNotFound
from memwarden.core.types import ModelRef
from memwarden.core.warden import Warden
from memwarden.estimation.model_files import (
    ModelSearch,
    find_model_file,
    lmstudio_file,
    ollama_blob,
    parse_ollama_name,
)
from memwarden.plugins.gguf_estimator import locate


def add_to_ollama_store(store, name_path, gguf_path):
    """Store a model the way `ollama pull` does: a content-addressed blob and a manifest."""
    data = gguf_path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest.replace(":", "-")).write_bytes(data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "c" * 64,
            "size": 487,
        },
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": digest,
                "size": len(data),
            },
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": "sha256:" + "d" * 64,
                "size": 358,
            },
        ],
    }
    path = store / "manifests" / name_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return blobs / digest.replace(":", "-")


@pytest.fixture(autouse=True)
def no_model_stores(monkeypatch, tmp_path_factory):
    isolate_model_stores(monkeypatch, tmp_path_factory.mktemp("home"))


@pytest.fixture
def model_file(tmp_path):
    return write_model(tmp_path / "source.gguf")


def test_ollama_names_get_default_host_namespace_and_tag():
    assert parse_ollama_name("llama3.2") == ("registry.ollama.ai", "library", "llama3.2", "latest")
    assert parse_ollama_name("me/tiny:q8") == ("registry.ollama.ai", "me", "tiny", "q8")
    assert parse_ollama_name("hf.co/org/repo:Q4_K_M") == ("hf.co", "org", "repo", "Q4_K_M")


def test_ollama_manifest_leads_to_the_model_blob(tmp_path, model_file):
    store = tmp_path / "ollama"
    blob = add_to_ollama_store(store, "registry.ollama.ai/library/tiny/3b", model_file)
    assert ollama_blob("tiny:3b", store) == blob


def test_ollama_name_without_tag_means_latest(tmp_path, model_file):
    store = tmp_path / "ollama"
    blob = add_to_ollama_store(store, "registry.ollama.ai/library/tiny/latest", model_file)
    assert ollama_blob("tiny", store) == blob


def test_ollama_store_comes_from_OLLAMA_MODELS(tmp_path, model_file, monkeypatch):
    store = tmp_path / "elsewhere"
    blob = add_to_ollama_store(store, "registry.ollama.ai/library/tiny/latest", model_file)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    assert find_model_file("tiny", ModelSearch.defaults()) == blob


def test_lmstudio_publisher_and_repo_name_the_folder(tmp_path, model_file):
    repo = tmp_path / "lmstudio-community" / "tiny-GGUF"
    repo.mkdir(parents=True)
    target = repo / "tiny-Q8_0.gguf"
    target.write_bytes(model_file.read_bytes())
    (repo / "mmproj-tiny-f16.gguf").write_bytes(b"GGUF")
    assert lmstudio_file("lmstudio-community/tiny-GGUF", tmp_path) == target


def test_lmstudio_repo_name_alone_is_found(tmp_path, model_file):
    repo = tmp_path / "someone" / "tiny-GGUF"
    repo.mkdir(parents=True)
    target = repo / "tiny-Q8_0.gguf"
    target.write_bytes(model_file.read_bytes())
    assert lmstudio_file("tiny", tmp_path) == target


def test_lmstudio_split_model_resolves_to_its_first_part(tmp_path):
    repo = tmp_path / "someone" / "big-GGUF"
    repo.mkdir(parents=True)
    write_model(repo / "big-Q8_0.gguf", split_max_tensors=15)
    found = lmstudio_file("someone/big-GGUF", tmp_path)
    assert found is not None and found.name == "big-Q8_0-00001-of-00003.gguf"


def test_configured_store_is_searched(tmp_path, model_file):
    store = tmp_path / "custom-ollama"
    add_to_ollama_store(store, "registry.ollama.ai/library/tiny/latest", model_file)
    from memwarden.core.config import parse_config_data

    config = parse_config_data(
        {"plugins": {"gguf-estimator": {"ollama_models_dir": str(store)}}}, None
    )
    result = Warden(config).estimate(ModelRef(name="tiny"), 2048)
    assert result.estimator == "gguf-estimator"


def test_configured_models_dirs_are_searched_by_file_name(tmp_path, model_file):
    folder = tmp_path / "models" / "nested"
    folder.mkdir(parents=True)
    (folder / "tiny.gguf").write_bytes(model_file.read_bytes())
    search = ModelSearch(models_dirs=(tmp_path / "models",))
    assert find_model_file("tiny", search) == folder / "tiny.gguf"


def test_unknown_setting_of_the_estimator_is_a_config_error(tmp_path):
    from memwarden.core.config import parse_config_data
    from memwarden.core.errors import ConfigError

    config = parse_config_data({"plugins": {"gguf-estimator": {"ollama_dir": "x"}}}, None)
    with pytest.raises(ConfigError, match=r"plugins\.gguf-estimator\.ollama_dir: unknown key"):
        locate(ModelRef(name="tiny"), {}, config)


def test_missing_explicit_path_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFound, match=r"nope\.gguf: model file not found"):
        Warden(Config()).estimate(ModelRef(name=str(tmp_path / "nope.gguf")), 2048)


def test_lmstudio_path_in_metadata_leads_to_the_file(tmp_path, model_file):
    root = tmp_path / "lms"
    repo = root / "someone" / "tiny-GGUF"
    repo.mkdir(parents=True)
    (repo / "tiny-Q8_0.gguf").write_bytes(model_file.read_bytes())
    from memwarden.core.config import parse_config_data

    config = parse_config_data(
        {"plugins": {"gguf-estimator": {"lmstudio_models_dir": str(root)}}}, None
    )
    metadata = {"modelKey": "tiny", "path": "someone/tiny-GGUF/tiny-Q8_0.gguf"}
    model = ModelRef(name="my-tiny-alias", provider="lmstudio")
    result = Warden(config).estimate(model, 2048, metadata=metadata)
    assert result.estimator == "gguf-estimator"
    assert result.model.path == str(repo / "tiny-Q8_0.gguf")
