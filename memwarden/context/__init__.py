"""Context compression: a library the ``compress_context`` plugins and their callers share.

``tokens`` counts with the model's own tokenizer; ``window`` has the rules every strategy keeps
(pinned messages and the latest user message verbatim, never over the budget) and
:func:`compress`, the one function the CLI, the governor and the front door call.
"""

from memwarden.context.tokens import EstimateTokenizer, GGUFTokenizer, Tokenizer, tokenizer_for
from memwarden.context.window import (
    CompressionContext,
    CompressionResult,
    ContextTooLarge,
    compress,
    count_window,
)

__all__ = [
    "CompressionContext",
    "CompressionResult",
    "ContextTooLarge",
    "EstimateTokenizer",
    "GGUFTokenizer",
    "Tokenizer",
    "compress",
    "count_window",
    "tokenizer_for",
]
