"""The system-tray icon and desktop notifications (what to announce is ``console.live.desktop_alerts``'s call).

The icon's colour is the worst open fault's severity and its tooltip counts the open faults by severity. Where
the desktop has no tray (the offscreen platform, some Wayland desktops) the icon is never shown and the
announcements are kept but not displayed; the console works as before, and the settings dialog says why.

Settings (on, lowest severity, most per minute) persist in QSettings under ``notifications/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QSystemTrayIcon,
    QWidget,
)

from console.incidents.model import Incident, IncidentChange, Severity
from console.live.desktop_alerts import AlertSettings, Announcement, DesktopAlerts, FaultSummary
from widgets.common.style import SEVERITY_COLORS

log = logging.getLogger(__name__)

HEALTHY_COLOR = "#2e7d32"
ICON_PX = 64
MESSAGE_MS = 15_000
_SETTINGS_GROUP = "notifications"
CHOOSABLE_SEVERITIES = (Severity.WARNING, Severity.MAJOR, Severity.CRITICAL)


def load_settings(settings: QSettings) -> AlertSettings:
    """What was saved, or the defaults for anything missing or unreadable (a hand-edited file never stops us)."""
    default = AlertSettings()
    settings.beginGroup(_SETTINGS_GROUP)
    try:
        enabled = str(settings.value("enabled", default.enabled)).lower() not in ("false", "0", "no")
        try:
            severity = Severity.parse(str(settings.value("min_severity", default.min_severity.label)))
        except ValueError:
            severity = default.min_severity
        try:
            per_minute = max(0, min(60, int(str(settings.value("per_minute", default.per_minute)))))
        except ValueError:
            per_minute = default.per_minute
    finally:
        settings.endGroup()
    return AlertSettings(enabled=enabled, min_severity=severity, per_minute=per_minute)


def save_settings(settings: QSettings, chosen: AlertSettings) -> None:
    settings.beginGroup(_SETTINGS_GROUP)
    settings.setValue("enabled", chosen.enabled)
    settings.setValue("min_severity", chosen.min_severity.label)
    settings.setValue("per_minute", chosen.per_minute)
    settings.endGroup()
    settings.sync()


def status_icon(worst: Severity | None) -> QIcon:
    color = QColor(HEALTHY_COLOR if worst is None else SEVERITY_COLORS[worst])
    pixmap = QPixmap(ICON_PX, ICON_PX)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(color)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(4, 4, ICON_PX - 8, ICON_PX - 8)
    painter.end()
    return QIcon(pixmap)


class FleetTray(QObject):
    """Feed it the monitor's incident changes; it keeps the icon current and announces new faults."""

    incident_requested = Signal(str)  # a notification was clicked: open this incident

    def __init__(
        self,
        settings: QSettings,
        *,
        is_silenced: Callable[[Incident], bool] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings = settings
        self.alerts = DesktopAlerts(load_settings(settings), is_silenced)
        self.available = QSystemTrayIcon.isSystemTrayAvailable()
        self.icon = QSystemTrayIcon(self)
        self.icon.messageClicked.connect(self._on_message_clicked)
        # The announcements made, newest last (a few kept); without a tray they are made but not shown.
        self.announced: list[Announcement] = []
        self._icon_for: tuple[Severity | None] | None = None  # the worst severity the icon shows (None: not drawn)
        if not self.available:
            log.debug("no system tray on this desktop: desktop notifications are off (the settings dialog says so)")
        self._refresh(self.alerts.summary())
        if self.available:
            self.icon.show()

    @property
    def settings(self) -> AlertSettings:
        return self.alerts.settings

    def apply_settings(self, chosen: AlertSettings) -> None:
        self.alerts.settings = chosen
        save_settings(self._settings, chosen)

    def apply(self, changes: Iterable[IncidentChange], now: float | None = None) -> None:
        announcements = self.alerts.consider(changes, time.time() if now is None else now)
        for announcement in announcements:
            self._announce(announcement)
        self._refresh(self.alerts.summary())

    def _announce(self, announcement: Announcement) -> None:
        self.announced = [*self.announced[-9:], announcement]
        if not self.available:
            return
        icon = (
            QSystemTrayIcon.MessageIcon.Critical
            if announcement.incident.severity >= Severity.CRITICAL
            else QSystemTrayIcon.MessageIcon.Warning
        )
        self.icon.showMessage(announcement.title, announcement.body, icon, MESSAGE_MS)

    def _refresh(self, summary: FaultSummary) -> None:
        held = self.alerts.held_back
        extra = f"\n{held} notification{'' if held == 1 else 's'} held back by the rate limit" if held else ""
        self.icon.setToolTip(f"GPU Ops Console: {summary.text()}{extra}")
        if (summary.worst,) != self._icon_for:  # repaint the icon only when its colour changes
            self._icon_for = (summary.worst,)
            self.icon.setIcon(status_icon(summary.worst))

    def _on_message_clicked(self) -> None:
        # Qt says only that the last message was clicked: it is the newest announcement.
        if self.announced:
            self.incident_requested.emit(self.announced[-1].incident.id)

    def shutdown(self) -> None:
        self.icon.hide()


class NotificationSettingsDialog(QDialog):
    """On or off, the lowest severity announced, and at most how many a minute."""

    def __init__(self, current: AlertSettings, parent: QWidget | None = None, *, tray_available: bool) -> None:
        super().__init__(parent)
        self.setWindowTitle("Desktop notifications")
        form = QFormLayout(self)
        self.enabled = QCheckBox("Announce new faults on the desktop")
        self.enabled.setChecked(current.enabled)
        self.severity = QComboBox()
        for severity in CHOOSABLE_SEVERITIES:
            self.severity.addItem(f"{severity.label} and worse", severity.label)
        self.severity.setCurrentIndex(max(0, self.severity.findData(current.min_severity.label)))
        self.per_minute = QSpinBox()
        self.per_minute.setRange(1, 60)
        self.per_minute.setValue(max(1, current.per_minute))
        self.per_minute.setSuffix(" per minute at most")
        form.addRow(self.enabled)
        form.addRow("Severity", self.severity)
        form.addRow("Rate", self.per_minute)
        if not tray_available:
            note = QLabel("This desktop has no system tray: notifications cannot be shown here (settings are kept).")
            note.setWordWrap(True)
            form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def chosen(self) -> AlertSettings:
        return AlertSettings(
            enabled=self.enabled.isChecked(),
            min_severity=Severity.parse(str(self.severity.currentData())),
            per_minute=self.per_minute.value(),
        )
