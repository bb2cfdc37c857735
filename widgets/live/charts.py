"""Live charts for the selection: one GPU, or every GPU of a node overlaid.

Plot items and curves are created once and updated with ``setData`` on a redraw timer (8 Hz, one plot of a
frame per tick, only while visible), independent of data arrival. Fixed y ranges and width-1 pens without
antialiasing keep a frame cheap (performance-notes.md). Missing data is NaN so lines break instead of lying;
slowdown periods are shaded. The part of the window older than the in-memory rings comes from the per-minute
rollup, read off the GUI thread by ``widgets.live.chart_history``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QHideEvent, QShowEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from console.history.rings import CHASSIS_METRICS, FleetHistory, NodeHistory
from console.history.rollup import RollupReader
from console.samples.schema import SLOWDOWN_REASONS, throttle_mask
from widgets.common.style import gpu_color
from widgets.live.chart_history import ChartHistory, RollupSnapshot, Selection, clip, join_mean

MAX_GPU_CURVES = 8
MAX_SHADED_REGIONS = 24
SLOWDOWN_MASK = throttle_mask(SLOWDOWN_REASONS)
REDRAW_HZ = 8  # how often the timer checks for new data and applies one plot of a frame; see _on_timer_timeout
MAX_IDLE_FRAME_S = 2.0
FAN_SLOTS = sum(1 for m in CHASSIS_METRICS if m.startswith("fan"))
# DCGM profiling shares, drawn as the mean of the selected GPUs (eight GPUs times three lines would not read).
PROFILING_LINES = (
    ("sm_active_pct", "SM active", "#1565c0"),
    ("tensor_active_pct", "tensor pipe", "#6a1b9a"),
    ("dram_active_pct", "DRAM", "#ef6c00"),
)
NO_PROFILING = "no profiling metrics from this node (DCGM_FI_PROF_* not exported, or not a data-center GPU)"


def _pen(color: str, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> pg.QtGui.QPen:
    pen = pg.mkPen(color=color, width=1)
    pen.setStyle(style)
    return pen


def slowdown_regions(t: np.ndarray, masks: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous time spans where any slowdown bit is set (masks: float bitmask per time, NaN allowed)."""
    if len(t) == 0:
        return []
    finite = np.nan_to_num(masks, nan=0.0).astype(np.int64)
    active = (finite & SLOWDOWN_MASK) != 0
    if not active.any():
        return []
    edges = np.diff(active.astype(np.int8))
    starts: list[int] = [int(i) for i in np.flatnonzero(edges == 1) + 1]
    ends: list[int] = [int(i) for i in np.flatnonzero(edges == -1) + 1]
    if active[0]:
        starts.insert(0, 0)
    if active[-1]:
        ends.append(len(active) - 1)
    return [(float(t[s]), float(t[min(e, len(t) - 1)])) for s, e in zip(starts, ends, strict=False)]


