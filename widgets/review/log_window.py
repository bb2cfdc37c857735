"""The incident review window (issue 4 items 5 and 6): filters, the lazily paged log, the detail pane with its
evidence and "seen before", acknowledge / resolve, export, and incident rates per 1,000 GPU-hours.

Every store read runs on a ``widgets.workers`` lane; the GUI thread only submits jobs and shows their answers, so a
log of a million incidents costs the event loop nothing but the rows on screen. ``on_acknowledge`` and
``on_resolve`` are the app's: they go through the incident engine so the live lifecycle stays right.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO, cast

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from console.incidents.model import Incident, Outcome
from console.store import IncidentFilter, IncidentStore, RateRow, StoreError
from console.store.export import write as write_incidents
from widgets.common.views import TableView
from widgets.review.detail import DetailData, IncidentDetail, load_detail
from widgets.review.dialogs import NoteDialog
from widgets.review.filters import IncidentFilterBar
from widgets.review.fixes import action_choices
from widgets.review.rates import GROUPS, RatesPanel
from widgets.review.table import COLUMN_WIDTHS, TITLE_COLUMN, IncidentTableModel, utc
from widgets.workers import WorkError, Workers

log = logging.getLogger(__name__)

REVIEW_LANES = ("query", "count", "bulk")  # pages and details; counts; rates and exports

ExportFormat = Literal["csv", "json"]
AcknowledgeCallback = Callable[[str, str], object]
ResolveCallback = Callable[[str, str, Outcome, str], object]  # incident id, note, outcome, action applied


class ExportCancelled(Exception):
    """The window closed while an export was being written."""


class _CancellableText(io.TextIOBase):
    """Passes writes to ``out`` until ``cancelled`` is set (so closing the window ends a long export)."""

    def __init__(self, out: TextIO, cancelled: threading.Event) -> None:
        super().__init__()
        self._out = out
        self._cancelled = cancelled

    def write(self, text: str) -> int:
        if self._cancelled.is_set():
            raise ExportCancelled("the export was cancelled")
        return self._out.write(text)

    def writable(self) -> bool:
        return True


def _export_file(
    store: IncidentStore,
    path: Path,
    *,
    fmt: ExportFormat,
    flt: IncidentFilter,
    chosen: list[Incident] | None,
    cancelled: threading.Event,
) -> int:
    """Write to a side file and rename it into place, so a failed export never leaves half a file at ``path``."""
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            out = cast(TextIO, _CancellableText(handle, cancelled))
            written = write_incidents(chosen, fmt, out) if chosen is not None else store.export(flt, fmt, out)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return written


_EXPECTED_ERRORS = (StoreError, OSError, ValueError, ExportCancelled)  # shown in the window, never raised


def _log_view(model: IncidentTableModel) -> TableView:
    view = TableView()
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    view.setAlternatingRowColors(True)
    view.setWordWrap(False)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(22)
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    for column, width in enumerate(COLUMN_WIDTHS):
        header.resizeSection(column, width)
    header.setSectionResizeMode(TITLE_COLUMN, QHeaderView.ResizeMode.Stretch)
    return view


class IncidentLogWindow(QMainWindow):
    count_loaded = Signal(int)
    detail_loaded = Signal(str)  # incident id
    rates_loaded = Signal(str)  # group
    export_finished = Signal(str, int, str)  # path, incidents written, error ("" when it worked)
    action_failed = Signal(str)

    def __init__(
        self,
        store: IncidentStore,
        on_acknowledge: AcknowledgeCallback,
        on_resolve: ResolveCallback,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store
        self._on_acknowledge = on_acknowledge
        self._on_resolve = on_resolve
        self.setWindowTitle(f"Incident review — {store.path}")
        self.resize(1600, 1000)
        self.jobs = Workers("incident-review", REVIEW_LANES, expected_errors=_EXPECTED_ERRORS, parent=self)
        self.total: int | None = None
        self._count_pending = False
        self._rates_stale = True
        self.dialog: NoteDialog | None = None

        self.filters = IncidentFilterBar()
        self.model = IncidentTableModel(store, self.jobs)
        self.view = _log_view(self.model)

        self.count_label = QLabel("")
        self.count_label.setTextFormat(Qt.TextFormat.PlainText)
        self.count_label.setStyleSheet("font-weight: 600;")
        self.loading_label = QLabel("loading…")
        self.loading_label.setStyleSheet("color: #1565c0; font-weight: 600;")
        self.message = QLabel("")
        self.message.setTextFormat(Qt.TextFormat.PlainText)  # errors quote paths and database text
        self.message.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.export_csv_button = QPushButton("Export CSV…")
        self.export_json_button = QPushButton("Export JSON…")
        status_row = QHBoxLayout()
        status_row.addWidget(self.count_label)
        status_row.addWidget(self.loading_label)
        status_row.addWidget(self.message, 1)
        for button in (self.refresh_button, self.export_csv_button, self.export_json_button):
            status_row.addWidget(button)

        self.detail = IncidentDetail()
        self.rates = RatesPanel()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.detail, "Incident")  # no scroll area: wrapped labels would make it always scroll
        self.tabs.addTab(self.rates, "Rates per 1,000 GPU-hours")

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.view)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 5)
        splitter.setSizes([240, 700])

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.filters)
        layout.addLayout(status_row)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)

        self.filters.changed.connect(self.apply_filters)
        self.model.loading_changed.connect(self._on_model_loading_changed)
        self.model.page_failed.connect(self._on_model_page_failed)
        self.model.page_loaded.connect(self._on_model_page_loaded)
        self.model.rowsInserted.connect(self._on_model_rows_inserted)
        self.view.selectionModel().currentRowChanged.connect(self._on_view_current_row_changed)
        self.detail.acknowledge_button.clicked.connect(self._on_acknowledge_button_clicked)
        self.detail.resolve_button.clicked.connect(self._on_resolve_button_clicked)
        self.detail.symptoms.incident_chosen.connect(self._on_symptoms_incident_chosen)
        self.refresh_button.clicked.connect(self.apply_filters)
        self.export_csv_button.clicked.connect(lambda: self._ask_export("csv"))
        self.export_json_button.clicked.connect(lambda: self._ask_export("json"))
        self.tabs.currentChanged.connect(self._on_tabs_current_changed)
        self.apply_filters()

    # -- querying ----

    def apply_filters(self) -> None:
        """Re-query with the bar's filter: first page and total count, each on its own lane."""
        self.filters.settle()
        flt = self.filters.current_filter()
        self.total = None
        self._count_pending = True
        self.count_label.setText("counting…")
        self.message.setText("")
        self.detail.clear("Select an incident in the log.")
        self.model.set_filter(flt)
        store = self.store
        self.jobs.submit("count", "count", lambda: store.count(flt), self._on_count)
        self._rates_stale = True
        if self.tabs.currentWidget() is self.rates:
            self.refresh_rates()
        self._update_loading()

    def refresh_rates(self) -> None:
        self._rates_stale = False
        now = time.time()
        since, until = self.filters.time_window(now)
        since = 0.0 if since is None else since
        until = now if until is None else until
        self.rates.show_window(f"Incidents opened from {utc(since) if since else 'the start'} to {utc(until)} UTC")
        store = self.store
        for group in GROUPS:
            self.jobs.submit(
                "bulk",
                f"rates:{group}",
                lambda group=group: store.rates(group, since, until),  # type: ignore[misc]
                lambda answer, group=group: self._on_rates(group, answer),  # type: ignore[misc]
            )

    @property
    def loading(self) -> bool:
        """A page or the count is still in flight (the "loading…" label is showing)."""
        return self.model.loading or self._count_pending

    def select_row(self, row: int) -> None:
        index = self.model.index(row, 0)
        self.view.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        )

    def selected_incidents(self) -> list[Incident]:
        rows = sorted({index.row() for index in self.view.selectionModel().selectedRows()})
        return [self.model.incident(row) for row in rows]

    # -- acknowledge and resolve ----

    def acknowledge_selected(self, note: str) -> bool:
        incident = self.detail.incident
        if incident is None:
            return False
        return self._act(incident, "acknowledge", lambda: self._on_acknowledge(incident.id, note))

    def resolve_selected(self, note: str, outcome: Outcome, action: str = "other") -> bool:
        incident = self.detail.incident
        if incident is None:
            return False
        return self._act(incident, "resolve", lambda: self._on_resolve(incident.id, note, outcome, action))

    def _act(self, incident: Incident, verb: str, call: Callable[[], object]) -> bool:
        try:
            call()
        except Exception as exc:  # the engine refuses (e.g. no longer open): say so, keep the window alive
            message = f"Could not {verb} {incident.title!r}: {exc}"
            log.warning("%s", message)
            self.message.setText(message)
            self.action_failed.emit(message)
            return False
        self.message.setText(f"{verb.capitalize()}d: {incident.title}")
        store, incident_id = self.store, incident.id

        def reread() -> Incident | None:
            if not store.read_only:  # a read-only store's writer is the monitoring worker, which flushed already
                store.flush()  # the engine's change is queued to the writer; read it back once committed
            return store.get(incident_id)

        self.jobs.submit("query", f"reread:{incident_id}", reread, self._on_reread)
        return True

    # -- export ----

    def export_to(self, path: Path, fmt: ExportFormat, *, selection_only: bool | None = None) -> None:
        """Write the selected rows (or, with none selected or ``selection_only=False``, every incident matching
        the filter) to ``path``; ``export_finished`` tells the outcome."""
        chosen = self.selected_incidents()
        use_selection = bool(chosen) if selection_only is None else selection_only
        flt = self.model.filter
        store, cancelled = self.store, self.jobs.cancelled
        picked = chosen if use_selection else None
        what = f"{len(chosen)} selected incidents" if use_selection else "the filtered incidents"
        self.message.setText(f"Exporting {what} to {path}…")
        self.jobs.submit(
            "bulk",
            f"export:{path}",
            lambda: _export_file(store, Path(path), fmt=fmt, flt=flt, chosen=picked, cancelled=cancelled),
            lambda answer: self._on_export(Path(path), answer),
        )

    def _ask_export(self, fmt: ExportFormat) -> None:
        chosen = len(self.selected_incidents())
        scope = f"{chosen} selected" if chosen else "all matching"
        path, _ = QFileDialog.getSaveFileName(
            self,
            f"Export {scope} incidents as {fmt.upper()}",
            f"incidents.{fmt}",
            "CSV (*.csv)" if fmt == "csv" else "JSON (*.json)",
        )
        if path:
            self.export_to(Path(path), fmt)

    # -- shutting down ----

    def shutdown(self) -> None:
        """Stop the worker lanes (an export in progress is cancelled). Safe to call more than once."""
        self.filters.settle()
        self.jobs.stop()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    # -- slots ----

    def _on_count(self, answer: int | WorkError) -> None:
        self._count_pending = False
        if isinstance(answer, WorkError):
            self.count_label.setText("count unavailable")
            self.message.setText(answer.message)
        else:
            self.total = answer
            self.count_loaded.emit(answer)
        self._update_count_label()
        self._update_loading()

    def _on_model_loading_changed(self, _loading: bool) -> None:
        self._update_loading()

    def _on_model_page_failed(self, message: str) -> None:
        self.message.setText(f"The incident log could not be read: {message}")

    def _on_model_page_loaded(self, _rows: int) -> None:
        self._update_count_label()

    def _on_model_rows_inserted(self, _parent: QModelIndex, first: int, last: int) -> None:
        self.filters.remember(self.model.incident(row) for row in range(first, last + 1))

    def _update_count_label(self) -> None:
        shown = self.model.rowCount()
        if self.total is None:
            self.count_label.setText(f"{shown:,} shown · counting…" if self._count_pending else f"{shown:,} shown")
        else:
            roots = " · faults only (tick Show symptoms for all)" if self.model.filter.roots_only else ""
            self.count_label.setText(f"{self.total:,} incidents match · {shown:,} loaded{roots}")

    def _update_loading(self) -> None:
        self.loading_label.setVisible(self.loading)

    def _on_view_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            return
        incident = self.model.incident(current.row())
        self.detail.show_incident(incident)
        self._request_detail(incident.id)

    def show_related(self, incident_id: str) -> None:
        """Open a symptom or cause listed in the detail: its row when the log holds one, else straight in the pane."""
        row = self.model.row_of(incident_id)
        if row is not None:
            self.select_row(row)
            self.view.scrollTo(self.model.index(row, 0))
            return
        incident = self.detail.symptoms.incidents.get(incident_id)
        if incident is None:
            return
        # No row is current any more, so clicking the previous row again brings it back.
        self.view.selectionModel().setCurrentIndex(QModelIndex(), QItemSelectionModel.SelectionFlag.Clear)
        self.detail.show_incident(incident)
        self._request_detail(incident_id)

    def _on_symptoms_incident_chosen(self, incident_id: str) -> None:
        self.show_related(incident_id)

    def _request_detail(self, incident_id: str) -> None:
        store = self.store
        self.jobs.submit("query", "detail", lambda: load_detail(store, incident_id), self._on_detail)

    def _on_detail(self, answer: DetailData | WorkError | None) -> None:
        if isinstance(answer, WorkError):
            self.message.setText(f"The incident's details could not be read: {answer.message}")
            return
        if answer is None:
            self.message.setText("That incident is no longer in the database.")
            return
        selected = self.detail.incident
        if selected is None or selected.id != answer.incident.id:
            return
        self.detail.show_detail(answer)
        self.detail_loaded.emit(answer.incident.id)

    def _on_reread(self, answer: Incident | WorkError | None) -> None:
        if isinstance(answer, WorkError):
            self.message.setText(answer.message)
            return
        if answer is None:
            return
        self.model.replace(answer)
        selected = self.detail.incident
        if selected is not None and selected.id == answer.id:
            self.detail.show_incident(answer)
            self._request_detail(answer.id)

    def _on_rates(self, group: str, answer: list[RateRow] | WorkError) -> None:
        if isinstance(answer, WorkError):
            self.rates.show_error(answer.message)
            return
        self.rates.show_rates(group, answer)
        self.rates_loaded.emit(group)

    def _on_export(self, path: Path, answer: Any) -> None:
        if isinstance(answer, WorkError):
            self.message.setText(f"Export to {path} failed: {answer.message}")
            self.export_finished.emit(str(path), 0, answer.message)
            return
        self.message.setText(f"Exported {answer:,} incidents to {path}")
        self.export_finished.emit(str(path), int(answer), "")

    def _on_acknowledge_button_clicked(self) -> None:
        self._open_dialog(ask_outcome=False)

    def _on_resolve_button_clicked(self) -> None:
        self._open_dialog(ask_outcome=True)

    def _open_dialog(self, *, ask_outcome: bool) -> None:
        incident = self.detail.incident
        if incident is None:
            return
        suggested = self.detail.fixes.first_action()
        dialog = NoteDialog(
            incident, ask_outcome=ask_outcome, parent=self, actions=action_choices(), suggested=suggested
        )
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._on_dialog_accepted(dialog, ask_outcome))
        self.dialog = dialog
        dialog.open()  # window-modal, but the event loop keeps running (pages and counts keep arriving)

    def _on_dialog_accepted(self, dialog: NoteDialog, ask_outcome: bool) -> None:
        self.dialog = None
        selected = self.detail.incident
        if selected is None or selected.id != dialog.incident.id:
            self.message.setText("The selection changed while the dialog was open; nothing was recorded.")
            return
        if ask_outcome:
            self.resolve_selected(dialog.note_text(), dialog.chosen_outcome(), dialog.chosen_action())
        else:
            self.acknowledge_selected(dialog.note_text())

    def _on_tabs_current_changed(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.rates and self._rates_stale:
            self.refresh_rates()
