"""Merging another operator's database: stable ids, the more advanced state wins, nothing duplicated.

Runs on the writer thread (it is a write), attaching the other file read-only.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from console.db import file_uri, peek
from console.store.schema import INCIDENT_COLUMNS, SCHEMA_VERSION, STATUS_RANK_SQL
from console.store.types import MergeResult, StoreError

_COLUMNS = ", ".join(INCIDENT_COLUMNS)
_NEW_RANK = STATUS_RANK_SQL.format(col="excluded.status")
_OLD_RANK = STATUS_RANK_SQL.format(col="status")
# Same id: take the other copy only if it is further along (open < acknowledged < resolved), or as far
# along and seen later. The other copy is taken whole, so a row never mixes two operators' states.
_MERGE_INCIDENTS = (
    f"INSERT INTO main.incidents ({_COLUMNS}) SELECT {_COLUMNS} FROM other.incidents WHERE true "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in INCIDENT_COLUMNS if name != "id")
    + f" WHERE {_NEW_RANK} > {_OLD_RANK}"
    + f" OR ({_NEW_RANK} = {_OLD_RANK} AND excluded.last_seen_at > last_seen_at)"
)
_TIMELINE_COLUMNS = "incident_id, time, kind, note, severity, status, count"
_EXPOSURE_COLUMNS = "site, provider, gpu_model, hour, gpu_seconds"


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
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"cannot merge {other}: its schema version is {version}, this console's is {SCHEMA_VERSION}; "
            "open it once with the same console version first"
        )


def merge(conn: sqlite3.Connection, other: Path) -> MergeResult:
    conn.execute("ATTACH DATABASE ? AS other", (file_uri(other, readonly=True),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        total = conn.execute("SELECT count(*) FROM other.incidents").fetchone()[0]
        added = conn.execute(
            "SELECT count(*) FROM other.incidents o WHERE NOT EXISTS (SELECT 1 FROM main.incidents m WHERE m.id = o.id)"
        ).fetchone()[0]
        changed = conn.execute(_MERGE_INCIDENTS).rowcount
        timeline = conn.execute(
            f"INSERT OR IGNORE INTO main.timeline ({_TIMELINE_COLUMNS}) "
            f"SELECT {_TIMELINE_COLUMNS} FROM other.timeline ORDER BY time"
        ).rowcount
        evidence = conn.execute(
            "INSERT OR IGNORE INTO main.evidence (incident_id, time, sample_json) "
            "SELECT incident_id, time, sample_json FROM other.evidence"
        ).rowcount
        # Two consoles watching one site observe the same GPU-hours: take the larger figure, never the sum.
        exposure = conn.execute(
            f"INSERT INTO main.exposure ({_EXPOSURE_COLUMNS}) SELECT {_EXPOSURE_COLUMNS} FROM other.exposure "
            "WHERE true ON CONFLICT(site, provider, gpu_model, hour) "
            "DO UPDATE SET gpu_seconds = max(gpu_seconds, excluded.gpu_seconds)"
        ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("DETACH DATABASE other")
    updated = changed - added
    return MergeResult(
        incidents_added=added,
        incidents_updated=updated,
        incidents_unchanged=total - added - updated,
        timeline_added=timeline,
        evidence_added=evidence,
        exposure_rows=exposure,
    )
