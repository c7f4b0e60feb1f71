"""System RAM through psutil: the pool every machine has."""

from __future__ import annotations

import psutil

from memwarden.core.config import Config
from memwarden.core.types import MemoryPool, PoolKind
from memwarden.hookspecs import hookimpl

NAME = "system"


@hookimpl
def detect_device(config: Config) -> list[MemoryPool]:
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return [
        MemoryPool(
            id="system",
            kind=PoolKind.SYSTEM,
            name="System RAM",
            total_bytes=memory.total,
            available_bytes=memory.available,
            used_bytes=memory.total - memory.available,
            source=NAME,
            swap_total_bytes=swap.total,
            swap_used_bytes=swap.used,
        )
    ]
