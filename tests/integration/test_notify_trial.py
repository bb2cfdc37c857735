"""Send test (issue 15): one delivery to one receiver, against real servers on 127.0.0.1. A webhook gets one
document signed as every delivery is; Debian's real Alertmanager holds the test alert, ending by itself in five
minutes; a receiver that fails, is not listening or never answers is one sentence saying so, within the bound."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from console.config.fleet import Receiver, ReceiverKind, SecretKind, SecretRef
from console.notify.alerts import verify_signature
from console.notify.trial import TEST_ALERTNAME, send_test
from tests.helpers.alertmanager_server import Alertmanager, Recorder, available
from tests.helpers.builders import free_port

SECRET = "trial-secret-0123456789"
SECRET_ENV = "GPU_CONSOLE_TEST_TRIAL_SECRET"


@pytest.fixture
def hook() -> Iterator[Recorder]:
    with Recorder() as recorder:
        yield recorder


def webhook(url: str, **fields: object) -> Receiver:
    return Receiver(ReceiverKind.WEBHOOK, url, name="chat", timeout_s=2.0, **fields)  # type: ignore[arg-type]


def test_a_webhook_gets_one_signed_test_document(hook: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    result = send_test(webhook(hook.url(), secret=SecretRef(SecretKind.ENV, SECRET_ENV)))

    assert result.ok, result.message
    assert result.message == "chat accepted a signed test document"
    (received,) = hook.received()
    headers = received.headers
    assert headers["X-GPU-Console-Event"] == "test"
    assert verify_signature(
        SECRET, headers["X-GPU-Console-Timestamp"], received.body, headers["X-GPU-Console-Signature"]
    )
    assert not verify_signature(
        "another key", headers["X-GPU-Console-Timestamp"], received.body, headers["X-GPU-Console-Signature"]
    )
    document = received.json()
    assert document["event"] == "test"
    assert document["id"] == headers["X-GPU-Console-Delivery"]
    assert "incident" not in document


def test_a_failing_webhook_says_its_status_and_answer(hook: Recorder) -> None:
    hook.answer = 500
    result = send_test(webhook(hook.url()))
    assert not result.ok
    assert result.message == "chat refused the request: HTTP 500: failing on purpose"


def test_a_missing_signing_secret_is_named_without_sending(hook: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    result = send_test(webhook(hook.url(), secret=SecretRef(SecretKind.ENV, SECRET_ENV)))
    assert not result.ok
    assert result.message.startswith("chat: cannot read its signing secret:")
    assert SECRET_ENV in result.message
    assert hook.received() == []


def test_nobody_listening_is_unreachable() -> None:
    result = send_test(webhook(f"http://127.0.0.1:{free_port()}/hook"))
    assert not result.ok
    assert result.message.startswith("chat cannot be reached:")


def test_a_receiver_that_never_answers_ends_within_the_bound() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (the backlog), never answers
        port = silent.getsockname()[1]
        receiver = Receiver(ReceiverKind.WEBHOOK, f"http://127.0.0.1:{port}/", name="slow", timeout_s=0.5)
        result = send_test(receiver)
    assert not result.ok
    assert result.message == "slow did not answer within 0.5 s"
    assert result.elapsed_s < 5


@pytest.mark.skipif(not available(), reason="needs Debian's prometheus-alertmanager (scripts/setup.sh)")
def test_alertmanager_holds_the_test_alert_for_five_minutes(tmp_path: Path) -> None:
    with Alertmanager(tmp_path / "am") as alertmanager:
        receiver = Receiver(ReceiverKind.ALERTMANAGER, alertmanager.url, name="am", timeout_s=3.0)
        before = time.time()
        result = send_test(receiver)
        assert result.ok, result.message
        assert result.message == f"am accepted alert {TEST_ALERTNAME} (severity info, ends in 5 min)"
        (alert,) = alertmanager.alerts(alertname=TEST_ALERTNAME)
    assert alert["labels"]["severity"] == "info"
    assert "incident_id" not in alert["labels"]  # never read back as an incident
    ends = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()
    assert before + 290 < ends < time.time() + 310
