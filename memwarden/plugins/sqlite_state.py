"""Keeps memwarden's history in a SQLite file through sqlite-utils, and reads it back.

What is kept (schema version 1; docs/history.md has the tables and the sizes they reach):

- ``sample``: the memory history, downsampled in tiers. Every sample for
  ``[state] retention_full_rate_s``, then one row per minute, then one per hour; a downsampled row
  holds the peak of its bucket (highest use, highest level) and how many samples it stands for.
- ``event``, ``reading`` (level changes), ``action`` (with bytes freed and the level before and
  after), kept for ``retention_events_s``.
- ``usage``: one row per request for ``retention_usage_s``, then folded into ``usage_hourly``
  (calls, failures, latency and token totals per model and hour).
- ``session``: one row per process that wrote to the file (pid, host, when it started, was last
  seen, and ended).

Writes never happen on the caller's thread. ``persist_state`` puts the record on a bounded queue;
a writer thread commits what is queued in one transaction at most ``flush_interval_s`` later (and
at once when :meth:`Store.flush` is called, and at exit). A record is *acknowledged* once the
transaction holding it is committed: from then on it survives the process being killed (WAL mode
with ``synchronous=NORMAL``; a power cut may lose the last commits). A failed write (a read-only
or full disk) loses that batch, and the first such failure makes the next ``persist_state`` raise
once, so the plugin manager reports it as one ``plugin-failed`` event; the governor is never
stopped, and the writer tries again with the next batch (``dropped`` counts what was lost).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from memwarden.core.config import Config, NoOptions, StateConfig
from memwarden.core.errors import StateError
from memwarden.core.serialize import record_from_data, record_type, to_data
from memwarden.core.types import (
    ActionRecord,
    Event,
    MemorySample,
    PoolSample,
    PressureLevel,
    UsageRecord,
)
from memwarden.hookspecs import hookimpl

log = logging.getLogger("memwarden.state")

# Takes no [plugins.sqlite-state] options: [state] says where the file is and what is kept.
OPTIONS = NoOptions

SCHEMA_VERSION = 1
MINUTE_S = 60.0
HOUR_S = 3600.0
# Sample tiers: 0 every sample, 1 one per minute, 2 one per hour.
RAW, PER_MINUTE, PER_HOUR = 0, 1, 2
# The most records one transaction holds.
MAX_BATCH = 5000
# How long a batch waits for another process that holds the file locked before it is lost.
LOCKED_WAIT_S = 10.0


class StateWriteFailed(OSError):
    """The writer could not commit a batch (read-only or full disk, a locked file). Deliberately
    not a MemwardenError: the plugin manager reports it once as ``plugin-failed`` and the caller
    (the governor) goes on."""


# -- schema and migrations ----------------------------------------------------------------------


def _create_v1(db: Any) -> None:
    """The version 1 layout, on sqlite-utils."""
    db["session"].create(
        {
            "id": int,
            "pid": int,
            "host": str,
            "version": str,
            "started_at": float,
            "last_seen_at": float,
            "ended_at": float,
        },
        pk="id",
    )
    db["sample"].create(
        {
            "tier": int,
            "taken_at": float,
            "count": int,
            "level": str,
            "managed_bytes": int,
            "pools": str,
        },
        not_null={"tier", "taken_at", "count", "level", "managed_bytes", "pools"},
    )
    db["sample"].create_index(["tier", "taken_at"])
    db["event"].create(
        {"id": int, "at": float, "kind": str, "level": str, "message": str, "data": str},
        pk="id",
        not_null={"at", "kind", "message", "data"},
    )
    db["event"].create_index(["at"])
    db["reading"].create(
        {"id": int, "taken_at": float, "level": str, "record": str},
        pk="id",
        not_null={"taken_at", "level", "record"},
    )
    db["reading"].create_index(["taken_at"])
    db["action"].create(
        {
            "id": int,
            "at": float,
            "kind": str,
            "strategy": str,
            "description": str,
            "ok": int,
            "expected_freed_bytes": int,
            "measured_freed_bytes": int,
            "level_before": str,
            "level_after": str,
            "model": str,
            "provider": str,
            "pool_id": str,
            "error": str,
        },
        pk="id",
        not_null={"at", "kind", "strategy", "ok"},
    )
    db["action"].create_index(["at"])
    db["usage"].create(
        {
            "id": int,
            "started_at": float,
            "model": str,
            "provider": str,
            "latency_s": float,
            "ttft_s": float,
            "success": int,
            "prompt_tokens": int,
            "completion_tokens": int,
            "error": str,
        },
        pk="id",
        not_null={"started_at", "model", "provider", "latency_s", "success"},
    )
    db["usage"].create_index(["started_at"])
    db["usage_hourly"].create(
        {
            "hour": float,
            "model": str,
            "provider": str,
            "calls": int,
            "failures": int,
            "latency_s_sum": float,
            "latency_s_max": float,
            "ttft_s_sum": float,
            "ttft_calls": int,
            "prompt_tokens": int,
            "completion_tokens": int,
        },
        pk=("hour", "model", "provider"),
    )


def _migrate_legacy(db: Any) -> None:
    """Version 0 (before schema versions): tables ``event``, ``reading`` and ``usage``, each row
    the whole record as JSON in ``record``. Their records move into the version 1 tables."""
    legacy: dict[str, list[Any]] = {}
    for kind in ("event", "reading", "usage"):
        table = db.table(kind)
        if table.exists():
            rows = db.execute(f"select record from [{kind}] order by rowid").fetchall()
            legacy[kind] = [record_from_data(kind, json.loads(row[0])) for row in rows]
            table.drop()
    _create_v1(db)
    for kind, records in legacy.items():
        _insert(db.conn, kind, records)


def _schema_version(db: Any) -> int | None:
    """The file's schema version: None for an empty file, 0 for the layout before versions."""
    if db.table("schema_version").exists():
        row = db.execute("select max(version) from schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    if any(db.table(kind).exists() for kind in ("event", "reading", "usage")):
        return 0
    return None


def ensure_schema(db: Any, path: Path) -> int:
    """Create the tables of a new file or migrate an older one, in one transaction; the version
    the file had (-1: a new file). A file from a newer memwarden is a StateError."""
    conn: sqlite3.Connection = db.conn
    conn.execute("begin immediate")
    try:
        version = _schema_version(db)
        if version is not None and version > SCHEMA_VERSION:
            raise StateError(
                f"{path} holds history in schema version {version}; this memwarden reads up to "
                f"version {SCHEMA_VERSION}",
                hint="upgrade memwarden, or point [state] path at another file",
            )
        if version is None:
            db["schema_version"].create({"version": int, "applied_at": float})
            _create_v1(db)
        elif version == 0:
            db["schema_version"].create({"version": int, "applied_at": float})
            _migrate_legacy(db)
        if version != SCHEMA_VERSION:
            conn.execute(
                "insert into schema_version (version, applied_at) values (?, ?)",
                (SCHEMA_VERSION, time.time()),
            )
        conn.execute("commit")
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk): keep the real one.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("rollback")
        raise
    return -1 if version is None else version


