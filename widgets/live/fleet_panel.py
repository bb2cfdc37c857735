"""The fleet panel: sites -> nodes -> GPUs with status colours, worst first, counts per site.

``FleetModel`` is a lazy tree over ``console.live.fleet_state.FleetState``: it keeps only the row order (sites by name,
nodes worst first, GPUs by index) and computes a cell's text, colour and tooltip in ``data()``, i.e. only for the
cells a view asks for. At 1,000 nodes the view paints ~30 rows, so a refresh tick costs one comparison per node,
not 48,000 item updates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, overload

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QVBoxLayout, QWidget

from console.config.fleet import Site, SourceKind
from console.live.fleet_state import STATUS_RANK, FleetState, GpuState, NodeState, NodeStatus, SiteCounts
from console.samples.activity import activity_lines
from console.samples.workload import SHOWN_IN_A_ROW, workload_text
from widgets.common.style import fmt, plain_tooltip, status_color
from widgets.common.views import TreeView

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
NODE_ROLE = Qt.ItemDataRole.UserRole + 2
GPU_ROLE = Qt.ItemDataRole.UserRole + 3
COLUMNS = ("Site / node / GPU", "Status", "Temp °C", "Power W", "Util %", "Detail")
COLUMN_WIDTHS = (215, 175, 62, 72, 55)
LAST_COLUMN = len(COLUMNS) - 1
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

# Roles as plain ints: a view asks ~10 roles per painted cell, and most must be turned away for the price of one
# set lookup.
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_SORT = int(SORT_ROLE)
_NODE = int(NODE_ROLE)
_GPU = int(GPU_ROLE)
_ROLES = frozenset({_DISPLAY, _FOREGROUND, _TOOLTIP, _SORT, _NODE, _GPU})
_ALL_COLUMNS = range(len(COLUMNS))
_NO_INDEX = QModelIndex()


def _site_title(site: Site) -> str:
    return f"{site.name}  ({site.provider}{', ' + site.region if site.region else ''})"


def _node_detail(node: NodeState, status: NodeStatus, tls_off: str | None) -> str:
    if status is NodeStatus.UNREACHABLE:
        detail = node.last_error or "unreachable"
    elif node.last_latency_s is not None:
        detail = f"{len(node.gpus)} GPUs, polled in {node.last_latency_s * 1000:.0f} ms"
    else:
        detail = "waiting for first poll"
    return f"{detail} · {TLS_OFF}" if tls_off else detail


def _node_tooltip(node: NodeState, tls_off: str | None) -> str:
    last_ok = time.strftime("%H:%M:%S UTC", time.gmtime(node.last_success)) if node.last_success else "never"
    latency = f"{node.last_latency_s * 1000:.0f} ms" if node.last_latency_s is not None else "n/a"
    tip = (
        f"sources: {node.sources}\nlast success: {last_ok}\nlast poll latency: {latency}\n"
        f"last error: {node.last_error or 'none'}"
    )
    unchanged = node.values_unchanged_s
    if unchanged is not None:
        tip += f"\nvalues unchanged for {unchanged:.0f} s (the exporter has not collected since)"
    if tls_off:
        tip += f"\n{TLS_OFF} for {tls_off}"
    return plain_tooltip(tip)


def _node_value(node: NodeState, column: int) -> str:
    gpus = node.gpus.values()
    if column == 2:
        temps = [g.sample.temperature_c for g in gpus if g.sample.temperature_c is not None]
        return fmt(max(temps)) if temps else "n/a"
    if column == 3:
        powers = [g.sample.power_w for g in gpus if g.sample.power_w is not None]
        return fmt(sum(powers)) if powers else "n/a"
    utils = [g.sample.utilization_pct for g in gpus if g.sample.utilization_pct is not None]
    return fmt(sum(utils) / len(utils)) if utils else "n/a"


def _gpu_text(gpu: GpuState, column: int) -> str:
    sample = gpu.sample
    if column == 0:
        return f"GPU {gpu.index}  {sample.name or ''}"
    if column == 1:
        return "lost" if sample.lost else str(gpu.status)
    if column == 2:
        return fmt(sample.temperature_c)
    if column == 3:
        return fmt(sample.power_w)
    if column == 4:
        return fmt(sample.utilization_pct)
    throttles = ", ".join(str(r) for r in sample.throttle_reasons) or "no throttle"
    detail = f"margin {fmt(sample.thermal_margin_c, 0, '°C')}, {throttles}"
    if sample.workload:  # who a fault here would hit
        detail += f" · {workload_text(sample.workload, limit=SHOWN_IN_A_ROW)}"
    return detail


def _gpu_tooltip(gpu: GpuState) -> str:
    sample = gpu.sample
    identity = f"{sample.uuid}\n{sample.name or ''}\nserial {sample.serial or 'n/a'}\nPCI {sample.pci_bus_id or 'n/a'}"
    running = [] if sample.workload is None else [workload_text(sample.workload)]  # None: a source that cannot tell
    return plain_tooltip("\n".join([identity, *running, *activity_lines(sample)]))


class FleetModel(QAbstractItemModel):
    """Sites (by name) -> nodes (worst first, then by name) -> GPUs (by index), six columns.

    Cells are live: ``data()`` reads the state when a view asks, so a view shows current values whenever it
    paints. Values changing is announced once per refresh with ``refreshed`` (a view repaints), not with a
    ``dataChanged`` per changed row: at 1,000 nodes a second those were 1,000 rows a tick, and under the poller's
    load each announcement made the tree call back into Python while waiting for the GIL (stalls of 0.6 s in
    ``scripts/bench/bench_poll.py --app``). Rows inserted, removed and moved are announced as usual.

    An index's internal id names its parent, so an index stays meaningful when rows move: 0 for a site row,
    ``1 + site`` for a node row, ``gpu_base + node`` for a GPU row (``site`` and ``node`` are fixed numbers).
    """

    refreshed = Signal()  # a refresh saw new values or statuses: views repaint

    def __init__(self, state: FleetState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._sites: list[Site] = sorted(state.fleet.sites, key=lambda s: s.name)
        site_number = {site.name: number for number, site in enumerate(self._sites)}
        self._nodes: list[NodeState] = list(state.nodes.values())
        self._node_number = {node.name: number for number, node in enumerate(self._nodes)}
        self._site_of = [site_number[node.site] for node in self._nodes]
        self._gpu_base = 1 + len(self._sites)
        # Display order and its inverse; refresh() keeps both current.
        self._site_nodes: list[list[int]] = [[] for _ in self._sites]
        for number in sorted(range(len(self._nodes)), key=lambda n: self._nodes[n].name):
            self._site_nodes[self._site_of[number]].append(number)
        self._node_row = [0] * len(self._nodes)
        for members in self._site_nodes:
            for row, number in enumerate(members):
                self._node_row[number] = row
        self._ranks = [STATUS_RANK[NodeStatus.STALE]] * len(self._nodes)
        self._gpu_uuids: list[list[str]] = [[] for _ in self._nodes]
        self._gpu_layouts = [-1] * len(self._nodes)  # the state's gpu_layout the node's GPU rows were built from
        self._seen: list[tuple[int, NodeStatus] | None] = [None] * len(self._nodes)
        # What the last refresh() saw, for the window's fleet map and status bar in the same tick: every node's
        # status walks its GPUs, and the three views computing it apiece was two passes too many.
        self.statuses: dict[str, NodeStatus] = {}
        self.site_counts: list[SiteCounts] = []
        self._counts_of: dict[str, SiteCounts] = {}
        self._brushes = {status: QBrush(status_color(status)) for status in NodeStatus}
        self._tls_off: dict[str, str] = {
            node.name: ", ".join(spec.target() for spec in insecure)
            for node in state.fleet.nodes
            if (insecure := [s for s in node.sources if s.kind in _TLS_KINDS and not s.verify_tls])
        }
        self.refresh()

    # -- refresh (once per tick) ----

    def refresh(self) -> None:
        """Take the state's statuses once; reorder, add or drop rows where needed; emit ``refreshed`` when any
        node or site changed."""
        statuses = self._state.statuses()
        changed: list[int] = []
        resort: set[int] = set()
        seen = self._seen
        for number, node in enumerate(self._nodes):
            status = statuses[node.name]
            key = (node.version, status)
            if seen[number] == key:
                continue  # a node that neither changed nor changed status (one backing off) costs this comparison
            seen[number] = key
            changed.append(number)
            rank = STATUS_RANK[status]
            if rank != self._ranks[number]:
                self._ranks[number] = rank
                resort.add(self._site_of[number])
        self.statuses = statuses
        previous = self._counts_of
        self.site_counts = self._state.site_counts(statuses)
        self._counts_of = {counts.site: counts for counts in self.site_counts}
        if resort:
            self._reorder_nodes(sorted(resort))
        for number in changed:
            node = self._nodes[number]
            if node.gpu_layout != self._gpu_layouts[number]:
                self._gpu_layouts[number] = node.gpu_layout
                self._sync_gpu_rows(number, sorted(node.gpus, key=lambda uuid: node.gpus[uuid].index))
        if changed or previous != self._counts_of:
            self.refreshed.emit()

    def _reorder_nodes(self, sites: Sequence[int]) -> None:
        """Worst first, then by name, in each of ``sites``; a layout change only where the order moved, with the
        persistent indexes (selection, expansion, current row) carried to the new rows."""
        moved: dict[int, list[int]] = {}
        for site in sites:
            order = sorted(self._site_nodes[site], key=lambda n: (self._ranks[n], self._nodes[n].name))
            if order != self._site_nodes[site]:
                moved[site] = order
        if not moved:
            return
        # PySide6 emits the layout signals without their (parents, hint) arguments: views take it as "anything
        # may have moved", which costs one relayout of the expanded rows.
        self.layoutAboutToBeChanged.emit()
        before = {site: self._site_nodes[site] for site in moved}
        for site, order in moved.items():
            self._site_nodes[site] = order
            for row, number in enumerate(order):
                self._node_row[number] = row
        old: list[QModelIndex] = []
        new: list[QModelIndex] = []
        for persistent in self.persistentIndexList():
            site = persistent.internalId() - 1
            if site in moved:  # a node row: GPU rows name their node, not its row, and need no update
                number = before[site][persistent.row()]
                old.append(persistent)
                new.append(self.createIndex(self._node_row[number], persistent.column(), 1 + site))
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def _sync_gpu_rows(self, number: int, wanted: list[str]) -> None:
        """Make the node's GPU rows ``wanted`` (uuids by index) with row removals, a reorder and insertions, so
        that a selected or expanded GPU row stays where it is."""
        current = self._gpu_uuids[number]
        if current == wanted:
            return
        parent = self.createIndex(self._node_row[number], 0, 1 + self._site_of[number])
        keep = set(wanted)
        row = len(current) - 1
        while row >= 0:  # from the bottom, in runs, so the rows above keep their numbers
            if current[row] in keep:
                row -= 1
                continue
            last = row
            while row >= 0 and current[row] not in keep:
                row -= 1
            self.beginRemoveRows(parent, row + 1, last)
            del current[row + 1 : last + 1]
            self.endRemoveRows()
        present = set(current)
        kept_order = [uuid for uuid in wanted if uuid in present]
        if kept_order != current:  # a GPU's index changed between polls: same rows, new order
            self._reorder_gpus(number, parent, kept_order)
        row = 0
        while row < len(wanted):  # ``current`` is now a subsequence of ``wanted``: fill the gaps in runs
            if row < len(current) and current[row] == wanted[row]:
                row += 1
                continue
            end = row
            while end < len(wanted) and wanted[end] not in present:
                end += 1
            self.beginInsertRows(parent, row, end - 1)
            current[row:row] = wanted[row:end]
            self.endInsertRows()
            row = end

    def _reorder_gpus(self, number: int, parent: QModelIndex, order: list[str]) -> None:
        self.layoutAboutToBeChanged.emit()
        current = self._gpu_uuids[number]
        ident = self._gpu_base + number
        old: list[QModelIndex] = []
        new: list[QModelIndex] = []
        for persistent in self.persistentIndexList():
            if persistent.internalId() == ident:
                old.append(persistent)
                new.append(self.createIndex(order.index(current[persistent.row()]), persistent.column(), ident))
        current[:] = order
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    # -- lookups ----

    def node_index(self, node: str, column: int = 0) -> QModelIndex:
        """The node's row (invalid for a node not in the fleet)."""
        number = self._node_number.get(node)
        if number is None:
            return QModelIndex()
        return self.createIndex(self._node_row[number], column, 1 + self._site_of[number])

    def gpu_index(self, node: str, uuid: str, column: int = 0) -> QModelIndex:
        """The GPU's row under its node (invalid until a refresh has seen that GPU)."""
        number = self._node_number.get(node)
        if number is None or uuid not in self._gpu_uuids[number]:
            return QModelIndex()
        return self.createIndex(self._gpu_uuids[number].index(uuid), column, self._gpu_base + number)

    def site_index(self, site: str, column: int = 0) -> QModelIndex:
        for row, candidate in enumerate(self._sites):
            if candidate.name == site:
                return self.createIndex(row, column, 0)
        return QModelIndex()

    # -- QAbstractItemModel ----

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _NO_INDEX) -> int:
        return len(COLUMNS)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _NO_INDEX) -> int:
        if not parent.isValid():
            return len(self._sites)
        if parent.column() != 0:
            return 0
        ident = parent.internalId()
        if ident == 0:
            return len(self._site_nodes[parent.row()])
        if ident < self._gpu_base:
            return len(self._gpu_uuids[self._site_nodes[ident - 1][parent.row()]])
        return 0

    def hasChildren(self, parent: QModelIndex | QPersistentModelIndex = _NO_INDEX) -> bool:
        return self.rowCount(parent) > 0

    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = _NO_INDEX) -> QModelIndex:
        # Written out rather than through rowCount(): a paint asks for hundreds of indexes.
        if row < 0 or column not in _ALL_COLUMNS:
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, 0) if row < len(self._sites) else QModelIndex()
        if parent.column() != 0:
            return QModelIndex()
        ident = parent.internalId()
        if ident == 0:
            site = parent.row()
            return self.createIndex(row, column, 1 + site) if row < len(self._site_nodes[site]) else QModelIndex()
        if ident < self._gpu_base:
            number = self._site_nodes[ident - 1][parent.row()]
            if row < len(self._gpu_uuids[number]):
                return self.createIndex(row, column, self._gpu_base + number)
        return QModelIndex()

    @overload
    def parent(self) -> QObject | None: ...
    @overload
    def parent(self, child: QModelIndex | QPersistentModelIndex) -> QModelIndex: ...
    def parent(self, child: QModelIndex | QPersistentModelIndex | None = None) -> QObject | QModelIndex | None:
        if child is None:
            return super().parent()
        if not child.isValid():
            return QModelIndex()
        ident = child.internalId()
        if ident == 0:
            return QModelIndex()
        if ident < self._gpu_base:
            return self.createIndex(ident - 1, 0, 0)
        number = ident - self._gpu_base
        return self.createIndex(self._node_row[number], 0, 1 + self._site_of[number])

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY and 0 <= section < len(COLUMNS):
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = _DISPLAY) -> Any:
        if role not in _ROLES or not index.isValid():
            return None
        ident = index.internalId()
        if ident == 0:
            return self._site_data(self._sites[index.row()], index.column(), role)
        if ident < self._gpu_base:
            return self._node_data(self._nodes[self._site_nodes[ident - 1][index.row()]], index.column(), role)
        node = self._nodes[ident - self._gpu_base]
        uuids = self._gpu_uuids[ident - self._gpu_base]
        # The state may have dropped the GPU since the last refresh (it caps GPUs per node): no data until then.
        gpu = node.gpus.get(uuids[index.row()]) if index.row() < len(uuids) else None
        return None if gpu is None else self._gpu_data(node, gpu, index.column(), role)

    def _site_data(self, site: Site, column: int, role: int) -> Any:
        counts = self._counts_of.get(site.name)
        if role == _DISPLAY:
            if column == 0:
                return _site_title(site)
            if counts is None:
                return ""
            if column == 1:
                parts = [f"{counts.counts[s]} {s}" for s in _STATUS_ORDER if counts.counts[s]]
                return " · ".join(parts) or "no nodes"
            return f"{counts.nodes} nodes, {counts.gpus} GPUs" if column == LAST_COLUMN else ""
        if role == _FOREGROUND and column == 1 and counts is not None:
            return self._brushes[next((s for s in _STATUS_ORDER if counts.counts[s]), NodeStatus.OK)]
        if role == _SORT and column == 0:
            return site.name
        return None

    def _node_data(self, node: NodeState, column: int, role: int) -> Any:
        status = self.statuses.get(node.name, NodeStatus.STALE)
        if role == _DISPLAY:
            if column == 0:
                return node.name
            if column == 1:
                return str(status)
            if column == LAST_COLUMN:
                return _node_detail(node, status, self._tls_off.get(node.name))
            return _node_value(node, column)
        if role == _FOREGROUND:
            return self._brushes[status] if column == 1 else None
        if role == _TOOLTIP:
            return _node_tooltip(node, self._tls_off.get(node.name)) if column == LAST_COLUMN else None
        if role == _NODE:
            return node.name
        if role == _SORT and column == 0:
            return f"{STATUS_RANK[status]}:{node.name}"
        return None

    def _gpu_data(self, node: NodeState, gpu: GpuState, column: int, role: int) -> Any:
        if role == _DISPLAY:
            return _gpu_text(gpu, column)
        if role == _FOREGROUND:
            return self._brushes[gpu.status] if column == 1 else None
        if role == _TOOLTIP:
            return _gpu_tooltip(gpu) if column == 0 else None
        if role == _NODE:
            return node.name
        if role == _GPU:
            return gpu.uuid
        if role == _SORT and column == 0:
            return f"{gpu.index:05d}"
        return None


