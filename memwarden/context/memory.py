"""Where context tiers outlive a request: one SQLite file (``context-memory.db``, next to the
state file) through sqlite-utils. Table ``facts`` (with FTS5) is the semantic memory, one row a
sentence per session; table ``sessions`` the latest window of each managed session, summary
chain included, as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from memwarden.core.config import Config
from memwarden.core.types import ContextWindow, Message

if TYPE_CHECKING:
    import sqlite_utils

MEMORY_FILE = "context-memory.db"


def memory_path(config: Config | None) -> Path | None:
    """The memory file of this configuration, beside the state file; None when ``[state]
    enabled = false`` (sessions then live in memory only)."""
    if config is None or not config.state.enabled:
        return None
    return config.state.resolved_path().parent / MEMORY_FILE


def open_memory(path: Path | None) -> sqlite_utils.Database:
    """The store at ``path`` (created with its tables), or a fresh in-memory one for None."""
    import sqlite_utils  # not at import: `memwarden status` loads every plugin

    if path is None:
        db = sqlite_utils.Database(memory=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite_utils.Database(path)
    names = db.table_names()
    if "facts" not in names:
        db["facts"].create({"session": str, "fact": str})
        db["facts"].create_index(["session", "fact"], unique=True)
        db["facts"].enable_fts(["fact"], create_triggers=True)
    if "sessions" not in names:
        db["sessions"].create(
            {"session": str, "model": str, "tokens": int, "window": str, "updated": float},
            pk="session",
        )
    return db


def window_to_json(window: ContextWindow) -> str:
    return json.dumps(
        [
            {"role": m.role, "content": m.content, "tokens": m.tokens, "pinned": m.pinned}
            for m in window.messages
        ]
    )


def window_from_json(text: str, model: str | None) -> ContextWindow:
    return ContextWindow(messages=tuple(Message(**m) for m in json.loads(text)), model=model)


def save_window(
    db: sqlite_utils.Database, session: str, window: ContextWindow, now: float | None = None
) -> None:
    """Keep ``window`` as ``session``'s latest."""
    db["sessions"].upsert(
        {
            "session": session,
            "model": window.model or "",
            "tokens": window.tokens,
            "window": window_to_json(window),
            "updated": time.time() if now is None else now,
        },
        pk="session",
    )


def load_window(db: sqlite_utils.Database, session: str) -> ContextWindow | None:
    rows = list(db["sessions"].rows_where("session = ?", [session]))
    if not rows:
        return None
    return window_from_json(rows[0]["window"], rows[0]["model"] or None)


def session_facts(db: sqlite_utils.Database, session: str) -> list[str]:
    return [r["fact"] for r in db["facts"].rows_where("session = ?", [session], order_by="rowid")]
