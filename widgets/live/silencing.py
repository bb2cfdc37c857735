"""Maintenance from the fleet panel: right-click a node, *Silence…*, choose the node or its rack, hours and why.

The silence is made by the notifier (an Alertmanager silence when one is configured, else a local one) on a
worker thread: Alertmanager may be slow or down, and the window never waits for it. The answer, or the one
sentence that says why not, goes to the status bar. Silenced incidents stay listed, dimmed; only telling stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from console.notify.schema import NotifyError
from console.notify.silences import Matcher, Silence
from console.store.ledger import operator_name
from widgets.workers import WorkError, Workers

DEFAULT_HOURS = 4.0


class SilenceDialog(QDialog):
    def __init__(self, node: str, rack: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Silence {node}")
        self.scope = QComboBox()
        self.scope.addItem(f"node {node}", ("node", node))
        if rack:
            self.scope.addItem(f"rack {rack} (every node in it)", ("rack", rack))
        self.hours = QDoubleSpinBox()
        self.hours.setRange(0.25, 24 * 90)
        self.hours.setDecimals(2)
        self.hours.setValue(DEFAULT_HOURS)
        self.hours.setSuffix(" h")
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("why: the ticket, the work being done (required)")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok_button: QPushButton = buttons.addButton("Silence", QDialogButtonBox.ButtonRole.AcceptRole)
        self.ok_button.setEnabled(False)
        self.comment.textChanged.connect(lambda text: self.ok_button.setEnabled(bool(text.strip())))
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Silence", self.scope)
        form.addRow("For", self.hours)
        form.addRow("Comment", self.comment)
        form.addRow(buttons)

    def matcher(self) -> Matcher:
        name, value = self.scope.currentData()
        return Matcher(str(name), str(value))


class SilenceMaker(Protocol):
    """What makes the silence: the notifier (``console.notify.notifier.Notifier``) or the monitoring worker's."""

    def add_silence(self, matchers: Sequence[Matcher], duration_s: float, comment: str, created_by: str) -> Silence: ...


class NodeSilencer:
    """Opens the dialog for a node and makes the silence off the GUI thread; ``say`` reports the outcome."""

    def __init__(
        self, notifier: SilenceMaker, racks: dict[str, str], say: Callable[[str], None], parent: QWidget
    ) -> None:
        self._notifier = notifier
        self._racks = racks
        self._say = say
        self._parent = parent
        self.jobs = Workers("silences", ("silence",), expected_errors=(NotifyError, ValueError), parent=parent)
        self.dialog: SilenceDialog | None = None

    def ask(self, node: str) -> None:
        dialog = SilenceDialog(node, self._racks.get(node), self._parent)
        dialog.accepted.connect(lambda: self._make(dialog))
        self.dialog = dialog
        dialog.open()

    def _make(self, dialog: SilenceDialog) -> None:
        matcher, hours, comment = dialog.matcher(), dialog.hours.value(), dialog.comment.text().strip()
        self._say(f"Silencing {matcher.text()} for {hours:g} h…")

        def work() -> Silence:
            return self._notifier.add_silence([matcher], hours * 3600, comment, operator_name())

        self.jobs.submit("silence", f"silence:{matcher.text()}", work, self._on_done)

    def _on_done(self, answer: Silence | WorkError) -> None:
        if isinstance(answer, WorkError):
            self._say(f"Not silenced: {answer.message}")
        else:
            self._say(f"Silenced {answer.describe()} ({answer.source}) until the silence ends: {answer.comment}")

    def shutdown(self) -> None:
        self.jobs.stop()
