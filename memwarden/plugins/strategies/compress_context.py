"""Compress the context of managed sessions (``StrategyContext.sessions``).

Cost 2 (answers may lose detail). A session is proposed only when it holds more than its
``min_tokens`` and its runtime frees memory per token (``kv_bytes_per_token`` > 0); the budget is
half the tokens it holds now. Runtimes that preallocate their whole context free nothing this
way, so their sessions register with 0 and are never proposed; shrink-context covers them.
"""

from __future__ import annotations

from memwarden.core.config import NoOptions
from memwarden.core.strategy import StrategyContext
from memwarden.core.types import Action, ActionKind, PressureLevel, PressureReading
from memwarden.hookspecs import hookimpl

NAME = "compress-context"
# Tuned through [governor] and [models."<name>"]; its own table takes no keys.
OPTIONS = NoOptions
COST = 2.0
# The lowest level this strategy proposes at.
LEVEL = PressureLevel.WARNING
# The action kinds it proposes (the governor asks only refuse-loads strategies whether
# loads are refused).
PROPOSES = frozenset({ActionKind.COMPRESS_CONTEXT})


@hookimpl
def on_pressure(reading: PressureReading, context: StrategyContext) -> list[Action] | None:
    if reading.level < LEVEL:
        return None
    actions = []
    for session in context.sessions:
        tokens = session.window.tokens
        budget = max(tokens // 2, session.min_tokens)
        saved = (tokens - budget) * session.kv_bytes_per_token
        if saved <= 0:
            continue
        actions.append(
            Action(
                kind=ActionKind.COMPRESS_CONTEXT,
                strategy=NAME,
                description=f"compress session {session.session_id} on {session.model} "
                f"from {tokens} to {budget} tokens",
                expected_freed_bytes=saved,
                cost=COST,
                model=session.model,
                provider=session.provider,
                session_id=session.session_id,
                budget_tokens=budget,
            )
        )
    return actions
