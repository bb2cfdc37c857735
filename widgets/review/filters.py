"""The review's filter bar: time range, place, hardware, severity, rule, status and free text -> IncidentFilter.

Edits are debounced (typing a node name re-queries once, after a pause), and the completers offer values already
seen in the log's loaded rows, so the bar never reads the database itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from PySide6.QtCore import QDateTime, QStringListModel, Qt, QTimer, QTimeZone, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QDateTimeEdit,
    QGridLayout,
    QLabel,
    QLineEdit,
    QWidget,
)

from console.incidents.model import Incident, Severity, Status
from console.store import IncidentFilter

DEBOUNCE_MS = 300
COMPLETER_LIMIT = 500  # distinct values remembered per field
CUSTOM = -1.0
TIME_RANGES: tuple[tuple[str, float | None], ...] = (
    ("Last 1 h", 3600.0),
    ("Last 24 h", 86400.0),
    ("Last 7 d", 7 * 86400.0),
    ("Last 30 d", 30 * 86400.0),
    ("All time", None),
    ("From – to (UTC)", CUSTOM),
)
SEVERITIES: tuple[tuple[str, Severity | None], ...] = (
    ("Any severity", None),
    ("Warning and worse", Severity.WARNING),
    ("Major and worse", Severity.MAJOR),
    ("Critical only", Severity.CRITICAL),
    ("Info and worse", Severity.INFO),
)
STATUSES: tuple[tuple[str, tuple[Status, ...]], ...] = (
    ("Any status", ()),
    ("Unresolved", (Status.OPEN, Status.ACKNOWLEDGED)),
    ("Open", (Status.OPEN,)),
    ("Acknowledged", (Status.ACKNOWLEDGED,)),
    ("Resolved", (Status.RESOLVED,)),
)
TEXT_FIELDS = ("site", "provider", "node", "gpu", "gpu_model", "driver", "workload", "rule")
_PLACEHOLDERS = {
    "site": "site",
    "provider": "provider",
    "node": "node",
    "gpu": "GPU index or UUID",
    "gpu_model": "GPU model",
    "driver": "driver",
    "workload": "pod, namespace, job or process",
    "rule": "rule",
}


def _utc_edit(stamp: float) -> QDateTimeEdit:
    edit = QDateTimeEdit()
    edit.setTimeZone(QTimeZone.utc())
    edit.setDisplayFormat("yyyy-MM-dd HH:mm")
    edit.setCalendarPopup(True)
    edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(stamp), QTimeZone.utc()))
    return edit


class IncidentFilterBar(QWidget):
    changed = Signal()  # the filter changed (debounced)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.changed)

        self.time_range = QComboBox()
        for label, _ in TIME_RANGES:
            self.time_range.addItem(label)
        self.time_range.setCurrentIndex(TIME_RANGES.index(("All time", None)))
        now = time.time()
        self.since_edit = _utc_edit(now - 86400)
        self.until_edit = _utc_edit(now + 3600)
        self.severity = QComboBox()
        for label, _ in SEVERITIES:
            self.severity.addItem(label)
        self.status = QComboBox()
        for label, _ in STATUSES:
            self.status.addItem(label)
        self.show_symptoms = QCheckBox("Show symptoms")
        self.show_symptoms.setToolTip(
            "Off: one row per fault (root incidents; a cause's symptoms are listed in its detail).\n"
            "On: every incident, symptoms included."
        )
        self.text = QLineEdit()
        self.text.setPlaceholderText("search titles, details and notes (every word)")
        self.text.setClearButtonEnabled(True)
        self.fields: dict[str, QLineEdit] = {}
        self._known: dict[str, set[str]] = {}
        self._completions: dict[str, QStringListModel] = {}
        for name in TEXT_FIELDS:
            edit = QLineEdit()
            edit.setPlaceholderText(_PLACEHOLDERS[name])
            edit.setClearButtonEnabled(True)
            model = QStringListModel(self)
            completer = QCompleter(model, edit)
            completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
            completer.setFilterMode(Qt.MatchFlag.MatchContains)
            edit.setCompleter(completer)
            edit.textChanged.connect(self._on_any_changed)
            self.fields[name] = edit
            self._known[name] = set()
            self._completions[name] = model

        grid = QGridLayout(self)
        grid.setContentsMargins(4, 2, 4, 2)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(3)
        first_row: list[QWidget] = [
            QLabel("Time"),
            self.time_range,
            self.since_edit,
            self.until_edit,
            self.severity,
            self.status,
            self.fields["rule"],
        ]
        for col, widget in enumerate(first_row):
            grid.addWidget(widget, 0, col)
        grid.addWidget(self.text, 0, len(first_row), 1, 3)
        second_row = [QLabel("Where")] + [self.fields[name] for name in TEXT_FIELDS if name != "rule"]
        for col, widget in enumerate(second_row):
            grid.addWidget(widget, 1, col)
        grid.addWidget(self.show_symptoms, 1, len(second_row))
        for col in range(1, 10):
            grid.setColumnStretch(col, 1)

        self.time_range.currentIndexChanged.connect(self._on_time_range_changed)
        for combo in (self.severity, self.status):
            combo.currentIndexChanged.connect(self._on_any_changed)
        for time_edit in (self.since_edit, self.until_edit):
            time_edit.dateTimeChanged.connect(self._on_any_changed)
        self.text.textChanged.connect(self._on_any_changed)
        self.show_symptoms.toggled.connect(self._on_any_changed)
        self._on_time_range_changed()
        self._debounce.stop()

    # -- reading ----

    def current_filter(self, now: float | None = None) -> IncidentFilter:
        now = time.time() if now is None else now
        since, until = self.time_window(now)
        values = {name: edit.text().strip() or None for name, edit in self.fields.items()}
        text = self.text.text().strip() or None
        return IncidentFilter(
            since=since,
            until=until,
            severity=SEVERITIES[self.severity.currentIndex()][1],
            status=STATUSES[self.status.currentIndex()][1],
            text=text,
            roots_only=not self.show_symptoms.isChecked(),
            **values,
        )

    def time_window(self, now: float) -> tuple[float | None, float | None]:
        span = TIME_RANGES[self.time_range.currentIndex()][1]
        if span == CUSTOM:
            return float(self.since_edit.dateTime().toSecsSinceEpoch()), float(
                self.until_edit.dateTime().toSecsSinceEpoch()
            )
        if span is None:
            return None, None
        return now - span, None

    def choose_time_range(self, label: str) -> None:
        self.time_range.setCurrentIndex([name for name, _ in TIME_RANGES].index(label))

    def choose_severity(self, severity: Severity | None) -> None:
        self.severity.setCurrentIndex([value for _, value in SEVERITIES].index(severity))

    def choose_status(self, label: str) -> None:
        self.status.setCurrentIndex([name for name, _ in STATUSES].index(label))

    def settle(self) -> None:
        """Drop a pending debounced change (the caller applies the filter itself)."""
        self._debounce.stop()

    def remember(self, incidents: Iterable[Incident]) -> None:
        """Offer values of loaded rows as completions."""
        grown: set[str] = set()
        for incident in incidents:
            ctx = incident.context
            for name, value in (
                ("site", ctx.site),
                ("provider", ctx.provider),
                ("node", ctx.node),
                ("gpu_model", ctx.gpu_model),
                ("driver", ctx.driver_version),
                ("rule", incident.rule),
            ):
                known = self._known[name]
                if value and value not in known and len(known) < COMPLETER_LIMIT:
                    known.add(value)
                    grown.add(name)
        for name in grown:
            self._completions[name].setStringList(sorted(self._known[name]))

    # -- slots ----

    def _on_time_range_changed(self) -> None:
        custom = TIME_RANGES[self.time_range.currentIndex()][1] == CUSTOM
        self.since_edit.setVisible(custom)
        self.until_edit.setVisible(custom)
        self._on_any_changed()

    def _on_any_changed(self) -> None:
        self._debounce.start()
