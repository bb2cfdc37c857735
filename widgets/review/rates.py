"""Incident rate per 1,000 GPU-hours by site, provider and kind: one bar chart each (pyqtgraph BarGraphItem).

Counts alone mislead across sites of different sizes; the rate divides by the GPU-hours the console observed
(the store's exposure table). A group with incidents but no recorded GPU-hours has no rate: it is named under
the chart instead of drawn as a zero bar.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from console.store import RateRow

GROUPS = ("site", "provider", "kind")
BAR_COLORS = {"site": "#1565c0", "provider": "#6a1b9a", "kind": "#ef6c00"}
MAX_BARS = 24  # the worst groups; a longer tail is summarised in the note
LABEL_CHARS = 22
LEFT_AXIS_PX = 150


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


class RatesPanel(QWidget):
    """Horizontal bars, the highest rate on top: group names (sites can be long) read along the left axis."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, background="w", foreground="#222")
        self.window_label = QLabel("")
        self.window_label.setTextFormat(Qt.TextFormat.PlainText)
        self.graphics = pg.GraphicsLayoutWidget()
        self.note = QLabel("")
        self.note.setTextFormat(Qt.TextFormat.PlainText)  # group names come from the inventory and nodes
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.window_label)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.note)
        self.plots: dict[str, pg.PlotItem] = {}
        self.bars: dict[str, pg.BarGraphItem] = {}
        self.value_labels: dict[str, list[pg.TextItem]] = {}
        self.rows: dict[str, list[RateRow]] = {}
        self._missing: dict[str, list[str]] = {}
        for col, group in enumerate(GROUPS):
            plot: pg.PlotItem = self.graphics.ci.addPlot(row=0, col=col)
            plot.setTitle(f"by {group}", size="10pt")
            plot.setLabel("bottom", "incidents per 1,000 GPU-hours")
            plot.setMenuEnabled(False)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            plot.showGrid(x=True, alpha=0.2)
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # "(x0.001)" beside a rate reads as a unit
            plot.getAxis("left").setWidth(LEFT_AXIS_PX)
            bars = pg.BarGraphItem(x0=[], y=[], width=[], height=0.6, brush=BAR_COLORS[group], pen=pg.mkPen(None))
            plot.addItem(bars)
            self.plots[group] = plot
            self.bars[group] = bars
            self.value_labels[group] = []
            self.rows[group] = []
            self._missing[group] = []

    def show_window(self, text: str) -> None:
        self.window_label.setText(text)

    def values(self, group: str) -> dict[str, float]:
        """What the bars of ``group`` show: name -> rate."""
        widths = self.bars[group].opts["width"]
        return {row.group: float(width) for row, width in zip(self.rows[group], widths, strict=True)}

    def show_rates(self, group: str, rows: Sequence[RateRow]) -> None:
        rated = [row for row in rows if row.per_1000_gpu_hours is not None][:MAX_BARS]
        self.rows[group] = rated
        self._missing[group] = [row.group for row in rows if row.per_1000_gpu_hours is None and row.incidents]
        rates = np.array([row.per_1000_gpu_hours for row in rated], dtype=np.float64)
        # The first (highest) row at the top.
        y = np.arange(len(rated), 0, -1, dtype=np.float64) - 1
        self.bars[group].setOpts(x0=np.zeros(len(rated)), y=y, width=rates, height=0.6)
        plot = self.plots[group]
        plot.getAxis("left").setTicks([[(float(pos), _short(row.group)) for pos, row in zip(y, rated, strict=True)]])
        top = float(rates.max()) if len(rates) else 0.0
        right = top * 1.15 if top > 0 else 1.0
        plot.setXRange(0, right, padding=0)
        plot.setYRange(-0.6, max(len(rated), 1) - 0.4, padding=0)
        labels = self.value_labels[group]
        while len(labels) < len(rated):
            label = pg.TextItem("", anchor=(0, 0.5))
            plot.addItem(label, ignoreBounds=True)
            labels.append(label)
        for i, label in enumerate(labels):
            if i >= len(rated):
                label.hide()
                continue
            row, rate = rated[i], float(rates[i])
            label.setText(f"{rate:.3g}  ({row.incidents:,} in {row.gpu_hours:,.0f} GPU-h)")
            # A long bar holds its label (white, right-aligned inside); a short one has it to its right.
            inside = rate > right * 0.5
            label.setAnchor((1, 0.5) if inside else (0, 0.5))
            label.setColor("#ffffff" if inside else "#222222")
            label.setPos(rate - right * 0.01 if inside else rate + right * 0.01, float(y[i]))
            label.show()
        self._update_note()

    def show_error(self, message: str) -> None:
        self.note.setText(f"Rates could not be read: {message}")

    def _update_note(self) -> None:
        parts = [
            f"No GPU-hours recorded (no rate) for {group}: {', '.join(names)}"
            for group, names in self._missing.items()
            if names
        ]
        rated = sum(len(rows) for rows in self.rows.values())
        if not rated and not parts:
            parts.append("No incidents or GPU-hours in this time range.")
        self.note.setText("\n".join(parts))
