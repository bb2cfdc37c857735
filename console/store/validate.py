"""What a stored row may hold: one check per table, used where rows enter (merge, the writer) and where they are
read back (a row that fails reads as damaged, with its id, instead of crashing the reader).

A row comes from another operator's file, from an older or newer console, or from someone's hand edit: nothing in
it is trusted. Each check returns None for a good row, else the first problem in words ("severity 'critical!!' is
not 1-4"). Text columns are bounded (``MAX_TEXT``), ids more tightly (``MAX_ID``); times are finite seconds since
the epoch within ``MAX_TIME`` either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from console.incidents.model import ChangeKind, Outcome, Scope, Severity, Status
from console.samples.codec import workload_from_json
from console.samples.schema import SchemaError

MAX_ID = 200  # characters in an incident, parent or ledger id
MAX_TEXT = 65_536  # characters in any other text column (titles, details, notes, evidence samples)
MAX_TIME = 1e11  # seconds since the epoch (year 5138): anything later is not a time
MAX_COUNT = 2**53  # occurrences of one incident
DAMAGED_HINT = "run gpu-console incidents repair to remove it"

_SEVERITIES = frozenset(int(severity) for severity in Severity)
_STATUSES = frozenset(str(status) for status in Status)
_OUTCOMES = frozenset(str(outcome) for outcome in Outcome)
_SCOPES = frozenset(str(scope) for scope in Scope)
_CHANGE_KINDS = frozenset(str(kind) for kind in ChangeKind)
_ENTRY_KINDS = frozenset({"acknowledge", "resolve"})

# INCIDENT_COLUMNS (console.store.schema) in order, with what each may hold.
_INCIDENT_CHECKS: tuple[tuple[str, str], ...] = (
    ("id", "id"),
    ("rule", "text"),
    ("code", "text"),
    ("kind", "text"),
    ("severity", "severity"),
    ("status", "status"),
    ("title", "text"),
    ("detail", "text"),
    ("site", "text"),
    ("provider", "text"),
    ("node", "text"),
    ("gpu_uuid", "text?"),
    ("gpu_index", "index?"),
    ("gpu_model", "text?"),
    ("serial", "text?"),
    ("driver_version", "text?"),
    ("vbios_version", "text?"),
    ("pci_bus_id", "text?"),
    ("opened_at", "time"),
    ("last_seen_at", "time"),
    ("resolved_at", "time?"),
    ("count", "count"),
    ("peak", "number?"),
    ("recommended_action", "text"),
    ("acknowledged_at", "time?"),
    ("resolution_note", "text"),
    ("outcome", "outcome?"),
    ("parent_id", "id?"),
    ("scope", "scope?"),
    ("scope_name", "text"),
    ("nodes", "text"),
    ("workload", "workload?"),
)
_TIMELINE_CHECKS = (
    ("incident_id", "id"),
    ("time", "time"),
    ("kind", "change_kind"),
    ("note", "text"),
    ("severity", "severity"),
    ("status", "status"),
    ("count", "count"),
)
_EVIDENCE_CHECKS = (("incident_id", "id"), ("time", "time"), ("sample_json", "text"))
_EXPOSURE_CHECKS = (
    ("site", "text"),
    ("provider", "text"),
    ("gpu_model", "text"),
    ("hour", "hour"),
    ("gpu_seconds", "seconds"),
)
# LEDGER_COLUMNS (console.store.ledger) in order.
_LEDGER_CHECKS = (
    ("id", "id"),
    ("incident_id", "id"),
    ("kind", "entry_kind"),
    ("time", "time"),
    ("who", "text"),
    ("action", "text"),
    ("outcome", "ledger_outcome"),
    ("note", "text"),
    ("provider", "text"),
    ("site", "text"),
    ("node", "text"),
    ("gpu_uuid", "text?"),
    ("gpu_model", "text?"),
    ("driver", "text?"),
    ("rule", "text"),
    ("code", "text"),
    ("scope", "text"),
)


def _number(value: Any) -> bool:
    # bool is an int to Python but never a stored number; SQLite hands back int or float only.
    return type(value) in (int, float) and math.isfinite(value)


def _text(value: Any, limit: int) -> str | None:
    if type(value) is not str:
        return f"{_shown(value)} is not text"
    if len(value) > limit:
        return f"has {len(value):,} characters (at most {limit:,})"
    return None


def _problem(kind: str, value: Any) -> str | None:
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "id":
        problem = _text(value, MAX_ID)
        return problem if problem is not None or value else "is empty"
    if kind == "text":
        return _text(value, MAX_TEXT)
    if kind == "severity":
        return None if type(value) is int and value in _SEVERITIES else f"{_shown(value)} is not 1-4"
    if kind in ("status", "outcome", "scope", "change_kind", "entry_kind", "ledger_outcome"):
        allowed = {
            "status": _STATUSES,
            "outcome": _OUTCOMES,
            "scope": _SCOPES,
            "change_kind": _CHANGE_KINDS,
            "entry_kind": _ENTRY_KINDS,
            "ledger_outcome": _OUTCOMES | {""},
        }[kind]
        return None if type(value) is str and value in allowed else f"{_shown(value)} is not one of {sorted(allowed)}"
    if kind == "time":
        return None if _number(value) and abs(value) <= MAX_TIME else f"{_shown(value)} is not a time"
    if kind == "count":
        return None if type(value) is int and 0 <= value <= MAX_COUNT else f"{_shown(value)} is not a count"
    if kind == "index":
        return None if type(value) is int and 0 <= value < 1024 else f"{_shown(value)} is not a GPU index"
    if kind == "hour":
        return None if type(value) is int and 0 <= value <= MAX_TIME / 3600 else f"{_shown(value)} is not an hour"
    if kind == "seconds":
        return None if _number(value) and value >= 0 else f"{_shown(value)} is not a number of seconds"
    if kind == "number":
        return None if _number(value) else f"{_shown(value)} is not a finite number"
    if kind == "workload":
        return _workload_problem(value)
    raise AssertionError(f"unknown check {kind}")


def _workload_problem(value: Any) -> str | None:
    """The stored form of a workload: a JSON array of entries the codec reads back."""
    problem = _text(value, MAX_TEXT)
    if problem is not None:
        return problem
    try:
        workload_from_json(json.loads(value), "workload")
    except (ValueError, SchemaError) as exc:
        return f"is not a workload list ({exc})"
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(checks: Sequence[tuple[str, str]], row: Sequence[Any]) -> str | None:
    if len(row) != len(checks):
        return f"has {len(row)} columns, not {len(checks)}"
    for (name, kind), value in zip(checks, row, strict=True):
        problem = _problem(kind, value)
        if problem is not None:
            return f"{name} {problem}"
    return None


def incident_problem(row: Sequence[Any]) -> str | None:
    """``row`` holds INCIDENT_COLUMNS in order."""
    return _check(_INCIDENT_CHECKS, row)


def timeline_problem(row: Sequence[Any]) -> str | None:
    """``row``: incident_id, time, kind, note, severity, status, count."""
    return _check(_TIMELINE_CHECKS, row)


def evidence_problem(row: Sequence[Any]) -> str | None:
    """``row``: incident_id, time, sample_json."""
    return _check(_EVIDENCE_CHECKS, row)


def exposure_problem(row: Sequence[Any]) -> str | None:
    """``row``: site, provider, gpu_model, hour, gpu_seconds."""
    return _check(_EXPOSURE_CHECKS, row)


def ledger_problem(row: Sequence[Any]) -> str | None:
    """``row`` holds LEDGER_COLUMNS in order."""
    return _check(_LEDGER_CHECKS, row)


def damaged_message(incident_id: object, problem: str) -> str:
    return f"damaged incident row [{_shown(incident_id)}]: {problem}; {DAMAGED_HINT}"
