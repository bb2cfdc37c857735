"""IncidentStore: the one object the app, the engine, the review and the CLI use to reach the database.

Writes are queued to one writer thread (the caller never waits on disk); reads run on a per-thread read
connection, beside the writer, thanks to WAL.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TextIO

import platformdirs

from console.incidents.model import EvidencePoint, Incident, IncidentChange
from console.store import export as exporting
from console.store import merge as merging
from console.store import queries
from console.store.opening import ReadConnections, prepare
from console.store.types import (
    IncidentFilter,
    IncidentPage,
    MergeResult,
    PageCursor,
    RateRow,
    SeenBefore,
    StoreError,
    StoreRecovered,
    TimelineEntry,
)
from console.store.writer import ChangesWrite, Exclusive, ExposureWrite, StoreWriter

_EXPORT_PAGE = 1000


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("gpu-ops-console")) / "incidents.sqlite3"


class IncidentStore:
    def __init__(
        self,
        path: Path,
        write_conn: sqlite3.Connection,
        recovered: StoreRecovered | None,
        writer: StoreWriter,
    ) -> None:
        self.path = path
        self.recovered = recovered  # set when a damaged file was moved aside at open (show its .message)
        self._write_conn = write_conn
        self._writer = writer
        self._readers = ReadConnections(path, "incident database", StoreError)
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, on_error: Callable[[str], None] | None = None) -> IncidentStore:
        """Open (creating, recovering or migrating) the database; raise StoreError with a clear message.

        ``on_error`` is called on the writer thread with a message when a write fails (disk full, ...).
        """
        path = Path(path)
        write_conn, recovered = prepare(path)
        return cls(path, write_conn, recovered, StoreWriter(write_conn, str(path), on_error))

    # --- writes (queued, never blocking) ------------------------------------------------------------------

    def submit(self, changes: Sequence[IncidentChange]) -> None:
        self._check_open()
        if changes:
            self._writer.put(ChangesWrite(tuple(changes)))

    def record_exposure(self, site: str, provider: str, gpu_model: str, gpu_seconds: float, at: float) -> None:
        """Add GPU-seconds observed to the hour that ``at`` falls in (the denominator of incident rates)."""
        self._check_open()
        if not math.isfinite(gpu_seconds) or gpu_seconds <= 0:
            return
        self._writer.put(ExposureWrite(site, provider, gpu_model, int(at // 3600), gpu_seconds))

    def flush(self, timeout_s: float = 10) -> None:
        """Wait until everything queued before this call is committed (or has failed and been reported)."""
        self._check_open()
        if not self._writer.barrier().wait(timeout_s):
            raise StoreError(f"the incident database {self.path} did not finish writing within {timeout_s:g} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stopped = self._writer.stop(timeout_s=30)
        self._readers.close()
        if stopped:
            with contextlib.suppress(sqlite3.Error):
                self._write_conn.execute("PRAGMA optimize")  # keeps the planner's statistics fresh; cheap
            self._write_conn.close()

    def __enter__(self) -> IncidentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_error(self) -> str | None:
        """The last write failure's message (None if every write so far succeeded)."""
        return self._writer.last_error

    @property
    def failed_writes(self) -> int:
        return self._writer.failed_writes

    @property
    def writer_alive(self) -> bool:
        return self._writer.alive

    # --- reads (any thread) -------------------------------------------------------------------------------

    def query(self, flt: IncidentFilter, *, after: PageCursor | None = None, limit: int = 100) -> IncidentPage:
        return queries.page(self._reader(), flt, after, limit)

    def count(self, flt: IncidentFilter) -> int:
        return queries.count(self._reader(), flt)

    def get(self, incident_id: str) -> Incident | None:
        return queries.get(self._reader(), incident_id)

    def evidence(self, incident_id: str) -> list[EvidencePoint]:
        rows = self._reader().execute(
            "SELECT time, sample_json FROM evidence WHERE incident_id = ? ORDER BY time", (incident_id,)
        )
        return [EvidencePoint(incident_id=incident_id, time=time, sample_json=text) for time, text in rows]

    def evidence_count(self, incident_id: str) -> int:
        return queries.evidence_count(self._reader(), incident_id)

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        return queries.timeline(self._reader(), incident_id)

    def seen_before(self, incident: Incident) -> SeenBefore:
        return queries.seen_before(self._reader(), incident)

    def rates(self, group_by: str, since: float, until: float) -> list[RateRow]:
        return queries.rates(self._reader(), group_by, since, until)

    def iter_incidents(self, flt: IncidentFilter) -> Iterator[Incident]:
        """Every matching incident, newest first, fetched a page at a time."""
        cursor: PageCursor | None = None
        while True:
            result = self.query(flt, after=cursor, limit=_EXPORT_PAGE)
            yield from result.incidents
            if result.next is None:
                return
            cursor = result.next

    def export(self, flt: IncidentFilter, fmt: exporting.ExportFormat, out: TextIO) -> int:
        """Write the matching incidents to ``out`` as CSV or JSON; returns how many."""
        if fmt not in ("csv", "json"):
            raise ValueError(f"export format must be csv or json, not {fmt!r}")
        return exporting.write(self.iter_incidents(flt), fmt, out)

    def merge_from(self, other: Path, timeout_s: float = 600) -> MergeResult:
        """Import another operator's database (waits for the writer; call it off the GUI thread)."""
        self._check_open()
        other = Path(other)
        merging.check_other(other, self.path)
        result: Future[Any] = Future()
        self._writer.put(Exclusive(lambda conn: merging.merge(conn, other), result))
        try:
            merged: MergeResult = result.result(timeout_s)
        except FutureTimeout:
            raise StoreError(f"merging {other} did not finish within {timeout_s:g} s") from None
        except sqlite3.Error as exc:
            raise StoreError(f"merging {other} failed: {exc}") from exc
        return merged

    # --- internals ----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the incident database {self.path} is closed")

    def _reader(self) -> sqlite3.Connection:
        self._check_open()
        return self._readers.get()
