"""Incident store at one million incidents: build rate, live insert rate, first page, filtered page, free text,
count, the same with roots only (symptoms grouped under their cause left out), a root's children and the symptom
counts of a page, and the cost of opening (integrity check included).

    .venv/bin/python scripts/bench/bench_store.py [--rows 1000000] [--db PATH] [--repeat 5]

Prints one line per figure (medians of --repeat runs for the queries) and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from console.incidents.model import (  # noqa: E402
    ChangeKind,
    EvidencePoint,
    Incident,
    IncidentChange,
    IncidentContext,
    Severity,
    Status,
)
from console.store import IncidentFilter, IncidentStore  # noqa: E402
from console.store.synthetic import build  # noqa: E402


def median_ms(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


def live_changes(count: int, start: float) -> list[IncidentChange]:
    changes = []
    for n in range(count):
        incident = Incident(
            id=f"live-{n}",
            rule="xid",
            code="79",
            kind="xid",
            severity=Severity.CRITICAL,
            status=Status.OPEN,
            title=f"GPU fell off the bus on node{n % 96:02d}",
            detail="Xid 79",
            context=IncidentContext(site="eu-gpu-cloud", provider="gpucloud", node=f"node{n % 96:02d}", gpu_index=0),
            opened_at=start + n,
            last_seen_at=start + n,
        )
        evidence = (EvidencePoint(incident.id, start + n, '{"schema": "gpu-console.sample/1"}'),)
        changes.append(IncidentChange(ChangeKind.OPENED, incident, start + n, evidence=evidence))
    return changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="reuse or create this file (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as scratch:
        path = args.db or Path(scratch) / "incidents.sqlite3"
        figures: dict[str, float] = {}
        if not path.exists():
            built = build(path, args.rows, correlated=True)
            figures["bulk_build_rows_per_s"] = built.rows_per_s
            print(f"bulk build: {built.rows:,} incidents in {built.seconds:.1f} s = {built.rows_per_s:,.0f} rows/s")
        began = time.perf_counter()
        store = IncidentStore.open(path)
        figures["open_ms"] = (time.perf_counter() - began) * 1000
        print(f"open (quick_check, migrations, write probe): {figures['open_ms']:.0f} ms")
        try:
            newest = store.query(IncidentFilter(), limit=1).incidents[0].opened_at
            changes = live_changes(5000, newest + 1)
            began = time.perf_counter()
            for change in changes:
                store.submit([change])
            submit_s = time.perf_counter() - began
            store.flush(timeout_s=300)
            committed_s = time.perf_counter() - began
            figures["live_insert_rows_per_s"] = len(changes) / committed_s
            figures["submit_us_per_change"] = submit_s / len(changes) * 1e6
            print(
                "live inserts through the writer (indexes + FTS + evidence, one change per submit): "
                f"{figures['live_insert_rows_per_s']:,.0f} incidents/s; "
                f"submit() {figures['submit_us_per_change']:.1f} us"
            )
            filtered = IncidentFilter(
                site="eu-gpu-cloud", severity=Severity.MAJOR, status=(Status.OPEN, Status.ACKNOWLEDGED)
            )
            text = IncidentFilter(text="coolant flow")
            cases: dict[str, Callable[[], object]] = {
                "first_page_ms": lambda: store.query(IncidentFilter(), limit=100),
                "filtered_page_ms": lambda: store.query(filtered, limit=100),
                "text_page_ms": lambda: store.query(text, limit=100),
                "count_all_ms": lambda: store.count(IncidentFilter()),
                "count_filtered_ms": lambda: store.count(filtered),
            }
            roots = IncidentFilter(roots_only=True)
            filtered_roots = replace(filtered, roots_only=True)
            kind_roots = IncidentFilter(kind="thermal", roots_only=True)
            causes = store.query(IncidentFilter(rule="coolant_flow", roots_only=True), limit=100).incidents
            cause_ids = [incident.id for incident in causes]
            busiest = max(cause_ids, key=lambda i: store.symptom_counts([i]).get(i, 0), default="none")
            cases.update(
                {
                    "roots_first_page_ms": lambda: store.query(roots, limit=100),
                    "roots_filtered_page_ms": lambda: store.query(filtered_roots, limit=100),
                    "roots_kind_page_ms": lambda: store.query(kind_roots, limit=100),
                    "roots_count_all_ms": lambda: store.count(roots),
                    "roots_count_filtered_ms": lambda: store.count(filtered_roots),
                    "roots_count_kind_ms": lambda: store.count(kind_roots),
                    "symptom_counts_page_ms": lambda: store.symptom_counts(cause_ids),
                    "children_ms": lambda: store.children(busiest),
                    "unresolved_ms": store.unresolved,
                }
            )
            first = store.query(IncidentFilter(), limit=100)
            deep = first
            for _ in range(99):  # walk 100 pages, then time the 101st
                assert deep.next is not None
                deep = store.query(IncidentFilter(), after=deep.next, limit=100)
            cursor = deep.next
            cases["page_101_ms"] = lambda: store.query(IncidentFilter(), after=cursor, limit=100)
            for name, action in cases.items():
                figures[name] = median_ms(action, args.repeat)
                print(f"{name}: {figures[name]:.2f} ms")
            print(
                f"rows: total {store.count(IncidentFilter()):,}, filtered {store.count(filtered):,}, "
                f"text {store.count(text):,}, roots {store.count(roots):,}, filtered roots "
                f"{store.count(filtered_roots):,}, unresolved {len(store.unresolved()):,}, "
                f"children of the busiest cause {len(store.children(busiest)):,}"
            )
        finally:
            store.close()
    print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
