"""What the incident database's writer thread writes: incident changes and exposure, batched into few commits.

The thread itself, its batching, barriers and error reporting are console.db.Writer's. A failed batch is rolled
back and its writes retried one by one, so one bad write cannot take good ones with it; a write that still fails
is dropped and reported (``last_error`` and the ``on_error`` callback, called on the writer thread). Committed data
is never touched by a failure. Writes the file or the disk refuses (full disk, I/O error, a lock held elsewhere)
are not dropped: they stay queued in memory, in order and bounded, and are retried every second until they go in.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from console.db import Writer
from console.incidents.model import ChangeKind, IncidentChange
from console.store.ledger import INSERT_LEDGER, ledger_row
from console.store.schema import INCIDENT_COLUMNS, incident_row
from console.store.validate import incident_problem

MAX_BATCH = 500  # queued items per commit: big enough to amortise the commit, small enough to bound a retry
# Changes kept in memory while the disk refuses them (about 2 KB each: 100 MB at most), retried every second.
MAX_PENDING_CHANGES = 50_000
RETRY_S = 1.0

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
# A row never goes back in status: another process (the CLI, a second console) may have acknowledged or resolved
# an incident this engine still holds open, and the engine's next update must not undo the operator's step. A
# resolved row takes no unresolved copy at all; an acknowledged one keeps its acknowledgement.
_KEEP_ACKNOWLEDGED = {
    "status": "CASE WHEN incidents.status = 'acknowledged' AND excluded.status = 'open' "
    "THEN 'acknowledged' ELSE excluded.status END",
    "acknowledged_at": "coalesce(excluded.acknowledged_at, incidents.acknowledged_at)",
}
_UPSERT_STAGED = (
    f"INSERT INTO main.incidents ({_COLUMNS}) "
    f"SELECT {_COLUMNS} FROM temp.staged_incidents WHERE NOT only_if_absent ORDER BY rowid "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(
        f"{name} = {_KEEP_ACKNOWLEDGED.get(name, f'excluded.{name}')}" for name in INCIDENT_COLUMNS if name != "id"
    )
    + " WHERE incidents.status <> 'resolved' OR excluded.status = 'resolved'"
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
        ledger: list[tuple[Any, ...]] = []
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
            if change.operator and (row := ledger_row(change)) is not None:
                ledger.append(row)
        if ledger:
            conn.executemany(INSERT_LEDGER, ledger)
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


Write = ChangesWrite | ExposureWrite


class IncidentWrites:
    """The incident database's writes, for its ``console.db.Writer``: one transaction per batch of queued writes.

    Incident rows are staged while the batch's writes apply and moved into ``incidents`` at its end, in one
    statement each for upserts and for evidence-only rows (see ``_CREATE_STAGE``).
    """

    def __init__(self, conn: sqlite3.Connection, *, max_pending: int = MAX_PENDING_CHANGES) -> None:
        conn.execute(_CREATE_STAGE)
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: the index pages a busy log touches stay cached
        # Writes the file or the disk refused (full disk): kept in order, retried before anything newer and at
        # every idle wake-up, bounded by ``max_pending`` changes (past it the oldest are dropped and counted).
        self._pending: list[Write] = []
        self._max_pending = max_pending
        self._retry_at = 0.0  # monotonic time of the next retry after a refusal
        self.pending_changes = 0  # read from other threads: a plain int, replaced whole
        self.dropped_changes = 0

    def write(self, writer: Writer[Write], batch: Sequence[Write]) -> None:
        checked = _checked(writer, batch)
        if self._pending and time.monotonic() < self._retry_at:
            # The disk refused writes a moment ago: queue behind them rather than redo the whole queue per batch.
            self._pending.extend(checked)
        else:
            items = [*self._pending, *checked]
            self._pending = [] if self._commit(writer, items) else items
        self._bound(writer)

    def _commit(self, writer: Writer[Write], items: Sequence[Write]) -> bool:
        if writer.commit(items, _apply, _describe):
            return True
        self._retry_at = time.monotonic() + RETRY_S
        return False

    def maintain(self, writer: Writer[Write], *, flushing: bool) -> None:
        """Retry what the disk refused, once a second and when a flush or the close waits (every write is
        otherwise committed with its batch)."""
        due = flushing or time.monotonic() >= self._retry_at
        if self._pending and due and self._commit(writer, self._pending):
            writer.db.schema.log.warning(
                "the %s %s is writable again: %d queued incident changes saved",
                writer.db.what,
                writer.db.path,
                self.pending_changes,
            )
            self._pending = []
        self._bound(writer)

    def _bound(self, writer: Writer[Write]) -> None:
        changes = sum(_size(write) for write in self._pending)
        dropped = 0
        while changes > self._max_pending and self._pending:
            oldest = self._pending.pop(0)
            changes -= _size(oldest)
            dropped += _size(oldest)
        if dropped:
            self.dropped_changes += dropped
            # Reported like any lost write (logged once per cause, the on_error callback: the window's status bar).
            reason = sqlite3.OperationalError(
                f"dropped: more than {self._max_pending:,} changes were waiting while the disk refused them "
                f"({self.dropped_changes:,} dropped so far)"
            )
            writer.report(f"{dropped} incident changes", reason)
        self.pending_changes = changes


def _size(write: Write) -> int:
    return len(write.changes) if isinstance(write, ChangesWrite) else 1


def _checked(writer: Writer[Write], batch: Sequence[Write]) -> list[Write]:
    """The engine's own writes meet the same checks as a merge's rows: a change that fails is refused and
    reported (``last_error``, ``failed_writes``), the rest are written."""
    checked: list[Write] = []
    for write in batch:
        if isinstance(write, ExposureWrite):
            checked.append(write)
            continue
        good = []
        for change in write.changes:
            problem = incident_problem(incident_row(change.incident))
            if problem is None:
                good.append(change)
            else:
                writer.report(f"1 incident changes ({change.incident.id!r})", ValueError(f"refused: {problem}"))
        if len(good) == len(write.changes):
            checked.append(write)
        elif good:
            checked.append(ChangesWrite(tuple(good)))
    return checked


def _apply(conn: sqlite3.Connection, writes: Sequence[Write]) -> None:
    for write in writes:
        write.apply(conn)
    conn.execute(_UPSERT_STAGED)
    conn.execute(_INSERT_STAGED_IF_ABSENT)
    conn.execute("DELETE FROM temp.staged_incidents")


def _describe(writes: Sequence[Write]) -> str:
    changes = sum(len(write.changes) for write in writes if isinstance(write, ChangesWrite))
    exposures = sum(1 for write in writes if isinstance(write, ExposureWrite))
    return f"{changes} incident changes, {exposures} exposure records"
