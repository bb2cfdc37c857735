"""The fleet panel: sites -> nodes -> GPUs with status colours, worst first, counts per site.

The item tree is built once per node and GPU and then updated in place (``setData`` emits exact ``dataChanged``);
a sort proxy keeps the worst nodes on top. It reads ``console.fleet_state.FleetState``, never a sample directly
from a worker.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTreeView, QVBoxLayout, QWidget

from console.fleet import SourceKind
from console.fleet_state import STATUS_RANK, FleetState, GpuState, NodeState, NodeStatus, SiteCounts
from widgets.style import fmt, plain_tooltip, status_color

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
NODE_ROLE = Qt.ItemDataRole.UserRole + 2
GPU_ROLE = Qt.ItemDataRole.UserRole + 3
COLUMNS = ("Site / node / GPU", "Status", "Temp °C", "Power W", "Util %", "Detail")
COLUMN_WIDTHS = (215, 175, 62, 72, 55)
_STATUS_ORDER = (
    NodeStatus.UNREACHABLE,
    NodeStatus.CRITICAL,
    NodeStatus.STALE,
    NodeStatus.WARNING,
    NodeStatus.OK,
)


# Kinds that talk HTTP(S) and so have a ``verify_tls`` that an inventory may turn off.
_TLS_KINDS = frozenset({SourceKind.DCGM, SourceKind.AGENT, SourceKind.REDFISH, SourceKind.PROMETHEUS})
TLS_OFF = "TLS verification off"


def _plain(text: str) -> QStandardItem:
    item = QStandardItem(text)
    item.setEditable(False)
    return item


class FleetModel(QStandardItemModel):
    def __init__(self, state: FleetState) -> None:
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self._state = state
        self._site_rows: dict[str, list[QStandardItem]] = {}
        self._node_rows: dict[str, list[QStandardItem]] = {}
        self._gpu_rows: dict[tuple[str, str], list[QStandardItem]] = {}
        self._seen: dict[str, tuple[int, NodeStatus]] = {}
        # GPU rows are only kept current under expanded nodes: a collapsed node's eight rows are invisible, and
        # updating them every second was most of the panel's cost.
        self.expanded: set[str] = set()
        self.order_changed = False
        # What the last refresh() saw, for the window's fleet map and status bar in the same tick: every node's
        # status walks its GPUs, and the three views computing it apiece was two passes too many.
        self.statuses: dict[str, NodeStatus] = {}
        self.site_counts: list[SiteCounts] = []
        self._tls_off: dict[str, str] = {
            node.name: ", ".join(spec.target() for spec in insecure)
            for node in state.fleet.nodes
            if (insecure := [s for s in node.sources if s.kind in _TLS_KINDS and not s.verify_tls])
        }
        for site in state.fleet.sites:
            row = [_plain(f"{site.name}  ({site.provider}{', ' + site.region if site.region else ''})")]
            row += [_plain("") for _ in COLUMNS[1:]]
            row[0].setData(site.name, SORT_ROLE)
            self.appendRow(row)
            self._site_rows[site.name] = row
        for node in state.nodes.values():
            row = [_plain(node.name)] + [_plain("") for _ in COLUMNS[1:]]
            row[0].setData(node.name, NODE_ROLE)
            self._site_rows[node.site][0].appendRow(row)
            self._node_rows[node.name] = row
        self.refresh()

    def refresh(self) -> None:
        """Bring every row up to date; only cells whose text or colour changed emit dataChanged."""
        statuses = self._state.statuses()
        for name, node in self._state.nodes.items():
            self._refresh_node(node, statuses[name])
        self.statuses = statuses
        self.site_counts = self._state.site_counts(statuses)
        for counts in self.site_counts:
            row = self._site_rows[counts.site]
            parts = [f"{counts.counts[s]} {s}" for s in _STATUS_ORDER if counts.counts[s]]
            worst = next((s for s in _STATUS_ORDER if counts.counts[s]), NodeStatus.OK)
            self._set(row[1], " · ".join(parts) or "no nodes", worst)
            self._set(row[5], f"{counts.nodes} nodes, {counts.gpus} GPUs")

    def _refresh_node(self, node: NodeState, status: NodeStatus) -> None:
        # A node that neither changed nor changed status (a hanging one backing off) costs one comparison.
        seen = (node.version, status)
        if self._seen.get(node.name) == seen:
            return
        self._seen[node.name] = seen
        row = self._node_rows[node.name]
        sort_key = f"{STATUS_RANK[status]}:{node.name}"
        if row[0].data(SORT_ROLE) != sort_key:
            row[0].setData(sort_key, SORT_ROLE)
            self.order_changed = True
        self._set(row[1], str(status), status)
        temps = [g.sample.temperature_c for g in node.gpus.values() if g.sample.temperature_c is not None]
        powers = [g.sample.power_w for g in node.gpus.values() if g.sample.power_w is not None]
        utils = [g.sample.utilization_pct for g in node.gpus.values() if g.sample.utilization_pct is not None]
        self._set(row[2], fmt(max(temps)) if temps else "n/a")
        self._set(row[3], fmt(sum(powers)) if powers else "n/a")
        self._set(row[4], fmt(sum(utils) / len(utils)) if utils else "n/a")
        if status is NodeStatus.UNREACHABLE:
            detail = node.last_error or "unreachable"
        elif node.last_latency_s is not None:
            detail = f"{len(node.gpus)} GPUs, polled in {node.last_latency_s * 1000:.0f} ms"
        else:
            detail = "waiting for first poll"
        last_ok = time.strftime("%H:%M:%S UTC", time.gmtime(node.last_success)) if node.last_success else "never"
        latency = f"{node.last_latency_s * 1000:.0f} ms" if node.last_latency_s is not None else "n/a"
        tip = (
            f"sources: {node.sources}\nlast success: {last_ok}\nlast poll latency: {latency}\n"
            f"last error: {node.last_error or 'none'}"
        )
        unchanged = node.values_unchanged_s
        if unchanged is not None:
            tip += f"\nvalues unchanged for {unchanged:.0f} s (the exporter has not collected since)"
        insecure = self._tls_off.get(node.name)
        if insecure:
            detail += f" · {TLS_OFF}"
            tip += f"\n{TLS_OFF} for {insecure}"
        self._set(row[5], detail)
        self._set_tooltip(row[5], tip)
        self._drop_vanished_gpus(node)
        visible = node.name in self.expanded
        for gpu in sorted(node.gpus.values(), key=lambda g: g.index):
            if visible or (node.name, gpu.uuid) not in self._gpu_rows:
                self._refresh_gpu(node, gpu)

    def node_row(self, node: str) -> list[QStandardItem] | None:
        return self._node_rows.get(node)

    def gpu_row(self, node: str, uuid: str) -> list[QStandardItem] | None:
        return self._gpu_rows.get((node, uuid))

    def set_expanded(self, node: str, expanded: bool) -> None:
        if expanded:
            self.expanded.add(node)
            self._seen.pop(node, None)  # bring its GPU rows up to date at once
        else:
            self.expanded.discard(node)

    def _drop_vanished_gpus(self, node: NodeState) -> None:
        """Rows of GPUs the state no longer keeps (it caps GPUs per node) go too."""
        node_item = self._node_rows[node.name][0]
        if node_item.rowCount() <= len(node.gpus):
            return
        for key in [k for k in self._gpu_rows if k[0] == node.name and k[1] not in node.gpus]:
            row = self._gpu_rows.pop(key)
            node_item.removeRow(row[0].row())

    def _refresh_gpu(self, node: NodeState, gpu: GpuState) -> None:
        key = (node.name, gpu.uuid)
        row = self._gpu_rows.get(key)
        if row is None:
            row = [_plain("")] + [_plain("") for _ in COLUMNS[1:]]
            row[0].setData(node.name, NODE_ROLE)
            row[0].setData(gpu.uuid, GPU_ROLE)
            self._node_rows[node.name][0].appendRow(row)
            self._gpu_rows[key] = row
        sample = gpu.sample
        status = gpu.status
        self._set(row[0], f"GPU {gpu.index}  {sample.name or ''}")
        row[0].setData(f"{gpu.index:05d}", SORT_ROLE)
        self._set(row[1], "lost" if sample.lost else str(status), status)
        self._set(row[2], fmt(sample.temperature_c))
        self._set(row[3], fmt(sample.power_w))
        self._set(row[4], fmt(sample.utilization_pct))
        throttles = ", ".join(str(r) for r in sample.throttle_reasons) or "no throttle"
        self._set(row[5], f"margin {fmt(sample.thermal_margin_c, 0, '°C')}, {throttles}")
        self._set_tooltip(
            row[0],
            f"{sample.uuid}\n{sample.name or ''}\nserial {sample.serial or 'n/a'}\nPCI {sample.pci_bus_id or 'n/a'}",
        )

    @staticmethod
    def _set_tooltip(item: QStandardItem, text: str) -> None:
        tip = plain_tooltip(text)
        if item.toolTip() != tip:
            item.setToolTip(tip)

    @staticmethod
    def _set(item: QStandardItem, text: str, status: NodeStatus | None = None) -> None:
        if item.text() != text:
            item.setText(text)
        if status is not None:
            color = status_color(status)
            current = item.foreground().color()
            if current != color:
                item.setForeground(QBrush(color))


class FleetPanel(QWidget):
    node_selected = Signal(str)  # node name: chart all its GPUs
    gpu_selected = Signal(str, str)  # node name, GPU UUID

    def __init__(self, state: FleetState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = FleetModel(state)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        # Sorting on every dataChanged re-sorted the tree hundreds of times a second; sort once per refresh
        # instead, and only when a node's rank changed.
        self.proxy.setDynamicSortFilter(False)
        self.view = QTreeView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(False)
        self.proxy.sort(0, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setUniformRowHeights(True)
        self.view.setAlternatingRowColors(True)
        header = self.view.header()
        # fixed widths: resizing to contents on every refresh costs time and makes the splitter jump
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate(COLUMN_WIDTHS):
            header.resizeSection(column, width)
        self.view.expandToDepth(0)
        self.view.clicked.connect(self._on_view_clicked)
        self.view.expanded.connect(self._on_view_expanded)
        self.view.collapsed.connect(self._on_view_collapsed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def refresh(self) -> None:
        self.model.order_changed = False
        self.model.refresh()
        if self.model.order_changed:
            self.proxy.sort(0, Qt.SortOrder.AscendingOrder)

    def _node_of(self, proxy_index: QModelIndex) -> str | None:
        item = self.model.itemFromIndex(self.proxy.mapToSource(proxy_index.siblingAtColumn(0)))
        if item is None or item.data(GPU_ROLE):
            return None
        node = item.data(NODE_ROLE)
        return str(node) if node else None

    def _on_view_expanded(self, index: QModelIndex) -> None:
        node = self._node_of(index)
        if node is not None:
            self.model.set_expanded(node, True)
            self.refresh()

    def _on_view_collapsed(self, index: QModelIndex) -> None:
        node = self._node_of(index)
        if node is not None:
            self.model.set_expanded(node, False)

    def _on_view_clicked(self, index: QModelIndex) -> None:
        source = self.proxy.mapToSource(index.siblingAtColumn(0))
        item = self.model.itemFromIndex(source)
        if item is None:
            return
        node = item.data(NODE_ROLE)
        gpu = item.data(GPU_ROLE)
        if gpu:
            self.gpu_selected.emit(node, gpu)
        elif node:
            self.node_selected.emit(node)

    def reveal(self, node: str, gpu_uuid: str | None) -> None:
        """Select and scroll to a node or GPU row (used by the incidents panel's double-click)."""
        rows = self.model.gpu_row(node, gpu_uuid) if gpu_uuid else None
        target = rows or self.model.node_row(node)
        if not target:
            return
        index = self.proxy.mapFromSource(target[0].index())
        if index.parent().isValid():
            self.view.expand(index.parent())
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)
