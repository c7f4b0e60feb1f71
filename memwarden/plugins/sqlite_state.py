"""Keeps events, readings and usage in a SQLite file through sqlite-utils, and reads them back.

One table per record kind (``event``, ``reading``, ``usage``: ``hookspecs.PERSISTED_KINDS``). Each
row has ``written_at`` (when it was stored), ``recorded_at`` (when the record happened, as
``serialize.record_time`` gives it), the record's scalar fields as columns, and the whole record
as JSON in ``record``, from which ``read_state`` rebuilds it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memwarden.core.config import Config, NoOptions
from memwarden.core.serialize import record_from_data, record_time, record_type, to_data
from memwarden.hookspecs import PERSISTED_KINDS, hookimpl

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
    if kind in PERSISTED_KINDS:
        row["recorded_at"] = record_time(record)
    row["record"] = json.dumps(data, default=str)
    db = database(config.state.resolved_path())
    with _lock:
        db[kind].insert(row, alter=True)


@hookimpl
def read_state(kind: str, since: float | None, limit: int, config: Config) -> list[Any]:
    record_type(kind)  # an unknown kind is a StateError, not an empty answer
    path = config.state.resolved_path()
    if limit <= 0 or not path.exists():
        return []
    db = database(path)
    with _lock:
        table = db.table(kind)
        if not table.exists():
            return []
        # Rows written before recorded_at existed sort and filter by when they were written.
        moment = "recorded_at" if "recorded_at" in table.columns_dict else "written_at"
        moment = f"coalesce({moment}, written_at)"
        where, params = ("", []) if since is None else (f"where {moment} >= ?", [since])
        rows = list(
            db.query(
                f"select record from [{kind}] {where} order by {moment} desc, rowid desc limit ?",
                [*params, limit],
            )
        )
    return [record_from_data(kind, json.loads(row["record"])) for row in reversed(rows)]
