"""The one crossing from worker threads into Qt: frozen ``MonitorUpdate``s, in batches, through one signal."""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal

from console.live.monitor import MonitorUpdate


class MonitorBridge(QObject):
    """Lives in the GUI thread; ``post`` may be called from any thread.

    Updates posted while the GUI thread is busy travel together: at 1,000 nodes a second one queued signal per
    update cost more than handling the update, and a burst of them held the event loop for one event each.
    """

    updates_received = Signal(object)  # a tuple of MonitorUpdate, oldest first
    problem_reported = Signal(str)  # a recoverable problem for the banner (disk full, database moved aside)
    _flush_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._pending: list[MonitorUpdate] = []
        self._flush_requested.connect(self._flush)

    def post(self, update: MonitorUpdate) -> None:
        with self._lock:
            self._pending.append(update)
            first = len(self._pending) == 1
        if first:  # later ones ride along until the GUI thread takes the batch
            self._flush_requested.emit()

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self.updates_received.emit(tuple(batch))

    def report_problem(self, message: str) -> None:
        self.problem_reported.emit(message)
