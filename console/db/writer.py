"""The one thread that owns a database file's write connection: queued writes, batched into few commits.

SQLite allows one writer per file at a time; giving that role to one thread per file means callers never wait
on disk (``put`` only queues) and never meet "database is locked" from each other. What a file's writes *are* is
its ``Handler``'s business: the writer drains the queue into batches and hands each to ``Handler.write``, then
lets the handler do its upkeep (``Handler.maintain``: due rollups, pruning). Barriers (``flush``) are released once
everything queued before them is written; an ``Exclusive`` job runs alone, in queue order, on the connection.

Nothing here raises into the caller's thread. A failure is reported (``last_error``, ``failed_writes``, the
``on_error`` callback called on this thread, and one log line per new cause rather than per repetition) and the
thread goes on; committed data is never touched by a failure.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from console.db.database import Database, explain, rollback

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Errors about the file or the disk rather than about one write's content.
_ENVIRONMENTAL = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_CANTOPEN")


def affects_every_write(exc: BaseException) -> bool:
    """Whether ``exc`` is about the file or the disk (every write would fail the same way), not one write."""
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", "").startswith(_ENVIRONMENTAL)


class Handler(Protocol[T]):
    """What a file's writes are; called on the writer thread only, so its state needs no lock."""

    def write(self, writer: Writer[T], batch: Sequence[T]) -> None:
        """Write one drained batch (in queue order). Report failures with ``writer.report``."""

    def maintain(self, writer: Writer[T], *, flushing: bool) -> None:
        """Upkeep after each drain (and each idle wake-up); ``flushing`` when a barrier or the stop is waiting."""


@dataclass(frozen=True, slots=True)
class _Exclusive:
    job: Callable[[sqlite3.Connection], Any]
    result: Future[Any]


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: threading.Event
    checkpoint: bool


class _Stop:
    """What ``close`` queues: write what came before it, then end the thread."""


_STOP = _Stop()
_CONTROL = (_Exclusive, _Barrier, _Stop)


