"""What to try, and what this GPU went through: the fix ledger in the incident detail.

Two boxes of ranked fixes, as "Seen before" has: proven here (the same provider, GPU model and driver, verified by
what happened after each fix) and leads from elsewhere or from the catalog, never mixed. Beneath them, the GPU's own
history: every incident on its UUID (the node's, for a node-level incident), and each fix with its verdict (held,
did not hold and what came back, pending). The data is read on a worker thread (``load_fixes``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGroupBox, QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from console.incidents.model import Incident
from console.incidents.xid import CatalogError as XidCatalogError
from console.incidents.xid import XidCatalog, load_xid_catalog
from console.remediation.catalog import CatalogError, RemediationCatalog, load_catalog
from console.remediation.suggest import Suggestion, Suggestions, suggest
from console.store import IncidentFilter, IncidentStore, StoreError
from console.store.ledger import Verdict, VerifiedFix
from widgets.common.views import flat_tree
from widgets.review.table import utc

log = logging.getLogger(__name__)

HERE_COLOR = "#2e7d32"
LEAD_COLOR = "#8d6e00"
VERDICT_COLORS = {Verdict.HELD: "#2e7d32", Verdict.DID_NOT_HOLD: "#c62828", Verdict.PENDING: "#555555"}
VERDICT_TEXT = {Verdict.HELD: "held", Verdict.DID_NOT_HOLD: "did not hold", Verdict.PENDING: "pending"}
SUGGESTION_COLUMNS = ("Fix", "Held / tried", "Success", "Why")
HISTORY_COLUMNS = ("Time (UTC)", "What", "Status / fix", "Verdict")
HISTORY_LIMIT = 200


@dataclass(frozen=True, slots=True)
class FixesData:
    suggestions: Suggestions | None
    history: tuple[Incident, ...]  # incidents on this GPU (node), newest first
    problem: str = ""  # why suggestions are missing (a broken catalog), shown instead


@functools.cache
def _remediation() -> RemediationCatalog:
    return load_catalog()


@functools.cache
def _catalogs() -> tuple[RemediationCatalog, XidCatalog]:
    return _remediation(), load_xid_catalog()


def action_choices() -> list[tuple[str, str]]:
    """(id, label) of every catalog action, in the file's order (two small TOML files, read once)."""
    try:
        return [(action.id, action.label) for action in _remediation().actions.values()]
    except (CatalogError, OSError) as exc:
        log.warning("the action catalog cannot be read: %s", exc)
        return [("other", "Other (say what in the note)")]


def load_fixes(store: IncidentStore, incident: Incident) -> FixesData:
    """Suggestions and the GPU's history (a worker thread). A broken catalog is reported, never raised."""
    ctx = incident.context
    flt = IncidentFilter(gpu=ctx.gpu_uuid) if ctx.gpu_uuid else IncidentFilter(node=ctx.node)
    history: list[Incident] = []
    for past in store.iter_incidents(flt):
        if ctx.gpu_uuid is None and past.context.gpu_uuid is not None:
            continue  # a node-level incident's history is the node's own incidents
        history.append(past)
        if len(history) >= HISTORY_LIMIT:
            break
    try:
        catalog, xids = _catalogs()
    except (CatalogError, XidCatalogError, OSError) as exc:
        log.warning("no fix suggestions: %s", exc)
        return FixesData(None, tuple(history), f"No suggestions: the remediation catalog cannot be read ({exc}).")
    try:
        found = suggest(store, incident, catalog, xids)
    except StoreError as exc:
        return FixesData(None, tuple(history), f"No suggestions: {exc}")
    return FixesData(found, tuple(history))


def _label(text: str = "", color: str | None = None) -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    if color:
        label.setStyleSheet(f"color: {color}; font-weight: 600;")
    return label


