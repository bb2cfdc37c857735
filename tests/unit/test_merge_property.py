"""Issue 18 item 1, property-based: whatever another file's rows hold, a merge either stores a row that every
reader can read or refuses it with its reason; it never stores a row a reader would choke on."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.store import IncidentFilter, IncidentStore
from console.store.schema import INCIDENT_COLUMNS
from console.store.validate import incident_problem

T0 = 1_750_003_200.0
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
# SQLite stores NaN as NULL, so NOT NULL columns get every float but NaN (NULL is the schema's own refusal).
_ANYTHING = st.one_of(
    _TEXT,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=True),
    st.binary(max_size=6),
)
_TIME = st.one_of(st.floats(min_value=T0, max_value=T0 + 86400), _ANYTHING)
_NULLABLE = st.one_of(st.none(), st.floats(allow_nan=True), _ANYTHING)
# For each column: mostly what a console writes, sometimes anything at all (NOT NULL columns never get NULL,
# the schema's own constraint already refuses those).
_GOOD: dict[str, st.SearchStrategy[Any]] = {
    "severity": st.sampled_from([1, 2, 3, 4]),
    "status": st.sampled_from(["open", "acknowledged", "resolved"]),
    "opened_at": _TIME,
    "last_seen_at": _TIME,
    "resolved_at": st.one_of(st.none(), _TIME),
    "acknowledged_at": st.one_of(st.none(), _TIME),
    "count": st.integers(min_value=1, max_value=1000),
    "gpu_index": st.one_of(st.none(), st.integers(min_value=0, max_value=7)),
    "peak": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    "outcome": st.sampled_from([None, "fixed", "not_fixed", "workaround", "auto_cleared"]),
    "scope": st.sampled_from([None, "gpu", "node", "rack"]),
    "parent_id": st.none(),
    "nodes": st.just("[]"),
}
_NULLABLE_COLUMNS = {
    "gpu_uuid",
    "gpu_index",
    "gpu_model",
    "serial",
    "driver_version",
    "vbios_version",
    "pci_bus_id",
    "resolved_at",
    "peak",
    "acknowledged_at",
    "outcome",
    "parent_id",
    "scope",
}


@st.composite
def incident_rows(draw: st.DrawFn, incident_id: str) -> tuple[Any, ...]:
    values: list[Any] = []
    for name in INCIDENT_COLUMNS:
        if name == "id":
            values.append(incident_id)
            continue
        good = _GOOD.get(name, _TEXT)
        wild = _NULLABLE if name in _NULLABLE_COLUMNS else _ANYTHING
        values.append(draw(st.one_of(good, good, good, wild)))
    return tuple(values)


@st.composite
def other_files(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    n = draw(st.integers(min_value=1, max_value=6))
    return [draw(incident_rows(f"inc-{i}")) for i in range(n)]


def _write_other(path: Path, rows: list[tuple[Any, ...]]) -> None:
    IncidentStore.open(path).close()
    conn = sqlite3.connect(path)
    with conn:
        marks = ", ".join("?" for _ in INCIDENT_COLUMNS)
        conn.executemany(f"INSERT INTO incidents ({', '.join(INCIDENT_COLUMNS)}) VALUES ({marks})", rows)
        for row in rows:
            conn.execute(
                "INSERT INTO timeline (incident_id, time, kind, note, severity, status, count) "
                "VALUES (?, ?, 'opened', '', ?, ?, 1)",
                (row[0], row[18], row[4], row[5]),
            )
    conn.close()


def _as_stored(path: Path) -> list[tuple[Any, ...]]:
    """The rows as SQLite keeps them (column affinity turns '5' into 5 in an INTEGER column, 5 into '5' in TEXT)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {', '.join(INCIDENT_COLUMNS)} FROM incidents").fetchall()
    finally:
        conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(other_files())
def test_a_merge_stores_only_rows_every_reader_can_read(rows: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        other, mine = Path(folder) / "other.sqlite3", Path(folder) / "mine.sqlite3"
        _write_other(other, rows)
        expected_good = {row[0] for row in _as_stored(other) if incident_problem(row) is None}
        with IncidentStore.open(mine) as store:
            result = store.merge_from(other)
            assert result.incidents_refused == len(rows) - len(expected_good)
            assert result.incidents_added == len(expected_good)
            assert len(result.refusals) >= min(result.incidents_refused, 1)
            page = store.query(IncidentFilter(), limit=100)
            assert page.damaged == ()
            assert {incident.id for incident in page.incidents} == expected_good
            for incident in page.incidents:
                assert store.get(incident.id) == incident
                store.timeline(incident.id)
                store.seen_before(incident)
            assert store.repair().incidents_removed == 0
