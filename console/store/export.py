"""Incidents as JSON objects and CSV rows. CSV cells are made safe against formula injection."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, Literal, TextIO

from console.incidents.model import Incident
from console.store.schema import INCIDENT_COLUMNS

ExportFormat = Literal["csv", "json"]
# The same columns as the database, in the same order, so an export reads like the table it came from.
EXPORT_FIELDS: tuple[str, ...] = INCIDENT_COLUMNS
# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def incident_dict(incident: Incident) -> dict[str, Any]:
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
    }


def safe_cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading quote; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def write_csv(incidents: Iterable[Incident], out: TextIO) -> int:
    # RFC 4180 line ends; they also make the writer quote any cell holding a CR or LF.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    written = 0
    for incident in incidents:
        row = incident_dict(incident)
        writer.writerow([safe_cell(row[name]) for name in EXPORT_FIELDS])
        written += 1
    return written


def write_json(incidents: Iterable[Incident], out: TextIO) -> int:
    """A JSON array, written one incident at a time so a large export never sits in memory whole."""
    written = 0
    out.write("[")
    for incident in incidents:
        out.write(",\n" if written else "\n")
        # ASCII escapes: text from nodes may hold control characters a terminal would obey (ESC, CSI).
        out.write(json.dumps(incident_dict(incident)))
        written += 1
    out.write("\n]\n" if written else "]\n")
    return written


def write(incidents: Iterable[Incident], fmt: ExportFormat, out: TextIO) -> int:
    if fmt == "csv":
        return write_csv(incidents, out)
    if fmt == "json":
        return write_json(incidents, out)
    raise ValueError(f"export format must be csv or json, not {fmt!r}")
