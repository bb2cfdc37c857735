"""The store's side of correlation (issue 13) against real SQLite files: parent links, scope and member nodes
round-trip through every write path, roots-only reads, children, symptom counts, the unresolved incidents, export,
merge, and the migration of a schema-1 file in place."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from console.db import Database
from console.incidents.model import ChangeKind, EvidencePoint, Incident, IncidentChange, Scope, Severity, Status
from console.store import IncidentFilter, IncidentStore
from console.store import queries as store_queries
from console.store.schema import INCIDENT_COLUMNS, SCHEMA, SCHEMA_VERSION
from tests.helpers.builders import make_incident

T0 = 1_750_000_000.0
V1_COLUMNS = INCIDENT_COLUMNS[: INCIDENT_COLUMNS.index("parent_id")]


def incident(incident_id: str, *, opened_at: float = T0, **fields: Any) -> Incident:
    return make_incident(incident_id, opened_at, **fields)


def change(kind: ChangeKind, inc: Incident, at: float | None = None) -> IncidentChange:
    return IncidentChange(kind, inc, inc.opened_at if at is None else at)


ROOT = replace(
    incident("root", opened_at=T0, rule="coolant_flow", code="", kind="cooling", node="node01", gpu_index=None),
    scope=Scope.COOLING_LOOP,
    scope_name="loop-a",
    nodes=("node01", "node02", "node03"),
)


def symptom(incident_id: str, opened_at: float, node: str, *, parent: str | None = "root") -> Incident:
    return replace(
        incident(incident_id, opened_at=opened_at, rule="hw_slowdown", kind="thermal", node=node),
        parent_id=parent,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    with IncidentStore.open(tmp_path / "incidents.sqlite3") as opened_store:
        yield opened_store


def _seed(store: IncidentStore) -> None:
    """A cooling-loop root with three symptoms (one of them learnt its parent by an UPDATED change), a lone root
    and an unrelated open incident; one symptom resolved."""
    late = symptom("s3", T0 + 30, "node03", parent=None)
    store.submit(
        [
            change(ChangeKind.OPENED, ROOT),
            change(ChangeKind.OPENED, symptom("s1", T0 + 10, "node01")),
            change(ChangeKind.OPENED, symptom("s2", T0 + 20, "node02")),
            change(ChangeKind.OPENED, late),
            change(ChangeKind.OPENED, incident("lone", opened_at=T0 + 40, node="node09")),
        ]
    )
    store.submit([change(ChangeKind.UPDATED, replace(late, parent_id="root", count=2), T0 + 35)])
    resolved = replace(symptom("s1", T0 + 10, "node01"), status=Status.RESOLVED, resolved_at=T0 + 50)
    store.submit([change(ChangeKind.RESOLVED, resolved, T0 + 50)])
    store.flush()


def test_parent_scope_and_nodes_round_trip_and_default_to_derived(store: IncidentStore) -> None:
    _seed(store)
    root = store.get("root")
    assert root == ROOT
    assert root is not None and root.scope is Scope.COOLING_LOOP and root.nodes == ("node01", "node02", "node03")
    lone = store.get("lone")
    assert lone is not None
    assert (lone.parent_id, lone.scope, lone.scope_name, lone.nodes) == (None, None, "", ())
    assert lone.effective_scope is Scope.GPU  # derived: it has a GPU UUID
    assert lone.member_nodes == ("node09",)


def test_an_updated_change_that_sets_the_parent_is_persisted(store: IncidentStore) -> None:
    _seed(store)
    s3 = store.get("s3")
    assert s3 is not None
    assert s3.parent_id == "root"
    assert s3.count == 2
    assert [entry.kind for entry in store.timeline("s3")] == [ChangeKind.OPENED, ChangeKind.UPDATED]
    # Evidence alone carries an old snapshot (no parent): it must not unlink the symptom.
    old = symptom("s3", T0 + 30, "node03", parent=None)
    store.submit([IncidentChange(ChangeKind.EVIDENCE, old, T0 + 60, evidence=(EvidencePoint("s3", T0 + 60, "{}"),))])
    store.flush()
    again = store.get("s3")
    assert again is not None and again.parent_id == "root"
    # ... and a later UPDATED may move it to another parent or make it a root again.
    store.submit([change(ChangeKind.UPDATED, replace(s3, parent_id=None), T0 + 70)])
    store.flush()
    assert [child.id for child in store.children("root")] == ["s2", "s1"]


def test_children_are_newest_first_and_symptom_counts_count_them(store: IncidentStore) -> None:
    _seed(store)
    assert [child.id for child in store.children("root")] == ["s3", "s2", "s1"]
    assert store.children("lone") == ()
    assert store.children("absent") == ()
    counts = store.symptom_counts(["root", "lone", "s1", "absent", "root"])
    assert counts.get("root") == 3
    assert all(counts.get(name, 0) == 0 for name in ("lone", "s1", "absent"))
    assert store.symptom_counts([]) == {}
    many = [f"x{n}" for n in range(1200)] + ["root"]  # more ids than one statement binds
    assert store.symptom_counts(many) == {"root": 3}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (IncidentFilter(roots_only=True), ["lone", "root"]),
        (IncidentFilter(), ["lone", "s3", "s2", "s1", "root"]),
        (IncidentFilter(roots_only=True, kind="thermal"), []),
        (IncidentFilter(roots_only=True, kind="cooling"), ["root"]),
        (IncidentFilter(roots_only=True, site="iad-hyperscaler"), ["lone", "root"]),
        (IncidentFilter(roots_only=True, node="node01"), ["root"]),
        (IncidentFilter(roots_only=True, status=Status.OPEN), ["lone", "root"]),
        (IncidentFilter(roots_only=True, status=Status.RESOLVED), []),
        (IncidentFilter(roots_only=True, severity=Severity.MAJOR), ["lone", "root"]),
        (IncidentFilter(roots_only=True, since=T0 + 5), ["lone"]),
        (IncidentFilter(roots_only=True, text="fell"), ["lone", "root"]),
        (IncidentFilter(roots_only=True, gpu_model="NVIDIA H100 80GB HBM3"), ["lone", "root"]),
        (IncidentFilter(roots_only=True, gpu="GPU-node09-0"), ["lone"]),
    ],
)
def test_roots_only_is_honoured_by_query_count_iter_and_export(
    store: IncidentStore, flt: IncidentFilter, expected: list[str]
) -> None:
    _seed(store)
    assert [i.id for i in store.query(flt).incidents] == expected
    assert store.count(flt) == len(expected)
    assert [i.id for i in store.iter_incidents(flt)] == expected
    out = io.StringIO()
    assert store.export(flt, "json", out) == len(expected)
    assert [item["id"] for item in json.loads(out.getvalue())] == expected


def test_roots_only_pages_walk_every_root_once(store: IncidentStore) -> None:
    changes = []
    for n in range(60):
        root = incident(f"r{n:02d}", opened_at=T0 + n * 10)
        changes.append(change(ChangeKind.OPENED, root))
        changes.extend(
            change(ChangeKind.OPENED, symptom(f"r{n:02d}-s{k}", T0 + n * 10 + 1 + k, f"n{k}", parent=root.id))
            for k in range(n % 4)
        )
    store.submit(changes)
    store.flush()
    flt = IncidentFilter(roots_only=True)
    ids: list[str] = []
    page = store.query(flt, limit=7)
    while True:
        ids.extend(i.id for i in page.incidents)
        if page.next is None:
            break
        page = store.query(flt, after=page.next, limit=7)
    assert ids == [f"r{n:02d}" for n in reversed(range(60))]
    assert store.count(flt) == 60
    assert store.count(IncidentFilter()) == 60 + sum(n % 4 for n in range(60))
    assert store.symptom_counts(ids[:4]) == {"r59": 3, "r58": 2, "r57": 1}


def test_unresolved_is_every_open_or_acknowledged_incident(store: IncidentStore) -> None:
    _seed(store)
    lone = store.get("lone")
    assert lone is not None
    store.submit([change(ChangeKind.ACKNOWLEDGED, replace(lone, status=Status.ACKNOWLEDGED), T0 + 60)])
    store.flush()
    unresolved = store.unresolved()
    assert [i.id for i in unresolved] == ["lone", "s3", "s2", "root"]
    assert {i.status for i in unresolved} == {Status.OPEN, Status.ACKNOWLEDGED}
    assert next(i for i in unresolved if i.id == "s3").parent_id == "root"  # the engine resumes them whole


def test_rates_can_count_each_fault_once(store: IncidentStore) -> None:
    _seed(store)
    store.record_exposure("fra", "gpucloud", "H100", 3600, T0)
    store.flush()
    every = {row.group: row.incidents for row in store.rates("kind", T0 - 3600, T0 + 3600)}
    roots = {row.group: row.incidents for row in store.rates("kind", T0 - 3600, T0 + 3600, roots_only=True)}
    assert every == {"cooling": 1, "thermal": 3, "xid": 1}
    assert roots == {"cooling": 1, "xid": 1}


def test_export_json_and_csv_carry_the_correlation(store: IncidentStore) -> None:
    _seed(store)
    out = io.StringIO()
    store.export(IncidentFilter(), "json", out)
    items = {item["id"]: item for item in json.loads(out.getvalue())}
    assert items["root"]["parent_id"] is None
    assert items["root"]["scope"] == "cooling_loop"
    assert items["root"]["scope_name"] == "loop-a"
    assert items["root"]["nodes"] == ["node01", "node02", "node03"]
    assert items["root"]["symptoms"] == 3
    assert items["s2"]["parent_id"] == "root"
    assert (items["s2"]["scope"], items["s2"]["scope_name"], items["s2"]["nodes"]) == ("gpu", "node02", ["node02"])
    assert items["s2"]["symptoms"] == 0
    as_csv = io.StringIO()
    store.export(IncidentFilter(roots_only=True), "csv", as_csv)
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(as_csv.getvalue()))}
    assert set(rows) == {"root", "lone"}
    assert rows["root"]["parent_id"] == ""
    assert rows["root"]["scope"] == "cooling_loop"
    assert json.loads(rows["root"]["nodes"]) == ["node01", "node02", "node03"]
    assert rows["root"]["symptoms"] == "3"


def test_merge_carries_parent_links_and_adds_no_duplicates(tmp_path: Path) -> None:
    mine_path, theirs_path = tmp_path / "mine.sqlite3", tmp_path / "theirs.sqlite3"
    with IncidentStore.open(theirs_path) as theirs:
        _seed(theirs)
    with IncidentStore.open(mine_path) as mine:
        # Mine saw s2 first, as a root with no cause found yet; theirs later grouped it under the loop's fault.
        mine.submit([change(ChangeKind.OPENED, symptom("s2", T0 + 20, "node02", parent=None))])
        mine.flush()
        first = mine.merge_from(theirs_path)
        assert (first.incidents_added, first.incidents_updated) == (4, 0)
        s2 = mine.get("s2")
        # Same status, theirs not seen later: mine stands (the whole-row rule); a later UPDATED links it.
        assert s2 is not None and s2.parent_id is None
        assert mine.get("root") == ROOT
        assert [c.id for c in mine.children("root")] == ["s3", "s1"]
        again = mine.merge_from(theirs_path)
        assert (again.incidents_added, again.incidents_updated, again.timeline_added) == (0, 0, 0)
        assert mine.count(IncidentFilter()) == 5
        assert mine.count(IncidentFilter(roots_only=True)) == 3
    # Theirs seen later: their linked copy is taken whole, parent and all.
    with IncidentStore.open(theirs_path) as theirs:
        s2_theirs = theirs.get("s2")
        assert s2_theirs is not None
        theirs.submit([change(ChangeKind.UPDATED, replace(s2_theirs, last_seen_at=T0 + 500), T0 + 500)])
    with IncidentStore.open(mine_path) as mine:
        assert mine.merge_from(theirs_path).incidents_updated == 1
        linked = mine.get("s2")
        assert linked is not None and linked.parent_id == "root"
        assert [c.id for c in mine.children("root")] == ["s3", "s2", "s1"]
        assert mine.count(IncidentFilter()) == 5


def test_merge_joins_one_fault_that_two_consoles_saw_under_ids_either_side_of_a_window(tmp_path: Path) -> None:
    # Each console rounded its first sighting to a different 10-minute window: two ids for one fault.
    mine_path, theirs_path = tmp_path / "mine.sqlite3", tmp_path / "theirs.sqlite3"
    mine_root = replace(ROOT, id="root-a", opened_at=T0 - 0.4)
    theirs_root = replace(ROOT, id="root-b", opened_at=T0 + 1.2, last_seen_at=T0 + 60.0)
    with IncidentStore.open(theirs_path) as theirs:
        theirs.submit(
            [
                IncidentChange(
                    ChangeKind.OPENED, theirs_root, T0 + 1.2, evidence=(EvidencePoint("root-b", T0 + 1.2, "{}"),)
                ),
                change(ChangeKind.OPENED, symptom("s1", T0 + 10, "node01", parent="root-b")),
                change(ChangeKind.UPDATED, theirs_root, T0 + 60.0),
                change(ChangeKind.OPENED, incident("other-fault", opened_at=T0 + 5, node="node09")),
            ]
        )
        theirs.flush()
    with IncidentStore.open(mine_path) as mine:
        mine.submit([change(ChangeKind.OPENED, mine_root)])
        mine.flush()
        result = mine.merge_from(theirs_path)
        assert (result.incidents_added, result.incidents_joined, result.incidents_unchanged) == (2, 1, 0)
        assert mine.get("root-b") is None
        assert mine.count(IncidentFilter(roots_only=True)) == 2  # root-a and other-fault: no second loop fault
        assert [c.id for c in mine.children("root-a")] == ["s1"]  # their symptom points at mine
        kinds = [entry.kind for entry in mine.timeline("root-a")]
        assert kinds.count(ChangeKind.UPDATED) == 1  # their history joined mine
        assert [point.time for point in mine.evidence("root-a")] == [T0 + 1.2]
        assert mine.merge_from(theirs_path).incidents_added == 0
        # A later fault of the same condition, after mine resolved, is a fault of its own.
        resolved = replace(mine_root, status=Status.RESOLVED, resolved_at=T0 + 100.0)
        mine.submit([change(ChangeKind.RESOLVED, resolved, T0 + 100.0)])
        mine.flush()
    with IncidentStore.open(theirs_path) as theirs:
        theirs.submit([change(ChangeKind.OPENED, replace(ROOT, id="root-c", opened_at=T0 + 900.0))])
    with IncidentStore.open(mine_path) as mine:
        assert mine.merge_from(theirs_path).incidents_added == 1


def _make_v1_file(path: Path, rows: int = 3) -> None:
    """A file exactly as the console of schema 1 left it (its migrations only), holding a few incidents."""
    db = Database.open(path, dataclasses.replace(SCHEMA, migrations=SCHEMA.migrations[:1]))
    conn = db.write_connection
    conn.execute("BEGIN")
    for n in range(rows):
        values: dict[str, Any] = dict.fromkeys(V1_COLUMNS)
        values.update(
            id=f"old-{n}",
            rule="xid",
            code="79",
            kind="xid",
            severity=4,
            status="open" if n == 0 else "resolved",
            title=f"GPU has fallen off the bus {n}",
            detail="",
            site="fra",
            provider="gpucloud",
            node=f"node{n:02d}",
            opened_at=T0 + n,
            last_seen_at=T0 + n,
            count=1,
            recommended_action="",
            resolution_note="",
        )
        marks = ", ".join("?" for _ in V1_COLUMNS)
        conn.execute(f"INSERT INTO incidents ({', '.join(V1_COLUMNS)}) VALUES ({marks})", list(values.values()))
    conn.execute("COMMIT")
    db.close()
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "parent_id" not in {row[1] for row in check.execute("PRAGMA table_info(incidents)")}
    finally:
        check.close()


def test_a_schema_1_file_migrates_in_place_and_keeps_its_incidents(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _make_v1_file(path)
    with IncidentStore.open(path) as store:
        assert store.recovered is None
        assert [i.id for i in store.query(IncidentFilter()).incidents] == ["old-2", "old-1", "old-0"]
        old = store.get("old-0")
        assert old is not None
        assert (old.parent_id, old.scope, old.scope_name, old.nodes) == (None, None, "", ())
        assert [i.id for i in store.unresolved()] == ["old-0"]
        assert store.count(IncidentFilter(roots_only=True)) == 3
        assert store.query(IncidentFilter(text="fallen", roots_only=True)).incidents[0].id == "old-2"
        store.submit([change(ChangeKind.UPDATED, replace(old, parent_id="old-2", last_seen_at=T0 + 9), T0 + 9)])
        store.flush()
        assert [c.id for c in store.children("old-2")] == ["old-0"]
        assert store.count(IncidentFilter(roots_only=True)) == 2
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        indexes = {row[0]: row[1] for row in conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index'")}
        assert "WHERE parent_id IS NOT NULL" in indexes["incidents_parent_opened"]
        assert "parent_id" in indexes["incidents_unresolved_opened"]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_a_schema_1_file_merges_without_being_migrated(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite3"
    _make_v1_file(old)
    before = old.read_bytes()
    with IncidentStore.open(tmp_path / "mine.sqlite3") as mine:
        result = mine.merge_from(old)
        assert result.incidents_added == 3
        merged = mine.get("old-1")
        assert merged is not None and merged.parent_id is None and merged.nodes == ()
        assert mine.merge_from(old).incidents_added == 0
        assert mine.count(IncidentFilter()) == 3
    assert old.read_bytes() == before  # read-only: the other operator's file is left as it was


def test_the_symptom_reads_and_roots_counts_use_the_indexes(store: IncidentStore) -> None:
    _seed(store)
    conn = sqlite3.connect(store.path)
    try:

        def plan(sql: str, params: tuple[Any, ...] | list[Any] = ()) -> str:
            return " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))

        assert "incidents_parent_opened" in plan(
            "SELECT * FROM incidents i WHERE i.parent_id = ? ORDER BY i.opened_at DESC, i.seq DESC", ("root",)
        )
        assert "COVERING INDEX incidents_parent_opened" in plan(
            "SELECT parent_id, count(*) FROM incidents WHERE parent_id IN (?, ?) GROUP BY parent_id", ("a", "b")
        )
        terms, params = store_queries.where(
            IncidentFilter(
                site="fra", severity=Severity.MAJOR, status=(Status.OPEN, Status.ACKNOWLEDGED), roots_only=True
            )
        )
        count_plan = plan("SELECT count(*) FROM incidents i WHERE " + " AND ".join(terms), params)
        assert "COVERING INDEX incidents_unresolved_opened" in count_plan
        roots_page = plan(
            "SELECT * FROM incidents i WHERE i.parent_id IS NULL ORDER BY i.opened_at DESC, i.seq DESC LIMIT 10"
        )
        assert "incidents_opened" in roots_page
        assert "TEMP B-TREE" not in roots_page
    finally:
        conn.close()
