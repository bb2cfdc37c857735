"""Opening the database files (the incident store's, and the chart history's beside it): pragmas, damage detection
and recovery, per-thread read connections, version checks, migrations."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

from console.store.schema import SCHEMA_VERSION, migrate, schema_version
from console.store.types import StoreError, StoreRecovered

log = logging.getLogger(__name__)

# Error codes that mean "this file is damaged", as opposed to "this file cannot be reached or written".
_DAMAGE_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def file_uri(path: Path, *, readonly: bool = False) -> str:
    # A URI so the same form works for ATTACH; quote() keeps '?' and '#' in a path from reading as URI syntax.
    return f"file:{quote(str(path))}" + ("?mode=ro" if readonly else "")


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable by the thread it is handed to."""
    conn = sqlite3.connect(
        file_uri(path, readonly=readonly), uri=True, isolation_level=None, check_same_thread=False, timeout=30
    )
    try:
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


_HINTS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the file or its folder is read-only",
    "SQLITE_CANTOPEN": "the file cannot be opened (missing folder or permission?)",
    "SQLITE_PERM": "permission denied",
}


def explain(exc: sqlite3.Error) -> str:
    """SQLite's message plus what it usually means for an operator."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_IOERR"):
        return f"{exc} (is the disk full or failing?)"
    for prefix, hint in _HINTS.items():
        if name.startswith(prefix):
            return f"{exc}: {hint}"
    return str(exc)


def _is_damage(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in _DAMAGE_CODES


def damage_reason(path: Path, what: str, error: type[Exception]) -> str | None:
    """None when the file is a healthy SQLite database (or absent/empty); otherwise what is wrong with it.

    ``what`` names the file for people ("incident database"); an unreadable, undamaged file raises ``error``.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        conn = sqlite3.connect(file_uri(path, readonly=True), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc) if _is_damage(exc) else None
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if _is_damage(exc):
            return str(exc)
        raise error(f"cannot read the {what} {path}: {explain(exc)}") from exc
    finally:
        conn.close()
    problems = [str(row[0]) for row in rows if row[0] != "ok"]
    if problems:
        return "quick_check: " + "; ".join(problems[:3])
    return None


def move_aside(path: Path, reason: str, what: str, error: type[Exception]) -> Path:
    """Rename a damaged database (and its WAL) to ``<name>.corrupt-<UTC stamp>``; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved_to = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 1
    while moved_to.exists():
        suffix += 1
        moved_to = path.with_name(f"{path.name}.corrupt-{stamp}-{suffix}")
    try:
        path.rename(moved_to)
        # The old WAL belongs to the damaged file: keep it beside it, never replay it into the new one.
        for extra in ("-wal", "-shm"):
            side = path.with_name(path.name + extra)
            if side.exists():
                side.rename(moved_to.with_name(moved_to.name + extra))
    except OSError as exc:
        raise error(f"the {what} {path} is damaged ({reason}) and could not be moved aside: {exc}") from exc
    return moved_to


def recover_if_damaged(path: Path, what: str, error: type[Exception]) -> StoreRecovered | None:
    """Make the file's folder and refuse a path that is not a file; move a damaged file aside and say so.

    ``what`` names the file for people ("incident database"); a problem raises ``error``. Shared by the incident
    store and the chart-history rollup.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the folder for the {what} {path}: {exc.strerror}") from exc
    if path.exists() and not path.is_file():
        raise error(f"the {what} path {path} is not a file")
    reason = damage_reason(path, what, error)
    if reason is None:
        return None
    recovered = StoreRecovered(path, move_aside(path, reason, what, error), reason, what)
    log.warning("%s", recovered.message)
    return recovered


class ReadConnections:
    """One read-only connection per thread (readers run beside the writer thanks to WAL), all closed together."""

    def __init__(self, path: Path, what: str, error: type[Exception]) -> None:
        self.path = path
        self._what = what
        self._error = error
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = connect(self.path, readonly=True)
            except sqlite3.Error as exc:
                raise self._error(f"cannot read the {self._what} {self.path}: {explain(exc)}") from exc
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


def _check_version(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the incident database {path} has schema version {version}, newer than this console "
            f"supports (version {SCHEMA_VERSION}); upgrade gpu-console or choose another file with --db"
        )


def _refuse_newer(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(file_uri(path, readonly=True), uri=True, isolation_level=None)
        try:
            version = schema_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the incident database {path}: {explain(exc)}") from exc
    _check_version(path, version)


def prepare(path: Path) -> tuple[sqlite3.Connection, StoreRecovered | None]:
    """Check, recover and migrate the file; return the write connection. Raises StoreError with the cause."""
    recovered = recover_if_damaged(path, "incident database", StoreError)
    if recovered is None:
        _refuse_newer(path)  # before opening for writing: a newer console's file is left exactly as it was
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the incident database {path} for writing: {explain(exc)}") from exc
    try:
        _check_version(path, schema_version(conn))  # again: another process may have upgraded it meanwhile
        migrate(conn)
        # A write probe, so that a read-only file or a full disk is reported now, not at the first incident.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except StoreError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot write the incident database {path}: {explain(exc)}") from exc
    return conn, recovered