class FleetPanel(QWidget):
    node_selected = Signal(str)  # node name: chart all its GPUs
    gpu_selected = Signal(str, str)  # node name, GPU UUID
    silence_requested = Signal(str)  # node name: the operator asked to silence it (maintenance)

    def __init__(self, state: FleetState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = FleetModel(state, self)
        self.view = TreeView()
        self.view.setModel(self.model)  # the model keeps its own order: no sort proxy, no re-sort per change
        self.model.refreshed.connect(self.view.viewport().update)
        self.view.setSortingEnabled(False)
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
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_view_context_menu_requested)
        self.silencing_enabled = False  # set once a notifier can make silences
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def refresh(self) -> None:
        self.model.refresh()

    def _on_view_clicked(self, index: QModelIndex) -> None:
        node = index.data(NODE_ROLE)
        gpu = index.data(GPU_ROLE)
        if node and gpu:
            self.gpu_selected.emit(str(node), str(gpu))
        elif node:
            self.node_selected.emit(str(node))

    def node_menu(self, node: str) -> QMenu:
        menu = QMenu(self)
        action = menu.addAction(f"Silence {node}…")
        action.setEnabled(self.silencing_enabled)
        action.triggered.connect(lambda: self.silence_requested.emit(node))
        return menu

    def _on_view_context_menu_requested(self, point: QPoint) -> None:
        node = self.view.indexAt(point).data(NODE_ROLE)
        if node:
            self.node_menu(str(node)).popup(self.view.viewport().mapToGlobal(point))

    def reveal(self, node: str, gpu_uuid: str | None) -> None:
        """Select and scroll to a node or GPU row (used by the incidents panel's double-click)."""
        index = self.model.gpu_index(node, gpu_uuid) if gpu_uuid else QModelIndex()
        if not index.isValid():
            index = self.model.node_index(node)
        if not index.isValid():
            return
        parent = index.parent()
        while parent.isValid():
            self.view.expand(parent)
            parent = parent.parent()
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)
