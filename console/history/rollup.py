"""History that survives restarts: a per-minute rollup (count, min, mean, max) of every chart metric in SQLite.

One row per entity (a GPU by UUID, or a node's chassis) per minute, keyed ``(entity, minute)`` in a WITHOUT ROWID
table with no secondary index: a minute's flush is one ``executemany`` and a chart's 24 h read is one range scan.
A row's value is a float32 blob of shape (4, metrics): count, min, mean, max per metric, in the column order
stored in the ``layout`` table (so a later console with more metrics still reads old files). For
``throttle_mask`` min is the AND and max the OR of the minute's masks, so "any slowdown in this minute" survives.

The file is its own database beside the incident store, so history writes never wait on incident writes. One
writer thread owns the write connection; ``observe`` only queues the sample (and skips a sample object that is
the one it saw last from that node). The writer lets samples gather for ``BATCH_WINDOW_S`` and sums each drained
batch into the minute with a dozen numpy operations over the stacked batch (split where a node comes twice), so
a 1,000-node fleet polled every second costs ~15 us of writer CPU per 8-GPU sample (scripts/bench/bench_rollup.py).
Sums are kept in memory per minute (bounded by fleet size) and a minute is written once it is over, plus a grace
for late nodes; a late sample for a written minute is merged into the stored row. Minutes older than the
retention are deleted on a schedule and SQLite reuses their pages, so the file stops growing. A write failure is
logged and dropped.
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
from itertools import chain
from pathlib import Path

import numpy as np

from console.history.rings import CHASSIS_METRICS, GPU_METRICS, THROTTLE_MASKS, chassis_row, gpu_values
from console.samples.schema import NodeSample
from console.store.opening import ReadConnections, connect, explain, recover_if_damaged
from console.store.types import StoreRecovered

log = logging.getLogger(__name__)

ROLLUP_VERSION = 1
DEFAULT_RETENTION_H = 24.0
FLUSH_GRACE_S = 5.0  # a node's sample for minute M may arrive a little after M ends
PRUNE_EVERY_S = 300.0
MAX_QUEUED_SAMPLES = 200_000  # a stalled disk must not grow memory without bound: drop beyond this
MAX_CLOCK_AHEAD_S = 300.0  # a node whose clock runs further ahead than this would write rows retention never reaches
CHASSIS = ""  # the entity "GPU" of a node's chassis row
_STATS = 4  # count, min, mean, max
_THROTTLE = len(GPU_METRICS) - 1
assert GPU_METRICS[_THROTTLE] == "throttle_mask", "the accumulator puts the mask in the last GPU column"
_UUID = operator.attrgetter("uuid")
_GPUS = operator.attrgetter("gpus")
_CHASSIS = operator.attrgetter("chassis")
_REASONS = operator.attrgetter("throttle_reasons")
BATCH_WINDOW_S = 0.25  # the writer lets samples gather this long, so one batch's numpy work serves hundreds

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


class _Block:
    """Running count/min/sum/max of one kind of entity (GPUs, or chassis) over one minute, one row per entity.

    Rows are added as entities show up and kept from minute to minute while every one of them keeps reporting
    (see ``_Minute.reset``). ``add`` takes a whole batch: ``slots`` must not repeat (the caller
    splits a batch where a node comes twice), since a fancy-indexed ``+=`` counts a repeated row once.
    """

    def __init__(self, width: int, rows: int, *, masks: bool) -> None:
        self.width = width
        self.keys: list[tuple[str, str]] = []  # row -> (node, entity)
        self.n = np.zeros((rows, width))
        self.total = np.zeros((rows, width))
        self.lo = np.full((rows, width), np.nan)
        self.hi = np.full((rows, width), np.nan)
        self.mask_and = np.full(rows if masks else 0, -1, dtype=np.int64)
        self.mask_or = np.zeros(rows if masks else 0, dtype=np.int64)

    def new_row(self, key: tuple[str, str]) -> int:
        row = len(self.keys)
        self.keys.append(key)
        if row == len(self.n):
            grown = 2 * len(self.n)
            self.n = _grow(self.n, grown, 0.0)
            self.total = _grow(self.total, grown, 0.0)
            self.lo = _grow(self.lo, grown, np.nan)
            self.hi = _grow(self.hi, grown, np.nan)
            if len(self.mask_and):
                self.mask_and = _grow(self.mask_and, grown, -1)
                self.mask_or = _grow(self.mask_or, grown, 0)
        return row

    def reset(self) -> None:
        for array, value in ((self.n, 0.0), (self.total, 0.0), (self.lo, np.nan), (self.hi, np.nan)):
            array.fill(value)
        self.mask_and.fill(-1)
        self.mask_or.fill(0)

    def all_seen(self) -> bool:
        return bool(self.n[: len(self.keys)].any(axis=1).all())

    def add(self, slots: np.ndarray, values: np.ndarray, masks: np.ndarray | None = None) -> None:
        finite = np.isfinite(values)
        self.n[slots] += finite
        self.total[slots] += np.where(finite, values, 0.0)
        self.lo[slots] = np.fmin(self.lo[slots], values)
        self.hi[slots] = np.fmax(self.hi[slots], values)
        if masks is not None:
            self.mask_and[slots] &= masks
            self.mask_or[slots] |= masks

    def rows(self) -> list[tuple[str, str, bytes]]:
        count = len(self.keys)
        n = self.n[:count]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.total[:count] / n
        mean[n == 0] = np.nan
        lo, hi = self.lo[:count].copy(), self.hi[:count].copy()
        if len(self.mask_and):
            masked = n[:, _THROTTLE] > 0
            lo[masked, _THROTTLE] = self.mask_and[:count][masked]
            hi[masked, _THROTTLE] = self.mask_or[:count][masked]
        stats = np.stack([n, lo, mean, hi], axis=1).astype(np.float32)  # (entities, 4, width)
        blobs = stats.tobytes()
        size = _STATS * self.width * 4
        reported_any = np.any(n, axis=1).tolist()  # a chassis that reported nothing, a GPU that left: no row
        return [
            (node, entity, blobs[i * size : (i + 1) * size])
            for i, ((node, entity), reported) in enumerate(zip(self.keys, reported_any, strict=True))
            if reported
        ]


def _grow(array: np.ndarray, rows: int, fill: float) -> np.ndarray:
    grown = np.full((rows, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class _Minute:
    """One minute of the whole fleet: a GPU block and a chassis block, filled a drained batch at a time.

    A batch costs one ``np.array`` per kind plus a dozen numpy operations however many samples it holds, so the
    per-sample cost is building its value tuples (C-level ``attrgetter`` calls) and looking up its rows.
    """

    def __init__(self, gpu_rows_hint: int, chassis_rows_hint: int) -> None:
        self.gpus = _Block(len(GPU_METRICS), max(64, gpu_rows_hint), masks=True)
        self.chassis = _Block(len(CHASSIS_METRICS), max(8, chassis_rows_hint), masks=False)
        self._gpu_slots: dict[str, tuple[list[str], tuple[int, ...]]] = {}  # node -> its last UUIDs and rows
        self._gpu_row: dict[tuple[str, str], int] = {}
        self._chassis_slot: dict[str, int] = {}

    def _slots_of(self, node: str, uuids: list[str]) -> tuple[int, ...]:
        known = self._gpu_slots.get(node)
        if known is not None and known[0] == uuids:
            return known[1]
        slots = []
        for uuid in uuids:
            key = (node, uuid)
            row = self._gpu_row.get(key)
            if row is None:
                row = self._gpu_row[key] = self.gpus.new_row(key)
            slots.append(row)
        known = self._gpu_slots[node] = (uuids, tuple(slots))
        return known[1]

    def add(self, samples: list[NodeSample]) -> None:
        """Accumulate samples of distinct nodes (a node twice in one call would be counted once)."""
        gpu_slots: list[int] = []
        chassis_slots: list[int] = []
        for sample in samples:  # the rows; the values are fetched below by C-level maps over the whole batch
            node, gpus = sample.node, sample.gpus
            if gpus:
                gpu_slots.extend(self._slots_of(node, list(map(_UUID, gpus))))
            slot = self._chassis_slot.get(node)
            if slot is None:
                slot = self._chassis_slot[node] = self.chassis.new_row((node, CHASSIS))
            chassis_slots.append(slot)
        # every conversion (where a malformed sample would raise) before any sum changes
        gpu_part: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if gpu_slots:
            every_gpu = list(chain.from_iterable(map(_GPUS, samples)))
            values = np.empty((len(every_gpu), len(GPU_METRICS)))
            flat = list(chain.from_iterable(map(gpu_values, every_gpu)))  # a flat list converts faster than rows
            values[:, :_THROTTLE] = np.array(flat, dtype=np.float64).reshape(len(every_gpu), _THROTTLE)  # None -> NaN
            masks = np.fromiter(
                map(THROTTLE_MASKS.__getitem__, map(_REASONS, every_gpu)), dtype=np.int64, count=len(every_gpu)
            )
            values[:, _THROTTLE] = masks
            gpu_part = (np.array(gpu_slots, dtype=np.intp), values, masks)
        chassis = np.array(list(map(chassis_row, map(_CHASSIS, samples))), dtype=np.float64)  # None -> NaN
        if gpu_part is not None:
            self.gpus.add(*gpu_part)
        if chassis_slots:
            self.chassis.add(np.array(chassis_slots, dtype=np.intp), chassis)

    def rows(self) -> list[tuple[str, str, bytes]]:
        return self.gpus.rows() + self.chassis.rows()

    def reset(self) -> bool:
        """Empty the sums for reuse by a later minute, keeping the rows (a fleet's GPUs rarely change), and say
        so; False (do not reuse) when some entity did not report all minute: a GPU that left or a node that churns
        UUIDs must not keep a row forever, so the next minute starts from scratch and only what reports comes back.
        """
        if not (self.gpus.all_seen() and self.chassis.all_seen()):
            return False
        self.gpus.reset()
        self.chassis.reset()
        return True


# --- opening -----------------------------------------------------------------------------------------------


def _prepare(path: Path) -> tuple[sqlite3.Connection, StoreRecovered | None]:
    recovered = recover_if_damaged(path, "history database", RollupError)
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
    scripts/bench/bench_rollup.py), cheap enough for the GUI thread when done on a selection change, not per frame.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._readers = ReadConnections(path, "history database", RollupError)
        self._layout: dict[str, dict[str, int]] | None = None

    def _conn(self) -> sqlite3.Connection:
        return self._readers.get()

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
        self._readers.close()


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
        recovered: StoreRecovered | None,
        *,
        retention_h: float,
        clock: Callable[[], float],
        prune_every_s: float,
        grace_s: float,
        batch_window_s: float,
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
        self._open_minutes: dict[int, _Minute] = {}
        self._rows_hint = (0, 0)  # the last written minute's GPU and chassis rows: a new one starts that big
        self._spare: _Minute | None = None  # a written minute, emptied, for the next minute to reuse
        self._last_seen: dict[str, NodeSample] = {}  # node -> the sample object observe saw last from it
        self._latest = 0.0
        self._last_prune = -math.inf
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._last_reason: str | None = None
        self._failed_writes = 0
        self._dropped = 0
        self._closed = False
        self._wake = threading.Event()  # cuts the writer's batch window short (flush, close)
        self._batch_window_s = batch_window_s
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
        batch_window_s: float = BATCH_WINDOW_S,
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
                batch_window_s=batch_window_s,
            )
        except BaseException:
            conn.close()
            raise

    # --- any thread ---

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
        if self._queue.qsize() >= MAX_QUEUED_SAMPLES:
            with self._lock:
                self._dropped += 1
            return
        self._queue.put(sample)

    def flush(self, timeout_s: float = 10, *, checkpoint: bool = False) -> None:
        """Write every sample observed so far, the current minute included (later samples merge into it)."""
        done = threading.Event()
        self._queue.put(_Barrier(done, checkpoint))
        self._wake.set()
        if not done.wait(timeout_s):
            raise RollupError(f"the history database {self.path} did not finish writing within {timeout_s:g} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._wake.set()
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
            if isinstance(item, NodeSample):
                # Let the batch gather: its numpy work is shared by every sample in it. flush/close cut it short.
                self._wake.wait(self._batch_window_s)
            self._wake.clear()  # a flush sets it after queueing its barrier, so the drain below still takes that
            samples: list[NodeSample] = []
            barriers: list[_Barrier] = []
            while item is not None:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                elif isinstance(item, NodeSample):
                    samples.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            try:
                self._add(samples)
            except Exception as exc:  # a bug must not kill the only writer
                self._report(f"{len(samples)} samples", exc)
            try:
                self._write_due(everything=stopping or bool(barriers))
                self._prune_if_due()
                if any(b.checkpoint for b in barriers):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except Exception as exc:  # a bug or a disk problem must not kill the only writer
                self._report("maintenance", exc)
            for barrier in barriers:
                barrier.done.set()

    def _add(self, samples: list[NodeSample]) -> None:
        """Sort a drained batch by minute, and split it where a node comes twice, then accumulate each part."""
        now = self._clock()
        oldest, newest = now - self.retention_s, now + MAX_CLOCK_AHEAD_S
        parts: dict[tuple[int, int], list[NodeSample]] = {}
        held: dict[tuple[int, str], int] = {}  # (minute, node) -> how many of its samples this batch holds
        dropped = 0
        for sample in samples:
            t = sample.time
            if not oldest <= t <= newest:
                dropped += 1  # outside the kept span (a node with a wrong clock): it would never be pruned
                continue
            minute = int(t // 60)
            seen = held.get((minute, sample.node), 0)
            held[(minute, sample.node)] = seen + 1
            part = parts.get((minute, seen))
            if part is None:
                part = parts[(minute, seen)] = []
            part.append(sample)
            self._latest = max(self._latest, t)
        if dropped:
            with self._lock:
                self._dropped += dropped
        for (minute, _), part in parts.items():
            acc = self._open_minutes.get(minute)
            if acc is None:
                acc = self._spare if self._spare is not None else _Minute(*self._rows_hint)
                self._open_minutes[minute], self._spare = acc, None
            try:
                acc.add(part)
            except Exception:  # a malformed sample (a source's bug) must cost only itself, not its whole batch
                for sample in part:
                    try:
                        acc.add([sample])
                    except Exception as exc:
                        self._report(f"a sample of node {sample.node}", exc)

    def _write_due(self, *, everything: bool) -> None:
        now = max(self._latest, self._clock())
        due = [m for m in self._open_minutes if everything or (m + 1) * 60 + self._grace_s <= now]
        for minute in sorted(due):
            self._write_minute(minute, self._open_minutes.pop(minute))

    def _write_minute(self, minute: int, acc: _Minute) -> None:
        rows = acc.rows()
        self._rows_hint = (len(acc.gpus.keys), len(acc.chassis.keys))
        if acc.reset():
            self._spare = acc
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
