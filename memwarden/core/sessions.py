"""Managed sessions: conversations whose context memwarden may compress under pressure.

A session is registered by whoever drives the conversation (the front door, for a client that
sends ``X-Memwarden-Session``), with what one token of context costs in its runtime, so that the
compress-context strategy can say honestly how many bytes compressing would free. Given a memory
file (``memwarden.context.memory``), every window registered or replaced is also written there,
so the summary chain outlives the process and `memwarden context show` can read it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import attrs

from memwarden.core.types import ContextWindow


@attrs.frozen
class ManagedSession:
    session_id: str
    model: str
    window: ContextWindow
    # Bytes one token of this session's context holds in its runtime (KV cache); 0 when the
    # runtime preallocates its context, so compressing frees nothing by itself.
    kv_bytes_per_token: int = 0
    # Compression never goes below this many tokens.
    min_tokens: int = 256
    provider: str | None = None


class SessionRegistry:
    """The sessions a governor may compress; safe to use from the governor's thread."""

    def __init__(self, memory_file: Path | None = None) -> None:
        self._sessions: dict[str, ManagedSession] = {}
        self._lock = threading.Lock()
        self.memory_file = memory_file

    def register(self, session: ManagedSession) -> None:
        """Add (or replace) a session the governor may compress."""
        with self._lock:
            self._sessions[session.session_id] = session
            self._save(session)

    def replace_window(self, session_id: str, window: ContextWindow) -> ManagedSession:
        """Give a session its new window (compressed, or grown by a request)."""
        with self._lock:
            session = attrs.evolve(self._sessions[session_id], window=window)
            self._sessions[session_id] = session
            self._save(session)
            return session

    def _save(self, session: ManagedSession) -> None:
        if self.memory_file is None:
            return
        from memwarden.context.memory import open_memory, save_window

        db = open_memory(self.memory_file)
        try:
            save_window(db, session.session_id, attrs.evolve(session.window, model=session.model))
        finally:
            db.close()

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def get(self, session_id: str) -> ManagedSession | None:
        with self._lock:
            return self._sessions.get(session_id)

    def all(self) -> list[ManagedSession]:
        with self._lock:
            return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)
