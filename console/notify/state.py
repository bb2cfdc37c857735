"""NotifyStore: the notification file (local silences, silence marks) with its one writer thread (console.db).

Marks are queued (``put_marks`` never blocks: it runs on the notifier's loop) and written in batches; adding or
expiring a local silence runs on the writer thread and waits for it, since the operator wants to know it took.
``read_marks`` is for another process (``incidents list``): it opens the file read-only, or finds nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from console.db import Database, Writer, connect, rollback, schema_version
from console.incidents.model import Incident
from console.notify.alerts import incident_labels, rack_of
from console.notify.schema import SCHEMA, NotifyError
from console.notify.silences import LOCAL_MATCHERS, Matcher, Silence, SilenceMark, SilenceSource, first_match

MARK_RETENTION_S = 30 * 86400  # marks of incidents this old are dropped at open
EXPIRED_RETENTION_S = 30 * 86400  # so are local silences that ended this long ago
MarkChange = tuple[str, SilenceMark | None]  # incident id, its mark (None: no silence covers it now)
_WAIT_S = 10.0
R = TypeVar("R")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


class _MarkWrites:
    """The writer's handler: a batch of mark changes in one transaction (the last change of an incident wins)."""

    def write(self, writer: Writer[MarkChange], batch: Sequence[MarkChange]) -> None:
        latest = dict(batch)
        writer.commit(list(latest.items()), _write_marks, lambda items: f"{len(items)} silence marks")

    def maintain(self, writer: Writer[MarkChange], *, flushing: bool) -> None:
        return None


def _write_marks(conn: sqlite3.Connection, items: Sequence[MarkChange]) -> None:
    now = time.time()
    conn.executemany("DELETE FROM silence_marks WHERE incident_id = ?", [(iid,) for iid, mark in items if mark is None])
    conn.executemany(
        "INSERT OR REPLACE INTO silence_marks (incident_id, silence_id, comment, ends_at, created_by, source, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (iid, m.silence_id, m.comment, m.ends_at, m.created_by, str(m.source), now)
            for iid, m in items
            if m is not None
        ],
    )


def _prune(conn: sqlite3.Connection) -> None:
    now = time.time()
    conn.execute("DELETE FROM silence_marks WHERE updated_at < ?", (now - MARK_RETENTION_S,))
    conn.execute("DELETE FROM local_silences WHERE ends_at < ?", (now - EXPIRED_RETENTION_S,))


def _local_silence(row: Sequence[object]) -> Silence:
    sid, matcher, value, starts_at, ends_at, created_by, comment = row
    return Silence(
        id=str(sid),
        matchers=(Matcher(str(matcher), str(value)),),
        starts_at=float(starts_at),  # type: ignore[arg-type]
        ends_at=float(ends_at),  # type: ignore[arg-type]
        created_by=str(created_by),
        comment=str(comment),
        source=SilenceSource.LOCAL,
    )


def _read_local(conn: sqlite3.Connection) -> tuple[Silence, ...]:
    rows = conn.execute(
        "SELECT id, matcher, value, starts_at, ends_at, created_by, comment FROM local_silences ORDER BY starts_at"
    ).fetchall()
    return tuple(_local_silence(row) for row in rows)


def _read_marks(conn: sqlite3.Connection) -> dict[str, SilenceMark]:
    rows = conn.execute(
        "SELECT incident_id, silence_id, comment, ends_at, created_by, source FROM silence_marks"
    ).fetchall()
    return {str(r[0]): SilenceMark(str(r[1]), str(r[2]), float(r[3]), str(r[4]), SilenceSource(r[5])) for r in rows}


