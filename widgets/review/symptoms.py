"""Cause and symptoms of the incident shown in the review: its parent (what it is a symptom of) and its children
(the symptoms it explains), each a click away. Read with the rest of the detail on a worker (``load_detail``)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from console.incidents.model import Incident, Status
from widgets.common.style import SEVERITY_COLORS, hms, incident_tooltip, readable_times, scope_text

SYMPTOM_COLUMNS = ("Severity", "Scope", "Node", "Title", "Opened", "Status")
ID_ROLE = Qt.ItemDataRole.UserRole


class SymptomsBox(QGroupBox):
    """``incident_chosen(id)`` when the operator clicks a symptom or the cause."""

    incident_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Symptoms", parent)
        self._parent_id = ""
        self.incidents: dict[str, Incident] = {}  # what the box lists, by id (the cause included)
        self.cause_label = QLabel("")
        self.cause_label.setTextFormat(Qt.TextFormat.PlainText)
        self.cause_label.setWordWrap(True)
        self.cause_button = QPushButton("Open the cause")
        self.cause_button.clicked.connect(self._on_cause_button_clicked)
        cause_row = QHBoxLayout()
        cause_row.addWidget(self.cause_label, 1)
        cause_row.addWidget(self.cause_button)
        self.list = QTreeWidget()
        self.list.setColumnCount(len(SYMPTOM_COLUMNS))
        self.list.setHeaderLabels(list(SYMPTOM_COLUMNS))
        self.list.setRootIsDecorated(False)
        self.list.setUniformRowHeights(True)
        self.list.setAlternatingRowColors(True)
        header = self.list.header()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate((70, 80, 110, 300, 90)):
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.list.setMaximumHeight(140)
        self.list.itemActivated.connect(self._on_list_item_activated)
        self.list.itemClicked.connect(self._on_list_item_activated)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(cause_row)
        layout.addWidget(self.list)
        self.show_relations(None, ())

    def show_relations(self, cause: Incident | None, symptoms: Sequence[Incident]) -> None:
        self.incidents = {child.id: child for child in symptoms}
        self._parent_id = cause.id if cause is not None else ""
        if cause is not None:
            self.incidents[cause.id] = cause
            self.cause_label.setText(f"Symptom of: {readable_times(cause.title)} ({scope_text(cause)}, {cause.status})")
        self.cause_label.setVisible(cause is not None)
        self.cause_button.setVisible(cause is not None)
        self.list.clear()
        open_count = sum(1 for child in symptoms if child.status is not Status.RESOLVED)
        self.setTitle(f"Symptoms: {len(symptoms)} ({open_count} open) — click one to open it")
        items = []
        for child in symptoms:
            item = QTreeWidgetItem(
                [
                    child.severity.label,
                    scope_text(child),
                    child.context.node,
                    readable_times(child.title),
                    hms(child.opened_at),
                    str(child.status),
                ]
            )
            item.setData(0, ID_ROLE, child.id)
            item.setForeground(0, QBrush(QColor(SEVERITY_COLORS[child.severity])))
            item.setToolTip(3, incident_tooltip(child))
            items.append(item)
        self.list.addTopLevelItems(items)
        self.list.setVisible(bool(symptoms))
        self.setVisible(bool(symptoms) or cause is not None)

    def symptom_ids(self) -> list[str]:
        items = (self.list.topLevelItem(i) for i in range(self.list.topLevelItemCount()))
        return [str(item.data(0, ID_ROLE)) for item in items if item is not None]

    def choose(self, incident_id: str) -> None:
        self.incident_chosen.emit(incident_id)

    def _on_list_item_activated(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        self.incident_chosen.emit(str(item.data(0, ID_ROLE)))

    def _on_cause_button_clicked(self) -> None:
        if self._parent_id:
            self.incident_chosen.emit(self._parent_id)
