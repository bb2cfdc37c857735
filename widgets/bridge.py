"""The one crossing from worker threads into Qt: frozen ``MonitorUpdate``s through one queued signal."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from console.monitor import MonitorUpdate


class MonitorBridge(QObject):
    """Lives in the GUI thread; ``post`` may be called from any thread (the emit is queued to the GUI thread)."""

    update_received = Signal(object)
    problem_reported = Signal(str)  # a recoverable problem for the banner (disk full, database moved aside)

    def post(self, update: MonitorUpdate) -> None:
        self.update_received.emit(update)

    def report_problem(self, message: str) -> None:
        self.problem_reported.emit(message)
