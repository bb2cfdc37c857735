"""The main window's open-incidents table keeps its rows worst first, newest first within a severity, and rows that
sort equal in the order they arrived, whatever mix of openings, updates, escalations and resolutions comes in."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from console.incidents.model import ChangeKind, Incident, IncidentChange, IncidentContext, Severity, Status
from widgets.live.open_incidents import OpenIncidentsModel

# (incident number 0-7, severity 1-4, opened_at 0-2 so that many rows sort equal, resolved?)
_steps = st.lists(
    st.tuples(st.integers(0, 7), st.integers(1, 4), st.integers(0, 2), st.booleans()), min_size=1, max_size=60
)


def _incident(number: int, severity: int, opened_at: int, resolved: bool) -> Incident:
    return Incident(
        id=f"i{number}",
        rule="xid",
        code="79",
        kind="xid",
        severity=Severity(severity),
        status=Status.RESOLVED if resolved else Status.OPEN,
        title=f"incident {number}",
        detail="",
        context=IncidentContext("site", "aws", f"node-{number}"),
        opened_at=float(opened_at),
        last_seen_at=float(opened_at),
    )


def _expected(steps: list[tuple[int, int, int, bool]]) -> list[tuple[str, int]]:
    """What an operator should see: one row per unresolved incident, in the documented order."""
    rows: list[Incident] = []
    for step in steps:
        incident = _incident(*step)
        held = next((i for i, r in enumerate(rows) if r.id == incident.id), None)
        key = (-int(incident.severity), -incident.opened_at)
        if held is not None:
            old = rows[held]
            if incident.status is Status.RESOLVED:
                del rows[held]
                continue
            if (-int(old.severity), -old.opened_at) == key:
                rows[held] = incident  # an update in place keeps its position
                continue
            del rows[held]
        elif incident.status is Status.RESOLVED:
            continue
        at = next((i for i, r in enumerate(rows) if (-int(r.severity), -r.opened_at) > key), len(rows))
        rows.insert(at, incident)
    return [(r.id, int(r.severity)) for r in rows]


@settings(max_examples=150, deadline=None)
@given(_steps)
def test_rows_stay_worst_first_through_any_sequence_of_changes(qapp, steps) -> None:  # type: ignore[no-untyped-def]
    model = OpenIncidentsModel()
    kinds = {False: ChangeKind.UPDATED, True: ChangeKind.RESOLVED}
    model.apply(IncidentChange(kinds[step[3]], _incident(*step), 0.0) for step in steps)
    shown = [(model.incident(r).id, int(model.incident(r).severity)) for r in range(model.rowCount())]
    assert shown == _expected(steps)


def test_an_update_changes_its_row_in_place_and_evidence_changes_nothing(qapp) -> None:  # type: ignore[no-untyped-def]
    model = OpenIncidentsModel()
    first, second = _incident(1, 3, 5, False), _incident(2, 3, 5, False)
    model.apply([IncidentChange(ChangeKind.OPENED, first, 0.0), IncidentChange(ChangeKind.OPENED, second, 0.0)])
    counted = dataclasses.replace(second, count=7)
    model.apply([IncidentChange(ChangeKind.UPDATED, counted, 0.0)])
    model.apply([IncidentChange(ChangeKind.EVIDENCE, dataclasses.replace(first, count=99), 0.0)])
    assert [model.incident(r) for r in range(model.rowCount())] == [first, counted]
