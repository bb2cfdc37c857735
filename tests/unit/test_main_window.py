"""The real main window on the demo fleet: it opens, charts the selected GPU, turns a scripted fault into an
incident in the panel and in SQLite, and leaves no thread or timer running after shutdown."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer

from console.demo.faults import FaultKind
from console.demo.fleet import build_demo_fleet
from console.demo.options import fault_schedule
from console.live.fleet_state import NodeStatus
from console.live.monitor import MonitorUpdate
from console.samples.results import PollFailure, PollResult, SourceFailure
from console.samples.schema import NodeSample
from widgets.app import ConsoleApp, build_app

SEED = 5


def _fleet_with_fault_soon(kind: FaultKind, lead_s: float = 3.0):  # type: ignore[no-untyped-def]
    """A demo fleet anchored so that the first fault of ``kind`` starts ``lead_s`` after now."""
    probe = build_demo_fleet(seed=SEED, anchor=0.0)
    fault = next(f for f in fault_schedule(probe, 600) if f.kind is kind)
    return build_demo_fleet(seed=SEED, anchor=time.time() - fault.start_s + lead_s), fault


@pytest.fixture
def console_app(qtbot, tmp_path: Path):  # type: ignore[no-untyped-def]
    fleet, fault = _fleet_with_fault_soon(FaultKind.GPU_LOST)
    app = build_app(fleet, tmp_path / "incidents.sqlite3", seed=SEED)
    qtbot.addWidget(app.window)
    app.start()
    app.window.show()
    yield app, fault
    app.shutdown()


def test_window_opens_on_the_demo_fleet_and_says_so(console_app, qtbot) -> None:  # type: ignore[no-untyped-def]
    app, _ = console_app
    window = app.window
    assert "DEMO" in window.windowTitle()
    assert window.banner.isVisible() and "DEMO FLEET" in window.banner.text()
    qtbot.waitUntil(lambda: window.state.gpu_count == 256, timeout=15_000)
    window._on_refresh_timer_timeout()
    model = window.fleet_panel.model
    sites = [model.index(row, 0).data() for row in range(model.rowCount())]
    assert len(sites) >= 3
    assert "DB:" in window.status_db.text() and "incidents.sqlite3" in window.status_db.text()
    assert "256 GPUs" in window.status_nodes.text()


def test_selecting_a_gpu_charts_its_data(console_app, qtbot) -> None:  # type: ignore[no-untyped-def]
    app, _ = console_app
    window = app.window
    qtbot.waitUntil(lambda: window.state.gpu_count == 256, timeout=15_000)
    node = next(n for n in window.state.nodes.values() if n.reachable and n.gpus)
    gpu = sorted(node.gpus.values(), key=lambda g: g.index)[3]
    # wait for a few samples of that node so the curve has a shape
    qtbot.waitUntil(lambda: len(window.history.node(node.name).times) >= 3, timeout=10_000)
    window.fleet_panel.reveal(node.name, gpu.uuid)
    index = window.fleet_panel.view.currentIndex()
    rect = window.fleet_panel.view.visualRect(index)
    qtbot.mouseClick(window.fleet_panel.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.charts.selection is not None and window.charts.selection.gpu_uuid == gpu.uuid
    assert f"GPU {gpu.index}" in window.charts.title.text()
    window.charts.redraw()
    _x, y = window.charts.power_curves[0].getData()
    expected = window.history.node(node.name).gpu_series(gpu.uuid, "power_w").y
    assert y is not None and len(y) >= 3
    assert np.allclose(y[-3:], expected[-3:], equal_nan=True)
    assert np.nanmax(y) > 50, "a GPU draws real power"
    # the other slots are empty when one GPU is selected
    other = window.charts.power_curves[1].getData()[1]
    assert other is None or len(other) == 0
    # the node view overlays all eight GPUs
    window.select_node(node.name)
    window.charts.redraw()
    assert all(len(c.getData()[1]) >= 3 for c in window.charts.util_curves)


def test_new_data_reaches_the_charts_one_plot_a_tick(console_app, qtbot) -> None:  # type: ignore[no-untyped-def]
    """A frame is applied a plot per redraw tick: no tick paints all seven plots (a 35-40 ms stall for two)."""
    app, _ = console_app
    window = app.window
    qtbot.waitUntil(lambda: window.state.gpu_count == 256, timeout=15_000)
    node = next(n for n in window.state.nodes.values() if n.reachable and n.gpus)
    qtbot.waitUntil(lambda: len(window.history.node(node.name).times) >= 3, timeout=10_000)
    window.select_node(node.name)
    charts = window.charts
    assert charts.isVisible()
    charts._timer.stop()  # the test ticks it
    drawn = (charts.util_curves, charts.power_curves, charts.temp_curves)
    for curves in drawn:
        for curve in curves:
            curve.setData([], [])
    charts.mark_dirty(node.name)

    def filled(curves) -> bool:  # type: ignore[no-untyped-def]
        return all(len(c.getData()[1] if c.getData()[1] is not None else ()) >= 3 for c in curves)

    charts._on_timer_timeout()
    assert [filled(curves) for curves in drawn] == [True, False, False]
    charts._on_timer_timeout()
    assert [filled(curves) for curves in drawn] == [True, True, False]
    for _tick in range(5):
        charts._on_timer_timeout()
    assert all(filled(curves) for curves in drawn)


def test_a_scripted_fault_becomes_an_incident_in_the_panel_and_in_sqlite(console_app, qtbot) -> None:  # type: ignore[no-untyped-def]
    app, fault = console_app
    window = app.window
    rows = window.incidents.model

    def lost_incident_shown() -> bool:
        return any(
            rows.incident(r).rule == "gpu_lost" and rows.incident(r).context.node == fault.node
            for r in range(rows.rowCount())
        )

    qtbot.waitUntil(lost_incident_shown, timeout=25_000)
    window._on_refresh_timer_timeout()
    assert window.state.node_status(fault.node) is NodeStatus.CRITICAL
    # worst first: within its site the faulty node is listed above the healthy ones (unless another is worse)
    model = window.fleet_panel.view.model()
    site_row = next(
        model.index(r, 0)
        for r in range(model.rowCount())
        if model.index(r, 0).data().startswith(window.state.nodes[fault.node].site)
    )
    listed = [model.index(r, 1, site_row).data() for r in range(model.rowCount(site_row))]
    assert listed[0] in ("critical", "unreachable"), listed
    assert listed == sorted(listed, key=["unreachable", "critical", "stale", "warning", "ok"].index)
    # double-click selects that GPU's charts
    row = next(r for r in range(rows.rowCount()) if rows.incident(r).rule == "gpu_lost")
    window.incidents._on_view_double_clicked(rows.index(row, 0))
    assert window.charts.selection is not None and window.charts.selection.node == fault.node
    app.monitor.flush()  # the worker commits what it holds
    with sqlite3.connect(app.db_path) as db:
        stored = db.execute(
            "SELECT severity, status FROM incidents WHERE rule = 'gpu_lost' AND node = ?", (fault.node,)
        ).fetchall()
    assert stored and stored[0][1] == "open"


def test_shutdown_stops_every_thread_and_timer(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app: ConsoleApp = build_app(build_demo_fleet(seed=1), tmp_path / "i.sqlite3", seed=1)
    qtbot.addWidget(app.window)
    app.start()
    qtbot.waitUntil(lambda: app.monitor.counters.samples > 10, timeout=15_000)
    app.shutdown()
    assert not app.monitor.alive  # the monitoring process ended with the window
    timers = [t for t in app.window.findChildren(QTimer) if t.isActive()]
    assert timers == [], f"timers still running: {[t.objectName() or t for t in timers]}"
    # conftest's autouse fixture fails the test if a poller, ticker or writer thread is still alive


def test_clicking_a_fleet_map_tile_drills_into_that_gpus_charts(console_app, qtbot) -> None:  # type: ignore[no-untyped-def]
    app, _ = console_app
    window = app.window
    qtbot.waitUntil(lambda: window.state.gpu_count == 256, timeout=15_000)
    window.center_tabs.setCurrentWidget(window.fleet_map)
    window.fleet_map.refresh()
    node = next(n for n in window.state.nodes.values() if n.gpus)
    gpu = sorted(node.gpus.values(), key=lambda g: g.index)[5]
    rect = window.fleet_map.canvas.tile_rect(node.name, gpu.uuid)
    assert rect is not None
    qtbot.mouseClick(window.fleet_map.canvas, Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.center_tabs.currentWidget() is window.charts
    assert window.charts.selection is not None
    assert (window.charts.selection.node, window.charts.selection.gpu_uuid) == (node.name, gpu.uuid)


def test_each_node_shows_its_source_status(console_app, qtbot) -> None:  # type: ignore[no-untyped-def]
    app, _ = console_app
    window = app.window
    qtbot.waitUntil(lambda: window.state.gpu_count == 256, timeout=15_000)
    window._on_refresh_timer_timeout()
    node = next(n for n in window.state.nodes.values() if n.reachable and n.gpus)
    detail = window.fleet_panel.model.node_index(node.name, 5)
    assert "polled in" in detail.data() and "ms" in detail.data()
    tip = detail.data(Qt.ItemDataRole.ToolTipRole)
    assert "sources: demo" in tip and "last success:" in tip and "UTC" in tip and "last error: none" in tip


def test_a_damaged_database_is_moved_aside_and_the_banner_says_so(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "incidents.sqlite3"
    db.write_bytes(b"not a database at all " * 500)
    app = build_app(build_demo_fleet(seed=2), db, seed=2)
    qtbot.addWidget(app.window)
    try:
        app.window.show()
        banner = app.window.problem_banner
        assert banner.isVisible()
        assert "corrupt" in banner.text() or "damaged" in banner.text()
        assert list(tmp_path.glob("incidents.sqlite3.corrupt-*")), "the damaged file is kept for inspection"
    finally:
        app.shutdown()


def test_the_status_bar_counts_faults_and_the_list_shows_one_row_per_fault(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from console.incidents.model import ChangeKind, IncidentChange, Scope
    from tests.helpers.builders import make_incident
    from widgets.live.main_window import MainWindow

    window = MainWindow(build_demo_fleet(seed=SEED), tmp_path / "i.sqlite3")
    qtbot.addWidget(window)
    try:
        loop = make_incident(
            "loop", 100.0, node="node-a", gpu_index=None, rule="coolant_flow_low", kind="cooling",
            scope=Scope.COOLING_LOOP, scope_name="loop-a", nodes=("node-a", "node-b"),
        )  # fmt: skip
        symptoms = [make_incident(f"hot-{g}", 110.0 + g, node="node-a", gpu_index=g, parent_id="loop") for g in (1, 2)]
        lone = make_incident("xid", 50.0, node="node-c")
        # a symptom first: its cause is not known yet, so it counts as a fault of its own until the cause arrives
        window.incidents.apply([IncidentChange(ChangeKind.OPENED, symptoms[0], 110.0)])
        window._refresh_status()
        assert "1 open fault" in window.status_nodes.text()
        window.incidents.apply(IncidentChange(ChangeKind.OPENED, i, 120.0) for i in (loop, symptoms[1], lone))
        window._refresh_status()
        assert "2 open faults</b> (4 incidents)" in window.status_nodes.text()
        rows = window.incidents.model
        assert [rows.incident(r).id for r in range(rows.rowCount())] == ["loop", "xid"]
        assert rows.rowCount(rows.index(0, 0)) == 2
    finally:
        window.shutdown()


def test_a_sites_prometheus_collector_shows_its_real_period_or_its_error_in_the_status_bar(console_app, qtbot) -> None:  # type: ignore[no-untyped-def]

    app, _ = console_app
    window = app.window
    name = "prometheus@ord1"

    def collector_result(started: float, latency: float, failures: tuple[SourceFailure, ...] = ()) -> PollResult:
        return PollResult(
            name, "ord1", started, latency, NodeSample(name, "ord1", "prometheus", started), failures, fresh=False
        )

    now = time.time()
    window.on_monitor_updates(
        (
            MonitorUpdate(now, collector_result(now - 16.2, 16.0), ()),
            MonitorUpdate(now, collector_result(now, 16.1), ()),
        )
    )
    window._refresh_status()
    assert "prometheus@ord1: every 16.2 s, read 16.1 s" in window.status_latency.text()
    refused = SourceFailure("prometheus http://p:9090", PollFailure.AUTH_REFUSED, "HTTP 401 Unauthorized")
    window.on_monitor_updates((MonitorUpdate(now, collector_result(now, 0.01, (refused,)), ()),))
    window._refresh_status()
    assert "prometheus@ord1 not answering: auth_refused" in window.status_latency.text()
    assert name not in window.state.nodes  # no node of the inventory appears for it
