"""Merging nodes imported from a system of record (NetBox) into an inventory file, and writing it safely.

An operator's inventory carries hand-made settings (intervals, extra sources, tags) that the system of record does
not know: a node the inventory already has keeps them and only gains the topology keys it lacks. New nodes are
added, their site too when the inventory has none of that name. The merged document is validated as any inventory
before it is written, and written by rename, so a failed import never leaves a half-written or invalid file.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.config.inventory import InventoryError, dump_document, fleet_from_document, node_to_document
from console.config.netbox import NetBoxImport


@dataclass(frozen=True, slots=True)
class MergeSummary:
    added: int
    kept: int


def _read_document(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(str(path), [f"cannot read the inventory to merge into: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(str(path), [f"not valid TOML, nothing merged: {exc}"]) from None


def merge_import(path: Path | None, imported: NetBoxImport, provider: str) -> tuple[str, MergeSummary]:
    """The inventory text after merging ``imported`` into the file at ``path`` (or into nothing)."""
    document = _read_document(path)
    sites: list[dict[str, Any]] = list(document.get("sites", []))
    nodes: list[dict[str, Any]] = list(document.get("nodes", []))
    if not any(isinstance(s, dict) and s.get("name") == imported.site for s in sites):
        sites.append({"name": imported.site, "provider": provider})
    by_name = {n.get("name"): n for n in nodes if isinstance(n, dict)}
    added = kept = 0
    for node in imported.nodes:
        existing = by_name.get(node.name)
        if existing is None:
            nodes.append(node_to_document(node))
            added += 1
            continue
        kept += 1
        for key, value in node.topology.items():
            existing.setdefault(key, value)
    merged = {**document, "sites": sites, "nodes": nodes}
    origin = str(path) if path is not None else "<imported inventory>"
    fleet_from_document(merged, origin)  # raises InventoryError with every problem: then nothing is written
    return dump_document(merged), MergeSummary(added, kept)


def write_inventory(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (a crash leaves the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
