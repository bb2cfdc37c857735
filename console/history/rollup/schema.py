"""The history file's tables, its ``SCHEMA`` for console.db, its error type and its name beside the incident store.

One row per entity (a GPU by UUID, or a node's chassis) per minute, keyed ``(entity, minute)`` in a WITHOUT ROWID
table with no secondary index: a minute's flush is one ``executemany`` and a chart's 24 h read is one range scan.
A row's value is a float32 blob of shape (minutes.STATS, metrics): count, min, mean, max per metric, in the column order
stored in the ``layout`` table (so a later console with more metrics still reads old files).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from console.db import Schema
from console.history.rings import CHASSIS_METRICS, GPU_METRICS
from console.history.rollup.minutes import merge_stats


class RollupError(Exception):
    """The history database cannot be opened or used; the message says which file and why."""


class UnknownMetric(RollupError, KeyError):
    """A metric the history file has no column for (a KeyError too, for callers that look metrics up)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # not KeyError's repr() of the message


def history_path_for(db_path: Path) -> Path:
    """The rollup file beside an incident database: ``incidents.sqlite3`` -> ``incidents.history.sqlite3``."""
    return db_path.with_name(f"{db_path.stem}.history.sqlite3")


_V1_TABLES = (
    "CREATE TABLE IF NOT EXISTS entities (id INTEGER PRIMARY KEY, node TEXT NOT NULL, gpu TEXT NOT NULL, "
    "UNIQUE (node, gpu))",
    "CREATE TABLE IF NOT EXISTS layout (kind TEXT NOT NULL, position INTEGER NOT NULL, metric TEXT NOT NULL, "
    "PRIMARY KEY (kind, position)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS minutes (entity INTEGER NOT NULL, minute INTEGER NOT NULL, stats BLOB NOT NULL, "
    "PRIMARY KEY (entity, minute)) WITHOUT ROWID",
)


def _v1_initial(conn: sqlite3.Connection) -> None:
    for statement in _V1_TABLES:
        conn.execute(statement)


def _prepare_writer(conn: sqlite3.Connection) -> None:
    conn.create_function("merge_stats", 2, merge_stats, deterministic=True)  # a late sample merges into its row
    conn.execute("PRAGMA journal_size_limit = 16777216")  # the WAL shrinks back after a checkpoint


def _record_layout(conn: sqlite3.Connection) -> None:
    # At every open: a console with more metrics appends their columns; the positions already there never move.
    for kind, metrics in (("gpu", GPU_METRICS), ("chassis", CHASSIS_METRICS)):
        conn.executemany(
            "INSERT OR IGNORE INTO layout (kind, position, metric) VALUES (?, ?, ?)",
            [(kind, i, m) for i, m in enumerate(metrics)],
        )


SCHEMA = Schema(
    what="history database",
    error=RollupError,
    migrations=(_v1_initial,),
    on_connect=_prepare_writer,
    on_open=_record_layout,
    log=logging.getLogger("console.history.rollup"),
)
ROLLUP_VERSION = SCHEMA.version
