"""The evidence chart: the signal the incident's rule fired on (coolant flow, inlet temperature, the GPU's own
temperature or margin, ...; one line per member node for a rack, loop or feed incident), above the affected GPU's
temperature, power and utilization around the incident's onset.

``evidence_series`` parses the stored sample JSON into arrays (run it on a worker thread: it is all Python);
``EvidenceChart`` draws them with plot items created once and updated with ``setData``. The onset is a
vertical line; slowdown and throttle periods (HW slowdown, HW/SW thermal, power brake) are shaded.
"""

from __future__ import annotations

import html
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
from console.samples.schema import GpuSample, NodeSample, SchemaError, throttle_mask
from widgets.common.style import gpu_color, hms
from widgets.live.charts import MAX_SHADED_REGIONS, slowdown_regions
from widgets.review.signals import COOLANT_FLOW, TEMPERATURE, SignalSpec, signal_for

METRICS = (
    # attribute, plot title, axis label, default y range (widened when the evidence goes beyond it)
    ("temperature_c", "GPU temperature", "temp (°C)", (20.0, 100.0)),
    ("power_w", "Power", "power (W)", (0.0, 800.0)),
    ("utilization_pct", "Utilization", "util (%)", (0.0, 105.0)),
)
SIGNAL_PLOT = "signal"
MAX_SIGNAL_LINES = 16  # member nodes drawn on the signal plot (a site-wide incident names the first ones)
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
    signal: SignalSpec | None = None
    signal_lines: tuple[SignalLine, ...] = ()  # one per node (one for a single node's or GPU's incident)
    reference: float | None = None  # e.g. the rated coolant flow, drawn dashed


@dataclass(frozen=True, slots=True)
class SignalLine:
    name: str  # the node, with the GPU for a GPU signal of one GPU
    t: np.ndarray
    y: np.ndarray


def _pick_gpu(gpus: Sequence[GpuSample], incident: Incident) -> GpuSample | None:
    ctx = incident.context
    if ctx.gpu_uuid is not None:
        return next((gpu for gpu in gpus if gpu.uuid == ctx.gpu_uuid), None)
    if ctx.gpu_index is not None:
        return next((gpu for gpu in gpus if gpu.index == ctx.gpu_index), None)
    return gpus[0] if gpus else None  # a node-level incident: the node's first GPU gives the picture


def _home_node(incident: Incident, samples: Sequence[NodeSample]) -> str:
    """The node whose GPU the three GPU plots show: the incident's own, or its first member with evidence."""
    nodes = {sample.node for sample in samples}
    for node in (incident.context.node, *incident.member_nodes):
        if node in nodes:
            return node
    return samples[0].node if samples else incident.context.node


def _worst_gpu_value(spec: SignalSpec, sample: NodeSample) -> float:
    values = [spec.read(sample, gpu) for gpu in sample.gpus]
    finite = [value for value in values if not math.isnan(value)]
    if not finite:
        return math.nan
    return min(finite) if spec.name == "thermal_margin_c" else max(finite)  # the GPU nearest its limit


def _signal_lines(incident: Incident, spec: SignalSpec, samples: Sequence[NodeSample], home: str) -> list[SignalLine]:
    group = len(incident.member_nodes) > 1
    by_node: dict[str, dict[float, float]] = {}
    label_of: dict[str, str] = {}
    for sample in samples:
        if spec.chassis is not None or (sample.node == home and not group):
            gpu = _pick_gpu(sample.gpus, incident) if spec.chassis is None else None
            if spec.chassis is None and gpu is None:
                continue
            value = spec.read(sample, gpu)
            if gpu is not None:
                label_of.setdefault(sample.node, f"{sample.node} GPU {gpu.index}")
        else:  # a GPU signal of a group: each node's GPU nearest its limit
            value = _worst_gpu_value(spec, sample)
        by_node.setdefault(sample.node, {})[sample.time] = value  # a sample stored by two incidents counts once
    order = [node for node in incident.member_nodes if node in by_node]
    order += sorted(node for node in by_node if node not in order)
    if not group:
        order = [node for node in order if node == home]
    lines = []
    for node in order[:MAX_SIGNAL_LINES]:
        stamps = sorted(by_node[node])
        lines.append(
            SignalLine(
                label_of.get(node, node),
                np.asarray(stamps, dtype=np.float64),
                np.asarray([by_node[node][t] for t in stamps], dtype=np.float64),
            )
        )
    return lines


def _reference(spec: SignalSpec, samples: Sequence[NodeSample]) -> float | None:
    if spec is not COOLANT_FLOW:
        return None
    rated = [s.chassis.coolant_flow_rated_lpm for s in samples if s.chassis.coolant_flow_rated_lpm is not None]
    return float(np.median(rated)) if rated else None


