"""The detail pane of the incident review: context, recommended action, evidence chart, timeline of updates, and
"Seen before, and what fixed it" split so that a fix from elsewhere can never be read as proven here.

Everything shown comes from ``DetailData``, read and parsed on a worker thread (``load_detail``). Text from nodes
and incidents goes into plain-text labels and item views only.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTabWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from console.incidents.model import EvidencePoint, Incident, Status
from console.samples.workload import workload_text
from console.store import IncidentStore, SeenBefore, SeenGroup, TimelineEntry
from widgets.common.style import (
    SEVERITY_COLORS,
    nodes_text,
    plain_tooltip,
    readable_times,
    scope_text,
    severity_text_color,
)
from widgets.common.views import flat_tree
from widgets.review.evidence import EvidenceChart, EvidenceSeries, evidence_series
from widgets.review.fixes import FixesData, FixesPanel, load_fixes
from widgets.review.symptoms import SymptomsBox
from widgets.review.table import outcome_label, outcome_text, utc

SAME_COLOR = "#2e7d32"
ELSEWHERE_COLOR = "#8d6e00"
TIMELINE_COLUMNS = ("Time (UTC)", "Change", "Severity", "Status", "Count", "Note")
# What fixed it first (outcome and note are what the operator came for), then what decides the group (provider,
# driver, GPU model), then where exactly.
SEEN_COLUMNS = ("Opened (UTC)", "Outcome", "Note", "Provider", "Driver", "GPU model", "Site", "Node")


@dataclass(frozen=True, slots=True)
class DetailData:
    incident: Incident
    timeline: tuple[TimelineEntry, ...]
    seen_before: SeenBefore
    evidence: EvidenceSeries
    children: tuple[Incident, ...] = ()  # its symptoms
    parent: Incident | None = None  # what it is a symptom of
    fixes: FixesData | None = None  # what to try, and this GPU's history


def _member_evidence(
    store: IncidentStore, incident: Incident, own: list[EvidencePoint], children: tuple[Incident, ...]
) -> list[EvidencePoint]:
    """A group incident (rack, loop, feed) charts every member node: nodes its own evidence lacks are read from a
    symptom on that node (evidence points are whole node samples)."""
    if len(incident.member_nodes) <= 1 or not children:
        return own
    covered = {incident.context.node} if own else set()
    missing = [node for node in incident.member_nodes if node not in covered]
    points = list(own)
    for node in missing:
        child = next((c for c in children if c.context.node == node and c.rule == incident.rule), None)
        child = child or next((c for c in children if c.context.node == node), None)
        if child is not None:
            points.extend(store.evidence(child.id))
    return points


def load_detail(store: IncidentStore, incident_id: str) -> DetailData | None:
    """Everything the pane shows for one incident (run on a worker thread; None if it vanished)."""
    incident = store.get(incident_id)
    if incident is None:
        return None
    children = tuple(store.children(incident_id))
    parent = store.get(incident.parent_id) if incident.parent_id else None
    points = _member_evidence(store, incident, store.evidence(incident_id), children)
    return DetailData(
        incident=incident,
        timeline=tuple(store.timeline(incident_id)),
        seen_before=store.seen_before(incident),
        evidence=evidence_series(incident, points),
        children=children,
        parent=parent,
        fixes=load_fixes(store, incident),
    )


def _plain_label(text: str = "", *, wrap: bool = True, selectable: bool = True) -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    if selectable:  # operators copy serials and UUIDs into tickets
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _context_text(value: object) -> str:
    return "not reported" if value is None or value == "" else str(value)


class SeenBox(QGroupBox):
    """One group of matching incidents: its counts and its list, in a box of its own colour."""

    def __init__(self, color: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.group: SeenGroup | None = None
        self.setStyleSheet(
            f"QGroupBox {{ border: 2px solid {color}; border-radius: 4px; margin-top: 14px; padding-top: 6px; }}"
            f"QGroupBox::title {{ subcontrol-origin: margin; left: 8px; padding: 0 4px; color: {color};"
            " font-weight: 600; }"
        )
        self.counts_label = _plain_label()
        self.counts_label.setStyleSheet("font-weight: 600;")
        self.caveat = _plain_label()
        self.caveat.setStyleSheet(f"color: {color};")
        self.caveat.hide()
        self.list = flat_tree(SEEN_COLUMNS, (116, 84, 250, 96, 86, 160, 130))
        self.list.setMinimumHeight(60)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 8, 6, 6)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.caveat)
        layout.addWidget(self.list, 1)

    def show_group(self, title: str, group: SeenGroup | None, caveat: str = "") -> None:
        self.setTitle(title)  # QGroupBox titles are plain text
        self.group = group
        self.list.clear()
        self.caveat.setText(caveat)
        self.caveat.setVisible(bool(caveat))
        if group is None:
            self.counts_label.setText("")
            return
        # Resolved with no operator outcome: the engine cleared it (the store has no column of its own for it).
        cleared = group.total - group.fixed - group.not_fixed - group.workaround - group.unresolved
        self.counts_label.setText(
            f"{group.fixed} fixed · {group.not_fixed} not fixed · {group.workaround} workaround · "
            f"{group.unresolved} unresolved"
            + (f" · {cleared} auto-cleared" if cleared else "")
            + f"  ({group.total} seen)"
        )
        items = []
        for past in group.incidents:
            outcome = "unresolved" if past.status is not Status.RESOLVED else outcome_label(past.outcome) or "resolved"
            item = QTreeWidgetItem(
                [
                    utc(past.opened_at)[:16],
                    outcome,
                    past.resolution_note,
                    past.provider,
                    _context_text(past.driver_version),
                    _context_text(past.gpu_model),
                    past.site,
                    past.node,
                ]
            )
            item.setToolTip(2, plain_tooltip(past.resolution_note) if past.resolution_note else "")
            items.append(item)
        self.list.addTopLevelItems(items)
        if group.total > len(group.incidents):
            more = QTreeWidgetItem([f"… and {group.total - len(group.incidents)} older, counted above"])
            more.setFlags(Qt.ItemFlag.NoItemFlags)
            self.list.addTopLevelItem(more)


class IncidentDetail(QWidget):
    """Shows one incident. The Acknowledge and Resolve buttons are here; the window decides what they do."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.incident: Incident | None = None
        self.title = _plain_label("Select an incident in the log.")
        self.title.setStyleSheet("font-size: 13pt; font-weight: 600;")
        self.badge = _plain_label(wrap=False, selectable=False)
        self.badge.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.acknowledge_button = QPushButton("Acknowledge…")
        self.resolve_button = QPushButton("Resolve…")
        for button in (self.acknowledge_button, self.resolve_button):
            button.setEnabled(False)
        top = QHBoxLayout()
        top.addWidget(self.badge)
        top.addWidget(self.title, 1)
        top.addWidget(self.acknowledge_button)
        top.addWidget(self.resolve_button)

        self.fields: dict[str, QLabel] = {}
        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(2)
        names = (
            ("Scope", "Nodes", "Symptoms"),
            ("Site", "Provider", "Node"),
            ("GPU", "GPU model", "Serial"),
            ("Driver", "VBIOS", "PCI bus"),
            ("Opened (UTC)", "Last seen (UTC)", "Count / peak"),
            ("Status", "Resolved (UTC)", "Outcome"),
        )
        for row, triple in enumerate(names):
            for col, name in enumerate(triple):
                key = _plain_label(name + ":", wrap=False, selectable=False)
                key.setStyleSheet("color: #555;")
                value = _plain_label()
                self.fields[name] = value
                grid.addWidget(key, row, col * 2, Qt.AlignmentFlag.AlignTop)
                grid.addWidget(value, row, col * 2 + 1, Qt.AlignmentFlag.AlignTop)
        # Which customer or job the fault hit: one line across the grid (a GPU can run several).
        workload_key = _plain_label("Workload:", wrap=False, selectable=False)
        workload_key.setStyleSheet("color: #555;")
        self.fields["Workload"] = _plain_label()
        grid.addWidget(workload_key, len(names), 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.fields["Workload"], len(names), 1, 1, 5, Qt.AlignmentFlag.AlignTop)
        for col in (1, 3, 5):
            grid.setColumnStretch(col, 1)
        self.action = _plain_label()
        self.action.setStyleSheet(
            "background: #fff8e1; border: 1px solid #e0a100; border-radius: 3px; padding: 4px; font-weight: 600;"
        )
        self.detail_text = _plain_label()
        self.resolution = _plain_label()

        self.symptoms = SymptomsBox()
        self.chart = EvidenceChart()
        self.timeline = flat_tree(TIMELINE_COLUMNS, (140, 96, 70, 96, 56))
        self.timeline.setMinimumHeight(70)
        self.timeline.setMaximumHeight(100)

        self.same_box = SeenBox(SAME_COLOR)
        self.elsewhere_box = SeenBox(ELSEWHERE_COLOR)
        seen_heading = _plain_label("Seen before, and what fixed it", wrap=False, selectable=False)
        seen_heading.setStyleSheet("font-size: 11pt; font-weight: 600;")
        self.seen_summary = _plain_label()
        left = QVBoxLayout()
        left.addLayout(grid)
        left.addWidget(self.detail_text)
        left.addWidget(self.action)
        left.addWidget(self.resolution)
        left.addWidget(self.chart, 1)
        right = QVBoxLayout()
        right.addWidget(self.symptoms)
        right.addWidget(_section("Timeline of updates"))
        right.addWidget(self.timeline)
        right.addWidget(_line())
        # What to try (the ledger's verified fixes) and what was seen before, one tab each: both are long lists.
        self.fixes = FixesPanel()
        seen = QWidget()
        seen_layout = QVBoxLayout(seen)
        seen_layout.setContentsMargins(0, 0, 0, 0)
        heading_row = QHBoxLayout()
        heading_row.addWidget(seen_heading)
        heading_row.addWidget(self.seen_summary, 1)
        seen_layout.addLayout(heading_row)
        seen_layout.addWidget(self.same_box, 1)
        seen_layout.addWidget(self.elsewhere_box, 1)
        self.knowledge = QTabWidget()
        self.knowledge.addTab(self.fixes, "What to try, and this GPU's history")
        self.knowledge.addTab(seen, "Seen before, and what fixed it")
        right.addWidget(self.knowledge, 2)
        body = QHBoxLayout()
        body.addLayout(left, 1)
        body.addLayout(right, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addLayout(body, 1)
        self.clear("Select an incident in the log.")

    def clear(self, message: str) -> None:
        self.incident = None
        self.title.setText(message)
        self.badge.setText("")
        self.badge.setStyleSheet("")
        for label in self.fields.values():
            label.setText("")
        for label in (self.action, self.detail_text, self.resolution, self.seen_summary):
            label.setText("")
            label.hide()
        self.chart.show_series(None, None)
        self.symptoms.show_relations(None, ())
        self.fixes.show_fixes(None)
        self.timeline.clear()
        self.same_box.show_group("Same provider, GPU model and driver", None)
        self.elsewhere_box.show_group("Elsewhere", None)
        self.acknowledge_button.setEnabled(False)
        self.resolve_button.setEnabled(False)

    def show_detail(self, data: DetailData) -> None:
        incident = data.incident
        self.show_incident(incident)
        self.chart.show_series(incident, data.evidence)
        self.symptoms.show_relations(data.parent, data.children)
        self.fields["Symptoms"].setText(self._symptoms_text(incident, data.children))
        self.timeline.clear()
        self.timeline.addTopLevelItems(
            [
                QTreeWidgetItem(
                    [
                        utc(entry.time),
                        str(entry.kind),
                        entry.severity.label,
                        str(entry.status),
                        f"{entry.count:,}",
                        entry.note,
                    ]
                )
                for entry in data.timeline
            ]
        )
        self._show_seen_before(incident, data.seen_before)
        self.fixes.show_fixes(data.fixes)

    def show_incident(self, incident: Incident) -> None:
        """The parts that come with the row itself (shown at once; the rest follows from the worker)."""
        self.incident = incident
        ctx = incident.context
        self.title.setText(readable_times(incident.title))
        color = SEVERITY_COLORS[incident.severity]
        self.badge.setText(f" {incident.severity.label.upper()} ")
        self.badge.setStyleSheet(
            f"background: {color}; color: {severity_text_color(incident.severity)}; font-weight: 700; padding: 3px;"
        )
        gpu = "node-level" if ctx.gpu_index is None else f"{ctx.gpu_index}  {ctx.gpu_uuid or ''}".strip()
        peak = "" if incident.peak is None else f" / peak {incident.peak:g}"
        values = {
            "Scope": scope_text(incident),
            "Nodes": nodes_text(incident) if len(incident.member_nodes) <= 3 else ", ".join(incident.member_nodes),
            "Symptoms": "symptom" if incident.parent_id else "…",
            "Site": ctx.site,
            "Provider": ctx.provider,
            "Node": ctx.node,
            "GPU": gpu,
            "GPU model": _context_text(ctx.gpu_model),
            "Serial": _context_text(ctx.serial),
            "Driver": _context_text(ctx.driver_version),
            "VBIOS": _context_text(ctx.vbios_version),
            "PCI bus": _context_text(ctx.pci_bus_id),
            "Workload": workload_text(incident.workload),
            "Opened (UTC)": utc(incident.opened_at),
            "Last seen (UTC)": utc(incident.last_seen_at),
            "Count / peak": f"{incident.count:,}{peak}",
            "Status": str(incident.status),
            "Resolved (UTC)": utc(incident.resolved_at) or "—",
            "Outcome": outcome_text(incident) or "—",
        }
        for name, value in values.items():
            self.fields[name].setText(value)
        code = f" {incident.code}" if incident.code else ""
        self.detail_text.setText(f"{incident.kind} / {incident.rule}{code}: {readable_times(incident.detail)}")
        self.detail_text.show()
        self.action.setText(f"Recommended action: {incident.recommended_action or 'none recorded'}")
        self.action.show()
        self.resolution.setText(f"Resolution note: {incident.resolution_note}" if incident.resolution_note else "")
        self.resolution.setVisible(bool(incident.resolution_note))
        self.acknowledge_button.setEnabled(incident.status is Status.OPEN)
        self.resolve_button.setEnabled(incident.status is not Status.RESOLVED)

    @staticmethod
    def _symptoms_text(incident: Incident, children: tuple[Incident, ...]) -> str:
        if not children:
            return "none (this is a symptom: its cause is above)" if incident.parent_id else "none"
        still_open = sum(1 for child in children if child.status is not Status.RESOLVED)
        return f"{len(children)} ({still_open} open)"

    def _show_seen_before(self, incident: Incident, seen: SeenBefore) -> None:
        ctx = incident.context
        here = f"{ctx.provider} · {_context_text(ctx.gpu_model)} · driver {_context_text(ctx.driver_version)}"
        known = ctx.gpu_model is not None and ctx.driver_version is not None
        self.same_box.show_group(
            f"Same provider, GPU model and driver: {here}",
            seen.same_context,
            "" if known else "The GPU model or driver of this incident is unknown: no fix can be proven here.",
        )
        self.elsewhere_box.show_group(
            f"Elsewhere: other providers, GPU models or drivers (NOT proven at {ctx.provider})",
            seen.elsewhere,
            f"Fixes in this box worked somewhere else. Treat them as leads to try, not as proven for {here}.",
        )
        code = f" code {seen.code}" if seen.code else ""
        self.seen_summary.setText(f"(other incidents of rule {seen.rule}{code})")
        self.seen_summary.show()


def _section(text: str) -> QLabel:
    label = _plain_label(text, wrap=False, selectable=False)
    label.setStyleSheet("font-size: 11pt; font-weight: 600; margin-top: 4px;")
    return label


def _line() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.HLine)
    line.setFrameShadow(QFrame.Shadow.Sunken)
    return line
