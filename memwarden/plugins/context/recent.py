"""``context-recent``: keep the system prompt and the newest turns, drop the middle.

The pinned messages, the leading system messages and the latest user message are kept; then the
newest other turns, as many as the budget holds. Nothing is rewritten, so the answer is only as
good as what is recent.
"""

from __future__ import annotations

from memwarden.context.window import CompressionContext, fill_newest, keep_core
from memwarden.core.config import NoOptions
from memwarden.core.types import ContextWindow
from memwarden.hookspecs import hookimpl

NAME = "context-recent"
OPTIONS = NoOptions


@hookimpl
def compress_context(
    window: ContextWindow, budget_tokens: int, context: CompressionContext
) -> ContextWindow | None:
    if not context.answers(NAME):
        return None
    keep = keep_core(window, budget_tokens)
    if keep is None:
        return None
    chosen = fill_newest(window.messages, keep, budget_tokens, limit=budget_tokens)
    return ContextWindow(
        messages=tuple(window.messages[i] for i in sorted(chosen)), model=window.model
    )
