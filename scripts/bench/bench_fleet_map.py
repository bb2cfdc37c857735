"""Fleet map at scale: repaint and refresh() times for 2,000 nodes x 8 GPUs (16,000 GPUs) in 4 sites.

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/bench/bench_fleet_map.py [--repeats N] [--png PATH]

Builds a FleetState from a synthetic Fleet (the FleetState is fed PollResults with NodeSamples, as the poller
would), shows the map at 1600x1000 offscreen and prints the median and p95 of:
  - render: ``widget.render()`` of the whole map (combo box, legend and tiles) into a 1600x1000 QImage;
  - repaint: ``canvas.repaint()`` (a synchronous paintEvent into the offscreen backing store), the cost of every
    expose/hover/click repaint;
  - grab: ``widget.grab()`` of the whole map (canvas, combo box and legend) into a pixmap;
  - refresh: ``widget.refresh()``, the 1 Hz work (read the FleetState, colour 16,000 tiles, compose the image);
  - metric change: recolouring from the arrays already read.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.live.fleet_state import FleetState
from console.samples.results import PollResult
from console.samples.schema import GpuSample, NodeSample

if TYPE_CHECKING:
    from widgets.live.fleet_map import FleetMapWidget

SITES = (("aws-use1", "aws"), ("gcp-usc1", "gcp"), ("coreweave-las1", "coreweave"), ("onprem-fra", "onprem"))


def synthetic_state(nodes: int, gpus_per_node: int, seed: int = 7) -> FleetState:
    rng = random.Random(seed)
    spec = (SourceSpec(SourceKind.DCGM, url="http://127.0.0.1:9400/metrics"),)
    sites = tuple(Site(name, provider) for name, provider in SITES)
    fleet_nodes = tuple(
        Node(f"{SITES[i % len(SITES)][0]}-n{i:05d}", SITES[i % len(SITES)][0], spec) for i in range(nodes)
    )
    fleet_nodes = tuple(sorted(fleet_nodes, key=lambda n: n.site))
    state = FleetState(Fleet(sites, fleet_nodes))
    now = time.time()
    for number, node in enumerate(fleet_nodes):
        load = rng.random()
        gpus = tuple(
            GpuSample(
                index=index,
                uuid=f"GPU-{number:05d}-{index}",
                name="NVIDIA H100 80GB HBM3",
                utilization_pct=None if rng.random() < 0.01 else min(100.0, load * 100 + rng.uniform(-5, 5)),
                power_w=80 + load * 600 + rng.uniform(-20, 20),
                power_limit_w=700.0,
                temperature_c=32 + load * 45 + rng.uniform(-3, 6) + (14 if rng.random() < 0.003 else 0),
                thermal_margin_c=None,
                memory_used_mib=load * 80_000,
                memory_total_mib=81_559.0,
            )
            for index in range(gpus_per_node)
        )
        gpus = tuple(
            GpuSample(**{**{f: getattr(g, f) for f in GpuSample.__slots__}, "thermal_margin_c": 87 - g.temperature_c})
            if g.temperature_c is not None
            else g
            for g in gpus
        )
        sample = NodeSample(node=node.name, site=node.site, source="dcgm", time=now, gpus=gpus)
        state.apply_result(PollResult(node.name, node.site, now, 0.01, sample))
        if number % 157 == 5:  # answered once, then stopped answering: its last values stay, hatched
            state.apply_result(PollResult(node.name, node.site, now, 3.0, None))
        elif number % 211 == 9:  # no result for a while: stale
            state.nodes[node.name].last_result_mono = time.monotonic() - 60.0
    return state


def timed(action: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def summary(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{label:<34} median {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ordered)})"


def fill_rect_per_tile(widget: FleetMapWidget) -> Callable[[], None]:
    """The other way to paint: one QPainter.fillRect per tile with a cached QColor per colour (for comparison).

    Rectangles and colours are prepared outside the timed call, so only the painting is measured."""
    from PySide6.QtCore import QRect
    from PySide6.QtGui import QColor, QImage, QPainter

    from widgets.live.fleet_map import slot_colours

    canvas = widget.canvas
    arrays, layout = canvas.arrays, canvas.layout_
    assert arrays is not None
    assert layout is not None
    cache: dict[int, QColor] = {}
    tiles = []
    for slot, argb in enumerate(slot_colours(arrays, canvas.colour_metric).tolist()):
        colour = cache.get(argb) or cache.setdefault(argb, QColor.fromRgb(argb))
        tiles.append((QRect(*layout.slot_box(*divmod(slot, arrays.slots_per_node))), colour))
    target = QImage(canvas.size(), QImage.Format.Format_RGB32)

    def paint() -> None:
        painter = QPainter(target)
        fill = painter.fillRect
        for rect, colour in tiles:
            fill(rect, colour)
        painter.end()

    return paint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--png", type=Path, default=None, help="save a screenshot of the map")
    args = parser.parse_args()

    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QApplication

    from console.live.fleet_map import MapMetric
    from widgets.live.fleet_map import BACKGROUND, FleetMapWidget

    app = QApplication.instance() or QApplication([])
    build_start = time.perf_counter()
    state = synthetic_state(args.nodes, args.gpus_per_node)
    build_ms = (time.perf_counter() - build_start) * 1000
    widget = FleetMapWidget(state)
    widget.resize(1600, 1000)
    widget.show()
    app.processEvents()
    widget.refresh()
    app.processEvents()
    layout = widget.canvas.layout_
    assert layout is not None
    print(
        f"fleet: {len(state.nodes):,} nodes, {state.gpu_count:,} GPUs, {widget.canvas.tile_count:,} tiles; "
        f"canvas {widget.canvas.width()}x{widget.canvas.height()}, tile {layout.tile} px, "
        f"{layout.columns} node blocks per row, fits: {not layout.overflows} (state built in {build_ms:.0f} ms)"
    )
    for _ in range(5):
        widget.canvas.repaint()
    target = QImage(widget.size(), QImage.Format.Format_RGB32)

    def render_whole() -> None:
        widget.render(target)

    print(summary("render() whole map into a QImage", timed(render_whole, args.repeats)))
    # the figure is only honest if render() really painted the tiles: check the last GPU's tile
    last_node = list(state.nodes.values())[-1]
    last_uuid = next(iter(last_node.gpus))
    tile = widget.canvas.tile_rect(last_node.name, last_uuid)
    assert tile is not None
    painted = target.pixelColor(widget.canvas.mapTo(widget, tile.center()))
    expected = widget.canvas.grab().toImage().pixelColor(tile.center())
    assert painted == expected, (painted.name(), expected.name())
    assert painted.name() != BACKGROUND
    print(summary("repaint() of the tile canvas", timed(widget.canvas.repaint, args.repeats)))
    print(summary("grab() whole map widget", timed(widget.grab, args.repeats)))
    print(summary("refresh() (read + colour + compose)", timed(widget.refresh, max(10, args.repeats // 2))))

    metrics = list(MapMetric)
    turn = iter(range(10**9))
    print(
        summary(
            "metric change (recolour + compose)",
            timed(lambda: widget.set_metric(metrics[next(turn) % len(metrics)]), max(10, args.repeats // 2)),
        )
    )
    widget.set_metric(MapMetric.TEMPERATURE)
    print(summary("alternative: fillRect per tile", timed(fill_rect_per_tile(widget), 20)))
    start = time.perf_counter()
    widget.canvas._relayout()
    print(f"{'relayout (on resize/shape change)':<34} {(time.perf_counter() - start) * 1000:7.2f} ms")
    if args.png is not None:
        widget.grab().save(str(args.png))
        print(f"screenshot: {args.png}")
    widget.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
