"""Compress the context of managed sessions (``Governor.sessions``).

Cost 2 (answers may lose detail). A session is proposed only when it holds more than its
``min_tokens`` and its runtime frees memory per token (``kv_bytes_per_token`` > 0); the budget is
half the tokens it holds now. Runtimes that preallocate their whole context free nothing this
way, so their sessions register with 0 and are never proposed; shrink-context covers them.
"""

from __future__ import annotations

from memwarden.core.governor import COMPRESS_CONTEXT, Governor
from memwarden.core.types import Action, PressureLevel, PressureReading
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

NAME = "compress-context"
COST = 2.0


@hookimpl
def on_pressure(reading: PressureReading, warden: Warden) -> list[Action] | None:
    if reading.level < PressureLevel.WARNING:
        return None
    governor = Governor.for_warden(warden)
    actions = []
    for session in governor.sessions.all():
        tokens = session.window.tokens
        budget = max(tokens // 2, session.min_tokens)
        saved = (tokens - budget) * session.kv_bytes_per_token
        if saved <= 0:
            continue
        actions.append(
            Action(
                kind=COMPRESS_CONTEXT,
                strategy=NAME,
                description=f"compress session {session.session_id} on {session.model} "
                f"from {tokens} to {budget} tokens",
                expected_freed_bytes=saved,
                cost=COST,
                model=session.model,
                provider=session.provider,
                params={"session": session.session_id, "budget_tokens": budget},
            )
        )
    return actions
