"""Fitting chat requests in the context their model is loaded with (docs/context.md).

A chat request (``/v1/chat/completions``, ``/api/chat``) whose messages would not fit in the
loaded context (less the reply's tokens and a margin for the chat template) is compressed
through :func:`memwarden.context.compress` before it is forwarded, instead of being truncated by
the runtime; under pressure (WARNING or above) the budget is halved. The response carries
``X-Memwarden-Context`` saying what was done.

Session mode (``X-Memwarden-Session: ID``): the client sends only its new messages; the server
keeps the conversation (summary chain and semantic memory included) as a managed session of the
governor, appends each new message and each reply, and compresses once the session reaches 90%
of its budget (to 60% of it, so that it does not compress at every turn). The governor's
compress-context action works on the same session with no client involved.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from memwarden.context import ContextTooLarge, compress, count_window, tokenizer_for
from memwarden.core.sessions import ManagedSession
from memwarden.core.types import ContextWindow, LoadedModel, Message, PressureLevel
from memwarden.core.warden import Warden

HEADER = "X-Memwarden-Context"
SESSION_HEADER = "x-memwarden-session"
CHAT_ROUTES = ("/v1/chat/completions", "/api/chat")
# Tokens the chat template adds around one message (role markers, separators): kept free.
TEMPLATE_TOKENS_PER_MESSAGE = 8
# A session compresses when it reaches this share of its budget, down to the second share.
SESSION_TRIGGER = 0.9
SESSION_TARGET = 0.6


@attrs.frozen
class Fitted:
    """The request's messages as they are forwarded, and the header that says what was done."""

    messages: list[dict[str, Any]]
    header: str | None
    session_id: str | None = None


def reply_reserve(body: dict[str, Any], context_tokens: int) -> int:
    """Tokens kept free for the reply: the request's own limit, else a quarter of the context
    (at most 512)."""
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    for value in (
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
        options.get("num_predict"),
    ):
        if isinstance(value, int) and value > 0:
            return value
    return min(512, context_tokens // 4)


def text_messages(raw: Any) -> list[Message] | None:
    """The request's messages, or None when any is not plain text (images, tool calls):
    those are forwarded untouched."""
    if not isinstance(raw, list):
        return None
    messages = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            return None
        if not isinstance(item.get("role"), str) or set(item) - {"role", "content"}:
            return None
        messages.append(Message(item["role"], item["content"]))
    return messages


class ContextFitter:
    """Compresses chat requests for one front door; blocking (call it off the event loop)."""

    def __init__(self, warden: Warden) -> None:
        self.warden = warden

    def budget(self, body: dict[str, Any], loaded: LoadedModel | None, count: int) -> int | None:
        context = loaded.context_tokens if loaded is not None else None
        if not context:
            return None
        budget = context - reply_reserve(body, context) - TEMPLATE_TOKENS_PER_MESSAGE * count
        if self.warden.governor.level >= PressureLevel.WARNING:
            budget //= 2
        return max(budget, 1)

    def fit(
        self,
        body: dict[str, Any],
        model: str,
        loaded: LoadedModel | None,
        session_id: str | None,
    ) -> Fitted | None:
        """The messages to forward, or None to forward the request as it came."""
        messages = text_messages(body.get("messages"))
        if messages is None:
            return None
        tokenizer = tokenizer_for(model, self.warden.config)
        sessions = self.warden.governor.sessions
        if session_id is not None:
            stored = sessions.get(session_id)
            earlier = stored.window.messages if stored is not None else ()
            window = ContextWindow(messages=(*earlier, *messages), model=model)
        else:
            window = ContextWindow(messages=tuple(messages), model=model)
        window = count_window(window, tokenizer)
        budget = self.budget(body, loaded, len(window.messages))
        header = None
        if budget is not None:
            trigger, target = budget, budget
            if session_id is not None:
                trigger, target = int(budget * SESSION_TRIGGER), int(budget * SESSION_TARGET)
            if window.tokens > trigger:
                try:
                    done = compress(
                        self.warden, window, target, tokenizer=tokenizer, session_id=session_id
                    )
                except ContextTooLarge:
                    done = None
                if done is not None:
                    window = done.window
                    header = (
                        f"compressed; strategy={done.strategy}; tokens={done.tokens_before}->"
                        f"{done.tokens_after}; budget={target}; dropped={done.dropped}; "
                        f"summarised={done.summarised}; tokenizer={done.tokenizer}"
                    )
                else:
                    header = f"not compressed; the latest message alone is over {target} tokens"
        if session_id is not None:
            self._keep(session_id, model, loaded, window)
            header = header or f"session; tokens={window.tokens}"
        return Fitted(
            messages=[{"role": m.role, "content": m.content} for m in window.messages],
            header=header,
            session_id=session_id,
        )

    def _keep(
        self, session_id: str, model: str, loaded: LoadedModel | None, window: ContextWindow
    ) -> None:
        sessions = self.warden.governor.sessions
        if sessions.get(session_id) is None:
            # Runtimes behind the front door preallocate their context: compressing frees
            # no memory by itself (kv_bytes_per_token 0), it keeps the request inside it.
            sessions.register(
                ManagedSession(
                    session_id=session_id,
                    model=model,
                    window=window,
                    provider=loaded.provider if loaded is not None else None,
                )
            )
        else:
            sessions.replace_window(session_id, window)

    def remember_reply(self, session_id: str, content: bytes) -> None:
        """Append the assistant's reply (an OpenAI or Ollama chat answer) to the session."""
        try:
            data = json.loads(content)
        except ValueError:
            return
        message = None
        if isinstance(data, dict):
            choices = data.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                message = choices[0].get("message")
            else:
                message = data.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return
        session = self.warden.governor.sessions.get(session_id)
        if session is None:
            return
        tokenizer = tokenizer_for(session.model, self.warden.config)
        reply = Message("assistant", message["content"])
        reply = attrs.evolve(reply, tokens=tokenizer.count(reply.content))
        window = attrs.evolve(session.window, messages=(*session.window.messages, reply))
        self.warden.governor.sessions.replace_window(session_id, window)