class NotifyStore:
    """The notification file: reads from any thread, writes through its writer thread."""

    def __init__(self, db: Database) -> None:
        self.path = db.path
        self.recovered = db.recovered
        self._db = db
        try:
            with _transaction(db.write_connection) as conn:
                _prune(conn)
        except sqlite3.Error as exc:
            raise SCHEMA.failure("write", db.path, exc) from exc
        self._writer: Writer[MarkChange] = Writer(db, _MarkWrites(), thread_name="notify-writer", batch_window_s=0.2)

    @classmethod
    def open(cls, path: Path) -> NotifyStore:
        """Open (creating, migrating, or moving a damaged file aside) the file; NotifyError says why not."""
        db = Database.open(Path(path), SCHEMA)
        try:
            return cls(db)
        except BaseException:
            db.close()
            raise

    # --- silence marks ---

    def put_marks(self, changes: Iterable[MarkChange]) -> None:
        for change in changes:
            self._writer.put(change)

    # --- local silences ---

    def local_silences(self) -> tuple[Silence, ...]:
        return self._db.read(_read_local)

    def add_local_silence(
        self, matcher: str, value: str, duration_s: float, comment: str, created_by: str, *, now: float | None = None
    ) -> Silence:
        """A silence of ``matcher="value"`` (node, rack or site) from now for ``duration_s``."""
        if matcher not in LOCAL_MATCHERS:
            raise ValueError(f"a local silence matches {', '.join(LOCAL_MATCHERS)}, not {matcher!r}")
        if not value:
            raise ValueError("a local silence needs a value to match")
        if duration_s <= 0:
            raise ValueError("a silence must last more than 0 s")
        start = time.time() if now is None else now
        silence = Silence(
            id=str(uuid.uuid4()),
            matchers=(Matcher(matcher, value),),
            starts_at=start,
            ends_at=start + duration_s,
            created_by=created_by,
            comment=comment,
            source=SilenceSource.LOCAL,
        )

        def insert(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO local_silences (id, matcher, value, starts_at, ends_at, created_by, comment, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (silence.id, matcher, value, silence.starts_at, silence.ends_at, created_by, comment, start),
                )

        self._run(insert)
        return silence

    def expire_local_silence(self, silence_id: str, *, now: float | None = None) -> Silence | None:
        """End a local silence now; None when the file has no silence of that id. An ended one stays ended."""
        at = time.time() if now is None else now

        def expire(conn: sqlite3.Connection) -> Silence | None:
            with _transaction(conn):
                conn.execute("UPDATE local_silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (at, silence_id, at))
                row = conn.execute(
                    "SELECT id, matcher, value, starts_at, ends_at, created_by, comment FROM local_silences "
                    "WHERE id = ?",
                    (silence_id,),
                ).fetchone()
            return None if row is None else _local_silence(row)

        return self._run(expire)

    def forget_silence(self, silence_id: str) -> None:
        """Drop every mark naming this silence (it was expired): nobody reads an incident as silenced by it."""

        def forget(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM silence_marks WHERE silence_id = ?", (silence_id,))

        self._run(forget)

    def _run(self, job: Callable[[sqlite3.Connection], R]) -> R:
        try:
            return self._writer.exclusive(job).result(_WAIT_S)
        except sqlite3.Error as exc:
            raise SCHEMA.failure("write", self.path, exc) from exc
        except TimeoutError:
            raise NotifyError(f"the {SCHEMA.what} {self.path} did not answer within {_WAIT_S:g} s") from None

    # --- lifecycle ---

    def flush(self, timeout_s: float = 10) -> None:
        self._writer.flush(timeout_s)

    def close(self) -> None:
        self._writer.close(timeout_s=10)

    @property
    def last_error(self) -> str | None:
        return self._writer.last_error


def read_marks(
    path: Path, incidents: Iterable[Incident], racks: Mapping[str, str] | None = None, now: float | None = None
) -> dict[str, SilenceMark]:
    """The silence covering each incident now, read from another process (``incidents list --json``): the mark the
    running console last wrote for it, while that silence has not ended, else an active local silence matching its
    labels (``racks``: node name -> rack, for rack silences). Nothing for a missing file or one of another version.
    An Alertmanager silence expired there while no console ran still reads as in force until its end time.
    """
    if not path.is_file():
        return {}
    at = time.time() if now is None else now
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise SCHEMA.failure("read", path, exc) from exc
    try:
        if schema_version(conn) != SCHEMA.version:
            return {}  # a newer console's file, or one never finished: say nothing rather than guess
        marks = _read_marks(conn)
        local = _read_local(conn)
    except sqlite3.Error as exc:
        raise SCHEMA.failure("read", path, exc) from exc
    finally:
        conn.close()
    local_by_id = {silence.id: silence for silence in local}
    found: dict[str, SilenceMark] = {}
    for incident in incidents:
        mark = marks.get(incident.id)
        if mark is not None and mark.ends_at > at:
            own = local_by_id.get(mark.silence_id)
            if mark.source is not SilenceSource.LOCAL or (own is not None and own.active(at)):
                found[incident.id] = mark  # a local silence expired early is known here; Alertmanager's are not
                continue
        labels = incident_labels(incident, rack_of(incident, racks or {}))
        silence = first_match(local, labels, at)
        if silence is not None:
            found[incident.id] = silence.mark()
    return found
