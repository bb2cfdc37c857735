"""The tray: offscreen there is no system tray, and the console carries on with no error; the icon and tooltip
follow the open faults; a clicked notification opens its incident in the main window; settings persist."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from console.demo.fleet import build_demo_fleet
from console.incidents.model import ChangeKind, IncidentChange, Severity
from console.live.desktop_alerts import AlertSettings
from tests.helpers.builders import make_incident
from widgets.common.style import SEVERITY_COLORS
from widgets.live.main_window import MainWindow
from widgets.live.tray import FleetTray, NotificationSettingsDialog

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support (propagateSizeHints|raise)")


def ini(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def icon_color(tray: FleetTray) -> str:
    image = tray.icon.icon().pixmap(64, 64).toImage()
    return image.pixelColor(32, 32).name()


def test_offscreen_there_is_no_tray_and_nothing_fails(
    qtbot: QtBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="widgets.live.tray")
    tray = FleetTray(ini(tmp_path))
    assert tray.available is False  # the offscreen platform has no system tray
    assert not tray.icon.isVisible()
    incident = make_incident("i1", 100.0, severity=Severity.CRITICAL)
    tray.apply([IncidentChange(ChangeKind.OPENED, incident, 100.0)], now=100.0)
    assert tray.icon.toolTip() == "GPU Ops Console: 1 open fault: 1 critical"  # still kept current
    assert "no system tray" in caplog.text
    dialog = NotificationSettingsDialog(tray.settings, tray_available=tray.available)
    qtbot.addWidget(dialog)
    assert any("no system tray" in label.text() for label in dialog.findChildren(QLabel))
    tray.shutdown()


def test_icon_and_tooltip_follow_the_open_faults(tmp_path: Path) -> None:
    tray = FleetTray(ini(tmp_path))
    assert icon_color(tray) == "#2e7d32"
    assert tray.icon.toolTip() == "GPU Ops Console: no open faults"
    warning = make_incident("w", 100.0, node="n1", severity=Severity.WARNING)
    critical = make_incident("c", 101.0, node="n2", severity=Severity.CRITICAL)
    tray.apply([IncidentChange(ChangeKind.OPENED, warning, 100.0)], now=100.0)
    assert icon_color(tray) == SEVERITY_COLORS[Severity.WARNING]
    tray.apply([IncidentChange(ChangeKind.OPENED, critical, 101.0)], now=101.0)
    assert icon_color(tray) == SEVERITY_COLORS[Severity.CRITICAL]
    assert tray.icon.toolTip() == "GPU Ops Console: 2 open faults: 1 critical, 1 warning"
    assert [a.incident.id for a in tray.announced] == ["c"]  # the warning is below the default (major)
    tray.shutdown()


def test_a_clicked_notification_opens_its_incident(qtbot: QtBot, tmp_path: Path) -> None:
    fleet = build_demo_fleet(seed=1)
    window = MainWindow(fleet, tmp_path / "i.sqlite3")
    qtbot.addWidget(window)
    tray = FleetTray(ini(tmp_path))
    tray.incident_requested.connect(window.show_incident)
    try:
        node = fleet.nodes[3].name
        cause = make_incident("cause", 100.0, node=node, gpu_index=None, rule="coolant_flow_low", kind="cooling")
        symptom = make_incident("sym", 101.0, node=node, gpu_index=2, severity=Severity.MAJOR, parent_id="cause")
        other = make_incident("other", 102.0, node=fleet.nodes[9].name, severity=Severity.CRITICAL)
        changes = [IncidentChange(ChangeKind.OPENED, i, i.opened_at) for i in (cause, symptom, other)]
        window.incidents.apply(changes)
        tray.apply(changes, now=102.0)
        assert [a.incident.id for a in tray.announced] == ["cause", "other"]
        tray.announced = tray.announced[:1]  # the cause's notification is the one on screen
        with qtbot.waitSignal(tray.incident_requested, timeout=1000) as asked:
            tray.icon.messageClicked.emit()
        assert asked.args == ["cause"]
        current = window.incidents.view.currentIndex()
        assert window.incidents.model.incident_at(current).id == "cause"
        assert window.charts.selection is not None and window.charts.selection.node == node
        window.show_incident("gone")  # resolved meanwhile: the window says so instead of failing
        assert "no longer open" in window.statusBar().currentMessage()
    finally:
        tray.shutdown()
        window.shutdown()


def test_settings_persist_and_a_broken_file_falls_back_to_defaults(qtbot: QtBot, tmp_path: Path) -> None:
    tray = FleetTray(ini(tmp_path))
    dialog = NotificationSettingsDialog(tray.settings, tray_available=True)
    qtbot.addWidget(dialog)
    dialog.severity.setCurrentIndex(dialog.severity.findData("critical"))
    dialog.per_minute.setValue(7)
    dialog.enabled.setChecked(False)
    tray.apply_settings(dialog.chosen())
    again = FleetTray(ini(tmp_path))
    assert again.settings == AlertSettings(enabled=False, min_severity=Severity.CRITICAL, per_minute=7)
    broken = ini(tmp_path)
    broken.setValue("notifications/min_severity", "apocalyptic")
    broken.setValue("notifications/per_minute", "many")
    broken.sync()
    assert FleetTray(ini(tmp_path)).settings == AlertSettings(enabled=False)
