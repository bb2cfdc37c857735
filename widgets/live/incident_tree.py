"""The open incidents as faults: root incidents at the top level, their symptoms beneath them (a tree).

Every level is kept sorted worst first, newest first within a severity, and rows that sort equal in the order they
arrived. Rows are found by binary search over their sort keys: a linear scan per change made the burst of incidents
opening at start-up quadratic (2,000 of them held the GUI thread 176 ms). An update changes one row (one
``dataChanged`` over that row), a new incident inserts one, a resolution removes one, a new parent or an escalation
moves one (``beginMoveRows``: what the operator expanded stays expanded). Nothing resets the model.

A silenced incident (a maintenance silence in Alertmanager or the console's own, ``silence_of``) is still shown,
dimmed, its status "silenced" and the silence's comment and end in its tooltip: it is not lost, only not told.

Changes arrive in any order: a symptom whose parent is not known yet shows at the top level, and moves under its
parent when the parent arrives; the symptoms of a resolved parent come back to the top level.

An index's ``internalId`` names the level it sits in: 0 the top level, otherwise the number given to the incident
whose symptoms that level holds.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from console.incidents.model import ChangeKind, Incident, IncidentChange, Status
from console.notify.silences import SilenceMark
from widgets.common.style import hms, incident_tooltip, nodes_text, readable_times, scope_text, severity_color

COLUMNS = ("Severity", "Scope", "Site", "Nodes", "Title", "Symptoms", "Started", "Count", "Status", "Action")
COLUMN_WIDTHS = (90, 150, 110, 170, 420, 66, 95, 50, 60, 380)
TITLE_COLUMN = COLUMNS.index("Title")
SYMPTOMS_COLUMN = COLUMNS.index("Symptoms")
_Index = QModelIndex | QPersistentModelIndex
_Key = tuple[int, float]
_TOP = 0  # internalId of the top level
SILENCED_COLOR = "#9e9e9e"
SilenceOf = Callable[[Incident], SilenceMark | None]


def _no_silences(_incident: Incident) -> SilenceMark | None:
    return None


def silence_text(mark: SilenceMark) -> str:
    ends = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(mark.ends_at))
    return f"Silenced until {ends} by {mark.created_by or 'someone'} ({mark.source}): {mark.comment}"


def sort_key(incident: Incident) -> _Key:
    return (-int(incident.severity), -incident.opened_at)


class _Level:
    """One sorted list of rows: the top level, or the symptoms of one incident."""

    __slots__ = ("ids", "keys", "number", "owner")

    def __init__(self, number: int, owner: str | None) -> None:
        self.number = number  # the internalId of this level's indexes
        self.owner = owner  # whose symptoms these are (None: the top level)
        self.ids: list[str] = []
        self.keys: list[_Key] = []  # sort_key of each row, in row order

    def find(self, incident_id: str, key: _Key) -> int:
        for row in range(bisect_left(self.keys, key), bisect_right(self.keys, key)):
            if self.ids[row] == incident_id:  # rows with equal keys sit together: check only those
                return row
        raise KeyError(incident_id)


class OpenIncidentsModel(QAbstractItemModel):
    def __init__(self) -> None:
        super().__init__()
        self._incidents: dict[str, Incident] = {}  # every open incident shown
        self._key_of: dict[str, _Key] = {}  # the sort key its row was placed with
        self._level_of: dict[str, _Level] = {}  # the level its row sits in
        self._symptoms: dict[str, _Level] = {}  # incident id -> the level of its symptoms (once it has had one)
        self._levels: dict[int, _Level] = {_TOP: _Level(_TOP, None)}
        self._numbers = iter(range(1, 2**62))
        self._below: dict[str, int] = {}  # incident id -> its open symptoms (direct, as the log and the CLI count)
        self._waiting: dict[str, set[str]] = {}  # parent id not shown -> its symptoms shown at the top level
        self._bold = QFont()
        self._bold.setBold(True)
        self.silence_of: SilenceOf = _no_silences  # the notifier's, when there is one (a lock-free read)

    # -- reading ----

    @property
    def top(self) -> _Level:
        return self._levels[_TOP]

    def __len__(self) -> int:
        """Open incidents held, symptoms included."""
        return len(self._incidents)

    @property
    def fault_count(self) -> int:
        """Top-level rows: the faults the operator sees (a symptom whose cause is not known yet counts as one)."""
        return len(self.top.ids)

    def incident(self, row: int) -> Incident:
        """The incident of top-level row ``row``."""
        return self._incidents[self.top.ids[row]]

    def incident_at(self, index: _Index) -> Incident:
        return self._incidents[self._levels[index.internalId()].ids[index.row()]]

    def symptoms(self, incident_id: str) -> list[Incident]:
        """The symptoms shown directly beneath ``incident_id``, in row order."""
        level = self._symptoms.get(incident_id)
        return [] if level is None else [self._incidents[i] for i in level.ids]

    def symptom_count(self, incident_id: str) -> int:
        return self._below.get(incident_id, 0)

    def index_of(self, incident_id: str) -> QModelIndex:
        level = self._level_of.get(incident_id)
        if level is None:
            return QModelIndex()
        return self.createIndex(level.find(incident_id, self._key_of[incident_id]), 0, level.number)

    def walk(self) -> Iterator[tuple[int, Incident]]:
        """Every row, depth first in display order, with its depth (0 for the top level)."""
        stack = [(0, i) for i in reversed(self.top.ids)]
        while stack:
            depth, incident_id = stack.pop()
            yield depth, self._incidents[incident_id]
            level = self._symptoms.get(incident_id)
            if level is not None:
                stack.extend((depth + 1, i) for i in reversed(level.ids))

    # -- QAbstractItemModel ----

    def _level_below(self, parent: _Index) -> _Level | None:
        if not parent.isValid():
            return self.top
        if parent.column() != 0:
            return None
        return self._symptoms.get(self._levels[parent.internalId()].ids[parent.row()])

    def index(self, row: int, column: int, parent: _Index = QModelIndex()) -> QModelIndex:  # noqa: B008 - Qt's
        level = self._level_below(parent)
        if level is None or not 0 <= row < len(level.ids) or not 0 <= column < len(COLUMNS):
            return QModelIndex()
        return self.createIndex(row, column, level.number)

    def parent(self, child: _Index = QModelIndex()) -> QModelIndex:  # type: ignore[override]  # noqa: B008
        if not child.isValid() or child.internalId() == _TOP:
            return QModelIndex()
        owner = self._levels[child.internalId()].owner
        assert owner is not None
        return self.index_of(owner)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        level = self._level_below(parent)
        return 0 if level is None else len(level.ids)

    def hasChildren(self, parent: _Index = QModelIndex()) -> bool:  # noqa: B008
        return self.rowCount(parent) > 0

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        incident = self.incident_at(index)
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if COLUMNS[column] == "Status" and self.silence_of(incident) is not None:
                return "silenced"
            return self._cell(incident, column, top=index.internalId() == _TOP)
        if role in (Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.ToolTipRole):
            mark = self.silence_of(incident)
            if mark is not None:
                if role == Qt.ItemDataRole.ToolTipRole:
                    return f"{silence_text(mark)}\n\n{incident_tooltip(incident)}"
                return QBrush(QColor(SILENCED_COLOR))
        if role == Qt.ItemDataRole.ForegroundRole and column == 0:
            return QBrush(severity_color(incident.severity))
        if role == Qt.ItemDataRole.FontRole and index.internalId() == _TOP and column in (0, TITLE_COLUMN):
            return self._bold  # the faults stand out from the symptoms beneath them
        if role == Qt.ItemDataRole.ForegroundRole and index.internalId() != _TOP:
            return QBrush(QColor("#555555"))
        if role == Qt.ItemDataRole.ToolTipRole:
            return incident_tooltip(incident)
        return None

    def _cell(self, incident: Incident, column: int, *, top: bool) -> str:
        name = COLUMNS[column]
        if name == "Severity":
            label = incident.severity.label.upper() if top else incident.severity.label
            return label if top or incident.parent_id is None else f"{label} · symptom"
        if name == "Scope":
            return scope_text(incident)
        if name == "Site":
            return incident.context.site
        if name == "Nodes":
            return nodes_text(incident)
        if name == "Title":
            return readable_times(incident.title)
        if name == "Symptoms":
            below = self._below.get(incident.id, 0)
            return str(below) if below else ""
        if name == "Started":
            return hms(incident.opened_at)
        if name == "Count":
            return str(incident.count)
        if name == "Status":
            return str(incident.status)
        return incident.recommended_action

    def refresh_silences(self) -> None:
        """Silences begin and end without any incident changing: repaint the top level's rows (cheap, no reads)."""
        rows = self.rowCount()
        if rows:
            self.dataChanged.emit(self.index(0, 0), self.index(rows - 1, len(COLUMNS) - 1))

    # -- changes ----

    def apply(self, changes: Iterable[IncidentChange]) -> None:
        for change in changes:
            if change.kind == ChangeKind.EVIDENCE:
                continue
            incident = change.incident
            old = self._incidents.get(incident.id)
            if incident.status == Status.RESOLVED:
                if old is not None:
                    self._resolve(old)
                continue
            if old is not None and old.parent_id != incident.parent_id and old.parent_id is not None:
                self._stop_waiting(old.id, old.parent_id)
            self._incidents[incident.id] = incident
            target = self._target_level(incident)
            if old is None:
                self._insert(incident.id, target)
                self._adopt(incident.id)
            else:
                self._move(incident.id, target, old)

    def _adopt(self, parent_id: str) -> None:
        """The symptoms that arrived before ``parent_id`` move under it (unless that would make a cycle)."""
        waiting = self._waiting.pop(parent_id, set())
        for child in sorted(waiting):
            if self._is_within(parent_id, child):
                self._waiting.setdefault(parent_id, set()).add(child)
                continue
            self._move(child, self._symptoms_level(parent_id))

    def _target_level(self, incident: Incident) -> _Level:
        """Where its row belongs: beneath its parent when that is shown (and not beneath itself), else on top."""
        parent_id = incident.parent_id
        if parent_id is None:
            return self.top
        if parent_id not in self._incidents or self._is_within(parent_id, incident.id):
            self._waiting.setdefault(parent_id, set()).add(incident.id)
            return self.top
        self._stop_waiting(incident.id, parent_id)
        return self._symptoms_level(parent_id)

    def _is_within(self, incident_id: str, ancestor: str) -> bool:
        """``incident_id`` is ``ancestor`` or shown beneath it (a parent there would make a cycle)."""
        current: str | None = incident_id
        while current is not None:
            if current == ancestor:
                return True
            level = self._level_of.get(current)
            current = None if level is None else level.owner
        return False

    def _stop_waiting(self, incident_id: str, parent_id: str) -> None:
        waiting = self._waiting.get(parent_id)
        if waiting is not None:
            waiting.discard(incident_id)
            if not waiting:
                del self._waiting[parent_id]

    def _symptoms_level(self, incident_id: str) -> _Level:
        level = self._symptoms.get(incident_id)
        if level is None:
            level = _Level(next(self._numbers), incident_id)
            self._symptoms[incident_id] = level
            self._levels[level.number] = level
        return level

    def _parent_index(self, level: _Level) -> QModelIndex:
        return QModelIndex() if level.owner is None else self.index_of(level.owner)

    def _insert(self, incident_id: str, level: _Level) -> None:
        key = sort_key(self._incidents[incident_id])
        at = bisect_right(level.keys, key)  # after the rows that sort equal, as they arrived
        self.beginInsertRows(self._parent_index(level), at, at)
        level.ids.insert(at, incident_id)
        level.keys.insert(at, key)
        self._key_of[incident_id] = key
        self._level_of[incident_id] = level
        self.endInsertRows()
        self._count_beneath(level.owner, 1)

    def _move(self, incident_id: str, target: _Level, previous: Incident | None = None) -> None:
        """Put the row where its (new) key and level say; in place when neither changed. ``previous`` is what the
        row showed before an update (None: only its place changes)."""
        source = self._level_of[incident_id]
        old_key, key = self._key_of[incident_id], sort_key(self._incidents[incident_id])
        row = source.find(incident_id, old_key)
        at = bisect_right(target.keys, key)
        if target is source:
            at -= 1 if row < at else 0  # where it lands once taken out
            if key == old_key or at == row:  # an update in place keeps its position among equal keys
                at = row
                source.keys[row] = key
                self._key_of[incident_id] = key
                self._emit_changed(source, row, previous)
                return
        before = at + 1 if target is source and at > row else at  # Qt counts the destination before the removal
        self._count_beneath(source.owner, -1)
        moved = self.beginMoveRows(self._parent_index(source), row, row, self._parent_index(target), before)
        assert moved, (incident_id, row, before)
        del source.ids[row]
        del source.keys[row]
        target.ids.insert(at, incident_id)
        target.keys.insert(at, key)
        self._key_of[incident_id] = key
        self._level_of[incident_id] = target
        self.endMoveRows()
        self._count_beneath(target.owner, 1)
        self._emit_changed(target, at, previous)

    def _emit_changed(self, level: _Level, row: int, previous: Incident | None) -> None:
        """One ``dataChanged`` over the cells an update changed, from the first to the last (none: no signal). A
        tree view asks for every cell of the range again, and at 1,000 nodes a second most updates change only
        the count."""
        if previous is None:
            return
        top = level.number == _TOP
        current = self._incidents[level.ids[row]]
        changed = [
            c for c in range(len(COLUMNS)) if self._cell(current, c, top=top) != self._cell(previous, c, top=top)
        ]
        if changed:
            first, last = changed[0], changed[-1]
            self.dataChanged.emit(self.createIndex(row, first, level.number), self.createIndex(row, last, level.number))

    def _resolve(self, incident: Incident) -> None:
        """Take its row out; its symptoms still open come back to the top level until a cause is known."""
        level = self._symptoms.get(incident.id)
        if level is not None:
            for child in list(level.ids):
                self._move(child, self.top)
                self._waiting.setdefault(incident.id, set()).add(child)
            del self._symptoms[incident.id]
            del self._levels[level.number]
        if incident.parent_id is not None:
            self._stop_waiting(incident.id, incident.parent_id)
        source = self._level_of.pop(incident.id)
        key = self._key_of.pop(incident.id)
        row = source.find(incident.id, key)
        self.beginRemoveRows(self._parent_index(source), row, row)
        del source.ids[row]
        del source.keys[row]
        del self._incidents[incident.id]
        self.endRemoveRows()
        self._below.pop(incident.id, None)
        self._count_beneath(source.owner, -1)

    def _count_beneath(self, owner: str | None, delta: int) -> None:
        """Add ``delta`` symptoms to ``owner``; repaint only its Symptoms cell."""
        if owner is None:
            return
        self._below[owner] = self._below.get(owner, 0) + delta
        level = self._level_of[owner]
        row = level.find(owner, self._key_of[owner])
        cell = self.createIndex(row, SYMPTOMS_COLUMN, level.number)
        self.dataChanged.emit(cell, cell)
