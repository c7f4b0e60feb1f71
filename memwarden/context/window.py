"""What every compression strategy keeps, and the one function that runs them.

A user picks a strategy by name (``memwarden context compress --strategy NAME``, or
:func:`compress`'s ``strategy``); with none named, the built-ins answer in the order
``context-summary``, ``context-semantic``, ``context-importance``, ``context-recent`` (the hook is
first-result), and a strategy disabled in ``[plugins] disabled`` is skipped. Each built-in
answers only when ``context.strategy`` is None or its own name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

import attrs

from memwarden.context.tokens import Tokenizer
from memwarden.core.config import Config
from memwarden.core.errors import MemwardenError
from memwarden.core.types import ContextWindow, Message

if TYPE_CHECKING:
    from memwarden.core.warden import Warden

T = TypeVar("T")

# How a summary message starts, so that callers can tell how many messages it stands for.
SUMMARY_PREFIX = "Summary of {n} earlier messages: "
_SUMMARY = re.compile(r"^Summary of (\d+) earlier messages: ")
RECALL_PREFIX = "Facts recalled from earlier in this conversation: "
# The built-ins, in the order they answer when no strategy is named.
BUILTIN_STRATEGIES = ("context-summary", "context-semantic", "context-importance", "context-recent")


class ContextTooLarge(MemwardenError):
    """What must be kept verbatim (pinned messages, the latest user message) is over the budget."""

    code = "context-too-large"
    exit_code = 3


class UnknownStrategy(MemwardenError):
    """No enabled compress_context plugin has the name asked for."""

    code = "unknown-strategy"
    exit_code = 2


@attrs.frozen
class CompressionContext:
    """What a ``compress_context`` plugin gets besides the window: documented and stable.

    ``tokenizer`` counts every text the plugin writes (a summary, recalled facts) so the result
    can be held to the budget; ``generate(model, prompt)`` asks a loaded local model (None when
    the caller offers none); ``session_id`` names a managed session whose memory persists.
    """

    tokenizer: Tokenizer
    strategy: str | None = None
    generate: Callable[[str, str], str] | None = None
    session_id: str | None = None
    state_dir: str | None = None
    config: Config | None = None

    def options(self, name: str, cls: type[T]) -> T:
        """The plugin's ``[plugins.<name>]`` options (the defaults without a config)."""
        return self.config.plugin_options(name, cls) if self.config is not None else cls()

    def answers(self, name: str) -> bool:
        """Whether the plugin called ``name`` should answer this call."""
        return self.strategy is None or self.strategy == name


@attrs.frozen
class CompressionResult:
    """What :func:`compress` did: the window, and how."""

    window: ContextWindow
    tokens_before: int
    tokens_after: int
    strategy: str | None  # None: it fitted already, nothing was done
    dropped: int  # messages of the original not in the result (summarised ones included)
    summarised: int  # of those, how many a summary message stands for
    tokenizer: str
    exact_tokens: bool
    elapsed_s: float


def count_window(window: ContextWindow, tokenizer: Tokenizer) -> ContextWindow:
    """The window with every message's ``tokens`` counted by ``tokenizer`` (where unset)."""
    messages = tuple(
        m if m.tokens is not None else attrs.evolve(m, tokens=tokenizer.count(m.content))
        for m in window.messages
    )
    return attrs.evolve(window, messages=messages)


def latest_user_index(messages: Sequence[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return None


def must_keep(messages: Sequence[Message]) -> set[int]:
    """Indices kept verbatim by every strategy: pinned messages and the latest user message."""
    keep = {i for i, m in enumerate(messages) if m.pinned}
    latest = latest_user_index(messages)
    if latest is not None:
        keep.add(latest)
    return keep


def tokens_of(messages: Iterable[Message]) -> int:
    return sum(m.tokens or 0 for m in messages)


def check_keepable(messages: Sequence[Message], budget: int) -> set[int]:
    """:func:`must_keep`, or :class:`ContextTooLarge` when it alone is over ``budget``."""
    keep = must_keep(messages)
    kept = tokens_of(messages[i] for i in keep)
    if kept > budget:
        raise ContextTooLarge(
            f"the pinned messages and the latest user message hold {kept} tokens, "
            f"over the budget of {budget}",
            hint="raise the budget, or unpin messages",
        )
    return keep


def fill_newest(messages: Sequence[Message], keep: set[int], budget: int, limit: int) -> set[int]:
    """``keep`` plus the newest other messages, while they fit in ``budget`` and add at most
    ``limit`` tokens."""
    chosen = set(keep)
    used = tokens_of(messages[i] for i in chosen)
    added = 0
    for i in range(len(messages) - 1, -1, -1):
        if i in chosen:
            continue
        cost = messages[i].tokens or 0
        if used + cost > budget or added + cost > limit:
            break
        chosen.add(i)
        used += cost
        added += cost
    return chosen


def fit_text(text: str, tokenizer: Tokenizer, budget: int) -> str:
    """``text`` cut at a word boundary to at most ``budget`` tokens ('' when none fit)."""
    if budget <= 0:
        return ""
    if tokenizer.count(text) <= budget:
        return text
    words = text.split(" ")
    low, high = 0, len(words)
    while low < high:  # the most words that fit
        mid = (low + high + 1) // 2
        if tokenizer.count(" ".join(words[:mid])) <= budget:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low])


