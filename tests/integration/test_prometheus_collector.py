"""A Prometheus-read site is one collector (issue 19), against Debian's real Prometheus on loopback scraping two
exporter stand-ins (one job per site), polled by the real FleetMonitor and incident engine through a real proxy
that counts, delays or un-authorizes the requests: two sites on one Prometheus read only their own series; a value
already seen is a repeat stamped with Prometheus' own sample time; a read slower than the interval opens no node
incident and shows its real refresh period; a 401 is one collector_down per site and at most one read per
interval, never one "unreachable" per node, which only a node Prometheus has no series for is; shutting down
mid-read leaves no task pending."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.incidents.engine import IncidentEngine
from console.incidents.model import ChangeKind, IncidentChange
from console.incidents.rules import load_rules
from console.live.monitor import FleetMonitor, MonitorUpdate
from console.polling.poller import CollectorState
from console.samples.results import PollFailure, PollResult
from console.sources.prometheus import METRIC_GROUPS, PrometheusSiteReader
from tests.helpers.builders import ExporterStandIn
from tests.helpers.hostile_server import realistic_sample, render
from tests.helpers.prometheus_server import PrometheusProxy, running_prometheus

pytestmark = pytest.mark.slow

SITES = {"ord1": ("dcgm-a", ("a1", "a2")), "iad1": ("dcgm-b", ("b1", "b2"))}
NODES = {node for _job, nodes in SITES.values() for node in nodes}
INTERVAL_S = 0.25
TIMEOUT_S = 0.5
SCRAPE_S = 1.0
QUERIES_PER_READ = len(METRIC_GROUPS) + 1  # one per metric group, and the scrape times


def _payload(nodes: tuple[str, ...]) -> str:
    samples = []
    for node in nodes:
        sample = realistic_sample(node)
        gpus = tuple(dataclasses.replace(g, uuid=f"GPU-{node}-{g.index}") for g in sample.gpus)
        samples.append(dataclasses.replace(sample, gpus=gpus))
    return "\n".join(render(s) for s in samples)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProxy]:
    with contextlib.ExitStack() as stack:
        jobs = {}
        for job, nodes in SITES.values():
            exporter = stack.enter_context(ExporterStandIn(_payload(nodes)))
            jobs[job] = f"127.0.0.1:{exporter.port}"
        url = stack.enter_context(running_prometheus(jobs, tmp_path_factory.mktemp("prom"), scrape_interval_s=SCRAPE_S))
        yield stack.enter_context(PrometheusProxy(url))


def _fleet(url: str, extra: tuple[str, ...] = ()) -> Fleet:
    spec = SourceSpec(SourceKind.PROMETHEUS, url=url)
    sites = tuple(
        Site(name, "onprem", interval_s=INTERVAL_S, timeout_s=TIMEOUT_S, selector=f'{{job="{job}"}}')
        for name, (job, _nodes) in SITES.items()
    )
    nodes = tuple(Node(node, name, (spec,)) for name, (_job, members) in SITES.items() for node in members)
    nodes += tuple(Node(node, "ord1", (spec,)) for node in extra)
    overrides = tuple(
        (f"site:{name}", rule, "for_s", 0.5)
        for name in SITES
        for rule in ("node_unreachable", "collector_down", "collector_slow")
    )
    return Fleet(sites=sites, nodes=nodes, rule_overrides=overrides)


@dataclass
class Run:
    results: list[PollResult] = field(default_factory=list)
    changes: list[IncidentChange] = field(default_factory=list)
    collectors: dict[str, CollectorState] = field(default_factory=dict)
    node_polls: int = 0

    def opened(self) -> list[IncidentChange]:
        return [c for c in self.changes if c.kind is ChangeKind.OPENED]

    def of(self, node: str) -> list[PollResult]:
        return [r for r in self.results if r.node == node]


def _poll(proxy: PrometheusProxy, seconds: float, extra: tuple[str, ...] = ()) -> Run:
    fleet = _fleet(proxy.url, extra)
    run = Run()
    updates: queue.Queue[MonitorUpdate] = queue.Queue()
    monitor = FleetMonitor(
        fleet, engine=IncidentEngine(load_rules(overrides=fleet.rule_overrides), fleet), store=None,
        on_update=updates.put, seed=5, tick_s=0.1,
    )  # fmt: skip
    started = time.monotonic()
    monitor.start()

    def drain(timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            update = updates.get(timeout=timeout)
            run.changes.extend(update.changes)
            if update.result is not None:
                run.results.append(update.result)

    try:
        while time.monotonic() - started < seconds:
            drain(0.05)
    finally:
        monitor.stop()
        while not updates.empty():
            drain(0)
    run.collectors = dict(monitor.poller.stats.collectors)
    run.node_polls = monitor.poller.stats.polls
    return run


def test_two_sites_on_one_prometheus_each_read_only_their_own_series(proxy: PrometheusProxy) -> None:
    async def read(selector: str) -> set[str]:
        async with aiohttp.ClientSession() as http:
            return set(await PrometheusSiteReader(proxy.url, http, site="x", selector=selector).read_site())

    proxy.reset()
    assert asyncio.run(read("")) == NODES  # without a selector a site reads the whole Prometheus
    for job, nodes in SITES.values():
        assert asyncio.run(read(f'{{job="{job}"}}')) == set(nodes)

    proxy.reset()
    run = _poll(proxy, 3.0)
    for node in NODES:
        assert any(r.sample is not None and len(r.sample.gpus) == 8 for r in run.of(node)), node
    queries = [q for q in proxy.queries if q]
    assert queries and all('job="dcgm-a"' in q or 'job="dcgm-b"' in q for q in queries)
    # 42 queries through a proxy on a busy machine may take half of a 0.25 s interval: slow, but nothing down
    assert {c.incident.rule for c in run.opened()} <= {"collector_slow"}


def test_a_value_already_seen_is_a_repeat_stamped_with_prometheus_own_time(proxy: PrometheusProxy) -> None:
    proxy.reset()
    run = _poll(proxy, 3.5)
    for node in NODES:
        answered = [r for r in run.of(node) if r.sample is not None]
        fresh = [r for r in answered if r.fresh]
        times = [r.sample.time for r in fresh if r.sample is not None]
        assert fresh and len(answered) > len(fresh)  # polled every 0.25 s, scraped every 1 s: mostly repeats
        assert times == sorted(set(times))  # each scrape charted once, in order: never a value twice
        assert all(r.sample is not None and r.sample.time < r.started for r in fresh)  # the scrape's time
        assert len(fresh) <= 3.5 / SCRAPE_S + 2


def test_a_read_slower_than_the_interval_opens_no_node_incident_and_shows_its_real_period(
    proxy: PrometheusProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.reset(delay_s=0.4)  # 42 queries, 8 at a time: a read of about 2 s against an interval of 0.25 s
    caplog.set_level(logging.WARNING)
    run = _poll(proxy, 5.0)  # stops in the middle of a read
    assert not [c for c in run.opened() if c.incident.context.node in NODES]
    for name in SITES:
        state = run.collectors[f"prometheus@{name}"]
        assert state.failed_reads == 0 and state.reads >= 1
        assert state.period_s == state.last_duration_s > INTERVAL_S * 4  # stretched, not failed
    assert {c.incident.rule for c in run.opened()} <= {"collector_slow"}
    assert "collector_slow" in {c.incident.rule for c in run.opened()}
    for node in NODES:
        results = run.of(node)
        assert any(r.sample is not None for r in results)
        assert all(f.failure is PollFailure.COLLECTOR for r in results for f in r.failures)  # waiting, not failed
    reads = sum(state.reads for state in run.collectors.values())
    # Reads never overlap (at most one in flight a site); each site's first read also backfills, once.
    assert proxy.requests <= (reads + 2) * QUERIES_PER_READ + len(SITES) * len(METRIC_GROUPS)
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]


def test_a_401_is_one_collector_incident_per_site_and_at_most_one_read_per_interval(
    proxy: PrometheusProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.reset(authorized=False)
    caplog.set_level(logging.WARNING)
    seconds = 4.0
    run = _poll(proxy, seconds)
    opened = run.opened()
    assert sorted((c.incident.rule, c.incident.context.node) for c in opened) == sorted(
        ("collector_down", f"prometheus@{name}") for name in SITES
    )
    assert "401" in opened[0].incident.detail or "auth" in opened[0].incident.detail
    reads_allowed = len(SITES) * (seconds / INTERVAL_S + 1)
    assert proxy.requests <= reads_allowed * QUERIES_PER_READ
    for name in SITES:
        assert run.collectors[f"prometheus@{name}"].failed_reads == run.collectors[f"prometheus@{name}"].reads
    assert all(r.sample is None for node in NODES for r in run.of(node))
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]


def test_a_node_prometheus_has_no_series_for_is_unreachable_while_the_collector_works(proxy: PrometheusProxy) -> None:
    proxy.reset()
    run = _poll(proxy, 3.0, extra=("a9",))  # in the inventory, never scraped: as if its target were down
    failures = [f for r in run.of("a9") for f in r.failures if f.failure is PollFailure.UNREACHABLE]
    assert failures and "no live DCGM series for 'a9'" in failures[0].reason
    opened = {(c.incident.rule, c.incident.context.node) for c in run.opened()}
    assert ("node_unreachable", "a9") in opened
    assert not {node for rule, node in opened if rule != "collector_slow"} - {"a9"}
