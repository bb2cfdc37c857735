"""The composition root of the GUI: builds the window and the monitoring worker it talks to, and tears them down
in order on quit. Nothing else creates long-lived objects; there are no global registries.

Polling, parsing, the incident engine, the store's writer, the chart rollup and the notifier run in a worker
process (``console.live.worker_process``), so they never hold this process's GIL; ``widgets.monitor_client`` is
the window's end of it. This process only reads the files the worker writes (the incident log, chart history).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QSettings, QTimer, QtMsgType, qInstallMessageHandler
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from console.config.fleet import Fleet
from console.history.rings import ASSUMED_GPUS_PER_NODE, FleetHistory
from console.history.rollup import DEFAULT_RETENTION_H, RollupError, RollupReader, history_path_for
from console.live.monitor import MonitorUpdate
from console.live.startup import tune_garbage_collector
from console.live.worker_messages import WorkerConfig
from console.store import IncidentStore
from widgets import windows
from widgets.bridge import MonitorBridge
from widgets.live.main_window import MainWindow
from widgets.live.receivers import ReceiverStatusLabel
from widgets.live.silencing import NodeSilencer
from widgets.live.tray import FleetTray, NotificationSettingsDialog
from widgets.monitor_client import MonitorClient

log = logging.getLogger(__name__)
qt_log = logging.getLogger("qt")
# The offscreen and minimal platform plugins say these on every show(); they are not problems of ours.
_PLATFORM_NOISE = ("This plugin does not support propagateSizeHints", "This plugin does not support raise")


def _qt_message_handler(mode: QtMsgType, _context: object, message: str) -> None:
    level = {
        QtMsgType.QtDebugMsg: logging.DEBUG,
        QtMsgType.QtInfoMsg: logging.INFO,
        QtMsgType.QtWarningMsg: logging.WARNING,
        QtMsgType.QtCriticalMsg: logging.ERROR,
        QtMsgType.QtFatalMsg: logging.CRITICAL,
    }.get(mode, logging.WARNING)
    if message.startswith(_PLATFORM_NOISE):
        level = logging.DEBUG
    qt_log.log(level, "%s", message)


@dataclass
class ConsoleApp:
    """Everything the running GUI owns, so tests can build it, drive it and shut it down."""

    fleet: Fleet
    db_path: Path
    window: MainWindow
    monitor: MonitorClient  # the monitoring worker: poller, engine, store writer, rollup, notifier
    bridge: MonitorBridge
    store: IncidentStore  # read-only: the incident log's reads (the worker writes the file)
    extra_windows: list[dict[str, QWidget]] = field(default_factory=list)
    rollup: RollupReader | None = None  # per-minute chart history; None when its file could not be opened
    tray: FleetTray | None = None
    silencer: NodeSilencer | None = None  # the fleet panel's "Silence…"
    _stopped: bool = False

    def start(self) -> None:
        self.monitor.start_polling()

    def shutdown(self) -> None:
        """Stop the readers, then the worker (polling, then its writers). Safe to call twice.

        The incident log's lanes and the charts' history lane go first: they read the files the worker closes.
        """
        if self._stopped:
            return
        self._stopped = True
        windows.shutdown(self.extra_windows)
        if self.silencer is not None:
            self.silencer.shutdown()
        if self.tray is not None:
            self.tray.shutdown()
        self.window.shutdown()  # its timers and the chart-history lane
        self.monitor.stop()
        self.store.close()
        if self.rollup is not None:
            self.rollup.close()

    def summary(self) -> dict[str, object]:
        counters = self.monitor.counters
        return {
            "nodes": len(self.fleet.nodes),
            "gpus": self.window.state.gpu_count,
            "samples": counters.samples,
            "incidents": counters.incidents_opened,
            "db": str(self.db_path),
        }


HISTORY_BUDGET_BYTES = 256 * 2**20  # in-memory chart rings; the rollup holds what they cannot


def build_app(
    fleet: Fleet,
    db_path: Path,
    *,
    seed: int | None = None,
    history_path: Path | None = None,
    history_retention_h: float = DEFAULT_RETENTION_H,
    history_budget_bytes: int = HISTORY_BUDGET_BYTES,
    settings: QSettings | None = None,
) -> ConsoleApp:
    """Start the monitoring worker (it opens the database first: its problems raise here) and build the window.
    Polling begins on ``start``."""
    tune_garbage_collector()
    bridge = MonitorBridge()
    history_file = history_path or history_path_for(db_path)
    level = logging.getLogger().getEffectiveLevel()
    config = WorkerConfig(fleet, db_path, history_file, history_retention_h, seed=seed, log_level=level)
    monitor = MonitorClient(config, bridge)
    history = FleetHistory(budget_bytes=history_budget_bytes, expected_gpus=len(fleet.nodes) * ASSUMED_GPUS_PER_NODE)
    window = MainWindow(fleet, db_path, history)
    bridge.setParent(window)
    monitor.setParent(window)
    bridge.updates_received.connect(window.on_monitor_updates)
    bridge.problem_reported.connect(window.show_problem)
    bridge.status_reported.connect(lambda text: window.statusBar().showMessage(text, 30_000))
    bridge.worker_lost.connect(lambda text: window.statusBar().showMessage(text, 30_000))
    try:
        ready = monitor.launch()  # a damaged database moved aside, or history disabled, reach the banner here
        store = IncidentStore.open_readonly(db_path)
    except BaseException:
        monitor.stop()
        window.shutdown()
        window.deleteLater()
        raise
    rollup: RollupReader | None = None
    if ready.history_enabled:
        try:
            rollup = RollupReader.open_readonly(history_file)
        except RollupError as exc:
            window.show_problem(f"chart history not shown: {exc}")
        window.charts.set_rollup(rollup)
    silencer = _attach_notifier(window, fleet, monitor)
    tray = _attach_tray(window, bridge, settings or QSettings("gpu-ops-console", "console"))
    app = ConsoleApp(
        fleet=fleet,
        db_path=db_path,
        window=window,
        monitor=monitor,
        bridge=bridge,
        store=store,
        rollup=rollup,
        tray=tray,
        silencer=silencer,
    )
    # Incident log and inventory editor hang off toolbar actions; each is built (and imported) on first use.
    opened = windows.attach(
        window, fleet=fleet, db_path=db_path, store=store, acknowledge=monitor.acknowledge, resolve=monitor.resolve
    )
    app.extra_windows.append(opened)
    return app


def _attach_notifier(window: MainWindow, fleet: Fleet, monitor: MonitorClient) -> NodeSilencer:
    """Silenced incidents dimmed in the open list; the receivers' status in the status bar (when there are any);
    the fleet panel's node menu makes silences. The notifier runs in the worker: ``monitor`` speaks for it."""
    window.incidents.show_silences(monitor.silence_of)
    if fleet.receivers:
        window.statusBar().addPermanentWidget(ReceiverStatusLabel(monitor.statuses, window))
    racks = {node.name: node.topology.rack for node in fleet.nodes if node.topology.rack}
    silencer = NodeSilencer(monitor, racks, lambda text: window.statusBar().showMessage(text, 15_000), window)
    window.fleet_panel.silencing_enabled = True
    window.fleet_panel.silence_requested.connect(silencer.ask)
    return silencer