def summarised_count(message: Message) -> int:
    found = _SUMMARY.match(message.content)
    return int(found.group(1)) if found else 0


def compress(
    warden: Warden,
    window: ContextWindow,
    budget_tokens: int,
    *,
    tokenizer: Tokenizer,
    strategy: str | None = None,
    session_id: str | None = None,
) -> CompressionResult:
    """Fit ``window`` in ``budget_tokens`` through the ``compress_context`` plugins: the one
    function the CLI, the governor and the front door call. A window that fits is returned as
    it is. Raises :class:`UnknownStrategy` for a strategy no enabled plugin is called, and
    :class:`ContextTooLarge` when what must be kept is over the budget or no plugin fits it."""
    started = time.perf_counter()
    counted = count_window(window, tokenizer)
    before = counted.tokens
    hook = warden.hook.compress_context
    if strategy is not None:
        names = {impl.plugin_name for impl in hook.get_hookimpls()}
        if strategy not in names:
            raise UnknownStrategy(
                f"no enabled context strategy is called {strategy!r}",
                hint=f"use one of: {', '.join(sorted(names)) or 'none enabled'}",
            )
    if before <= budget_tokens:
        return _result(counted, counted, before, None, tokenizer, started)
    check_keepable(counted.messages, budget_tokens)
    context = CompressionContext(
        tokenizer=tokenizer,
        strategy=strategy,
        generate=_generator(warden),
        session_id=session_id,
        state_dir=_state_dir(warden),
        config=warden.config,
    )
    answered = None
    result = None
    for impl in reversed(hook.get_hookimpls()):  # pluggy's call order
        if impl.hookwrapper or impl.wrapper:
            continue
        if strategy is not None and impl.plugin_name != strategy:
            continue
        given = {"window": counted, "budget_tokens": budget_tokens, "context": context}
        result = impl.function(*(given[name] for name in impl.argnames))
        if result is not None:
            answered = impl.plugin_name
            break
    if result is None or result.tokens > budget_tokens:
        raise ContextTooLarge(
            f"no context strategy could fit {before} tokens in {budget_tokens}"
            + (f" ({strategy} answered {result.tokens})" if result is not None else ""),
            hint="raise the budget, or enable a context strategy (memwarden plugins)",
        )
    return _result(counted, result, before, answered, tokenizer, started)


def _result(
    original: ContextWindow,
    window: ContextWindow,
    before: int,
    strategy: str | None,
    tokenizer: Tokenizer,
    started: float,
) -> CompressionResult:
    kept = set(window.messages)
    dropped = sum(1 for m in original.messages if m not in kept)
    summarised = sum(summarised_count(m) for m in window.messages if m not in original.messages)
    return CompressionResult(
        window=window,
        tokens_before=before,
        tokens_after=window.tokens,
        strategy=strategy,
        dropped=dropped,
        summarised=min(summarised, dropped),
        tokenizer=tokenizer.source,
        exact_tokens=tokenizer.exact,
        elapsed_s=time.perf_counter() - started,
    )


def _generator(warden: Warden) -> Callable[[str, str], str] | None:
    """``generate(model, prompt)`` through the model's provider, for a model already loaded
    only: compressing under pressure must not load a model (the caller falls back)."""
    from memwarden.core.errors import ModelNotFound
    from memwarden.core.providers import same_model

    def generate(model: str, prompt: str) -> str:
        loaded = [m.name for m in warden.governor.loaded_models()]
        if not any(same_model(name, model) for name in loaded):
            raise ModelNotFound(
                f"summary model {model!r} is not loaded",
                hint="load it (memwarden load) to have it write summaries; "
                "the extractive summary is used meanwhile",
            )
        return warden.generate(model, prompt, max_tokens=256).text

    return generate


def _state_dir(warden: Warden) -> str | None:
    from memwarden.context.memory import memory_path

    path = memory_path(warden.config)
    return str(path.parent) if path is not None else None


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


def insert_after_system_prompt(messages: list[Message], message: Message) -> None:
    """Put ``message`` (a summary, recalled facts) after the leading system messages, where a
    model reads it as context rather than as a turn of the conversation."""
    at = next((n for n, m in enumerate(messages) if m.role != "system"), len(messages))
    messages.insert(at, message)
