"""IncidentStore: the one object the app, the engine, the review and the CLI use to reach the database.

Writes are queued to one writer thread (the caller never waits on disk); reads run on a per-thread read
connection, beside the writer, thanks to WAL.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TextIO

import platformdirs

from console.db import Database, Writer
from console.incidents.model import EvidencePoint, Incident, IncidentChange
from console.store import export as exporting
from console.store import ledger, queries, reliability
from console.store import merge as merging
from console.store import repair as repairing
from console.store.schema import SCHEMA
from console.store.types import (
    DamagedRow,
    IncidentFilter,
    IncidentPage,
    MergeResult,
    PageCursor,
    RateRow,
    RepairResult,
    SeenBefore,
    StoreError,
    TimelineEntry,
)
from console.store.writer import (
    MAX_BATCH,
    MAX_PENDING_CHANGES,
    RETRY_S,
    ChangesWrite,
    ExposureWrite,
    IncidentWrites,
    Write,
)

_EXPORT_PAGE = 1000


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("gpu-ops-console")) / "incidents.sqlite3"


class IncidentStore:
    """Writes go through one ``console.db.Writer`` thread; reads run through ``Database.read``, so every read
    method raises StoreError (with the file and the explained cause) rather than any sqlite3 error.
    """

    def __init__(self, db: Database, writer: Writer[Write] | None, handler: IncidentWrites | None = None) -> None:
        self.path = db.path
        self.recovered = db.recovered  # set when a damaged file was moved aside at open (show its .message)
        self._db = db
        self._writer = writer
        self._handler = handler
        self._closed = False
        self._unsaved_at_close = 0

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        on_error: Callable[[str], None] | None = None,
        max_pending_changes: int = MAX_PENDING_CHANGES,
    ) -> IncidentStore:
        """Open (creating, recovering or migrating) the database; raise StoreError with a clear message.

        ``on_error`` is called on the writer thread with a message when a write fails (disk full, ...).
        ``max_pending_changes`` bounds what a refusing disk leaves queued in memory (past it the oldest are lost).
        """
        db = Database.open(Path(path), SCHEMA)
        try:
            handler = IncidentWrites(db.write_connection, max_pending=max_pending_changes)
        except sqlite3.Error as exc:
            db.close()
            raise SCHEMA.failure("write", db.path, exc) from exc
        writer = Writer(
            db,
            handler,
            thread_name="incident-store-writer",
            max_batch=MAX_BATCH,
            idle_s=RETRY_S,  # wakes to retry what a full disk refused
            on_error=on_error,
        )
        return cls(db, writer, handler)

    @classmethod
    def open_readonly(cls, path: Path) -> IncidentStore:
        """Open for reading only (the CLI's list, show, export, stats): works on a read-only file or folder and
        on a full disk; never renames, creates or migrates the file (an older file is opened as ``open`` does).
        Every write method raises StoreError."""
        db = Database.open_readonly(Path(path), SCHEMA)
        if not db.read_only:  # an older schema: migrated as any open does; reopen it with its writer
            db.close()
            return cls.open(Path(path))
        return cls(db, None)

    # --- writes (queued, never blocking) ------------------------------------------------------------------

    def submit(self, changes: Sequence[IncidentChange]) -> None:
        writer = self._writable()
        if changes:
            writer.put(ChangesWrite(tuple(changes)))

    def record_exposure(self, site: str, provider: str, gpu_model: str, gpu_seconds: float, at: float) -> None:
        """Add GPU-seconds observed to the hour that ``at`` falls in (the denominator of incident rates)."""
        writer = self._writable()
        if not math.isfinite(gpu_seconds) or gpu_seconds <= 0:
            return
        writer.put(ExposureWrite(site, provider, gpu_model, int(at // 3600), gpu_seconds))

    @property
    def read_only(self) -> bool:
        """Opened by ``open_readonly``: another process (or nobody) writes the file."""
        return self._writer is None

    def flush(self, timeout_s: float = 10) -> None:
        """Wait until everything queued before this call is committed (or has failed and been reported)."""
        self._writable().flush(timeout_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            self._db.close()
            return
        self._writer.close(timeout_s=30)
        if self._handler is not None and self._handler.pending_changes:
            # The last retry (at close) failed too: these changes are lost. Said once, with the count.
            self._unsaved_at_close = self._handler.pending_changes
            SCHEMA.log.error(
                "%d incident changes could not be written to %s (%s) and are lost",
                self._unsaved_at_close,
                self.path,
                self.last_error or "the disk refused them",
            )

    def __enter__(self) -> IncidentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_error(self) -> str | None:
        """The last write failure's message (None if every write so far succeeded)."""
        return None if self._writer is None else self._writer.last_error

    @property
    def pending_changes(self) -> int:
        """Changes the disk refused so far, kept in memory and retried every second."""
        return 0 if self._handler is None else self._handler.pending_changes

    @property
    def unsaved_changes(self) -> int:
        """Changes lost for good: dropped past the in-memory bound, or still refused when the store closed."""
        dropped = 0 if self._handler is None else self._handler.dropped_changes
        return dropped + self._unsaved_at_close

    @property
    def failed_writes(self) -> int:
        return 0 if self._writer is None else self._writer.failed_writes

    @property
    def writer_alive(self) -> bool:
        return self._writer is not None and self._writer.alive

    # --- reads (any thread) -------------------------------------------------------------------------------

    def query(self, flt: IncidentFilter, *, after: PageCursor | None = None, limit: int = 100) -> IncidentPage:
        return self._db.read(queries.page, flt, after, limit)

    def count(self, flt: IncidentFilter) -> int:
        return self._db.read(queries.count, flt)

    def get(self, incident_id: str) -> Incident | None:
        return self._db.read(queries.get, incident_id)

    def damaged(self, incident_id: str) -> DamagedRow | None:
        """Why the row of ``incident_id`` cannot be read (``get`` gives None for it); None if it is readable."""
        return self._db.read(queries.damaged, incident_id)

    def children(self, parent_id: str) -> tuple[Incident, ...]:
        """The symptoms grouped under ``parent_id``, newest first."""
        return self._db.read(queries.children, parent_id)

    def symptom_counts(self, ids: Sequence[str]) -> dict[str, int]:
        """How many symptoms each of ``ids`` has (ids with none are absent)."""
        if not ids:
            return {}
        return self._db.read(queries.symptom_counts, tuple(ids))

    def unresolved(self) -> tuple[Incident, ...]:
        """Every open or acknowledged incident, newest first (the engine resumes them at start)."""
        return self._db.read(queries.unresolved)

    def evidence(self, incident_id: str) -> list[EvidencePoint]:
        return self._db.read(queries.evidence, incident_id)

    def evidence_count(self, incident_id: str) -> int:
        return self._db.read(queries.evidence_count, incident_id)

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        return self._db.read(queries.timeline, incident_id)

    def seen_before(self, incident: Incident) -> SeenBefore:
        return self._db.read(queries.seen_before, incident)

    def rates(self, group_by: str, since: float, until: float, *, roots_only: bool = False) -> list[RateRow]:
        """Incidents per 1,000 GPU-hours; ``roots_only`` counts each fault once, its symptoms left out."""
        return self._db.read(queries.rates, group_by, since, until, roots_only)

    # --- the fix ledger (console/store/ledger.py) --------------------------------------------------------

    def ledger_entries(
        self, *, incident_id: str | None = None, gpu_uuid: str | None = None
    ) -> list[ledger.LedgerEntry]:
        """The operator steps on one incident, or on one GPU, oldest first."""
        return self._db.read(lambda conn: ledger.entries_for(conn, incident_id=incident_id, gpu_uuid=gpu_uuid))

    def verified_fixes(
        self,
        window_s: float,
        now: float,
        *,
        rule: str | None = None,
        code: str | None = None,
        gpu_uuid: str | None = None,
        node: str | None = None,
    ) -> list[ledger.VerifiedFix]:
        """Resolutions and whether they held (derived now, with this verify window), oldest first."""
        return self._db.read(
            lambda conn: ledger.verified(conn, window_s, now, rule=rule, code=code, gpu_uuid=gpu_uuid, node=node)
        )

    def fix_stats(
        self, window_s: float, now: float, *, rule: str | None = None, code: str | None = None
    ) -> list[ledger.FixStatsRow]:
        return self._db.read(ledger.stats, window_s, now, rule, code)

    def reliability(self, since: float, until: float) -> list[reliability.ReliabilityRow]:
        """Per provider and GPU model: incidents per 1,000 GPU-hours, mean time to resolve, mean time between."""
        return self._db.read(reliability.reliability, since, until)

    def ledger_since(self, after: int, limit: int = 500) -> list[tuple[int, ledger.LedgerEntry]]:
        """Operator steps written after ``after`` by any process (the running console picks up the CLI's)."""
        return self._db.read(ledger.since, after, limit)

    def ledger_cursor(self) -> int:
        """Where ``ledger_since`` starts from for steps not yet written."""
        return self._db.read(ledger.last_rowid)

    def iter_incidents(self, flt: IncidentFilter) -> Iterator[Incident]:
        """Every matching incident, newest first, fetched a page at a time."""
        cursor: PageCursor | None = None
        while True:
            result = self.query(flt, after=cursor, limit=_EXPORT_PAGE)
            yield from result.incidents
            if result.next is None:
                return
            cursor = result.next

    def iter_counted(
        self, flt: IncidentFilter, *, with_ledger: bool = False, damaged: list[DamagedRow] | None = None
    ) -> Iterator[exporting.Counted]:
        """Every matching incident with its number of symptoms (and its ledger entries), newest first, a page
        (and one count) at a time; rows that cannot be read are left out (and added to ``damaged``)."""
        cursor: PageCursor | None = None
        while True:
            result = self.query(flt, after=cursor, limit=_EXPORT_PAGE)
            if damaged is not None:
                damaged.extend(result.damaged)
            ids = [incident.id for incident in result.incidents]
            counts = self.symptom_counts(ids)
            entries = self._db.read(ledger.entries_of, ids) if with_ledger else None
            yield from exporting.counted(result.incidents, counts, entries)
            if result.next is None:
                return
            cursor = result.next

    def export(
        self,
        flt: IncidentFilter,
        fmt: exporting.ExportFormat,
        out: TextIO,
        *,
        damaged: list[DamagedRow] | None = None,
    ) -> int:
        """Write the matching incidents (with their symptom counts, and in JSON their ledger entries) to ``out``
        as CSV or JSON; returns how many. Damaged rows are left out (and added to ``damaged``)."""
        if fmt not in ("csv", "json"):
            raise ValueError(f"export format must be csv or json, not {fmt!r}")
        rows = self.iter_counted(flt, with_ledger=fmt == "json", damaged=damaged)
        return exporting.write_counted(rows, fmt, out)

    def merge_from(self, other: Path, timeout_s: float = 600) -> MergeResult:
        """Import another operator's database (waits for the writer; call it off the GUI thread)."""
        writer = self._writable()
        other = Path(other)
        merging.check_other(other, self.path)
        result = writer.exclusive(lambda conn: merging.merge(conn, other))
        try:
            merged = result.result(timeout_s)
        except FutureTimeout:
            raise StoreError(f"merging {other} did not finish within {timeout_s:g} s") from None
        except sqlite3.Error as exc:
            raise StoreError(f"merging {other} failed: {exc}") from exc
        return merged

    def repair(self, *, dry_run: bool = False, timeout_s: float = 600) -> RepairResult:
        """Remove every stored row no reader can interpret (``dry_run``: only say which)."""
        result = self._writable().exclusive(lambda conn: repairing.repair(conn, dry_run=dry_run))
        try:
            return result.result(timeout_s)
        except FutureTimeout:
            raise StoreError(f"repairing {self.path} did not finish within {timeout_s:g} s") from None
        except sqlite3.Error as exc:
            raise StoreError(f"repairing {self.path} failed: {exc}") from exc

    # --- internals ----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the incident database {self.path} is closed")

    def _writable(self) -> Writer[Write]:
        self._check_open()
        if self._writer is None:
            raise StoreError(f"the incident database {self.path} was opened read-only")
        return self._writer
