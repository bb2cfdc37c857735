"""The inventory editor's document: the inventory's TOML-shaped dict, addressed by tree selections.

Edits go to the tables in place (the forms say ``key = value``; None removes the key) and keep the document
coherent: nodes and overrides follow a renamed site, and a table whose kind changes loses the keys the new kind
does not take. No Qt here: the dialog (``widgets.inventory.editor``) holds one and draws it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from console.config.fleet import Fleet, ReceiverKind, SourceKind
from console.config.inventory import DEFAULT_TIMEOUT_S, SOURCE_KEYS, fleet_to_document
from widgets.inventory.receiver_form import keys_the_kind_takes
from widgets.inventory.tree import Selection, Table


class InventoryDocument:
    def __init__(self, fleet: Fleet | None) -> None:
        self.tables: dict[str, Any] = fleet_to_document(fleet or Fleet(sites=(), nodes=()))

    def _list(self, key: str) -> list[Table]:
        tables: list[Table] = self.tables.setdefault(key, [])
        return tables

    @property
    def sites(self) -> list[Table]:
        return self._list("sites")

    @property
    def nodes(self) -> list[Table]:
        return self._list("nodes")

    @property
    def receivers(self) -> list[Table]:
        return self._list("notify")

    def for_validation(self) -> dict[str, Any]:
        """The document as a file would hold it: empty optional arrays left out."""
        document = dict(self.tables)
        for key in ("rule_overrides", "notify"):
            if not document.get(key):
                document.pop(key, None)
        return document

    def table(self, selection: Selection) -> Table | None:
        try:
            if selection[0] == "site":
                return self.sites[selection[1]]
            if selection[0] == "node":
                return self.nodes[selection[1]]
            if selection[0] == "receiver":
                return self.receivers[selection[1]]
            if selection[0] == "source" and len(selection) == 3:
                sources: list[Table] = self.nodes[selection[1]].get("sources", [])
                return sources[selection[2]]
        except (IndexError, KeyError):
            return None
        return None

    @staticmethod
    def _unique_name(tables: list[Table], stem: str) -> str:
        taken = {table.get("name") for table in tables}
        return next(f"{stem}-{n}" for n in itertools.count(1) if f"{stem}-{n}" not in taken)

    # -- adding and removing: each returns what to select next ----

    def add_site(self) -> Selection:
        self.sites.append({"name": self._unique_name(self.sites, "site"), "provider": ""})
        return ("site", len(self.sites) - 1)

    def add_node(self) -> Selection:
        site = self.sites[0]["name"] if self.sites else ""
        self.nodes.append({"name": self._unique_name(self.nodes, "node"), "site": site, "sources": []})
        return ("node", len(self.nodes) - 1)

    def add_source(self, node_index: int) -> Selection:
        sources: list[Table] = self.nodes[node_index].setdefault("sources", [])
        sources.append({"kind": str(SourceKind.DCGM), "url": ""})
        return ("source", node_index, len(sources) - 1)

    def add_receiver(self) -> Selection:
        self.receivers.append({"kind": str(ReceiverKind.ALERTMANAGER), "url": ""})
        return ("receiver", len(self.receivers) - 1)

    def remove(self, selection: Selection) -> Selection:
        if selection[0] == "site":
            del self.sites[selection[1]]
        elif selection[0] == "node":
            del self.nodes[selection[1]]
        elif selection[0] == "receiver":
            del self.receivers[selection[1]]
        elif len(selection) == 3:
            del self.nodes[selection[1]]["sources"][selection[2]]
            return ("node", selection[1])
        return ()

    # -- editing ----

    def edit(self, selection: Selection, key: str, value: Any) -> bool:
        """Apply one form edit; True when the table's shape changed (its kind) and its form must reload."""
        table = self.table(selection)
        if table is None:
            return False
        if selection[0] == "site" and key == "name":
            self._rename_site(table.get("name"), value)
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
        if key != "kind":
            return False
        if selection[0] == "source":
            _drop_keys_a_source_does_not_take(table)
        elif selection[0] == "receiver":
            taken = keys_the_kind_takes(table.get("kind"))
            for other in [k for k in table if k != "kind" and k not in taken]:
                del table[other]
        return True

    def _rename_site(self, old: Any, new: Any) -> None:
        """Nodes and overrides follow a renamed site, so a rename does not strand them."""
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            return
        for node in self.nodes:
            if node.get("site") == old:
                node["site"] = new
        for override in self.tables.get("rule_overrides", []):
            if override.get("scope") == f"site:{old}":
                override["scope"] = f"site:{new}"

    def timeout_for(self, node: Mapping[str, Any]) -> float:
        site = next((s for s in self.sites if s.get("name") == node.get("site")), {})
        for value in (node.get("timeout_s"), site.get("timeout_s")):
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return float(value)
        return DEFAULT_TIMEOUT_S


def _drop_keys_a_source_does_not_take(table: Table) -> None:
    kind = table.get("kind")
    keys = SOURCE_KEYS.get(SourceKind(kind), ()) if kind in set(SourceKind) else ()
    for key in [k for k in table if k not in ("kind", "options") and k not in keys]:
        del table[key]
    if "url" in keys:
        table.setdefault("url", "")
