"""``incidents repair``: remove the rows no reader can interpret (console/store/validate.py), with what was wrong.

A damaged incident goes with its timeline and evidence; damaged timeline, evidence, ledger and exposure rows go on
their own. Runs on the writer thread in one transaction, so a failure leaves the file as it was.
"""

from __future__ import annotations

import sqlite3

from console.store import queries
from console.store.ledger import LEDGER_COLUMNS, has_ledger
from console.store.merge import register_checks
from console.store.types import RepairResult

_SHOWN = 50  # removed rows listed in the result; every one is counted
_IDS_PER_STATEMENT = 500
_HISTORY = (
    ("timeline", "timeline_problem", "incident_id, time, kind, note, severity, status, count"),
    ("evidence", "evidence_problem", "incident_id, time, sample_json"),
    ("exposure", "exposure_problem", "site, provider, gpu_model, hour, gpu_seconds"),
    ("ledger", "ledger_problem", ", ".join(LEDGER_COLUMNS)),
)


def repair(conn: sqlite3.Connection, *, dry_run: bool = False) -> RepairResult:
    register_checks(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found, total = queries.damaged_rows(conn, limit=2**62)
        lines = [row.message.split("; run ")[0] for _, row in found[:_SHOWN]]
        removed_ids = [row.id for _, row in found]
        seqs = [seq for seq, _ in found]
        history = 0
        for start in range(0, len(seqs), _IDS_PER_STATEMENT):
            chunk = seqs[start : start + _IDS_PER_STATEMENT]
            ids = removed_ids[start : start + _IDS_PER_STATEMENT]
            marks = ", ".join("?" for _ in chunk)
            for table in ("timeline", "evidence"):
                history += conn.execute(f"DELETE FROM {table} WHERE incident_id IN ({marks})", ids).rowcount
            conn.execute(f"DELETE FROM incidents WHERE seq IN ({marks})", chunk)
        for table, check, columns in _HISTORY:
            if table == "ledger" and not has_ledger(conn):
                continue
            where = f"{check}({columns}) IS NOT NULL"
            for (problem,) in conn.execute(f"SELECT {check}({columns}) FROM {table} WHERE {where} LIMIT {_SHOWN}"):
                if len(lines) < _SHOWN:
                    lines.append(f"damaged {table} row: {problem}")
            history += conn.execute(f"DELETE FROM {table} WHERE {where}").rowcount
        conn.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return RepairResult(incidents_removed=total, history_removed=history, removed=tuple(lines), dry_run=dry_run)
