"""The minute's sums: running count/min/sum/max of every chart metric, in numpy, a drained batch at a time.

The rollup's writer thread lets samples gather and sums each drained batch into the minute with a dozen numpy
operations over the stacked batch (split where a node comes twice), so a 1,000-node fleet polled every second
costs ~15 us of writer CPU per 8-GPU sample (scripts/bench/bench_rollup.py). For ``throttle_mask`` min is the AND
and max the OR of the minute's masks, so "any slowdown in this minute" survives.
"""

from __future__ import annotations

import operator
from itertools import chain

import numpy as np

from console.history.rings import (
    CHASSIS_METRICS,
    GPU_METRICS,
    THROTTLE_COLUMN,
    THROTTLE_MASKS,
    chassis_row,
    gpu_values,
)
from console.samples.schema import NodeSample

STATS = 4  # count, min, mean, max
CHASSIS = ""  # the entity "GPU" of a node's chassis row
_THROTTLE = THROTTLE_COLUMN
_PLAIN_COLUMNS = np.array([i for i in range(len(GPU_METRICS)) if i != _THROTTLE], dtype=np.intp)
_UUID = operator.attrgetter("uuid")
_GPUS = operator.attrgetter("gpus")
_CHASSIS = operator.attrgetter("chassis")
_REASONS = operator.attrgetter("throttle_reasons")


def _combine(n: np.ndarray, lo: np.ndarray, mean: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.stack([n, lo, mean, hi]).astype(np.float32)


def merge_stats(old: bytes, new: bytes) -> bytes:
    """Two rows of the same entity and minute as one (a late sample, or a restart inside a minute)."""
    a = np.frombuffer(old, dtype=np.float32).reshape(STATS, -1).astype(np.float64)
    b = np.frombuffer(new, dtype=np.float32).reshape(STATS, -1).astype(np.float64)
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


class Block:
    """Running count/min/sum/max of one kind of entity (GPUs, or chassis) over one minute, one row per entity.

    Rows are added as entities show up and kept from minute to minute while every one of them keeps reporting
    (see ``Minute.reset``). ``add`` takes a whole batch: ``slots`` must not repeat (the caller
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
        size = STATS * self.width * 4
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


class Minute:
    """One minute of the whole fleet: a GPU block and a chassis block, filled a drained batch at a time.

    A batch costs one ``np.array`` per kind plus a dozen numpy operations however many samples it holds, so the
    per-sample cost is building its value tuples (C-level ``attrgetter`` calls) and looking up its rows.
    """

    def __init__(self, gpu_rows_hint: int, chassis_rows_hint: int) -> None:
        self.gpus = Block(len(GPU_METRICS), max(64, gpu_rows_hint), masks=True)
        self.chassis = Block(len(CHASSIS_METRICS), max(8, chassis_rows_hint), masks=False)
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
            plain = np.array(flat, dtype=np.float64).reshape(len(every_gpu), len(_PLAIN_COLUMNS))  # None -> NaN
            values[:, _PLAIN_COLUMNS] = plain
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
