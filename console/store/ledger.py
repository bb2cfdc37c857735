"""The fix ledger: every operator step (acknowledge, resolve with the fix applied) with the incident's frozen
context, and what happened next.

Whether a fix held is derived here at read time, never stored: a resolution with outcome ``fixed`` or
``workaround`` *did not hold* when a new incident of the same rule and code opened on the same GPU (the same node,
for a node-level incident) within the verify window after it, *held* when the window has passed without one, and
is *pending* before that. A ``not_fixed`` resolution is the operator's own verdict: it did not hold. Acknowledgements
are recorded but verify nothing.

Entry ids hash incident, kind, time and operator, so the same step merged from two files is one entry.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from console.incidents.model import ChangeKind, IncidentChange, Outcome
from console.store.validate import ledger_problem

LEDGER_COLUMNS: tuple[str, ...] = (
    "id",
    "incident_id",
    "kind",
    "time",
    "who",
    "action",
    "outcome",
    "note",
    "provider",
    "site",
    "node",
    "gpu_uuid",
    "gpu_model",
    "driver",
    "rule",
    "code",
    "scope",
)
_COLUMNS = ", ".join(LEDGER_COLUMNS)
INSERT_LEDGER = f"INSERT OR IGNORE INTO ledger ({_COLUMNS}) VALUES ({', '.join('?' for _ in LEDGER_COLUMNS)})"
_STEPS = {ChangeKind.ACKNOWLEDGED: "acknowledge", ChangeKind.RESOLVED: "resolve"}


class EntryKind(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class Verdict(StrEnum):
    HELD = "held"
    DID_NOT_HOLD = "did_not_hold"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    incident_id: str
    kind: EntryKind
    time: float
    who: str
    action: str
    outcome: str
    note: str
    provider: str
    site: str
    node: str
    gpu_uuid: str | None
    gpu_model: str | None
    driver: str | None
    rule: str
    code: str
    scope: str


@dataclass(frozen=True, slots=True)
class VerifiedFix:
    """A resolution and what followed it: ``recurrence`` is the incident that showed it did not hold."""

    entry: LedgerEntry
    verdict: Verdict
    recurrence: str | None


def operator_name() -> str:
    """Who takes an operator step: the login name (the ledger's "who"); never empty."""
    import getpass

    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError):  # no login name in a container without a passwd entry
        return "unknown"


def entry_id(incident_id: str, kind: str, time: float, who: str) -> str:
    return hashlib.sha256(f"{incident_id}\x1f{kind}\x1f{time:.3f}\x1f{who}".encode()).hexdigest()[:20]


def ledger_row(change: IncidentChange) -> tuple[Any, ...] | None:
    """The ledger row of an operator's step; None for the engine's own changes (an auto-clear is no fix)."""
    kind = _STEPS.get(change.kind)
    if kind is None or not change.operator:
        return None
    incident = change.incident
    ctx = incident.context
    outcome = "" if incident.outcome is None or kind != "resolve" else str(incident.outcome)
    return (
        entry_id(incident.id, kind, change.time, change.operator),
        incident.id,
        kind,
        change.time,
        change.operator,
        change.action if kind == "resolve" else "",
        outcome,
        change.note,
        ctx.provider,
        ctx.site,
        ctx.node,
        ctx.gpu_uuid,
        ctx.gpu_model,
        ctx.driver_version,
        incident.rule,
        incident.code,
        str(incident.effective_scope),
    )


def readable(row: Sequence[Any]) -> bool:
    """Whether a stored ledger row (LEDGER_COLUMNS first) reads as an entry; readers skip one that does not."""
    return ledger_problem(row[: len(LEDGER_COLUMNS)]) is None


def entry_from_row(row: Sequence[Any]) -> LedgerEntry:
    values = list(row[: len(LEDGER_COLUMNS)])
    values[2] = EntryKind(values[2])
    return LedgerEntry(*values)


# --- reads (a read connection of the incident database) ---------------------------------------------------------

_SELECT = ", ".join(f"l.{name}" for name in LEDGER_COLUMNS)
# A fix did not hold when the first incident of its rule and code on its GPU (node) after it (``next_at``, kept
# by the schema's triggers) opened inside the window; the operator's own "not fixed" is a verdict too.
_RECURRENCE = "CASE WHEN l.next_at <= l.time + :window THEN l.next_id END"
_VERDICT = f"""CASE
    WHEN l.outcome = '{Outcome.NOT_FIXED}' THEN '{Verdict.DID_NOT_HOLD}'
    WHEN l.next_at <= l.time + :window THEN '{Verdict.DID_NOT_HOLD}'
    WHEN l.time + :window <= :now THEN '{Verdict.HELD}'
    ELSE '{Verdict.PENDING}' END"""
_IDS_PER_QUERY = 500  # bound parameters per IN (...), well under SQLite's limit


def has_ledger(conn: sqlite3.Connection, schema: str = "main") -> bool:
    query = f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = 'ledger'"
    return conn.execute(query).fetchone() is not None


