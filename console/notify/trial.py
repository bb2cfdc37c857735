"""One test delivery to one receiver (the inventory editor's *Send test*): proof that the URL, the credentials
and the signature work, before an incident depends on them.

An Alertmanager gets one alert, ``alertname="GPUConsoleTest"`` with ``severity="info"``, that ends by itself five
minutes later (it has no ``incident_id``, so the console's own read-back never mistakes it for an incident). A
webhook gets one signed document with ``"event": "test"`` and no incident, built and signed as every delivery is.
Blocking and bounded: call it off the GUI thread.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from console.config.fleet import Receiver, ReceiverKind
from console.notify.alertmanager import AlertmanagerClient, new_session
from console.notify.alerts import WEBHOOK_SCHEMA, Event, encode, rfc3339
from console.notify.http import DeliveryError
from console.notify.to_webhook import post_document

TEST_ALERTNAME = "GPUConsoleTest"
TEST_ALERT_LIFETIME_S = 5 * 60.0
_SUMMARY = "Test from GPU Ops Console: this receiver is reachable"
_DESCRIPTION = "Sent by Send test in the console's inventory editor. It is not an incident and ends by itself."


@dataclass(frozen=True, slots=True)
class TrialResult:
    ok: bool
    message: str  # one sentence for the operator
    elapsed_s: float


def test_alert(receiver: Receiver, now: float) -> dict[str, object]:
    return {
        "labels": {"alertname": TEST_ALERTNAME, "severity": "info", "receiver": receiver.label},
        "annotations": {"summary": _SUMMARY, "description": _DESCRIPTION},
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + TEST_ALERT_LIFETIME_S),
    }


def test_document(now: float) -> dict[str, object]:
    return {
        "schema": WEBHOOK_SCHEMA,
        "id": str(uuid.uuid4()),
        "event": str(Event.TEST),
        "time": rfc3339(now),
        "summary": _SUMMARY,
        "description": _DESCRIPTION,
    }


async def _deliver(receiver: Receiver, now: float) -> str:
    async with new_session() as session:
        if receiver.kind is ReceiverKind.ALERTMANAGER:
            await AlertmanagerClient(receiver, session).post_alerts([test_alert(receiver, now)])
            minutes = TEST_ALERT_LIFETIME_S / 60
            return f"{receiver.label} accepted alert {TEST_ALERTNAME} (severity info, ends in {minutes:g} min)"
        document = test_document(now)
        await post_document(session, receiver, Event.TEST, str(document["id"]), encode(document), now=now)
        signed = "signed" if receiver.secret is not None else "unsigned"
        return f"{receiver.label} accepted a {signed} test document"


def send_test(receiver: Receiver, timeout_s: float | None = None) -> TrialResult:
    """Deliver one test to ``receiver`` within ``timeout_s`` (default: its own timeout, plus a little for the
    connection); failures are returned, never raised."""
    limit = (receiver.timeout_s + 1.0) if timeout_s is None else timeout_s
    started = time.monotonic()

    async def bounded() -> str:
        return await asyncio.wait_for(_deliver(receiver, time.time()), limit)

    try:
        message = asyncio.run(bounded())
        ok = True
    except TimeoutError:
        message, ok = f"{receiver.label} did not answer within {limit:g} s", False
    except DeliveryError as exc:
        message, ok = str(exc), False
    return TrialResult(ok, message, time.monotonic() - started)
