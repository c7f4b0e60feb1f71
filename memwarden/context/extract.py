"""Deterministic text helpers the strategies share: sentences, words, and a fact's weight."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_'-]*")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def sentences(text: str) -> list[str]:
    """``text`` split into sentences (and lines), stripped, empty ones left out."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def keywords(text: str) -> list[str]:
    """The words of ``text`` worth matching on: lower case, no stopwords, in order, once."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and len(word) > 1:
            seen.setdefault(word, None)
    return list(seen)


def fact_weight(sentence: str) -> float:
    """How much a sentence looks like a fact worth keeping: numbers, names, and not filler."""
    words = sentence.split()
    if not words:
        return 0.0
    weight = 0.0
    weight += 2.0 * sum(any(c.isdigit() for c in w) for w in words[:40]) ** 0.5
    weight += 1.0 * sum(w[:1].isupper() for w in words[1:40]) ** 0.5
    weight += 0.5 if re.search(r"\b(is|are|was|were|has|have|called|named)\b", sentence) else 0.0
    return weight / (1.0 + len(words) / 40.0)
