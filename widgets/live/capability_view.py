"""The capability map tab: per site, each field reported, "not supported" (by which GPUs) or "no data" (never
seen, or its collector failing), from the latest poll of every node."""

from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from console.live.capabilities import (
    Capability,
    FieldCapability,
    NodeObservation,
    SiteCapabilities,
    capability_map,
    models_text,
)
from console.live.fleet_state import FleetState, NodeStatus
from widgets.common.style import STATUS_COLORS

COLUMNS = ("Site / field", "Scope", "Capability", "Detail")
NOT_SUPPORTED = "not supported"
NO_DATA = "no data"
_COLORS = {
    Capability.REPORTED: STATUS_COLORS[NodeStatus.OK],
    Capability.NOT_SUPPORTED: STATUS_COLORS[NodeStatus.STALE],
    Capability.COLLECTOR_FAILING: STATUS_COLORS[NodeStatus.CRITICAL],
    Capability.NEVER_SEEN: STATUS_COLORS[NodeStatus.STALE],
}


def observations(state: FleetState) -> list[NodeObservation]:
    """What each node said last; an unreachable node's old sample does not count as reporting."""
    return [
        NodeObservation(
            node=node.name,
            site=node.site,
            sample=node.sample if node.reachable else None,
            failures=tuple(node.last_error.split("; ")) if node.last_error else (),
        )
        for node in state.nodes.values()
    ]


def field_cells(field: FieldCapability) -> tuple[str, str, str, str]:
    """Name, scope, what the operator reads ("reported", "not supported", "no data") and why."""
    if field.capability is Capability.REPORTED:
        detail = f"{field.reported_by} of {field.of}"
        if field.unsupported_by:
            detail += f"; not supported {models_text(field)}"
        return field.field, str(field.scope), "reported", detail
    if field.capability is Capability.NOT_SUPPORTED:
        return field.field, str(field.scope), NOT_SUPPORTED, models_text(field)
    if field.capability is Capability.COLLECTOR_FAILING:
        return field.field, str(field.scope), NO_DATA, "collector failing: " + "; ".join(field.failing[:3])
    return field.field, str(field.scope), NO_DATA, "never seen"


REFRESH_EVERY_S = 10.0


class CapabilityView(QWidget):
    def __init__(self, state: FleetState) -> None:
        super().__init__()
        self._state = state
        self.title = QLabel("Which fields each site reports, after the latest poll of every node.")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setColumnWidth(0, 260)
        self.tree.setColumnWidth(2, 120)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.tree, 1)
        self._shown: tuple[SiteCapabilities, ...] | None = None
        self._refreshed_at = -math.inf

    def refresh_if_due(self) -> None:
        """From the window's 1 s timer: what a fleet supports changes rarely, and the map walks every GPU's
        fields on the GUI thread, so it is redone every REFRESH_EVERY_S only (and at once when the tab opens)."""
        if time.monotonic() - self._refreshed_at >= REFRESH_EVERY_S:
            self.refresh()

    def refresh(self) -> None:
        self._refreshed_at = time.monotonic()
        sites = capability_map(observations(self._state))
        if sites == self._shown:
            return  # keep what the user expanded and scrolled to
        tops = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        expanded = {top.text(0) for top in tops if top is not None and top.isExpanded()}
        self._shown = sites
        self.tree.clear()
        for site in sites:
            missing = sum(f.capability is not Capability.REPORTED for f in site.fields)
            top = QTreeWidgetItem([site.site, "", f"{site.nodes} nodes", f"{missing} fields without data"])
            for field in site.fields:
                item = QTreeWidgetItem(list(field_cells(field)))
                item.setForeground(2, QColor(_COLORS[field.capability]))
                item.setToolTip(3, item.text(3))
                top.addChild(item)
            self.tree.addTopLevelItem(top)
            top.setExpanded(site.site in expanded or len(sites) == 1)