def peak_decimate(t: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each bin's minimum and maximum so spikes survive, at about ``max_points`` points.

    A one-hour window holds 3,600 points per curve on a plot a few hundred pixels wide; drawing them all costs
    frame time and shows nothing more. NaN gaps survive: a bin that is all NaN stays NaN.
    """
    n = len(y)
    if n <= max_points or max_points < 4:
        return t, y
    bins = max_points // 2
    per_bin = n // bins
    usable = bins * per_bin
    tail_t, tail_y = t[usable:], y[usable:]
    yb = y[:usable].reshape(bins, per_bin)
    tb = t[:usable].reshape(bins, per_bin)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins are gaps, on purpose
        lo = np.nanmin(yb, axis=1)
        hi = np.nanmax(yb, axis=1)
    out_y = np.empty(bins * 2, dtype=y.dtype)
    out_y[0::2] = lo
    out_y[1::2] = hi
    out_t = np.empty(bins * 2, dtype=t.dtype)
    out_t[0::2] = tb[:, 0]
    out_t[1::2] = tb[:, -1]
    return np.concatenate([out_t, tail_t]), np.concatenate([out_y, tail_y])


class _Plot:
    """One PlotItem with a fixed y range, a time axis, pooled curves and pooled shaded regions."""

    def __init__(
        self,
        layout: pg.GraphicsLayout,
        title: str,
        unit_label: str,
        y_range: tuple[float, float],
        colspan: int = 1,
    ) -> None:
        axis = pg.DateAxisItem(orientation="bottom")
        self.item: pg.PlotItem = layout.addPlot(title=title, axisItems={"bottom": axis}, colspan=colspan)
        self.item.setLabel("left", unit_label)
        self.item.setLabel("bottom", "time (UTC)")
        self.item.showGrid(x=True, y=True, alpha=0.15)
        self.item.setMenuEnabled(False)
        self.item.setMouseEnabled(x=False, y=False)
        self.item.hideButtons()
        self.item.setYRange(*y_range, padding=0)
        self.item.enableAutoRange(x=False, y=False)
        self.curves: list[pg.PlotCurveItem] = []
        self.regions: list[pg.LinearRegionItem] = []
        self.empty_note = pg.TextItem("", color="#777", anchor=(0.5, 0.5))
        self.item.addItem(self.empty_note, ignoreBounds=True)
        self._y_mid = sum(y_range) / 2

    def note_if_empty(self, has_data: bool, message: str, x_mid: float) -> None:
        """Say why a plot is empty (e.g. an air-cooled node has no coolant loop) instead of an empty frame."""
        self.empty_note.setText("" if has_data else message)
        self.empty_note.setPos(x_mid, self._y_mid)

    def curve(self, color: str, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> pg.PlotCurveItem:
        curve = pg.PlotCurveItem(pen=_pen(color, style), antialias=False, connect="finite")
        self.item.addItem(curve)
        self.curves.append(curve)
        return curve

    def shade(self, spans: list[tuple[float, float]]) -> None:
        while len(self.regions) < min(len(spans), MAX_SHADED_REGIONS):
            region = pg.LinearRegionItem(movable=False, brush=pg.mkBrush(QColor(198, 40, 40, 45)), pen=pg.mkPen(None))
            region.setZValue(-10)
            self.item.addItem(region)
            self.regions.append(region)
        for i, region in enumerate(self.regions):
            if i < len(spans):
                region.setRegion(spans[-(i + 1)])
                region.show()
            else:
                region.hide()


def _band(plot: _Plot) -> tuple[pg.PlotCurveItem, pg.PlotCurveItem, pg.FillBetweenItem]:
    """A light fill between two invisible curves: the rollup's min-max under a mean line."""
    low = pg.PlotCurveItem(pen=pg.mkPen(None), connect="finite")
    high = pg.PlotCurveItem(pen=pg.mkPen(None), connect="finite")
    fill = pg.FillBetweenItem(low, high, brush=pg.mkBrush(QColor(0, 0, 0, 28)))
    fill.setZValue(-5)
    for item in (low, high, fill):
        plot.item.addItem(item)
    return low, high, fill


class ChartPanel(QWidget):
    """Seven plots: utilization, power vs limit, GPU/HBM temperature vs slowdown threshold, cooling temperatures,
    chassis fans, coolant flow, and the DCGM profiling activity (SM, tensor pipe, DRAM) where the node reports it."""

    history_loaded = Signal()  # per-minute history for the selection arrived; the next frame draws it

    def __init__(self, history: FleetHistory, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, background="w", foreground="#222")
        self._history = history
        self._selection: Selection | None = None
        self._rollup = ChartHistory(self)
        self._rollup.history_loaded.connect(self._on_rollup_history_loaded)
        self._band_key: tuple[object, ...] | None = None
        self.window_s = 300.0
        self.rated_flow_lpm = float("nan")  # set by the window from the node's latest chassis sample
        self.max_points = 1200  # per curve; about two points per horizontal pixel of a plot
        self.title = QLabel("Select a GPU or a node in the fleet panel")
        self.title.setTextFormat(Qt.TextFormat.PlainText)  # node names come from the network
        self.title.setStyleSheet("font-size: 13pt; font-weight: 600; padding: 2px 4px;")
        self.legend = QLabel("")
        self.legend.setTextFormat(Qt.TextFormat.RichText)  # built only from our own GPU indices and colours
        self.graphics = pg.GraphicsLayoutWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.legend)
        layout.addWidget(self.graphics, 1)

        grid = self.graphics.ci
        # Short titles: a plot title's width is a minimum width, and long ones pushed the right column off-screen.
        # What the line styles mean is said once, in the legend line above the plots.
        self.util = _Plot(grid, "GPU utilization", "util (%)", (0, 105))
        self.power = _Plot(grid, "Power and enforced limit", "power (W)", (0, 780))
        grid.nextRow()
        self.temp = _Plot(grid, "GPU and HBM temperature", "temp (°C)", (20, 100))
        self.cooling = _Plot(grid, "Chassis air and coolant", "temp (°C)", (10, 80))
        grid.nextRow()
        self.fans = _Plot(grid, "Chassis fans", "fan speed (RPM)", (0, 20000))
        self.flow = _Plot(grid, "Coolant flow", "flow (L/min)", (0, 45))
        grid.nextRow()
        self.profiling = _Plot(grid, "Profiling: share of time busy (mean of the GPUs shown)", "busy (%)", (0, 105), 2)
        grid.layout.setRowStretchFactor(3, 1)
        for row in range(3):
            grid.layout.setRowStretchFactor(row, 2)  # the profiling row is half as tall as the others

        self.util_curves = [self.util.curve(gpu_color(i)) for i in range(MAX_GPU_CURVES)]
        self.power_curves = [self.power.curve(gpu_color(i)) for i in range(MAX_GPU_CURVES)]
        self.limit_curve = self.power.curve("#444", Qt.PenStyle.DashLine)
        self.temp_curves = [self.temp.curve(gpu_color(i)) for i in range(MAX_GPU_CURVES)]
        self.hbm_curves = [self.temp.curve(gpu_color(i), Qt.PenStyle.DotLine) for i in range(MAX_GPU_CURVES)]
        self.threshold_curve = self.temp.curve("#c62828", Qt.PenStyle.DashLine)
        self.cooling_curves = {
            "inlet_c": self.cooling.curve("#1565c0"),
            "exhaust_c": self.cooling.curve("#ef6c00"),
            "coolant_supply_c": self.cooling.curve("#00897b"),
            "coolant_return_c": self.cooling.curve("#6d4c41"),
        }
        self.fan_curves = [self.fans.curve(gpu_color(i)) for i in range(FAN_SLOTS)]
        self.flow_curve = self.flow.curve("#00897b")
        self.rated_flow_curve = self.flow.curve("#444", Qt.PenStyle.DashLine)
        # The rollup's min-max of the first selected GPU, drawn as a light band under the mean line.
        self.bands = {
            "utilization_pct": _band(self.util),
            "power_w": _band(self.power),
            "temperature_c": _band(self.temp),
        }
        self.profiling_curves = {metric: self.profiling.curve(color) for metric, _label, color in PROFILING_LINES}
        self.profiling.item.addLegend(offset=(5, 5), labelTextSize="8pt", colCount=len(PROFILING_LINES))
        for metric, label, _color in PROFILING_LINES:
            self.profiling.item.legend.addItem(self.profiling_curves[metric], label)
        self.cooling.item.addLegend(offset=(5, 5), labelTextSize="8pt")
        for name, curve in self.cooling_curves.items():
            self.cooling.item.legend.addItem(curve, name.removesuffix("_c").replace("_", " "))

        self._dirty = True
        self._last_frame = 0.0
        self._pending: list[list[Callable[[], object]]] = []
        self._stopped = False
        self._timer = QTimer(self)
        self._timer.setObjectName("chart-redraw")
        self._timer.setInterval(1000 // REDRAW_HZ)
        self._timer.timeout.connect(self._on_timer_timeout)
        # The timer runs while the charts are on screen (showEvent/hideEvent): a hidden tab costs no ticks.

    # -- selection ----

    @property
    def selection(self) -> Selection | None:
        return self._selection

    def select(self, selection: Selection | None, description: str = "") -> None:
        self._selection = selection
        self.title.setText(
            description or ("Select a GPU or a node in the fleet panel" if selection is None else selection.node)
        )
        self.redraw()

    def set_window(self, seconds: float) -> None:
        self.window_s = seconds
        self.redraw()

    def set_rollup(self, reader: RollupReader | None) -> None:
        """Per-minute history: fills the part of the window the in-memory rings no longer (or never) held."""
        self._rollup.set_reader(reader)
        self.redraw()

    def _on_rollup_history_loaded(self) -> None:
        self._dirty = True  # the next tick draws the minutes read (off the GUI thread) in front of the rings
        self.history_loaded.emit()

    def _gpu_xy(
        self, node: NodeHistory, cache: RollupSnapshot | None, uuid: str, metric: str, since: float
    ) -> tuple[np.ndarray, np.ndarray]:
        series = node.gpu_series(uuid, metric, since)
        return join_mean(cache.earlier(uuid, metric) if cache else None, series.t, series.y, since)

    def _chassis_xy(
        self, node: NodeHistory, cache: RollupSnapshot | None, metric: str, since: float
    ) -> tuple[np.ndarray, np.ndarray]:
        series = node.chassis_series(metric, since)
        return join_mean(cache.earlier(None, metric) if cache else None, series.t, series.y, since)

    def _rollup_slowdowns(
        self, node: NodeHistory, cache: RollupSnapshot | None, uuids: list[str], since: float
    ) -> list[tuple[float, float]]:
        """Slowdown spans from the rollup part of the window (a minute with any slowdown bit set)."""
        spans: list[tuple[float, float]] = []
        cut = node.oldest_time if node.oldest_time is not None else np.inf
        for uuid in uuids:
            earlier = cache.earlier(uuid, "throttle_mask") if cache else None
            if earlier is None:
                continue
            earlier = clip(earlier, since, cut)
            spans += slowdown_regions(earlier.t - 30.0, earlier.max.astype(np.float64))
        return spans

    def stop(self) -> None:
        """Stop the redraw timer and the history reads for good (a read in progress finishes first)."""
        self._stopped = True
        self._timer.stop()
        self._rollup.stop()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._stopped:
            self._dirty = True  # data may have arrived while hidden
            self._timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        self._timer.stop()
        super().hideEvent(event)

    # -- drawing ----

    def mark_dirty(self, node: str) -> None:
        """New data for ``node`` arrived; the next timer tick repaints if it is the one on screen."""
        if self._selection is not None and self._selection.node == node:
            self._dirty = True

    def _on_timer_timeout(self) -> None:
        # Repaint when the selected node has new data, or at least every MAX_IDLE_FRAME_S so the time axis keeps
        # moving for a node that stopped answering. Painting the plots is the costliest thing the GUI thread
        # does; whole frames at 4 Hz while data arrives at 1 Hz only burnt CPU and stretched event-loop stalls.
        if not self.isVisible():
            return
        now = time.monotonic()
        if self._pending:
            self._apply_next_group()
        elif self._dirty or now - self._last_frame >= MAX_IDLE_FRAME_S:
            self._start_staggered_frame()

    def _selected_gpus(self, node: NodeHistory) -> list[tuple[int, str]]:
        sel = self._selection
        assert sel is not None
        pairs = sorted((node.gpu_index.get(uuid, 0), uuid) for uuid in node.gpus)
        if sel.gpu_uuid is not None:
            pairs = [p for p in pairs if p[1] == sel.gpu_uuid]
        return pairs[:MAX_GPU_CURVES]

    def _draw_bands(
        self, node: NodeHistory | None, cache: RollupSnapshot | None, gpu: tuple[int, str] | None, since: float
    ) -> None:
        oldest = node.oldest_time if node is not None else None
        key = (
            None if cache is None else cache.read_at,
            gpu,
            math.floor(since / 60),
            None if oldest is None else math.floor(oldest / 60),
        )
        if key == self._band_key:
            return  # unchanged since the last frame: the bands change a minute at a time
        self._band_key = key
        for metric, (low, high, fill) in self.bands.items():
            earlier = cache.earlier(gpu[1], metric) if cache is not None and gpu is not None else None
            if earlier is not None:
                earlier = clip(earlier, since, oldest if oldest is not None else np.inf)
            if earlier is None or not len(earlier.t) or gpu is None:
                low.setData([], [])
                high.setData([], [])
                continue
            color = QColor(gpu_color(gpu[0]))
            color.setAlpha(40)
            fill.setBrush(pg.mkBrush(color))
            low.setData(earlier.t, earlier.min)
            high.setData(earlier.t, earlier.max)

    def redraw(self) -> None:
        """Compute and apply a whole frame now (selection and window changes, tests)."""
        self._dirty = False
        self._last_frame = time.monotonic()
        self._pending = self._draw()
        while self._pending:
            self._apply_next_group()

    def _start_staggered_frame(self) -> None:
        """Compute a frame and apply its first plot; the timer applies the others on its next ticks.

        Painting all seven plots in one go stalled the event loop for 60-80 ms on this 2-core machine, two plots
        a tick still 35-40 ms (the scene's dirty-item pass, then the paint); one plot a tick at 8 Hz spreads the
        same work over seven ticks, under 900 ms behind the data, which arrives once a second.
        """
        self._dirty = False
        self._last_frame = time.monotonic()
        self._pending = self._draw()
        self._apply_next_group()

    def _apply_next_group(self) -> None:
        if self._pending:
            for apply in self._pending.pop(0):
                apply()

    def _draw(self) -> list[list[Callable[[], object]]]:
        """Compute a frame; return the item updates in one group per plot."""
        plots = (self.util, self.power, self.temp, self.cooling, self.fans, self.flow, self.profiling)
        groups: list[list[Callable[[], object]]] = [[] for _plot in plots]
        util, power, temp, cooling, fans, flow, profiling = groups
        sel = self._selection
        node = self._history.nodes.get(sel.node) if sel is not None else None
        if sel is None or node is None:
            for plot in plots:
                for curve in plot.curves:
                    curve.setData([], [])
                plot.shade([])
            self._draw_bands(None, None, None, 0.0)
            return []
        now = time.time()
        since = now - self.window_s
        gpus = self._selected_gpus(node)
        cache = self._rollup.snapshot_for(sel, self.window_s, [u for _i, u in gpus], node.oldest_time, now)
        masks: list[np.ndarray] = []
        t_axis: np.ndarray | None = None
        legend = []
        first_xy: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # the first GPU's lines, reused for its threshold
        for slot in range(MAX_GPU_CURVES):
            if slot < len(gpus):
                index, uuid = gpus[slot]
                for curve, metric, group in (
                    (self.util_curves[slot], "utilization_pct", util),
                    (self.power_curves[slot], "power_w", power),
                    (self.temp_curves[slot], "temperature_c", temp),
                    (self.hbm_curves[slot], "memory_temperature_c", temp),
                ):
                    t, y = self._gpu_xy(node, cache, uuid, metric, since)
                    if slot == 0:
                        first_xy[metric] = t, y
                    group.append(partial(curve.setPen, _pen(gpu_color(index), curve.opts["pen"].style())))
                    group.append(partial(curve.setData, *peak_decimate(t, y, self.max_points)))
                mask_series = node.gpu_series(uuid, "throttle_mask", since)
                t_axis = mask_series.t
                masks.append(mask_series.y)
                legend.append(f'<span style="color:{gpu_color(index)}">■ GPU {index}</span>')
            else:
                for curves, group in (
                    (self.util_curves, util),
                    (self.power_curves, power),
                    (self.temp_curves, temp),
                    (self.hbm_curves, temp),
                ):
                    group.append(partial(curves[slot].setData, [], []))
        self.legend.setText(
            "&nbsp;&nbsp;".join(legend)
            + "&nbsp;&nbsp;<span style='color:#c62828'>▒ slowdown</span>"
            + "&nbsp;&nbsp;<span style='color:#555'>HBM dotted · dashed: power limit, slowdown threshold, "
            + "rated flow</span>"
        )
        if gpus:
            first = gpus[0][1]
            power.append(partial(self.limit_curve.setData, *self._gpu_xy(node, cache, first, "power_limit_w", since)))
            temp_t, temp_y = first_xy["temperature_c"]
            _margin_t, margin_y = self._gpu_xy(node, cache, first, "thermal_margin_c", since)
            if len(margin_y) == len(temp_y):
                temp.append(partial(self.threshold_curve.setData, temp_t, temp_y + margin_y))
            else:  # the rollup held one metric and not the other: draw the ring part only
                ring = node.gpu_series(first, "temperature_c", since)
                margin = node.gpu_series(first, "thermal_margin_c", since)
                temp.append(partial(self.threshold_curve.setData, ring.t, ring.y + margin.y))
        else:
            power.append(partial(self.limit_curve.setData, [], []))
            temp.append(partial(self.threshold_curve.setData, [], []))
        if t_axis is not None and masks:
            combined = np.zeros(len(t_axis), dtype=np.int64)
            for m in masks:
                combined |= np.nan_to_num(m, nan=0.0).astype(np.int64)
            spans = slowdown_regions(t_axis, combined.astype(np.float64))
        else:
            spans = []
        spans = sorted(self._rollup_slowdowns(node, cache, [u for _i, u in gpus], since) + spans)
        util.append(partial(self._draw_bands, node, cache, gpus[0] if gpus else None, since))
        util.append(partial(self.util.shade, spans))
        power.append(partial(self.power.shade, spans))
        temp.append(partial(self.temp.shade, spans))
        for metric, curve in self.cooling_curves.items():
            xy = peak_decimate(*self._chassis_xy(node, cache, metric, since), self.max_points)
            cooling.append(partial(curve.setData, *xy))
        any_fan = False
        for i, curve in enumerate(self.fan_curves):
            fan_t, fan_y = peak_decimate(*self._chassis_xy(node, cache, f"fan{i}_rpm", since), self.max_points)
            any_fan = any_fan or bool(np.isfinite(fan_y).any())
            fans.append(partial(curve.setData, fan_t, fan_y))
        flow_t, flow_y = self._chassis_xy(node, cache, "coolant_flow_lpm", since)
        flow.append(partial(self.flow_curve.setData, flow_t, flow_y))
        rated = np.full(len(flow_t), self.rated_flow_lpm, dtype=np.float32)
        flow.append(partial(self.rated_flow_curve.setData, flow_t, rated))
        mid = now - self.window_s / 2
        has_flow = bool(np.isfinite(flow_y).any())
        flow.append(partial(self.flow.note_if_empty, has_flow, "no coolant loop reported by this node", mid))
        fans.append(partial(self.fans.note_if_empty, any_fan, "no chassis fans reported by this node", mid))
        any_profiling = False
        for metric, curve in self.profiling_curves.items():
            prof_t, prof_y = mean_of_gpus(
                partial(self._gpu_xy, node, cache, metric=metric, since=since), [u for _i, u in gpus]
            )
            any_profiling = any_profiling or bool(np.isfinite(prof_y).any())
            profiling.append(partial(curve.setData, *peak_decimate(prof_t, prof_y, self.max_points)))
        profiling.append(partial(self.profiling.note_if_empty, any_profiling, NO_PROFILING, mid))
        for plot, group in zip(plots, groups, strict=True):
            group.append(partial(plot.item.setXRange, since, now, padding=0))
        return groups


def mean_of_gpus(
    series_of: Callable[[str], tuple[np.ndarray, np.ndarray]], uuids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """A metric averaged over the GPUs shown (those whose series line up with the first's)."""
    if not uuids:
        return np.empty(0), np.empty(0, dtype=np.float32)
    t, first = series_of(uuids[0])
    rows = [first]
    for uuid in uuids[1:]:
        _t, y = series_of(uuid)
        if len(y) == len(first):
            rows.append(y)
    if len(rows) == 1:
        return t, first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an instant no GPU reported is a gap, on purpose
        return t, np.nanmean(np.vstack(rows), axis=0)


__all__ = ["ChartPanel", "Selection", "peak_decimate", "slowdown_regions"]