class Writer(Generic[T]):
    """The writer thread of one ``Database``; it owns the write connection until ``close``.

    ``max_batch`` bounds the queued items per ``Handler.write`` (and so the cost of a retry); ``batch_window_s``
    lets items gather after the first one arrives, so one batch's fixed cost serves many (flush and close cut it
    short); ``idle_s`` wakes the thread that often with nothing queued, for ``Handler.maintain``.
    """

    def __init__(
        self,
        db: Database,
        handler: Handler[T],
        *,
        thread_name: str,
        max_batch: int | None = None,
        batch_window_s: float = 0.0,
        idle_s: float | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self._conn = db.write_connection
        self._handler = handler
        self._max_batch = max_batch
        self._batch_window_s = batch_window_s
        self._idle_s = idle_s
        self._on_error = on_error
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        # The queue's own methods: a caller on the poller thread pays no Python frame of ours per item.
        self.put: Callable[[T], None] = self._queue.put
        self.queued: Callable[[], int] = self._queue.qsize  # about how many items wait (to bound the queue)
        self._wake = threading.Event()  # cuts the batch window short (flush, close)
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._last_reason: str | None = None
        self._failed_writes = 0
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    # --- any thread ---

    def exclusive(self, job: Callable[[sqlite3.Connection], R]) -> Future[R]:
        """Run ``job(conn)`` alone on the writer thread, after everything queued before it; it manages its own
        transactions (a merge needs ATTACH, which is refused inside one). Its result or exception is the future's.
        """
        result: Future[R] = Future()
        self._queue.put(_Exclusive(job, result))
        return result

    def barrier(self, *, checkpoint: bool = False) -> threading.Event:
        """An event set once everything queued before it is written (or has failed and been reported)."""
        done = threading.Event()
        self._queue.put(_Barrier(done, checkpoint))
        self._wake.set()
        return done

    def flush(self, timeout_s: float, *, checkpoint: bool = False) -> None:
        """Wait for a barrier; ``checkpoint`` also folds the WAL back into the file. Raises the file's error type."""
        if not self.barrier(checkpoint=checkpoint).wait(timeout_s):
            raise self.db.schema.error(
                f"the {self.db.what} {self.db.path} did not finish writing within {timeout_s:g} s"
            )

    def close(self, timeout_s: float = 30) -> None:
        """Write what is queued, stop the thread and close the database (the write connection only if it stopped)."""
        self._queue.put(_STOP)
        self._wake.set()
        self._thread.join(timeout_s)
        self.db.close(write=not self._thread.is_alive())

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def last_error(self) -> str | None:
        """The last write failure's message (None if every write so far succeeded)."""
        with self._lock:
            return self._last_error

    @property
    def failed_writes(self) -> int:
        with self._lock:
            return self._failed_writes

    # --- the writer thread (and the handler, which it calls) ---

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the write connection, rolled back if the body raises."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise

    def commit(
        self,
        items: Sequence[T],
        body: Callable[[sqlite3.Connection, Sequence[T]], None],
        describe: Callable[[Sequence[T]], str],
    ) -> bool:
        """Write ``items`` with ``body`` in one transaction. If that fails because of some write's content, retry
        them one by one, so one bad write cannot take good ones with it; a write that still fails is reported.
        Returns False when nothing was written because of the file or the disk (full, failing, locked): the
        caller may keep the items and try again later.
        """
        if not items:
            return True
        try:
            with self.transaction() as conn:
                body(conn, items)
            return True
        except sqlite3.Error as exc:
            if affects_every_write(exc):
                # Full disk, I/O error, lock held elsewhere: each write alone would fail the same way, slowly.
                self.report(describe(items), exc)
                return False
            log.debug("batch of %d writes failed (%s); retrying one by one", len(items), exc)
        except Exception:
            log.exception("unexpected error writing a batch; retrying one by one")
        for item in items:
            try:
                with self.transaction() as conn:
                    body(conn, (item,))
            except Exception as exc:
                self.report(describe((item,)), exc)
        return True

    def report(self, what: str, exc: BaseException) -> None:
        """Count and report a failed write: ``what`` says what was lost ("3 samples")."""
        reason = explain(exc) if isinstance(exc, sqlite3.Error) else repr(exc)
        message = f"writing to the {self.db.what} {self.db.path} failed ({what} not saved): {reason}"
        with self._lock:
            first = self._last_reason != reason  # a transition, not one line per minute of a full disk
            self._last_reason = reason
            self._last_error = message
            self._failed_writes += 1
        if first:
            self.db.schema.log.error("%s", message)
        if self._on_error is not None:
            try:
                self._on_error(message)
            except Exception:
                log.exception("the %s error callback failed", self.db.what)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                item: object = self._queue.get(timeout=self._idle_s)
            except queue.Empty:
                item = None
            if self._batch_window_s > 0 and item is not None and not isinstance(item, _CONTROL):
                self._wake.wait(self._batch_window_s)
            self._wake.clear()  # a flush sets it after queueing its barrier, so the drain below still takes that
            batch: list[T] = []
            barriers: list[_Barrier] = []
            try:
                while item is not None:
                    if isinstance(item, _Stop):
                        stopping = True
                    elif isinstance(item, _Barrier):
                        barriers.append(item)
                    elif isinstance(item, _Exclusive):
                        self._write(batch)
                        batch = []
                        self._run_exclusive(item)
                    else:
                        batch.append(item)  # type: ignore[arg-type]  # only put() queues anything else
                    if stopping or (self._max_batch is not None and len(batch) >= self._max_batch):
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                self._write(batch)
                self._maintain(flushing=stopping or bool(barriers), checkpoint=any(b.checkpoint for b in barriers))
            except Exception:  # a bug must not kill the only writer
                log.exception("unexpected error in the %s writer", self.db.what)
            finally:
                for barrier in barriers:
                    barrier.done.set()

    def _write(self, batch: Sequence[T]) -> None:
        if not batch:
            return
        try:
            self._handler.write(self, batch)
        except Exception as exc:  # the handler reports what it can; this is for its bugs
            log.exception("unexpected error writing to the %s", self.db.what)
            self.report(f"{len(batch)} queued writes", exc)

    def _maintain(self, *, flushing: bool, checkpoint: bool) -> None:
        try:
            self._handler.maintain(self, flushing=flushing)
            if checkpoint:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:  # a bug or a disk problem must not kill the only writer
            self.report("maintenance", exc)

    def _run_exclusive(self, item: _Exclusive) -> None:
        try:
            item.result.set_result(item.job(self._conn))
        except Exception as exc:
            rollback(self._conn)
            item.result.set_exception(exc)
