"""``context-recent``: keep the system prompt and the newest turns, drop the middle.

The pinned messages, the leading system messages and the latest user message are kept; then the
newest other turns, as many as the budget holds. Nothing is rewritten, so the answer is only as
good as what is recent.
"""

from __future__ import annotations

from memwarden.context.window import CompressionContext, fill_newest, must_keep, tokens_of
from memwarden.core.config import NoOptions
from memwarden.core.types import ContextWindow
from memwarden.hookspecs import hookimpl

NAME = "context-recent"
OPTIONS = NoOptions


def leading_system(window: ContextWindow) -> list[int]:
    """The indices of the system messages before the first other turn (the system prompt)."""
    found = []
    for i, message in enumerate(window.messages):
        if message.role != "system":
            break
        found.append(i)
    return found


def keep_core(window: ContextWindow, budget_tokens: int) -> set[int] | None:
    """:func:`must_keep` plus the system prompt where it fits; None when the must-keep alone
    is over the budget."""
    messages = window.messages
    keep = must_keep(messages)
    if tokens_of(messages[i] for i in keep) > budget_tokens:
        return None
    for i in leading_system(window):
        if tokens_of(messages[j] for j in keep | {i}) <= budget_tokens:
            keep.add(i)
    return keep


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
