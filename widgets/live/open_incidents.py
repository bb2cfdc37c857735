"""Open faults, worst first: each root incident with its scope, member nodes and symptom count, expandable to its
symptoms. Double-click selects the GPU (or node) in the charts."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QModelIndex, QTimer, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QVBoxLayout, QWidget

from console.incidents.model import IncidentChange
from widgets.common.views import TreeView
from widgets.live.incident_tree import COLUMN_WIDTHS, TITLE_COLUMN, OpenIncidentsModel, SilenceOf

SILENCE_REFRESH_MS = 5000

__all__ = ["IncidentsPanel", "OpenIncidentsModel"]


class IncidentsPanel(QWidget):
    gpu_requested = Signal(str, str)  # node, GPU UUID ("" for a node-level incident)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = OpenIncidentsModel()
        self.view = TreeView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setAlternatingRowColors(True)
        self.view.setUniformRowHeights(True)  # the view need not ask every row its height
        self.view.setWordWrap(False)
        self.view.setExpandsOnDoubleClick(False)  # double-click charts the GPU; the arrow expands
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate(COLUMN_WIDTHS):
            header.resizeSection(column, width)
        header.setSectionResizeMode(TITLE_COLUMN, QHeaderView.ResizeMode.Stretch)
        self.view.doubleClicked.connect(self._on_view_double_clicked)
        self._silence_timer = QTimer(self)
        self._silence_timer.setInterval(SILENCE_REFRESH_MS)
        self._silence_timer.timeout.connect(self.model.refresh_silences)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def apply(self, changes: Iterable[IncidentChange]) -> None:
        self.model.apply(changes)

    def show_silences(self, silence_of: SilenceOf) -> None:
        """Dim the silenced incidents (``silence_of``: the notifier's), kept current every few seconds."""
        self.model.silence_of = silence_of
        self._silence_timer.start()
        self.model.refresh_silences()

    def shutdown(self) -> None:
        self._silence_timer.stop()

    def reveal(self, incident_id: str) -> bool:
        """Select the incident's row (its causes expanded) and chart it; False when it is no longer open."""
        index = self.model.index_of(incident_id)
        if not index.isValid():
            return False
        parent = index.parent()
        while parent.isValid():
            self.view.expand(parent)
            parent = parent.parent()
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)
        self._on_view_double_clicked(index)
        return True

    def _on_view_double_clicked(self, index: QModelIndex) -> None:
        incident = self.model.incident_at(index)
        node = incident.context.node or incident.member_nodes[0]
        self.gpu_requested.emit(node, incident.context.gpu_uuid or "")