def entries_for(
    conn: sqlite3.Connection, *, incident_id: str | None = None, gpu_uuid: str | None = None
) -> list[LedgerEntry]:
    """Every entry of one incident, or of one GPU, oldest first."""
    if incident_id is not None:
        rows = conn.execute(f"SELECT {_SELECT} FROM ledger l WHERE l.incident_id = ? ORDER BY l.time", (incident_id,))
    else:
        rows = conn.execute(f"SELECT {_SELECT} FROM ledger l WHERE l.gpu_uuid = ? ORDER BY l.time", (gpu_uuid,))
    return [entry_from_row(row) for row in rows if readable(row)]


def entries_of(conn: sqlite3.Connection, incident_ids: Sequence[str]) -> dict[str, list[LedgerEntry]]:
    """The entries of each of ``incident_ids`` (a page of an export), oldest first; ids with none are absent."""
    found: dict[str, list[LedgerEntry]] = {}
    for start in range(0, len(incident_ids), _IDS_PER_QUERY):
        chunk = incident_ids[start : start + _IDS_PER_QUERY]
        marks = ", ".join("?" for _ in chunk)
        query = f"SELECT {_SELECT} FROM ledger l WHERE l.incident_id IN ({marks}) ORDER BY l.time, l.id"
        for row in conn.execute(query, tuple(chunk)):
            if not readable(row):
                continue
            entry = entry_from_row(row)
            found.setdefault(entry.incident_id, []).append(entry)
    return found


def since(conn: sqlite3.Connection, after: int, limit: int = 500) -> list[tuple[int, LedgerEntry]]:
    """Entries written after rowid ``after`` (by any process), oldest first, with their rowids."""
    rows = conn.execute(
        f"SELECT l.rowid, {_SELECT} FROM ledger l WHERE l.rowid > ? ORDER BY l.rowid LIMIT ?", (after, limit)
    )
    return [(row[0], entry_from_row(row[1:])) for row in rows if readable(row[1:])]


def last_rowid(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(rowid), 0) FROM ledger").fetchone()[0])


def verified(
    conn: sqlite3.Connection,
    window_s: float,
    now: float,
    *,
    rule: str | None = None,
    code: str | None = None,
    gpu_uuid: str | None = None,
    node: str | None = None,
) -> list[VerifiedFix]:
    """Resolutions with their verdicts, oldest first: all, or those of one rule and code, of one GPU, or of one
    node's incidents without a GPU (``node``)."""
    where: list[str] = []
    params: dict[str, object] = {"window": window_s, "now": now}
    if rule is not None:
        where.append("l.rule = :rule AND l.code = :code")
        params.update(rule=rule, code=code or "")
    if gpu_uuid is not None:
        where.append("l.gpu_uuid = :gpu")
        params["gpu"] = gpu_uuid
    elif node is not None:
        where.append("l.node = :node AND l.gpu_uuid IS NULL")
        params["node"] = node
    query = (
        f"SELECT {_SELECT}, {_RECURRENCE}, {_VERDICT} FROM ledger l WHERE l.kind = '{EntryKind.RESOLVE}'"
        + "".join(f" AND {clause}" for clause in where)
        + " ORDER BY l.time, l.id"
    )
    return [
        VerifiedFix(entry_from_row(row), Verdict(row[-1]), row[len(LEDGER_COLUMNS)])
        for row in conn.execute(query, params)
        if readable(row)
    ]


@dataclass(frozen=True, slots=True)
class FixStatsRow:
    provider: str
    gpu_model: str
    driver: str
    rule: str
    code: str
    action: str
    attempts: int
    held: int
    did_not_hold: int
    pending: int

    @property
    def success_rate(self) -> float | None:
        """Held over decided (held or not); None while nothing is decided."""
        decided = self.held + self.did_not_hold
        return self.held / decided if decided else None


_SHOWN = "l.provider, coalesce(l.gpu_model, ''), coalesce(l.driver, ''), l.rule, l.code, l.action"
_GROUP = "l.provider, l.gpu_model, l.driver, l.rule, l.code, l.action"  # the index's order: no sort


def stats(
    conn: sqlite3.Connection, window_s: float, now: float, rule: str | None = None, code: str | None = None
) -> list[FixStatsRow]:
    """One row per (provider, GPU model, driver, rule, code, action), most attempts first; all rules and codes,
    or one rule and code. Read from the ``ledger_stats`` index alone."""
    narrow = " AND l.rule = :rule AND l.code = :code" if rule is not None else ""
    not_fixed = f"l.outcome = '{Outcome.NOT_FIXED}'"
    came_back = "coalesce(l.next_at <= l.time + :window, 0)"
    query = f"""SELECT * FROM (SELECT {_SHOWN}, count(*),
        sum(NOT {not_fixed} AND NOT {came_back} AND l.time + :window <= :now),
        sum({not_fixed} OR {came_back}),
        sum(NOT {not_fixed} AND NOT {came_back} AND l.time + :window > :now)
        FROM ledger l WHERE l.kind = '{EntryKind.RESOLVE}'{narrow} GROUP BY {_GROUP})
        ORDER BY 7 DESC, 1, 2, 3, 4, 5, 6"""
    params = {"window": window_s, "now": now, "rule": rule, "code": code or ""}
    return [FixStatsRow(*row) for row in conn.execute(query, params)]
