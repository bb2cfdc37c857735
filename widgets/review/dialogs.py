"""Acknowledge and resolve dialogs: a note, and for a resolution the fix applied (an action of the catalog,
resources/remediation/actions.toml) and its outcome (fixed, not fixed, workaround)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from console.incidents.model import Incident, Outcome

OUTCOMES: tuple[tuple[str, Outcome], ...] = (
    ("Fixed: the fix made the problem go away", Outcome.FIXED),
    ("Not fixed: what was tried did not help", Outcome.NOT_FIXED),
    ("Workaround: contained, cause not fixed", Outcome.WORKAROUND),
)


class NoteDialog(QDialog):
    """Asks for a note about one incident; with ``ask_outcome`` also for the outcome of the fix."""

    def __init__(
        self,
        incident: Incident,
        *,
        ask_outcome: bool,
        parent: QWidget | None = None,
        actions: Sequence[tuple[str, str]] = (("other", "Other (say what in the note)"),),
        suggested: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.incident = incident
        self.setWindowTitle("Resolve incident" if ask_outcome else "Acknowledge incident")
        self.setModal(True)
        self.resize(560, 260)
        subject = QLabel(f"{incident.context.node}: {incident.title}")
        subject.setTextFormat(Qt.TextFormat.PlainText)
        subject.setWordWrap(True)
        self.note = QPlainTextEdit()
        self.note.setPlaceholderText(
            "What was done, and what the next operator should know (searchable later)"
            if ask_outcome
            else "Optional: who is on it, what happens next"
        )
        self.outcome = QComboBox()
        for label, _ in OUTCOMES:
            self.outcome.addItem(label)
        self.outcome.setVisible(ask_outcome)
        # The fix applied: what the ledger verifies (did the same fault come back on this GPU in the window?).
        self.action = QComboBox()
        for action_id, label in actions:
            self.action.addItem(label, action_id)
        if suggested is not None and (index := self.action.findData(suggested)) >= 0:
            self.action.setCurrentIndex(index)
        self.action.setVisible(ask_outcome)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok_button: QPushButton = buttons.addButton(
            "Resolve" if ask_outcome else "Acknowledge", QDialogButtonBox.ButtonRole.AcceptRole
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow(subject)
        form.addRow("Note", self.note)
        if ask_outcome:
            form.addRow("Fix applied", self.action)
            form.addRow("Outcome", self.outcome)
            # A resolution without a note teaches the next operator nothing: require one.
            self.note.textChanged.connect(self._on_note_text_changed)
            self._on_note_text_changed()
        form.addRow(buttons)

    def note_text(self) -> str:
        return self.note.toPlainText().strip()

    def chosen_action(self) -> str:
        return str(self.action.currentData() or "other")

    def choose_action(self, action: str) -> None:
        self.action.setCurrentIndex(max(0, self.action.findData(action)))

    def chosen_outcome(self) -> Outcome:
        return OUTCOMES[self.outcome.currentIndex()][1]

    def choose_outcome(self, outcome: Outcome) -> None:
        self.outcome.setCurrentIndex([value for _, value in OUTCOMES].index(outcome))

    def _on_note_text_changed(self) -> None:
        self.ok_button.setEnabled(bool(self.note_text()))
