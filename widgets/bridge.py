"""The one crossing from worker threads into Qt, and the monitor's use of it.

``Crossing`` is the only place in ``widgets/`` where a value made on another thread enters the GUI thread: the
poller's ``MonitorUpdate``s (through ``MonitorBridge``) and every worker lane's answers (``widgets.workers``) go
through one. Items posted while the GUI thread is busy travel together: at 1,000 nodes a second one queued signal
per update cost more than handling the update, and a burst of them held the event loop for one event each.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from console.live.monitor import MonitorUpdate


class Crossing(QObject):
    """Lives in the GUI thread (create it there); ``post`` may be called from any thread.

    ``delivered`` carries, on the GUI thread, a tuple of everything posted since the last delivery, oldest first.
    Posted items should be immutable (frozen dataclasses): the poster must not touch them after posting.
    """

    delivered = Signal(object)  # tuple of posted items, oldest first
    _flush_requested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._pending: list[object] = []
        # Emitted from a worker thread, this signal is queued to the GUI thread that owns this object.
        self._flush_requested.connect(self._on_self_flush_requested)

    def post(self, item: object) -> None:
        with self._lock:
            self._pending.append(item)
            first = len(self._pending) == 1
        if first:  # later ones ride along until the GUI thread takes the batch
            with contextlib.suppress(RuntimeError):  # the crossing was deleted: nobody is left to deliver to
                self._flush_requested.emit()

    def _on_self_flush_requested(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self.delivered.emit(tuple(batch))


@dataclass(frozen=True, slots=True)
class ProblemReport:
    """A recoverable problem seen on a worker thread, for the banner (disk full, database moved aside)."""

    message: str


class MonitorBridge(QObject):
    """The poller's way into the window: ``post`` and ``report_problem`` from any thread, signals on the GUI one.

    ``deliver`` (GUI thread only) hands over a batch that is already on the GUI thread: the monitoring worker's,
    read from its pipe by ``widgets.monitor_client``.
    """

    updates_received = Signal(object)  # a tuple of MonitorUpdate, oldest first
    problem_reported = Signal(str)
    status_reported = Signal(str)  # a passing note for the status bar (the monitoring process is back)
    worker_lost = Signal(str)  # the monitoring process died; it is being restarted

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._crossing = Crossing(self)
        self._crossing.delivered.connect(self._on_crossing_delivered)

    def post(self, update: MonitorUpdate) -> None:
        self._crossing.post(update)

    def report_problem(self, message: str) -> None:
        self._crossing.post(ProblemReport(message))

    def deliver(self, updates: tuple[MonitorUpdate, ...]) -> None:
        self.updates_received.emit(updates)

    def _on_crossing_delivered(self, batch: Sequence[object]) -> None:
        updates = tuple(item for item in batch if isinstance(item, MonitorUpdate))
        if updates:
            self.updates_received.emit(updates)
        for item in batch:
            if isinstance(item, ProblemReport):
                self.problem_reported.emit(item.message)
