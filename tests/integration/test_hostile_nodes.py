"""A fleet of misbehaving dcgm-exporters beside healthy ones, polled by the real FleetMonitor, incident engine and
SQLite store: every bad node gets a clear reason, dead ones an incident, healthy ones keep their rate, and
nothing grows without bound. One shared run (about 8 s of polling) feeds every test in this module."""

from __future__ import annotations

import math
import os
import queue
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.history.rings import MAX_GPUS_PER_NODE, FleetHistory
from console.incidents.engine import IncidentEngine
from console.incidents.model import Incident
from console.incidents.rules import load_rules
from console.live.fleet_state import FleetState, NodeStatus
from console.live.monitor import FleetMonitor, MonitorUpdate
from console.store import IncidentFilter, IncidentStore
from tests.helpers.hostile_server import HTML_MODEL, ODD_MODEL, HostileServer, refused_url

SITE = "hostile"
INTERVAL_S = 0.25
TIMEOUT_S = 1.0
RUN_S = 8.0
HEALTHY = ("good-0", "good-1", "good-2")
# node -> path on the hostile server (None: a port nothing listens on)
BAD_PATHS: dict[str, str | None] = {
    "hang": "/hang",
    "refused": None,
    "http-500": "/status/500",
    "http-503": "/status/503",
    "trickle": "/trickle",
    "huge": "/huge",
    "huge-declared": "/huge-declared",
    "malformed": "/malformed",
    "truncated": "/truncated",
    "truncated-body": "/truncated-body",
    "nan": "/nan",
    "duplicate": "/duplicate",
    "missing": "/missing",
    "backwards": "/backwards",
    "labels": "/labels",
    "future": "/future",
    "past": "/past",
    "churn": "/churn",
}
DEAD = ("hang", "refused", "http-500", "http-503", "trickle", "huge", "huge-declared", "malformed", "truncated")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Run:
    fleet: Fleet
    server: HostileServer
    state: FleetState
    history: FleetHistory
    engine: IncidentEngine
    db_path: Path
    polls: Counter[str] = field(default_factory=Counter)
    incidents: dict[str, Incident] = field(default_factory=dict)
    rss_start: int = 0
    rss_peak: int = 0
    stored: list[tuple[str, str, str]] = field(default_factory=list)  # (node, rule, detail)

    def opened(self, node: str, rule: str) -> list[Incident]:
        return [i for i in self.incidents.values() if i.context.node == node and i.rule == rule]


