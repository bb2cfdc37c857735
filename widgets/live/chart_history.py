"""The charts' per-minute history: read from the rollup off the GUI thread, joined in front of the rings.

The in-memory rings hold the last minutes at full rate; the rollup (``console.history.rollup``) holds a minute's
min, mean and max for as long as it is kept. When a chart's window reaches past the rings, ``ChartHistory`` reads
the rollup for the selection on a worker lane (on a selection or window change, and at most once a minute) and
the chart keeps drawing the rings meanwhile; the answer comes back through the crossing, and one for a selection
or window that is no longer wanted is dropped. The GUI thread never runs SQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal

from console.history.rings import CHASSIS_METRICS
from console.history.rollup import RollupError, RollupReader, RollupSeries
from widgets.workers import WorkError, Workers

ROLLUP_REFRESH_S = 60.0  # the rollup gains one point a minute: re-read it no more often than that
ROLLUP_JOIN_GAP_S = 150.0  # a longer silence between the rollup's last minute and the ring is drawn as a gap
# What the charts draw from the rollup (GPU lines, bands and slowdown shading; every chassis metric).
CHARTED_GPU_METRICS = (
    "utilization_pct",
    "power_w",
    "power_limit_w",
    "temperature_c",
    "memory_temperature_c",
    "thermal_margin_c",
    "throttle_mask",
    "sm_active_pct",
    "tensor_active_pct",
    "dram_active_pct",
)

log = logging.getLogger(__name__)

SeriesKey = tuple[str | None, str]  # (GPU uuid, or None for the chassis; metric)


@dataclass(frozen=True, slots=True)
class Selection:
    node: str
    gpu_uuid: str | None = None  # None: all GPUs of the node


@dataclass(frozen=True, slots=True)
class RollupSnapshot:
    """The rollup minutes read for one selection and window: every charted metric, per GPU and for the chassis."""

    key: tuple[Selection, float]  # (selection, window in seconds)
    read_at: float  # time.monotonic() when it was asked for
    series: dict[SeriesKey, RollupSeries]

    def earlier(self, uuid: str | None, metric: str) -> RollupSeries | None:
        return self.series.get((uuid, metric))


def read_rollup(
    reader: RollupReader, node: str, uuids: Sequence[str], since: float, until: float
) -> dict[SeriesKey, RollupSeries]:
    """Worker thread: one block read per GPU and one for the chassis, split into the charted metrics."""
    series: dict[SeriesKey, RollupSeries] = {}
    for uuid, kind, metrics in [(u, "gpu", CHARTED_GPU_METRICS) for u in uuids] + [(None, "chassis", CHASSIS_METRICS)]:
        minutes, stats = reader.block(node, uuid, since, until)
        for metric in metrics:
            try:
                series[(uuid, metric)] = reader.metric_of(minutes, stats, kind, metric)
            except KeyError:
                continue  # an older history file without this metric: the ring part only
    return series


class ChartHistory(QObject):
    """Lives in the GUI thread beside a chart; ``snapshot_for`` is called per frame and never waits."""

    history_loaded = Signal()  # a fresh snapshot arrived for what the chart shows: worth a redraw

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._reader: RollupReader | None = None
        self._snapshot: RollupSnapshot | None = None
        self._requested: tuple[Selection, float] | None = None  # the key of the read in flight
        self._failed = False
        self._workers = Workers("chart-history", ("rollup",), expected_errors=(RollupError, OSError), parent=self)

    def set_reader(self, reader: RollupReader | None) -> None:
        self._reader = reader
        self._snapshot = None
        self._requested = None

    def snapshot_for(
        self, selection: Selection, window_s: float, uuids: Sequence[str], oldest: float | None, now: float
    ) -> RollupSnapshot | None:
        """What to draw before the rings for this frame; asks for a read when the one held is missing or old.

        None when the rings cover the window, or while the first read for this selection is on its way.
        """
        reader = self._reader
        since = now - window_s
        if reader is None or (oldest is not None and oldest <= since):
            return None  # the rings cover the whole window
        key = (selection, window_s)
        held = self._snapshot
        fresh = held is not None and held.key == key and time.monotonic() - held.read_at < ROLLUP_REFRESH_S
        if not fresh and self._requested != key:
            self._requested = key
            asked_at = time.monotonic()
            node, wanted = selection.node, tuple(uuids)
            self._workers.submit(
                "rollup",
                "rollup",
                lambda: read_rollup(reader, node, wanted, since, now),
                lambda answer: self._on_workers_answered(key, asked_at, answer),
            )
        # Meanwhile the minutes held for this selection still hold (another window's are clipped to this one).
        return held if held is not None and held.key[0] == selection else None

    def stop(self) -> None:
        self._workers.stop()
        self._requested = None

    def _on_workers_answered(
        self, key: tuple[Selection, float], asked_at: float, answer: dict[SeriesKey, RollupSeries] | WorkError
    ) -> None:
        self._requested = None
        if isinstance(answer, WorkError):
            if not self._failed:  # a transition, not one line per refresh
                log.warning("chart history unavailable: %s", answer.message)
            self._failed = True
            answer = {}  # tried: the rings alone until the next refresh
        else:
            self._failed = False
        self._snapshot = RollupSnapshot(key, asked_at, answer)
        self.history_loaded.emit()


def join_rollup(
    earlier: RollupSeries | None, values: np.ndarray, t: np.ndarray, y: np.ndarray, cut: float
) -> tuple[np.ndarray, np.ndarray]:
    """Minutes of ``earlier`` that end before ``cut`` (the ring's oldest stamp), then the ring's points.

    ``values`` is the rollup column to draw (mean for lines, max for slowdown masks). A silence longer than
    ROLLUP_JOIN_GAP_S between the two parts (the console was not running) becomes a NaN point: a gap, not a ramp.
    """
    if earlier is None or not len(earlier.t):
        return t, y
    keep = earlier.t + 30.0 <= cut
    if not keep.any():
        return t, y
    et, ey = earlier.t[keep], values[keep].astype(y.dtype if len(y) else np.float32)
    if len(t) and t[0] - et[-1] > ROLLUP_JOIN_GAP_S:
        et, ey = np.append(et, et[-1] + 60.0), np.append(ey, np.nan)
    return np.concatenate([et, t]), np.concatenate([ey, y])


def join_mean(
    earlier: RollupSeries | None, t: np.ndarray, y: np.ndarray, since: float
) -> tuple[np.ndarray, np.ndarray]:
    """The rollup's per-minute means inside the window, then the ring's points (``join_rollup``)."""
    cut = float(t[0]) if len(t) else np.inf
    if earlier is not None:
        earlier = clip(earlier, since)
    return join_rollup(earlier, earlier.mean if earlier else np.zeros(0), t, y, cut)


def clip(series: RollupSeries, since: float, cut: float = np.inf) -> RollupSeries:
    """The minutes that end after ``since`` (a read for a wider or older window) and before ``cut`` (the ring)."""
    keep = (series.t + 30.0 > since) & (series.t + 30.0 <= cut)
    return RollupSeries(series.t[keep], series.min[keep], series.mean[keep], series.max[keep])
