"""Fleet panel at 1,000 dcgm nodes x 8 GPUs (8,000 GPUs) in 4 sites: GUI-thread cost of the tree.

Builds a FleetState the way the window does (an empty state first, then a PollResult for every node), a real
FleetPanel shown offscreen at 640x700, and prints the median (and max) of:
  - construction: ``FleetPanel(state)`` over the empty state (app start) and over the populated state;
  - first refresh: the refresh after every node's first sample arrived (the start-up stall);
  - refresh, all changed: every node gets a fresh PollResult with new values, then ``refresh()``;
  - refresh, reorder: as above, and 40 nodes swap between ok and unreachable (the worst-first order changes);
  - refresh, nothing changed: a tick where no node moved;
  - then its layout + paint events: the ``processEvents()`` right after a refresh (the view's delayed relayout
    after a reorder, and the repaint of what dataChanged marked dirty);
  - repaint: ``view.viewport().repaint()`` (a synchronous paint of the visible rows), with one node expanded.

Run: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/bench/bench_fleet_panel.py [--nodes 1000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PySide6.QtWidgets import QApplication

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.live.fleet_state import FleetState
from console.samples.results import PollResult
from console.samples.schema import NodeSample
from tests.helpers.builders import h100_dcgm_sample
from widgets.live.fleet_panel import FleetPanel

SITES = (("aws-use1", "aws"), ("gcp-usc1", "gcp"), ("coreweave-las1", "coreweave"), ("onprem-fra", "onprem"))
SPEC = (SourceSpec(SourceKind.DCGM, url="http://127.0.0.1:9400/metrics"),)


def build_fleet(nodes: int) -> Fleet:
    sites = tuple(Site(name, provider) for name, provider in SITES)
    members = tuple(Node(f"{SITES[i % 4][0]}-n{i:05d}", SITES[i % 4][0], SPEC) for i in range(nodes))
    return Fleet(sites, members)


class Feeder:
    """Fresh PollResults for every node: new values on each call, as a dcgm-exporter collecting every second."""

    def __init__(self, state: FleetState, gpus: int) -> None:
        self.state = state
        self.template = h100_dcgm_sample(gpus=gpus)
        self.tick = 0

    def feed_all(self, unreachable: frozenset[str] = frozenset()) -> None:
        self.tick += 1
        now = time.time()
        for number, (name, node) in enumerate(self.state.nodes.items()):
            if name in unreachable:
                self.state.apply_result(PollResult(name, node.site, now, 3.0, None))
                continue
            wobble = (number + self.tick) % 17
            gpus = tuple(
                replace(g, power_w=400.0 + wobble + g.index, temperature_c=50.0 + wobble, utilization_pct=80.0 + wobble)
                for g in self.template.gpus
            )
            sample = NodeSample(node=name, site=node.site, source="dcgm", time=now, gpus=gpus)
            latency = 0.005 + wobble / 1000
            self.state.apply_result(PollResult(name, node.site, now, latency, sample))


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f} ms, max {max(values):7.2f} ms  (n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qt_app, QApplication)

    fleet = build_fleet(args.nodes)
    print(f"{args.nodes} nodes x {args.gpus_per_node} GPUs, 4 sites; offscreen tree 640x700")

    empty_build: list[float] = []
    first_refresh: list[float] = []
    full_build: list[float] = []
    for _ in range(3):
        state = FleetState(fleet)
        panels: list[FleetPanel] = []
        empty_build.append(timed(lambda: panels.append(FleetPanel(state))))  # noqa: B023
        Feeder(state, args.gpus_per_node).feed_all()
        first_refresh.append(timed(panels[0].refresh))
        full_build.append(timed(lambda: panels.append(FleetPanel(state))))  # noqa: B023
        for panel in panels:
            panel.deleteLater()
        qt_app.processEvents()
    print(f"construction, empty state:        {summary(empty_build)}")
    print(f"first refresh (8,000 new GPUs):    {summary(first_refresh)}")
    print(f"construction, populated state:    {summary(full_build)}")

    state = FleetState(fleet)
    panel = FleetPanel(state)
    panel.resize(640, 700)
    panel.show()
    feeder = Feeder(state, args.gpus_per_node)
    feeder.feed_all()
    panel.refresh()
    view_model = panel.view.model()
    first_node = view_model.index(0, 0, view_model.index(0, 0))
    panel.view.expand(first_node)
    qt_app.processEvents()

    refresh_all: list[float] = []
    events_all: list[float] = []
    refresh_reorder: list[float] = []
    events_reorder: list[float] = []
    unchanged: list[float] = []
    repaint: list[float] = []
    names = list(state.nodes)
    for repeat in range(args.repeats):
        feeder.feed_all()
        refresh_all.append(timed(panel.refresh))
        events_all.append(timed(qt_app.processEvents))
        start = (repeat % 2) * 40
        feeder.feed_all(unreachable=frozenset(names[start : start + 40]))
        refresh_reorder.append(timed(panel.refresh))
        events_reorder.append(timed(qt_app.processEvents))
        unchanged.append(timed(panel.refresh))
        repaint.append(timed(panel.view.viewport().repaint))
    print(f"refresh, all {args.nodes} changed:      {summary(refresh_all)}")
    print(f"  then its layout + paint events: {summary(events_all)}")
    print(f"refresh, all changed + reorder:   {summary(refresh_reorder)}")
    print(f"  then its layout + paint events: {summary(events_reorder)}")
    print(f"refresh, nothing changed:         {summary(unchanged)}")
    print(f"repaint of the visible tree:      {summary(repaint)}")
    panel.close()
    panel.deleteLater()
    qt_app.processEvents()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
