"""The fix ledger end to end: a real FleetMonitor polls a loopback dcgm-exporter into a real SQLite file while
the real ``gpu-console`` script, in another process, acknowledges and resolves what it found. The console picks
the steps up and never undoes them; a fix the same Xid follows inside the window did not hold, one without a
recurrence is pending, then held once the window passed; ``fixes stats`` and ``fixes suggest`` print exactly
the documented JSON; a JSON export carries the ledger."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.incidents.engine import IncidentEngine
from console.incidents.model import ChangeKind, IncidentChange, Status
from console.incidents.rules import load_rules
from console.live.monitor import FleetMonitor, MonitorUpdate
from console.samples.schema import NodeSample
from console.store import IncidentStore
from tests.helpers.builders import ExporterStandIn
from tests.helpers.hostile_server import realistic_gpu, render

SCRIPT = Path(sys.executable).with_name("gpu-console")
NODE = "gpu-node"
UUID = realistic_gpu(0, node=NODE).uuid
STATS_KEYS = {
    "provider",
    "gpu_model",
    "driver",
    "rule",
    "code",
    "action",
    "attempts",
    "held",
    "did_not_hold",
    "pending",
    "success_rate",
}


def exposition(xid_on_gpu0: int) -> str:
    gpus = (realistic_gpu(0, node=NODE, xid_last=xid_on_gpu0), *(realistic_gpu(i, node=NODE) for i in range(1, 4)))
    return render(NodeSample(node=NODE, site="lab", source="dcgm", time=time.time(), gpus=gpus))


def gpu_console(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Console:
    """The polling console: its changes as they were published."""

    updates: queue.Queue[MonitorUpdate]
    changes: list[IncidentChange] = field(default_factory=list)

    def wait_for(self, found: Callable[[IncidentChange], bool], timeout: float = 10.0) -> IncidentChange:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                for change in self.updates.get(timeout=0.05).changes:
                    self.changes.append(change)
            hit = next((c for c in self.changes if found(c)), None)
            if hit is not None:
                return hit
        raise AssertionError(f"not published within {timeout} s")


@contextlib.contextmanager
def polling(exporter: ExporterStandIn, db: Path) -> Iterator[Console]:
    fleet = Fleet(
        sites=(Site("lab", "onprem", interval_s=0.25, timeout_s=1.0),),
        nodes=(Node(NODE, "lab", (SourceSpec(SourceKind.DCGM, url=exporter.url()),)),),
    )
    updates: queue.Queue[MonitorUpdate] = queue.Queue()
    store = IncidentStore.open(db)
    monitor = FleetMonitor(fleet, engine=IncidentEngine(load_rules(), fleet), store=store, on_update=updates.put)
    monitor.start()
    try:
        yield Console(updates)
    finally:
        monitor.stop()
        store.flush()
        store.close()


def xid79_opened(change: IncidentChange) -> bool:
    incident = change.incident
    return change.kind is ChangeKind.OPENED and (incident.rule, incident.code) == ("xid", "79")


def test_fixes_resolved_from_the_cli_reach_the_console_and_are_verified_by_what_came_next(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite3"
    with ExporterStandIn(exposition(0)) as exporter, polling(exporter, db) as console:
        time.sleep(1.0)  # a first sample: the Xid below is a change, not history
        exporter.payload = exposition(79)
        first = console.wait_for(xid79_opened).incident
        assert first.context.gpu_uuid == UUID

        ack = gpu_console("incidents", "acknowledge", first.id, "--db", str(db), "--note", "draining it")
        assert ack.returncode == 0, ack.stderr
        console.wait_for(lambda c: c.kind is ChangeKind.ACKNOWLEDGED and c.incident.id == first.id)
        fix = gpu_console(
            "incidents", "resolve", first.id, "--db", str(db), "--outcome", "fixed", "--action", "gpu_reset"
        )
        assert fix.returncode == 0, fix.stderr
        # The console took the step: it stops tracking the incident instead of writing its open copy over it.
        console.wait_for(lambda c: c.kind is ChangeKind.RESOLVED and c.incident.id == first.id)
        time.sleep(1.0)  # polls go on, the Xid still showing
        refused = gpu_console("incidents", "resolve", first.id, "--db", str(db), "--outcome", "fixed", "--action", "x")
        assert refused.returncode == 1 and "already resolved" in refused.stderr

        exporter.payload = exposition(0)  # the same Xid again, a few seconds after the fix: it did not hold
        time.sleep(0.75)
        exporter.payload = exposition(79)
        again = console.wait_for(lambda c: xid79_opened(c) and c.incident.id != first.id).incident
        unknown = gpu_console(
            "incidents", "resolve", again.id, "--db", str(db), "--outcome", "fixed", "--action", "pray"
        )
        assert unknown.returncode == 1 and "unknown action 'pray'; choose one of" in unknown.stderr
        fixed_again = gpu_console(
            "incidents", "resolve", again.id, "--db", str(db), "--outcome", "fixed", "--action", "node_reboot"
        )
        assert fixed_again.returncode == 0, fixed_again.stderr
        console.wait_for(lambda c: c.kind is ChangeKind.RESOLVED and c.incident.id == again.id)
        time.sleep(1.0)

    with IncidentStore.open(db) as store:
        for incident_id, action in ((first.id, "gpu_reset"), (again.id, "node_reboot")):
            kept = store.get(incident_id)
            assert kept is not None and kept.status is Status.RESOLVED and kept.outcome is not None
            entries = store.ledger_entries(incident_id=incident_id)
            assert [e.action for e in entries if e.kind == "resolve"] == [action]
        steps = store.ledger_entries(gpu_uuid=UUID)
        assert [(e.kind, e.action) for e in steps] == [
            ("acknowledge", ""),
            ("resolve", "gpu_reset"),
            ("resolve", "node_reboot"),
        ]
        assert steps[0].note == "draining it" and steps[0].who  # the operator's login name
        fix_time = steps[1].time
        assert again.opened_at - fix_time > 1.0  # what the short window below leans on

    stats = json.loads(gpu_console("fixes", "stats", "--db", str(db), "--json").stdout)
    rows = {row["action"]: row for row in stats["fixes"]}
    assert all(set(row) == STATS_KEYS for row in stats["fixes"])
    reset, reboot = rows["gpu_reset"], rows["node_reboot"]
    assert (reset["provider"], reset["gpu_model"], reset["driver"], reset["rule"], reset["code"]) == (
        "onprem",
        "NVIDIA H100 80GB HBM3",
        "590.48.01",
        "xid",
        "79",
    )
    assert (reset["attempts"], reset["held"], reset["did_not_hold"], reset["pending"]) == (1, 0, 1, 0)
    assert reset["success_rate"] == 0.0
    assert (reboot["attempts"], reboot["held"], reboot["did_not_hold"], reboot["pending"]) == (1, 0, 0, 1)
    assert reboot["success_rate"] is None  # nothing decided yet
    assert stats["reliability"] and stats["reliability"][0]["provider"] == "onprem"

    # A window shorter than the gap to the recurrence: both fixes held (the window is read at each call).
    short = json.loads(gpu_console("fixes", "stats", "--db", str(db), "--json", "--verify-window-h", "0.0002").stdout)
    assert {row["action"]: (row["held"], row["did_not_hold"]) for row in short["fixes"]} == {
        "gpu_reset": (1, 0),
        "node_reboot": (1, 0),
    }

    suggested = json.loads(gpu_console("fixes", "suggest", again.id, "--db", str(db), "--json").stdout)
    ranked = suggested["suggestions"]
    assert {"action", "proven_here", "attempts", "held", "success_rate", "source"} <= set(ranked[0])
    by_action = {s["action"]: s for s in ranked}
    assert by_action["gpu_reset"]["proven_here"] and by_action["gpu_reset"]["source"] == "ledger"
    assert [f["verdict"] for f in suggested["earlier_fixes"]] == ["did_not_hold", "pending"]
    assert suggested["earlier_fixes"][0]["recurrence"] == again.id

    exported = json.loads(gpu_console("incidents", "export", "--db", str(db), "--json").stdout)
    ledger = {incident["id"]: incident["ledger"] for incident in exported}
    assert [(e["kind"], e["who"] != "") for e in ledger[first.id]] == [("acknowledge", True), ("resolve", True)]
    assert ledger[again.id][0]["action"] == "node_reboot"


def test_resolving_needs_a_catalog_action_and_an_open_incident(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite3"
    IncidentStore.open(db).close()
    missing = gpu_console("incidents", "resolve", "nope", "--db", str(db), "--outcome", "fixed", "--action", "rma")
    assert missing.returncode == 1 and "no incident with id 'nope'" in missing.stderr
    bad_outcome = gpu_console("incidents", "resolve", "x", "--db", str(db), "--outcome", "ok", "--action", "rma")
    assert bad_outcome.returncode == 2 and "invalid choice: 'ok'" in bad_outcome.stderr
    window = gpu_console("fixes", "stats", "--db", str(db), "--verify-window-h", "-1")
    assert window.returncode == 2 and "above 0 hours" in window.stderr
    empty = gpu_console("fixes", "stats", "--db", str(db))
    assert empty.returncode == 0 and "no fix recorded yet" in empty.stdout


@pytest.fixture(autouse=True)
def _script_installed() -> None:
    assert SCRIPT.exists(), f"{SCRIPT}: the console script is installed with the project"
