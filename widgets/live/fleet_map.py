"""The fleet map: every GPU of the fleet as a small tile, grouped by site and node, coloured by one metric.

Why one image and not thousands of items: at 16,000 GPUs, widgets or graphics items cost seconds to build and
tens of milliseconds to paint. Here ``refresh()`` reads the ``FleetState`` once into numpy arrays (one entry per
tile *slot*: node-major, GPUs by index), turns values into colours with a lookup table, and writes every pixel of
one ``QImage`` through a pixel -> slot index built with the layout. ``paintEvent`` draws that image and a few
labels. Hit testing is arithmetic on the grid. The layout (and its pixel index) is rebuilt only when the fleet
shape (nodes per site, GPU slots per node) or the widget size changes. The reading and the layout are numbers,
not pixels, and live Qt-free in console/live/fleet_map.py.
"""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from PySide6.QtCore import QEvent, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFontMetrics,
    QHelpEvent,
    QImage,
    QLinearGradient,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QResizeEvent,
    QShowEvent,
    QStaticText,
)
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QToolTip, QVBoxLayout, QWidget

from console.incidents.model import Severity
from console.live.fleet_map import (
    MARGIN,
    METRIC_SCALES,
    OFFLINE_CODES,
    STATUS_ORDER,
    FleetArrays,
    MapLayout,
    MapMetric,
    MetricScale,
    SiteBand,
    compute_layout,
    read_fleet,
    scale_for,
)
from console.live.fleet_state import FleetState, NodeState, NodeStatus
from widgets.common.style import SEVERITY_COLORS, STATUS_COLORS, fmt, plain_tooltip

# --- colours (the metrics, their scales and the layout are Qt-free: console/live/fleet_map.py) ------------------

BUCKETS = 64

BACKGROUND = "#fafafa"
NO_DATA = "#c4c4c4"  # a GPU without a value for the chosen metric: never drawn as 0
EMPTY_SLOT = "#ececec"  # a node with fewer GPUs than the fleet's widest node, or not polled yet
OFFLINE_FILL = "#dedede"  # tiles of an unreachable or stale node (last values no longer trusted)
NO_INCIDENT = "#c8e6c9"
SELECTED = "#000000"


U32 = npt.NDArray[np.uint32]


def _argb(color: str) -> int:
    return QColor(color).rgb() & 0xFFFFFFFF  # 0xAARRGGBB, the layout of Format_RGB32 pixels


@functools.cache
def gradient_lut(stops: tuple[str, ...], buckets: int = BUCKETS) -> U32:
    """``buckets`` colours evenly interpolated through ``stops`` (RGB, linear)."""
    rgb = np.array([[QColor(c).red(), QColor(c).green(), QColor(c).blue()] for c in stops], dtype=float)
    at = np.linspace(0.0, len(stops) - 1, buckets)
    channels = [np.interp(at, np.arange(len(stops)), rgb[:, i]).round().astype(np.uint32) for i in range(3)]
    return np.uint32(0xFF000000) | (channels[0] << 16) | (channels[1] << 8) | channels[2]


_STATUS_ARGB = np.array([_argb(STATUS_COLORS[status]) for status in STATUS_ORDER], dtype=np.uint32)
_SEVERITY_LUT = np.array(
    [_argb(NO_INCIDENT)] + [_argb(SEVERITY_COLORS[s]) for s in Severity],
    dtype=np.uint32,
)


# --- reading the fleet ------------------------------------------------------------------------------------------


def slot_colours(arrays: FleetArrays, metric: MapMetric) -> U32:
    """One ARGB colour per slot for ``metric``; offline nodes greyed, empty slots faint."""
    if metric is MapMetric.SEVERITY:
        colours = _SEVERITY_LUT[arrays.severity]
    else:
        scale = scale_for(metric, arrays)
        values = arrays.values[metric]
        missing = np.isnan(values)
        position = (np.nan_to_num(values) - scale.low) / (scale.high - scale.low)
        buckets = np.clip(np.rint(position * (BUCKETS - 1)), 0, BUCKETS - 1).astype(np.intp)
        colours = gradient_lut(scale.stops)[buckets]
        colours[missing] = _argb(NO_DATA)
    offline = np.isin(arrays.node_status, OFFLINE_CODES)
    colours[np.repeat(offline, arrays.slots_per_node)] = _argb(OFFLINE_FILL)
    colours[~arrays.has_gpu] = _argb(EMPTY_SLOT)
    return colours


# --- layout -----------------------------------------------------------------------------------------------------

# --- the painted canvas -----------------------------------------------------------------------------------------


literal_tooltip = plain_tooltip  # the name this module's callers know


