"""The poller: schedule, hard timeouts, never two polls of one node in flight, backoff, merged sources."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import defaultdict

import pytest

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.polling.poller import Poller, backoff_delay
from console.samples.results import PollFailure, PollResult, SourceError
from console.samples.schema import ChassisSample, EventKind, GpuEvent, GpuSample, NodeSample
from console.sources.base import SourceContext


class ScriptedSource:
    """A Source whose behaviour per node is chosen by the test: answer, hang, fail."""

    in_flight: dict[str, int] = defaultdict(int)
    max_in_flight: dict[str, int] = defaultdict(int)

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.mode = ctx.spec.option("mode", "ok")
        self.polls = 0
        self.kept: NodeSample | None = None

    async def poll(self) -> NodeSample:
        name = self.ctx.node.name
        self.in_flight[name] += 1
        self.max_in_flight[name] = max(self.max_in_flight[name], self.in_flight[name])
        try:
            if self.mode == "hang":
                await asyncio.sleep(60)
            if self.mode == "refuse":
                raise SourceError(PollFailure.UNREACHABLE, "connection refused")
            if self.mode == "repeat":  # an exporter that collects every third poll: the same object in between
                self.polls += 1
                if self.ctx.spec.option("fail_at", "") == str(self.polls):
                    raise SourceError(PollFailure.UNREACHABLE, "connection reset")
                if self.kept is None or self.polls % 3 == 1:
                    xid = GpuEvent(EventKind.XID, time.time(), f"GPU-{name}", 0, 79, "fell off the bus")
                    gpu = GpuSample(0, f"GPU-{name}", power_w=100.0 + self.polls)
                    self.kept = NodeSample(name, self.ctx.site.name, "scripted", time.time(), (gpu,), events=(xid,))
                return self.kept
            if self.mode == "chassis":
                return NodeSample(name, self.ctx.site.name, "scripted", time.time(), (), ChassisSample(inlet_c=24.0))
            return NodeSample(
                name,
                self.ctx.site.name,
                "scripted",
                time.time(),
                (GpuSample(0, f"GPU-{name}", power_w=100.0),),
            )
        finally:
            self.in_flight[name] -= 1

    async def aclose(self) -> None:
        return None


def _fleet(modes: dict[str, tuple[str, ...]], interval: float = 0.1, timeout: float = 0.3) -> Fleet:
    site = Site("lab", "onprem", interval_s=interval, timeout_s=timeout)
    nodes = tuple(
        Node(name, "lab", tuple(SourceSpec(SourceKind.DEMO, options=(("mode", m),)) for m in node_modes))
        for name, node_modes in modes.items()
    )
    return Fleet((site,), nodes)


def _run(fleet: Fleet, seconds: float) -> list[PollResult]:
    results: list[PollResult] = []
    lock = threading.Lock()

    def sink(result: PollResult) -> None:
        with lock:
            results.append(result)

    ScriptedSource.in_flight.clear()
    ScriptedSource.max_in_flight.clear()
    poller = Poller(fleet, ScriptedSource, sink, seed=1)
    poller.start()
    time.sleep(seconds)
    poller.stop()
    assert not poller.running
    return results


def test_healthy_nodes_keep_their_rate_while_a_hung_node_times_out() -> None:
    fleet = _fleet({"a": ("ok",), "b": ("ok",), "hung": ("hang",)}, interval=0.1, timeout=0.3)
    results = _run(fleet, 2.0)
    by_node: dict[str, list[PollResult]] = defaultdict(list)
    for r in results:
        by_node[r.node].append(r)
    # ~20 polls at 10 Hz in 2 s; allow start-up spread and a loaded 2-core machine
    assert len(by_node["a"]) >= 14
    assert len(by_node["b"]) >= 14
    hung = by_node["hung"]
    assert hung, "the hung node must report its timeouts"
    assert all(r.sample is None and r.failures[0].failure == PollFailure.TIMEOUT for r in hung)
    assert "no answer within 0.3 s" in hung[0].reason
    # backoff: a failing node is polled far less often than a healthy one
    assert len(hung) <= 5
    assert all(ScriptedSource.max_in_flight[n] == 1 for n in ("a", "b", "hung"))


def test_refused_node_reports_reason_and_backs_off() -> None:
    results = _run(_fleet({"dead": ("refuse",)}, interval=0.05, timeout=0.2), 1.5)
    assert results
    assert all(not r.ok for r in results)
    assert results[0].failures[0].failure == PollFailure.UNREACHABLE
    assert "connection refused" in results[0].reason
    # without backoff 1.5 s at 20 Hz would be ~30 polls
    assert len(results) <= 8


def test_sources_of_one_node_are_merged_into_one_sample() -> None:
    results = _run(_fleet({"n": ("ok", "chassis")}, interval=0.1), 0.6)
    merged = [r for r in results if r.ok]
    assert merged
    sample = merged[-1].sample
    assert sample is not None
    assert sample.gpus[0].power_w == 100.0
    assert sample.chassis.inlet_c == 24.0
    assert sample.source == "scripted+scripted"


def test_partial_failure_keeps_the_sample_and_the_reason() -> None:
    results = _run(_fleet({"n": ("ok", "refuse")}, interval=0.1), 0.6)
    assert results
    last = results[-1]
    assert last.sample is not None and not last.ok
    assert "connection refused" in last.reason


def test_a_broken_source_spec_fails_that_node_only() -> None:
    def maker(ctx: SourceContext) -> ScriptedSource:
        if ctx.node.name == "broken":
            raise ValueError("url missing")
        return ScriptedSource(ctx)

    results: list[PollResult] = []
    poller = Poller(_fleet({"ok": ("ok",), "broken": ("ok",)}), maker, results.append, seed=2)
    poller.start()
    time.sleep(0.6)
    poller.stop()
    assert any(r.node == "ok" and r.ok for r in results)
    broken = [r for r in results if r.node == "broken"]
    assert broken and "cannot create source: url missing" in broken[0].reason


@pytest.mark.parametrize("failures", [0, 1, 3, 20])
def test_backoff_grows_and_is_capped(failures: int) -> None:
    rng = random.Random(0)
    delay = backoff_delay(1.0, failures, rng)
    if failures == 0:
        assert delay == 1.0
    else:
        assert 0.8 * min(2**failures, 60) <= delay <= 1.2 * min(2**failures, 60)


def test_a_repeated_measurement_is_marked_not_fresh_and_carries_the_previous_sample() -> None:
    results = _run(_fleet({"n1": ("repeat",)}, interval=0.05), 0.8)
    assert len(results) >= 9
    assert [r.fresh for r in results[:6]] == [True, False, False, True, False, False]
    for previous, result in itertools.pairwise(results):
        if not result.fresh:
            assert result.sample is previous.sample, "a repeat is the previous poll's sample, nothing new to chart"
            assert result.ok


def test_a_repeating_source_beside_a_fresh_one_does_not_report_its_events_twice() -> None:
    results = _run(_fleet({"n1": ("repeat", "chassis")}, interval=0.05), 0.8)
    assert len(results) >= 6 and all(r.fresh and r.ok for r in results)
    events = [len(r.sample.events) for r in results[:6] if r.sample is not None]
    assert events == [1, 0, 0, 1, 0, 0], "the Xid comes once per new measurement"
    assert all(r.sample is not None and r.sample.chassis.inlet_c == 24.0 for r in results)


def test_the_same_measurement_after_a_failed_poll_is_not_news() -> None:
    """Charts must not get a point back in time: the exporter's old values after an outage are not fresh."""
    site = Site("lab", "onprem", interval_s=0.05, timeout_s=0.3)
    spec = SourceSpec(SourceKind.DEMO, options=(("mode", "repeat"), ("fail_at", "2")))
    results: list[PollResult] = []
    poller = Poller(Fleet((site,), (Node("n1", "lab", (spec,)),)), ScriptedSource, results.append, seed=1)
    poller.start()
    time.sleep(0.5)
    poller.stop()
    assert [r.sample is not None for r in results[:4]] == [True, False, True, True]
    assert [r.fresh for r in results[:5]] == [True, True, False, True, False]
    assert results[2].sample is not None and results[2].sample.events == (), "its Xid was reported before the outage"


def test_a_large_fleet_spreads_its_first_polls_over_a_start_ramp() -> None:
    # 400 nodes: a 1.2 s ramp (3 ms per node) instead of all first polls, each a full parse, inside one 0.5 s interval.
    fleet = _fleet({f"n{i:03d}": ("ok",) for i in range(400)}, interval=0.5, timeout=0.3)
    results = _run(fleet, 2.0)
    first: dict[str, float] = {}
    for r in results:
        first[r.node] = min(first.get(r.node, r.started), r.started)
    assert len(first) == 400, "every node is polled within the ramp"
    start = min(first.values())
    offsets = sorted(t - start for t in first.values())
    assert offsets[-1] >= 0.9, f"first polls end {offsets[-1]:.2f} s after the first one: no ramp"
    early = sum(1 for t in offsets if t < 0.3)
    assert early <= 0.4 * len(offsets), f"{early} of 400 first polls in the first 0.3 s: not evenly spread"
