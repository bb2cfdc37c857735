"""The notification file beside the incident database: its tables, its ``SCHEMA`` for console.db, its error type.

It holds what telling people needs to remember and the incident log does not: local maintenance silences (made
with ``gpu-console silence add`` when no Alertmanager is configured) and, per incident, the silence last known to
cover it (from Alertmanager's read-back or a local silence), so ``incidents list --json`` can say "silenced" after
the console has stopped. A file of its own, so the incident store's migrations and writes never meet these.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from console.db import Schema


class NotifyError(Exception):
    """The notification file cannot be opened or used; the message says which file and why."""


def notify_path_for(db_path: Path) -> Path:
    """The notification file beside an incident database: ``incidents.sqlite3`` -> ``incidents.notify.sqlite3``."""
    return db_path.with_name(f"{db_path.stem}.notify.sqlite3")


_V1_TABLES = (
    # One matcher per local silence (node, rack or site): what `silence add` makes. Expired rows stay, for `list --all`.
    "CREATE TABLE IF NOT EXISTS local_silences (id TEXT PRIMARY KEY, matcher TEXT NOT NULL, value TEXT NOT NULL, "
    "starts_at REAL NOT NULL, ends_at REAL NOT NULL, created_by TEXT NOT NULL, comment TEXT NOT NULL, "
    "created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS silence_marks (incident_id TEXT PRIMARY KEY, silence_id TEXT NOT NULL, "
    "comment TEXT NOT NULL, ends_at REAL NOT NULL, created_by TEXT NOT NULL, source TEXT NOT NULL, "
    "updated_at REAL NOT NULL) WITHOUT ROWID",
)


def _v1_initial(conn: sqlite3.Connection) -> None:
    for statement in _V1_TABLES:
        conn.execute(statement)


SCHEMA = Schema(
    what="notification database",
    error=NotifyError,
    migrations=(_v1_initial,),
    log=logging.getLogger("console.notify"),
)
