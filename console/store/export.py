"""Incidents as JSON objects and CSV rows. CSV cells are made safe against formula injection.

Each incident carries its correlation: ``parent_id`` (null for a root), the effective ``scope`` and
``scope_name``, its member ``nodes`` (a list; a JSON array in a CSV cell) and ``symptoms``, the number of
incidents grouped under it (counted by the store, never stored). A JSON export also carries each incident's
``ledger``: the operator steps taken on it (who, when, the fix applied), so that exported ledgers can be read
back and compared; CSV keeps one row per incident and leaves them out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TextIO

from console.incidents.model import Incident
from console.samples.codec import workload_to_json
from console.store.ledger import LEDGER_COLUMNS, LedgerEntry
from console.store.schema import INCIDENT_COLUMNS, nodes_json, workload_json

ExportFormat = Literal["csv", "json"]
# The same columns as the database, in the same order, so an export reads like the table it came from, then
# the one derived column: how many symptoms an incident has.
EXPORT_FIELDS: tuple[str, ...] = (*INCIDENT_COLUMNS, "symptoms")
# An incident, the number of its symptoms and its ledger entries (None where they were not read).
Counted = tuple[Incident, int, Sequence[LedgerEntry] | None]
# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def incident_dict(incident: Incident, symptoms: int = 0) -> dict[str, Any]:
    """The incident's fields; scope, scope name and nodes are the effective ones (derived when not stored)."""
    ctx = incident.context
    return {
        "id": incident.id,
        "rule": incident.rule,
        "code": incident.code,
        "kind": incident.kind,
        "severity": incident.severity.label,
        "status": str(incident.status),
        "title": incident.title,
        "detail": incident.detail,
        "site": ctx.site,
        "provider": ctx.provider,
        "node": ctx.node,
        "gpu_uuid": ctx.gpu_uuid,
        "gpu_index": ctx.gpu_index,
        "gpu_model": ctx.gpu_model,
        "serial": ctx.serial,
        "driver_version": ctx.driver_version,
        "vbios_version": ctx.vbios_version,
        "pci_bus_id": ctx.pci_bus_id,
        "opened_at": incident.opened_at,
        "last_seen_at": incident.last_seen_at,
        "resolved_at": incident.resolved_at,
        "acknowledged_at": incident.acknowledged_at,
        "count": incident.count,
        "peak": incident.peak,
        "recommended_action": incident.recommended_action,
        "resolution_note": incident.resolution_note,
        "outcome": None if incident.outcome is None else str(incident.outcome),
        "parent_id": incident.parent_id,
        "scope": str(incident.effective_scope),
        "scope_name": incident.effective_scope_name,
        "nodes": list(incident.member_nodes),
        "workload": workload_to_json(incident.workload),
        "symptoms": symptoms,
    }


def ledger_dict(entry: LedgerEntry) -> dict[str, Any]:
    """One operator step, under the ledger table's column names."""
    document = {name: getattr(entry, name) for name in LEDGER_COLUMNS}
    document["kind"] = str(entry.kind)
    return document


def counted(
    incidents: Iterable[Incident],
    symptoms: Mapping[str, int] | None = None,
    ledger: Mapping[str, Sequence[LedgerEntry]] | None = None,
) -> Iterator[Counted]:
    """Pair each incident with its number of symptoms (0 when ``symptoms`` does not name it) and, when
    ``ledger`` is given, its entries there (none when it does not name it)."""
    counts = symptoms or {}
    for incident in incidents:
        entries = None if ledger is None else ledger.get(incident.id, ())
        yield incident, counts.get(incident.id, 0), entries


def safe_cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading quote; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def write_csv(incidents: Iterable[Incident], out: TextIO, symptoms: Mapping[str, int] | None = None) -> int:
    return write_counted_csv(counted(incidents, symptoms), out)


def write_json(
    incidents: Iterable[Incident],
    out: TextIO,
    symptoms: Mapping[str, int] | None = None,
    silenced_by: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """With ``silenced_by`` (incident id -> its silence, for those silenced now), each incident also carries
    ``silenced`` (true or false) and ``silenced_by`` (the silence, or null)."""
    return write_counted_json(counted(incidents, symptoms), out, silenced_by)


def write_counted_csv(rows: Iterable[Counted], out: TextIO) -> int:
    # RFC 4180 line ends; they also make the writer quote any cell holding a CR or LF.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    written = 0
    for incident, symptoms, _ledger in rows:
        row = incident_dict(incident, symptoms)
        row["nodes"] = nodes_json(row["nodes"])  # one cell: the same JSON array text as the database column
        row["workload"] = workload_json(incident.workload)
        writer.writerow([safe_cell(row[name]) for name in EXPORT_FIELDS])
        written += 1
    return written


def write_counted_json(
    rows: Iterable[Counted], out: TextIO, silenced_by: Mapping[str, Mapping[str, Any]] | None = None
) -> int:
    """A JSON array, written one incident at a time so a large export never sits in memory whole."""
    written = 0
    out.write("[")
    for incident, symptoms, entries in rows:
        out.write(",\n" if written else "\n")
        document = incident_dict(incident, symptoms)
        if entries is not None:
            document["ledger"] = [ledger_dict(entry) for entry in entries]
        if silenced_by is not None:
            document["silenced_by"] = silenced_by.get(incident.id)
            document["silenced"] = document["silenced_by"] is not None
        # ASCII escapes: text from nodes may hold control characters a terminal would obey (ESC, CSI).
        out.write(json.dumps(document))
        written += 1
    out.write("\n]\n" if written else "]\n")
    return written


def write(
    incidents: Iterable[Incident], fmt: ExportFormat, out: TextIO, symptoms: Mapping[str, int] | None = None
) -> int:
    """``incidents`` as CSV or JSON; ``symptoms`` gives their symptom counts (0 for those it does not name)."""
    return write_counted(counted(incidents, symptoms), fmt, out)


def write_counted(rows: Iterable[Counted], fmt: ExportFormat, out: TextIO) -> int:
    """``rows``: incidents with their symptom counts (``counted``; the store pairs them a page at a time)."""
    if fmt == "csv":
        return write_counted_csv(rows, out)
    if fmt == "json":
        return write_counted_json(rows, out)
    raise ValueError(f"export format must be csv or json, not {fmt!r}")
