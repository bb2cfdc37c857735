"""The main window: fleet panel, live charts, open incidents and a status bar."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QMainWindow,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from console.config.fleet import Fleet
from console.history.rings import FleetHistory
from console.incidents.model import IncidentChange
from console.live.fleet_state import FleetState, NodeStatus
from console.live.monitor import MonitorUpdate
from console.samples.results import PollResult
from widgets.common.style import STATUS_COLORS
from widgets.live.bmc_view import BmcView
from widgets.live.capability_view import CapabilityView
from widgets.live.charts import ChartPanel, Selection
from widgets.live.fleet_map import FleetMapWidget
from widgets.live.fleet_panel import FleetPanel
from widgets.live.open_incidents import IncidentsPanel

WINDOWS = (("5 min", 300.0), ("15 min", 900.0), ("1 h", 3600.0), ("24 h", 86400.0))


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(self, fleet: Fleet, db_path: Path, history: FleetHistory | None = None) -> None:
        super().__init__()
        self.fleet = fleet
        self.db_path = db_path
        self.state = FleetState(fleet)
        self._collectors: dict[str, str] = {}  # a shared collector's status-bar text, by its name
        self._collector_reads: dict[str, float] = {}
        self.history = history or FleetHistory()
        title = "GPU Ops Console"
        self.setWindowTitle(f"{title} — DEMO FLEET (simulated data)" if fleet.is_demo else f"{title} — {fleet.origin}")
        self.resize(1600, 1000)

        self.fleet_panel = FleetPanel(self.state)
        self.charts = ChartPanel(self.history)
        self.incidents = IncidentsPanel()

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        self.banner = QLabel(
            "DEMO FLEET — simulated GPUs and scripted faults, not a real cluster. "
            "Start with --config FILE to watch your fleet."
        )
        self.banner.setTextFormat(Qt.TextFormat.PlainText)
        self.banner.setStyleSheet(
            "background: #fff3cd; color: #664d03; border: 1px solid #e0a100; padding: 4px; font-weight: 600;"
        )
        self.banner.setVisible(fleet.is_demo)
        layout.addWidget(self.banner)
        # Recoverable app problems (a damaged database moved aside, a failing disk) go here, not into dialogs.
        self.problem_banner = QLabel("")
        self.problem_banner.setTextFormat(Qt.TextFormat.PlainText)
        self.problem_banner.setWordWrap(True)
        self.problem_banner.setStyleSheet(
            "background: #fdecea; color: #7f1d1d; border: 1px solid #c62828; padding: 4px; font-weight: 600;"
        )
        self.problem_banner.hide()
        layout.addWidget(self.problem_banner)

        self.fleet_map = FleetMapWidget(self.state)
        self.center_tabs = QTabWidget()
        self.center_tabs.addTab(self.charts, "Live charts")
        self.center_tabs.addTab(self.fleet_map, "Fleet map")
        self.bmc = BmcView()
        self.center_tabs.addTab(self.bmc, "BMC chassis")
        self.capabilities = CapabilityView(self.state)
        self.center_tabs.addTab(self.capabilities, "Capabilities")
        self.center_tabs.currentChanged.connect(self._on_center_tabs_current_changed)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.fleet_panel)
        top.addWidget(self.center_tabs)
        top.setStretchFactor(0, 0)
        top.setStretchFactor(1, 1)
        top.setSizes([640, 960])
        self.charts.setMinimumWidth(500)
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(top)
        vertical.addWidget(self.incidents)
        vertical.setSizes([700, 230])
        layout.addWidget(vertical, 1)
        self.setCentralWidget(central)

        toolbar = QToolBar("View")
        toolbar.setMovable(False)
        self.addToolBar(toolbar)
        toolbar.addWidget(QLabel(" Time window: "))
        self.window_combo = QComboBox()
        for window_label, _seconds in WINDOWS:
            self.window_combo.addItem(window_label)
        self.window_combo.currentIndexChanged.connect(self._on_window_combo_changed)
        toolbar.addWidget(self.window_combo)
        self.actions_by_name: dict[str, QAction] = {}

        self.status_nodes = QLabel()
        self.status_latency = QLabel()
        self.status_db = QLabel(f"DB: {db_path}")
        for label in (self.status_nodes, self.status_latency, self.status_db):
            label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_nodes.setTextFormat(Qt.TextFormat.RichText)  # our own counts and colours only
        bar = self.statusBar()
        bar.addWidget(self.status_nodes)
        bar.addWidget(self.status_latency)
        bar.addPermanentWidget(self.status_db)

        self.fleet_panel.node_selected.connect(self._on_fleet_panel_node_selected)
        self.fleet_panel.gpu_selected.connect(self._on_fleet_panel_gpu_selected)
        self.incidents.gpu_requested.connect(self._on_incidents_gpu_requested)
        self.fleet_map.gpu_selected.connect(self._on_fleet_map_gpu_selected)
        self.fleet_map.node_selected.connect(self._on_fleet_panel_node_selected)

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setObjectName("window-refresh")
        self._refresh_timer.setInterval(1000)
        self._refresh_timer.timeout.connect(self._on_refresh_timer_timeout)
        self._refresh_timer.start()
        self._refresh_status()

    # -- data arrival (GUI thread, via the bridge) ----

    def on_monitor_updates(self, updates: tuple[MonitorUpdate, ...]) -> None:
        changes: list[IncidentChange] = []
        for update in updates:
            result = update.result
            if result is not None:
                self._apply_result(result)
            changes.extend(update.changes)
        if changes:
            self.state.apply_changes(changes)
            self.incidents.apply(changes)

    def _apply_result(self, result: PollResult) -> None:
        if result.node not in self.state.nodes:
            self._apply_collector_result(result)
            return
        if result.sample is None:
            self.history.record_gap(result.node, result.started)
        elif result.fresh:  # a repeat (the exporter has not collected since) has nothing new to chart
            self.history.record_earlier(result.earlier)  # backfilled minutes first (a Prometheus site's start)
            self.history.record(result.sample)
            self.charts.mark_dirty(result.node)
        first_data = result.sample is not None and not self.state.nodes[result.node].gpus
        self.state.apply_result(result)
        if first_data and self.charts.selection is None:
            self._select_first_node()

    def _apply_collector_result(self, result: PollResult) -> None:
        """A shared collector's own result (a site read through Prometheus): its real refresh period or its error,
        in the status bar beside the poll latency."""
        name = result.node
        if result.failures:
            self._collectors[name] = f"{name} not answering: {result.failures[0].failure}"
        else:
            last = self._collector_reads.get(name)
            self._collector_reads[name] = result.started
            period = f"every {result.started - last:.1f} s, " if last is not None else ""
            self._collectors[name] = f"{name}: {period}read {result.latency_s:.1f} s"

    def show_incident(self, incident_id: str) -> None:
        """Bring the window up on an open incident (a clicked desktop notification)."""
        if self.isMinimized():
            self.showNormal()
        else:
            self.show()
        self.raise_()
        self.activateWindow()
        if not self.incidents.reveal(incident_id):
            self.statusBar().showMessage("That incident is no longer open: see the incident log.", 10_000)

    def show_problem(self, message: str) -> None:
        """Show a recoverable problem in the red banner (newest first, at most three lines kept)."""
        lines = [message, *[line for line in self.problem_banner.text().splitlines() if line != message]][:3]
        self.problem_banner.setText("\n".join(lines))
        self.problem_banner.show()

    def add_action(self, name: str, text: str) -> QAction:
        """A toolbar action other windows (incident log, fleet map, inventory) hang off."""
        action = QAction(text, self)
        toolbar = self.findChild(QToolBar)
        assert toolbar is not None
        toolbar.addAction(action)
        self.actions_by_name[name] = action
        return action

    # -- selection ----

    def _update_rated_flow(self, node: str) -> None:
        sample = self.state.nodes[node].sample
        rated = sample.chassis.coolant_flow_rated_lpm if sample is not None else None
        self.charts.rated_flow_lpm = float("nan") if rated is None else rated

    def _update_bmc(self, node: str) -> None:
        self.bmc.show_node(node, self.state.nodes[node].sample)

    def select_node(self, node: str) -> None:
        self._update_rated_flow(node)
        self._update_bmc(node)
        site = self.state.nodes[node].site
        count = len(self.state.nodes[node].gpus)
        self.charts.select(Selection(node), f"{node} · all {count} GPUs overlaid · {site}")
        self.center_tabs.setCurrentWidget(self.charts)

    def select_gpu(self, node: str, uuid: str) -> None:
        self._update_rated_flow(node)
        self._update_bmc(node)
        state = self.state.nodes[node]
        gpu = state.gpus.get(uuid)
        desc = f"{node} · GPU {gpu.index} {gpu.sample.name or ''} · {uuid} · {state.site}" if gpu else node
        self.charts.select(Selection(node, uuid), desc)
        self.center_tabs.setCurrentWidget(self.charts)

    def _select_first_node(self) -> None:
        for node in self.state.nodes_worst_first():
            if node.gpus:
                self.select_node(node.name)
                return

    def _on_fleet_panel_node_selected(self, node: str) -> None:
        self.select_node(node)

    def _on_fleet_panel_gpu_selected(self, node: str, uuid: str) -> None:
        self.select_gpu(node, uuid)

    def _on_fleet_map_gpu_selected(self, node: str, uuid: str) -> None:
        self.fleet_panel.reveal(node, uuid)
        self.select_gpu(node, uuid)

    def _on_incidents_gpu_requested(self, node: str, uuid: str) -> None:
        if node not in self.state.nodes:
            return
        self.fleet_panel.reveal(node, uuid or None)
        if uuid:
            self.select_gpu(node, uuid)
        else:
            self.select_node(node)

    def _on_center_tabs_current_changed(self, _index: int) -> None:
        if self.center_tabs.currentWidget() is self.capabilities:
            self.capabilities.refresh()

    def _on_window_combo_changed(self, index: int) -> None:
        self.charts.set_window(WINDOWS[index][1])

    # -- periodic ----

    def _on_refresh_timer_timeout(self) -> None:
        self.fleet_panel.refresh()
        # The map and the status bar show the statuses the panel has just computed, not a pass of their own.
        self.fleet_map.refresh(self.fleet_panel.model.statuses)  # nearly free while its tab is hidden
        selection = self.charts.selection
        if selection is not None and self.center_tabs.currentWidget() is self.bmc:
            self._update_bmc(selection.node)
        if self.center_tabs.currentWidget() is self.capabilities:
            self.capabilities.refresh_if_due()
        self._refresh_status()

    def _refresh_status(self) -> None:
        sites = self.fleet_panel.model.site_counts  # as of the panel's last refresh, which runs just before
        parts = [
            f'<span style="color:{STATUS_COLORS[status]}">{sum(site.counts[status] for site in sites)} {status}</span>'
            for status in (
                NodeStatus.OK,
                NodeStatus.WARNING,
                NodeStatus.CRITICAL,
                NodeStatus.STALE,
                NodeStatus.UNREACHABLE,
            )
        ]
        self.status_nodes.setText(
            f"Nodes: {' · '.join(parts)} &nbsp;|&nbsp; {sum(site.gpus for site in sites)} GPUs &nbsp;|&nbsp; "
            f"{self._faults_text()}"
        )
        latency = self.state.latency_summary()
        self.status_latency.setText(
            " | ".join(
                [
                    f"Poll latency p50 {latency[0] * 1000:.0f} ms, p95 {latency[1] * 1000:.0f} ms"
                    if latency
                    else "Poll latency: n/a",
                    *self._collectors.values(),
                ]
            )
        )

    def _faults_text(self) -> str:
        """Faults are the top-level rows of the open-incident list (root incidents, and symptoms whose cause has not
        arrived yet); every open incident, symptoms included, is counted in brackets."""
        rows = self.incidents.model
        faults, total = rows.fault_count, len(rows)
        text = f"<b>{faults} open fault{'' if faults == 1 else 's'}</b>"
        return f"{text} ({total} incident{'' if total == 1 else 's'})" if total != faults else text

    def shutdown(self) -> None:
        self._refresh_timer.stop()
        self.charts.stop()
        self.incidents.shutdown()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        self.closed.emit()
        super().closeEvent(event)
