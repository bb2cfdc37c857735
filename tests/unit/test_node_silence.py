"""Maintenance from the window: the fleet panel's node menu silences the node or its rack (a local silence here,
with no Alertmanager configured) without the window waiting, says so in the status bar, and the silenced
incidents stay in the open list, dimmed."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from console.demo.fleet import build_demo_fleet
from console.incidents.model import ChangeKind, IncidentChange
from tests.helpers.builders import make_incident
from widgets.app import build_app
from widgets.live.incident_tree import COLUMNS


def test_a_node_silenced_from_its_menu_dims_its_incidents_and_is_said(qtbot: QtBot, tmp_path: Path) -> None:
    fleet = build_demo_fleet(seed=4)
    node = next(n for n in fleet.nodes if n.topology.rack)
    app = build_app(fleet, tmp_path / "incidents.sqlite3", seed=4)
    qtbot.addWidget(app.window)
    try:
        window = app.window
        menu = window.fleet_panel.node_menu(node.name)
        [action] = menu.actions()
        assert action.text() == f"Silence {node.name}…" and action.isEnabled()
        action.trigger()
        dialog = app.silencer.dialog if app.silencer is not None else None
        assert dialog is not None and not dialog.ok_button.isEnabled()  # no comment, no silence
        assert dialog.scope.count() == 2  # the node, or its whole rack
        dialog.scope.setCurrentIndex(1)
        dialog.hours.setValue(2)
        dialog.comment.setText("re-cabling, OPS-9")
        dialog.ok_button.click()
        qtbot.waitUntil(lambda: "Silenced rack=" in window.statusBar().currentMessage(), timeout=10_000)
        assert "re-cabling, OPS-9" in window.statusBar().currentMessage()

        muted = make_incident("m", 1.0, node=node.name, site=node.site, provider="demo")
        loud = make_incident("l", 2.0, node="elsewhere", site=node.site, provider="demo")
        window.incidents.apply([IncidentChange(ChangeKind.OPENED, i, i.opened_at) for i in (muted, loud)])
        model = window.incidents.model
        status = {model.incident(r).id: model.data(model.index(r, COLUMNS.index("Status"))) for r in range(2)}
        assert status == {"m": "silenced", "l": "open"}
    finally:
        app.shutdown()
