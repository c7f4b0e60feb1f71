"""`memwarden serve`'s Ollama-native routes, driven with the official `ollama` client, so that
Ollama clients can point at memwarden unchanged."""

from __future__ import annotations

import ollama
import pytest
from front_door import front_door
from ollama_server import ANSWER, EMBEDDING

PIECES = ANSWER.split(" ")


@pytest.fixture
def door(tmp_path):
    with front_door(tmp_path) as (door, fake):
        yield ollama.Client(host=door.url), fake


def test_chat_answers_with_the_backends_text(door):
    client, _ = door
    answer = client.chat(model="llama3.2", messages=[{"role": "user", "content": "why"}])
    assert (answer.message.content, answer.eval_count) == (ANSWER, 12)


def test_streamed_chat_yields_the_backends_pieces_then_done(door):
    client, _ = door
    parts = list(
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "why"}], stream=True)
    )
    assert "".join(p.message.content for p in parts) == ANSWER
    assert [p.done for p in parts] == [False] * len(PIECES) + [True]


def test_generate_answers_with_the_backends_text(door):
    client, _ = door
    assert client.generate(model="llama3.2", prompt="why is the sky blue").response == ANSWER


def test_embed_answers_the_backends_vector(door):
    client, _ = door
    assert client.embed(model="qwen3", input="the sky").embeddings == [EMBEDDING]


def test_tags_lists_ollamas_models(door):
    client, _ = door
    assert [m.model for m in client.list().models] == [
        "llama3.2:latest",
        "deepseek-r1:latest",
        "qwen3:latest",
    ]


def test_ps_shows_the_model_a_request_loaded(door):
    client, _ = door
    client.chat(model="qwen3", messages=[{"role": "user", "content": "why"}])
    assert [(m.model, m.context_length) for m in client.ps().models] == [("qwen3:latest", 4096)]


def test_num_ctx_is_the_context_admission_loads_the_model_with(door):
    client, fake = door
    client.chat(
        model="qwen3", messages=[{"role": "user", "content": "why"}], options={"num_ctx": 8192}
    )
    [load] = [b for _, path, b in fake.requests if path == "/api/generate" and not b.get("prompt")]
    assert load["options"]["num_ctx"] == 8192


def test_a_model_that_never_fits_is_refused_in_ollamas_shape(tmp_path):
    config = '[pressure]\nmax_managed_memory = "2GiB"\n'
    with front_door(tmp_path, config=config) as (server, fake):
        with pytest.raises(ollama.ResponseError) as caught:
            ollama.Client(host=server.url).chat(
                model="qwen3", messages=[{"role": "user", "content": "why"}]
            )
        sent = [path for _, path, _ in fake.requests if path == "/api/chat"]
    assert caught.value.status_code == 507
    assert caught.value.error.startswith("refused to load 'qwen3': 'qwen3' need(s) 2.6 GiB")
    assert sent == []
