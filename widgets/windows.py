"""Secondary windows reached from the main window's toolbar: inventory editor, fleet map, incident log.

Each is created on first use (not at start-up) and kept, so reopening is instant and state survives. This module
takes what the windows need as arguments, not the app: the app composes it, and it does not know the app.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from console.config.fleet import Fleet
    from console.store import IncidentStore
    from widgets.live.main_window import MainWindow
    from widgets.review.log_window import AcknowledgeCallback, ResolveCallback


def _show(window: QWidget) -> None:
    window.show()
    window.raise_()
    window.activateWindow()


def attach(
    main: MainWindow,
    *,
    fleet: Fleet,
    db_path: Path,
    store: IncidentStore,
    acknowledge: AcknowledgeCallback,
    resolve: ResolveCallback,
) -> dict[str, QWidget]:
    """Hang the secondary windows off ``main``'s toolbar; returns the (growing) windows opened so far, by name.

    ``acknowledge`` and ``resolve`` are the monitor's, so the live engine and the store stay in step.
    """
    cache: dict[str, QWidget] = {}

    def open_inventory() -> None:
        from widgets.inventory.editor import InventoryEditor

        editor = cache.get("inventory")
        if editor is None:
            edited = None if fleet.is_demo else fleet
            path = None if fleet.is_demo else Path(fleet.origin)
            editor = InventoryEditor(edited, path, main)
            editor.fleet_saved.connect(_on_fleet_saved)
            cache["inventory"] = editor
        _show(editor)

    def _on_fleet_saved(saved: Fleet) -> None:
        main.statusBar().showMessage(
            f"Inventory saved ({len(saved.sites)} sites, {len(saved.nodes)} nodes, {len(saved.receivers)} receivers). "
            "Restart the console with --config to watch it.",
            15_000,
        )

    def open_incident_log() -> None:
        from widgets.review.log_window import IncidentLogWindow

        log_window = cache.get("incident_log")
        if log_window is None:
            log_window = IncidentLogWindow(store, acknowledge, resolve)
            log_window.setWindowTitle(f"Incident log — {db_path}")
            log_window.resize(1500, 950)
            cache["incident_log"] = log_window
        _show(log_window)

    main.add_action("incident_log", "Incident log…").triggered.connect(open_incident_log)
    main.add_action("inventory", "Inventory…").triggered.connect(open_inventory)
    return cache


def shutdown(opened: Iterable[dict[str, QWidget]]) -> None:
    """Stop the secondary windows' worker lanes (the incident log reads the store off the GUI thread), close them."""
    for cache in opened:
        for window in cache.values():
            stop = getattr(window, "shutdown", None)
            if stop is not None:
                stop()
            window.close()
