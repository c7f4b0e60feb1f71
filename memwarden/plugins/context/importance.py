"""``context-importance``: keep the messages that matter most, wherever they are.

Each message is scored by its role (system over user over assistant over tool), its recency, its
references (the keywords it shares with the latest user message) and explicit pins (always
kept). The highest scores are kept while they fit the budget, in their original order.
"""

from __future__ import annotations

import attrs

from memwarden.context.extract import keywords
from memwarden.context.window import CompressionContext, keep_core, latest_user_index
from memwarden.core.types import ContextWindow, Message
from memwarden.hookspecs import hookimpl

NAME = "context-importance"


@attrs.frozen
class ImportanceOptions:
    """Weights of the score; ``[plugins.context-importance]``."""

    system_weight: float = 3.0
    user_weight: float = 1.5
    assistant_weight: float = 1.0
    other_weight: float = 0.5
    recency_weight: float = 2.0
    reference_weight: float = 1.0


OPTIONS = ImportanceOptions


def score(
    message: Message, index: int, count: int, wanted: set[str], options: ImportanceOptions
) -> float:
    """How much ``message`` (the ``index``-th of ``count``) is worth keeping."""
    role = {
        "system": options.system_weight,
        "user": options.user_weight,
        "assistant": options.assistant_weight,
    }.get(message.role, options.other_weight)
    recency = options.recency_weight * (index + 1) / max(count, 1)
    shared = len(wanted.intersection(keywords(message.content)))
    return role + recency + options.reference_weight * min(shared, 5)


def prune(
    window: ContextWindow, budget_tokens: int, options: ImportanceOptions
) -> ContextWindow | None:
    """The window pruned to the best-scoring messages that fit in ``budget_tokens``."""
    keep = keep_core(window, budget_tokens)
    if keep is None:
        return None
    messages = window.messages
    latest = latest_user_index(messages)
    wanted = set(keywords(messages[latest].content)) if latest is not None else set()
    used = sum(messages[i].tokens or 0 for i in keep)
    ranked = sorted(
        (i for i in range(len(messages)) if i not in keep),
        key=lambda i: (-score(messages[i], i, len(messages), wanted, options), -i),
    )
    for i in ranked:
        cost = messages[i].tokens or 0
        if used + cost <= budget_tokens:
            keep.add(i)
            used += cost
    return ContextWindow(messages=tuple(messages[i] for i in sorted(keep)), model=window.model)


@hookimpl
def compress_context(
    window: ContextWindow, budget_tokens: int, context: CompressionContext
) -> ContextWindow | None:
    if not context.answers(NAME):
        return None
    return prune(window, budget_tokens, context.options(NAME, ImportanceOptions))
