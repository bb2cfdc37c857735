"""The evidence chart: the affected GPU's temperature, power and utilization around the incident's onset.

``evidence_series`` parses the stored sample JSON into arrays (run it on a worker thread: it is all Python);
``EvidenceChart`` draws them with plot items created once and updated with ``setData``. The onset is a
vertical line; slowdown and throttle periods (HW slowdown, HW/SW thermal, power brake) are shaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from console.incidents.model import EvidencePoint, Incident
from console.samples.codec import sample_from_json
from console.samples.schema import GpuSample, SchemaError, throttle_mask
from widgets.live.charts import MAX_SHADED_REGIONS, slowdown_regions

METRICS = (
    # attribute, plot title, axis label, default y range (widened when the evidence goes beyond it)
    ("temperature_c", "GPU temperature", "temp (°C)", (20.0, 100.0)),
    ("power_w", "Power", "power (W)", (0.0, 800.0)),
    ("utilization_pct", "Utilization", "util (%)", (0.0, 105.0)),
)
ONSET_COLOR = "#c62828"
SHADE = QColor(198, 40, 40, 45)


@dataclass(frozen=True, slots=True)
class EvidenceSeries:
    """Arrays over the evidence points that held the GPU; NaN where a value was not reported."""

    gpu_label: str
    t: np.ndarray
    values: dict[str, np.ndarray]
    slowdowns: tuple[tuple[float, float], ...]
    points: int  # evidence points stored
    unreadable: int  # points whose JSON was not a valid sample
    first_problem: str = ""


def _pick_gpu(gpus: Sequence[GpuSample], incident: Incident) -> GpuSample | None:
    ctx = incident.context
    if ctx.gpu_uuid is not None:
        return next((gpu for gpu in gpus if gpu.uuid == ctx.gpu_uuid), None)
    if ctx.gpu_index is not None:
        return next((gpu for gpu in gpus if gpu.index == ctx.gpu_index), None)
    return gpus[0] if gpus else None  # a node-level incident: the node's first GPU gives the picture


def evidence_series(incident: Incident, points: Sequence[EvidencePoint]) -> EvidenceSeries:
    times: list[float] = []
    columns: dict[str, list[float]] = {name: [] for name, *_ in METRICS}
    masks: list[float] = []
    unreadable = 0
    first_problem = ""
    label = ""
    for point in points:
        try:
            sample = sample_from_json(json.loads(point.sample_json))
        except (ValueError, SchemaError) as exc:  # JSONDecodeError is a ValueError
            unreadable += 1
            first_problem = first_problem or f"evidence at {point.time:.0f}: {exc}"
            continue
        gpu = _pick_gpu(sample.gpus, incident)
        if gpu is None:
            continue
        label = label or f"GPU {gpu.index}" + (f" · {gpu.name}" if gpu.name else "")
        times.append(sample.time)
        for name, column in columns.items():
            value = getattr(gpu, name)
            column.append(math.nan if value is None else float(value))
        masks.append(float(throttle_mask(gpu.throttle_reasons)))
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    t = np.asarray(times, dtype=np.float64)[order]
    values = {name: np.asarray(column, dtype=np.float64)[order] for name, column in columns.items()}
    spans = slowdown_regions(t, np.asarray(masks, dtype=np.float64)[order])
    return EvidenceSeries(
        gpu_label=label,
        t=t,
        values=values,
        slowdowns=tuple(spans),
        points=len(points),
        unreadable=unreadable,
        first_problem=first_problem,
    )


class EvidenceChart(QWidget):
    """Three stacked plots sharing the time axis; created once, refilled for each selected incident."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, background="w", foreground="#222")
        self.caption = QLabel("")
        self.caption.setTextFormat(Qt.TextFormat.PlainText)  # GPU names come from the node
        self.caption.setWordWrap(True)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumHeight(240)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.caption)
        layout.addWidget(self.graphics, 1)
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotCurveItem] = {}
        self.onset_lines: list[pg.InfiniteLine] = []
        self.regions: dict[str, list[pg.LinearRegionItem]] = {}
        self._default_ranges: dict[str, tuple[float, float]] = {}
        first: pg.PlotItem | None = None
        for row, (name, title, unit, y_range) in enumerate(METRICS):
            axis = pg.DateAxisItem(orientation="bottom")
            plot: pg.PlotItem = self.graphics.ci.addPlot(row=row, col=0, axisItems={"bottom": axis})
            plot.setTitle(title, size="9pt")  # our own fixed words: the title item renders HTML
            plot.setLabel("left", unit)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.enableAutoRange(x=False, y=False)
            plot.setYRange(*y_range, padding=0)
            plot.getAxis("left").setWidth(58)  # equal widths keep the three time axes aligned
            if row == len(METRICS) - 1:
                plot.setLabel("bottom", "time (UTC)")
            else:
                plot.getAxis("bottom").setStyle(showValues=False)
            if first is None:
                first = plot
            else:
                plot.setXLink(first)
            curve = pg.PlotCurveItem(pen=pg.mkPen("#1565c0", width=1), antialias=False, connect="finite")
            plot.addItem(curve)
            onset = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(ONSET_COLOR, width=2))
            onset.hide()
            plot.addItem(onset, ignoreBounds=True)
            self.plots[name] = plot
            self.curves[name] = curve
            self.onset_lines.append(onset)
            self.regions[name] = []
            self._default_ranges[name] = y_range
        self.onset_time: float | None = None
        self.show_series(None, None)

    def show_series(self, incident: Incident | None, series: EvidenceSeries | None) -> None:
        if incident is None or series is None:
            for curve in self.curves.values():
                curve.setData([], [])
            for line in self.onset_lines:
                line.hide()
            self._shade([])
            self.onset_time = None
            self.caption.setText("Select an incident to see its evidence.")
            return
        self.onset_time = incident.opened_at
        for line in self.onset_lines:
            line.setPos(incident.opened_at)
            line.show()
        for name, curve in self.curves.items():
            y = series.values[name]
            curve.setData(series.t.copy(), y.copy())
            self.plots[name].setYRange(*self._y_range(name, y), padding=0)
        self._shade(list(series.slowdowns))
        if len(series.t):
            left = min(float(series.t[0]), incident.opened_at)
            right = max(float(series.t[-1]), incident.opened_at)
        else:
            left, right = incident.opened_at - 300, incident.opened_at + 300
        margin = max((right - left) * 0.02, 5.0)
        next(iter(self.plots.values())).setXRange(left - margin, right + margin, padding=0)
        self.caption.setText(self._caption(series))

    def _y_range(self, name: str, y: np.ndarray) -> tuple[float, float]:
        low, high = self._default_ranges[name]
        finite = y[np.isfinite(y)]
        if len(finite):
            span = high - low
            low = min(low, float(finite.min()) - 0.05 * span)
            high = max(high, float(finite.max()) + 0.05 * span)
        return low, high

    def _shade(self, spans: list[tuple[float, float]]) -> None:
        spans = spans[-MAX_SHADED_REGIONS:]
        for name, plot in self.plots.items():
            pool = self.regions[name]
            while len(pool) < len(spans):
                region = pg.LinearRegionItem(movable=False, brush=pg.mkBrush(SHADE), pen=pg.mkPen(None))
                region.setZValue(-10)
                plot.addItem(region, ignoreBounds=True)
                pool.append(region)
            for i, region in enumerate(pool):
                if i < len(spans):
                    region.setRegion(spans[i])
                    region.show()
                else:
                    region.hide()

    @staticmethod
    def _caption(series: EvidenceSeries) -> str:
        if series.points == 0:
            return "No evidence was stored for this incident."
        parts = [f"{series.gpu_label or 'no GPU in the evidence'}: {len(series.t)} samples"]
        parts.append("red line = onset")
        if series.slowdowns:
            parts.append(f"shaded = slowdown / throttle ({len(series.slowdowns)} periods)")
        if series.unreadable:
            parts.append(f"{series.unreadable} evidence points unreadable ({series.first_problem})")
        return " · ".join(parts)

    @property
    def shaded_spans(self) -> list[tuple[float, float]]:
        first = next(iter(self.regions.values()))
        spans: list[tuple[float, float]] = []
        for region in first:
            if region.isVisible():
                start, end = region.getRegion()
                spans.append((float(start), float(end)))
        return spans
