"""`memwarden context compress` and `memwarden context show`: the context tiers by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.context import (
    CompressionResult,
    compress,
    tokenizer_for,
)
from memwarden.context.memory import load_window, memory_path, open_memory, session_facts
from memwarden.context.tokens import CHARS_PER_TOKEN
from memwarden.core.errors import ConfigError, MemwardenError
from memwarden.core.types import ContextWindow, Message


class MessagesFileError(MemwardenError):
    """A messages file that is not an OpenAI-style list of messages."""

    code = "messages-invalid"
    exit_code = 2


def read_messages(path: Path, model: str | None) -> ContextWindow:
    """An OpenAI-style ``messages`` list (or an object with one) as a window; a message with
    ``"pinned": true`` is kept verbatim by every strategy."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessagesFileError(
            f"{path}: cannot read a JSON messages list ({exc})",
            hint='give a JSON list like [{"role": "user", "content": "..."}]',
        ) from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list):
        raise MessagesFileError(
            f"{path}: expected a JSON list of messages, got {type(data).__name__}",
            hint='give a JSON list like [{"role": "user", "content": "..."}]',
        )
    messages = []
    for n, item in enumerate(data):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("role"), str)
            or not isinstance(item.get("content"), str)
        ):
            raise MessagesFileError(
                f"{path}: message {n} needs a string 'role' and a string 'content'",
                hint="text content only: images and tool calls are not compressed",
            )
        messages.append(Message(item["role"], item["content"], pinned=bool(item.get("pinned"))))
    return ContextWindow(messages=tuple(messages), model=model)


def result_data(result: CompressionResult) -> dict[str, Any]:
    """The ``--json`` shape of a compression (the issue's contract)."""
    return {
        "messages": [{"role": m.role, "content": m.content} for m in result.window.messages],
        "tokens_before": result.tokens_before,
        "tokens_after": result.tokens_after,
        "strategy": result.strategy,
        "dropped": result.dropped,
        "summarised": result.summarised,
    }


@click.group()
def context() -> None:
    """Fit conversations in a token budget (the context tiers)."""


@context.command("compress")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--budget", type=click.IntRange(min=1), required=True, help="Tokens at most.")
@click.option("--strategy", help="A context strategy plugin (default: the first that answers).")
@click.option("--model", help="The model whose tokenizer counts (a GGUF path or a model name).")
@json_option
@pass_app
def compress_command(
    app: AppContext,
    file: Path,
    budget: int,
    strategy: str | None,
    model: str | None,
    as_json: bool,
) -> None:
    """Compress the OpenAI-style messages in FILE to at most --budget tokens."""
    window = read_messages(file, model)
    warden = app.warden
    tokenizer = tokenizer_for(model, warden.config)
    if not tokenizer.exact:
        reason = getattr(tokenizer, "reason", "unknown")
        app.output.warn(
            f"tokens are estimated at {CHARS_PER_TOKEN} characters a token ({reason}); "
            "pass --model with a GGUF file for exact counts"
        )
    result = compress(warden, window, budget, tokenizer=tokenizer, strategy=strategy)
    if as_json:
        app.output.emit_json(result_data(result))
        return
    how = result.strategy or "nothing to do, it fits"
    app.output.line(
        f"{how}: {result.tokens_before} -> {result.tokens_after} tokens (budget {budget}), "
        f"{result.dropped} messages dropped, {result.summarised} summarised; "
        f"counted by {result.tokenizer}"
    )
    for message in result.window.messages:
        text = " ".join(message.content.split())
        app.output.line(f"  {message.role:>9} {message.tokens:>5}  {text[:80]}")


@context.command("show")
@click.argument("session")
@json_option
@pass_app
def show(app: AppContext, session: str, as_json: bool) -> None:
    """Show a managed session's window (summary chain included) and its remembered facts."""
    path = memory_path(app.warden.config)
    if path is None or not path.exists():
        raise ConfigError(
            f"no context memory at {path or '(no [state] path)'}",
            hint="sessions are kept once `memwarden serve` has served one with X-Memwarden-Session",
        )
    db = open_memory(path)
    try:
        window = load_window(db, session)
        facts = session_facts(db, session)
    finally:
        db.close()
    if window is None and not facts:
        raise MessagesFileError(
            f"no session {session!r} in {path}",
            hint="`memwarden context show` names a session a client sent in X-Memwarden-Session",
        )
    messages = window.messages if window is not None else ()
    if as_json:
        app.output.emit_json(
            {
                "session": session,
                "model": window.model if window is not None else None,
                "tokens": window.tokens if window is not None else 0,
                "messages": [
                    {"role": m.role, "content": m.content, "tokens": m.tokens} for m in messages
                ],
                "facts": facts,
            }
        )
        return
    tokens = window.tokens if window is not None else 0
    app.output.line(f"session {session}: {len(messages)} messages, {tokens} tokens")
    for message in messages:
        text = " ".join(message.content.split())
        app.output.line(f"  {message.role:>9} {message.tokens or 0:>5}  {text[:80]}")
    app.output.line(f"{len(facts)} facts remembered")
    for fact in facts[-10:]:
        app.output.line(f"  {fact[:100]}")


def register(cli: click.Group) -> None:
    cli.add_command(context)
