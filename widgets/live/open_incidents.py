"""Open incidents, worst first: severity, site, node, GPU, kind, started, count. Double-click selects the GPU."""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QVBoxLayout, QWidget

from console.incidents.model import ChangeKind, Incident, IncidentChange, Status
from widgets.common.style import incident_tooltip, severity_color
from widgets.common.views import TableView

COLUMNS = ("Severity", "Site", "Node", "GPU", "Kind", "Title", "Started (UTC)", "Count", "Status")
COLUMN_WIDTHS = (70, 130, 120, 60, 110, 400, 100, 55, 90)
_Index = QModelIndex | QPersistentModelIndex


def _sort_key(incident: Incident) -> tuple[int, float]:
    return (-int(incident.severity), -incident.opened_at)


class OpenIncidentsModel(QAbstractTableModel):
    """Rows are kept sorted; an update changes one row, a new incident inserts one, a resolution removes one.

    Rows are found by binary search over their sort keys: a linear scan per change made the burst of incidents
    opening at start-up quadratic (2,000 of them held the GUI thread 176 ms).
    """

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[Incident] = []
        self._keys: list[tuple[int, float]] = []  # _sort_key of each row, in row order
        self._key_of: dict[str, tuple[int, float]] = {}  # incident id -> the sort key of its row

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def incident(self, row: int) -> Incident:
        return self._rows[row]

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        incident = self._rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            ctx = incident.context
            values = (
                incident.severity.label,
                ctx.site,
                ctx.node,
                f"GPU {ctx.gpu_index}" if ctx.gpu_index is not None else "node",
                incident.kind,
                incident.title,
                time.strftime("%H:%M:%S", time.gmtime(incident.opened_at)),
                str(incident.count),
                str(incident.status),
            )
            return values[column]
        if role == Qt.ItemDataRole.ForegroundRole and column == 0:
            return QBrush(severity_color(incident.severity))
        if role == Qt.ItemDataRole.ToolTipRole:
            return incident_tooltip(incident)
        return None

    def _row_of(self, incident_id: str) -> int | None:
        key = self._key_of.get(incident_id)
        if key is None:
            return None
        for row in range(bisect_left(self._keys, key), bisect_right(self._keys, key)):
            if self._rows[row].id == incident_id:  # rows with equal keys sit together: check only those
                return row
        return None

    def _remove(self, row: int) -> None:
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._key_of[self._rows[row].id]
        del self._rows[row]
        del self._keys[row]
        self.endRemoveRows()

    def apply(self, changes: Iterable[IncidentChange]) -> None:
        for change in changes:
            if change.kind == ChangeKind.EVIDENCE:
                continue
            incident = change.incident
            row = self._row_of(incident.id)
            if incident.status == Status.RESOLVED:
                if row is not None:
                    self._remove(row)
                continue
            key = _sort_key(incident)
            if row is not None and self._keys[row] == key:
                self._rows[row] = incident
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
                continue
            if row is not None:  # severity escalated: move it
                self._remove(row)
            at = bisect_right(self._keys, key)  # after the rows that sort equal, as they arrived
            self.beginInsertRows(QModelIndex(), at, at)
            self._rows.insert(at, incident)
            self._keys.insert(at, key)
            self._key_of[incident.id] = key
            self.endInsertRows()


class IncidentsPanel(QWidget):
    gpu_requested = Signal(str, str)  # node, GPU UUID ("" for a node-level incident)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = OpenIncidentsModel()
        self.view = TableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setVisible(False)
        self.view.setWordWrap(False)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate(COLUMN_WIDTHS):
            header.resizeSection(column, width)
        header.setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.doubleClicked.connect(self._on_view_double_clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def apply(self, changes: Iterable[IncidentChange]) -> None:
        self.model.apply(changes)

    def _on_view_double_clicked(self, index: QModelIndex) -> None:
        incident = self.model.incident(index.row())
        self.gpu_requested.emit(incident.context.node, incident.context.gpu_uuid or "")
