"""The one thread that owns the write connection: it batches queued writes into few commits.

Nothing here raises into the caller's thread. A failed batch is rolled back and its writes retried one by
one, so one bad write cannot take good ones with it; a write that still fails is dropped and reported
(``last_error`` and the ``on_error`` callback, called on this thread).
Committed data is never touched by a failure.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from console.incidents.model import ChangeKind, IncidentChange
from console.store.opening import explain
from console.store.schema import INCIDENT_COLUMNS, incident_row

log = logging.getLogger(__name__)

MAX_BATCH = 500  # queued items per commit: big enough to amortise the commit, small enough to bound a retry

_COLUMNS = ", ".join(INCIDENT_COLUMNS)
_PLACEHOLDERS = ", ".join("?" for _ in INCIDENT_COLUMNS)
# Incident rows are staged in a trigger-free temp table and moved in one INSERT ... SELECT per batch. FTS5
# flushes its pending terms at every statement savepoint, so firing the FTS trigger from executemany (one
# statement per row) writes one tiny FTS segment per row: about 8x slower on a big log.
_CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS staged_incidents AS "
    f"SELECT {_COLUMNS}, 0 AS only_if_absent FROM main.incidents WHERE 0"
)
_STAGE = f"INSERT INTO temp.staged_incidents ({_COLUMNS}, only_if_absent) VALUES ({_PLACEHOLDERS}, ?)"
_UPSERT_STAGED = (
    f"INSERT INTO main.incidents ({_COLUMNS}) "
    f"SELECT {_COLUMNS} FROM temp.staged_incidents WHERE NOT only_if_absent ORDER BY rowid "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in INCIDENT_COLUMNS if name != "id")
)
_INSERT_STAGED_IF_ABSENT = (
    f"INSERT INTO main.incidents ({_COLUMNS}) "
    f"SELECT {_COLUMNS} FROM temp.staged_incidents WHERE only_if_absent ORDER BY rowid "
    "ON CONFLICT(id) DO NOTHING"
)
_INSERT_TIMELINE = (
    "INSERT OR IGNORE INTO timeline (incident_id, time, kind, note, severity, status, count) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVIDENCE = "INSERT OR IGNORE INTO evidence (incident_id, time, sample_json) VALUES (?, ?, ?)"
_ADD_EXPOSURE = (
    "INSERT INTO exposure (site, provider, gpu_model, hour, gpu_seconds) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(site, provider, gpu_model, hour) "
    "DO UPDATE SET gpu_seconds = gpu_seconds + excluded.gpu_seconds"
)


@dataclass(frozen=True, slots=True)
class ChangesWrite:
    changes: tuple[IncidentChange, ...]

    def apply(self, conn: sqlite3.Connection) -> None:
        staged: list[tuple[Any, ...]] = []
        timeline: list[tuple[Any, ...]] = []
        evidence: list[tuple[Any, ...]] = []
        for change in self.changes:
            incident = change.incident
            if change.kind is ChangeKind.EVIDENCE:
                # Evidence alone must not roll the incident back to an older snapshot; it only needs the row.
                staged.append((*incident_row(incident), 1))
            else:
                staged.append((*incident_row(incident), 0))
                timeline.append(
                    (
                        incident.id,
                        change.time,
                        str(change.kind),
                        change.note,
                        int(incident.severity),
                        str(incident.status),
                        incident.count,
                    )
                )
            evidence.extend((point.incident_id, point.time, point.sample_json) for point in change.evidence)
        if staged:
            conn.executemany(_STAGE, staged)
        if timeline:
            conn.executemany(_INSERT_TIMELINE, timeline)
        if evidence:
            conn.executemany(_INSERT_EVIDENCE, evidence)


@dataclass(frozen=True, slots=True)
class ExposureWrite:
    site: str
    provider: str
    gpu_model: str
    hour: int
    gpu_seconds: float

    def apply(self, conn: sqlite3.Connection) -> None:
        conn.execute(_ADD_EXPOSURE, (self.site, self.provider, self.gpu_model, self.hour, self.gpu_seconds))


@dataclass(frozen=True, slots=True)
class Exclusive:
    """A job that manages its own transactions (merge needs ATTACH, which is refused inside one)."""

    job: Callable[[sqlite3.Connection], Any]
    result: Future[Any]


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: threading.Event


_STOP = object()
# Errors about the file or the disk rather than about one write's content.
_ENVIRONMENTAL = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_CANTOPEN")


def _affects_every_write(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "").startswith(_ENVIRONMENTAL)


def _rollback(conn: sqlite3.Connection) -> None:
    # After an I/O error SQLite may have rolled back already, or ROLLBACK may fail too; neither may escape.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


Write = ChangesWrite | ExposureWrite


class StoreWriter:
    def __init__(self, conn: sqlite3.Connection, where: str, on_error: Callable[[str], None] | None = None) -> None:
        self._conn = conn
        self._where = where
        conn.execute(_CREATE_STAGE)
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: the index pages a busy log touches stay cached
        self._on_error = on_error
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._failed_writes = 0
        self._thread = threading.Thread(target=self._run, name="incident-store-writer", daemon=True)
        self._thread.start()

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def failed_writes(self) -> int:
        with self._lock:
            return self._failed_writes

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def put(self, item: Write | Exclusive) -> None:
        self._queue.put(item)

    def barrier(self) -> threading.Event:
        done = threading.Event()
        self._queue.put(_Barrier(done))
        return done

    def stop(self, timeout_s: float) -> bool:
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[Write] = []
            barriers: list[_Barrier] = []
            item: object = first
            try:
                while True:
                    if item is _STOP:
                        stopping = True
                    elif isinstance(item, _Barrier):
                        barriers.append(item)
                    elif isinstance(item, Exclusive):
                        self._commit(batch)
                        batch = []
                        self._run_exclusive(item)
                    else:
                        batch.append(item)  # type: ignore[arg-type]
                    if stopping or len(batch) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                self._commit(batch)
            except Exception:  # a bug must not kill the only writer
                log.exception("unexpected error in the incident store writer")
            finally:
                for barrier in barriers:
                    barrier.done.set()

    def _commit(self, batch: Sequence[Write]) -> None:
        if not batch:
            return
        try:
            self._transaction(batch)
            return
        except sqlite3.Error as exc:
            if _affects_every_write(exc):
                # Full disk, I/O error, lock held elsewhere: each write alone would fail the same way, slowly.
                self._report(batch, exc)
                return
            log.debug("batch of %d writes failed (%s); retrying one by one", len(batch), exc)
        except Exception:
            log.exception("unexpected error writing a batch; retrying one by one")
        for write in batch:
            try:
                self._transaction((write,))
            except Exception as exc:
                self._report((write,), exc)

    def _transaction(self, writes: Sequence[Write]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for write in writes:
                write.apply(conn)
            conn.execute(_UPSERT_STAGED)
            conn.execute(_INSERT_STAGED_IF_ABSENT)
            conn.execute("DELETE FROM temp.staged_incidents")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _run_exclusive(self, item: Exclusive) -> None:
        try:
            item.result.set_result(item.job(self._conn))
        except Exception as exc:
            _rollback(self._conn)
            item.result.set_exception(exc)

    def _report(self, writes: Sequence[Write], exc: Exception) -> None:
        reason = explain(exc) if isinstance(exc, sqlite3.Error) else repr(exc)
        changes = sum(len(write.changes) for write in writes if isinstance(write, ChangesWrite))
        exposures = sum(1 for write in writes if isinstance(write, ExposureWrite))
        what = f"{changes} incident changes, {exposures} exposure records"
        message = f"writing to the incident database {self._where} failed ({what} not saved): {reason}"
        with self._lock:
            first = self._last_error != message
            self._last_error = message
            self._failed_writes += 1
        if first:
            log.error("%s", message)  # a transition, not every repetition
        if self._on_error is not None:
            try:
                self._on_error(message)
            except Exception:
                log.exception("the incident store error callback failed")
