"""`memwarden serve`'s OpenAI-compatible routes, driven with the official `openai` client against
the loopback Ollama-protocol server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from front_door import front_door, wait_for
from ollama_server import ANSWER, EMBEDDING

from memwarden.core.errors import ModelBusy
from memwarden.core.providers import same_model

WORDS = ["The", " sky", " is", " blue", " because", " it", " is", " the", " color", " of"]
PIECES = [*WORDS, " the", " sky.", ""]
CAP_FOR_ONE = '[pressure]\nmax_managed_memory = "4GiB"\n'


def client(door, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{door.url}/v1", api_key="unused", max_retries=0, **options)


def ask(door, model: str, **options):
    return client(door).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "why is the sky blue"}], **options
    )


def loads(fake, name: str) -> int:
    """Loads the fake Ollama received for a model (an empty /api/generate)."""
    return sum(
        1
        for method, path, body in fake.requests
        if path == "/api/generate"
        and same_model(body.get("model", ""), name)
        and not body.get("prompt")
        and body.get("keep_alive") != 0
    )


@pytest.fixture
def door(tmp_path):
    with front_door(tmp_path) as (door, fake):
        yield door, fake


def test_chat_completion_answers_with_the_backends_text(door):
    server, _ = door
    answer = ask(server, "llama3.2")
    assert answer.choices[0].message.content == ANSWER
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 12)


def test_streamed_chat_completion_yields_the_backends_pieces_in_order(door):
    server, _ = door
    stream = ask(server, "llama3.2", stream=True)
    assert [chunk.choices[0].delta.content for chunk in stream] == PIECES


def test_completion_answers_with_the_backends_text(door):
    server, _ = door
    answer = client(server).completions.create(model="qwen3", prompt="why is the sky blue")
    assert answer.choices[0].text == ANSWER


def test_streamed_completion_yields_the_backends_pieces_in_order(door):
    server, _ = door
    stream = client(server).completions.create(model="qwen3", prompt="why", stream=True)
    assert [chunk.choices[0].text for chunk in stream] == PIECES


def test_embeddings_answer_the_backends_vector(door):
    server, _ = door
    answer = client(server).embeddings.create(model="qwen3", input="the sky")
    assert answer.data[0].embedding == EMBEDDING


def test_models_lists_every_model_the_providers_offer(door):
    server, _ = door
    listed = {(m.id, m.owned_by) for m in client(server).models.list()}
    assert listed == {
        ("llama3.2:latest", "ollama"),
        ("deepseek-r1:latest", "ollama"),
        ("qwen3:latest", "ollama"),
    }


def test_a_model_that_is_not_loaded_is_loaded_through_admission_first(door):
    server, fake = door
    ask(server, "llama3.2")
    events = [e.kind for e in server.services.control.events]
    assert (loads(fake, "llama3.2:latest"), "model-loaded" in events) == (1, True)


def test_an_unknown_model_is_a_404_in_openais_shape(door):
    server, _ = door
    with pytest.raises(openai.NotFoundError) as caught:
        ask(server, "no-such-model")
    assert caught.value.body["code"] == "model_not_found"
    assert "no reachable provider offers model 'no-such-model'" in caught.value.body["message"]


def test_concurrent_requests_for_a_model_that_is_loading_share_one_load(door):
    server, fake = door
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ask(server, "qwen3"), range(8)))
    assert [a.choices[0].message.content for a in answers] == [ANSWER] * 8
    assert loads(fake, "qwen3") == 1


def test_a_streamed_request_is_in_flight_until_its_stream_ends(door):
    server, fake = door
    fake.hold_streams.clear()
    stream = ask(server, "llama3.2", stream=True)
    first = next(iter(stream))
    busy = server.warden.usage.in_flight("llama3.2", "ollama")
    fake.hold_streams.set()
    rest = [chunk.choices[0].delta.content for chunk in stream]
    assert (first.choices[0].delta.content, busy, len(rest)) == ("The", 1, 12)
    assert wait_for(lambda: server.warden.usage.in_flight("llama3.2", "ollama") == 0)


def test_a_stream_is_recorded_with_its_time_to_first_token(door):
    server, _ = door
    list(ask(server, "llama3.2", stream=True))
    assert wait_for(lambda: len(server.warden.read_state("usage")) == 1)
    [record] = server.warden.read_state("usage")
    assert (record.model, record.success, record.time_to_first_token_s is not None) == (
        "llama3.2",
        True,
        True,
    )


def test_a_request_is_recorded_with_its_token_counts(door):
    server, _ = door
    ask(server, "llama3.2")
    assert wait_for(lambda: len(server.warden.read_state("usage")) == 1)
    [record] = server.warden.read_state("usage")
    assert (record.prompt_tokens, record.completion_tokens, record.success) == (5, 12, True)


def test_a_client_that_disconnects_mid_stream_closes_the_upstream_request(door):
    server, fake = door
    fake.hold_streams.clear()
    stream = ask(server, "llama3.2", stream=True)
    next(iter(stream))
    stream.close()
    assert wait_for(lambda: fake.disconnects == 1)
    assert wait_for(lambda: server.warden.usage.in_flight("llama3.2") == 0)


# -- a cap that allows one model at a time ------------------------------------------------


@pytest.fixture
def capped(tmp_path):
    with front_door(tmp_path, config=CAP_FOR_ONE) as (door, fake):
        yield door, fake


def test_a_cap_for_one_model_swaps_the_models_between_requests(capped):
    server, fake = capped
    ask(server, "llama3.2")
    ask(server, "qwen3")
    after_swap = sorted(fake.loaded)
    ask(server, "llama3.2")
    assert (after_swap, sorted(fake.loaded)) == (["qwen3:latest"], ["llama3.2:latest"])


def test_a_model_requested_while_another_streams_gets_503_with_retry_after(capped):
    server, fake = capped
    fake.hold_streams.clear()
    stream = ask(server, "llama3.2", stream=True)
    next(iter(stream))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(server, "qwen3")
    still_loaded = sorted(fake.loaded)
    fake.hold_streams.set()
    list(stream)
    assert (caught.value.status_code, caught.value.response.headers["retry-after"]) == (503, "2")
    assert caught.value.body["code"] == "model_busy"
    assert still_loaded == ["llama3.2:latest"]


def test_the_waiting_model_loads_once_the_stream_has_ended(capped):
    server, fake = capped
    fake.hold_streams.clear()
    stream = ask(server, "llama3.2", stream=True)
    next(iter(stream))
    with pytest.raises(openai.APIStatusError):
        ask(server, "qwen3")
    fake.hold_streams.set()
    list(stream)
    assert wait_for(lambda: server.warden.usage.in_flight("llama3.2") == 0)
    assert ask(server, "qwen3").choices[0].message.content == ANSWER
    assert sorted(fake.loaded) == ["qwen3:latest"]


def test_a_model_that_never_fits_is_refused_in_openais_shape_without_going_upstream(tmp_path):
    config = '[pressure]\nmax_managed_memory = "2GiB"\n'
    with front_door(tmp_path, config=config) as (server, fake):
        with pytest.raises(openai.BadRequestError) as caught:
            ask(server, "qwen3")
        sent = [path for _, path, _ in fake.requests if path.startswith("/v1/")]
    error = caught.value.body
    assert (error["type"], error["code"]) == ("insufficient_memory", "model_does_not_fit")
    assert error["message"].startswith(
        "refused to load 'qwen3': 'qwen3' need(s) 2.6 GiB at 4,096 tokens of context"
    )
    assert "max_managed_memory 2.0 GiB" in error["message"]
    assert sent == []


def test_refusals_are_counted_in_metrics(capped):
    server, fake = capped
    fake.hold_streams.clear()
    stream = ask(server, "llama3.2", stream=True)
    next(iter(stream))
    with pytest.raises(openai.APIStatusError):
        ask(server, "qwen3")
    fake.hold_streams.set()
    list(stream)
    text = server.services.metrics.render().decode()
    assert 'memwarden_admission_refusals_total{why="busy"} 1.0' in text


def test_a_model_serving_a_stream_is_not_unloaded_below_emergency(capped):
    server, fake = capped
    fake.hold_streams.clear()
    stream = ask(server, "llama3.2", stream=True)
    next(iter(stream))
    try:
        with pytest.raises(ModelBusy):
            server.warden.unload("llama3.2")
    finally:
        fake.hold_streams.set()
        list(stream)
    assert sorted(fake.loaded) == ["llama3.2:latest"]


def test_model_auto_is_chosen_by_pick_model_and_the_choice_is_in_a_header(door):
    door, _fake = door
    answer = client(door).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "why is the sky blue"}]
    )
    assert answer.headers["x-memwarden-model-choice"] == (
        "ollama/llama3.2:latest; pick-smallest; llama3.2:latest: the smallest of 3 capable "
        "models that fit now (1.9 GiB)"
    )
    completion = answer.parse()
    assert (completion.model, completion.choices[0].message.content) == (
        "llama3.2:latest",
        ANSWER,
    )


def test_a_pick_alias_names_the_model_it_stands_for(tmp_path):
    aliases = '[pick.aliases]\nthinker = "deepseek-r1:latest"\n'
    with front_door(tmp_path, config=aliases) as (door, fake):
        answer = client(door).chat.completions.with_raw_response.create(
            model="thinker", messages=[{"role": "user", "content": "why is the sky blue"}]
        )
        assert answer.headers["x-memwarden-model-choice"].startswith(
            "ollama/deepseek-r1:latest; pick-preference; "
        )
        assert answer.parse().model == "deepseek-r1:latest"
        assert loads(fake, "deepseek-r1:latest") == 1