# -- rows ---------------------------------------------------------------------------------------


def _level(value: PressureLevel | None) -> str | None:
    return None if value is None else value.name


def _pools_json(pools: Iterable[PoolSample]) -> str:
    return json.dumps(
        [[p.pool_id, p.total_bytes, p.used_bytes, p.level.name] for p in pools],
        separators=(",", ":"),
    )


def _insert(conn: sqlite3.Connection, kind: str, records: Sequence[Any]) -> None:
    """Insert records of one kind (no transaction handling: the caller's)."""
    if kind == "sample":
        conn.executemany(
            "insert into sample (tier, taken_at, count, level, managed_bytes, pools) "
            "values (0, ?, ?, ?, ?, ?)",
            [
                (r.taken_at, r.count, r.level.name, r.managed_bytes, _pools_json(r.pools))
                for r in records
            ],
        )
    elif kind == "event":
        conn.executemany(
            "insert into event (at, kind, level, message, data) values (?, ?, ?, ?, ?)",
            [
                (r.at, r.kind, _level(r.level), r.message, json.dumps(dict(r.data), default=str))
                for r in records
            ],
        )
    elif kind == "reading":
        conn.executemany(
            "insert into reading (taken_at, level, record) values (?, ?, ?)",
            [(r.taken_at, r.level.name, json.dumps(to_data(r), default=str)) for r in records],
        )
    elif kind == "action":
        conn.executemany(
            "insert into action (at, kind, strategy, description, ok, expected_freed_bytes, "
            "measured_freed_bytes, level_before, level_after, model, provider, pool_id, error) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.at,
                    str(r.kind),
                    r.strategy,
                    r.description,
                    int(r.ok),
                    r.expected_freed_bytes,
                    r.measured_freed_bytes,
                    r.level_before.name,
                    r.level_after.name,
                    r.model,
                    r.provider,
                    r.pool_id,
                    r.error,
                )
                for r in records
            ],
        )
    elif kind == "usage":
        conn.executemany(
            "insert into usage (started_at, model, provider, latency_s, ttft_s, success, "
            "prompt_tokens, completion_tokens, error) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.started_at,
                    r.model,
                    r.provider,
                    r.latency_s,
                    r.time_to_first_token_s,
                    int(r.success),
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.error,
                )
                for r in records
            ],
        )
    else:
        record_type(kind)  # a StateError naming the kinds there are
        raise StateError(f"no table keeps records of kind {kind!r}", hint="report this bug")


