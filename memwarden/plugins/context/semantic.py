"""``context-semantic``: older turns become facts in SQLite (FTS5), recalled by relevance.

The system prompt, pinned messages, the latest user message and the newest turns up to
``recent_tokens`` are kept verbatim. Every sentence of the older turns is stored as a fact in an
FTS5 table through sqlite-utils; the facts that best match the latest user message (BM25 over its
keywords) are recalled into one system message, as many as the budget holds. For a managed
session (``CompressionContext.session_id``) the facts live in ``context-memory.db`` next to the
state file and accumulate between requests; otherwise in memory, for the one call.
Embeddings are not used yet: no built-in provider offers them through memwarden.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from memwarden.context.extract import keywords, sentences
from memwarden.context.memory import MEMORY_FILE
from memwarden.context.window import (
    RECALL_PREFIX,
    CompressionContext,
    fill_newest,
    insert_after_system_prompt,
    keep_core,
    tokens_of,
)
from memwarden.core.types import ContextWindow, Message
from memwarden.hookspecs import hookimpl

if TYPE_CHECKING:
    import sqlite_utils

NAME = "context-semantic"
_lock = threading.Lock()


@attrs.frozen
class SemanticOptions:
    """``[plugins.context-semantic]``."""

    recent_tokens: int = attrs.field(default=500, validator=attrs.validators.ge(0))
    # The buffer's most share of the room the kept messages leave, so that older turns fit too.
    recent_share: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    # Most facts recalled into one window.
    recall_limit: int = attrs.field(default=20, validator=attrs.validators.ge(1))


OPTIONS = SemanticOptions


def open_store(context: CompressionContext) -> sqlite_utils.Database:
    """The fact store: the memory file for a session, a fresh in-memory database otherwise."""
    from memwarden.context.memory import open_memory  # sqlite-utils: only when compressing

    if context.session_id is not None and context.state_dir is not None:
        return open_memory(Path(context.state_dir) / MEMORY_FILE)
    return open_memory(None)


def remember(db: sqlite_utils.Database, session: str, older: list[Message]) -> None:
    rows = [
        {"session": session, "fact": fact}
        for m in older
        if m.role in ("user", "assistant", "tool", "system")
        for fact in sentences(m.content)
        if not fact.startswith(RECALL_PREFIX.strip())
    ]
    db["facts"].insert_all(rows, ignore=True)


def recall(db: sqlite_utils.Database, session: str, query: str, limit: int) -> list[str]:
    """The facts of ``session`` that best match ``query``, best first."""
    words = keywords(query)
    if not words:
        return []
    match = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
    rows = db.execute(
        "select facts.fact from facts join facts_fts on facts.rowid = facts_fts.rowid "
        "where facts_fts match ? and facts.session = ? order by facts_fts.rank limit ?",
        [match, session, limit],
    ).fetchall()
    return [row[0] for row in rows]


def recall_window(
    window: ContextWindow,
    budget_tokens: int,
    options: SemanticOptions,
    context: CompressionContext,
) -> ContextWindow | None:
    keep = keep_core(window, budget_tokens)
    if keep is None:
        return None
    messages = window.messages
    free = budget_tokens - tokens_of(messages[i] for i in keep)
    buffer = min(options.recent_tokens, int(free * options.recent_share))
    chosen = fill_newest(messages, keep, budget_tokens, limit=buffer)
    older = [m for i, m in enumerate(messages) if i not in chosen]
    session = context.session_id or ""
    latest = next((m for m in reversed(messages) if m.role == "user"), None)
    with _lock:
        db = open_store(context)
        try:
            remember(db, session, older)
            facts = recall(db, session, latest.content if latest else "", options.recall_limit)
        finally:
            db.close()
    room = budget_tokens - tokens_of(messages[i] for i in chosen)
    recalled: list[str] = []
    for fact in facts:
        text = RECALL_PREFIX + " ".join([*recalled, fact])
        if context.tokenizer.count(text) <= room:
            recalled.append(fact)
    result = [messages[i] for i in sorted(chosen)]
    if recalled:
        text = RECALL_PREFIX + " ".join(recalled)
        insert_after_system_prompt(
            result, Message(role="system", content=text, tokens=context.tokenizer.count(text))
        )
    return ContextWindow(messages=tuple(result), model=window.model)


@hookimpl
def compress_context(
    window: ContextWindow, budget_tokens: int, context: CompressionContext
) -> ContextWindow | None:
    if not context.answers(NAME):
        return None
    return recall_window(window, budget_tokens, context.options(NAME, SemanticOptions), context)
