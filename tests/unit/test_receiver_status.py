"""The receivers' status in the status bar: failing first with its error and since when, else when each last
delivered; the label refreshes itself from the notifier's statuses."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from console.notify.health import ReceiverStatus
from widgets.live.receivers import ReceiverStatusLabel, receiver_text

NOW = 1_800_000_000.0


def status(name: str, *, failing: bool = False, **fields: object) -> ReceiverStatus:
    values: dict[str, object] = {
        "name": name,
        "kind": "alertmanager",
        "url": f"http://{name}:9093",
        "last_success_at": NOW - 12,
        "last_error": None,
        "last_error_at": None,
        "queued": 0,
        "sent": 3,
        "dropped": 0,
        "failing": failing,
        **fields,
    }
    return ReceiverStatus(**values)  # type: ignore[arg-type]


def test_a_failing_receiver_is_said_first_with_its_error_and_what_waits() -> None:
    down = status("am-b", failing=True, last_error="cannot be reached", last_error_at=NOW - 60, queued=4)
    text, failing = receiver_text([status("am-a"), down], NOW)
    assert failing
    assert text == "alertmanager am-b: cannot be reached since 07:59 UTC, 4 waiting"


def test_healthy_receivers_say_when_they_last_delivered() -> None:
    text, failing = receiver_text([status("am-a"), status("hook", kind="webhook", last_success_at=None)], NOW)
    assert not failing and text == "Notify am-a: ok, 12 s ago; hook: ok, not yet"


def test_the_label_follows_the_notifier(qtbot: QtBot) -> None:
    statuses = [status("am-a")]
    label = ReceiverStatusLabel(lambda: statuses)
    qtbot.addWidget(label)
    assert label.text().startswith("Notify am-a: ok")
    statuses = [status("am-a", failing=True, last_error="HTTP 503", last_error_at=NOW)]
    label.refresh()
    assert "HTTP 503" in label.text() and "#b71c1c" in label.styleSheet()
    label.stop()