def _sample_from_row(row: Sequence[Any]) -> MemorySample:
    taken_at, count, level, managed_bytes, pools = row
    return MemorySample(
        taken_at=taken_at,
        level=PressureLevel[level],
        managed_bytes=managed_bytes,
        pools=tuple(
            PoolSample(pool_id=p[0], total_bytes=p[1], used_bytes=p[2], level=PressureLevel[p[3]])
            for p in json.loads(pools)
        ),
        count=count,
    )


# kind -> (table, time column, columns selected, row -> record)
_READERS: dict[str, tuple[str, str, str, Callable[[Sequence[Any]], Any]]] = {
    "sample": (
        "sample",
        "taken_at",
        "taken_at, count, level, managed_bytes, pools",
        _sample_from_row,
    ),
    "event": (
        "event",
        "at",
        "at, kind, level, message, data",
        lambda r: Event(
            at=r[0],
            kind=r[1],
            level=None if r[2] is None else PressureLevel[r[2]],
            message=r[3],
            data=json.loads(r[4]),
        ),
    ),
    "reading": (
        "reading",
        "taken_at",
        "record",
        lambda r: record_from_data("reading", json.loads(r[0])),
    ),
    "action": (
        "action",
        "at",
        "at, kind, strategy, description, ok, expected_freed_bytes, measured_freed_bytes, "
        "level_before, level_after, model, provider, pool_id, error",
        lambda r: ActionRecord(
            at=r[0],
            kind=r[1],
            strategy=r[2],
            description=r[3],
            ok=bool(r[4]),
            expected_freed_bytes=r[5],
            measured_freed_bytes=r[6],
            level_before=PressureLevel[r[7]],
            level_after=PressureLevel[r[8]],
            model=r[9],
            provider=r[10],
            pool_id=r[11],
            error=r[12],
        ),
    ),
    "usage": (
        "usage",
        "started_at",
        "model, provider, started_at, latency_s, success, prompt_tokens, completion_tokens, "
        "error, ttft_s",
        lambda r: UsageRecord(
            model=r[0],
            provider=r[1],
            started_at=r[2],
            latency_s=r[3],
            success=bool(r[4]),
            prompt_tokens=r[5],
            completion_tokens=r[6],
            error=r[7],
            time_to_first_token_s=r[8],
        ),
    ),
}


# -- downsampling and retention -----------------------------------------------------------------


