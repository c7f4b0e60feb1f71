"""The front door fits chat requests in the loaded context, driven with the openai client
against the loopback Ollama-protocol server (whose models load with a 4,096-token context)."""

from __future__ import annotations

import openai
import pytest
from front_door import front_door
from ollama_server import ANSWER

from memwarden.context import EstimateTokenizer

TOKENS = EstimateTokenizer()
QUESTION = "What was the vault code I gave you at the start?"


def client(door) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{door.url}/v1", api_key="unused", max_retries=0)


def long_conversation(turns: int = 80) -> list[dict[str, str]]:
    """About 9,000 estimated tokens: twice the loaded context."""
    messages = [{"role": "system", "content": "You are terse."}]
    messages.append({"role": "user", "content": "Remember: the vault code is TANGO-4417."})
    for n in range(turns):
        filler = f"Turn {n} talks about hash maps, threads and load balancers at length. " * 6
        messages.append({"role": "user" if n % 2 else "assistant", "content": filler})
    messages.append({"role": "user", "content": QUESTION})
    return messages


def forwarded(fake) -> list[dict[str, str]]:
    return [body for _, path, body in fake.requests if path == "/v1/chat/completions"][-1][
        "messages"
    ]


@pytest.fixture
def door(tmp_path):
    with front_door(tmp_path) as (door, fake):
        yield door, fake


def test_a_conversation_longer_than_the_loaded_context_is_compressed_to_fit(door):
    server, fake = door
    messages = long_conversation()
    assert sum(TOKENS.count(m["content"]) for m in messages) > 4096
    raw = client(server).chat.completions.with_raw_response.create(
        model="llama3.2", messages=messages
    )
    sent = forwarded(fake)
    # 4,096 less 512 for the reply less 8 template tokens per message of the request.
    budget = 4096 - 512 - 8 * len(messages)
    assert sum(TOKENS.count(m["content"]) for m in sent) <= budget
    assert (sent[0], sent[-1]) == (messages[0], messages[-1])
    assert raw.parse().choices[0].message.content == ANSWER


def test_the_response_header_says_what_was_done(door):
    server, _ = door
    raw = client(server).chat.completions.with_raw_response.create(
        model="llama3.2", messages=long_conversation()
    )
    header = raw.headers["x-memwarden-context"]
    assert header.startswith("compressed; strategy=context-summary; tokens=")
    assert header.endswith("tokenizer=estimate")


def test_the_summary_keeps_the_planted_fact(door):
    server, fake = door
    client(server).chat.completions.create(model="llama3.2", messages=long_conversation())
    summary = forwarded(fake)[1]
    assert "the vault code is TANGO-4417." in summary["content"]


def test_a_conversation_that_fits_is_forwarded_untouched_without_a_header(door):
    server, fake = door
    messages = [{"role": "user", "content": "why is the sky blue"}]
    raw = client(server).chat.completions.with_raw_response.create(
        model="llama3.2", messages=messages
    )
    assert (forwarded(fake), raw.headers.get("x-memwarden-context")) == (messages, None)


def test_session_mode_keeps_the_conversation_on_the_server(door):
    server, fake = door
    session = {"X-Memwarden-Session": "s1"}
    api = client(server)
    first = [{"role": "user", "content": "My name is Ingrid."}]
    api.chat.completions.create(model="llama3.2", messages=first, extra_headers=session)
    second = [{"role": "user", "content": "What is my name?"}]
    api.chat.completions.create(model="llama3.2", messages=second, extra_headers=session)
    assert forwarded(fake) == [*first, {"role": "assistant", "content": ANSWER}, *second]


def test_session_mode_registers_the_session_with_the_governor(door):
    server, _ = door
    client(server).chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Memwarden-Session": "s2"},
    )
    session = server.warden.governor.sessions.get("s2")
    assert [m.role for m in session.window.messages] == ["user", "assistant"]


def test_a_long_session_is_compressed_at_ninety_percent_of_its_budget(door):
    server, fake = door
    raw = client(server).chat.completions.with_raw_response.create(
        model="llama3.2",
        messages=long_conversation(),
        extra_headers={"X-Memwarden-Session": "s3"},
    )
    budget = 4096 - 512 - 8 * len(long_conversation())
    sent = forwarded(fake)
    assert sum(TOKENS.count(m["content"]) for m in sent) <= int(budget * 0.6)
    assert raw.headers["x-memwarden-context"].startswith("compressed; strategy=")


def test_a_loaded_summary_model_writes_the_summary_through_its_provider(tmp_path):
    config = '[plugins.context-summary]\nmodel = "llama3.2"\n'
    with front_door(tmp_path, config=config) as (server, fake):
        client(server).chat.completions.create(model="llama3.2", messages=long_conversation())
        summary = forwarded(fake)[1]["content"]
    assert summary.endswith("earlier messages: " + ANSWER)


def test_a_summary_model_that_is_not_loaded_leaves_the_extractive_summary(tmp_path):
    config = '[plugins.context-summary]\nmodel = "qwen2.5"\n'
    with front_door(tmp_path, config=config) as (server, fake):
        client(server).chat.completions.create(model="llama3.2", messages=long_conversation())
        summary = forwarded(fake)[1]["content"]
    assert "the vault code is TANGO-4417." in summary


def test_under_pressure_the_budget_is_halved(door):
    from memwarden.core.types import PressureLevel

    server, fake = door
    client(server).chat.completions.create(  # loaded first: no admission samples again
        model="llama3.2", messages=[{"role": "user", "content": "hi"}]
    )
    server.warden.governor.level = PressureLevel.WARNING
    messages = long_conversation()
    client(server).chat.completions.create(model="llama3.2", messages=messages)
    half = (4096 - 512 - 8 * len(messages)) // 2
    assert sum(TOKENS.count(m["content"]) for m in forwarded(fake)) <= half


def test_context_show_reads_a_session_the_front_door_kept(tmp_path, run_cli):
    with front_door(tmp_path) as (server, _):
        client(server).chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"X-Memwarden-Session": "s4"},
        )
    data = run_cli("--config", str(tmp_path / "memwarden.toml"), "context", "show", "s4", "--json")
    assert [m["role"] for m in data.json()["messages"]] == ["user", "assistant"]


def test_the_governors_compress_action_shrinks_a_front_door_session(door):
    from memwarden.core.types import Action, ActionKind

    server, fake = door
    session = {"X-Memwarden-Session": "s5"}
    api = client(server)
    for n in range(6):
        text = f"Note {n}: the tide table says {n * 11} centimetres at noon, near the harbour."
        api.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": text}], extra_headers=session
        )
    governor = server.warden.governor
    governor.execute(
        Action(
            kind=ActionKind.COMPRESS_CONTEXT,
            strategy="test",
            description="compress s5",
            expected_freed_bytes=0,
            cost=2.0,
            session_id="s5",
            budget_tokens=60,
        )
    )
    api.chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "What was note 2?"}],
        extra_headers=session,
    )
    sent = forwarded(fake)
    assert sum(TOKENS.count(m["content"]) for m in sent[:-1]) <= 60
    assert sent[-1] == {"role": "user", "content": "What was note 2?"}
