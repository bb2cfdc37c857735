"""A Prometheus-read site as one collector: requests per second Prometheus gets, node incidents and failed polls,
for a working site and for one whose credentials are refused (HTTP 401), side by side from the same run.

    .venv/bin/python scripts/bench/bench_prometheus_collector.py [--nodes 156] [--duration 20] [--delay 0]

Debian's real Prometheus (behind basic auth) scrapes one exporter stand-in serving --nodes 8-GPU nodes; the
real FleetMonitor and incident engine poll it through a counting proxy (tests/helpers/prometheus_server.py) with
the site's default settings (interval 1 s, timeout 3 s). --delay makes each request that much slower (a read
slower than the interval).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import queue
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.incidents.engine import IncidentEngine
from console.incidents.model import ChangeKind
from console.incidents.rules import load_rules
from console.live.monitor import FleetMonitor, MonitorUpdate
from tests.helpers.builders import ExporterStandIn
from tests.helpers.hostile_server import realistic_sample, render
from tests.helpers.prometheus_server import PrometheusProxy, running_prometheus


def payload(nodes: list[str]) -> str:
    out = []
    for node in nodes:
        sample = realistic_sample(node)
        gpus = tuple(dataclasses.replace(g, uuid=f"GPU-{node}-{g.index}") for g in sample.gpus)
        out.append(render(dataclasses.replace(sample, gpus=gpus)))
    return "\n".join(out)


def run(proxy: PrometheusProxy, nodes: list[str], seconds: float) -> dict[str, float]:
    spec = SourceSpec(SourceKind.PROMETHEUS, url=proxy.url)
    fleet = Fleet(sites=(Site("ord1", "onprem"),), nodes=tuple(Node(n, "ord1", (spec,)) for n in nodes))
    updates: queue.Queue[MonitorUpdate] = queue.Queue()
    monitor = FleetMonitor(fleet, engine=IncidentEngine(load_rules(), fleet), store=None, on_update=updates.put)
    opened: dict[str, int] = {}
    requests_before = proxy.requests
    started = time.monotonic()
    monitor.start()
    try:
        while time.monotonic() - started < seconds:
            with contextlib.suppress(queue.Empty):
                for change in updates.get(timeout=0.1).changes:
                    if change.kind is ChangeKind.OPENED:
                        opened[change.incident.rule] = opened.get(change.incident.rule, 0) + 1
    finally:
        monitor.stop()
    elapsed = time.monotonic() - started
    stats = monitor.poller.stats
    collector = next(iter(stats.collectors.values()), None)
    return {
        "requests_per_s": (proxy.requests - requests_before) / elapsed,
        "node_polls": stats.polls,
        "failed_node_polls": stats.failed_polls,
        "repeated_node_polls": stats.repeated_polls,
        "reads": collector.reads if collector else 0,
        "period_s": collector.period_s if collector else 0.0,
        **{f"opened_{rule}": count for rule, count in sorted(opened.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=156)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each request")
    args = parser.parse_args()
    nodes = [f"n{i:04d}" for i in range(args.nodes)]
    with (
        tempfile.TemporaryDirectory() as work,
        ExporterStandIn(payload(nodes)) as exporter,
        running_prometheus({"dcgm": f"127.0.0.1:{exporter.port}"}, Path(work), scrape_interval_s=5.0) as url,
        PrometheusProxy(url) as proxy,
    ):
        for label, authorized in (("working", True), ("HTTP 401", False)):
            proxy.reset(delay_s=args.delay, authorized=authorized)
            figures = run(proxy, nodes, args.duration)
            print(
                f"{label:>9}: "
                + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
