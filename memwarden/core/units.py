"""Sizes for people: every message memwarden writes gives memory in KiB, MiB or GiB."""

from __future__ import annotations

import functools


# Cached: the ladder describes every loaded model's size in each round, and sizes repeat.
@functools.lru_cache(maxsize=4096)
def format_bytes(value: int | None) -> str:
    """Binary units, as memory is sold and as the OS tools show it ("858.0 MiB", "12.5 GiB").

    Use it for every size in a message, an event or a refusal: a raw byte count is hard to read
    and easy to misread by a factor of a thousand.
    """
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
