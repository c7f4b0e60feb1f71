"""`memwarden serve` in front of the embedded llama.cpp runtime and the real Gemma 3 270M:
OpenAI clients get the model's exact greedy text, streamed or whole."""

from __future__ import annotations

import os
import shutil

import openai
import pytest
from front_door import wait_for

from memwarden.core.config import load_config
from memwarden.core.warden import Warden
from memwarden.serve.app import FrontDoor

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "The capital of France is"
# Gemma 3 270M's greedy continuation of PROMPT (a base model: it continues the text).
GREEDY = " the capital of the country of France."


@pytest.fixture(scope="module")
def door(gemma_gguf, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedded")
    config = tmp / "memwarden.toml"
    config.write_text(
        f"""
[state]
path = "{tmp / "state.db"}"

[plugins]
disabled = ["ollama", "lmstudio"]

[plugins.llamacpp]
models_dir = "{gemma_gguf.parent}"
default_context_tokens = 2048
"""
    )
    door = FrontDoor(Warden(load_config(config)), port=0, monitor=False, psi=False)
    with door:
        yield door


def client(door) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{door.url}/v1", api_key="unused", max_retries=0)


def test_a_completion_is_the_models_exact_greedy_text(door):
    answer = client(door).completions.create(model=MODEL, prompt=PROMPT, max_tokens=8)
    assert (answer.choices[0].text, answer.usage.completion_tokens) == (GREEDY, 8)


def test_a_streamed_completion_is_the_same_text_in_pieces(door):
    stream = client(door).completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, stream=True)
    pieces = [chunk.choices[0].text for chunk in stream]
    assert ("".join(pieces), len(pieces)) == (GREEDY, 9)


def test_a_stop_string_ends_the_text_before_it(door):
    answer = client(door).completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, stop=[" of"])
    assert (answer.choices[0].text, answer.choices[0].finish_reason) == (" the capital", "stop")


def test_a_seeded_sample_repeats(door):
    def sample() -> str:
        answer = client(door).completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0.9, seed=7
        )
        return answer.choices[0].text

    assert sample() == sample()


def test_a_chat_is_rendered_with_the_models_chat_template(door):
    answer = client(door).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6
    )
    # 1 BOS + "<start_of_turn>user\\nHi<end_of_turn>\\n<start_of_turn>model\\n"
    assert answer.usage.prompt_tokens == 10


def test_a_client_that_disconnects_leaves_the_runtime_ready_for_the_next_request(door):
    stream = client(door).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=200, stream=True
    )
    next(iter(stream))
    stream.close()
    assert wait_for(lambda: door.warden.usage.in_flight(MODEL) == 0, timeout_s=30)
    answer = client(door).completions.create(model=MODEL, prompt=PROMPT, max_tokens=8)
    assert answer.choices[0].text == GREEDY


def test_a_cap_for_one_embedded_model_swaps_two_of_them(gemma_gguf, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("gemma-a", "gemma-b"):
        try:
            os.link(gemma_gguf, models / f"{name}.gguf")
        except OSError:
            shutil.copyfile(gemma_gguf, models / f"{name}.gguf")
    settings = f"""
[state]
enabled = false

[plugins]
disabled = ["ollama", "lmstudio"]

[plugins.llamacpp]
models_dir = "{models}"
default_context_tokens = 1024
"""
    config = tmp_path / "memwarden.toml"
    config.write_text(settings)
    warden = Warden(load_config(config))
    one = max(
        warden.estimate(warden.model_ref("gemma-a"), 4096).total_bytes,
        warden.load("gemma-a", context_tokens=1024).total_bytes,
    )
    warden.unload("gemma-a")
    config.write_text(settings + f"\n[pressure]\nmax_managed_memory = {int(one * 1.5)}\n")
    with FrontDoor(Warden(load_config(config)), port=0, monitor=False) as door:
        texts = [
            client(door).completions.create(model=name, prompt=PROMPT, max_tokens=8).choices[0].text
            for name in ("gemma-a", "gemma-b")
        ]
        loaded = [m.name for m in door.warden.loaded_models()]
        evicted = [
            e.data["model"]
            for e in door.services.control.events
            if e.kind == "action-taken" and e.data.get("strategy") == "ensure"
        ]
    assert (texts, loaded, evicted) == ([GREEDY, GREEDY], ["gemma-b"], ["gemma-a"])
