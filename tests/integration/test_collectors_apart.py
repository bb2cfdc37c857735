"""Collectors apart from nodes, and incidents that survive a restart (issue 13), against real HTTP servers on
127.0.0.1 polled by the real FleetMonitor, engine and SQLite store: a BMC that hangs while dcgm-exporter answers
is a ``collector_down`` warning and nothing critical, an open leak stays open (marked unknown) while its BMC is
down, a node whose every collector is refused is one ``node_unreachable``, and a restart with the same database
carries on the open incidents under their ids; two consoles polling one exporter out of phase give the same
ids. One shared run feeds the first tests; the restart runs again."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.incidents.engine import IncidentEngine
from console.incidents.lifecycle import ID_WINDOW_S
from console.incidents.model import ChangeKind, Incident, IncidentChange, Severity, Status
from console.incidents.rules import load_rules
from console.live.monitor import FleetMonitor, MonitorUpdate
from console.store import IncidentFilter, IncidentStore
from tests.helpers.builders import ExporterStandIn
from tests.helpers.hostile_server import realistic_sample, refused_url, render
from tests.helpers.redfish_server import RedfishMockServer, ThreadedRedfishServer

CDU = Path(__file__).resolve().parents[1] / "fixtures" / "redfish" / "dmtf_mockups" / "mockups" / "public-cooling-unit"
LEAK = "/redfish/v1/Chassis/CDU/LeakDetectors/Overflow"
SITE = "lab"
INTERVAL_S = 0.25
TIMEOUT_S = 0.5
BMC_DELAY_S = 1.0  # beyond the timeout: a BMC that hangs (and short enough for the servers to stop promptly)
OVERRIDES = (
    (f"site:{SITE}", "collector_down", "for_s", 1.0),
    (f"site:{SITE}", "node_unreachable", "for_s", 1.0),
    (f"site:{SITE}", "leak_detected", "clear_s", 1.0),  # would clear at once if a silent BMC counted as "no leak"
)


@dataclass
class Run:
    changes: list[IncidentChange] = field(default_factory=list)

    def latest(self) -> dict[str, Incident]:
        out: dict[str, Incident] = {}
        for change in self.changes:
            out[change.incident.id] = change.incident
        return out

    def of(self, node: str, rule: str | None = None, kind: ChangeKind | None = None) -> list[IncidentChange]:
        return [
            c
            for c in self.changes
            if c.incident.context.node == node
            and (rule is None or c.incident.rule == rule)
            and (kind is None or c.kind is kind)
        ]


def _fleet(exporter: str, hanging_bmc: str, leaking_bmc: str) -> Fleet:
    def node(name: str, dcgm: str, bmc: str) -> Node:
        return Node(name, SITE, (SourceSpec(SourceKind.DCGM, url=dcgm), SourceSpec(SourceKind.REDFISH, url=bmc)))

    return Fleet(
        sites=(Site(SITE, "onprem", interval_s=INTERVAL_S, timeout_s=TIMEOUT_S),),
        nodes=(
            node("bmc-hang", exporter, hanging_bmc),
            node("bmc-leak", exporter, leaking_bmc),
            node("dark", refused_url(), refused_url().removesuffix("/metrics")),
        ),
        rule_overrides=OVERRIDES,
    )


def _poll(fleet: Fleet, db: Path, seconds: float, at: dict[float, object] | None = None) -> Run:
    """Poll ``fleet`` for ``seconds`` into ``db`` with a fresh engine (a start of the console)."""
    run = Run()
    updates: queue.Queue[MonitorUpdate] = queue.Queue()
    store = IncidentStore.open(db)
    engine = IncidentEngine(load_rules(overrides=fleet.rule_overrides), fleet)
    monitor = FleetMonitor(fleet, engine=engine, store=store, on_update=updates.put, seed=3)
    actions = sorted((at or {}).items(), key=lambda item: item[0])
    started = time.monotonic()
    monitor.start()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            while actions and actions[0][0] <= elapsed:
                action = actions.pop(0)[1]
                assert callable(action)
                action()
            with contextlib.suppress(queue.Empty):
                run.changes.extend(updates.get(timeout=0.05).changes)
    finally:
        monitor.stop()
        while not updates.empty():
            run.changes.extend(updates.get_nowait().changes)
        store.flush()
        store.close()
    return run


@dataclass
class Runs:
    first: Run
    second: Run
    db: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    db = tmp_path_factory.mktemp("collectors") / "incidents.sqlite3"
    hanging = RedfishMockServer(CDU)
    hanging.delay_s = BMC_DELAY_S
    leaking = RedfishMockServer(CDU)
    with (
        ExporterStandIn(render(realistic_sample("node"))) as exporter,
        ThreadedRedfishServer(hanging),
        ThreadedRedfishServer(leaking),
    ):
        leaking.set_value(LEAK, ["DetectorState"], "Critical")
        fleet = _fleet(exporter.url(), hanging.url, leaking.url)

        def bmc_hangs() -> None:
            leaking.delay_s = BMC_DELAY_S

        first = _poll(fleet, db, 5.0, {2.0: bmc_hangs})
        leaking.delay_s = 0.0  # back, still leaking
        time.sleep(BMC_DELAY_S)  # the requests of the first run have drained
        second = _poll(fleet, db, 2.5)
    return Runs(first, second, db)


def test_a_bmc_that_times_out_while_dcgm_answers_opens_collector_down_and_nothing_critical(runs: Runs) -> None:
    fired = runs.first.of("bmc-hang", kind=ChangeKind.OPENED)
    assert [(c.incident.rule, c.incident.code) for c in fired] == [("collector_down", "redfish")]
    incident = fired[0].incident
    assert incident.severity is Severity.WARNING and "redfish" in incident.title
    assert "no answer within 0.5 s" in incident.detail
    assert not [
        i for i in runs.first.latest().values() if i.context.node == "bmc-hang" and i.severity >= Severity.MAJOR
    ]


def test_an_open_leak_stays_open_and_unknown_while_its_bmc_hangs(runs: Runs) -> None:
    leak = runs.first.of("bmc-leak", "leak_detected")
    assert [c.kind for c in leak][:1] == [ChangeKind.OPENED]
    assert not [c for c in leak if c.kind is ChangeKind.RESOLVED], "the leak cleared while nobody could see it"
    unknown = [c for c in leak if c.note.startswith("condition unknown: no data from redfish since ")]
    assert unknown and unknown[0].note.endswith(" UTC")
    assert runs.first.of("bmc-leak", "collector_down", ChangeKind.OPENED)
    assert not runs.first.of("bmc-leak", "node_unreachable")


def test_a_node_whose_every_collector_is_refused_is_one_node_unreachable_incident(runs: Runs) -> None:
    fired = runs.first.of("dark", kind=ChangeKind.OPENED)
    assert [c.incident.rule for c in fired] == ["node_unreachable"]  # no collector_down, no stale beside it
    assert "cannot connect" in fired[0].incident.detail


def test_a_restart_with_the_same_database_resumes_open_incidents_with_the_same_ids(runs: Runs) -> None:
    with IncidentStore.open(runs.db) as store:
        stored = {i.id: i for i in store.iter_incidents(IncidentFilter())}
    first_open = {i.id: i for i in runs.first.latest().values() if i.status is not Status.RESOLVED}
    leak_id = next(i.id for i in first_open.values() if i.rule == "leak_detected")
    # the same faults carry on under their ids: no second incident for any of them
    assert not [c for c in runs.second.changes if c.kind is ChangeKind.OPENED and c.incident.rule == "leak_detected"]
    assert not runs.second.of("dark", "node_unreachable", ChangeKind.OPENED)
    assert not runs.second.of("bmc-hang", "collector_down", ChangeKind.OPENED)
    continued = {c.incident.id for c in runs.second.changes}
    assert leak_id in continued
    assert stored[leak_id].status is Status.OPEN and stored[leak_id].last_seen_at > first_open[leak_id].last_seen_at
    # the BMC of bmc-leak answers again: its collector_down resolves (clear_s after), or is still clearing
    assert len([i for i in stored.values() if i.rule == "leak_detected"]) == 1


def test_two_consoles_polling_one_exporter_with_an_offset_agree_on_ids_and_merge_adds_nothing(
    tmp_path: Path,
) -> None:
    sick = realistic_sample("node")
    gpus = list(sick.gpus)
    gpus[2] = dataclasses.replace(gpus[2], remapped_rows_pending=True)
    gpus[5] = dataclasses.replace(gpus[5], xid_last=79)
    with ExporterStandIn(render(dataclasses.replace(sick, gpus=tuple(gpus)))) as exporter:
        fleet = Fleet(
            sites=(Site(SITE, "onprem", interval_s=INTERVAL_S, timeout_s=TIMEOUT_S),),
            nodes=(Node("shared", SITE, (SourceSpec(SourceKind.DCGM, url=exporter.url()),)),),
        )
        mine, theirs = tmp_path / "mine.sqlite3", tmp_path / "theirs.sqlite3"
        results: dict[Path, Run] = {}
        first = threading.Thread(target=lambda: results.setdefault(mine, _poll(fleet, mine, 3.0)))
        first.start()
        time.sleep(1.3)  # the second console starts later and polls out of phase
        results[theirs] = _poll(fleet, theirs, 3.0)
        first.join(timeout=10.0)
    seen = {path: run.latest().values() for path, run in results.items()}
    assert sorted(i.rule for i in seen[mine]) == sorted(i.rule for i in seen[theirs]) == ["row_remap_pending", "xid"]
    windows = {math.floor(i.opened_at / ID_WINDOW_S) for run in seen.values() for i in run}
    split = len(windows) > 1  # a 10-minute boundary fell between the two first sightings (1.3 s in 600 s)
    if not split:
        assert {i.id for i in seen[mine]} == {i.id for i in seen[theirs]}
    with IncidentStore.open(mine) as store:
        merged = store.merge_from(theirs)
        assert (merged.incidents_added, merged.incidents_joined) == (0, 2 if split else 0)
        assert store.count(IncidentFilter()) == 2
