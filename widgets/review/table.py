"""The incident log table: newest first, paged lazily over the store's keyset cursors, never read on the GUI thread.

``fetchMore`` only asks for the next page; the rows arrive later through ``Workers``. While a page is in
flight ``canFetchMore`` says no, so a view scrolled to the bottom asks once, not once per scroll event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont

from console.incidents.model import Incident, Outcome, Status
from console.store import IncidentFilter, IncidentPage, IncidentStore, PageCursor
from widgets.common.style import (
    incident_tooltip,
    nodes_text,
    readable_times,
    scope_text,
    severity_color,
    severity_text_color,
)
from widgets.workers import WorkError, Workers

PAGE_SIZE = 100
COLUMNS = (
    "Severity",
    "Status",
    "Site",
    "Provider",
    "Scope",
    "Nodes",
    "Kind / rule",
    "Code",
    "Title",
    "Symptoms",
    "Opened (UTC)",
    "Last seen (UTC)",
    "Count",
    "Outcome",
)
COLUMN_WIDTHS = (74, 80, 130, 84, 100, 150, 140, 50, 320, 66, 140, 140, 50, 90)
TITLE_COLUMN = COLUMNS.index("Title")
_Index = QModelIndex | QPersistentModelIndex


def utc(stamp: float | None) -> str:
    return "" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))


def gpu_text(incident: Incident) -> str:
    index = incident.context.gpu_index
    return "node" if index is None else str(index)


def outcome_label(outcome: Outcome | None) -> str:
    return "" if outcome is None else str(outcome).replace("_", " ")


def outcome_text(incident: Incident) -> str:
    return outcome_label(incident.outcome)


@dataclass(frozen=True, slots=True)
class CountedPage:
    """A page and the symptom count of each of its incidents, read together on the query lane."""

    page: IncidentPage
    symptoms: dict[str, int]


def read_page(store: IncidentStore, flt: IncidentFilter, after: PageCursor | None, limit: int) -> CountedPage:
    """Run on a worker: one page, and how many symptoms each of its rows has."""
    page = store.query(flt, after=after, limit=limit)
    return CountedPage(page, store.symptom_counts([incident.id for incident in page.incidents]))


def _cells(incident: Incident, symptoms: int) -> tuple[str, ...]:
    ctx = incident.context
    title = readable_times(incident.title)
    return (
        incident.severity.label,
        str(incident.status),
        ctx.site,
        ctx.provider,
        scope_text(incident),
        nodes_text(incident),  # the GPU index is in the scope ("GPU 3")
        f"{incident.kind} / {incident.rule}" if incident.kind != incident.rule else incident.kind,
        incident.code,
        title if incident.parent_id is None else f"↳ {title}",  # a symptom, listed with "Show symptoms"
        f"{symptoms:,}" if symptoms else "",
        utc(incident.opened_at),
        utc(incident.last_seen_at),
        f"{incident.count:,}",
        outcome_text(incident),
    )


class IncidentTableModel(QAbstractTableModel):
    loading_changed = Signal(bool)  # a page request went out (True) or its answer arrived (False)
    page_failed = Signal(str)
    page_loaded = Signal(int)  # rows now held

    def __init__(self, store: IncidentStore, jobs: Workers, page_size: int = PAGE_SIZE) -> None:
        super().__init__()
        self._store = store
        self._jobs = jobs
        self._page_size = page_size
        self._filter = IncidentFilter()
        self._rows: list[Incident] = []
        self._row_of: dict[str, int] = {}
        self._symptoms: dict[str, int] = {}  # incident id -> symptoms (children) in the store, for held rows
        self._next: PageCursor | None = None
        self._exhausted = True  # nothing to fetch until the first query
        self._in_flight = False
        self._bold = QFont()
        self._bold.setBold(True)

    # -- querying ----

    @property
    def filter(self) -> IncidentFilter:
        return self._filter

    @property
    def loading(self) -> bool:
        return self._in_flight

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def set_filter(self, flt: IncidentFilter) -> None:
        """Forget the rows and ask for the first page of ``flt`` (an older filter's pages are then dropped)."""
        self.beginResetModel()
        self._filter = flt
        self._rows = []
        self._row_of = {}
        self._symptoms = {}
        self._next = None
        self._exhausted = False
        self._in_flight = False
        self.endResetModel()
        self._request()

    def canFetchMore(self, parent: _Index = QModelIndex()) -> bool:  # noqa: B008 - Qt's signature
        return not parent.isValid() and not self._exhausted and not self._in_flight

    def fetchMore(self, parent: _Index = QModelIndex()) -> None:  # noqa: B008
        if self.canFetchMore(parent):
            self._request()

    def _request(self) -> None:
        store, flt, after, limit = self._store, self._filter, self._next, self._page_size
        self._in_flight = True
        self._jobs.submit("query", "page", lambda: read_page(store, flt, after, limit), self._on_page)
        self.loading_changed.emit(True)

    def _on_page(self, counted: CountedPage | WorkError) -> None:
        self._in_flight = False
        if isinstance(counted, WorkError):
            self._exhausted = True  # retried by the next filter change or refresh, not in a loop
            self.loading_changed.emit(False)
            self.page_failed.emit(counted.message)
            return
        answer = counted.page
        self._symptoms.update(counted.symptoms)
        fresh = [incident for incident in answer.incidents if incident.id not in self._row_of]
        if fresh:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(fresh) - 1)
            for offset, incident in enumerate(fresh):
                self._row_of[incident.id] = first + offset
            self._rows.extend(fresh)
            self.endInsertRows()
        self._next = answer.next
        self._exhausted = answer.next is None
        self.loading_changed.emit(False)
        self.page_loaded.emit(len(self._rows))

    def replace(self, incident: Incident) -> None:
        """Show a newer state of a row already held (after an acknowledge or resolve)."""
        row = self._row_of.get(incident.id)
        if row is None:
            return
        self._rows[row] = incident
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    # -- reading ----

    def incident(self, row: int) -> Incident:
        return self._rows[row]

    def incidents(self) -> list[Incident]:
        return list(self._rows)

    def symptom_count(self, incident_id: str) -> int:
        return self._symptoms.get(incident_id, 0)

    def row_of(self, incident_id: str) -> int | None:
        return self._row_of.get(incident_id)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        incident = self._rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return _cells(incident, self._symptoms.get(incident.id, 0))[column]
        if column == 0:
            if role == Qt.ItemDataRole.BackgroundRole:
                return QBrush(severity_color(incident.severity))
            if role == Qt.ItemDataRole.ForegroundRole:
                return QBrush(QColor(severity_text_color(incident.severity)))
            if role == Qt.ItemDataRole.FontRole:
                return self._bold
        if role == Qt.ItemDataRole.ForegroundRole and incident.status is Status.RESOLVED and column != 0:
            return QBrush(QColor("#5f5f5f"))  # resolved rows recede; open ones stand out
        if role == Qt.ItemDataRole.ToolTipRole:
            return incident_tooltip(incident)
        if role == Qt.ItemDataRole.TextAlignmentRole and COLUMNS[column] in ("Count", "Code", "Symptoms"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None
