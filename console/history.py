"""Fixed-size ring buffers per GPU and per node chassis, so memory does not grow with run time.

Times are stored once per node (all GPUs of a node are read in one poll); values are float32 with NaN for
"no value", so charts break their lines instead of drawing a lie. Readers get fresh arrays (pyqtgraph keeps a view
of whatever it is given, and the ring keeps changing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from console.schema import GpuSample, NodeSample, throttle_mask

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
)
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
# A node that reports a new UUID on every poll (a broken exporter) must not add a ring per poll forever.
MAX_GPUS_PER_NODE = 64
_CHASSIS_INDEX = {name: i for i, name in enumerate(CHASSIS_METRICS)}


def _num(value: float | int | None) -> float:
    return float("nan") if value is None else float(value)


def gpu_row(gpu: GpuSample) -> list[float]:
    row = [_num(getattr(gpu, name)) for name in GPU_METRICS[:-1]]
    row.append(float(throttle_mask(gpu.throttle_reasons)))
    return row


class Ring:
    """``capacity`` rows of ``width`` float32 values, newest last when read."""

    __slots__ = ("_count", "_head", "_values", "capacity")

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        self._values = np.full((capacity, width), np.nan, dtype=np.float32)
        self._head = 0
        self._count = 0

    def append(self, row: Iterable[float]) -> None:
        self._values[self._head] = tuple(row)
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


class TimeRing(Ring):
    """Epoch-second stamps, float64 (float32 cannot hold today's epoch to the second)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values = np.full((capacity, 1), np.nan, dtype=np.float64)
        self._head = 0
        self._count = 0


@dataclass(frozen=True, slots=True)
class Series:
    """One metric of one GPU or node over a window: fresh arrays, x in epoch seconds, NaN for gaps."""

    t: np.ndarray
    y: np.ndarray


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

    def _evict_longest_unseen(self) -> None:
        uuid = min(self._last_seen, key=self._last_seen.__getitem__)
        del self.gpus[uuid], self.gpu_index[uuid], self._last_seen[uuid]

    def record(self, sample: NodeSample) -> None:
        self.times.append((sample.time,))
        self._records += 1
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
        ch = sample.chassis
        fans = [_num(f) for f in (ch.fans_rpm or ())][:MAX_CHASSIS_FANS]
        fans += [float("nan")] * (MAX_CHASSIS_FANS - len(fans))
        self.chassis.append(
            [
                _num(ch.inlet_c),
                _num(ch.exhaust_c),
                _num(ch.coolant_supply_c),
                _num(ch.coolant_return_c),
                _num(ch.coolant_flow_lpm),
                _num(ch.power_w),
                *fans,
            ]
        )

    def record_gap(self, when: float) -> None:
        """A failed poll: a row of NaN so charts show the outage as a gap."""
        self.times.append((when,))
        for ring in self.gpus.values():
            ring.append([np.nan] * len(GPU_METRICS))
        self.chassis.append([np.nan] * len(CHASSIS_METRICS))

    def _window(self, since: float | None) -> int:
        t = self.times.column(0)
        if since is None:
            return len(t)
        return int(len(t) - np.searchsorted(t, since, side="left"))

    def gpu_series(self, uuid: str, metric: str, since: float | None = None) -> Series:
        ring = self.gpus.get(uuid)
        n = self._window(since)
        t = self.times.column(0, n)
        if ring is None:
            return Series(t, np.full(len(t), np.nan, dtype=np.float32))
        return Series(t, ring.column(_GPU_INDEX[metric], n))

    def chassis_series(self, metric: str, since: float | None = None) -> Series:
        n = self._window(since)
        return Series(self.times.column(0, n), self.chassis.column(_CHASSIS_INDEX[metric], n))

    @property
    def nbytes(self) -> int:
        return self.times.nbytes + self.chassis.nbytes + sum(r.nbytes for r in self.gpus.values())


class FleetHistory:
    """All nodes' rings. Owned and written by one thread (the GUI thread in the app)."""

    def __init__(self, capacity: int = 3600) -> None:
        self.capacity = capacity
        self.nodes: dict[str, NodeHistory] = {}

    def node(self, name: str) -> NodeHistory:
        history = self.nodes.get(name)
        if history is None:
            history = self.nodes[name] = NodeHistory(self.capacity)
        return history

    def record(self, sample: NodeSample) -> None:
        self.node(sample.node).record(sample)

    def record_gap(self, node: str, when: float) -> None:
        if node in self.nodes:
            self.nodes[node].record_gap(when)

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes for h in self.nodes.values())