def _peak(rows: Sequence[Sequence[Any]]) -> tuple[int, str, int, str]:
    """The peak of sample rows (count, level, managed_bytes, pools JSON): summed count, highest
    level, highest managed bytes, per pool the highest use and level."""
    count = sum(r[0] for r in rows)
    level = max((PressureLevel[r[1]] for r in rows), default=PressureLevel.NORMAL)
    managed = max(r[2] for r in rows)
    pools: dict[str, list[Any]] = {}
    for row in rows:
        for pool_id, total, used, pool_level in json.loads(row[3]):
            seen = pools.get(pool_id)
            if seen is None:
                pools[pool_id] = [pool_id, total, used, pool_level]
            else:
                seen[1] = max(seen[1], total)
                seen[2] = max(seen[2], used)
                seen[3] = max(PressureLevel[seen[3]], PressureLevel[pool_level]).name
    return count, level.name, managed, json.dumps(list(pools.values()), separators=(",", ":"))


def _fold_samples(conn: sqlite3.Connection, tier: int, width_s: float, before: float) -> int:
    """Fold the rows of ``tier`` that lie in buckets of ``width_s`` ending by ``before`` into one
    row per bucket in the next tier (merged with a row already there); the rows folded."""
    rows = conn.execute(
        "select taken_at, count, level, managed_bytes, pools from sample "
        "where tier = ? and taken_at < ? order by taken_at",
        (tier, before),
    ).fetchall()
    if not rows:
        return 0
    buckets: dict[float, list[Sequence[Any]]] = {}
    for row in rows:
        buckets.setdefault(math.floor(row[0] / width_s) * width_s, []).append(row[1:])
    for start, members in buckets.items():
        existing = conn.execute(
            "select rowid, count, level, managed_bytes, pools from sample "
            "where tier = ? and taken_at = ?",
            (tier + 1, start),
        ).fetchone()
        if existing is not None:
            members.append(existing[1:])
        count, level, managed, pools = _peak(members)
        if existing is None:
            conn.execute(
                "insert into sample (tier, taken_at, count, level, managed_bytes, pools) "
                "values (?, ?, ?, ?, ?, ?)",
                (tier + 1, start, count, level, managed, pools),
            )
        else:
            conn.execute(
                "update sample set count = ?, level = ?, managed_bytes = ?, pools = ? "
                "where rowid = ?",
                (count, level, managed, pools, existing[0]),
            )
    conn.execute("delete from sample where tier = ? and taken_at < ?", (tier, before))
    return len(rows)


def _fold_usage(conn: sqlite3.Connection, before: float) -> int:
    """Fold per-request usage older than ``before`` (an hour boundary) into hourly totals."""
    rows = conn.execute(
        "select model, provider, started_at, latency_s, ttft_s, success, prompt_tokens, "
        "completion_tokens from usage where started_at < ?",
        (before,),
    ).fetchall()
    if not rows:
        return 0
    totals: dict[tuple[float, str, str], list[Any]] = {}
    for model, provider, started_at, latency, ttft, success, tokens_in, tokens_out in rows:
        key = (math.floor(started_at / HOUR_S) * HOUR_S, model, provider)
        t = totals.setdefault(key, [0, 0, 0.0, 0.0, 0.0, 0, 0, 0])
        t[0] += 1
        t[1] += 0 if success else 1
        t[2] += latency
        t[3] = max(t[3], latency)
        if ttft is not None:
            t[4] += ttft
            t[5] += 1
        t[6] += tokens_in or 0
        t[7] += tokens_out or 0
    conn.executemany(
        "insert into usage_hourly (hour, model, provider, calls, failures, latency_s_sum, "
        "latency_s_max, ttft_s_sum, ttft_calls, prompt_tokens, completion_tokens) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "on conflict (hour, model, provider) do update set calls = calls + excluded.calls, "
        "failures = failures + excluded.failures, "
        "latency_s_sum = latency_s_sum + excluded.latency_s_sum, "
        "latency_s_max = max(latency_s_max, excluded.latency_s_max), "
        "ttft_s_sum = ttft_s_sum + excluded.ttft_s_sum, "
        "ttft_calls = ttft_calls + excluded.ttft_calls, "
        "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = completion_tokens + excluded.completion_tokens",
        [(*key, *t) for key, t in totals.items()],
    )
    conn.execute("delete from usage where started_at < ?", (before,))
    return len(rows)


