"""A child process for the durability tests: writes a burst of records through the history store
and prints ``acked N`` each time the first N are committed (acknowledged).

    python tests/history_writer.py PATH COUNT TAG [--samples]
"""

from __future__ import annotations

import sys
from pathlib import Path

from memwarden.core.config import StateConfig
from memwarden.core.types import Event, MemorySample, PoolSample, PressureLevel
from memwarden.plugins.sqlite_state import Store

BATCH = 25


def main() -> None:
    path, count, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    samples = "--samples" in sys.argv[4:]
    store = Store(Path(path), StateConfig(path=path, flush_interval_s=0.01))
    written = 0
    while written < count:
        for _ in range(BATCH):
            store.put("event", Event(kind=tag, message=str(written), at=float(written)))
            if samples:
                # Two seconds apart: compaction folds minutes while the burst goes on.
                store.put(
                    "sample",
                    MemorySample(
                        taken_at=2.0 * written,
                        level=PressureLevel.NORMAL,
                        managed_bytes=written,
                        pools=(PoolSample("system", 1 << 34, written, PressureLevel.NORMAL),),
                    ),
                )
            written += 1
        if store.flush():
            print(f"acked {written}", flush=True)
    store.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
