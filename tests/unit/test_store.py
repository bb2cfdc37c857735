"""The incident store against real SQLite files: lifecycle, filters, keyset paging, seen-before, rates, export
and merge."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from console.incidents.model import ChangeKind, EvidencePoint, Incident, IncidentChange, Outcome, Severity, Status
from console.store import IncidentFilter, IncidentStore, StoreError, default_db_path
from tests.helpers.builders import make_incident

T0 = 1_750_000_000.0


def incident(incident_id: str, *, opened_at: float = T0, **fields: Any) -> Incident:
    return make_incident(incident_id, opened_at, **fields)


def opened(inc: Incident, evidence: int = 0) -> IncidentChange:
    points = tuple(
        EvidencePoint(inc.id, inc.opened_at - 60 + i, json.dumps({"time": inc.opened_at - 60 + i}))
        for i in range(evidence)
    )
    return IncidentChange(ChangeKind.OPENED, inc, inc.opened_at, note="opened", evidence=points)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    with IncidentStore.open(tmp_path / "incidents.sqlite3") as opened_store:
        yield opened_store


def test_a_change_submitted_is_readable_after_flush_with_its_timeline_and_evidence(store: IncidentStore) -> None:
    first = incident("a")
    store.submit([opened(first, evidence=5)])
    updated = replace(first, count=4, last_seen_at=T0 + 30, peak=91.0)
    store.submit([IncidentChange(ChangeKind.UPDATED, updated, T0 + 30, note="3 more")])
    resolved = replace(
        updated,
        status=Status.RESOLVED,
        resolved_at=T0 + 600,
        outcome=Outcome.FIXED,
        resolution_note="reseated the GPU tray",
    )
    store.submit([IncidentChange(ChangeKind.RESOLVED, resolved, T0 + 600, note="operator")])
    store.flush()

    assert store.get("a") == resolved
    assert [entry.kind for entry in store.timeline("a")] == [ChangeKind.OPENED, ChangeKind.UPDATED, ChangeKind.RESOLVED]
    assert [entry.count for entry in store.timeline("a")] == [1, 4, 4]
    assert [point.time for point in store.evidence("a")] == [T0 - 60 + i for i in range(5)]
    assert store.get("missing") is None


def test_evidence_change_adds_samples_without_rolling_the_incident_back(store: IncidentStore) -> None:
    first = incident("a")
    later = replace(first, count=9, last_seen_at=T0 + 100)
    store.submit([opened(first), IncidentChange(ChangeKind.UPDATED, later, T0 + 100)])
    stale_evidence = IncidentChange(
        ChangeKind.EVIDENCE, first, T0 + 120, evidence=(EvidencePoint("a", T0 + 120, "{}"),)
    )
    store.submit([stale_evidence])
    store.flush()
    assert store.get("a") == later
    assert len(store.evidence("a")) == 1
    assert ChangeKind.EVIDENCE not in {entry.kind for entry in store.timeline("a")}


def test_submit_does_not_wait_for_the_disk(store: IncidentStore) -> None:
    changes = [opened(incident(f"i{n}", opened_at=T0 + n), evidence=20) for n in range(2000)]
    began = threading.Event()

    def submit_all() -> None:
        began.set()
        for change in changes:
            store.submit([change])

    worker = threading.Thread(target=submit_all)
    worker.start()
    worker.join(5)
    # The caller returned long before 2,000 incidents with 40,000 evidence rows could have been committed.
    assert began.is_set()
    assert not worker.is_alive()
    store.flush(timeout_s=60)
    assert store.count(IncidentFilter()) == 2000


def _seed_filters(store: IncidentStore) -> None:
    rows = [
        incident("x1", opened_at=T0 + 1, site="iad", provider="hyperscaler", severity=Severity.CRITICAL),
        incident("x2", opened_at=T0 + 2, site="fra", provider="gpucloud", severity=Severity.WARNING, gpu_index=3),
        incident(
            "t1",
            opened_at=T0 + 3,
            site="fra",
            provider="gpucloud",
            rule="thermal_margin",
            code="",
            kind="thermal",
            severity=Severity.MAJOR,
            title="Thermal margin 2 degC on GPU 5",
            detail="coolant supply warm",
            model="NVIDIA H200",
            driver="570.86.15",
            node="node07",
            gpu_index=5,
        ),
        incident("r1", opened_at=T0 + 4, site="dgx", provider="onprem", status=Status.RESOLVED, gpu_index=None),
        incident("a1", opened_at=T0 + 5, site="iad", provider="hyperscaler", status=Status.ACKNOWLEDGED),
    ]
    store.submit([opened(row) for row in rows])
    store.flush()


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (IncidentFilter(), ["a1", "r1", "t1", "x2", "x1"]),
        (IncidentFilter(site="fra"), ["t1", "x2"]),
        (IncidentFilter(provider="hyperscaler"), ["a1", "x1"]),
        (IncidentFilter(node="node07"), ["t1"]),
        (IncidentFilter(gpu="3"), ["x2"]),
        (IncidentFilter(gpu="GPU-node07-5"), ["t1"]),
        (IncidentFilter(gpu_model="NVIDIA H200"), ["t1"]),
        (IncidentFilter(driver="570.86.15"), ["t1"]),
        (IncidentFilter(severity=Severity.MAJOR), ["a1", "r1", "t1", "x1"]),
        (IncidentFilter(rule="thermal_margin"), ["t1"]),
        (IncidentFilter(kind="xid"), ["a1", "r1", "x2", "x1"]),
        (IncidentFilter(status=Status.OPEN), ["t1", "x2", "x1"]),
        (IncidentFilter(status=(Status.OPEN, Status.ACKNOWLEDGED)), ["a1", "t1", "x2", "x1"]),
        (IncidentFilter(status=Status.RESOLVED), ["r1"]),
        (IncidentFilter(since=T0 + 2, until=T0 + 4), ["t1", "x2"]),
        (IncidentFilter(text="coolant"), ["t1"]),
        (IncidentFilter(text="thermal MARGIN"), ["t1"]),
        (IncidentFilter(text='margin" OR "xid'), []),  # FTS syntax in user text is inert, not an error
        (IncidentFilter(site="fra", severity=Severity.MAJOR, status=Status.OPEN), ["t1"]),
    ],
)
def test_filters_select_the_right_incidents_newest_first(
    store: IncidentStore, flt: IncidentFilter, expected: list[str]
) -> None:
    _seed_filters(store)
    assert [inc.id for inc in store.query(flt).incidents] == expected
    assert store.count(flt) == len(expected)


def test_common_and_rare_words_page_the_same_way(store: IncidentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from console.store import queries

    rows = [
        incident(f"c{n:02d}", opened_at=T0 + (n * 7) % 40, title=f"power brake {'rare' if n % 9 == 0 else ''}")
        for n in range(40)
    ]
    store.submit([opened(row) for row in rows])
    store.flush()

    def walk(flt: IncidentFilter) -> list[str]:
        ids: list[str] = []
        result = store.query(flt, limit=6)
        while True:
            ids.extend(inc.id for inc in result.incidents)
            if result.next is None:
                return ids
            result = store.query(flt, after=result.next, limit=6)

    expected = {word: walk(IncidentFilter(text=word)) for word in ("brake", "rare")}
    assert len(expected["brake"]) == 40
    assert len(expected["rare"]) == 5
    monkeypatch.setattr(queries, "COMMON_TEXT_MATCHES", 3)  # now both words take the "common" plan
    assert {word: walk(IncidentFilter(text=word)) for word in expected} == expected


def test_free_text_follows_resolution_notes_as_they_change(store: IncidentStore) -> None:
    first = incident("a")
    store.submit([opened(first)])
    store.submit(
        [
            IncidentChange(
                ChangeKind.RESOLVED,
                replace(first, status=Status.RESOLVED, resolution_note="replaced the baseboard", resolved_at=T0 + 9),
                T0 + 9,
            )
        ]
    )
    store.flush()
    assert [inc.id for inc in store.query(IncidentFilter(text="baseboard")).incidents] == ["a"]
    store.submit(
        [
            IncidentChange(
                ChangeKind.UPDATED,
                replace(first, status=Status.RESOLVED, resolution_note="firmware update", resolved_at=T0 + 9),
                T0 + 10,
            )
        ]
    )
    store.flush()
    assert store.query(IncidentFilter(text="baseboard")).incidents == ()
    assert [inc.id for inc in store.query(IncidentFilter(text="firmware")).incidents] == ["a"]


def test_keyset_pages_cover_every_row_once_in_order_even_with_equal_times(store: IncidentStore) -> None:
    # Groups of three incidents share an opening time, so the cursor must break ties.
    rows = [incident(f"p{n:03d}", opened_at=T0 + n // 3) for n in range(250)]
    store.submit([opened(row) for row in rows])
    store.flush()
    seen: list[Incident] = []
    page = store.query(IncidentFilter(), limit=7)
    while True:
        seen.extend(page.incidents)
        if page.next is None:
            break
        page = store.query(IncidentFilter(), after=page.next, limit=7)
    assert len(seen) == 250
    assert len({inc.id for inc in seen}) == 250
    times = [inc.opened_at for inc in seen]
    assert times == sorted(times, reverse=True)


def test_reads_run_beside_a_busy_writer_from_other_threads(store: IncidentStore) -> None:
    store.submit([opened(incident("first"))])
    store.flush()
    errors: list[BaseException] = []
    counts: list[int] = []

    def reader() -> None:
        try:
            for _ in range(50):
                counts.append(store.count(IncidentFilter()))
        except BaseException as exc:
            errors.append(exc)

    for n in range(200):
        store.submit([opened(incident(f"w{n}", opened_at=T0 + n), evidence=10)])
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    store.flush(30)
    assert errors == []
    assert min(counts) >= 1
    assert store.count(IncidentFilter()) == 201


def test_seen_before_never_presents_a_fix_from_another_provider_as_proven(store: IncidentStore) -> None:
    def resolved(incident_id: str, outcome: Outcome, note: str, **where: object) -> Incident:
        return incident(
            incident_id,
            status=Status.RESOLVED,
            outcome=outcome,
            resolution_note=note,
            resolved_at=T0,
            **where,  # type: ignore[arg-type]
        )

    here = {"provider": "gpucloud", "site": "fra", "model": "NVIDIA H200", "driver": "570.86.15"}
    past = [
        resolved(
            "other-fixed",
            Outcome.FIXED,
            "reflashed VBIOS",
            provider="hyperscaler",
            site="iad",
            model="NVIDIA H200",
            driver="570.86.15",
        ),
        resolved(
            "other-fixed-2",
            Outcome.FIXED,
            "reseated",
            provider="onprem",
            site="dgx",
            model="NVIDIA H200",
            driver="570.86.15",
        ),
        resolved("same-not-fixed", Outcome.NOT_FIXED, "reset did not help", **here),
        resolved("same-workaround", Outcome.WORKAROUND, "lowered power limit", **here),
        resolved(
            "same-model-other-driver",
            Outcome.FIXED,
            "driver upgrade",
            provider="gpucloud",
            site="fra",
            model="NVIDIA H200",
            driver="550.127.05",
        ),
        incident("same-open", **here),  # type: ignore[arg-type]
        incident("other-rule", rule="thermal_margin", code="", **here),  # type: ignore[arg-type]
    ]
    store.submit([opened(row) for row in past])
    current = incident("now", opened_at=T0 + 100, **here)  # type: ignore[arg-type]
    store.submit([opened(current)])
    store.flush()

    seen = store.seen_before(current)
    same, elsewhere = seen.same_context, seen.elsewhere
    assert {p.id for p in same.incidents} == {"same-not-fixed", "same-workaround", "same-open"}
    assert (same.total, same.fixed, same.not_fixed, same.workaround, same.unresolved) == (3, 0, 1, 1, 1)
    assert {p.id for p in elsewhere.incidents} == {"other-fixed", "other-fixed-2", "same-model-other-driver"}
    assert (elsewhere.total, elsewhere.fixed, elsewhere.not_fixed) == (3, 3, 0)
    # The fixes were recorded at other providers (or another driver): none is proven here.
    assert seen.proven_fixes == ()
    assert any("not proven" in line for line in seen.summary_lines())
    assert "now" not in {p.id for p in same.incidents + elsewhere.incidents}


def test_seen_before_counts_a_same_context_fix_as_proven(store: IncidentStore) -> None:
    fixed = incident("fixed", status=Status.RESOLVED, outcome=Outcome.FIXED, resolution_note="reseat")
    current = incident("now", opened_at=T0 + 5)
    store.submit([opened(fixed), opened(current)])
    store.flush()
    seen = store.seen_before(current)
    assert seen.same_context.fixed == 1
    assert [p.id for p in seen.proven_fixes] == ["fixed"]
    assert not any("not proven" in line for line in seen.summary_lines())


def test_seen_before_with_unknown_driver_proves_nothing(store: IncidentStore) -> None:
    fixed = incident("fixed", driver=None, status=Status.RESOLVED, outcome=Outcome.FIXED)
    current = incident("now", driver=None, opened_at=T0 + 5)
    store.submit([opened(fixed), opened(current)])
    store.flush()
    seen = store.seen_before(current)
    assert seen.same_context.total == 0
    assert seen.elsewhere.fixed == 1


def test_rates_per_thousand_gpu_hours_by_site_provider_and_kind(store: IncidentStore) -> None:
    hour = 3600.0
    start = 1_750_003_200.0  # an hour boundary
    # iad: 8 GPUs for 10 hours = 80 GPU-hours; fra: 8 GPUs for 5 hours = 40 GPU-hours.
    for h in range(10):
        store.record_exposure("iad", "hyperscaler", "H100", 8 * hour, start + h * hour + 10)
    for h in range(5):
        store.record_exposure("fra", "gpucloud", "H200", 4 * hour, start + h * hour + 10)
        store.record_exposure("fra", "gpucloud", "H200", 4 * hour, start + h * hour + 20)
    store.record_exposure("fra", "gpucloud", "H200", float("nan"), start)  # ignored, never poisons the sum
    rows = [
        incident("i1", opened_at=start + 100, site="iad", provider="hyperscaler"),
        incident("i2", opened_at=start + 200, site="iad", provider="hyperscaler", kind="thermal", rule="t"),
        incident("f1", opened_at=start + 300, site="fra", provider="gpucloud"),
        incident("old", opened_at=start - 10 * hour, site="fra", provider="gpucloud"),
    ]
    store.submit([opened(row) for row in rows])
    store.flush()
    until = start + 10 * hour
    by_site = {row.group: row for row in store.rates("site", start, until)}
    assert by_site["iad"].incidents == 2
    assert by_site["iad"].gpu_hours == pytest.approx(80)
    assert by_site["iad"].per_1000_gpu_hours == pytest.approx(25.0)
    assert by_site["fra"].incidents == 1
    assert by_site["fra"].per_1000_gpu_hours == pytest.approx(25.0)
    by_provider = {row.group: row for row in store.rates("provider", start, until)}
    assert by_provider["gpucloud"].gpu_hours == pytest.approx(40)
    by_kind = {row.group: row for row in store.rates("kind", start, until)}
    assert by_kind["xid"].per_1000_gpu_hours == pytest.approx(2 / 120 * 1000)
    assert by_kind["thermal"].incidents == 1
    with pytest.raises(ValueError, match="grouped by"):
        store.rates("node; DROP TABLE incidents", start, until)


def test_csv_export_neutralises_formulas_and_round_trips_the_rest(store: IncidentStore) -> None:
    hostile = [
        '=HYPERLINK("http://evil")',
        "+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1)",
        "\tleading tab",
        "\rleading CR",
    ]
    rows = [incident(f"h{n}", opened_at=T0 + n, title=text, node=text) for n, text in enumerate(hostile)]
    rows.append(incident("plain", opened_at=T0 + 100, title="Thermal margin 2 degC", peak=-3.5))
    store.submit([opened(row) for row in rows])
    store.flush()
    out = io.StringIO()
    assert store.export(IncidentFilter(), "csv", out) == len(rows)
    records = list(csv.DictReader(io.StringIO(out.getvalue())))
    by_id = {record["id"]: record for record in records}
    for n, text in enumerate(hostile):
        assert by_id[f"h{n}"]["title"] == "'" + text
        assert by_id[f"h{n}"]["node"] == "'" + text
    assert by_id["plain"]["title"] == "Thermal margin 2 degC"
    assert by_id["plain"]["peak"] == "-3.5"  # numbers are numbers, not text to neutralise
    assert by_id["plain"]["severity"] == "critical"
    for record in records:
        for value in record.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")) or value.startswith("'")


def test_json_export_is_a_complete_array(store: IncidentStore) -> None:
    _seed_filters(store)
    out = io.StringIO()
    assert store.export(IncidentFilter(site="fra"), "json", out) == 2
    document = json.loads(out.getvalue())
    assert [item["id"] for item in document] == ["t1", "x2"]
    assert document[0]["severity"] == "major"
    assert document[0]["gpu_model"] == "NVIDIA H200"
    empty = io.StringIO()
    assert store.export(IncidentFilter(site="nowhere"), "json", empty) == 0
    assert json.loads(empty.getvalue()) == []
    with pytest.raises(ValueError, match="csv or json"):
        store.export(IncidentFilter(), "xml", io.StringIO())  # type: ignore[arg-type]


def test_merge_keeps_the_more_advanced_state_and_never_duplicates(tmp_path: Path) -> None:
    mine_path, theirs_path = tmp_path / "mine.sqlite3", tmp_path / "theirs.sqlite3"
    shared = incident("shared", opened_at=T0)
    with IncidentStore.open(theirs_path) as theirs:
        resolved = replace(
            shared, status=Status.RESOLVED, outcome=Outcome.FIXED, resolution_note="reseated", resolved_at=T0 + 50
        )
        theirs.submit([opened(shared, evidence=3), IncidentChange(ChangeKind.RESOLVED, resolved, T0 + 50)])
        theirs.submit([opened(incident("theirs-only", opened_at=T0 + 1, node="node02"), evidence=2)])
        stale = incident("mine-ahead", opened_at=T0 + 2)
        theirs.submit([opened(stale)])
        theirs.record_exposure("fra", "gpucloud", "H200", 3600, T0)
    with IncidentStore.open(mine_path) as mine:
        mine.submit([opened(shared, evidence=3)])  # same evidence samples as theirs
        ahead = replace(stale, status=Status.ACKNOWLEDGED, acknowledged_at=T0 + 3, last_seen_at=T0 + 3)
        mine.submit([opened(stale), IncidentChange(ChangeKind.ACKNOWLEDGED, ahead, T0 + 3)])
        mine.submit([opened(incident("mine-only", opened_at=T0 + 4, node="node03"))])
        mine.record_exposure("fra", "gpucloud", "H200", 3600, T0)
        mine.flush()

        result = mine.merge_from(theirs_path)
        assert (result.incidents_added, result.incidents_updated, result.incidents_unchanged) == (1, 1, 1)
        assert result.evidence_added == 2  # only theirs-only's samples; the shared ones were already here
        got_shared = mine.get("shared")
        assert got_shared is not None
        assert got_shared.status is Status.RESOLVED
        assert got_shared.resolution_note == "reseated"
        ahead_now = mine.get("mine-ahead")
        assert ahead_now is not None
        assert ahead_now.status is Status.ACKNOWLEDGED  # their older open copy did not roll it back
        assert mine.count(IncidentFilter()) == 4
        assert len(mine.evidence("shared")) == 3
        assert [entry.kind for entry in mine.timeline("shared")] == [ChangeKind.OPENED, ChangeKind.RESOLVED]
        assert [inc.id for inc in mine.query(IncidentFilter(text="reseated")).incidents] == ["shared"]
        # Both consoles watched the same site for the same hour: 1 GPU-hour, not 2.
        rates = mine.rates("site", T0 - 3600, T0 + 3600)
        assert rates[0].gpu_hours == pytest.approx(1.0)

        again = mine.merge_from(theirs_path)
        assert (again.incidents_added, again.incidents_updated, again.timeline_added, again.evidence_added) == (
            0,
            0,
            0,
            0,
        )
        assert mine.count(IncidentFilter()) == 4
        with pytest.raises(StoreError, match="into itself"):
            mine.merge_from(mine_path)
        with pytest.raises(StoreError, match="no such file"):
            mine.merge_from(tmp_path / "absent.sqlite3")


def test_merge_refuses_a_file_that_is_not_an_incident_database(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    with IncidentStore.open(tmp_path / "mine.sqlite3") as mine, pytest.raises(StoreError, match="not an incident"):
        mine.merge_from(other)


def test_closed_store_refuses_use_clearly(tmp_path: Path) -> None:
    store = IncidentStore.open(tmp_path / "incidents.sqlite3")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.submit([opened(incident("a"))])
    with pytest.raises(StoreError, match="closed"):
        store.count(IncidentFilter())


def test_default_path_is_in_the_user_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "gpu-ops-console" / "incidents.sqlite3"


def test_database_uses_wal_and_the_indexes_serve_review_queries(store: IncidentStore) -> None:
    from console.store import queries

    _seed_filters(store)
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM incidents i WHERE i.status IN ('open') "
                "AND i.status <> 'resolved' ORDER BY i.opened_at DESC, i.seq DESC LIMIT 10"
            )
        )
        assert "incidents_unresolved_opened" in plan
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan  # no full sort: the index gives the order
        terms, params = queries.where(
            IncidentFilter(site="fra", severity=Severity.MAJOR, status=(Status.OPEN, Status.ACKNOWLEDGED))
        )
        count_plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM incidents i WHERE " + " AND ".join(terms), params
            )
        )
        assert "COVERING INDEX incidents_unresolved_opened" in count_plan
    finally:
        conn.close()


def test_one_bad_write_is_reported_and_does_not_take_good_ones_with_it(tmp_path: Path) -> None:
    errors: list[str] = []
    with IncidentStore.open(tmp_path / "incidents.sqlite3", on_error=errors.append) as store:
        broken = replace(incident("broken"), title=None)  # type: ignore[arg-type]  # as a buggy rule might send
        store.submit([opened(incident("good-1"))])
        store.submit([opened(broken)])
        store.submit([opened(incident("good-2", opened_at=T0 + 1))])
        store.flush()
        assert [inc.id for inc in store.query(IncidentFilter()).incidents] == ["good-2", "good-1"]
        assert len(errors) == 1
        assert "1 incident changes" in errors[0]
        assert "title None is not text" in errors[0]  # refused by the store's checks before SQLite sees it
        assert store.last_error == errors[0]
        assert store.failed_writes == 1
        assert store.writer_alive
        store.submit([opened(incident("good-3", opened_at=T0 + 2))])
        store.flush()
        assert store.count(IncidentFilter()) == 3
