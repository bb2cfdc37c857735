"""Reading minutes back for the charts: one primary-key range scan per entity and window."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from console.db import Database
from console.history.rollup.minutes import CHASSIS, STATS
from console.history.rollup.schema import SCHEMA, RollupError, UnknownMetric

_BLOCK = (
    "SELECT m.minute, m.stats FROM minutes m JOIN entities e ON e.id = m.entity "
    "WHERE e.node = ? AND e.gpu = ? AND m.minute >= ? AND m.minute < ? ORDER BY m.minute"
)


@dataclass(frozen=True, slots=True)
class RollupSeries:
    """One metric per minute: ``t`` is each minute's middle (epoch s); missing minutes are NaN rows."""

    t: np.ndarray
    min: np.ndarray
    mean: np.ndarray
    max: np.ndarray


def _layout(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    layout: dict[str, dict[str, int]] = {"gpu": {}, "chassis": {}}
    for kind, position, metric in conn.execute("SELECT kind, position, metric FROM layout"):
        layout.setdefault(kind, {})[metric] = position
    return layout


def _rows(conn: sqlite3.Connection, node: str, entity: str, first: int, end: int) -> list[tuple[int, bytes]]:
    return conn.execute(_BLOCK, (node, entity, first, end)).fetchall()


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM minutes").fetchone()[0])


class RollupReader:
    """Reads minutes back; any thread (one read connection per thread, beside the writer thanks to WAL).

    A 24 h read of one entity is one primary-key range scan of at most 1,440 rows: about a millisecond (see
    scripts/bench/bench_rollup.py), cheap enough for the GUI thread when done on a selection change, not per frame.

    Every method raises RollupError for any problem with the file (a closed or unreadable file, an SQLite error,
    a malformed row), never sqlite3.Error; ``metric_of`` raises UnknownMetric (a RollupError and a KeyError) for a
    metric the file has no column for.
    """

    def __init__(self, db: Database) -> None:
        self.path = db.path
        self._db = db
        self._layout: dict[str, dict[str, int]] | None = None

    @classmethod
    def open_readonly(cls, path: Path) -> RollupReader:
        """A reader of a file another process writes (the monitoring worker's ``RollupStore``); ``close`` it."""
        return cls(Database.open_readonly(path, SCHEMA))

    def close(self) -> None:
        self._db.close()

    def _columns(self, kind: str) -> dict[str, int]:
        if self._layout is None:
            self._layout = self._db.read(_layout)
        return self._layout.get(kind, {})

    def block(self, node: str, gpu_uuid: str | None, since: float, until: float) -> tuple[np.ndarray, np.ndarray]:
        """Minutes (int) in [since, until) and their stats, shape (minutes, 4, metrics); empty if none."""
        rows = self._db.read(_rows, node, gpu_uuid or CHASSIS, math.floor(since / 60), math.ceil(until / 60))
        width = len(self._columns("gpu" if gpu_uuid else "chassis"))
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, STATS, width), dtype=np.float32)
        minutes = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        blobs = [r[1] for r in rows]
        if any(len(b) != len(blobs[0]) for b in blobs):  # mixed layouts: keep the rows of the current one
            keep = [i for i, b in enumerate(blobs) if len(b) == STATS * 4 * width]
            minutes, blobs = minutes[keep], [blobs[i] for i in keep]
        try:
            stats = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), STATS, -1)
        except (TypeError, ValueError) as exc:  # a row this console did not write (or a damaged one)
            raise RollupError(f"the history database {self.path} holds a malformed row for {node}: {exc}") from exc
        return minutes, stats

    def series(self, node: str, gpu_uuid: str | None, metric: str, since: float, until: float) -> RollupSeries:
        """One metric of one GPU (or of the node's chassis when ``gpu_uuid`` is None) per minute."""
        minutes, stats = self.block(node, gpu_uuid, since, until)
        return self.metric_of(minutes, stats, "gpu" if gpu_uuid else "chassis", metric)

    def metric_of(self, minutes: np.ndarray, stats: np.ndarray, kind: str, metric: str) -> RollupSeries:
        """Pick one metric out of a ``block`` read; missing minutes inside the span become NaN rows (gaps)."""
        column = self._columns(kind).get(metric)
        if column is None or (len(minutes) and column >= stats.shape[-1]):  # or not yet kept when these were written
            raise UnknownMetric(f"no {kind} metric named {metric!r} in the history database {self.path}")
        if not len(minutes):
            empty = np.zeros(0, dtype=np.float32)
            return RollupSeries(np.zeros(0), empty, empty.copy(), empty.copy())
        grid = np.arange(minutes[0], minutes[-1] + 1)
        at = minutes - minutes[0]
        out = np.full((3, len(grid)), np.nan, dtype=np.float32)
        out[:, at] = stats[:, 1:, column].T
        return RollupSeries(grid * 60.0 + 30.0, out[0], out[1], out[2])

    def row_count(self) -> int:
        return self._db.read(_count)
