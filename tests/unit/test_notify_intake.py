"""The notifier's intake and its view of incidents (issue 15): bounded, newest state per incident, a resolution
never dropped nor undone by a late change; and the labels a root incident carries to Alertmanager."""

from __future__ import annotations

from dataclasses import replace

from console.incidents.model import ChangeKind, Incident, IncidentChange, Scope, Severity, Status
from console.notify.alerts import alert_document, incident_labels, rack_of
from console.notify.tracking import Intake
from tests.helpers.builders import make_incident


def _change(kind: ChangeKind, incident: Incident) -> IncidentChange:
    return IncidentChange(kind, incident, incident.last_seen_at)


def test_past_its_limit_the_intake_drops_the_oldest_open_change_never_a_resolution() -> None:
    intake = Intake(limit=3)
    resolved = make_incident("r", 1.0, status=Status.RESOLVED, resolved_at=2.0)
    intake.put([_change(ChangeKind.RESOLVED, resolved)])
    intake.put([_change(ChangeKind.OPENED, make_incident(f"o{i}", 10.0 + i)) for i in range(4)])
    _resumed, batch = intake.take()
    assert [c.incident.id for c in batch] == ["r", "o2", "o3"]
    assert intake.dropped == 2
    assert intake.take() == ([], [])


def test_the_newest_state_of_an_incident_wins_and_a_late_change_cannot_reopen_it() -> None:
    intake = Intake(limit=100)
    opened = make_incident("i", 1.0, severity=Severity.WARNING)
    worse = replace(opened, severity=Severity.CRITICAL, last_seen_at=2.0)
    ended = replace(worse, status=Status.RESOLVED, resolved_at=3.0, last_seen_at=3.0)
    intake.put([_change(ChangeKind.OPENED, opened), _change(ChangeKind.UPDATED, worse)])
    intake.put([_change(ChangeKind.EVIDENCE, worse), _change(ChangeKind.ACKNOWLEDGED, worse)])
    _resumed, batch = intake.take()
    assert [(c.kind, c.incident.severity) for c in batch] == [(ChangeKind.UPDATED, Severity.CRITICAL)]
    intake.put([_change(ChangeKind.RESOLVED, ended), _change(ChangeKind.UPDATED, worse)])
    _resumed, batch = intake.take()
    assert [c.incident.status for c in batch] == [Status.RESOLVED]


def test_only_open_roots_are_resumed() -> None:
    intake = Intake(limit=10)
    root = make_incident("root", 1.0)
    intake.put_resumed(
        [root, make_incident("sym", 1.0, parent_id="root"), make_incident("done", 1.0, status=Status.RESOLVED)]
    )
    assert intake.take() == ([root], [])


def test_a_rack_incident_is_labelled_with_its_rack_and_empty_labels_are_left_out() -> None:
    rack_fault = make_incident(
        "rk", 1.0, node="n1", gpu_index=None, scope=Scope.RACK, scope_name="r9", rule="cooling_loss", detail=""
    )
    labels = incident_labels(rack_fault, rack_of(rack_fault, {"n1": "r1"}))
    assert labels["rack"] == "r9"  # the incident's own rack, not the inventory's guess for its first node
    assert "gpu" not in labels
    assert labels["alertname"] == "cooling_loss"
    document = alert_document(rack_fault, labels, ends_at=61.0)
    assert "description" not in document["annotations"]  # no empty annotation
    assert document["startsAt"] == "1970-01-01T00:00:01.000Z"
    assert document["endsAt"] == "1970-01-01T00:01:01.000Z"
    unknown = make_incident("u", 1.0, node="nowhere")
    assert "rack" not in incident_labels(unknown, rack_of(unknown, {"n1": "r1"}))
