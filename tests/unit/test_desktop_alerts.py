"""What the desktop announces: new or escalated faults at or above the chosen severity, once each, at most N a
minute, never a symptom or a silenced incident; and the open faults by severity for the tray."""

from __future__ import annotations

from dataclasses import replace

from console.incidents.model import ChangeKind, Incident, IncidentChange, Severity, Status
from console.live.desktop_alerts import AlertSettings, DesktopAlerts
from tests.helpers.builders import make_incident

T0 = 1_750_000_000.0


def opened(incident: Incident) -> IncidentChange:
    return IncidentChange(ChangeKind.OPENED, incident, incident.opened_at)


def updated(incident: Incident, **fields: object) -> IncidentChange:
    return IncidentChange(ChangeKind.UPDATED, replace(incident, **fields), incident.opened_at + 1)  # type: ignore[arg-type]


def fault(n: int, severity: Severity = Severity.CRITICAL, **fields: object) -> Incident:
    return make_incident(f"i{n}", T0 + n, node=f"node{n:02d}", severity=severity, **fields)


def test_a_new_fault_is_announced_once_and_a_symptom_never() -> None:
    alerts = DesktopAlerts()
    root = fault(1)
    symptom = replace(fault(2), parent_id="i1")
    shown = alerts.consider([opened(root), opened(symptom)], T0)
    assert [a.incident.id for a in shown] == ["i1"]
    assert shown[0].title.startswith("CRITICAL new: ")
    assert "node01" in shown[0].body and root.recommended_action[:20] in shown[0].body
    assert alerts.consider([updated(root, count=5), updated(root, severity=Severity.CRITICAL)], T0 + 5) == []


def test_below_the_chosen_severity_nothing_until_it_escalates_then_once() -> None:
    alerts = DesktopAlerts(AlertSettings(min_severity=Severity.MAJOR))
    warning = fault(1, Severity.WARNING)
    assert alerts.consider([opened(warning)], T0) == []
    shown = alerts.consider([updated(warning, severity=Severity.CRITICAL)], T0 + 10)
    assert [(a.incident.id, a.escalated) for a in shown] == [("i1", True)]
    assert shown[0].title.startswith("CRITICAL escalated to: ")
    assert alerts.consider([updated(warning, severity=Severity.CRITICAL, count=3)], T0 + 20) == []


def test_a_burst_shows_the_first_few_a_minute_and_counts_the_rest() -> None:
    alerts = DesktopAlerts(AlertSettings(per_minute=3))
    burst = [opened(fault(n)) for n in range(10)]
    shown = alerts.consider(burst, T0)
    assert [a.incident.id for a in shown] == ["i0", "i1", "i2"]
    assert alerts.held_back == 7
    later = alerts.consider([opened(fault(20))], T0 + 61)  # the minute has passed
    assert [(a.incident.id, a.held_back) for a in later] == [("i20", 7)]
    assert "+7 more not shown" in later[0].body
    assert alerts.held_back == 0


def test_silenced_and_disabled_are_quiet_but_still_counted() -> None:
    alerts = DesktopAlerts(is_silenced=lambda incident: incident.context.node == "node01")
    assert alerts.consider([opened(fault(1))], T0) == []
    assert alerts.summary().text() == "1 open fault: 1 critical"
    alerts.settings = AlertSettings(enabled=False)
    assert alerts.consider([opened(fault(2))], T0) == []


def test_the_summary_counts_open_roots_by_severity_worst_first() -> None:
    alerts = DesktopAlerts()
    a, b, c = fault(1, Severity.WARNING), fault(2), fault(3, Severity.WARNING)
    alerts.consider([opened(a), opened(b), opened(c), opened(replace(fault(4), parent_id="i2"))], T0)
    summary = alerts.summary()
    assert summary.worst is Severity.CRITICAL
    assert summary.text() == "3 open faults: 1 critical, 2 warning"
    resolved = replace(b, status=Status.RESOLVED, resolved_at=T0 + 9)
    alerts.consider([IncidentChange(ChangeKind.RESOLVED, resolved, T0 + 9), updated(c, parent_id="i1")], T0 + 9)
    assert alerts.summary().text() == "1 open fault: 1 warning"
    assert DesktopAlerts().summary().worst is None