def _fleet(server: HostileServer) -> Fleet:
    def dcgm(url: str) -> tuple[SourceSpec, ...]:
        return (SourceSpec(kind=SourceKind.DCGM, url=url),)

    nodes = [Node(name, SITE, dcgm(server.url(f"/good/{name}"))) for name in HEALTHY]
    for name, path in BAD_PATHS.items():
        url = refused_url() if path is None else server.url(path)
        # churn polls fast so it shows more UUIDs than the per-node cap within the run
        nodes.append(Node(name, SITE, dcgm(url), interval_s=0.04 if name == "churn" else None))
    return Fleet(
        sites=(Site(SITE, "onprem", interval_s=INTERVAL_S, timeout_s=TIMEOUT_S),),
        nodes=tuple(nodes),
        origin="hostile test fleet",
        rule_overrides=((f"site:{SITE}", "node_unreachable", "for_s", 1.0),),
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    db_path = tmp_path_factory.mktemp("hostile") / "incidents.sqlite3"
    with HostileServer() as server:
        fleet = _fleet(server)
        engine = IncidentEngine(load_rules(overrides=fleet.rule_overrides), fleet)
        result = Run(fleet, server, FleetState(fleet), FleetHistory(capacity=600), engine, db_path)
        updates: queue.Queue[MonitorUpdate] = queue.Queue()
        store = IncidentStore.open(db_path)
        monitor = FleetMonitor(fleet, engine=engine, store=store, on_update=updates.put, seed=7)
        result.rss_start = result.rss_peak = _rss_bytes()
        monitor.start()
        try:
            end = time.monotonic() + RUN_S
            # this thread plays the GUI: it alone applies updates to the state and the history
            while time.monotonic() < end:
                try:
                    update = updates.get(timeout=0.05)
                except queue.Empty:
                    continue
                _apply(result, update)
                result.rss_peak = max(result.rss_peak, _rss_bytes())
        finally:
            monitor.stop()
        while not updates.empty():
            _apply(result, updates.get_nowait())
        store.flush()
        store.close()
        with sqlite3.connect(db_path) as db:
            result.stored = db.execute("SELECT node, rule, detail FROM incidents").fetchall()
        yield result


def _apply(run: Run, update: MonitorUpdate) -> None:
    if update.result is not None:
        run.polls[update.result.node] += 1
        if update.result.sample is not None:
            run.history.record(update.result.sample)
        else:
            run.history.record_gap(update.result.node, update.result.started)
        run.state.apply_result(update.result)
    for change in update.changes:
        run.incidents[change.incident.id] = change.incident
    run.state.apply_changes(update.changes)


# --- each misbehaviour gets a clear reason ---------------------------------------------------------------------

REASONS = {
    "hang": "no answer within 1 s",
    "refused": "cannot connect",
    "http-500": "HTTP 500",
    "http-503": "HTTP 503",
    "trickle": "no answer within 1 s",
    "huge": "payload larger than the 16 MiB cap",
    "huge-declared": "payload larger than the 16 MiB cap",
    "malformed": "line 3: value 'hot' is not a number",
    "truncated": "label set is not closed",
    "truncated-body": "truncated or corrupt response body",
    "future": "years ahead of this console's clock",
    "past": "years old",
}


@pytest.mark.parametrize("node", sorted(REASONS))
def test_each_failing_node_is_unreachable_with_a_reason_that_names_the_fault(run: Run, node: str) -> None:
    state = run.state.nodes[node]
    assert state.last_error, f"{node}: no reason recorded"
    assert REASONS[node] in state.last_error, f"{node}: {state.last_error!r}"
    assert run.state.node_status(node) is NodeStatus.UNREACHABLE
    assert state.sample is None and not state.gpus


def test_dead_nodes_get_a_node_unreachable_incident_in_the_engine_and_in_sqlite(run: Run) -> None:
    stored = {(node, rule) for node, rule, _detail in run.stored}
    for node in DEAD:
        assert run.opened(node, "node_unreachable"), f"{node}: no node_unreachable incident"
        assert (node, "node_unreachable") in stored, f"{node}: incident not in the database"
    detail = next(d for n, r, d in run.stored if n == "http-503" and r == "node_unreachable")
    assert "HTTP 503" in detail, "the incident carries the last error"
    for node in (*HEALTHY, "nan", "duplicate", "labels", "backwards"):
        assert not run.opened(node, "node_unreachable"), f"{node} answered, yet was declared unreachable"


def test_healthy_nodes_keep_their_poll_rate_beside_hanging_and_huge_nodes(run: Run) -> None:
    expected = RUN_S / INTERVAL_S  # 32; the first poll is spread over one interval
    for node in HEALTHY:
        assert run.polls[node] >= 0.85 * expected - 1, f"{node}: {run.polls[node]} polls, expected ~{expected:.0f}"
        assert run.state.node_status(node) is NodeStatus.OK
        assert len(run.state.nodes[node].gpus) == 8
    # a failing node backs off instead of hammering the exporter
    assert run.polls["refused"] < run.polls["good-0"] / 2


def test_oversize_payload_is_cut_at_the_cap_and_memory_does_not_jump(run: Run) -> None:
    requests = run.server.hits["/huge"]
    assert requests >= 1
    per_request = run.server.huge_bytes_sent / requests
    assert per_request < 48 * 2**20, f"the client read {per_request / 2**20:.0f} MiB of a 200 MiB body"
    growth = run.rss_peak - run.rss_start
    assert growth < 120 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB while polling hostile nodes"


def test_nan_and_infinity_become_none(run: Run) -> None:
    gpus = run.state.nodes["nan"].gpus.values()
    assert len(gpus) == 2
    for gpu in gpus:
        assert gpu.sample.temperature_c is None  # NaN
        assert gpu.sample.power_w is None  # +Inf
        assert gpu.sample.utilization_pct is None  # -Inf
        assert gpu.sample.memory_used_mib == 61234.0  # the rest of the GPU is still read
    assert run.state.node_status("nan") is NodeStatus.OK


def test_a_duplicate_uuid_keeps_the_lowest_gpu_index_and_never_mixes_two_gpus(run: Run) -> None:
    gpus = sorted(run.state.nodes["duplicate"].gpus.values(), key=lambda g: g.index)
    assert [g.index for g in gpus] == [0, 2]
    first = gpus[0].sample
    # GPU 0's own values, not GPU 1's (90 degC, 100 W) that claimed the same UUID
    assert (first.temperature_c, first.power_w, first.utilization_pct) == (61.0, 612.5, 87.0)


def test_a_gpu_that_vanishes_between_polls_opens_gpu_lost(run: Run) -> None:
    lost = run.opened("missing", "gpu_lost")
    assert lost and all(i.context.gpu_index == 2 for i in lost)
    assert run.state.node_status("missing") in (NodeStatus.OK, NodeStatus.CRITICAL)


def test_counters_that_go_backwards_are_resets_not_negative_rates(run: Run) -> None:
    assert run.polls["backwards"] >= 10
    assert run.opened("backwards", "energy_counter_reset"), "a falling energy counter is reported as a reset"
    for incident in run.incidents.values():
        if incident.context.node != "backwards":
            continue
        assert incident.peak is None or (math.isfinite(incident.peak) and incident.peak >= 0), incident
        # a fall is never read as errors piling up
        assert "increase" not in incident.rule and "rate" not in incident.rule, incident.rule
    gpu = next(iter(run.state.nodes["backwards"].gpus.values()))
    assert gpu.sample.energy_j is not None and gpu.sample.energy_j > 0


def test_labels_with_html_quotes_and_newlines_arrive_as_literal_text(run: Run) -> None:
    names = sorted(g.sample.name or "" for g in run.state.nodes["labels"].gpus.values())
    assert names == sorted([HTML_MODEL, ODD_MODEL])
    serials = {g.sample.serial for g in run.state.nodes["labels"].gpus.values()}
    assert "<script>alert(1)</script>" in serials


def test_history_and_state_stay_bounded_when_a_node_churns_uuids(run: Run) -> None:
    assert run.polls["churn"] > MAX_GPUS_PER_NODE + 10, "the churn node must outrun the cap to prove it"
    assert len(run.history.node("churn").gpus) <= MAX_GPUS_PER_NODE
    assert len(run.state.nodes["churn"].gpus) <= MAX_GPUS_PER_NODE
    # every node's rings are fixed-size: a few MiB for the whole hostile fleet
    assert run.history.nbytes < 64 * 2**20


def test_engine_state_stays_bounded_when_a_node_churns_uuids(run: Run) -> None:
    node = run.engine._nodes["churn"]  # the engine's own memory: no public view of it exists
    assert len(node.memory.gpus) <= MAX_GPUS_PER_NODE
    assert len(node.memory.missing) <= MAX_GPUS_PER_NODE


def test_nothing_crashed_and_every_node_was_polled(run: Run) -> None:
    for node in run.fleet.nodes:
        assert run.polls[node.name] >= 2, f"{node.name} polled {run.polls[node.name]} times"
        assert "internal" not in run.state.nodes[node.name].last_error, run.state.nodes[node.name].last_error
    open_ids = {i.id for i in run.incidents.values()}
    with IncidentStore.open(run.db_path) as store:
        assert store.count(IncidentFilter()) == len(open_ids)
