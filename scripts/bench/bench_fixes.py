"""The fix ledger at one million incidents and 100,000 ledger entries: ``fixes stats`` (every fix verified
against what opened after it, then grouped), the verification a ``fixes suggest`` needs (one rule and code), a
GPU's history, beside peers from the same run: ``incidents stats`` over the same file (the rates an operator
already reads), and the same verdicts with the recurrence looked up at read time (one seek in the incidents per
fix, in one SQL statement and one query per fix from Python) instead of the link the schema's triggers keep.

    .venv/bin/python scripts/bench/bench_fixes.py [--rows 1000000] [--entries 100000] [--repeat 5] [--db PATH]

Prints one line per figure (medians of --repeat runs) and a JSON summary as the last line. Target: ``fixes
stats`` under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from console.db import Database  # noqa: E402
from console.remediation.catalog import load_catalog  # noqa: E402
from console.store import IncidentStore  # noqa: E402
from console.store.ledger import INSERT_LEDGER, EntryKind, entry_id  # noqa: E402
from console.store.schema import SCHEMA  # noqa: E402
from console.store.synthetic import build  # noqa: E402

WINDOW_S = 72 * 3600.0
OPERATORS = ("alice", "bob", "chen", "dana")


def median_ms(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


def add_ledger(path: Path, entries: int, seed: int = 5) -> float:
    """One resolve entry (the fix applied) for ``entries`` resolved incidents picked at random, as an operator
    would have recorded them; returns the seconds it took."""
    rng = random.Random(seed)
    actions = list(load_catalog().actions)
    db = Database.open(path, SCHEMA)
    conn = db.write_connection
    began = time.perf_counter()
    picked = conn.execute(
        "SELECT id, resolved_at, outcome, provider, site, node, gpu_uuid, gpu_model, driver_version, rule, code, "
        "coalesce(scope, 'gpu') FROM incidents WHERE status = 'resolved' AND outcome <> 'auto_cleared' "
        "ORDER BY random() LIMIT ?",
        (entries,),
    ).fetchall()
    rows = []
    for incident_id, at, outcome, provider, site, node, uuid, model, driver, rule, code, scope in picked:
        who = rng.choice(OPERATORS)
        action = rng.choice(actions)
        key = entry_id(incident_id, EntryKind.RESOLVE, at, who)
        context = (provider, site, node, uuid, model, driver, rule, code, scope)
        rows.append((key, incident_id, "resolve", at, who, action, outcome, "bench", *context))
    with conn:
        conn.executemany(INSERT_LEDGER, rows)
    conn.execute("ANALYZE")
    seconds = time.perf_counter() - began
    db.close(write=False)
    conn.close()
    return seconds


SEEK_PER_FIX = f"""SELECT count(*) FROM ledger l WHERE l.kind = 'resolve' AND l.outcome <> 'not_fixed'
    AND l.time + {WINDOW_S} <= :now AND NOT CASE WHEN l.gpu_uuid IS NOT NULL THEN EXISTS (SELECT 1 FROM incidents i
        WHERE i.gpu_uuid = l.gpu_uuid AND i.rule = l.rule AND i.code = l.code AND i.opened_at > l.time
        AND i.opened_at <= l.time + {WINDOW_S})
    ELSE EXISTS (SELECT 1 FROM incidents i WHERE i.gpu_uuid IS NULL AND i.node = l.node AND i.rule = l.rule
        AND i.code = l.code AND i.opened_at > l.time AND i.opened_at <= l.time + {WINDOW_S}) END"""


def held_seek_per_fix(store: IncidentStore, now: float) -> int:
    """A peer: the held fixes counted with the recurrence looked up at read time, in one statement."""
    return int(store._db.read(lambda conn: conn.execute(SEEK_PER_FIX, {"now": now}).fetchone()[0]))


def verdicts_one_query_each(store: IncidentStore, now: float) -> int:
    """The peer: every fix read, then one recurrence query per fix, counted in Python."""

    def count(conn: object) -> int:
        held = 0
        fixes = conn.execute(  # type: ignore[attr-defined]
            "SELECT time, gpu_uuid, node, rule, code, outcome FROM ledger WHERE kind = 'resolve'"
        ).fetchall()
        for at, uuid, node, rule, code, outcome in fixes:
            if outcome == "not_fixed":  # the operator's own verdict
                continue
            if uuid is not None:
                query = (
                    "SELECT 1 FROM incidents WHERE gpu_uuid = ? AND rule = ? AND code = ? AND opened_at > ? "
                    "AND opened_at <= ? LIMIT 1"
                )
                again = conn.execute(query, (uuid, rule, code, at, at + WINDOW_S)).fetchone()  # type: ignore[attr-defined]
            else:
                query = (
                    "SELECT 1 FROM incidents WHERE gpu_uuid IS NULL AND node = ? AND rule = ? AND code = ? "
                    "AND opened_at > ? AND opened_at <= ? LIMIT 1"
                )
                again = conn.execute(query, (node, rule, code, at, at + WINDOW_S)).fetchone()  # type: ignore[attr-defined]
            held += again is None and at + WINDOW_S <= now
        return held

    return store._db.read(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, help="reuse or create this file (default: a temporary one)")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fixes-") as scratch:
        path = args.db or Path(scratch) / "incidents.sqlite3"
        if not path.exists():
            built = build(path, args.rows, correlated=True)
            print(f"bulk build: {built.rows:,} incidents in {built.seconds:.1f} s")
            seconds = add_ledger(path, args.entries)
            print(f"ledger: {args.entries:,} fix entries in {seconds:.1f} s")
        with IncidentStore.open(path) as store:
            now = time.time()
            rows = store.fix_stats(WINDOW_S, now)
            attempts = sum(row.attempts for row in rows)
            held = sum(row.held for row in rows)
            print(f"fixes stats: {len(rows):,} rows over {attempts:,} fixes ({held:,} held)")
            figures["fixes_stats_ms"] = median_ms(lambda: store.fix_stats(WINDOW_S, now), args.repeat)
            print(f"fixes stats (all fixes verified, grouped): {figures['fixes_stats_ms']:.1f} ms  (target < 200 ms)")
            figures["suggest_verify_ms"] = median_ms(
                lambda: store.verified_fixes(WINDOW_S, now, rule="xid", code="79"), args.repeat
            )
            print(f"fixes of one rule and code verified (suggest): {figures['suggest_verify_ms']:.1f} ms")
            uuid = store._db.read(
                lambda conn: conn.execute("SELECT gpu_uuid FROM ledger WHERE gpu_uuid IS NOT NULL LIMIT 1").fetchone()[
                    0
                ]
            )
            figures["gpu_history_ms"] = median_ms(
                lambda: store.verified_fixes(WINDOW_S, now, gpu_uuid=uuid), args.repeat
            )
            print(f"one GPU's fixes verified (detail view): {figures['gpu_history_ms']:.2f} ms")
            span = store._db.read(
                lambda conn: conn.execute("SELECT min(opened_at), max(opened_at) FROM incidents").fetchone()
            )
            figures["incidents_stats_ms"] = median_ms(
                lambda: store.rates("provider", span[0], span[1] + 1, roots_only=True), args.repeat
            )
            print(f"peer: incidents stats by provider, roots only: {figures['incidents_stats_ms']:.1f} ms")
            assert held_seek_per_fix(store, now) == held, "the trigger-kept link and the read-time seek disagree"
            figures["seek_per_fix_ms"] = median_ms(lambda: held_seek_per_fix(store, now), args.repeat)
            print(f"peer: held counted with a read-time seek per fix (SQL): {figures['seek_per_fix_ms']:.1f} ms")
            peer_held = verdicts_one_query_each(store, now)
            assert peer_held == held, f"peer counts {peer_held} held, fixes stats {held}"
            figures["one_query_per_fix_ms"] = median_ms(lambda: verdicts_one_query_each(store, now), args.repeat)
            print(f"peer: the same verdicts with one query per fix: {figures['one_query_per_fix_ms']:.1f} ms")
    print(json.dumps({"rows": args.rows, "entries": args.entries, **{k: round(v, 2) for k, v in figures.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
