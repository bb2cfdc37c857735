"""Secondary windows reached from the main window's toolbar: inventory editor, fleet map, incident log.

Each is created on first use (not at start-up) and kept, so reopening is instant and state survives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from console.config.fleet import Fleet
    from widgets.app import ConsoleApp


def _show(window: QWidget) -> None:
    window.show()
    window.raise_()
    window.activateWindow()


def attach(app: ConsoleApp) -> None:
    main = app.window
    cache: dict[str, QWidget] = {}

    def open_inventory() -> None:
        from widgets.inventory.editor import InventoryEditor

        editor = cache.get("inventory")
        if editor is None:
            fleet = None if app.fleet.is_demo else app.fleet
            path = None if app.fleet.is_demo else Path(app.fleet.origin)
            editor = InventoryEditor(fleet, path, main)
            editor.fleet_saved.connect(_on_fleet_saved)
            cache["inventory"] = editor
        _show(editor)

    def _on_fleet_saved(fleet: Fleet) -> None:
        main.statusBar().showMessage(
            f"Inventory saved ({len(fleet.sites)} sites, {len(fleet.nodes)} nodes). "
            "Restart the console with --config to watch it.",
            15_000,
        )

    def open_incident_log() -> None:
        from widgets.review.log_window import IncidentLogWindow

        log_window = cache.get("incident_log")
        if log_window is None:
            # Acknowledge/resolve go through the monitor so the live engine and the store stay in step.
            log_window = IncidentLogWindow(app.store, app.monitor.acknowledge, app.monitor.resolve)
            log_window.setWindowTitle(f"Incident log — {app.db_path}")
            log_window.resize(1500, 950)
            cache["incident_log"] = log_window
        _show(log_window)

    main.add_action("incident_log", "Incident log…").triggered.connect(open_incident_log)
    main.add_action("inventory", "Inventory…").triggered.connect(open_inventory)
    app.extra_windows.append(cache)


def shutdown(app: ConsoleApp) -> None:
    """Stop the secondary windows' worker threads (the incident log reads the store off the GUI thread)."""
    for cache in app.extra_windows:
        for window in cache.values():
            stop = getattr(window, "shutdown", None)
            if stop is not None:
                stop()
            window.close()
