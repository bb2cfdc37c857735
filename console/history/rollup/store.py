"""RollupStore: the object the app and the headless poll hold for the history file (observe, flush, close).

``observe`` only queues the sample (and skips a sample object that is the one it saw last from that node); the
file's one console.db.Writer thread lets samples gather for ``BATCH_WINDOW_S`` and hands each drained batch to
``MinuteWrites``. A write failure is logged and dropped: history is a convenience, never a reason to stop polling.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from console.db import Database, Recovered, Writer
from console.history.rollup.reader import RollupReader
from console.history.rollup.schema import SCHEMA
from console.history.rollup.writes import MinuteWrites
from console.samples.schema import NodeSample

DEFAULT_RETENTION_H = 24.0
FLUSH_GRACE_S = 5.0  # a node's sample for minute M may arrive a little after M ends
PRUNE_EVERY_S = 300.0
MAX_QUEUED_SAMPLES = 200_000  # a stalled disk must not grow memory without bound: drop beyond this
BATCH_WINDOW_S = 0.25  # the writer lets samples gather this long, so one batch's numpy work serves hundreds
_IDLE_WAKEUP_S = 1.0  # with no sample coming, a minute that is over is still written


class RollupStore:
    """The writer side: ``observe`` from any thread (never blocks, never raises), ``close`` at shutdown.

    ``reader`` reads the same file from any thread (see RollupReader for the errors it raises).
    """

    def __init__(
        self,
        db: Database,
        *,
        retention_h: float,
        clock: Callable[[], float],
        prune_every_s: float,
        grace_s: float,
        batch_window_s: float,
    ) -> None:
        if not retention_h > 0:
            raise ValueError(f"history retention must be > 0 hours, not {retention_h!r}")
        self.path = db.path
        self.recovered: Recovered | None = db.recovered
        self.retention_s = retention_h * 3600
        self.reader = RollupReader(db)
        self._last_seen: dict[str, NodeSample] = {}  # node -> the sample object observe saw last from it
        self._lock = threading.Lock()
        self._dropped = 0
        self._closed = False
        try:
            handler = MinuteWrites(
                db.write_connection,
                retention_s=self.retention_s,
                clock=clock,
                prune_every_s=prune_every_s,
                grace_s=grace_s,
                on_dropped=self._count_dropped,
            )
        except sqlite3.Error as exc:
            raise SCHEMA.failure("read", db.path, exc) from exc
        self._writer = Writer(
            db, handler, thread_name="history-rollup-writer", batch_window_s=batch_window_s, idle_s=_IDLE_WAKEUP_S
        )

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        retention_h: float = DEFAULT_RETENTION_H,
        clock: Callable[[], float] = time.time,
        prune_every_s: float = PRUNE_EVERY_S,
        grace_s: float = FLUSH_GRACE_S,
        batch_window_s: float = BATCH_WINDOW_S,
    ) -> RollupStore:
        """Open (creating, or moving a damaged file aside) the history file; RollupError says why not."""
        db = Database.open(Path(path), SCHEMA)
        try:
            return cls(
                db,
                retention_h=retention_h,
                clock=clock,
                prune_every_s=prune_every_s,
                grace_s=grace_s,
                batch_window_s=batch_window_s,
            )
        except BaseException:
            db.close()
            raise

    def observe(self, sample: NodeSample) -> None:
        """Queue a sample for its minute's rollup (called by the monitor from the poller thread).

        A sample that ``is`` the last one observed from its node (a poll that found nothing new and handed the
        previous sample on again) is ignored, so it is never counted twice in a minute's mean. Only identity is
        checked: an equal but separate sample object is a new reading and counts. One reference per node is kept
        for this (``id()`` alone could match a new sample that reuses a freed object's address).
        """
        if self._closed:
            return
        if self._last_seen.get(sample.node) is sample:
            return
        self._last_seen[sample.node] = sample
        if self._writer.queued() >= MAX_QUEUED_SAMPLES:
            self._count_dropped(1)
            return
        self._writer.put(sample)

    def flush(self, timeout_s: float = 10, *, checkpoint: bool = False) -> None:
        """Write every sample observed so far, the current minute included (later samples merge into it)."""
        self._writer.flush(timeout_s, checkpoint=checkpoint)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close(timeout_s=30)

    @property
    def last_error(self) -> str | None:
        return self._writer.last_error

    @property
    def failed_writes(self) -> int:
        return self._writer.failed_writes

    @property
    def dropped_samples(self) -> int:
        with self._lock:
            return self._dropped

    @property
    def writer_alive(self) -> bool:
        return self._writer.alive

    def _count_dropped(self, count: int) -> None:
        with self._lock:
            self._dropped += count
