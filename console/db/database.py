"""One SQLite file of the console: opening (WAL, version checks, migrations), damage detection and recovery, and
per-thread read connections.

The incident store and the chart history beside it each keep a file of their own (so history writes never wait
on incident writes) but open, recover and read them the same way, through here. What differs between the two is
a ``Schema``: the file's name for people, the exception its callers catch, its migrations and a few hooks.
Every error this module raises is that exception, with the file and the cause (``explain``) in its message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

log = logging.getLogger(__name__)

R = TypeVar("R")
Migration = Callable[[sqlite3.Connection], None]

# Error codes that mean "this file is damaged", as opposed to "this file cannot be reached or written".
_DAMAGE_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def file_uri(path: Path, *, readonly: bool = False, immutable: bool = False) -> str:
    # A URI so the same form works for ATTACH; quote() keeps '?' and '#' in a path from reading as URI syntax.
    return f"file:{quote(str(path))}" + ("?mode=ro" if readonly else "") + ("&immutable=1" if immutable else "")


def _folder_is_read_only(path: Path) -> bool:
    return not os.access(path.parent, os.W_OK)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable by the thread it is handed to.

    A read-only connection to a WAL file in a read-only folder (an archived log, read-only media) cannot create
    the ``-shm`` file SQLite wants; nobody can write there either, so the file is then read as immutable.
    """
    if not readonly:
        return _connect(path, readonly=False, immutable=False)
    try:
        conn = _connect(path, readonly=True, immutable=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
    except sqlite3.OperationalError as exc:
        if not (getattr(exc, "sqlite_errorname", "").startswith("SQLITE_CANTOPEN") and _folder_is_read_only(path)):
            raise
        return _connect(path, readonly=True, immutable=True)
    return conn


_WAL_SWITCH_S = 30.0  # as long as the busy timeout of every other statement


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    # Switching the journal mode can answer "database is locked" at once, without waiting in the busy handler,
    # while another process is creating the same new file (two polls started together): wait and try again.
    deadline = time.monotonic() + _WAL_SWITCH_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.02 + random.random() * 0.05)


def _connect(path: Path, *, readonly: bool, immutable: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        file_uri(path, readonly=readonly, immutable=immutable),
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=30,
    )
    try:
        if not readonly:
            _switch_to_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def peek(path: Path) -> sqlite3.Connection:
    """A bare read-only connection, for looking at a file before deciding anything: no pragma touches it."""
    conn = sqlite3.connect(file_uri(path, readonly=True), uri=True, isolation_level=None)
    if not _folder_is_read_only(path):
        return conn
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if not getattr(exc, "sqlite_errorname", "").startswith("SQLITE_CANTOPEN"):
            return conn  # the caller meets (and explains) the same error
        conn.close()
        return sqlite3.connect(file_uri(path, readonly=True, immutable=True), uri=True, isolation_level=None)
    except sqlite3.DatabaseError:
        pass  # damage: the caller's quick_check reports it
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


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction, if any; never raises."""
    # After an I/O error SQLite may have rolled back already, or ROLLBACK may fail too; neither may escape.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


@dataclass(frozen=True, slots=True)
class Schema:
    """What one kind of database file is: its name for people, its error type, its migrations.

    ``migrations[N - 1]`` brings ``PRAGMA user_version`` from N-1 to N inside one transaction, so a crash
    mid-migration leaves the previous version intact; append steps, never edit a released one. A file whose
    version is higher than ``len(migrations)`` is refused untouched (``newer_hint`` says what to do instead).
    ``on_connect`` prepares the write connection (SQL functions, pragmas); ``on_open`` runs at every open inside
    the write probe's transaction (idempotent statements, e.g. rows a newer console may have added to).
    """

    what: str
    error: type[Exception]
    migrations: Sequence[Migration]
    newer_hint: str = "move the file away"
    on_connect: Callable[[sqlite3.Connection], None] | None = None
    on_open: Callable[[sqlite3.Connection], None] | None = None
    log: logging.Logger = log  # the subsystem's logger, so an operator's log names the part that had the problem

    @property
    def version(self) -> int:
        return len(self.migrations)

    def failure(self, doing: str, path: Path, exc: sqlite3.Error) -> Exception:
        """``error`` for a failed ``doing`` ("read", "write") of the file, with SQLite's explained cause."""
        return self.error(f"cannot {doing} the {self.what} {path}: {explain(exc)}")