class FleetMapCanvas(QWidget):
    """Paints every tile from one image; hover gives a tooltip, a click picks a GPU."""

    gpu_clicked = Signal(str, str)
    node_clicked = Signal(str)

    def __init__(self, state: FleetState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self.colour_metric = MapMetric.TEMPERATURE
        self.arrays: FleetArrays | None = None
        self.layout_: MapLayout | None = None
        self._pixel_slots: npt.NDArray[np.int32] | None = None
        self._offline_marks: npt.NDArray[np.int64] | None = None
        self._pixels: U32 | None = None  # the image's memory, reused while the layout stays
        self._image: QImage | None = None
        self._headers: list[tuple[QPoint, QStaticText]] = []
        self._selected: tuple[str, str] | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 200)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def sizeHint(self) -> QSize:
        return QSize(1200, 800)

    # -- data ------------------------------------------------------------------------------------------------

    def reload(self, statuses: Mapping[str, NodeStatus] | None = None) -> None:
        arrays = read_fleet(self._state, statuses)
        shape_changed = self.arrays is None or (arrays.sites, arrays.slots_per_node) != (
            self.arrays.sites,
            self.arrays.slots_per_node,
        )
        self.arrays = arrays
        if shape_changed:
            self._relayout()
        self._compose()

    def set_metric(self, metric: MapMetric) -> None:
        self.colour_metric = metric
        if self.arrays is not None:
            self._compose()

    def _relayout(self) -> None:
        if self.arrays is None:
            return
        self.layout_ = compute_layout(self.arrays, self.width(), self.height())
        self._pixel_slots = self.layout_.pixel_slots(len(self.arrays.uuids))
        self._offline_marks = self.layout_.offline_marks()

    def _compose(self) -> None:
        """Colour every pixel of the tile image from the slot colours; draw offline nodes' hatch and outline."""
        arrays, layout, pixel_slots = self.arrays, self.layout_, self._pixel_slots
        if arrays is None or layout is None or pixel_slots is None:
            return
        lut = np.append(slot_colours(arrays, self.colour_metric), np.uint32(_argb(BACKGROUND)))
        if self._pixels is None or self._pixels.shape != pixel_slots.shape:
            self._pixels = np.empty(pixel_slots.shape, dtype=np.uint32)
        pixels = self._pixels
        np.take(lut, pixel_slots, out=pixels)  # 2-3x faster than lut[pixel_slots]
        offline = np.flatnonzero(np.isin(arrays.node_status, OFFLINE_CODES))
        if offline.size and self._offline_marks is not None:
            marks = self._offline_marks[offline]
            colours = _STATUS_ARGB[arrays.node_status[offline]]
            drawn = marks >= 0
            pixels.reshape(-1)[marks[drawn]] = np.broadcast_to(colours[:, None], marks.shape)[drawn]
        height, width = pixels.shape
        image = QImage(pixels.data, width, height, width * 4, QImage.Format.Format_RGB32)
        self._image = image
        self._headers = [(QPoint(MARGIN, band.header_top + 2), self._header_text(band)) for band in layout.bands]
        self.update()

    def _header_text(self, band: SiteBand) -> QStaticText:
        assert self.arrays is not None
        statuses = self.arrays.node_status[band.first_node : band.first_node + band.node_count]
        counts = np.bincount(statuses, minlength=len(STATUS_ORDER))
        per_node = self.arrays.slots_per_node
        gpus = int(
            self.arrays.has_gpu[band.first_node * per_node : (band.first_node + band.node_count) * per_node].sum()
        )
        parts = [
            f"<span style='color:{STATUS_COLORS[status]}'>{int(counts[code]):,} {status}</span>"
            for code, status in enumerate(STATUS_ORDER)
            if counts[code]
        ]
        # site and provider names come from the inventory file: escaped, never markup
        text = (
            f"<b>{html.escape(band.name)}</b> · {html.escape(band.provider)} · {gpus:,} GPUs · "
            f"{band.node_count:,} nodes: {' · '.join(parts) or 'none'}"
        )
        static = QStaticText(text)
        static.setTextFormat(Qt.TextFormat.RichText)
        static.setTextWidth(max(1, self.width() - 2 * MARGIN))  # one line; -1 would wrap rich text early
        static.prepare(font=self.font())
        return static

    # -- geometry for callers and tests ----------------------------------------------------------------------

    def _locate(self, node: str, uuid: str | None = None) -> tuple[int, int] | None:
        if self.arrays is None or node not in self.arrays.nodes:
            return None
        position = self.arrays.nodes.index(node)
        if uuid is None:
            return position, -1
        per = self.arrays.slots_per_node
        row = self.arrays.uuids[position * per : (position + 1) * per]
        return (position, row.index(uuid)) if uuid in row else None

    def tile_rect(self, node: str, uuid: str) -> QRect | None:
        found = self._locate(node, uuid)
        if found is None or self.layout_ is None:
            return None
        return QRect(*self.layout_.slot_box(*found))

    def node_rect(self, node: str) -> QRect | None:
        found = self._locate(node)
        if found is None or self.layout_ is None:
            return None
        return QRect(*self.layout_.node_box(found[0]))

    @property
    def tile_count(self) -> int:
        """GPUs drawn as tiles (every GPU the FleetState knows, when the map fits)."""
        return self.arrays.gpu_count if self.arrays is not None else 0

    def target_at(self, pos: QPoint) -> tuple[str, str | None] | None:
        """(node, GPU UUID or None for an empty slot) under a point of this widget."""
        if self.arrays is None or self.layout_ is None:
            return None
        found = self.layout_.hit(pos.x(), pos.y())
        if found is None:
            return None
        node, slot = found
        return self.arrays.nodes[node], self.arrays.uuids[node * self.arrays.slots_per_node + slot]

    def tooltip_text(self, pos: QPoint) -> str | None:
        """Plain text describing the GPU (or node) under ``pos``; None where there is nothing."""
        target = self.target_at(pos)
        if target is None:
            return None
        node = self._state.nodes[target[0]]
        status = self._state.node_status(node.name)
        gpu = node.gpus.get(target[1]) if target[1] else None
        lines = []
        if gpu is not None:
            s = gpu.sample
            lines += [
                f"{node.name} · GPU {gpu.index} · {s.name or 'unknown model'}",
                f"UUID {gpu.uuid}",
                f"Temperature {fmt(s.temperature_c, 0, '°C')} · thermal margin {fmt(s.thermal_margin_c, 0, '°C')}",
                f"Power {fmt(s.power_w, 0, 'W')} of {fmt(s.power_limit_w, 0, 'W')} limit",
                f"Utilization {fmt(s.utilization_pct, 0, '%')} · memory "
                f"{fmt(s.memory_used_mib, 0, 'MiB')} of {fmt(s.memory_total_mib, 0, 'MiB')}",
            ]
            if s.lost:
                lines.append("GPU LOST: fell off the bus")
            if gpu.worst_severity is not None:
                lines.append(f"Worst open incident: {gpu.worst_severity.label}")
        else:
            lines.append(f"{node.name} · no GPU reported in this slot")
        lines.append(f"Node {status} · site {node.site} ({node.provider})")
        if status in (NodeStatus.UNREACHABLE, NodeStatus.STALE):
            lines.append(f"Values above are the last received{self._age(node)}")
        if node.last_error:
            lines.append(f"Last error: {node.last_error}")
        return "\n".join(lines)

    @staticmethod
    def _age(node: NodeState) -> str:
        if node.last_success is None:
            return " (none yet)"
        return f", {max(0.0, time.time() - node.last_success):.0f} s ago"

    def select(self, node: str, uuid: str) -> None:
        self._selected = (node, uuid)
        self.update()

    # -- Qt events -------------------------------------------------------------------------------------------

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.arrays is not None:
            self._relayout()
            self._compose()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(event.rect(), QColor(BACKGROUND))
        if self._image is not None:
            painter.drawImage(0, 0, self._image)
        painter.setFont(self.font())
        for point, text in self._headers:
            painter.drawStaticText(point, text)
        layout = self.layout_
        if self._selected is not None and layout is not None:
            rect = self.tile_rect(*self._selected)
            if rect is not None:
                painter.setPen(QPen(QColor(SELECTED), 2))
                painter.drawRect(rect.adjusted(-1, -1, 1, 1))
        if layout is not None and layout.overflows:
            painter.setPen(QColor("#b00020"))
            painter.drawText(
                self.rect().adjusted(MARGIN, 0, -MARGIN, -4),
                int(Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignRight),
                "Not every node fits: enlarge the window to see the whole fleet",
            )
        painter.end()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            text = self.tooltip_text(event.pos())
            if text is None:
                QToolTip.hideText()
                event.ignore()
            else:
                QToolTip.showText(event.globalPos(), plain_tooltip(text), self)
            return True
        return super().event(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mouseReleaseEvent(event)
        target = self.target_at(event.position().toPoint())
        if target is None:
            return None
        node, uuid = target
        if uuid is None:
            self.node_clicked.emit(node)
        else:
            self.select(node, uuid)
            self.gpu_clicked.emit(node, uuid)
        return None


# --- legend and the widget --------------------------------------------------------------------------------------


class ColourLegend(QWidget):
    """The colour scale of the chosen metric with its unit and range, plus the no-data and offline keys."""

    BAR_W = 180

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scale = METRIC_SCALES[MapMetric.TEMPERATURE]
        self.colour_metric = MapMetric.TEMPERATURE
        self.setMinimumHeight(26)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_scale(self, metric: MapMetric, scale: MetricScale) -> None:
        if (metric, scale) != (self.colour_metric, self.scale):
            self.colour_metric, self.scale = metric, scale
            self.update()

    def sizeHint(self) -> QSize:
        return QSize(720, 26)

    def paintEvent(self, _event: QPaintEvent) -> None:
        painter = QPainter(self)
        metrics = QFontMetrics(self.font())
        x, mid = 0, self.height() // 2
        box_top = mid - 6

        def swatch(colour: str, label: str, hatch: str | None = None) -> None:
            nonlocal x
            painter.fillRect(x, box_top, 12, 12, QColor(colour))
            if hatch is not None:
                painter.fillRect(x, box_top, 12, 12, QBrush(QColor(hatch), Qt.BrushStyle.BDiagPattern))
                painter.setPen(QColor(hatch))
                painter.drawRect(x, box_top, 11, 11)
            painter.setPen(self.palette().windowText().color())
            painter.drawText(x + 16, mid + metrics.ascent() // 2 - 1, label)
            x += 16 + metrics.horizontalAdvance(label) + 14

        if self.colour_metric is MapMetric.SEVERITY:
            swatch(NO_INCIDENT, "no open incident")
            for severity in Severity:
                swatch(SEVERITY_COLORS[severity], severity.label)
        else:
            scale = self.scale
            low, high = scale.low, scale.high
            # values beyond either end take the end colour; say so where they can occur
            label_low = f"{'≤' if low > 0 or scale.low_is_bad else ''}{low:g} {scale.unit}"
            painter.setPen(self.palette().windowText().color())
            painter.drawText(x, mid + metrics.ascent() // 2 - 1, label_low)
            x += metrics.horizontalAdvance(label_low) + 6
            gradient = QLinearGradient(x, 0, x + self.BAR_W, 0)
            for i, stop in enumerate(scale.stops):
                gradient.setColorAt(i / (len(scale.stops) - 1), QColor(stop))
            painter.fillRect(x, box_top, self.BAR_W, 12, QBrush(gradient))
            x += self.BAR_W + 6
            label_high = f"≥{high:g} {scale.unit}" if scale.unit != "%" else f"{high:g} %"
            painter.drawText(x, mid + metrics.ascent() // 2 - 1, label_high)
            x += metrics.horizontalAdvance(label_high) + 18
            swatch(NO_DATA, "no data")
        swatch(OFFLINE_FILL, "unreachable", STATUS_COLORS[NodeStatus.UNREACHABLE])
        swatch(OFFLINE_FILL, "stale", STATUS_COLORS[NodeStatus.STALE])
        painter.end()


class FleetMapWidget(QWidget):
    """Every GPU of the fleet as a tile, by site and node, coloured by a chosen metric.

    The main window calls ``refresh()`` about once a second; a hidden map defers the work until it is shown.
    """

    gpu_selected = Signal(str, str)  # node name, GPU UUID: drill into the node's charts
    node_selected = Signal(str)  # a node block without a GPU in the clicked slot

    def __init__(self, state: FleetState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fleet map")
        self.state = state
        self.canvas = FleetMapCanvas(state)
        self.legend = ColourLegend()
        self.metric_combo = QComboBox()
        for metric in MapMetric:
            self.metric_combo.addItem(METRIC_SCALES[metric].label, metric)
        self.metric_combo.currentIndexChanged.connect(self._on_metric_combo_changed)
        header = QHBoxLayout()
        header.setContentsMargins(MARGIN, 4, MARGIN, 0)
        header.addWidget(QLabel("Colour by"))
        header.addWidget(self.metric_combo)
        header.addSpacing(16)
        header.addWidget(self.legend, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.canvas, 1)
        self.canvas.gpu_clicked.connect(self.gpu_selected)
        self.canvas.node_clicked.connect(self.node_selected)
        self._stale = True

    @property
    def colour_metric(self) -> MapMetric:
        return self.canvas.colour_metric

    def set_metric(self, metric: MapMetric) -> None:
        self.metric_combo.setCurrentIndex(list(MapMetric).index(metric))

    def refresh(self, statuses: Mapping[str, NodeStatus] | None = None) -> None:
        """Re-read the FleetState and repaint once. Skipped while hidden (done on show instead).

        ``statuses``: node -> status computed in this same tick by the caller, so the map need not walk every
        node's GPUs again."""
        if not self.isVisible():
            self._stale = True
            return
        self._stale = False
        self.canvas.reload(statuses)
        self.legend.set_scale(self.colour_metric, scale_for(self.colour_metric, self.canvas.arrays))

    def tooltip_text(self, pos: QPoint) -> str | None:
        """The tooltip for a point in the canvas's coordinates."""
        return self.canvas.tooltip_text(pos)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def _on_metric_combo_changed(self, index: int) -> None:
        metric = list(MapMetric)[index]
        self.canvas.set_metric(metric)
        self.legend.set_scale(metric, scale_for(metric, self.canvas.arrays))
