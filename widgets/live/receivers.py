"""The receivers' status in the main window's status bar: one label, worst first ("Alertmanager am: cannot be
reached since 14:02 UTC"), refreshed from ``Notifier.statuses()`` (a frozen copy: no lock, no I/O) on a timer."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QWidget

from console.notify.health import ReceiverStatus

REFRESH_MS = 2000


def receiver_text(statuses: Sequence[ReceiverStatus], now: float) -> tuple[str, bool]:
    """The label's text and whether any receiver is failing."""
    failing = [s for s in statuses if s.failing]
    if failing:
        first = failing[0]
        since = time.strftime("%H:%M UTC", time.gmtime(first.last_error_at)) if first.last_error_at else "start"
        more = f" (+{len(failing) - 1} more failing)" if len(failing) > 1 else ""
        queued = f", {first.queued} waiting" if first.queued else ""
        return f"{first.kind} {first.name}: {first.last_error} since {since}{queued}{more}", True
    parts = []
    for status in statuses:
        age = "not yet" if status.last_success_at is None else f"{max(0, now - status.last_success_at):.0f} s ago"
        parts.append(f"{status.name}: ok, {age}")
    return "Notify " + "; ".join(parts), False


class ReceiverStatusLabel(QLabel):
    def __init__(self, statuses: Callable[[], Sequence[ReceiverStatus]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._statuses = statuses
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()

    def refresh(self) -> None:
        text, failing = receiver_text(self._statuses(), time.time())
        self.setText(text)
        self.setStyleSheet("color: #b71c1c; font-weight: 600;" if failing else "color: #2e7d32;")

    def stop(self) -> None:
        self._timer.stop()