def _newest(conn: sqlite3.Connection, table: str, column: str, where: str = "") -> float | None:
    row = conn.execute(f"select max({column}) from [{table}] {where}").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def compact(conn: sqlite3.Connection, state: StateConfig) -> None:
    """Downsample samples and fold usage into hourly totals, then drop what is past retention.

    Ages are measured back from the newest record of each kind, not from the wall clock: a
    history that stops growing is not emptied, and a simulated month compacts like a real one.
    """
    newest = _newest(conn, "sample", "taken_at")
    if newest is not None:
        full_rate_end = math.floor((newest - state.retention_full_rate_s) / MINUTE_S) * MINUTE_S
        _fold_samples(conn, RAW, MINUTE_S, full_rate_end)
        per_minute_end = math.floor((newest - state.retention_per_minute_s) / HOUR_S) * HOUR_S
        _fold_samples(conn, PER_MINUTE, HOUR_S, per_minute_end)
        conn.execute(
            "delete from sample where tier = ? and taken_at < ?",
            (PER_HOUR, newest - state.retention_samples_s),
        )
    for table, column in (("event", "at"), ("reading", "taken_at"), ("action", "at")):
        latest = _newest(conn, table, column)
        if latest is not None:
            conn.execute(
                f"delete from [{table}] where {column} < ?", (latest - state.retention_events_s,)
            )
    latest = _newest(conn, "usage", "started_at")
    if latest is not None:
        _fold_usage(conn, math.floor((latest - state.retention_usage_s) / HOUR_S) * HOUR_S)
        conn.execute(
            "delete from usage_hourly where hour < ?",
            (latest - state.retention_usage_hourly_s,),
        )


