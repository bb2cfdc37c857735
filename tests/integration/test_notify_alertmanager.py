"""Incidents told to Debian's real Alertmanager (issue 15), started on 127.0.0.1 by the test: an open root incident
is an alert with the console's labels and annotations, kept firing by re-sends; a resolved one ends at once; a
silence made in Alertmanager marks the incident silenced in the console (and in the notification file another
process reads); one made from the console is Alertmanager's, listed and expired there; and an Alertmanager that
was down for a while gets, once back, the incidents opened meanwhile and the resolution it missed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from console.config.fleet import Fleet, Node, Receiver, ReceiverKind, Site, Topology
from console.incidents.model import ChangeKind, Incident, IncidentChange, Severity, Status
from console.notify.notifier import Notifier
from console.notify.silences import Matcher, SilenceSource, parse_time
from console.notify.state import NotifyStore, read_marks
from tests.helpers import alertmanager_server
from tests.helpers.alertmanager_server import Alertmanager, Recorder
from tests.helpers.builders import make_incident

pytestmark = pytest.mark.skipif(
    not alertmanager_server.available(), reason="prometheus-alertmanager (Debian package) is not installed"
)

SITE = "iad-hyperscaler"
PROVIDER = "hyperscaler"
NODES = ("am-open", "am-resolve", "am-resumed", "am-silenced", "am-neighbour", "am-console")
NODES += ("am-down-a", "am-down-b", "am-down-c")
RACK = "r12"
FAST: dict[str, Any] = {"resend_s": 0.3, "sync_s": 0.3, "backoff_max_s": 0.3, "stop_grace_s": 1.0}
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 10.0) -> T:
    """``probe()`` until it gives something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)


def _fleet(alertmanager_url: str) -> Fleet:
    nodes = tuple(Node(name, SITE, (), topology=Topology(rack=RACK)) for name in NODES)
    return Fleet(
        sites=(Site(SITE, PROVIDER),),
        nodes=nodes,
        receivers=(Receiver(ReceiverKind.ALERTMANAGER, alertmanager_url, name="am", timeout_s=2.0),),
    )


def _opened(incident: Incident) -> IncidentChange:
    return IncidentChange(ChangeKind.OPENED, incident, incident.opened_at)


def _resolved(incident: Incident, at: float) -> tuple[Incident, IncidentChange]:
    ended = replace(incident, status=Status.RESOLVED, resolved_at=at, last_seen_at=at)
    return ended, IncidentChange(ChangeKind.RESOLVED, ended, at)


def _alert_of(am: Alertmanager, incident_id: str) -> dict[str, Any] | None:
    found = am.alerts(incident_id=incident_id)
    return found[0] if found else None


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    with Alertmanager(tmp_path_factory.mktemp("alertmanager")) as am:
        yield am


@pytest.fixture
def notifiers(tmp_path: Path) -> Iterator[Callable[..., Notifier]]:
    """Start a notifier (over a notification file in tmp_path) for an Alertmanager; all are stopped after."""
    started: list[Notifier] = []

    def start(url: str, **options: float) -> Notifier:
        store = NotifyStore.open(tmp_path / f"incidents{len(started)}.notify.sqlite3")
        notifier = Notifier(_fleet(url), store, **{**FAST, **options})
        started.append(notifier)
        notifier.start()
        return notifier

    yield start
    for notifier in started:
        notifier.stop()


