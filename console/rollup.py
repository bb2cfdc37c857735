"""History that survives restarts: a per-minute rollup (count, min, mean, max) of every chart metric in SQLite.

One row per entity (a GPU by UUID, or a node's chassis) per minute, keyed ``(entity, minute)`` in a WITHOUT ROWID
table with no secondary index: a minute's flush is one ``executemany`` and a chart's 24 h read is one range scan.
A row's value is a float32 blob of shape (4, metrics): count, min, mean, max per metric, in the column order
stored in the ``layout`` table (so a later console with more metrics still reads old files). For
``throttle_mask`` min is the AND and max the OR of the minute's masks, so "any slowdown in this minute" survives.

The file is its own database beside the incident store, so history writes never wait on incident writes. One
writer thread owns the write connection; ``observe`` only queues the sample. Samples are summed in memory per
minute (bounded by fleet size) and a minute is written once it is over, plus a grace for late nodes; a late
sample for a written minute is merged into the stored row. Minutes older than the retention are deleted on a
schedule and SQLite reuses their pages, so the file stops growing. A write failure is logged and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from console.history import CHASSIS_METRICS, GPU_METRICS, MAX_GPUS_PER_NODE, chassis_row
from console.schema import NodeSample, throttle_mask
from console.store.opening import connect, damage_reason, explain, move_aside

log = logging.getLogger(__name__)

ROLLUP_VERSION = 1
DEFAULT_RETENTION_H = 24.0
FLUSH_GRACE_S = 5.0  # a node's sample for minute M may arrive a little after M ends
PRUNE_EVERY_S = 300.0
MAX_QUEUED_SAMPLES = 200_000  # a stalled disk must not grow memory without bound: drop beyond this
MAX_CLOCK_AHEAD_S = 300.0  # a node whose clock runs further ahead than this would write rows retention never reaches
CHASSIS = ""  # the entity "GPU" of a node's chassis row
_STATS = 4  # count, min, mean, max
_THROTTLE = GPU_METRICS.index("throttle_mask")
_WIDTH = max(len(GPU_METRICS), len(CHASSIS_METRICS))
_GPU_VALUES = operator.attrgetter(*GPU_METRICS[:-1])  # every metric but the mask, in one C call
_GPU_PAD = (math.nan,) * (_WIDTH - len(GPU_METRICS))
_CHASSIS_PAD = (math.nan,) * (_WIDTH - len(CHASSIS_METRICS))
_DAMAGE_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entities (id INTEGER PRIMARY KEY, node TEXT NOT NULL, gpu TEXT NOT NULL, "
    "UNIQUE (node, gpu))",
    "CREATE TABLE IF NOT EXISTS layout (kind TEXT NOT NULL, position INTEGER NOT NULL, metric TEXT NOT NULL, "
    "PRIMARY KEY (kind, position)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS minutes (entity INTEGER NOT NULL, minute INTEGER NOT NULL, stats BLOB NOT NULL, "
    "PRIMARY KEY (entity, minute)) WITHOUT ROWID",
)
_UPSERT = (
    "INSERT INTO minutes (entity, minute, stats) VALUES (?, ?, ?) "
    "ON CONFLICT (entity, minute) DO UPDATE SET stats = merge_stats(stats, excluded.stats)"
)


class RollupError(Exception):
    """The history database cannot be opened or used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class RollupRecovered:
    path: Path
    moved_to: Path
    reason: str

    @property
    def message(self) -> str:
        return (
            f"The history database {self.path} was damaged ({self.reason}); it was moved to {self.moved_to} "
            "and a new, empty one was started."
        )


@dataclass(frozen=True, slots=True)
class RollupSeries:
    """One metric per minute: ``t`` is each minute's middle (epoch s); missing minutes are NaN rows."""

    t: np.ndarray
    min: np.ndarray
    mean: np.ndarray
    max: np.ndarray


def history_path_for(db_path: Path) -> Path:
    """The rollup file beside an incident database: ``incidents.sqlite3`` -> ``incidents.history.sqlite3``."""
    return db_path.with_name(f"{db_path.stem}.history.sqlite3")


# --- the minute's sums -------------------------------------------------------------------------------------


