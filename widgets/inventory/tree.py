"""The inventory editor's tree: sites, nodes with their sources, and receivers, each item standing for a table by
position.

An item holds its selection: ``("site", i)``, ``("node", i)``, ``("source", node i, source j)`` or
``("receiver", i)`` (the i-th ``[[notify]]``); the group items ("Sites", "Nodes", "Receivers") hold nothing.
The tree knows the document only through the ``table_of`` lookup it is given, so it shows what the editor holds
and never keeps a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

from widgets.inventory.forms import ERROR_COLOR, TLS_OFF_WARNING, WARNING_COLOR, display_value

Table = dict[str, Any]
Selection = tuple[Any, ...]  # ("site", i), ("node", i), ("source", node i, source j), ("receiver", i), or ()
TableLookup = Callable[[Selection], Table | None]

_PROBLEM_PATHS = {
    "site": "sites[{1}]",
    "node": "nodes[{1}]",
    "source": "nodes[{1}].sources[{2}]",
    "receiver": "notify[{1}]",
}
_GROUPS = ("Sites", "Nodes", "Receivers")


def _children(item: QTreeWidgetItem) -> list[QTreeWidgetItem]:
    return [child for i in range(item.childCount()) if (child := item.child(i)) is not None]


def item_selection(item: QTreeWidgetItem) -> Selection:
    """What a tree item stands for (Qt may hand a stored tuple back as a list; group items hold nothing)."""
    data = item.data(0, Qt.ItemDataRole.UserRole)
    return tuple(data) if data else ()


class InventoryTree(QTreeWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setHeaderHidden(True)
        self._groups = [QTreeWidgetItem(self, [name]) for name in _GROUPS]

    def rebuild(self, site_count: int, sources_per_node: Sequence[int], receiver_count: int = 0) -> None:
        """New items for the document's shape (after an add or a remove), without a current-item signal."""
        self.blockSignals(True)
        try:
            self.clear()
            self._groups = [QTreeWidgetItem(self, [name]) for name in _GROUPS]
            sites_item, nodes_item, receivers_item = self._groups
            for i in range(site_count):
                QTreeWidgetItem(sites_item).setData(0, Qt.ItemDataRole.UserRole, ("site", i))
            for i in range(receiver_count):
                QTreeWidgetItem(receivers_item).setData(0, Qt.ItemDataRole.UserRole, ("receiver", i))
            for i, sources in enumerate(sources_per_node):
                node_item = QTreeWidgetItem(nodes_item)
                node_item.setData(0, Qt.ItemDataRole.UserRole, ("node", i))
                for j in range(sources):
                    QTreeWidgetItem(node_item).setData(0, Qt.ItemDataRole.UserRole, ("source", i, j))
            self.expandAll()
        finally:
            self.blockSignals(False)

    def table_items(self) -> list[QTreeWidgetItem]:
        """Every item that stands for a table (not the group items)."""
        items: list[QTreeWidgetItem] = []
        for group in self._groups:
            for child in _children(group):
                items.append(child)
                items.extend(_children(child))
        return items

    def find_item(self, selection: Selection) -> QTreeWidgetItem | None:
        if not selection:
            return None
        return next((item for item in self.table_items() if item_selection(item) == selection), None)

    def refresh_texts(self, table_of: TableLookup) -> None:
        for item in self.table_items():
            selection = item_selection(item)
            table = table_of(selection) or {}
            if selection[0] == "site":
                text = f"{table.get('name', '?')} ({table.get('provider') or 'no provider'})"
            elif selection[0] == "node":
                text = f"{table.get('name', '?')} @ {table.get('site') or 'no site'}"
            elif selection[0] == "receiver":
                text = f"{table.get('kind', '?')} {table.get('name') or display_value(table.get('url'))}".strip()
            else:
                text = f"{table.get('kind', '?')} {display_value(table.get('url') or table.get('host'))}".strip()
            if selection[0] in ("source", "receiver") and table.get("verify_tls", True) is False:
                text += "  \u26a0 TLS verification off"
            item.setText(0, text)

    def mark_problems(self, problems: Sequence[str], table_of: TableLookup) -> None:
        """Colour the items whose table has problems (red) or turns TLS verification off (amber)."""
        for item in self.table_items():
            selection = item_selection(item)
            prefix = _PROBLEM_PATHS[selection[0]].format(*selection)
            hits = [p for p in problems if p.startswith((f"{prefix}.", f"{prefix}:"))]
            tls_off = (
                selection[0] in ("source", "receiver") and (table_of(selection) or {}).get("verify_tls", True) is False
            )
            color = ERROR_COLOR if hits else WARNING_COLOR if tls_off else None
            item.setForeground(0, QBrush(QColor(color)) if color else QBrush())
            item.setToolTip(0, "\n".join(hits) or (TLS_OFF_WARNING if tls_off else ""))
