"""Managed sessions: conversations whose context memwarden may compress under pressure.

Small on purpose: the context tiers of a later issue fill it. A session is registered by whoever
drives the conversation, with what one token of context costs in its runtime, so that the
compress-context strategy can say honestly how many bytes compressing would free.
"""

from __future__ import annotations

import threading

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

    def __init__(self) -> None:
        self._sessions: dict[str, ManagedSession] = {}
        self._lock = threading.Lock()

    def register(self, session: ManagedSession) -> None:
        with self._lock:
            self._sessions[session.session_id] = session

    def replace_window(self, session_id: str, window: ContextWindow) -> ManagedSession:
        with self._lock:
            session = attrs.evolve(self._sessions[session_id], window=window)
            self._sessions[session_id] = session
            return session

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