def evidence_series(incident: Incident, points: Sequence[EvidencePoint]) -> EvidenceSeries:
    times: list[float] = []
    columns: dict[str, list[float]] = {name: [] for name, *_ in METRICS}
    masks: list[float] = []
    unreadable = 0
    first_problem = ""
    label = ""
    samples: list[NodeSample] = []
    for point in points:
        try:
            samples.append(sample_from_json(json.loads(point.sample_json)))
        except (ValueError, SchemaError) as exc:  # JSONDecodeError is a ValueError
            unreadable += 1
            first_problem = first_problem or f"evidence at {hms(point.time)}: {exc}"
    home = _home_node(incident, samples)
    seen: set[float] = set()
    for sample in samples:
        if sample.node != home or sample.time in seen:
            continue
        gpu = _pick_gpu(sample.gpus, incident)
        if gpu is None:
            continue
        seen.add(sample.time)
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
    spec = signal_for(incident)
    lines = _signal_lines(incident, spec, samples, home)
    if spec.gpu is not None and spec is not TEMPERATURE and not any(np.isfinite(line.y).any() for line in lines):
        spec = TEMPERATURE  # the GPU did not report the rule's own measure (e.g. no thermal margin)
        lines = _signal_lines(incident, spec, samples, home)
    return EvidenceSeries(
        gpu_label=label if len(incident.member_nodes) == 1 else f"{home} {label}".strip(),
        t=t,
        values=values,
        slowdowns=tuple(spans),
        points=len(points),
        unreadable=unreadable,
        first_problem=first_problem,
        signal=spec,
        signal_lines=tuple(lines),
        reference=_reference(spec, samples),
    )


class EvidenceChart(QWidget):
    """The signal plot over three GPU plots, sharing the time axis; created once, refilled for each incident."""

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
        first = self._add_signal_plot()
        for row, (name, title, unit, y_range) in enumerate(METRICS, start=1):
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
            if row == len(METRICS):
                plot.setLabel("bottom", "time (UTC)")
            else:
                plot.getAxis("bottom").setStyle(showValues=False)
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

    def _add_signal_plot(self) -> pg.PlotItem:
        """The top plot, twice the others' height: the rule's own signal, one line per node."""
        axis = pg.DateAxisItem(orientation="bottom")
        plot: pg.PlotItem = self.graphics.ci.addPlot(row=0, col=0, axisItems={"bottom": axis})
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.enableAutoRange(x=False, y=False)
        plot.getAxis("left").setWidth(58)
        plot.getAxis("bottom").setStyle(showValues=False)
        self.graphics.ci.layout.setRowStretchFactor(0, 2)
        self.legend = plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
        self.signal_curves: list[pg.PlotCurveItem] = []  # a pool: grown to the most lines shown, never cleared
        self._signal_names: list[str] = []
        self.reference_line = pg.InfiniteLine(
            angle=0, movable=False, pen=pg.mkPen("#555", width=1, style=Qt.PenStyle.DashLine)
        )
        self.reference_line.hide()
        plot.addItem(self.reference_line, ignoreBounds=True)
        onset = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(ONSET_COLOR, width=2))
        onset.hide()
        plot.addItem(onset, ignoreBounds=True)
        self.onset_lines.append(onset)
        self.plots[SIGNAL_PLOT] = plot
        self.regions[SIGNAL_PLOT] = []
        return plot

    def signal_lines(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """What the signal plot draws: line name -> (t, y) of each visible line."""
        return {
            name: curve.getData()
            for name, curve in zip(self._signal_names, self.signal_curves, strict=False)
            if curve.isVisible()
        }

    def _show_signal(self, series: EvidenceSeries | None) -> None:
        plot = self.plots[SIGNAL_PLOT]
        lines = series.signal_lines if series is not None else ()
        spec = series.signal if series is not None else None
        plot.setTitle(spec.title if spec else "Signal", size="9pt")  # our own words: the title item renders HTML
        plot.setLabel("left", spec.unit if spec else "")
        while len(self.signal_curves) < len(lines):
            curve = pg.PlotCurveItem(antialias=False, connect="finite")
            plot.addItem(curve)
            self.signal_curves.append(curve)
        self.legend.clear()
        self._signal_names = [line.name for line in lines]
        finite: list[np.ndarray] = []
        for i, curve in enumerate(self.signal_curves):
            if i < len(lines):
                line = lines[i]
                curve.setPen(pg.mkPen(gpu_color(i), width=2 if len(lines) == 1 else 1))
                curve.setData(line.t.copy(), line.y.copy())
                curve.show()
                self.legend.addItem(curve, html.escape(line.name))  # legend labels render HTML; names are nodes'
                finite.append(line.y[np.isfinite(line.y)])
            else:
                curve.setData([], [])
                curve.hide()
        reference = series.reference if series is not None else None
        self.reference_line.setVisible(reference is not None)
        values = np.concatenate(finite) if finite else np.empty(0)
        if reference is not None:
            self.reference_line.setPos(reference)
            values = np.append(values, reference)
        low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
        span = max(high - low, abs(high) * 0.1, 1e-3)
        bottom = 0.0 if spec is COOLANT_FLOW and low >= 0 else low - 0.1 * span  # a flow drop reads against zero
        plot.setYRange(bottom, high + 0.1 * span, padding=0)

    def show_series(self, incident: Incident | None, series: EvidenceSeries | None) -> None:
        if incident is None or series is None:
            for curve in self.curves.values():
                curve.setData([], [])
            for line in self.onset_lines:
                line.hide()
            self._shade([])
            self._show_signal(None)
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
        self._show_signal(series)
        stamps = [float(a[i]) for a in (series.t, *(line.t for line in series.signal_lines)) if len(a) for i in (0, -1)]
        if stamps:
            left = min(*stamps, incident.opened_at)
            right = max(*stamps, incident.opened_at)
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
        parts = []
        if series.signal is not None and series.signal_lines:
            nodes = len(series.signal_lines)
            parts.append(f"top: {series.signal.title}" + (f", one line per node ({nodes})" if nodes > 1 else ""))
        if series.reference is not None:
            parts.append(f"dashed = rated {series.reference:g} L/min")
        parts.append(f"{series.gpu_label or 'no GPU in the evidence'}: {len(series.t)} samples")
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
