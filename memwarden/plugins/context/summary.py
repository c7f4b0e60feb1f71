"""``context-summary``: the recent buffer verbatim, older turns folded into a summary chain.

The system prompt, pinned messages and the latest user message are kept; then the newest turns
up to ``recent_tokens`` (500 by default). Everything older, an earlier summary included, becomes
one summary message (so summaries chain: each compression summarises the last summary with the
turns that fell out of the buffer since). With ``model`` set, a small local model writes the
summary through its provider (``CompressionContext.generate``); without one, or when it fails,
a deterministic extractive summary keeps the sentences that look most like facts (numbers,
names) and share words with the latest user message, in their order.
"""

from __future__ import annotations

import logging

import attrs

from memwarden.context.extract import fact_weight, keywords, sentences
from memwarden.context.window import (
    SUMMARY_PREFIX,
    CompressionContext,
    fill_newest,
    fit_text,
    insert_after_system_prompt,
    keep_core,
    latest_user_index,
    summarised_count,
    tokens_of,
)
from memwarden.core.errors import MemwardenError
from memwarden.core.types import ContextWindow, Message
from memwarden.hookspecs import hookimpl

NAME = "context-summary"
log = logging.getLogger("memwarden.context")

PROMPT = (
    "Summarise this conversation in a few sentences. Keep every name, number, date and "
    "decision exactly as written.\n\n{text}\n\nSummary:"
)


@attrs.frozen
class SummaryOptions:
    """``[plugins.context-summary]``."""

    # Tokens of the newest turns kept verbatim.
    recent_tokens: int = attrs.field(default=500, validator=attrs.validators.ge(0))
    # The buffer's most share of the room the kept messages leave, so that older turns fit too.
    recent_share: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    # A small local model that writes the summaries; None: extractive only.
    model: str | None = None


OPTIONS = SummaryOptions


def extractive(
    texts: list[str], question: str, budget_tokens: int, context: CompressionContext
) -> str:
    """The sentences of ``texts`` that look most like facts, and most like what ``question``
    asks about, in their order, within budget."""
    found = [s for text in texts for s in sentences(text)]
    wanted = set(keywords(question))

    def weight(i: int) -> float:
        return fact_weight(found[i]) + 1.5 * len(wanted.intersection(keywords(found[i])))

    ranked = sorted(range(len(found)), key=lambda i: (-weight(i), i))
    chosen: set[int] = set()
    used = 0
    for i in ranked:
        cost = context.tokenizer.count(found[i]) + 1
        if used + cost <= budget_tokens:
            chosen.add(i)
            used += cost
    return " ".join(found[i] for i in sorted(chosen))


def summarise(
    older: list[Message],
    question: str,
    budget_tokens: int,
    options: SummaryOptions,
    context: CompressionContext,
) -> str:
    """A summary of ``older`` in at most ``budget_tokens`` tokens, its prefix excluded."""
    texts = [
        m.content if summarised_count(m) else f"{m.role}: {m.content}" for m in older if m.content
    ]
    if options.model and context.generate is not None:
        try:
            written = context.generate(options.model, PROMPT.format(text="\n".join(texts)))
            return fit_text(" ".join(written.split()), context.tokenizer, budget_tokens)
        except MemwardenError as exc:
            log.info("summary by %s failed (%s); extractive summary instead", options.model, exc)
    return extractive([m.content for m in older], question, budget_tokens, context)


def chain(
    window: ContextWindow, budget_tokens: int, options: SummaryOptions, context: CompressionContext
) -> ContextWindow | None:
    keep = keep_core(window, budget_tokens)
    if keep is None:
        return None
    messages = window.messages
    free = budget_tokens - tokens_of(messages[i] for i in keep)
    buffer = min(options.recent_tokens, int(free * options.recent_share))
    chosen = fill_newest(messages, keep, budget_tokens, limit=buffer)
    older = [m for i, m in enumerate(messages) if i not in chosen]
    if not older:
        return ContextWindow(messages=messages, model=window.model)
    count = sum(summarised_count(m) or 1 for m in older)
    prefix = SUMMARY_PREFIX.format(n=count)
    room = budget_tokens - tokens_of(messages[i] for i in chosen)
    latest = latest_user_index(messages)
    question = messages[latest].content if latest is not None else ""
    body = summarise(older, question, room - context.tokenizer.count(prefix) - 1, options, context)
    result = [messages[i] for i in sorted(chosen)]
    if body:
        text = prefix + body
        tokens = context.tokenizer.count(text)
        while tokens > room and body:  # a tokenizer that does not add up: cut until it fits
            body = " ".join(body.split(" ")[:-1])
            text, tokens = prefix + body, context.tokenizer.count(prefix + body)
        if body:
            insert_after_system_prompt(result, Message(role="system", content=text, tokens=tokens))
    return ContextWindow(messages=tuple(result), model=window.model)


@hookimpl
def compress_context(
    window: ContextWindow, budget_tokens: int, context: CompressionContext
) -> ContextWindow | None:
    if not context.answers(NAME):
        return None
    return chain(window, budget_tokens, context.options(NAME, SummaryOptions), context)
