"""Tables, indexes and migrations of the incident database (its ``SCHEMA`` for console.db), and the
Incident <-> row mapping.

Migrations are a list of steps; step N brings ``PRAGMA user_version`` from N-1 to N inside one transaction, so
a crash mid-migration leaves the previous version intact. Append steps, never edit a released one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from console.db import Migration, Schema
from console.incidents.model import Incident, IncidentContext, Outcome, Scope, Severity, Status
from console.samples.codec import workload_from_json, workload_to_json
from console.samples.schema import SchemaError, Workload
from console.store.types import StoreError

if TYPE_CHECKING:
    import sqlite_utils

# Columns in the order the writer binds them; ``seq`` (the rowid, also the FTS rowid) is assigned by SQLite.
INCIDENT_COLUMNS: tuple[str, ...] = (
    "id",
    "rule",
    "code",
    "kind",
    "severity",
    "status",
    "title",
    "detail",
    "site",
    "provider",
    "node",
    "gpu_uuid",
    "gpu_index",
    "gpu_model",
    "serial",
    "driver_version",
    "vbios_version",
    "pci_bus_id",
    "opened_at",
    "last_seen_at",
    "resolved_at",
    "count",
    "peak",
    "recommended_action",
    "acknowledged_at",
    "resolution_note",
    "outcome",
    # Schema 2 (issue 13, correlation): the cause a symptom points at (NULL for a root), the scope (NULL: derived
    # from the context), its name, and the member nodes as a JSON array of names.
    "parent_id",
    "scope",
    "scope_name",
    "nodes",
    # Schema 4 (issue 16): what ran on the GPU, a JSON array of workload entries; NULL: no source could tell.
    "workload",
)
# What the symptom index holds besides (parent_id, opened_at): the columns review filters compare.
SYMPTOM_INDEX_COVERS = ("site", "provider", "node", "kind", "rule", "severity", "status")
SELECT_INCIDENT = ", ".join(f"i.{name}" for name in INCIDENT_COLUMNS)
STATUS_RANK_SQL = "CASE {col} WHEN 'resolved' THEN 3 WHEN 'acknowledged' THEN 2 ELSE 1 END"


def _create_table(db: sqlite_utils.Database, name: str, columns: dict[str, Any], **options: Any) -> None:
    # sqlite-utils writes the DDL; executing it ourselves keeps it inside the migration's transaction
    # (Table.create and create_index commit on their own).
    db.execute(db.create_table_sql(name, columns, **options))


def _create_index(
    db: sqlite_utils.Database, table: str, columns: list[str], name: str, *, unique: bool = False
) -> None:
    quoted = ", ".join(f"[{column}]" for column in columns)
    db.execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX [{name}] ON [{table}] ({quoted})")


# detail='column': no word positions, so no phrase queries (the review needs none) and half the index cost.
_FTS_STATEMENTS = (
    """CREATE VIRTUAL TABLE incidents_fts USING fts5(
        title, detail, resolution_note, content='incidents', content_rowid='seq', detail='column')""",
    """CREATE TRIGGER incidents_fts_insert AFTER INSERT ON incidents BEGIN
        INSERT INTO incidents_fts(rowid, title, detail, resolution_note)
        VALUES (new.seq, new.title, new.detail, new.resolution_note);
    END""",
    """CREATE TRIGGER incidents_fts_delete AFTER DELETE ON incidents BEGIN
        INSERT INTO incidents_fts(incidents_fts, rowid, title, detail, resolution_note)
        VALUES ('delete', old.seq, old.title, old.detail, old.resolution_note);
    END""",
    # Updates bump count/last_seen every few seconds; re-index the text only when the text changed.
    """CREATE TRIGGER incidents_fts_update AFTER UPDATE ON incidents
    WHEN old.title IS NOT new.title OR old.detail IS NOT new.detail
         OR old.resolution_note IS NOT new.resolution_note
    BEGIN
        INSERT INTO incidents_fts(incidents_fts, rowid, title, detail, resolution_note)
        VALUES ('delete', old.seq, old.title, old.detail, old.resolution_note);
        INSERT INTO incidents_fts(rowid, title, detail, resolution_note)
        VALUES (new.seq, new.title, new.detail, new.resolution_note);
    END""",
)


def _v1_initial(db: sqlite_utils.Database) -> None:
    _create_table(
        db,
        "incidents",
        {
            "seq": int,
            "id": str,
            "rule": str,
            "code": str,
            "kind": str,
            "severity": int,
            "status": str,
            "title": str,
            "detail": str,
            "site": str,
            "provider": str,
            "node": str,
            "gpu_uuid": str,
            "gpu_index": int,
            "gpu_model": str,
            "serial": str,
            "driver_version": str,
            "vbios_version": str,
            "pci_bus_id": str,
            "opened_at": float,
            "last_seen_at": float,
            "resolved_at": float,
            "count": int,
            "peak": float,
            "recommended_action": str,
            "acknowledged_at": float,
            "resolution_note": str,
            "outcome": str,
        },
        pk="seq",
        not_null={
            "id",
            "rule",
            "code",
            "kind",
            "severity",
            "status",
            "title",
            "detail",
            "site",
            "provider",
            "node",
        }
        | {"opened_at", "last_seen_at", "count", "recommended_action", "resolution_note"},
        defaults={"count": 1, "recommended_action": "", "resolution_note": "", "detail": "", "code": ""},
    )
    _create_index(db, "incidents", ["id"], "incidents_id", unique=True)
    # Every review query is "newest first" on opened_at, optionally narrowed by one selective column. Each
    # index ends in opened_at (and, implicitly, seq) so keyset paging walks it without a sort.
    _create_index(db, "incidents", ["opened_at"], "incidents_opened")
    for column in ("site", "provider", "node", "gpu_uuid", "kind"):
        _create_index(db, "incidents", [column, "opened_at"], f"incidents_{column}_opened")
    _create_index(db, "incidents", ["rule", "code", "opened_at"], "incidents_rule_code_opened")
    # The open-incidents panel: a small index over unresolved rows only (performance-notes: 12 ms -> 0.08 ms).
    # It also covers status, severity, site and provider, so "open, major+, at site X" is counted from the
    # index alone (1M-row log: 3 ms instead of 550 ms through the site index).
    db.execute(
        "CREATE INDEX incidents_unresolved_opened "
        "ON incidents(opened_at, status, severity, site, provider) WHERE status <> 'resolved'"
    )
    # One statement per execute: executescript would COMMIT the migration's transaction half-way.
    for statement in _FTS_STATEMENTS:
        db.execute(statement)
    _create_table(
        db,
        "timeline",
        {
            "incident_id": str,
            "time": float,
            "kind": str,
            "note": str,
            "severity": int,
            "status": str,
            "count": int,
        },
        not_null={"incident_id", "time", "kind", "note", "severity", "status", "count"},
    )
    # Unique so that a merge (INSERT OR IGNORE) never duplicates a step.
    _create_index(db, "timeline", ["incident_id", "time", "kind"], "timeline_key", unique=True)
    _create_table(
        db,
        "evidence",
        {"incident_id": str, "time": float, "sample_json": str},
        not_null={"incident_id", "time", "sample_json"},
    )
    _create_index(db, "evidence", ["incident_id", "time"], "evidence_key", unique=True)
    _create_table(
        db,
        "exposure",
        {"site": str, "provider": str, "gpu_model": str, "hour": int, "gpu_seconds": float},
        pk=("site", "provider", "gpu_model", "hour"),
        not_null={"site", "provider", "gpu_model", "hour", "gpu_seconds"},
    )
    _create_index(db, "exposure", ["hour"], "exposure_hour")


def _v2_correlation(db: sqlite_utils.Database) -> None:
    """Issue 13: symptoms point at their cause; a root says what it spans. ADD COLUMN with a constant default
    rewrites no row, so a million-incident log migrates in about the time one index build takes."""
    db.execute("ALTER TABLE incidents ADD COLUMN parent_id TEXT")
    db.execute("ALTER TABLE incidents ADD COLUMN scope TEXT")
    db.execute("ALTER TABLE incidents ADD COLUMN scope_name TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE incidents ADD COLUMN nodes TEXT NOT NULL DEFAULT '[]'")
    # Symptoms only (roots, the bulk of a log, are not in it): a root's children newest first, symptom counts
    # for a page of roots, and the roots-only count (the rows matching a filter less the symptoms matching it:
    # the columns after opened_at let the symptom side be counted from this small index alone).
    db.execute(
        "CREATE INDEX incidents_parent_opened ON incidents(parent_id, opened_at, "
        f"{', '.join(SYMPTOM_INDEX_COVERS)}) WHERE parent_id IS NOT NULL"
    )
    # The unresolved index now also covers parent_id, so the open-incidents panel's roots-only counts
    # ("open, major+, at site X, faults only") still come from the index alone.
    db.execute("DROP INDEX incidents_unresolved_opened")
    db.execute(
        "CREATE INDEX incidents_unresolved_opened "
        "ON incidents(opened_at, status, severity, site, provider, parent_id) WHERE status <> 'resolved'"
    )


def _v3_ledger(db: sqlite_utils.Database) -> None:
    """Issue 14: the fix ledger (console/store/ledger.py). New tables, indexes and triggers: no existing row is
    rewritten."""
    _create_table(
        db,
        "ledger",
        {
            "id": str,
            "incident_id": str,
            "kind": str,
            "time": float,
            "who": str,
            "action": str,
            "outcome": str,
            "note": str,
            "provider": str,
            "site": str,
            "node": str,
            "gpu_uuid": str,
            "gpu_model": str,
            "driver": str,
            "rule": str,
            "code": str,
            "scope": str,
            "next_id": str,
            "next_at": float,
        },
        not_null={"id", "incident_id", "kind", "time", "who", "action", "outcome", "note", "rule", "code"},
        defaults={"action": "", "outcome": "", "note": "", "code": "", "provider": "", "site": "", "node": ""},
    )
    _create_index(db, "ledger", ["id"], "ledger_id", unique=True)
    _create_index(db, "ledger", ["incident_id", "time"], "ledger_incident")
    _create_index(db, "ledger", ["gpu_uuid", "rule", "code", "time"], "ledger_gpu")
    _create_index(db, "ledger", ["node", "rule", "code", "time"], "ledger_node")
    # fixes stats reads this index alone, in its group order: no sort, no table row.
    _create_index(
        db,
        "ledger",
        ["kind", "provider", "gpu_model", "driver", "rule", "code", "action", "time", "outcome", "next_at"],
        "ledger_stats",
    )
    # The first incident of the same rule and code on the same GPU (node, for an incident without a GPU) opened
    # after a fix: what verification asks of every fix. One seek each in these partial indexes (their conditions
    # are the triggers' below), every incident in exactly one of them.
    db.execute(
        "CREATE INDEX incidents_gpu_recurrence ON incidents(gpu_uuid, rule, code, opened_at) WHERE gpu_uuid IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX incidents_node_recurrence ON incidents(node, rule, code, opened_at) WHERE gpu_uuid IS NULL"
    )
    for statement in _LEDGER_TRIGGERS:
        db.execute(statement)


# ``next_id``/``next_at`` of a fix: the first incident of its rule and code on its GPU (node) opened after it. The
# database keeps them, like an index, whichever code writes (the writer, merge, the CLI): set when the fix is
# recorded, moved earlier when such an incident is inserted later. Whether the fix held is still decided at read
# time, against the verify window the reader asks for (console/store/ledger.py); a stats query then reads the
# ledger alone instead of seeking the incidents once per fix (bench_fixes.py: 776 ms at 100,000 fixes).
_NEXT_GPU = "i.gpu_uuid = new.gpu_uuid AND i.rule = new.rule AND i.code = new.code AND i.opened_at > new.time"
_NEXT_NODE = (
    "i.gpu_uuid IS NULL AND i.node = new.node AND i.rule = new.rule AND i.code = new.code AND i.opened_at > new.time"
)
_LEDGER_TRIGGERS = (
    f"""CREATE TRIGGER ledger_next_gpu AFTER INSERT ON ledger
        WHEN new.kind = 'resolve' AND new.gpu_uuid IS NOT NULL BEGIN
        UPDATE ledger SET (next_id, next_at) = (SELECT i.id, i.opened_at FROM incidents i WHERE {_NEXT_GPU}
            ORDER BY i.opened_at, i.id LIMIT 1) WHERE rowid = new.rowid;
    END""",
    f"""CREATE TRIGGER ledger_next_node AFTER INSERT ON ledger
        WHEN new.kind = 'resolve' AND new.gpu_uuid IS NULL BEGIN
        UPDATE ledger SET (next_id, next_at) = (SELECT i.id, i.opened_at FROM incidents i WHERE {_NEXT_NODE}
            ORDER BY i.opened_at, i.id LIMIT 1) WHERE rowid = new.rowid;
    END""",
    """CREATE TRIGGER incidents_next_gpu AFTER INSERT ON incidents WHEN new.gpu_uuid IS NOT NULL BEGIN
        UPDATE ledger SET next_id = new.id, next_at = new.opened_at
        WHERE gpu_uuid = new.gpu_uuid AND rule = new.rule AND code = new.code AND time < new.opened_at
            AND kind = 'resolve' AND (next_at IS NULL OR next_at > new.opened_at);
    END""",
    """CREATE TRIGGER incidents_next_node AFTER INSERT ON incidents WHEN new.gpu_uuid IS NULL BEGIN
        UPDATE ledger SET next_id = new.id, next_at = new.opened_at
        WHERE gpu_uuid IS NULL AND node = new.node AND rule = new.rule AND code = new.code AND time < new.opened_at
            AND kind = 'resolve' AND (next_at IS NULL OR next_at > new.opened_at);
    END""",
)


def _v4_workload(db: sqlite_utils.Database) -> None:
    """Issue 16: the workload an incident hit. A nullable ADD COLUMN rewrites no row."""
    db.execute("ALTER TABLE incidents ADD COLUMN workload TEXT")


MIGRATIONS: Sequence[Callable[[sqlite_utils.Database], None]] = (
    _v1_initial,
    _v2_correlation,
    _v3_ledger,
    _v4_workload,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _through_sqlite_utils(step: Callable[[sqlite_utils.Database], None]) -> Migration:
    def run(conn: sqlite3.Connection) -> None:
        import sqlite_utils  # only when migrating: it pulls in numpy, ~150 ms of every CLI call otherwise

        step(sqlite_utils.Database(conn, recursive_triggers=False))

    return run


SCHEMA = Schema(
    what="incident database",
    error=StoreError,
    migrations=tuple(_through_sqlite_utils(step) for step in MIGRATIONS),
    newer_hint="choose another file with --db",
    log=logging.getLogger("console.store"),
)


def incident_row(incident: Incident) -> tuple[Any, ...]:
    ctx = incident.context
    return (
        incident.id,
        incident.rule,
        incident.code,
        incident.kind,
        int(incident.severity),
        str(incident.status),
        incident.title,
        incident.detail,
        ctx.site,
        ctx.provider,
        ctx.node,
        ctx.gpu_uuid,
        ctx.gpu_index,
        ctx.gpu_model,
        ctx.serial,
        ctx.driver_version,
        ctx.vbios_version,
        ctx.pci_bus_id,
        incident.opened_at,
        incident.last_seen_at,
        incident.resolved_at,
        incident.count,
        incident.peak,
        incident.recommended_action,
        incident.acknowledged_at,
        incident.resolution_note,
        None if incident.outcome is None else str(incident.outcome),
        incident.parent_id,
        None if incident.scope is None else str(incident.scope),
        incident.scope_name,
        nodes_json(incident.nodes),
        workload_json(incident.workload),
    )


def workload_json(workload: tuple[Workload, ...] | None) -> str | None:
    return None if workload is None else json.dumps(workload_to_json(workload), separators=(",", ":"))


def workload_from_text(text: str | None) -> tuple[Workload, ...] | None:
    """The workload column; text that is not a valid workload list reads as "cannot tell"."""
    if text is None:
        return None
    try:
        return workload_from_json(json.loads(text), "workload")
    except (ValueError, SchemaError):
        return None


def nodes_json(nodes: Sequence[str]) -> str:
    return "[]" if not nodes else json.dumps(list(nodes))


def nodes_from_json(text: str | None) -> tuple[str, ...]:
    """The member nodes column; anything that is not a JSON array of names reads as none (derived)."""
    if not text or text == "[]":
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value)


def scope_from_text(text: str | None) -> Scope | None:
    """The scope column; NULL (or a value this console does not know) means derived from the context."""
    if text is None:
        return None
    try:
        return Scope(text)
    except ValueError:
        return None


def incident_from_row(row: Sequence[Any]) -> Incident:
    """``row`` holds INCIDENT_COLUMNS in order (SELECT_INCIDENT)."""
    (
        incident_id,
        rule,
        code,
        kind,
        severity,
        status,
        title,
        detail,
        site,
        provider,
        node,
        gpu_uuid,
        gpu_index,
        gpu_model,
        serial,
        driver_version,
        vbios_version,
        pci_bus_id,
        opened_at,
        last_seen_at,
        resolved_at,
        count,
        peak,
        recommended_action,
        acknowledged_at,
        resolution_note,
        outcome,
        parent_id,
        scope,
        scope_name,
        nodes,
        workload,
    ) = row
    return Incident(
        id=incident_id,
        rule=rule,
        code=code,
        kind=kind,
        severity=Severity(severity),
        status=Status(status),
        title=title,
        detail=detail,
        context=IncidentContext(
            site=site,
            provider=provider,
            node=node,
            gpu_uuid=gpu_uuid,
            gpu_index=gpu_index,
            gpu_model=gpu_model,
            serial=serial,
            driver_version=driver_version,
            vbios_version=vbios_version,
            pci_bus_id=pci_bus_id,
        ),
        opened_at=opened_at,
        last_seen_at=last_seen_at,
        resolved_at=resolved_at,
        count=count,
        peak=peak,
        recommended_action=recommended_action,
        acknowledged_at=acknowledged_at,
        resolution_note=resolution_note,
        outcome=None if outcome is None else Outcome(outcome),
        parent_id=parent_id,
        scope=scope_from_text(scope),
        scope_name=scope_name or "",
        nodes=nodes_from_json(nodes),
        workload=workload_from_text(workload),
    )
