"""Secondary windows reached from the main window's toolbar: inventory editor, fleet map, incident log.

Each is created on first use (not at start-up) and kept, so reopening is instant and state survives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from console.fleet import Fleet
    from widgets.app import ConsoleApp


def _show(window: QWidget) -> None:
    window.show()
    window.raise_()
    window.activateWindow()


def attach(app: ConsoleApp) -> None:
    main = app.window
    cache: dict[str, QWidget] = {}

    def open_inventory() -> None:
        from widgets.inventory_editor import InventoryEditor

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

    main.add_action("inventory", "Inventory…").triggered.connect(open_inventory)
    app.extra_windows.append(cache)