def _why_unwritable(folder: Path) -> str:
    """Why SQLite could not open a file in ``folder``, in words."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    except OSError as exc:
        return f"{folder}: {exc.strerror}"
    if not os.access(folder, os.W_OK):
        return f"no permission to write in {folder}"
    return f"{folder} is writable; the file itself may be damaged or locked"


# -- the store ----------------------------------------------------------------------------------

_WRITE_HINT = "set [state] path to a writable file with free space, or [state] enabled = false"
_FLUSH = object()
_STOP = object()


class Store:
    """One history file: a bounded queue, a writer thread that commits it in batches, and a
    reading connection. One per file per process (:func:`store_for`)."""

    def __init__(self, path: Path, state: StateConfig) -> None:
        self.path = path
        self.state = state
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=state.queue_size)
        self._done = threading.Condition()
        self._queued = 0  # records accepted by put()
        self._finished = 0  # records committed or lost
        self.committed = 0  # records committed (acknowledged)
        self.dropped = 0  # records lost: the queue was full, or their batch failed
        self.error: str | None = None  # the last write failure, until a batch commits again
        self._error_raised = False
        self._session_id: int | None = None
        self._compacted_minute: float | None = None
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"memwarden-state:{path.name}", daemon=True
        )
        self._thread.start()

    # The caller's side: cheap and never blocking.

    def put(self, kind: str, record: Any) -> None:
        """Queue a record; a full queue drops it (counted in ``dropped``). Raises
        :class:`StateWriteFailed` once in the store's life, at the first failure, so that it is
        reported once; later failures are only counted (a disk that fills up flips between
        failing and working as SQLite frees pages)."""
        with self._done:
            self._queued += 1
        try:
            self._queue.put_nowait((kind, record))
        except queue.Full:
            with self._done:
                self.dropped += 1
                self._finished += 1
                self._done.notify_all()
            self._fail_once(
                f"the write queue is full ({self.state.queue_size} records)",
                "raise [state] queue_size, or find what makes writing slow",
            )
        if self.error is not None and not self._error_raised:
            self._error_raised = True
            raise StateWriteFailed(f"cannot write history to {self.path}: {self.error}")

    def _fail_once(self, error: str, hint: str = _WRITE_HINT) -> None:
        error = f"{error}; {hint}"
        if self.error is None:
            # Reported to the user once, as plugin-failed, by the next put(); logged for debugging.
            log.debug("history: %s; records are dropped until writing works again", error)
        self.error = error

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every record queued before this call is committed or lost; True when all
        were committed (acknowledged) and nothing failed meanwhile."""
        with self._done:
            target = self._queued
            lost_before = self.dropped
        with contextlib.suppress(queue.Full):
            self._queue.put(_FLUSH, timeout=timeout_s)
        with self._done:
            self._done.wait_for(lambda: self._finished >= target, timeout=timeout_s)
            return self._finished >= target and self.dropped == lost_before

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, mark the session ended, and stop the writer."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)

    # The writer thread.

    def _connect(self) -> sqlite3.Connection:
        import sqlite_utils

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("pragma journal_mode=wal")
        except sqlite3.OperationalError as exc:
            raise sqlite3.OperationalError(f"{exc} ({_why_unwritable(self.path.parent)})") from None
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            conn.execute("pragma synchronous=normal")
            ensure_schema(db, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[tuple[str, Any]] = []
            deadline = time.monotonic() + self.state.flush_interval_s
            while True:
                if item is _STOP:
                    stopping = True
                    break
                if item is _FLUSH:
                    break
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                conn = self._write_retrying(conn, batch, ending=stopping)
            except Exception as exc:  # a read-only or full disk, a locked file, a bug
                self._lost(batch, exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
            else:
                with self._done:
                    self.committed += len(batch)
                    self._finished += len(batch)
                    self.error = None
                    self._done.notify_all()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _write_retrying(
        self, conn: sqlite3.Connection | None, batch: list[tuple[str, Any]], ending: bool
    ) -> sqlite3.Connection:
        """Write a batch, opening the file first if needed. Another process holding the file
        (SQLite's busy timeout does not cover every lock, switching to WAL among them) is waited
        for, up to ``LOCKED_WAIT_S``; any other error is raised at once."""
        deadline = time.monotonic() + LOCKED_WAIT_S
        while True:
            try:
                if conn is None:
                    conn = self._connect()
                self._write(conn, batch, ending=ending)
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    raise
                time.sleep(0.02)

    def _lost(self, batch: list[tuple[str, Any]], exc: Exception) -> None:
        error = str(exc.message) if isinstance(exc, StateError) else f"{exc}"
        self._fail_once(error)
        with self._done:
            self.dropped += len(batch)
            self._finished += len(batch)
            self._done.notify_all()

    def _write(self, conn: sqlite3.Connection, batch: list[tuple[str, Any]], ending: bool) -> None:
        by_kind: dict[str, list[Any]] = {}
        for kind, record in batch:
            by_kind.setdefault(kind, []).append(record)
        now = time.time()
        conn.execute("begin immediate")
        try:
            for kind, records in by_kind.items():
                _insert(conn, kind, records)
            self._note_session(conn, now, ending)
            conn.execute("commit")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("rollback")
            raise
        newest = max((r.taken_at for r in by_kind.get("sample", ())), default=None)
        minute = None if newest is None else math.floor(newest / MINUTE_S)
        if by_kind.keys() - {"sample"} or minute != self._compacted_minute or ending:
            # Compaction is its own transaction: the batch is acknowledged whether or not it
            # succeeds, and it does real work only once a minute of samples has passed.
            # A compaction that fails (the file locked by another process, a full disk) is
            # rolled back and tried again with a later batch; the batch stays acknowledged.
            self._compacted_minute = minute
            try:
                conn.execute("begin immediate")
                compact(conn, self.state)
                conn.execute("commit")
            except sqlite3.Error as exc:
                log.debug("history: compaction deferred: %s", exc)
                self._compacted_minute = None
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("rollback")

    def _note_session(self, conn: sqlite3.Connection, now: float, ending: bool) -> None:
        if self._session_id is None:
            from memwarden.core.plugins import _memwarden_version

            cursor = conn.execute(
                "insert into session (pid, host, version, started_at, last_seen_at) "
                "values (?, ?, ?, ?, ?)",
                (os.getpid(), socket.gethostname(), _memwarden_version(), now, now),
            )
            self._session_id = cursor.lastrowid
        conn.execute(
            "update session set last_seen_at = ?, ended_at = ? where id = ?",
            (now, now if ending else None, self._session_id),
        )

    # Reading.

    def read(self, kind: str, since: float | None, limit: int) -> list[Any]:
        """The newest ``limit`` records of ``kind`` at or after ``since``, oldest first."""
        self.flush()
        return read_file(self.path, kind, since, limit, self._reading_connection)

    def _reading_connection(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
        return self._reader


def read_file(
    path: Path,
    kind: str,
    since: float | None,
    limit: int,
    connect: Callable[[], sqlite3.Connection] | None = None,
) -> list[Any]:
    """Records of ``kind`` from a history file, without writing to it; oldest first."""
    record_type(kind)  # an unknown kind is a StateError, not an empty answer
    if limit <= 0 or not path.exists():
        return []
    table, column, columns, build = _READERS[kind]
    conn = connect() if connect is not None else sqlite3.connect(path, timeout=10.0)
    where, params = ("", []) if since is None else (f"where {column} >= ?", [since])
    try:
        rows = conn.execute(
            f"select {columns} from [{table}] {where} order by {column} desc, rowid desc limit ?",
            [*params, limit],
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            return _read_legacy(conn, kind, since, limit)
        raise StateError(
            f"cannot read history from {path}: {exc}",
            hint="check that the file is a memwarden history file ([state] path)",
        ) from None
    finally:
        if connect is None:
            conn.close()
    return [build(row) for row in reversed(rows)]


def _read_legacy(conn: sqlite3.Connection, kind: str, since: float | None, limit: int) -> list:
    """A file no memwarden has written to since schema versions: read the old layout as it is
    (the next write migrates it)."""
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    if kind not in tables:
        return []
    columns = {r[1] for r in conn.execute(f"pragma table_info([{kind}])")}
    if "record" not in columns:
        return []
    moment = "recorded_at" if "recorded_at" in columns else "written_at"
    moment = f"coalesce({moment}, written_at)"
    where, params = ("", []) if since is None else (f"where {moment} >= ?", [since])
    rows = conn.execute(
        f"select record from [{kind}] {where} order by {moment} desc, rowid desc limit ?",
        [*params, limit],
    ).fetchall()
    return [record_from_data(kind, json.loads(row[0])) for row in reversed(rows)]


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def store_for(config: Config) -> Store:
    """The process's store for ``[state] path``, started on first use."""
    path = config.state.resolved_path()
    with _stores_lock:
        store = _stores.get(path)
        if store is None or not store._thread.is_alive():
            store = _stores[path] = Store(path, config.state)
        return store


def existing_store(config: Config) -> Store | None:
    """The process's store for ``[state] path`` if one was started."""
    with _stores_lock:
        return _stores.get(config.state.resolved_path())


@atexit.register
def close_all() -> None:
    """Commit what every store has queued (at exit: nothing acknowledged is left behind)."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close()


@hookimpl
def persist_state(kind: str, record: Any, config: Config) -> None:
    record_type(kind)
    store_for(config).put(kind, record)


@hookimpl
def read_state(kind: str, since: float | None, limit: int, config: Config) -> list[Any]:
    record_type(kind)  # an unknown kind is a StateError, not an empty answer
    store = existing_store(config)
    if store is not None:
        return store.read(kind, since, limit)
    return read_file(config.state.resolved_path(), kind, since, limit)


def connect_readonly(config: Config) -> sqlite3.Connection | None:
    """A connection for reports (`memwarden history`, `report`, `recommend`) after flushing this
    process's writes; None when no history file exists yet."""
    store = existing_store(config)
    if store is not None:
        store.flush()
    path = config.state.resolved_path()
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)


def sessions(config: Config, since: float | None = None) -> list[dict[str, Any]]:
    """The processes that wrote to the history file (last seen at or after ``since``), oldest
    first: pid, host, version, started_at, last_seen_at, ended_at (None: still running, or
    killed). Empty when there is no file yet."""
    conn = connect_readonly(config)
    if conn is None:
        return []
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "select pid, host, version, started_at, last_seen_at, ended_at from session "
            "where last_seen_at >= ? order by started_at",
            (since if since is not None else float("-inf"),),
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # a file from before schema versions has no session table
    finally:
        conn.close()
    return [dict(row) for row in rows]