def _attach_tray(window: MainWindow, bridge: MonitorBridge, settings: QSettings) -> FleetTray:
    """The tray icon follows the monitor's changes; a clicked notification opens its incident in the window."""
    tray = FleetTray(settings, parent=window)

    def on_updates(updates: tuple[MonitorUpdate, ...]) -> None:
        changes = [change for update in updates for change in update.changes]
        if changes:
            tray.apply(changes)

    def open_settings() -> None:
        dialog = NotificationSettingsDialog(tray.settings, window, tray_available=tray.available)
        if dialog.exec() == NotificationSettingsDialog.DialogCode.Accepted:
            tray.apply_settings(dialog.chosen())

    bridge.updates_received.connect(on_updates)
    tray.incident_requested.connect(window.show_incident)
    window.add_action("notifications", "Notifications…").triggered.connect(open_settings)
    return tray


def run_gui(args: argparse.Namespace) -> int:
    from console.live.startup import resolve_db_path, resolve_fleet

    smoke = args.smoke_test is not None
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not has_display and not os.environ.get("QT_QPA_PLATFORM") and sys.platform.startswith("linux"):
        if not smoke:
            # Qt would abort with exit 134 and a hint about xcb-cursor0 that is rarely the real cause.
            print(
                "gpu-console: no display (DISPLAY/WAYLAND_DISPLAY unset). Run it on a desktop, under xvfb-run, "
                "or with QT_QPA_PLATFORM=offscreen.",
                file=sys.stderr,
            )
            return 2
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a smoke test needs no screen
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qt_app, QApplication)
    qt_app.setApplicationName("GPU Ops Console")
    qInstallMessageHandler(_qt_message_handler)
    failures: list[str] = []

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(kind, value, tb))
        log.error("unhandled error:\n%s", text)
        failures.append(text)
        if smoke:
            qt_app.exit(1)
        else:
            box = QMessageBox(QMessageBox.Icon.Critical, "GPU Ops Console: unexpected error", str(value))
            box.setDetailedText(text)
            box.exec()

    sys.excepthook = excepthook
    try:
        fleet = resolve_fleet(args.config, args.demo or smoke, args.seed)
        db_path = resolve_db_path(args.db)
        app = build_app(fleet, db_path, seed=args.seed)
    except Exception as exc:  # config, inventory or database problem: say which, and exit
        message = f"gpu-console: cannot start: {exc}"
        print(message, file=sys.stderr)
        log.debug("start-up failure", exc_info=True)
        return 2
    qt_app.aboutToQuit.connect(app.shutdown)
    app.start()
    app.window.show()
    # Everything built so far (Qt wrappers, numpy, pyqtgraph, the fleet) lives as long as the app: move it out of
    # the collector's sight so full collections, which stall the event loop, scan only what polling creates.
    gc.freeze()
    if smoke:
        QTimer.singleShot(int(args.smoke_test * 1000), qt_app.quit)
    code = qt_app.exec()
    app.shutdown()
    if smoke:
        print(json.dumps(app.summary()))
    return 1 if failures else code
