"""Merging another operator's database: stable ids, the more advanced state wins, nothing duplicated.

Ids are what two consoles agree on (see console.incidents.lifecycle), except for a fault whose first sightings
fell either side of an id window: the other file's incident is then the same fault as one here under another
id (same node, GPU, rule and code, overlapping open intervals, as ``lifecycle.same_fault``). It is not added;
its timeline and evidence join the incident already here, and symptoms that pointed at it point at that one.

Runs on the writer thread (it is a write), attaching the other file read-only. A file of an older schema version
is merged as it is (read-only, never migrated): the columns it lacks take their defaults (schema 1: no parent,
derived scope, no member nodes).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from console.db import file_uri, peek
from console.incidents.lifecycle import ID_WINDOW_S
from console.store.ledger import LEDGER_COLUMNS, has_ledger
from console.store.schema import INCIDENT_COLUMNS, SCHEMA_VERSION, STATUS_RANK_SQL
from console.store.types import MergeResult, StoreError
from console.store.validate import (
    evidence_problem,
    exposure_problem,
    incident_problem,
    ledger_problem,
    timeline_problem,
)

_COLUMNS = ", ".join(INCIDENT_COLUMNS)
_NEW_RANK = STATUS_RANK_SQL.format(col="excluded.status")
_OLD_RANK = STATUS_RANK_SQL.format(col="status")
OLDEST_MERGEABLE = 1
# What a column added by a later schema step reads as in a file from before it (its default there).
_ADDED_LATER = {"parent_id": "NULL", "scope": "NULL", "scope_name": "''", "nodes": "'[]'", "workload": "NULL"}
# Same id: take the other copy only if it is further along (open < acknowledged < resolved), or as far
# along and seen later. The other copy is taken whole (its parent link and scope too), so a row never mixes
# two operators' states.
_MERGE_INCIDENTS = (
    f"INSERT INTO main.incidents ({_COLUMNS}) SELECT {{select}} FROM other.incidents o "
    # The WHERE also keeps SQLite from reading ON CONFLICT as part of the SELECT (an upsert needs one).
    "WHERE o.id NOT IN (SELECT other_id FROM temp.merge_alias) "
    "AND o.rowid NOT IN (SELECT other_rowid FROM temp.merge_refused) "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in INCIDENT_COLUMNS if name != "id")
    + f" WHERE {_NEW_RANK} > {_OLD_RANK}"
    + f" OR ({_NEW_RANK} = {_OLD_RANK} AND excluded.last_seen_at > last_seen_at)"
)
# Each incident of the other file that only this file's ids lack, paired with this file's incident of the same
# fault (the earliest, when several overlap); the node index narrows the search.
_FIND_ALIASES = f"""
CREATE TEMP TABLE merge_alias AS
SELECT other_id, main_id FROM (
    SELECT o.id AS other_id, (
        SELECT m.id FROM main.incidents m
        WHERE m.node = o.node AND m.gpu_uuid IS o.gpu_uuid AND m.rule = o.rule AND m.code = o.code
          AND m.opened_at > o.opened_at - {ID_WINDOW_S} AND m.opened_at < o.opened_at + {ID_WINDOW_S}
          AND m.opened_at <= coalesce(o.resolved_at, 9e999) AND o.opened_at <= coalesce(m.resolved_at, 9e999)
        ORDER BY m.opened_at LIMIT 1
    ) AS main_id
    FROM other.incidents o
    WHERE NOT EXISTS (SELECT 1 FROM main.incidents x WHERE x.id = o.id)
      AND o.rowid NOT IN (SELECT other_rowid FROM temp.merge_refused)
) WHERE main_id IS NOT NULL
"""
_TIMELINE_COLUMNS = "incident_id, time, kind, note, severity, status, count"
# A row is refused (counted, with its reason, never stored) when its check finds a problem; the history of a
# refused incident is refused with it. ``refused_ids`` holds no NULL: NOT IN over a NULL would match nothing.
_REFUSED_IDS = "(SELECT other_id FROM temp.merge_refused WHERE other_id IS NOT NULL)"
_SHOWN_REFUSALS = 20  # reasons listed in a merge's result; every refusal is counted
_TIMELINE_REST = "time, kind, note, severity, status, count"
_ALIASED = "coalesce((SELECT a.main_id FROM temp.merge_alias a WHERE a.other_id = t.incident_id), t.incident_id)"
_EXPOSURE_COLUMNS = "site, provider, gpu_model, hour, gpu_seconds"
_LEDGER_ALIASED = ", ".join(
    "coalesce((SELECT a.main_id FROM temp.merge_alias a WHERE a.other_id = t.incident_id), t.incident_id)"
    if name == "incident_id"
    else f"t.{name}"
    for name in LEDGER_COLUMNS
)


def check_other(other: Path, own: Path) -> None:
    if not other.is_file():
        raise StoreError(f"cannot merge {other}: no such file")
    if other.resolve() == own.resolve():
        raise StoreError(f"cannot merge {other} into itself")
    try:
        conn = peek(other)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot merge {other}: {exc}") from exc
    if "incidents" not in tables:
        raise StoreError(f"cannot merge {other}: it is not an incident database")
    if not OLDEST_MERGEABLE <= version <= SCHEMA_VERSION:
        raise StoreError(
            f"cannot merge {other}: its schema version is {version}, this console's is {SCHEMA_VERSION}; "
            "open it once with the same console version first"
        )


def _select_list(conn: sqlite3.Connection, *, aliased: bool = True) -> str:
    """INCIDENT_COLUMNS as the attached file can give them: its own columns, defaults for those it lacks
    (``aliased``: named as the column, for a SELECT; else bare expressions, for a function's arguments)."""
    present = {row[1] for row in conn.execute("PRAGMA other.table_info(incidents)")}
    missing = [name for name in INCIDENT_COLUMNS if name not in present]
    unknown = [name for name in missing if name not in _ADDED_LATER]
    if unknown:
        raise StoreError(f"cannot merge: the other incident table lacks {', '.join(unknown)}")
    return ", ".join(
        f"o.{name}" if name in present else f"{_ADDED_LATER[name]}" + (f" AS {name}" if aliased else "")
        for name in INCIDENT_COLUMNS
    )


def register_checks(conn: sqlite3.Connection) -> None:
    for name, check, arity in (
        ("incident_problem", incident_problem, len(INCIDENT_COLUMNS)),
        ("timeline_problem", timeline_problem, 7),
        ("evidence_problem", evidence_problem, 3),
        ("exposure_problem", exposure_problem, 5),
        ("ledger_problem", ledger_problem, len(LEDGER_COLUMNS)),
    ):
        conn.create_function(name, arity, lambda *row, check=check: check(row), deterministic=True)


def _refuse_incidents(conn: sqlite3.Connection, select: str) -> list[str]:
    """Fill temp.merge_refused with the other file's incident rows that fail their check; return the reasons."""
    conn.execute("DROP TABLE IF EXISTS temp.merge_refused")
    conn.execute(
        "CREATE TEMP TABLE merge_refused AS SELECT other_rowid, other_id, problem FROM ("
        f"SELECT o.rowid AS other_rowid, o.id AS other_id, incident_problem({select}) AS problem "
        "FROM other.incidents o) WHERE problem IS NOT NULL"
    )
    conn.execute("CREATE INDEX temp.merge_refused_rowid ON merge_refused (other_rowid)")
    rows = conn.execute(f"SELECT other_id, problem FROM temp.merge_refused LIMIT {_SHOWN_REFUSALS}").fetchall()
    return [f"incident [{other_id!r}]: {problem}" for other_id, problem in rows]


def _refused_count(conn: sqlite3.Connection, table: str, check: str, columns: str) -> tuple[int, list[str]]:
    where = f"{check}({columns}) IS NOT NULL"
    total = conn.execute(f"SELECT count(*) FROM other.{table} t WHERE {where}").fetchone()[0]
    rows = conn.execute(f"SELECT {check}({columns}) FROM other.{table} t WHERE {where} LIMIT {_SHOWN_REFUSALS}")
    return total, [f"{table} row: {problem}" for (problem,) in rows]


def merge(conn: sqlite3.Connection, other: Path) -> MergeResult:
    register_checks(conn)
    conn.execute("ATTACH DATABASE ? AS other", (file_uri(other, readonly=True),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        select = _select_list(conn)
        reasons = _refuse_incidents(conn, _select_list(conn, aliased=False))
        refused = conn.execute("SELECT count(*) FROM temp.merge_refused").fetchone()[0]
        conn.execute("DROP TABLE IF EXISTS temp.merge_alias")
        conn.execute(_FIND_ALIASES)
        conn.execute("CREATE UNIQUE INDEX temp.merge_alias_other ON merge_alias (other_id)")
        joined = conn.execute("SELECT count(*) FROM temp.merge_alias").fetchone()[0]
        total = conn.execute("SELECT count(*) FROM other.incidents").fetchone()[0]
        added = (
            conn.execute(
                "SELECT count(*) FROM other.incidents o "
                "WHERE NOT EXISTS (SELECT 1 FROM main.incidents m WHERE m.id = o.id) "
                "AND o.rowid NOT IN (SELECT other_rowid FROM temp.merge_refused)"
            ).fetchone()[0]
            - joined
        )
        changed = conn.execute(_MERGE_INCIDENTS.format(select=select)).rowcount
        conn.execute(
            "UPDATE main.incidents SET parent_id = "
            "(SELECT a.main_id FROM temp.merge_alias a WHERE a.other_id = parent_id) "
            "WHERE parent_id IN (SELECT other_id FROM temp.merge_alias)"
        )
        history_refused = 0
        timeline_columns = "t.incident_id, t.time, t.kind, t.note, t.severity, t.status, t.count"
        n, more = _refused_count(conn, "timeline", "timeline_problem", timeline_columns)
        history_refused, reasons = history_refused + n, reasons + more
        timeline = conn.execute(
            f"INSERT OR IGNORE INTO main.timeline ({_TIMELINE_COLUMNS}) "
            f"SELECT {_ALIASED}, {_TIMELINE_REST} FROM other.timeline t "
            f"WHERE timeline_problem({timeline_columns}) IS NULL AND t.incident_id NOT IN {_REFUSED_IDS} "
            "ORDER BY time"
        ).rowcount
        evidence_columns = "t.incident_id, t.time, t.sample_json"
        n, more = _refused_count(conn, "evidence", "evidence_problem", evidence_columns)
        history_refused, reasons = history_refused + n, reasons + more
        evidence = conn.execute(
            "INSERT OR IGNORE INTO main.evidence (incident_id, time, sample_json) "
            f"SELECT {_ALIASED}, time, sample_json FROM other.evidence t "
            f"WHERE evidence_problem({evidence_columns}) IS NULL AND t.incident_id NOT IN {_REFUSED_IDS}"
        ).rowcount
        # Each operator step is one entry whoever's file it comes from (ids hash incident, step, time and who).
        ledger = 0
        if has_ledger(conn, "other"):
            ledger_columns = ", ".join(f"t.{name}" for name in LEDGER_COLUMNS)
            n, more = _refused_count(conn, "ledger", "ledger_problem", ledger_columns)
            history_refused, reasons = history_refused + n, reasons + more
            ledger = conn.execute(
                f"INSERT OR IGNORE INTO main.ledger ({', '.join(LEDGER_COLUMNS)}) "
                f"SELECT {_LEDGER_ALIASED} FROM other.ledger t "
                f"WHERE ledger_problem({ledger_columns}) IS NULL AND t.incident_id NOT IN {_REFUSED_IDS} "
                "ORDER BY t.time"
            ).rowcount
        # Two consoles watching one site observe the same GPU-hours: take the larger figure, never the sum.
        exposure_columns = "t.site, t.provider, t.gpu_model, t.hour, t.gpu_seconds"
        n, more = _refused_count(conn, "exposure", "exposure_problem", exposure_columns)
        history_refused, reasons = history_refused + n, reasons + more
        exposure = conn.execute(
            f"INSERT INTO main.exposure ({_EXPOSURE_COLUMNS}) SELECT {_EXPOSURE_COLUMNS} FROM other.exposure t "
            f"WHERE exposure_problem({exposure_columns}) IS NULL "
            "ON CONFLICT(site, provider, gpu_model, hour) "
            "DO UPDATE SET gpu_seconds = max(gpu_seconds, excluded.gpu_seconds)"
        ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    finally:
        for table in ("merge_alias", "merge_refused"):
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
        with contextlib.suppress(sqlite3.Error):
            conn.execute("DETACH DATABASE other")
    updated = changed - added
    return MergeResult(
        incidents_added=added,
        incidents_updated=updated,
        incidents_unchanged=total - added - updated - joined - refused,
        timeline_added=timeline,
        evidence_added=evidence,
        exposure_rows=exposure,
        incidents_joined=joined,
        ledger_added=ledger,
        incidents_refused=refused,
        history_refused=history_refused,
        refusals=tuple(reasons[:_SHOWN_REFUSALS]),
    )
