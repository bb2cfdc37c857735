"""The open-incident list as faults (issue 13): roots on top with their scope, member nodes and symptom count,
symptoms beneath them; a symptom that arrives before its cause waits at the top level and then moves under it.
Qt's own model tester watches every change, so a wrong insert, move or parent would fail here."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QModelIndex
from PySide6.QtTest import QAbstractItemModelTester

from console.incidents.model import ChangeKind, Incident, IncidentChange, IncidentContext, Scope, Severity, Status
from widgets.live.incident_tree import COLUMNS
from widgets.live.open_incidents import OpenIncidentsModel


def _incident(incident_id: str, *, parent: str | None = None, severity: int = 3, opened_at: float = 0.0, **fields):  # type: ignore[no-untyped-def]
    return Incident(
        id=incident_id,
        rule=fields.pop("rule", "hw_thermal_slowdown"),
        code="",
        kind=fields.pop("kind", "thermal"),
        severity=Severity(severity),
        status=fields.pop("status", Status.OPEN),
        title=fields.pop("title", f"incident {incident_id}"),
        detail="",
        context=fields.pop("context", IncidentContext("site-a", "aws", "node-1", "GPU-1-3", 3)),
        opened_at=opened_at,
        last_seen_at=opened_at,
        parent_id=parent,
        **fields,
    )


def _opened(incident: Incident) -> IncidentChange:
    return IncidentChange(ChangeKind.OPENED, incident, incident.opened_at)


def _cell(model: OpenIncidentsModel, index: QModelIndex, column: str) -> str:
    return str(model.data(model.index(index.row(), COLUMNS.index(column), index.parent())))


def _tree(model: OpenIncidentsModel, parent: QModelIndex | None = None) -> list[tuple[str, list]]:  # type: ignore[type-arg]
    parent = parent or QModelIndex()
    rows = []
    for row in range(model.rowCount(parent)):
        index = model.index(row, 0, parent)
        assert model.parent(index) == parent
        rows.append((model.incident_at(index).id, _tree(model, index)))
    return rows


def _rack(incident_id: str = "rack") -> Incident:
    return _incident(
        incident_id,
        rule="coolant_flow_low",
        kind="cooling",
        title="Coolant flow low on rack R01",
        severity=4,
        opened_at=100.0,
        context=IncidentContext("site-a", "aws", "node-1"),
        scope=Scope.RACK,
        scope_name="R01",
        nodes=("node-1", "node-2", "node-3", "node-4"),
    )


def test_a_root_with_symptoms_is_one_row_with_its_count_and_expands_to_them(qapp) -> None:  # type: ignore[no-untyped-def]
    model = OpenIncidentsModel()
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    root = _rack()
    node_causes = [
        _incident(f"flow-{n}", parent="rack", rule="coolant_flow_low", kind="cooling", opened_at=100.0 + n)
        for n in (1, 2)
    ]
    symptoms = [_incident(f"slow-{g}", parent="flow-1", opened_at=110.0 + g) for g in range(3)]
    model.apply(_opened(i) for i in (root, *node_causes, *symptoms))

    assert model.rowCount() == 1 and model.fault_count == 1 and len(model) == 6
    top = model.index(0, 0)
    assert model.incident_at(top).id == "rack"
    assert _cell(model, top, "Scope") == "rack R01"
    assert _cell(model, top, "Nodes") == "4 nodes: node-1, node-2, node-3 +1"
    assert _cell(model, top, "Symptoms") == "2"  # its own symptoms, as the incident log and the CLI count them
    assert model.hasChildren(top)
    assert _tree(model) == [("rack", [("flow-2", []), ("flow-1", [("slow-2", []), ("slow-1", []), ("slow-0", [])])])]
    flow_1 = model.index(1, 0, top)
    assert _cell(model, flow_1, "Symptoms") == "3"
    assert _cell(model, model.index(0, 0, flow_1), "Scope") == "GPU 3"
    # a symptom resolves: its cause's count drops
    model.apply([IncidentChange(ChangeKind.RESOLVED, dataclasses.replace(symptoms[0], status=Status.RESOLVED), 200)])
    assert _cell(model, model.index(0, 0), "Symptoms") == "2"
    assert _cell(model, model.index(1, 0, model.index(0, 0)), "Symptoms") == "2"
    del tester


def test_a_symptom_arriving_before_its_parent_waits_on_top_then_moves_under_it(qapp) -> None:  # type: ignore[no-untyped-def]
    model = OpenIncidentsModel()
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    symptom = _incident("slow", parent="flow", severity=3, opened_at=50.0)
    other = _incident("xid", severity=2, opened_at=10.0)
    model.apply([_opened(symptom), _opened(other)])
    assert _tree(model) == [("slow", []), ("xid", [])]  # shown: nothing is hidden while its cause is unknown
    cause = _incident("flow", severity=4, opened_at=40.0, rule="coolant_flow_low", kind="cooling")
    model.apply([_opened(cause)])
    assert _tree(model) == [("flow", [("slow", [])]), ("xid", [])]
    assert model.fault_count == 2 and _cell(model, model.index(0, 0), "Symptoms") == "1"
    assert model.parent(model.index_of("slow")) == model.index(0, 0)
    # the parent set later on an existing incident (an UPDATED change) moves it too
    model.apply([IncidentChange(ChangeKind.UPDATED, dataclasses.replace(other, parent_id="flow"), 60.0)])
    assert _tree(model) == [("flow", [("slow", []), ("xid", [])])]
    # the cause resolves first: its open symptoms come back to the top level, nothing is lost
    model.apply([IncidentChange(ChangeKind.RESOLVED, dataclasses.replace(cause, status=Status.RESOLVED), 70.0)])
    assert _tree(model) == [("slow", []), ("xid", [])]
    del tester


def test_the_symptom_cells_update_alone_and_updates_repaint_one_row(qapp, qtbot) -> None:  # type: ignore[no-untyped-def]
    model = OpenIncidentsModel()
    root = _rack()
    model.apply([_opened(root)])
    changed: list[tuple[int, int, int]] = []
    model.dataChanged.connect(
        lambda first, last, _roles=(): changed.append((first.row(), first.column(), last.column()))
    )
    model.apply([_opened(_incident("flow-1", parent="rack", opened_at=101.0))])
    symptoms_column = COLUMNS.index("Symptoms")
    assert changed == [(0, symptoms_column, symptoms_column)]
    changed.clear()
    model.apply([IncidentChange(ChangeKind.UPDATED, dataclasses.replace(root, count=9), 120.0)])
    count_column = COLUMNS.index("Count")
    assert changed == [(0, count_column, count_column)]  # only the cell that changed
    changed.clear()
    model.apply([IncidentChange(ChangeKind.UPDATED, dataclasses.replace(root, count=9, last_seen_at=130.0), 130.0)])
    assert changed == []  # nothing shown changed
    assert _cell(model, model.index(0, 0), "Count") == "9"


_step = st.tuples(
    st.integers(0, 7),  # incident number
    st.one_of(st.none(), st.integers(0, 7)),  # parent number
    st.integers(1, 4),  # severity
    st.integers(0, 2),  # opened_at
    st.booleans(),  # resolved
)


@settings(max_examples=120, deadline=None)
@given(st.lists(_step, min_size=1, max_size=50))
def test_any_order_of_changes_keeps_a_consistent_sorted_tree(qapp, steps) -> None:  # type: ignore[no-untyped-def]
    model = OpenIncidentsModel()
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    held: dict[str, Incident] = {}
    for number, parent, severity, opened_at, resolved in steps:
        incident = _incident(
            f"i{number}",
            parent=None if parent is None or parent == number else f"i{parent}",
            severity=severity,
            opened_at=float(opened_at),
            status=Status.RESOLVED if resolved else Status.OPEN,
        )
        model.apply([IncidentChange(ChangeKind.UPDATED, incident, 0.0)])
        if resolved:
            held.pop(incident.id, None)
        else:
            held[incident.id] = incident
    shown = list(model.walk())
    assert sorted(i.id for _, i in shown) == sorted(held)
    for depth, incident in shown:  # each level sorted worst first, newest first
        index = model.index_of(incident.id)
        parent = model.parent(index)
        if depth:
            assert model.incident_at(parent).id == incident.parent_id
        elif incident.parent_id in held:  # on top although its parent is shown: only to break a cycle
            assert model.index_of(incident.parent_id).isValid()
        keys = [
            (
                -int(model.incident_at(model.index(r, 0, parent)).severity),
                -model.incident_at(model.index(r, 0, parent)).opened_at,
            )
            for r in range(model.rowCount(parent))
        ]
        assert keys == sorted(keys)
    for _, incident in shown:  # its count is the rows directly beneath it
        assert model.symptom_count(incident.id) == model.rowCount(model.index_of(incident.id))
    total = sum(model.symptom_count(i.id) for _, i in shown)
    assert total + model.fault_count == len(model) == len(held)
    del tester


def test_a_silenced_fault_stays_listed_dimmed_with_its_silence_said() -> None:
    from PySide6.QtCore import Qt

    from console.notify.silences import SilenceMark, SilenceSource
    from widgets.live.incident_tree import SILENCED_COLOR

    model = OpenIncidentsModel()
    model.apply([_opened(_incident("muted", opened_at=1.0)), _opened(_incident("loud", opened_at=2.0))])
    mark = SilenceMark("s-1", "PSU swap, OPS-7", 1_800_000_000.0, "alice", SilenceSource.ALERTMANAGER)
    model.silence_of = lambda incident: mark if incident.id == "muted" else None
    model.refresh_silences()
    by_id = {model.incident(row).id: model.index(row, 0) for row in range(model.rowCount())}
    muted, loud = by_id["muted"], by_id["loud"]
    assert _cell(model, muted, "Status") == "silenced" and _cell(model, loud, "Status") == "open"
    title = model.index(muted.row(), COLUMNS.index("Title"))
    assert model.data(title, Qt.ItemDataRole.ForegroundRole).color().name() == SILENCED_COLOR
    tooltip = model.data(title, Qt.ItemDataRole.ToolTipRole)
    assert "Silenced until 2027-01-15 08:00 UTC by alice (alertmanager): PSU swap, OPS-7" in tooltip
    assert "Silenced" not in model.data(model.index(loud.row(), 1), Qt.ItemDataRole.ToolTipRole)
