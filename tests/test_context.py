"""Context compression: tokenizer counts, the four built-in strategies, the rules they keep."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from memwarden.context import (
    CompressionContext,
    ContextTooLarge,
    EstimateTokenizer,
    compress,
    count_window,
    tokenizer_for,
)
from memwarden.context.window import UnknownStrategy
from memwarden.core.config import Config, parse_config_data
from memwarden.core.plugins import Plugins
from memwarden.core.types import ContextWindow, Message
from memwarden.core.warden import Warden
from memwarden.plugins.context import importance, recent, semantic, summary
from memwarden.testing import CompressorPluginContract

STRATEGIES = ("context-recent", "context-importance", "context-semantic", "context-summary")
WORDS = EstimateTokenizer()


def builtin_warden(config: Config | None = None) -> Warden:
    config = config or Config()
    plugins = Plugins(config, load_entry_points=False, env={})
    return Warden(config, plugins)


def conversation(turns: int = 30) -> ContextWindow:
    messages = [Message("system", "You are a careful assistant.", pinned=True)]
    for n in range(turns):
        messages.append(Message("user", f"Question {n}: tell me about topic {n} please."))
        messages.append(Message("assistant", f"Topic {n} is about the number {n * 7} and more."))
    messages[5] = Message("user", "Remember this: the launch code is 4417.")
    messages.append(Message("user", "What is the launch code?"))
    return count_window(ContextWindow(messages=tuple(messages)), WORDS)


# -- tokenizer ---------------------------------------------------------------------------------


def test_gemma_tokenizer_counts_with_the_gguf_vocabulary(gemma_gguf: Path) -> None:
    tokenizer = tokenizer_for(str(gemma_gguf))
    assert (tokenizer.exact, tokenizer.count("The launch code is 4417.")) == (True, 10)


def test_gemma_tokenizer_is_loaded_once_per_file(gemma_gguf: Path) -> None:
    assert tokenizer_for(str(gemma_gguf)) is tokenizer_for(str(gemma_gguf))


def test_unknown_model_falls_back_to_an_estimate_that_says_so() -> None:
    tokenizer = tokenizer_for("no-such-model:1b")
    assert (tokenizer.exact, tokenizer.source, tokenizer.count("12345678")) == (
        False,
        "estimate",
        2,
    )


# -- the rules every strategy keeps -------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_fits_the_budget(strategy: str) -> None:
    window = conversation()
    done = compress(builtin_warden(), window, 200, tokenizer=WORDS, strategy=strategy)
    assert (done.strategy, done.tokens_after <= 200) == (strategy, True)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_keeps_pinned_and_latest_user_message_verbatim(strategy: str) -> None:
    window = conversation()
    done = compress(builtin_warden(), window, 120, tokenizer=WORDS, strategy=strategy)
    assert done.window.messages[0] == window.messages[0]
    assert done.window.messages[-1] == window.messages[-1]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_holds_the_budget_counted_by_gemma(strategy: str, gemma_gguf: Path) -> None:
    tokenizer = tokenizer_for(str(gemma_gguf))
    window = ContextWindow(
        messages=tuple(Message(m.role, m.content, pinned=m.pinned) for m in conversation().messages)
    )
    done = compress(builtin_warden(), window, 150, tokenizer=tokenizer, strategy=strategy)
    recounted = sum(tokenizer.count(m.content) for m in done.window.messages)
    assert (recounted <= 150, done.exact_tokens) == (True, True)


def test_window_that_fits_is_returned_as_it_is() -> None:
    window = conversation(3)
    done = compress(builtin_warden(), window, 10_000, tokenizer=WORDS)
    assert (done.window, done.strategy, done.dropped) == (window, None, 0)


def test_must_keep_over_the_budget_is_context_too_large() -> None:
    window = conversation()
    with pytest.raises(ContextTooLarge, match="over the budget of 5"):
        compress(builtin_warden(), window, 5, tokenizer=WORDS)


def test_unknown_strategy_names_the_enabled_ones() -> None:
    with pytest.raises(UnknownStrategy, match="no enabled context strategy is called 'nope'"):
        compress(builtin_warden(), conversation(), 100, tokenizer=WORDS, strategy="nope")


def test_summary_strategy_answers_first_when_none_is_named() -> None:
    done = compress(builtin_warden(), conversation(), 200, tokenizer=WORDS)
    assert done.strategy == "context-summary"


def test_a_disabled_strategy_is_not_asked() -> None:
    config = parse_config_data({"plugins": {"disabled": ["context-summary"]}}, None)
    done = compress(builtin_warden(config), conversation(), 200, tokenizer=WORDS)
    assert done.strategy == "context-semantic"


# -- each strategy's own behaviour --------------------------------------------------------------


def test_recent_keeps_the_newest_turns_and_drops_the_middle() -> None:
    window = conversation()
    done = compress(builtin_warden(), window, 60, tokenizer=WORDS, strategy="context-recent")
    kept = [window.messages.index(m) for m in done.window.messages]
    assert kept == [0, *range(len(window.messages) - len(kept) + 1, len(window.messages))]


def test_importance_keeps_an_old_message_the_question_refers_to() -> None:
    window = conversation()
    done = compress(builtin_warden(), window, 60, tokenizer=WORDS, strategy="context-importance")
    assert window.messages[5] in done.window.messages


def test_summary_extractive_fallback_keeps_the_planted_number() -> None:
    window = conversation()
    done = compress(builtin_warden(), window, 150, tokenizer=WORDS, strategy="context-summary")
    summary_message = done.window.messages[1]
    assert summary_message.content.startswith("Summary of ")
    assert "the launch code is 4417." in summary_message.content


def test_summary_counts_the_messages_it_stands_for() -> None:
    window = conversation()
    done = compress(builtin_warden(), window, 150, tokenizer=WORDS, strategy="context-summary")
    assert done.summarised == done.dropped == len(window.messages) + 1 - len(done.window.messages)


def test_summary_uses_the_configured_model_through_generate() -> None:
    window = conversation()
    context = CompressionContext(
        tokenizer=WORDS,
        generate=lambda model, prompt: f"{model} says the code is 4417.",
        config=parse_config_data({"plugins": {"context-summary": {"model": "tiny"}}}, None),
    )
    result = summary.compress_context(window=window, budget_tokens=150, context=context)
    assert result.messages[1].content.endswith("earlier messages: tiny says the code is 4417.")


def test_semantic_recalls_the_fact_the_question_matches() -> None:
    window = conversation()
    done = compress(builtin_warden(), window, 150, tokenizer=WORDS, strategy="context-semantic")
    recalled = done.window.messages[1].content
    assert recalled.startswith("Facts recalled from earlier in this conversation: Remember this")


def test_semantic_session_memory_persists_between_calls(tmp_path: Path) -> None:
    context = CompressionContext(tokenizer=WORDS, session_id="s1", state_dir=str(tmp_path))
    semantic.compress_context(window=conversation(), budget_tokens=150, context=context)
    later = count_window(
        ContextWindow(messages=(Message("user", "So what was the launch code again?"),)), WORDS
    )
    result = semantic.compress_context(window=later, budget_tokens=150, context=context)
    assert "the launch code is 4417." in result.messages[0].content


def test_importance_options_are_validated() -> None:
    config = parse_config_data({"plugins": {"context-importance": {"user_weight": "x"}}}, None)
    with pytest.raises(Exception, match="user_weight"):
        builtin_warden(config)


# -- conformance -------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [recent, importance, semantic, summary])
class TestBuiltinCompressorsConform(CompressorPluginContract):
    @pytest.fixture
    def plugin(self, module: object) -> object:
        return module


# -- CLI ---------------------------------------------------------------------------------------


def write_messages(path: Path, window: ContextWindow) -> Path:
    data = [{"role": m.role, "content": m.content} for m in window.messages]
    data[0]["pinned"] = True
    path.write_text(json.dumps(data))
    return path


def test_cli_compress_json_has_the_documented_keys(tmp_path: Path, run_cli) -> None:
    file = write_messages(tmp_path / "chat.json", conversation())
    result = run_cli("context", "compress", str(file), "--budget", "150", "--json")
    assert (result.exit_code, sorted(result.json())) == (
        0,
        ["dropped", "messages", "strategy", "summarised", "tokens_after", "tokens_before"],
    )


def test_cli_compress_counts_exactly_with_gemma(tmp_path: Path, run_cli, gemma_gguf: Path) -> None:
    window = conversation()
    file = write_messages(tmp_path / "chat.json", window)
    args = ["context", "compress", str(file), "--budget", "150", "--model", str(gemma_gguf)]
    data = run_cli(*args, "--strategy", "context-recent", "--json").json()
    tokenizer = tokenizer_for(str(gemma_gguf))
    expected = sum(tokenizer.count(m.content) for m in window.messages)
    kept = sum(tokenizer.count(m["content"]) for m in data["messages"])
    assert (data["tokens_before"], data["tokens_after"], data["strategy"]) == (
        expected,
        kept,
        "context-recent",
    )


def test_cli_compress_without_a_model_says_the_counts_are_estimated(
    tmp_path: Path, run_cli
) -> None:
    file = write_messages(tmp_path / "chat.json", conversation())
    result = run_cli("context", "compress", str(file), "--budget", "150")
    assert "tokens are estimated at 4 characters a token (no model named)" in result.stderr


def test_cli_compress_refuses_a_budget_below_the_latest_question(tmp_path: Path, run_cli) -> None:
    file = write_messages(tmp_path / "chat.json", conversation())
    result = run_cli("context", "compress", str(file), "--budget", "3")
    assert (result.exit_code, "over the budget of 3" in result.stderr) == (3, True)


def test_cli_compress_names_a_malformed_message(tmp_path: Path, run_cli) -> None:
    file = tmp_path / "chat.json"
    file.write_text(json.dumps([{"role": "user"}]))
    result = run_cli("context", "compress", str(file), "--budget", "10")
    assert (result.exit_code, "message 0 needs a string 'role'" in result.stderr) == (2, True)


def test_cli_show_prints_a_sessions_window_and_facts(tmp_path: Path, run_cli, write_config) -> None:
    from memwarden.context.memory import open_memory, save_window

    config = write_config(f'[state]\npath = "{tmp_path / "state" / "state.db"}"\n')
    db = open_memory(tmp_path / "state" / "context-memory.db")
    save_window(db, "s1", conversation(2 + 2), now=1.0)
    db["facts"].insert({"session": "s1", "fact": "the launch code is 4417."})
    db.close()
    data = run_cli("--config", str(config), "context", "show", "s1", "--json").json()
    assert (len(data["messages"]), data["facts"]) == (10, ["the launch code is 4417."])


# -- managed sessions and the governor's compress action ------------------------------------------


def test_governor_compress_action_frees_at_least_the_tokens_it_claimed() -> None:
    from memwarden.core.governor import Governor
    from memwarden.core.sessions import ManagedSession
    from memwarden.core.types import PressureLevel
    from memwarden.plugins.strategies import compress_context as strategy

    warden = builtin_warden(parse_config_data({"state": {"enabled": False}}, None))
    governor = Governor(warden)
    window = conversation(60)
    governor.sessions.register(
        ManagedSession(session_id="s1", model="m", window=window, kv_bytes_per_token=1024)
    )
    reading = attrs.evolve(governor.sample(), level=PressureLevel.WARNING)
    [action] = strategy.on_pressure(reading=reading, context=governor.context(reading))
    governor.execute(action)
    after = governor.sessions.get("s1").window.tokens
    assert (window.tokens - after) * 1024 >= action.expected_freed_bytes


def test_session_registry_writes_windows_to_the_memory_file(tmp_path: Path) -> None:
    from memwarden.context.memory import load_window, open_memory
    from memwarden.core.sessions import ManagedSession, SessionRegistry

    registry = SessionRegistry(tmp_path / "context-memory.db")
    window = conversation(3)
    registry.register(ManagedSession(session_id="s1", model="m", window=window))
    db = open_memory(tmp_path / "context-memory.db")
    assert load_window(db, "s1") == attrs.evolve(window, model="m")