def _combine(n: np.ndarray, lo: np.ndarray, mean: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.stack([n, lo, mean, hi]).astype(np.float32)


def merge_stats(old: bytes, new: bytes) -> bytes:
    """Two rows of the same entity and minute as one (a late sample, or a restart inside a minute)."""
    a = np.frombuffer(old, dtype=np.float32).reshape(_STATS, -1).astype(np.float64)
    b = np.frombuffer(new, dtype=np.float32).reshape(_STATS, -1).astype(np.float64)
    if a.shape != b.shape:  # written by another layout: keep the newer minute rather than mix columns
        return new
    n = a[0] + b[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.nan_to_num(a[2]) * a[0] + np.nan_to_num(b[2]) * b[0]) / n
    mean[n == 0] = np.nan
    lo, hi = np.fmin(a[1], b[1]), np.fmax(a[3], b[3])
    if a.shape[1] == len(GPU_METRICS):
        both = (a[0, _THROTTLE] > 0) & (b[0, _THROTTLE] > 0)
        if both:
            lo[_THROTTLE] = int(a[1, _THROTTLE]) & int(b[1, _THROTTLE])
            hi[_THROTTLE] = int(a[3, _THROTTLE]) | int(b[3, _THROTTLE])
    return _combine(n, lo, mean, hi).tobytes()


class _NodeMinute:
    """Running count/min/sum/max of one node's GPUs and chassis over one minute, one row per entity.

    The arrays are reset and reused from minute to minute (a node's GPUs rarely change), so a sample costs a
    handful of numpy operations on one (entities x metrics) block. The chassis row shares the block; its
    column ``_THROTTLE`` is a fan speed, so the mask bookkeeping is applied to GPU rows only.
    """

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self._last_keys: list[str] = []
        self._last_slots = np.zeros(0, dtype=np.intp)
        self._allocate(16)

    def _allocate(self, rows: int) -> None:
        self.n = np.zeros((rows, _WIDTH))
        self.total = np.zeros((rows, _WIDTH))
        self.lo = np.full((rows, _WIDTH), np.nan)
        self.hi = np.full((rows, _WIDTH), np.nan)
        self.mask_and = np.full(rows, -1, dtype=np.int64)
        self.mask_or = np.zeros(rows, dtype=np.int64)

    def reset(self) -> None:
        for array, value in ((self.n, 0.0), (self.total, 0.0), (self.lo, np.nan), (self.hi, np.nan)):
            array.fill(value)
        self.mask_and.fill(-1)
        self.mask_or.fill(0)
        if len(self.keys) > MAX_GPUS_PER_NODE:  # a node that churns UUIDs must not grow this forever
            self.keys, self._last_keys = {}, []

    def _slots(self, keys: list[str]) -> np.ndarray:
        if keys == self._last_keys:
            return self._last_slots
        for key in keys:
            if key not in self.keys:
                self.keys[key] = len(self.keys)
        if len(self.keys) > len(self.n):
            old = (self.n, self.total, self.lo, self.hi, self.mask_and, self.mask_or)
            self._allocate(2 * len(self.keys))
            for new, kept in zip((self.n, self.total, self.lo, self.hi, self.mask_and, self.mask_or), old, strict=True):
                new[: len(kept)] = kept
        self._last_keys = keys
        self._last_slots = np.fromiter((self.keys[k] for k in keys), dtype=np.intp, count=len(keys))
        return self._last_slots

    def add(self, sample: NodeSample) -> None:
        gpus = sample.gpus
        keys = [g.uuid for g in gpus]
        keys.append(CHASSIS)
        rows = [(*_GPU_VALUES(g), throttle_mask(g.throttle_reasons), *_GPU_PAD) for g in gpus]
        rows.append((*chassis_row(sample.chassis), *_CHASSIS_PAD))
        values = np.array(rows, dtype=np.float64)  # None (not reported) becomes NaN
        slots = self._slots(keys)
        finite = np.isfinite(values)
        self.n[slots] += finite
        self.total[slots] += np.where(finite, values, 0.0)
        self.lo[slots] = np.fmin(self.lo[slots], values)
        self.hi[slots] = np.fmax(self.hi[slots], values)
        masks = np.nan_to_num(values[:, _THROTTLE]).astype(np.int64)
        self.mask_and[slots] &= masks
        self.mask_or[slots] |= masks

    def rows(self) -> list[tuple[str, bytes]]:
        count = len(self.keys)
        n = self.n[:count]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.total[:count] / n
        mean[n == 0] = np.nan
        lo, hi = self.lo[:count].copy(), self.hi[:count].copy()
        chassis = self.keys.get(CHASSIS)
        is_gpu = np.ones(count, dtype=bool)
        if chassis is not None:
            is_gpu[chassis] = False
        seen = (n[:, _THROTTLE] > 0) & is_gpu
        lo[seen, _THROTTLE] = self.mask_and[:count][seen]
        hi[seen, _THROTTLE] = self.mask_or[:count][seen]
        stats = np.stack([n, lo, mean, hi], axis=1).astype(np.float32)  # (entities, 4, _WIDTH)
        out = []
        for key, i in self.keys.items():
            if not n[i].any():
                continue  # not seen this minute (a GPU that left the node)
            width = len(CHASSIS_METRICS) if i == chassis else len(GPU_METRICS)
            out.append((key, stats[i, :, :width].tobytes()))
        return out


# --- opening -----------------------------------------------------------------------------------------------


def _damage_reason(path: Path) -> str | None:
    return damage_reason(path, "history database", RollupError)


def _move_aside(path: Path, reason: str) -> RollupRecovered:
    recovered = RollupRecovered(path, move_aside(path, reason, "history database", RollupError), reason)
    log.warning("%s", recovered.message)
    return recovered


def _prepare(path: Path) -> tuple[sqlite3.Connection, RollupRecovered | None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RollupError(f"cannot create the folder for the history database {path}: {exc.strerror}") from exc
    if path.exists() and not path.is_file():
        raise RollupError(f"the history database path {path} is not a file")
    reason = _damage_reason(path)
    recovered = _move_aside(path, reason) if reason is not None else None
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        raise RollupError(f"cannot open the history database {path} for writing: {explain(exc)}") from exc
    conn.create_function("merge_stats", 2, merge_stats, deterministic=True)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > ROLLUP_VERSION:
            raise RollupError(
                f"the history database {path} has version {version}, newer than this console supports "
                f"(version {ROLLUP_VERSION}); upgrade gpu-console or move the file away"
            )
        conn.execute("PRAGMA journal_size_limit = 16777216")  # the WAL shrinks back after a checkpoint
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        for kind, metrics in (("gpu", GPU_METRICS), ("chassis", CHASSIS_METRICS)):
            conn.executemany(
                "INSERT OR IGNORE INTO layout (kind, position, metric) VALUES (?, ?, ?)",
                [(kind, i, m) for i, m in enumerate(metrics)],
            )
        conn.execute(f"PRAGMA user_version = {ROLLUP_VERSION}")
        conn.execute("COMMIT")
    except RollupError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise RollupError(f"cannot write the history database {path}: {explain(exc)}") from exc
    return conn, recovered


# --- reading -----------------------------------------------------------------------------------------------


class RollupReader:
    """Reads minutes back; any thread (one read connection per thread, beside the writer thanks to WAL).

    A 24 h read of one entity is one primary-key range scan of at most 1,440 rows: about a millisecond (see
    scripts/bench_rollup.py), cheap enough for the GUI thread when done on a selection change, not per frame.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._layout: dict[str, dict[str, int]] | None = None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = connect(self.path, readonly=True)
            except sqlite3.Error as exc:
                raise RollupError(f"cannot read the history database {self.path}: {explain(exc)}") from exc
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _columns(self, kind: str) -> dict[str, int]:
        if self._layout is None:
            layout: dict[str, dict[str, int]] = {"gpu": {}, "chassis": {}}
            for k, position, metric in self._conn().execute("SELECT kind, position, metric FROM layout"):
                layout.setdefault(k, {})[metric] = position
            self._layout = layout
        return self._layout.get(kind, {})

    def block(self, node: str, gpu_uuid: str | None, since: float, until: float) -> tuple[np.ndarray, np.ndarray]:
        """Minutes (int) in [since, until) and their stats, shape (minutes, 4, metrics); empty if none."""
        conn = self._conn()
        rows = conn.execute(
            "SELECT m.minute, m.stats FROM minutes m JOIN entities e ON e.id = m.entity "
            "WHERE e.node = ? AND e.gpu = ? AND m.minute >= ? AND m.minute < ? ORDER BY m.minute",
            (node, gpu_uuid or CHASSIS, math.floor(since / 60), math.ceil(until / 60)),
        ).fetchall()
        width = len(self._columns("gpu" if gpu_uuid else "chassis"))
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, _STATS, width), dtype=np.float32)
        minutes = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        blobs = [r[1] for r in rows]
        if any(len(b) != len(blobs[0]) for b in blobs):  # mixed layouts: keep the rows of the current one
            keep = [i for i, b in enumerate(blobs) if len(b) == _STATS * 4 * width]
            minutes, blobs = minutes[keep], [blobs[i] for i in keep]
        stats = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), _STATS, -1)
        return minutes, stats

    def series(self, node: str, gpu_uuid: str | None, metric: str, since: float, until: float) -> RollupSeries:
        """One metric of one GPU (or of the node's chassis when ``gpu_uuid`` is None) per minute."""
        minutes, stats = self.block(node, gpu_uuid, since, until)
        return self.metric_of(minutes, stats, "gpu" if gpu_uuid else "chassis", metric)

    def metric_of(self, minutes: np.ndarray, stats: np.ndarray, kind: str, metric: str) -> RollupSeries:
        """Pick one metric out of a ``block`` read; missing minutes inside the span become NaN rows (gaps)."""
        column = self._columns(kind).get(metric)
        if column is None:
            raise KeyError(f"no {kind} metric named {metric!r} in the history database {self.path}")
        if not len(minutes):
            empty = np.zeros(0, dtype=np.float32)
            return RollupSeries(np.zeros(0), empty, empty.copy(), empty.copy())
        grid = np.arange(minutes[0], minutes[-1] + 1)
        at = minutes - minutes[0]
        out = np.full((3, len(grid)), np.nan, dtype=np.float32)
        out[:, at] = stats[:, 1:, column].T
        return RollupSeries(grid * 60.0 + 30.0, out[0], out[1], out[2])

    def row_count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM minutes").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


# --- writing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: threading.Event
    checkpoint: bool


_STOP = object()


class RollupStore:
    """The writer side: ``observe`` from any thread (never blocks, never raises), ``close`` at shutdown."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        recovered: RollupRecovered | None,
        *,
        retention_h: float,
        clock: Callable[[], float],
        prune_every_s: float,
        grace_s: float,
    ) -> None:
        if not retention_h > 0:
            raise ValueError(f"history retention must be > 0 hours, not {retention_h!r}")
        self.path = path
        self.recovered = recovered
        self.retention_s = retention_h * 3600
        self.reader = RollupReader(path)
        self._conn = conn
        self._clock = clock
        self._prune_every_s = prune_every_s
        self._grace_s = grace_s
        self._ids: dict[tuple[str, str], int] = {
            (node, gpu): entity for entity, node, gpu in conn.execute("SELECT id, node, gpu FROM entities")
        }
        self._open_minutes: dict[int, dict[str, _NodeMinute]] = {}
        self._spare: dict[str, _NodeMinute] = {}  # written minutes' accumulators, reset for reuse
        self._latest = 0.0
        self._last_prune = -math.inf
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._last_reason: str | None = None
        self._failed_writes = 0
        self._dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="history-rollup-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        retention_h: float = DEFAULT_RETENTION_H,
        clock: Callable[[], float] = time.time,
        prune_every_s: float = PRUNE_EVERY_S,
        grace_s: float = FLUSH_GRACE_S,
    ) -> RollupStore:
        """Open (creating, or moving a damaged file aside) the history file; RollupError says why not."""
        path = Path(path)
        conn, recovered = _prepare(path)
        try:
            return cls(
                path,
                conn,
                recovered,
                retention_h=retention_h,
                clock=clock,
                prune_every_s=prune_every_s,
                grace_s=grace_s,
            )
        except BaseException:
            conn.close()
            raise

    # --- any thread ---

    def observe(self, sample: NodeSample) -> None:
        """Queue a sample for its minute's rollup (called by the monitor from the poller thread)."""
        if self._closed:
            return
        if self._queue.qsize() >= MAX_QUEUED_SAMPLES:
            with self._lock:
                self._dropped += 1
            return
        self._queue.put(sample)

    def flush(self, timeout_s: float = 10, *, checkpoint: bool = False) -> None:
        """Write every sample observed so far, the current minute included (later samples merge into it)."""
        done = threading.Event()
        self._queue.put(_Barrier(done, checkpoint))
        if not done.wait(timeout_s):
            raise RollupError(f"the history database {self.path} did not finish writing within {timeout_s:g} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(30)
        self.reader.close()
        if not self._thread.is_alive():
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA optimize")
            self._conn.close()

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def failed_writes(self) -> int:
        with self._lock:
            return self._failed_writes

    @property
    def dropped_samples(self) -> int:
        with self._lock:
            return self._dropped

    @property
    def writer_alive(self) -> bool:
        return self._thread.is_alive()

    # --- the writer thread ---

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                item: object = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = None
            barriers: list[_Barrier] = []
            while item is not None:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                elif isinstance(item, NodeSample):
                    self._add(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            try:
                self._write_due(everything=stopping or bool(barriers))
                self._prune_if_due()
                if any(b.checkpoint for b in barriers):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except Exception as exc:  # a bug or a disk problem must not kill the only writer
                self._report("maintenance", exc)
            for barrier in barriers:
                barrier.done.set()

    def _add(self, sample: NodeSample) -> None:
        now = self._clock()
        if not (now - self.retention_s <= sample.time <= now + MAX_CLOCK_AHEAD_S):
            with self._lock:
                self._dropped += 1  # outside the kept span (a node with a wrong clock): it would never be pruned
            return
        minute = int(sample.time // 60)
        bucket = self._open_minutes.get(minute)
        if bucket is None:
            bucket = self._open_minutes[minute] = {}
        acc = bucket.get(sample.node)
        if acc is None:
            spare = self._spare.pop(sample.node, None)
            acc = bucket[sample.node] = spare if spare is not None else _NodeMinute()
        acc.add(sample)
        self._latest = max(self._latest, sample.time)

    def _write_due(self, *, everything: bool) -> None:
        now = max(self._latest, self._clock())
        due = [m for m in self._open_minutes if everything or (m + 1) * 60 + self._grace_s <= now]
        for minute in sorted(due):
            self._write_minute(minute, self._open_minutes.pop(minute))

    def _write_minute(self, minute: int, bucket: dict[str, _NodeMinute]) -> None:
        rows = [(node, key, blob) for node, acc in bucket.items() for key, blob in acc.rows()]
        for node, acc in bucket.items():
            acc.reset()
            self._spare[node] = acc
        conn = self._conn
        added: dict[tuple[str, str], int] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            params = []
            for node, gpu, blob in rows:
                key = (node, gpu)
                entity = self._ids.get(key) or added.get(key)
                if entity is None:
                    cursor = conn.execute("INSERT INTO entities (node, gpu) VALUES (?, ?)", key)
                    entity = added[key] = int(cursor.lastrowid or 0)
                params.append((entity, minute, blob))
            conn.executemany(_UPSERT, params)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._report(f"minute {minute} ({len(rows)} rows)", exc)
            return
        self._ids.update(added)

    def _prune_if_due(self) -> None:
        now = self._clock()
        if now - self._last_prune < self._prune_every_s:
            return
        self._last_prune = now
        cutoff = math.floor((now - self.retention_s) / 60)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # One range delete per entity: the key is (entity, minute), so each is a seek, not a table scan.
            conn.executemany(
                "DELETE FROM minutes WHERE entity = ? AND minute < ?", [(e, cutoff) for e in self._ids.values()]
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _report(self, what: str, exc: Exception) -> None:
        reason = explain(exc) if isinstance(exc, sqlite3.Error) else repr(exc)
        message = f"writing to the history database {self.path} failed ({what} not saved): {reason}"
        with self._lock:
            first = self._last_reason != reason  # log transitions, not one line per minute of a full disk
            self._last_reason = reason
            self._last_error = message
            self._failed_writes += 1
        if first:
            log.error("%s", message)
