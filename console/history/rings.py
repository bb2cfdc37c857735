"""Fixed-size ring buffers per GPU and per node chassis, so memory does not grow with run time.

Times are stored once per node (all GPUs of a node are read in one poll); values are float32 with NaN for
"no value", so charts break their lines instead of drawing a lie. Readers get fresh arrays (pyqtgraph keeps a view
of whatever it is given, and the ring keeps changing).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import numpy as np

from console.samples.schema import (
    MAX_GPUS_PER_NODE,
    ChassisSample,
    GpuSample,
    NodeSample,
    ThrottleReason,
    throttle_mask,
)
from console.samples.series import Series

GPU_METRICS: tuple[str, ...] = (
    "utilization_pct",
    "power_w",
    "power_limit_w",
    "temperature_c",
    "memory_temperature_c",
    "thermal_margin_c",
    "sm_clock_mhz",
    "memory_used_mib",
    "throttle_mask",
    # Appended later: the rollup file's columns never move (console.history.rollup.schema), so new metrics go last.
    "sm_active_pct",
    "tensor_active_pct",
    "dram_active_pct",
)
THROTTLE_COLUMN = GPU_METRICS.index("throttle_mask")
MAX_CHASSIS_FANS = 8
CHASSIS_METRICS: tuple[str, ...] = (
    "inlet_c",
    "exhaust_c",
    "coolant_supply_c",
    "coolant_return_c",
    "coolant_flow_lpm",
    "power_w",
    *(f"fan{i}_rpm" for i in range(MAX_CHASSIS_FANS)),
)
_GPU_INDEX = {name: i for i, name in enumerate(GPU_METRICS)}
_CHASSIS_INDEX = {name: i for i, name in enumerate(CHASSIS_METRICS)}

# Rows are read with C-level attrgetter calls and keep None for "not reported" (NaN once in a float array): the GUI
# thread records every GPU of every poll here, and the rollup writer reads the whole fleet's samples the same way.
# every GPU metric but the throttle mask, in GPU_METRICS' order
gpu_values = operator.attrgetter(*(name for name in GPU_METRICS if name != "throttle_mask"))
_CHASSIS_VALUES = operator.attrgetter(*CHASSIS_METRICS[:-MAX_CHASSIS_FANS])  # named as ChassisSample's fields
_NO_FANS = (None,) * MAX_CHASSIS_FANS


class _ThrottleMasks(dict[tuple[ThrottleReason, ...], int]):
    """A GPU's slowdown reasons -> its mask, remembered: a fleet at its power cap repeats the same few tuples."""

    def __missing__(self, reasons: tuple[ThrottleReason, ...]) -> int:
        if len(self) >= 4096:  # reasons in every order would still be bounded, but keep it small
            self.clear()
        mask = self[reasons] = throttle_mask(reasons)
        return mask


THROTTLE_MASKS = _ThrottleMasks()


def gpu_row(gpu: GpuSample) -> tuple[float | None, ...]:
    """The GPU's GPU_METRICS, None where not reported."""
    values = gpu_values(gpu)
    return (*values[:THROTTLE_COLUMN], THROTTLE_MASKS[gpu.throttle_reasons], *values[THROTTLE_COLUMN:])


def chassis_row(chassis: ChassisSample) -> tuple[float | None, ...]:
    """The chassis' CHASSIS_METRICS, None where not reported: fans past MAX_CHASSIS_FANS are dropped."""
    reported = chassis.fans_rpm
    fans: tuple[float | None, ...] = _NO_FANS if reported is None else reported
    if len(fans) != MAX_CHASSIS_FANS:
        fans = (*fans[:MAX_CHASSIS_FANS], *_NO_FANS[len(fans) :])
    return (*_CHASSIS_VALUES(chassis), *fans)


