"""Keyset paging over a one-million-incident log that the test builds (issue 4 item 8).

Pages are checked against the same rows read straight from SQLite: order, completeness and no duplicates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from console.incidents.model import Severity, Status
from console.store import IncidentFilter, IncidentStore
from console.store.synthetic import build

pytestmark = pytest.mark.slow  # building the log takes 20-60 s on the 2-core CI machine

ROWS = 1_000_000


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IncidentStore]:
    path = tmp_path_factory.mktemp("million") / "incidents.sqlite3"
    build(path, ROWS, correlated=True)  # some incidents are symptoms under a cause
    with IncidentStore.open(path) as store:
        yield store


def truth(store: IncidentStore, where: str = "1", params: tuple[object, ...] = (), limit: int = -1) -> list[str]:
    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute(
            f"SELECT id FROM incidents WHERE {where} ORDER BY opened_at DESC, seq DESC LIMIT ?", (*params, limit)
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def walk(store: IncidentStore, flt: IncidentFilter, pages: int | None, limit: int = 100) -> list[str]:
    ids: list[str] = []
    result = store.query(flt, limit=limit)
    walked = 1
    while True:
        ids.extend(incident.id for incident in result.incidents)
        times = [incident.opened_at for incident in result.incidents]
        assert times == sorted(times, reverse=True)
        if result.next is None or (pages is not None and walked >= pages):
            return ids
        result = store.query(flt, after=result.next, limit=limit)
        walked += 1


def test_the_log_holds_a_million_incidents(million: IncidentStore) -> None:
    assert million.count(IncidentFilter()) == ROWS


def test_first_pages_are_the_newest_in_order_without_duplicates(million: IncidentStore) -> None:
    ids = walk(million, IncidentFilter(), pages=20)
    assert len(ids) == 2000
    assert len(set(ids)) == 2000
    assert ids == truth(million, limit=2000)


def test_filtered_pages_site_severity_status_cover_every_match_once(million: IncidentStore) -> None:
    flt = IncidentFilter(site="eu-gpu-cloud", severity=Severity.MAJOR, status=(Status.OPEN, Status.ACKNOWLEDGED))
    ids = walk(million, flt, pages=None, limit=250)
    expected = truth(million, "site = ? AND severity >= ? AND status IN ('open', 'acknowledged')", ("eu-gpu-cloud", 3))
    assert len(expected) > 1000  # the synthetic log has enough open major+ incidents to need many pages
    assert ids == expected
    assert len(set(ids)) == len(ids)
    assert million.count(flt) == len(expected)
    for incident in million.query(flt, limit=50).incidents:
        assert incident.context.site == "eu-gpu-cloud"
        assert incident.severity >= Severity.MAJOR
        assert incident.status in (Status.OPEN, Status.ACKNOWLEDGED)


def test_free_text_pages_match_the_text_in_order(million: IncidentStore) -> None:
    flt = IncidentFilter(text="coolant flow")
    ids = walk(million, flt, pages=5)
    expected = truth(million, "title LIKE '%coolant flow%'", limit=500)
    assert ids == expected


def test_a_page_deep_in_the_log_continues_exactly_where_the_last_ended(million: IncidentStore) -> None:
    flt = IncidentFilter(provider="onprem")
    ids = walk(million, flt, pages=60, limit=200)
    assert ids == truth(million, "provider = ?", ("onprem",), limit=12_000)


def test_roots_only_pages_and_counts_leave_out_every_symptom(million: IncidentStore) -> None:
    flt = IncidentFilter(roots_only=True)
    ids = walk(million, flt, pages=20)
    assert ids == truth(million, "parent_id IS NULL", limit=2000)
    symptoms = len(truth(million, "parent_id IS NOT NULL"))
    assert symptoms > ROWS // 20  # the synthetic log groups enough symptoms under causes to matter
    assert million.count(flt) == ROWS - symptoms
    broad = IncidentFilter(kind="thermal", roots_only=True)
    assert walk(million, broad, pages=5) == truth(million, "kind = 'thermal' AND parent_id IS NULL", limit=500)
    assert million.count(broad) == len(truth(million, "kind = 'thermal' AND parent_id IS NULL"))
    filtered = IncidentFilter(
        site="eu-gpu-cloud", severity=Severity.MAJOR, status=(Status.OPEN, Status.ACKNOWLEDGED), roots_only=True
    )
    expected = truth(
        million,
        "site = ? AND severity >= ? AND status IN ('open', 'acknowledged') AND parent_id IS NULL",
        ("eu-gpu-cloud", 3),
    )
    assert walk(million, filtered, pages=None, limit=250) == expected
    assert million.count(filtered) == len(expected)


def test_children_and_symptom_counts_of_a_page_of_causes(million: IncidentStore) -> None:
    causes = million.query(IncidentFilter(rule="coolant_flow", roots_only=True), limit=100).incidents
    counts = million.symptom_counts([cause.id for cause in causes])
    assert sum(counts.values()) > 0
    for cause in causes[:10]:
        children = million.children(cause.id)
        assert [child.id for child in children] == truth(million, "parent_id = ?", (cause.id,))
        assert counts.get(cause.id, 0) == len(children)
        assert all(child.parent_id == cause.id for child in children)
