"""Keeps events, readings and usage in a SQLite file through sqlite-utils.

One table per record kind (``event``, ``reading``, ``usage``...). Each row has the time it was
written, the record's scalar fields as columns, and the whole record as JSON in ``record``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memwarden.core.config import Config, NoOptions
from memwarden.core.serialize import to_data
from memwarden.hookspecs import hookimpl

if TYPE_CHECKING:
    # Imported on the first write: sqlite-utils brings numpy and dateutil (a quarter of a
    # second), which `memwarden status` and `estimate` never need.
    import sqlite_utils

# Takes no [plugins.sqlite-state] options ([state] says where the file is).
OPTIONS = NoOptions

_databases: dict[Path, sqlite_utils.Database] = {}
_lock = threading.Lock()


def database(path: Path) -> sqlite_utils.Database:
    """One connection per file for the life of the process; writes are serialised."""
    with _lock:
        db = _databases.get(path)
        if db is None:
            import sqlite_utils

            path.parent.mkdir(parents=True, exist_ok=True)
            # The governor writes from its own thread; the lock below serialises every write.
            connection = sqlite3.connect(path, check_same_thread=False)
            db = sqlite_utils.Database(connection, execute_plugins=False)
            db.enable_wal()
            _databases[path] = db
        return db


@hookimpl
def persist_state(kind: str, record: Any, config: Config) -> None:
    data = to_data(record)
    row: dict[str, Any] = {"written_at": time.time()}
    if isinstance(data, dict):
        row.update({k: v for k, v in data.items() if isinstance(v, str | int | float | bool)})
    row["record"] = json.dumps(data, default=str)
    db = database(config.state.resolved_path())
    with _lock:
        db[kind].insert(row, alter=True)