@dataclass(frozen=True, slots=True)
class Recovered:
    """A damaged database was moved aside at open and a new one started (the app shows ``message``).

    The moved file and its WAL are kept byte for byte, for the operator (or a recovery tool) to look at."""

    path: Path
    moved_to: Path
    reason: str
    what: str

    @property
    def message(self) -> str:
        return (
            f"The {self.what} {self.path} was damaged ({self.reason}); it was moved to {self.moved_to} "
            "and a new, empty database was started."
        )


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection, schema: Schema) -> int:
    """Apply missing steps, each in its own transaction; return the version found (the caller refuses newer)."""
    before = schema_version(conn)
    for version in range(before + 1, schema.version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process opening the same new file may have taken this step while we waited for the lock:
            # the version read inside the write lock is the one that counts.
            if schema_version(conn) >= version:
                conn.execute("COMMIT")
                continue
            schema.migrations[version - 1](conn)
            conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            rollback(conn)
            raise
        conn.execute("COMMIT")
    return before


def damage_reason(path: Path, schema: Schema) -> str | None:
    """None when the file is a healthy SQLite database (or absent/empty); otherwise what is wrong with it.

    An unreadable but undamaged file raises ``schema.error``: it must not be moved aside.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        conn = peek(path)
    except sqlite3.Error as exc:
        return str(exc) if _is_damage(exc) else None
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if _is_damage(exc):
            return str(exc)
        raise schema.failure("read", path, exc) from exc
    finally:
        conn.close()
    problems = [str(row[0]) for row in rows if row[0] != "ok"]
    if problems:
        return "quick_check: " + "; ".join(problems[:3])
    return None


def move_aside(path: Path, reason: str, schema: Schema) -> Path:
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
        raise schema.error(
            f"the {schema.what} {path} is damaged ({reason}) and could not be moved aside: {exc}"
        ) from exc
    return moved_to


def recover_if_damaged(path: Path, schema: Schema) -> Recovered | None:
    """Make the file's folder and refuse a path that is not a file; move a damaged file aside and say so."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise schema.error(f"cannot create the folder for the {schema.what} {path}: {exc.strerror}") from exc
    if path.exists() and not path.is_file():
        raise schema.error(f"the {schema.what} path {path} is not a file")
    reason = damage_reason(path, schema)
    if reason is None:
        return None
    recovered = Recovered(path, move_aside(path, reason, schema), reason, schema.what)
    schema.log.warning("%s", recovered.message)
    return recovered


def _check_version(path: Path, version: int, schema: Schema) -> None:
    if version > schema.version:
        raise schema.error(
            f"the {schema.what} {path} has schema version {version}, newer than this console supports "
            f"(version {schema.version}); upgrade gpu-console or {schema.newer_hint}"
        )


def _refuse_newer(path: Path, schema: Schema) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = peek(path)
        try:
            version = schema_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise schema.failure("read", path, exc) from exc
    _check_version(path, version, schema)


def _open_for_writing(path: Path, schema: Schema) -> sqlite3.Connection:
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        raise schema.error(f"cannot open the {schema.what} {path} for writing: {explain(exc)}") from exc
    try:
        if schema.on_connect is not None:
            schema.on_connect(conn)
        _check_version(path, schema_version(conn), schema)  # again: another process may have upgraded it meanwhile
        migrate(conn, schema)
        # A write probe, so that a read-only file or a full disk is reported now, not at the first write.
        conn.execute("BEGIN IMMEDIATE")
        if schema.on_open is not None:
            schema.on_open(conn)
        conn.execute(f"PRAGMA user_version = {schema.version}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise schema.failure("write", path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


class ReadConnections:
    """One read-only connection per thread (readers run beside the writer thanks to WAL), all closed together."""

    def __init__(self, path: Path, schema: Schema) -> None:
        self.path = path
        self._schema = schema
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        if self._closed:  # a thread's connection may be closed already: never hand it out
            raise self._closed_error()
        try:
            conn = connect(self.path, readonly=True)
        except sqlite3.Error as exc:
            raise self._schema.failure("read", self.path, exc) from exc
        with self._lock:
            closed = self._closed
            if not closed:
                self._conns.append(conn)
        if closed:  # closed meanwhile: nobody else would close this one
            conn.close()
            raise self._closed_error()
        self._local.conn = conn
        return conn

    def _closed_error(self) -> Exception:
        return self._schema.error(f"the {self._schema.what} {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


class Database:
    """An opened database file: the write connection, for its one writer thread, and readers for any thread.

    ``read`` is the way in for readers: it runs a query function on the calling thread's read connection and turns
    any ``sqlite3.Error`` into ``schema.error`` with an explained message, so callers never handle sqlite3 errors.
    """

    def __init__(
        self, path: Path, schema: Schema, write_conn: sqlite3.Connection | None, recovered: Recovered | None
    ) -> None:
        self.path = path
        self.schema = schema
        self.recovered = recovered  # set when a damaged file was moved aside at open (show its .message)
        self._write_conn = write_conn
        self._readers = ReadConnections(path, schema)
        self._closed = False

    @classmethod
    def open(cls, path: Path, schema: Schema) -> Database:
        """Check, recover and migrate the file; raise ``schema.error`` with the cause when it cannot be used."""
        path = Path(path)
        recovered = recover_if_damaged(path, schema)
        if recovered is None:
            _refuse_newer(path, schema)  # before opening for writing: a newer console's file is left exactly as it was
        return cls(path, schema, _open_for_writing(path, schema), recovered)

    @classmethod
    def open_readonly(cls, path: Path, schema: Schema) -> Database:
        """Readers only (list, show, export): never create, rename, migrate or write the file, so a read-only
        file or folder, or a full disk, can still be read. A damaged file is reported and left as it is; a file
        of an older version is opened for writing instead (its migration is a write)."""
        path = Path(path)
        if not path.is_file():
            raise schema.error(f"no {schema.what} at {path}")
        reason = damage_reason(path, schema)
        if reason is not None:
            raise schema.error(
                f"the {schema.what} {path} is damaged ({reason}); it was left as it is "
                "(a command that writes, such as poll, moves it aside and starts a new one)"
            )
        try:
            conn = peek(path)
            try:
                version = schema_version(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            if not getattr(exc, "sqlite_errorname", "").startswith("SQLITE_CANTOPEN"):
                raise schema.failure("read", path, exc) from exc
            version = schema.version  # a WAL file in a read-only folder: its readers fall back to immutable
        _check_version(path, version, schema)
        if version < schema.version:
            return cls.open(path, schema)
        database = cls(path, schema, None, None)
        database.read(lambda conn: conn.execute("SELECT count(*) FROM sqlite_master").fetchone())
        return database

    @property
    def read_only(self) -> bool:
        return self._write_conn is None

    @property
    def what(self) -> str:
        return self.schema.what

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def write_connection(self) -> sqlite3.Connection:
        """The write connection: for the file's one writer thread (or a bulk loader that owns the file) only."""
        if self._write_conn is None:
            raise self.schema.error(f"the {self.schema.what} {self.path} was opened read-only")
        return self._write_conn

    def check_open(self) -> None:
        if self._closed:
            raise self.schema.error(f"the {self.schema.what} {self.path} is closed")

    def read(self, query: Callable[..., R], /, *args: object) -> R:
        """``query(conn, *args)`` on this thread's read connection; sqlite3 errors become ``schema.error``."""
        self.check_open()
        try:
            return query(self._readers.get(), *args)
        except sqlite3.Error as exc:
            raise self.schema.failure("read", self.path, exc) from exc

    def close(self, *, write: bool = True) -> None:
        """Close the readers and, with ``write`` (the writer thread has stopped), the write connection."""
        if self._closed:
            return
        self._closed = True
        self._readers.close()
        if write and self._write_conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._write_conn.execute("PRAGMA optimize")  # keeps the planner's statistics fresh; cheap
            self._write_conn.close()
