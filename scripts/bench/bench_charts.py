"""Chart redraw cost: the real ChartPanel with a node of 8 GPUs and one hour of 1 Hz history, all GPUs overlaid.

Prints the number of live curves and points, then the median and p95 time of one frame (setData on every curve
plus painting the whole chart area into an image, as the redraw timer does), offscreen.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/bench/bench_charts.py [--frames 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication

from console.history.rings import FleetHistory
from console.samples.schema import ChassisSample, GpuSample, NodeSample, ThrottleReason
from widgets.live.charts import ChartPanel, Selection


def build_history(points: int) -> FleetHistory:
    history = FleetHistory(capacity=points)
    now = time.time()
    for i in range(points):
        t = now - points + i
        phase = (i % 600) / 600
        gpus = tuple(
            GpuSample(
                index=g,
                uuid=f"GPU-{g}",
                utilization_pct=95.0 * phase,
                power_w=80 + 600 * phase + g,
                power_limit_w=700.0,
                temperature_c=35 + 30 * phase + g * 0.5,
                memory_temperature_c=38 + 25 * phase,
                thermal_margin_c=50 - 30 * phase,
                throttle_reasons=(ThrottleReason.HW_SLOWDOWN,) if 300 < i % 900 < 330 else (),
            )
            for g in range(8)
        )
        chassis = ChassisSample(
            inlet_c=24.0, exhaust_c=40.0, coolant_supply_c=30.0, coolant_return_c=40.0, coolant_flow_lpm=30.0,
            fans_rpm=tuple(9000.0 + f for f in range(8)),
        )  # fmt: skip
        history.record(NodeSample("bench-node", "site", "bench", t, gpus, chassis))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--points", type=int, default=3600)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    panel = ChartPanel(build_history(args.points))
    panel.resize(1040, 760)
    panel.show()
    panel.set_window(3600.0)
    panel.select(Selection("bench-node"), "bench")
    app.processEvents()
    curves = [
        c for plot in (panel.util, panel.power, panel.temp, panel.cooling, panel.fans, panel.flow) for c in plot.curves
    ]
    live = [c for c in curves if c.getData()[1] is not None and len(c.getData()[1])]
    image = QImage(panel.graphics.size(), QImage.Format.Format_ARGB32_Premultiplied)
    times = []
    for _ in range(args.frames):
        start = time.perf_counter()
        panel.redraw()
        painter = QPainter(image)
        panel.graphics.render(painter)
        painter.end()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    points = sum(len(c.getData()[1]) for c in live)
    print(f"chart redraw: {len(live)} live curves, {points:,} points, 6 plots, {image.width()}x{image.height()} px")
    p95 = times[int(len(times) * 0.95)]
    print(f"  frame (setData + paint): median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms")
    panel.stop()
    bare_64_curves(app, args.frames)


def bare_64_curves(app: QApplication, frames: int) -> None:
    """The issue's reference load: 64 curves of 3,600 points (8 plots x 8 curves), with our chart settings,
    drawn raw and with the peak decimation the panel applies (about two points per pixel)."""
    import numpy as np
    import pyqtgraph as pg

    from widgets.live.charts import peak_decimate

    pg.setConfigOptions(antialias=False, background="w", foreground="#222")
    view = pg.GraphicsLayoutWidget()
    view.resize(1040, 760)
    t = time.time() - 3600 + np.arange(3600, dtype=np.float64)
    curves = []
    for p in range(8):
        plot = view.ci.addPlot(axisItems={"bottom": pg.DateAxisItem()})
        plot.setYRange(0, 100, padding=0)
        plot.enableAutoRange(x=False, y=False)
        plot.setXRange(t[0], t[-1], padding=0)
        curves += [plot.addItem(c) or c for c in (pg.PlotCurveItem(pen=pg.mkPen(width=1)) for _ in range(8))]
        if p % 2:
            view.ci.nextRow()
    view.show()
    app.processEvents()
    rng = np.random.default_rng(0)
    image = QImage(view.size(), QImage.Format.Format_ARGB32_Premultiplied)
    for label, decimate in (("raw", False), ("decimated", True)):
        times = []
        for _ in range(frames):
            ys = [np.cumsum(rng.normal(size=3600)).astype(np.float32) % 100 for _ in curves]
            start = time.perf_counter()
            for curve, y in zip(curves, ys, strict=True):
                curve.setData(*(peak_decimate(t, y, 1200) if decimate else (t, y)))
            painter = QPainter(image)
            view.render(painter)
            painter.end()
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        print(
            f"64 curves x 3,600 points, 8 plots, {label}: median {statistics.median(times):.1f} ms, "
            f"p95 {times[int(len(times) * 0.95)]:.1f} ms per frame"
        )


if __name__ == "__main__":
    main()