def _boxed(title: str, color: str, *widgets: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    box.setStyleSheet(
        f"QGroupBox {{ border: 2px solid {color}; border-radius: 4px; margin-top: 14px; padding-top: 6px; }}"
        f"QGroupBox::title {{ subcontrol-origin: margin; left: 8px; padding: 0 4px; color: {color};"
        " font-weight: 600; }"
    )
    layout = QVBoxLayout(box)
    layout.setContentsMargins(6, 8, 6, 6)
    for widget in widgets:
        layout.addWidget(widget)
    return box


def _why(suggestion: Suggestion) -> str:
    parts = []
    if suggestion.escalated:
        parts.append("next step of the escalation ladder: the steps before it did not hold on this GPU")
    if suggestion.failed_on_this_gpu:
        parts.append(f"did not hold {suggestion.failed_on_this_gpu}x on this GPU")
    if suggestion.source == "catalog" and not suggestion.escalated:
        parts.append("NVIDIA's catalog action for this code: no fix recorded yet")
    if suggestion.attempts and not suggestion.proven_here:
        parts.append("recorded at other providers, GPU models or drivers")
    return "; ".join(parts)


def suggestion_item(suggestion: Suggestion) -> QTreeWidgetItem:
    rate = suggestion.success_rate
    record = f"{suggestion.held} / {suggestion.attempts}" if suggestion.attempts else "—"
    item = QTreeWidgetItem([suggestion.label, record, "n/a" if rate is None else f"{rate:.0%}", _why(suggestion)])
    item.setData(0, Qt.ItemDataRole.UserRole, suggestion.action)
    if suggestion.escalated:
        font = item.font(0)
        font.setBold(True)
        item.setFont(0, font)
    return item


def _fix_text(fix: VerifiedFix) -> str:
    entry = fix.entry
    return f"fixed by {entry.action} ({entry.outcome}, {entry.who})"


class FixesPanel(QWidget):
    """The suggestion boxes and the GPU history of the incident shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.suspect = _label(color="#c62828")
        self.suspect.setStyleSheet("background: #fdecea; color: #7f1d1d; padding: 4px; font-weight: 600;")
        self.problem = _label(color="#c62828")
        self.here = flat_tree(SUGGESTION_COLUMNS, (190, 80, 60))
        self.leads = flat_tree(SUGGESTION_COLUMNS, (190, 80, 60))
        self.history = flat_tree(HISTORY_COLUMNS, (120, 260, 200))
        self.here_box = _boxed("Proven here: same provider, GPU model and driver", HERE_COLOR, self.here)
        self.leads_box = _boxed("Leads: elsewhere or from the catalog (NOT proven here)", LEAD_COLOR, self.leads)
        self.history_box = _boxed("This GPU's history: incidents, fixes and whether they held", "#455a64", self.history)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.suspect, self.problem, self.here_box, self.leads_box, self.history_box):
            layout.addWidget(widget)
        self._first: str | None = None
        self.show_fixes(None)

    def show_fixes(self, data: FixesData | None) -> None:
        for tree in (self.here, self.leads, self.history):
            tree.clear()
        self.suspect.setVisible(False)
        self.problem.setVisible(bool(data and data.problem))
        ranked = () if data is None or data.suggestions is None else data.suggestions.ranked
        self._first = ranked[0].action if ranked else None
        if data is None:
            return
        self.problem.setText(data.problem)
        found = data.suggestions
        if found is not None:
            self.here.addTopLevelItems([suggestion_item(s) for s in found.ranked if s.proven_here])
            self.leads.addTopLevelItems([suggestion_item(s) for s in found.ranked if not s.proven_here])
            if found.suspect_hardware:
                self.suspect.setText(found.suspect_hardware)
                self.suspect.show()
        if not self.here.topLevelItemCount():
            self.here.addTopLevelItem(QTreeWidgetItem(["no fix recorded here yet for this rule and code"]))
        fixes = {} if found is None else {f.entry.incident_id: f for f in found.earlier_fixes}
        items = []
        for past in data.history:
            code = f" {past.code}" if past.code else ""
            fix = fixes.get(past.id)
            verdict = "" if fix is None else VERDICT_TEXT[fix.verdict]
            if fix is not None and fix.recurrence:
                verdict += " (it came back)"
            item = QTreeWidgetItem(
                [
                    utc(past.opened_at)[:16],
                    f"{past.rule}{code}: {past.title}",
                    _fix_text(fix) if fix else str(past.status),
                    verdict,
                ]
            )
            if fix is not None:
                item.setForeground(3, QColor(VERDICT_COLORS[fix.verdict]))
            items.append(item)
        self.history.addTopLevelItems(items)

    def here_actions(self) -> list[str]:
        return _actions(self.here)

    def lead_actions(self) -> list[str]:
        return _actions(self.leads)

    def first_action(self) -> str | None:
        """What the resolve dialog offers first: the top suggestion (an escalation's next step, else the best
        fix proven here, else the first lead)."""
        return self._first


def _actions(tree: QTreeWidget) -> list[str]:
    out = []
    for row in range(tree.topLevelItemCount()):
        item = tree.topLevelItem(row)
        action = None if item is None else item.data(0, Qt.ItemDataRole.UserRole)
        if action:
            out.append(str(action))
    return out
