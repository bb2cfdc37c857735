"""The incident log as faults (issue 13): root incidents by default with scope, member nodes and symptom count;
a root's symptoms listed in its detail and a click away; the evidence chart leads with the signal the rule fired on
(coolant flow, the GPU's own temperature), one line per member node for a rack incident; no raw epoch numbers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from console.incidents.model import ChangeKind, EvidencePoint, Incident, IncidentChange, Scope, Severity
from console.samples.codec import sample_to_json
from console.samples.schema import ChassisSample, GpuSample, NodeSample
from console.store import IncidentStore
from tests.helpers.builders import make_incident
from widgets.review.log_window import IncidentLogWindow
from widgets.review.table import COLUMNS

T0 = 1_750_000_000.0  # 15:06:40 UTC
WAIT_MS = 10_000
RACK_NODES = ("node-1", "node-2", "node-3")


def _node_incident(incident_id: str, node: str, **fields: Any) -> Incident:
    values: dict[str, Any] = {
        "node": node,
        "gpu_index": None,
        "rule": "coolant_flow_low",
        "code": "",
        "kind": "cooling",
        "severity": Severity.MAJOR,
        "title": f"Coolant flow at 40% of rated on {node}",
        "detail": "flow 12.0 of rated 30 L/min; held for 60 s since 1750000000",
        "recommended_action": "Check the loop's pump and valves",
    }
    return make_incident(incident_id, T0, **{**values, **fields})


def _rack() -> Incident:
    return _node_incident(
        "rack",
        "node-1",
        scope=Scope.RACK,
        scope_name="R01",
        nodes=RACK_NODES,
        title="Coolant flow low on 3 nodes of rack R01",
        severity=Severity.CRITICAL,
    )


def _sample(node: str, t: float, *, flow: float, temps: tuple[float, ...] = (60.0, 61.0)) -> str:
    gpus = tuple(GpuSample(index=i, uuid=f"GPU-{node}-{i}", temperature_c=temp) for i, temp in enumerate(temps))
    chassis = ChassisSample(coolant_flow_lpm=flow, coolant_flow_rated_lpm=30.0, inlet_c=25.0)
    return json.dumps(
        sample_to_json(NodeSample(node=node, site="iad", source="test", time=t, gpus=gpus, chassis=chassis))
    )


def _points(incident_id: str, node: str, flows: list[float], **kw: Any) -> tuple[EvidencePoint, ...]:
    return tuple(
        EvidencePoint(incident_id, T0 - 30 + 10 * i, _sample(node, T0 - 30 + 10 * i, flow=flow, **kw))
        for i, flow in enumerate(flows)
    )


def _opened(incident: Incident, evidence: tuple[EvidencePoint, ...] = ()) -> IncidentChange:
    return IncidentChange(ChangeKind.OPENED, incident, incident.opened_at, evidence=evidence)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    with IncidentStore.open(tmp_path / "incidents.sqlite3") as opened_store:
        yield opened_store


@pytest.fixture
def open_window(qtbot: QtBot, store: IncidentStore) -> Iterator[Callable[[], IncidentLogWindow]]:
    windows: list[IncidentLogWindow] = []

    def factory() -> IncidentLogWindow:
        store.flush()
        window = IncidentLogWindow(store, lambda *_: None, lambda *_: None)
        qtbot.addWidget(window)
        windows.append(window)
        window.show()
        qtbot.waitUntil(lambda: not window.loading, timeout=WAIT_MS)
        return window

    yield factory
    for window in windows:
        window.shutdown()


def _cell(window: IncidentLogWindow, row: int, column: str) -> str:
    return str(window.model.data(window.model.index(row, COLUMNS.index(column))))


def _select(qtbot: QtBot, window: IncidentLogWindow, incident_id: str) -> None:
    row = window.model.row_of(incident_id)
    assert row is not None, f"{incident_id} is not in the table"
    with qtbot.waitSignal(window.detail_loaded, timeout=WAIT_MS):
        window.select_row(row)


def _write_rack(store: IncidentStore) -> list[Incident]:
    rack = _rack()
    children = [_node_incident(f"flow-{node}", node, parent_id="rack") for node in RACK_NODES]
    other = make_incident("xid", T0 - 100, node="node-9")
    store.submit(
        [
            _opened(other),
            _opened(rack, _points("rack", "node-1", [30.0, 12.0, 11.0, 10.0])),
            *(
                _opened(child, _points(child.id, child.context.node, [29.0, 14.0 + n, 13.0, 12.0]))
                for n, child in enumerate(children)
            ),
        ]
    )
    store.flush()
    return children


def test_the_log_shows_roots_by_default_with_scope_nodes_and_symptom_count(
    qtbot: QtBot, store: IncidentStore, open_window: Callable[[], IncidentLogWindow]
) -> None:
    children = _write_rack(store)
    window = open_window()
    ids = [incident.id for incident in window.model.incidents()]
    assert ids == ["rack", "xid"]  # one row per fault, newest first
    assert _cell(window, 0, "Scope") == "rack R01"
    assert _cell(window, 0, "Nodes") == "3 nodes: node-1, node-2, node-3"
    assert _cell(window, 0, "Symptoms") == "3"
    assert _cell(window, 1, "Symptoms") == "" and _cell(window, 1, "Scope") == "GPU 0"
    assert window.total == 2

    window.filters.show_symptoms.setChecked(True)  # every incident, symptoms included
    window.apply_filters()
    qtbot.waitUntil(lambda: not window.loading, timeout=WAIT_MS)
    assert sorted(incident.id for incident in window.model.incidents()) == sorted(
        ["rack", "xid", *(c.id for c in children)]
    )
    row = window.model.row_of("flow-node-2")
    assert row is not None and _cell(window, row, "Title").startswith("↳ ")


def test_the_detail_of_a_root_lists_its_symptoms_and_a_click_opens_one(
    qtbot: QtBot, store: IncidentStore, open_window: Callable[[], IncidentLogWindow]
) -> None:
    children = _write_rack(store)
    window = open_window()
    _select(qtbot, window, "rack")
    box = window.detail.symptoms
    assert box.isVisible()
    assert sorted(box.symptom_ids()) == sorted(c.id for c in children)
    assert window.detail.fields["Symptoms"].text() == "3 (3 open)"
    assert window.detail.fields["Scope"].text() == "rack R01"

    with qtbot.waitSignal(window.detail_loaded, timeout=WAIT_MS):
        box.choose("flow-node-2")  # not a row of the log (symptoms hidden): opened straight in the pane
    assert window.detail.incident is not None and window.detail.incident.id == "flow-node-2"
    assert box.cause_label.isVisible() and "rack R01" in box.cause_label.text()
    with qtbot.waitSignal(window.detail_loaded, timeout=WAIT_MS):
        box.cause_button.click()
    assert window.detail.incident is not None and window.detail.incident.id == "rack"


def test_a_rack_incident_charts_one_line_per_member_node(
    qtbot: QtBot, store: IncidentStore, open_window: Callable[[], IncidentLogWindow]
) -> None:
    _write_rack(store)
    window = open_window()
    _select(qtbot, window, "rack")
    chart = window.detail.chart
    lines = chart.signal_lines()
    assert list(lines) == list(RACK_NODES)
    assert list(lines["node-1"][1]) == [30.0, 12.0, 11.0, 10.0]  # the rack's own evidence
    assert list(lines["node-3"][1]) == [29.0, 16.0, 13.0, 12.0]  # read from node-3's symptom
    assert chart.plots["signal"].titleLabel.text == "Coolant flow"
    assert chart.reference_line.isVisible() and chart.reference_line.value() == 30.0


def test_a_coolant_incident_charts_the_coolant_flow(
    qtbot: QtBot, store: IncidentStore, open_window: Callable[[], IncidentLogWindow]
) -> None:
    incident = _node_incident("flow", "node-5")
    store.submit([_opened(incident, _points("flow", "node-5", [28.0, 20.0, 9.0]))])
    window = open_window()
    _select(qtbot, window, "flow")
    lines = window.detail.chart.signal_lines()
    assert list(lines) == ["node-5"]
    x, y = lines["node-5"]
    assert list(y) == [28.0, 20.0, 9.0] and list(x) == [T0 - 30, T0 - 20, T0 - 10]
    assert "Coolant flow" in window.detail.chart.caption.text()


def test_a_gpu_thermal_incident_charts_that_gpus_temperature_not_gpu_0s(
    qtbot: QtBot, store: IncidentStore, open_window: Callable[[], IncidentLogWindow]
) -> None:
    incident = make_incident(
        "hot", T0, node="node-7", gpu_index=1, rule="hw_thermal_slowdown", code="", kind="thermal", title="GPU 1 hot"
    )
    store.submit([_opened(incident, _points("hot", "node-7", [30.0, 30.0], temps=(40.0, 91.0)))])
    window = open_window()
    _select(qtbot, window, "hot")
    lines = window.detail.chart.signal_lines()
    assert list(lines) == ["node-7 GPU 1"]
    assert list(lines["node-7 GPU 1"][1]) == [91.0, 91.0]
    assert np.allclose(window.detail.chart.curves["temperature_c"].getData()[1], [91.0, 91.0])


def test_titles_and_details_never_show_raw_epoch_numbers(
    qtbot: QtBot, store: IncidentStore, open_window: Callable[[], IncidentLogWindow]
) -> None:
    incident = replace(_node_incident("flow", "node-5"), title="Stale since 1750000000")
    store.submit([_opened(incident)])
    window = open_window()
    assert _cell(window, 0, "Title") == "Stale since 15:06:40 UTC"
    _select(qtbot, window, "flow")
    shown = [window.detail.title.text(), window.detail.detail_text.text()]
    assert all("1750000000" not in text for text in shown)
    assert "held for 60 s since 15:06:40 UTC" in window.detail.detail_text.text()
