"""The one crossing from worker threads into Qt: frozen ``MonitorUpdate``s through one queued signal."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from console.monitor import MonitorUpdate


class MonitorBridge(QObject):
    """Lives in the GUI thread; ``post`` may be called from any thread (the emit is queued to the GUI thread)."""

    update_received = Signal(object)

    def post(self, update: MonitorUpdate) -> None:
        self.update_received.emit(update)