def test_an_open_root_incident_is_an_alert_with_the_consoles_labels_kept_firing(
    alertmanager: Alertmanager, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(alertmanager.url)
    now = time.time()
    root = make_incident("inc-open-1", now - 30, node="am-open", gpu_uuid="GPU-7f3e-0001", title="GPU fell off")
    symptom = make_incident("inc-open-2", now - 29, node="am-open", gpu_index=1, parent_id=root.id, rule="ecc")
    notifier.submit([_opened(root), _opened(symptom)])

    alert = wait_for("the root incident in GET /api/v2/alerts", lambda: _alert_of(alertmanager, root.id))
    assert alert["labels"] == {
        "alertname": "xid",
        "severity": "critical",
        "site": SITE,
        "provider": PROVIDER,
        "node": "am-open",
        "gpu": "GPU-7f3e-0001",
        "rack": RACK,
        "incident_id": root.id,
    }
    assert alert["annotations"] == {
        "summary": "GPU fell off",
        "description": "Xid 79 reported by the driver",
        "recommended_action": "drain the node and reset the GPU",
    }
    assert alert["status"]["state"] == "active"
    assert abs(parse_time(alert["startsAt"]) - root.opened_at) < 0.01
    first_end = parse_time(alert["endsAt"])
    assert first_end > time.time()  # four re-send intervals ahead: it never ends on its own while open

    # Re-sent while open: Alertmanager's end moves on, so the alert outlives any single post.
    wait_for("a re-send moving endsAt", lambda: parse_time(_alert_of(alertmanager, root.id)["endsAt"]) > first_end)  # type: ignore[index]
    time.sleep(4 * FAST["resend_s"] + 0.3)  # longer than one post's endsAt: still firing
    assert _alert_of(alertmanager, root.id) is not None

    assert alertmanager.alerts(incident_id=symptom.id) == []  # a symptom rides under its cause
    (status,) = notifier.statuses()
    assert status.name == "am"
    assert status.last_success_at is not None
    assert status.last_error is None
    assert not status.failing


def test_a_resolved_incident_ends_at_once(alertmanager: Alertmanager, notifiers: Callable[..., Notifier]) -> None:
    notifier = notifiers(alertmanager.url, resend_s=30.0)  # an open alert would hold for 2 minutes
    now = time.time()
    incident = make_incident("inc-resolve-1", now - 60, node="am-resolve", gpu_index=None, severity=Severity.MAJOR)
    notifier.submit([_opened(incident)])
    alert = wait_for("the incident in GET /api/v2/alerts", lambda: _alert_of(alertmanager, incident.id))
    assert "gpu" not in alert["labels"]  # a node incident has no GPU label
    assert alert["labels"]["severity"] == "major"
    assert parse_time(alert["endsAt"]) > now + 100

    # Escalated: its severity label changes, and Alertmanager holds one alert for it, the critical one.
    worse = replace(incident, severity=Severity.CRITICAL, last_seen_at=time.time())
    notifier.submit([IncidentChange(ChangeKind.UPDATED, worse, worse.last_seen_at)])
    wait_for(
        "only the critical alert left",
        lambda: [a["labels"]["severity"] for a in alertmanager.alerts(incident_id=incident.id)] == ["critical"],
    )

    _ended, change = _resolved(worse, time.time())
    notifier.submit([change])
    started = time.monotonic()
    wait_for("the resolved incident gone from active alerts", lambda: _alert_of(alertmanager, incident.id) is None)
    assert time.monotonic() - started < 5  # ended by the resolution, not by its endsAt running out


def test_a_restarted_console_sends_the_open_incidents_it_resumes(
    alertmanager: Alertmanager, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(alertmanager.url)
    left_open = make_incident("inc-resumed-1", time.time() - 3600, node="am-resumed")
    symptom = make_incident("inc-resumed-2", time.time() - 3600, node="am-resumed", parent_id=left_open.id)
    notifier.resume([left_open, symptom])
    alert = wait_for("the resumed incident in Alertmanager", lambda: _alert_of(alertmanager, left_open.id))
    assert abs(parse_time(alert["startsAt"]) - left_open.opened_at) < 0.01  # it has been firing since then
    assert _alert_of(alertmanager, symptom.id) is None


def test_a_silence_made_in_alertmanager_marks_the_incident_silenced(
    alertmanager: Alertmanager, notifiers: Callable[..., Notifier], tmp_path: Path
) -> None:
    notifier = notifiers(alertmanager.url)
    now = time.time()
    muted = make_incident("inc-silenced-1", now - 10, node="am-silenced")
    other = make_incident("inc-silenced-2", now - 10, node="am-neighbour")
    notifier.submit([_opened(muted), _opened(other)])
    wait_for(
        "both incidents in Alertmanager",
        lambda: _alert_of(alertmanager, muted.id) and _alert_of(alertmanager, other.id),
    )

    ends_at = "2099-01-01T00:00:00.000Z"
    created = alertmanager.post(
        "/api/v2/silences",
        {
            "matchers": [{"name": "node", "value": "am-silenced", "isRegex": False, "isEqual": True}],
            "startsAt": "2020-01-01T00:00:00.000Z",
            "endsAt": ends_at,
            "createdBy": "oncall@example.com",
            "comment": "PSU swap on am-silenced, ticket OPS-1234",
        },
    )
    silence_id = created["silenceID"]

    mark = wait_for("the console reporting the incident silenced", lambda: notifier.silence_of(muted))
    assert mark.silence_id == silence_id
    assert mark.comment == "PSU swap on am-silenced, ticket OPS-1234"
    assert mark.created_by == "oncall@example.com"
    assert mark.ends_at == parse_time(ends_at)
    assert mark.source is SilenceSource.ALERTMANAGER
    assert notifier.is_silenced(muted)
    assert notifier.silence_of(other) is None
    assert _alert_of(alertmanager, muted.id)["status"]["silencedBy"] == [silence_id]  # type: ignore[index]

    # Another process (``incidents list --json``) reads the same from the notification file.
    path = notifier.store.path  # type: ignore[union-attr]
    marks = wait_for("the mark in the notification file", lambda: read_marks(path, [muted, other]))
    assert set(marks) == {muted.id}
    assert marks[muted.id].to_json() == {
        "id": silence_id,
        "comment": "PSU swap on am-silenced, ticket OPS-1234",
        "ends_at": parse_time(ends_at),
        "created_by": "oncall@example.com",
        "source": "alertmanager",
    }

    alertmanager.delete(f"/api/v2/silence/{silence_id}")  # expired in Alertmanager: no longer silenced here
    wait_for("the silence lifted in the console", lambda: notifier.silence_of(muted) is None)
    wait_for("the mark gone from the file", lambda: read_marks(path, [muted]) == {})


def test_a_silence_added_from_the_console_is_alertmanagers_and_can_be_expired(
    alertmanager: Alertmanager, notifiers: Callable[..., Notifier]
) -> None:
    notifier = notifiers(alertmanager.url)
    incident = make_incident("inc-console-1", time.time() - 5, node="am-console")
    notifier.submit([_opened(incident)])
    wait_for("the incident in Alertmanager", lambda: _alert_of(alertmanager, incident.id))

    silence = notifier.add_silence([Matcher("node", "am-console")], 3600, "reseat NVLink bridge", "ops@example.com")
    assert silence.source is SilenceSource.ALERTMANAGER
    (held,) = [s for s in alertmanager.silences() if s["id"] == silence.id]
    assert held["status"]["state"] == "active"
    assert held["comment"] == "reseat NVLink bridge"
    assert held["createdBy"] == "ops@example.com"
    assert held["matchers"] == [{"name": "node", "value": "am-console", "isRegex": False, "isEqual": True}]
    assert abs(parse_time(held["endsAt"]) - parse_time(held["startsAt"]) - 3600) < 1

    assert notifier.silence_of(incident) is not None  # at once, before any read-back
    assert silence.id in [s.id for s in notifier.silences()]
    wait_for(
        "Alertmanager suppressing the incident's alert",
        lambda: _alert_of(alertmanager, incident.id)["status"]["state"] == "suppressed",  # type: ignore[index]
    )

    expired = notifier.expire_silence(silence.id)
    assert expired.id == silence.id
    assert expired.expired
    (held,) = [s for s in alertmanager.silences() if s["id"] == silence.id]
    assert held["status"]["state"] == "expired"
    assert silence.id not in [s.id for s in notifier.silences()]
    assert silence.id in [s.id for s in notifier.silences(include_expired=True)]
    assert notifier.silence_of(incident) is None
    wait_for(
        "the alert active again",
        lambda: _alert_of(alertmanager, incident.id)["status"]["state"] == "active",  # type: ignore[index]
    )


def test_an_alertmanager_that_was_down_gets_everything_it_missed(
    tmp_path: Path, notifiers: Callable[..., Notifier]
) -> None:
    with Recorder() as hook:
        am = Alertmanager(tmp_path / "am-down", webhook_url=hook.url())
        with am:
            notifier = notifiers(am.url)
            now = time.time()
            a = make_incident("inc-down-a", now - 60, node="am-down-a")
            b = make_incident("inc-down-b", now - 50, node="am-down-b")
            notifier.submit([_opened(a), _opened(b)])
            wait_for("both open incidents", lambda: _alert_of(am, a.id) and _alert_of(am, b.id))

            am.stop()
            c = make_incident("inc-down-c", time.time(), node="am-down-c", severity=Severity.WARNING)
            _ended, resolution = _resolved(a, time.time())
            notifier.submit([resolution, _opened(c)])
            status = wait_for("the receiver failing", lambda: next((s for s in notifier.statuses() if s.failing), None))
            assert "cannot be reached" in (status.last_error or "")
            time.sleep(1.0)  # down for a while: several tries fail
            assert notifier.statuses()[0].failing

            back_at = time.time()
            am.start()
            wait_for("B and C firing again", lambda: _alert_of(am, b.id) and _alert_of(am, c.id))
            assert _alert_of(am, a.id) is None

            def resolved_a_notified() -> bool:
                for received in hook.received():
                    for alert in received.json()["alerts"]:
                        if alert["labels"]["incident_id"] == a.id and alert["status"] == "resolved":
                            return parse_time(alert["endsAt"]) <= back_at
                return False

            # Alertmanager itself says it got the resolution: it notifies its receiver of A as resolved.
            wait_for("Alertmanager notifying A resolved", resolved_a_notified)
            (status,) = notifier.statuses()
            assert not status.failing
            assert status.last_success_at is not None
            assert status.last_success_at >= back_at