class Ring:
    """``capacity`` rows of ``width`` float32 values, newest last when read."""

    __slots__ = ("_count", "_head", "_values", "capacity")

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        # Uninitialised: only the ``_count`` rows written are ever read. Filling 8,000 GPUs' rings with NaN up
        # front touched the whole budget's pages (256 MiB) on the GUI thread as the first samples arrived: a
        # 1-2 s stall at start; the pages now fill as the rows do.
        self._values = np.empty((capacity, width), dtype=np.float32)
        self._head = 0
        self._count = 0

    def append(self, row: Iterable[float | None]) -> None:
        self._values[self._head] = tuple(row)  # None -> NaN
        self._head = (self._head + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def __len__(self) -> int:
        return self._count

    def _order(self) -> np.ndarray:
        start = (self._head - self._count) % self.capacity
        return (np.arange(self._count) + start) % self.capacity

    def column(self, index: int, last: int | None = None) -> np.ndarray:
        order = self._order()
        if last is not None:
            order = order[-last:] if last else order[:0]
        return self._values[order, index].copy()

    def last_row(self) -> np.ndarray | None:
        if not self._count:
            return None
        return self._values[(self._head - 1) % self.capacity].copy()

    @property
    def nbytes(self) -> int:
        return int(self._values.nbytes)

    def resize(self, capacity: int) -> None:
        """Keep the newest ``capacity`` rows (a fleet that grew past the memory budget gets shorter rings)."""
        kept = self._values[self._order()][-capacity:] if capacity else self._values[:0]
        values = np.empty((capacity, self._values.shape[1]), dtype=self._values.dtype)
        values[: len(kept)] = kept
        self._values = values
        self.capacity = capacity
        self._count = len(kept)
        self._head = self._count % capacity


class TimeRing(Ring):
    """Epoch-second stamps, float64 (float32 cannot hold today's epoch to the second)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values = np.empty((capacity, 1), dtype=np.float64)
        self._head = 0
        self._count = 0


class NodeHistory:
    """One node: a time ring, a chassis ring, and one ring per GPU UUID seen on the node."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.times = TimeRing(capacity)
        self.chassis = Ring(capacity, len(CHASSIS_METRICS))
        self.gpus: dict[str, Ring] = {}
        self.gpu_index: dict[str, int] = {}
        self._last_seen: dict[str, int] = {}  # UUID -> number of the record that last included it
        self._records = 0
        # The ordered time stamps, rebuilt only after an append: a chart frame reads ~60 series of one node, and
        # each used to reorder the whole time ring twice.
        self._changes = 0
        self._ordered: tuple[int, np.ndarray] | None = None

    def _evict_longest_unseen(self) -> None:
        uuid = min(self._last_seen, key=self._last_seen.__getitem__)
        del self.gpus[uuid], self.gpu_index[uuid], self._last_seen[uuid]

    def record(self, sample: NodeSample) -> None:
        self.times.append((sample.time,))
        self._records += 1
        self._changes += 1
        seen = set()
        for gpu in sample.gpus:
            ring = self.gpus.get(gpu.uuid)
            if ring is None:
                if len(self.gpus) >= MAX_GPUS_PER_NODE:
                    self._evict_longest_unseen()
                ring = Ring(self.capacity, len(GPU_METRICS))
                # pad so the new GPU's rows line up with the node's time ring
                for _ in range(len(self.times) - 1):
                    ring.append([np.nan] * len(GPU_METRICS))
                self.gpus[gpu.uuid] = ring
            self.gpu_index[gpu.uuid] = gpu.index
            self._last_seen[gpu.uuid] = self._records
            ring.append(gpu_row(gpu))
            seen.add(gpu.uuid)
        for uuid, ring in self.gpus.items():  # a GPU missing from this poll gets a gap, not a stale value
            if uuid not in seen:
                ring.append([np.nan] * len(GPU_METRICS))
        self.chassis.append(chassis_row(sample.chassis))

    def record_gap(self, when: float) -> None:
        """A failed poll: a row of NaN so charts show the outage as a gap."""
        self.times.append((when,))
        self._changes += 1
        for ring in self.gpus.values():
            ring.append([np.nan] * len(GPU_METRICS))
        self.chassis.append([np.nan] * len(CHASSIS_METRICS))

    def _ordered_times(self) -> np.ndarray:
        cached = self._ordered
        if cached is None or cached[0] != self._changes:
            cached = self._ordered = (self._changes, self.times.column(0))
        return cached[1]

    def _window(self, since: float | None) -> tuple[int, np.ndarray]:
        """How many of the newest rows fall in the window, and a fresh copy of their stamps."""
        t = self._ordered_times()
        n = len(t) if since is None else int(len(t) - np.searchsorted(t, since, side="left"))
        return n, t[len(t) - n :].copy()

    def gpu_series(self, uuid: str, metric: str, since: float | None = None) -> Series:
        ring = self.gpus.get(uuid)
        n, t = self._window(since)
        if ring is None:
            return Series(t, np.full(len(t), np.nan, dtype=np.float32))
        return Series(t, ring.column(_GPU_INDEX[metric], n))

    def chassis_series(self, metric: str, since: float | None = None) -> Series:
        n, t = self._window(since)
        return Series(t, self.chassis.column(_CHASSIS_INDEX[metric], n))

    @property
    def nbytes(self) -> int:
        return self.times.nbytes + self.chassis.nbytes + sum(r.nbytes for r in self.gpus.values())

    @property
    def newest_time(self) -> float | None:
        if not len(self.times):
            return None
        return float(self.times.column(0, len(self.times))[-1])

    @property
    def oldest_time(self) -> float | None:
        """The stamp of the oldest row still held (charts fill what lies before it from the rollup)."""
        if not len(self.times):
            return None
        return float(self.times.column(0, len(self.times))[0])

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._changes += 1
        for ring in (self.times, self.chassis, *self.gpus.values()):
            ring.resize(capacity)


GPU_ROW_BYTES = 4 * len(GPU_METRICS)
NODE_ROW_BYTES = 8 + 4 * len(CHASSIS_METRICS)  # the time stamp and the chassis row
# With a budget, rings are sized for this many GPUs per node until the fleet shows its real size.
ASSUMED_GPUS_PER_NODE = 8
# A fleet that outgrows its estimate is re-budgeted for this much more, so shrinking the rings stays rare.
REGROW_HEADROOM = 1.25


def ring_bytes(capacity: int, gpus: int, nodes: int) -> int:
    """Bytes the rings of ``gpus`` GPUs on ``nodes`` nodes take at ``capacity`` rows."""
    return capacity * (GPU_ROW_BYTES * gpus + NODE_ROW_BYTES * nodes)


def capacity_for_budget(budget_bytes: int, gpus: int, nodes: int, ceiling: int = 3600) -> int:
    """The most rows per ring (at most ``ceiling``, at least 2) that keep every ring within the budget."""
    per_row = ring_bytes(1, gpus, nodes)
    if per_row <= 0:
        return ceiling
    return max(2, min(ceiling, budget_bytes // per_row))


class FleetHistory:
    """All nodes' rings. Owned and written by one thread (the GUI thread in the app).

    With ``budget_bytes``, ring capacity is ``capacity`` rows at most, fewer when the fleet is large enough that
    the rings would exceed the budget (the charts take the rest of their window from the per-minute rollup).
    ``expected_gpus`` sizes the rings from the start; a fleet that turns out bigger shrinks them (rarely, with
    headroom), so the budget holds whatever the estimate was.
    """

    def __init__(self, capacity: int = 3600, *, budget_bytes: int | None = None, expected_gpus: int = 0) -> None:
        self.max_capacity = capacity
        self.budget_bytes = budget_bytes
        self.nodes: dict[str, NodeHistory] = {}
        self.gpu_count = 0
        self.capacity = capacity
        if budget_bytes is not None and expected_gpus > 0:
            nodes = -(-expected_gpus // ASSUMED_GPUS_PER_NODE)
            self.capacity = capacity_for_budget(budget_bytes, expected_gpus, nodes, capacity)

    def node(self, name: str) -> NodeHistory:
        history = self.nodes.get(name)
        if history is None:
            history = self.nodes[name] = NodeHistory(self.capacity)
            self._keep_within_budget()
        return history

    def record(self, sample: NodeSample) -> None:
        node = self.node(sample.node)
        before = len(node.gpus)
        node.record(sample)
        if len(node.gpus) != before:
            self.gpu_count += len(node.gpus) - before
            self._keep_within_budget()

    def record_earlier(self, samples: Iterable[NodeSample]) -> None:
        """Backfilled samples, oldest first: those newer than what their node's rings already hold, in order (the
        rings only grow forward in time)."""
        for sample in samples:
            node = self.nodes.get(sample.node)
            newest = node.newest_time if node is not None else None
            if newest is None or sample.time > newest:
                self.record(sample)

    def _keep_within_budget(self) -> None:
        budget = self.budget_bytes
        if budget is None or ring_bytes(self.capacity, self.gpu_count, len(self.nodes)) <= budget:
            return
        gpus = int(self.gpu_count * REGROW_HEADROOM) + 1
        nodes = int(len(self.nodes) * REGROW_HEADROOM) + 1
        self.capacity = capacity_for_budget(budget, gpus, nodes, self.max_capacity)
        for history in self.nodes.values():
            history.resize(self.capacity)

    def record_gap(self, node: str, when: float) -> None:
        if node in self.nodes:
            self.nodes[node].record_gap(when)

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes for h in self.nodes.values())
