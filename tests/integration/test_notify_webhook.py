"""Incidents told to a webhook (issue 15), a real HTTP server on 127.0.0.1: one JSON document per change (opened,
escalated, resolved) in that order, signed with HMAC-SHA256 over "<timestamp>.<body>" when a secret is set; a
receiver that answers 500 for a while gets every document, in order, once it recovers; and an incident under a
local maintenance silence is announced only when the silence ends."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from console.config.fleet import Fleet, Node, Receiver, ReceiverKind, SecretKind, SecretRef, Site, Topology
from console.incidents.model import ChangeKind, Incident, IncidentChange, Severity, Status
from console.notify.alerts import verify_signature
from console.notify.notifier import Notifier
from console.notify.silences import Matcher
from console.notify.state import NotifyStore
from tests.helpers.alertmanager_server import Received, Recorder
from tests.helpers.builders import make_incident as _make_incident

SITE = "lab"
SECRET = "correct horse battery staple"
SECRET_ENV = "GPU_CONSOLE_TEST_WEBHOOK_SECRET"
FAST: dict[str, Any] = {"resend_s": 0.3, "sync_s": 0.2, "backoff_max_s": 0.2, "stop_grace_s": 1.0}
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 10.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)


def _fleet(url: str, *, secret: bool) -> Fleet:
    ref = SecretRef(SecretKind.ENV, SECRET_ENV) if secret else None
    return Fleet(
        sites=(Site(SITE, "onprem"),),
        nodes=(Node("wh-1", SITE, (), topology=Topology(rack="r7")), Node("wh-2", SITE, ())),
        receivers=(Receiver(ReceiverKind.WEBHOOK, url, name="hook", secret=ref, timeout_s=2.0),),
    )


def make_incident(incident_id: str, opened_at: float, **fields: Any) -> Incident:
    return _make_incident(incident_id, opened_at, site=SITE, provider="onprem", **fields)


def _change(kind: ChangeKind, incident: Incident) -> IncidentChange:
    return IncidentChange(kind, incident, incident.last_seen_at)


def _lifecycle(incident_id: str, node: str) -> list[IncidentChange]:
    """Opened as a warning, escalated to critical, resolved."""
    t = time.time() - 30
    opened = make_incident(incident_id, t, node=node, severity=Severity.WARNING, rule="thermal", kind="thermal")
    worse = replace(opened, severity=Severity.CRITICAL, count=3, last_seen_at=t + 10)
    ended = replace(worse, status=Status.RESOLVED, resolved_at=t + 20, last_seen_at=t + 20)
    return [_change(ChangeKind.OPENED, opened), _change(ChangeKind.UPDATED, worse), _change(ChangeKind.RESOLVED, ended)]


def _documents(hook: Recorder) -> list[dict[str, Any]]:
    return [r.json() for r in hook.received(delivered_only=True)]


@pytest.fixture
def hook() -> Iterator[Recorder]:
    with Recorder() as recorder:
        yield recorder


@pytest.fixture
def notifiers(tmp_path: Path) -> Iterator[Callable[..., Notifier]]:
    started: list[Notifier] = []

    def start(fleet: Fleet) -> Notifier:
        notifier = Notifier(fleet, NotifyStore.open(tmp_path / f"n{len(started)}.notify.sqlite3"), **FAST)
        started.append(notifier)
        notifier.start()
        return notifier

    yield start
    for notifier in started:
        notifier.stop()


def _submit_one_by_one(notifier: Notifier, changes: list[IncidentChange]) -> None:
    for change in changes:
        notifier.submit([change])
        notifier.flush()  # each is its own change, as the engine publishes them over time


def _check_signature(received: Received) -> None:
    timestamp = received.headers["X-GPU-Console-Timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-GPU-Console-Signature"], f"sha256={expected}")
    assert verify_signature(SECRET, timestamp, received.body, received.headers["X-GPU-Console-Signature"])
    assert abs(int(timestamp) - time.time()) < 60


def test_each_change_is_one_signed_document_in_order(
    hook: Recorder, notifiers: Callable[..., Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    notifier = notifiers(_fleet(hook.url(), secret=True))
    changes = _lifecycle("wh-inc-1", "wh-1")
    root = changes[0].incident
    symptom = make_incident("wh-inc-2", root.opened_at, node="wh-1", gpu_index=3, parent_id=root.id)
    recount = replace(changes[0].incident, count=2)  # more of the same: nothing to tell
    _submit_one_by_one(
        notifier, [changes[0], _change(ChangeKind.OPENED, symptom), _change(ChangeKind.UPDATED, recount)]
    )
    _submit_one_by_one(notifier, changes[1:])

    wait_for("three documents", lambda: len(_documents(hook)) >= 3)
    time.sleep(0.3)  # nothing more comes (the symptom and the recount are not told)
    received = hook.received(delivered_only=True)
    assert len(received) == 3
    documents = [r.json() for r in received]
    assert [d["event"] for d in documents] == ["opened", "escalated", "resolved"]
    assert [r.headers["X-GPU-Console-Event"] for r in received] == ["opened", "escalated", "resolved"]
    for r, document in zip(received, documents, strict=True):
        _check_signature(r)
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["X-GPU-Console-Delivery"] == document["id"]
        assert document["schema"] == "gpu-console.notify/1"
        assert document["incident"]["id"] == "wh-inc-1"
        assert document["incident"]["node"] == "wh-1"
        assert document["incident"]["rack"] == "r7"
        assert document["incident"]["site"] == SITE
    assert len({d["id"] for d in documents}) == 3
    opened, escalated, resolved = documents
    assert opened["incident"]["severity"] == "warning"
    assert opened["incident"]["status"] == "open"
    assert opened["incident"]["recommended_action"] == "drain the node and reset the GPU"
    assert escalated["incident"]["severity"] == "critical"
    assert escalated["previous_severity"] == "warning"
    assert resolved["incident"]["status"] == "resolved"
    assert resolved["incident"]["resolved_at"] is not None

    tampered = replace(received[0], body=received[0].body.replace(b"warning", b"info"))
    with pytest.raises(AssertionError):
        _check_signature(tampered)  # the signature covers the body


def test_a_receiver_failing_for_a_while_gets_everything_once_it_recovers(
    hook: Recorder, notifiers: Callable[..., Notifier]
) -> None:
    hook.answer = 500
    notifier = notifiers(_fleet(hook.url(), secret=False))
    first = _lifecycle("wh-inc-3", "wh-1")
    second = _lifecycle("wh-inc-4", "wh-2")[:1]
    _submit_one_by_one(notifier, [*first, *second])

    wait_for("a few failed tries", lambda: len(hook.received()) >= 3)
    (status,) = notifier.statuses()
    assert status.failing
    assert "HTTP 500" in (status.last_error or "")
    assert status.queued == 4
    assert _documents(hook) == []

    recovered_at = time.time()
    hook.answer = 200
    wait_for("all four documents", lambda: len(_documents(hook)) >= 4)
    documents = _documents(hook)
    assert [(d["incident"]["id"], d["event"]) for d in documents] == [
        ("wh-inc-3", "opened"),
        ("wh-inc-3", "escalated"),
        ("wh-inc-3", "resolved"),
        ("wh-inc-4", "opened"),
    ]
    # The failed tries were of the first document, under the same delivery id (a receiver can dedup on it).
    failed = [r for r in hook.received() if r.answered >= 300]
    assert {r.headers["X-GPU-Console-Delivery"] for r in failed} == {documents[0]["id"]}
    assert all("X-GPU-Console-Signature" not in r.headers for r in hook.received())  # no secret: not signed
    status = wait_for("the receiver healthy", lambda: next((s for s in notifier.statuses() if not s.failing), None))
    assert status.last_success_at is not None
    assert status.last_success_at >= recovered_at
    assert status.sent == 4
    assert status.queued == 0
    assert status.dropped == 0


def test_an_incident_under_a_local_silence_is_announced_when_it_ends(
    hook: Recorder, notifiers: Callable[..., Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    notifier = notifiers(_fleet(hook.url(), secret=True))
    silence = notifier.add_silence([Matcher("rack", "r7")], 3600, "rack r7 recabling", "ops@example.com")
    muted = make_incident("wh-inc-5", time.time(), node="wh-1")  # wh-1 is in rack r7
    told = make_incident("wh-inc-6", time.time(), node="wh-2")
    _submit_one_by_one(notifier, [_change(ChangeKind.OPENED, muted), _change(ChangeKind.OPENED, told)])

    wait_for("the other incident told", lambda: _documents(hook))
    time.sleep(0.5)  # a few read-back rounds
    assert [d["incident"]["id"] for d in _documents(hook)] == ["wh-inc-6"]
    mark = notifier.silence_of(muted)
    assert mark is not None
    assert mark.silence_id == silence.id
    assert mark.comment == "rack r7 recabling"

    notifier.expire_silence(silence.id)
    wait_for("the muted incident announced", lambda: len(_documents(hook)) >= 2)
    assert [(d["incident"]["id"], d["event"]) for d in _documents(hook)] == [
        ("wh-inc-6", "opened"),
        ("wh-inc-5", "opened"),
    ]
