"""The workload in the window: on the GPU row of the fleet panel, in the incident detail, and as a filter of the
incident log (the filter bar's field, the store's query and ``incidents list --workload``)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from pytestqt.qtbot import QtBot

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.incidents.model import ChangeKind, IncidentChange
from console.live.fleet_state import FleetState
from console.samples.results import PollResult
from console.samples.schema import JobWorkload, NodeSample, PodWorkload, ProcessWorkload
from console.store import IncidentFilter, IncidentStore
from tests.helpers.builders import h100_dcgm_sample, make_incident
from widgets.live.fleet_panel import FleetPanel
from widgets.review.detail import IncidentDetail
from widgets.review.filters import IncidentFilterBar

POD = PodWorkload(namespace="ml-team", pod="llama-train-0", container="pytorch")
JOB = JobWorkload(id="4711")


def test_the_gpu_row_names_its_workload_and_the_tooltip_lists_all(qtbot: QtBot) -> None:
    spec = (SourceSpec(SourceKind.DCGM, url="http://127.0.0.1:9400/metrics"),)
    state = FleetState(Fleet((Site("aws-use1", "aws"),), (Node("a", "aws-use1", spec),)))
    gpus = list(h100_dcgm_sample("a").gpus)
    gpus[0] = replace(gpus[0], workload=(POD, JOB, ProcessWorkload(4242, "python3", 2048.0)))
    gpus[1] = replace(gpus[1], workload=())
    sample = NodeSample("a", "aws-use1", "dcgm", time.time(), tuple(gpus))
    state.apply_result(PollResult("a", "aws-use1", time.time(), 0.01, sample))
    panel = FleetPanel(state)
    qtbot.addWidget(panel)
    panel.refresh()
    model = panel.model
    node = model.node_index("a")
    busy, idle, unknown = (model.index(row, 0, node) for row in range(3))
    detail = busy.siblingAtColumn(5).data()
    assert "pod ml-team/llama-train-0 (pytorch), job 4711, +1 more" in detail
    tooltip = busy.data(3)  # ToolTipRole
    assert "pid 4242 python3, 2048 MiB" in tooltip
    assert "pod" not in idle.siblingAtColumn(5).data() and "no workload" in idle.data(3)
    assert "workload" not in unknown.data(3)  # a source that cannot tell adds nothing


def test_the_detail_shows_the_workload_and_the_log_filters_by_it(qtbot: QtBot, tmp_path: Path) -> None:
    hit = replace(make_incident("hit", 1_800_000_000.0), workload=(POD,))
    other = replace(make_incident("other", 1_800_000_100.0), workload=(JOB,))
    blind = make_incident("blind", 1_800_000_200.0)
    detail = IncidentDetail()
    qtbot.addWidget(detail)
    detail.show_incident(hit)
    assert detail.fields["Workload"].text() == "pod ml-team/llama-train-0 (pytorch)"
    detail.show_incident(blind)
    assert detail.fields["Workload"].text() == "workload unknown"

    bar = IncidentFilterBar()
    qtbot.addWidget(bar)
    bar.choose_time_range("All time")
    bar.fields["workload"].setText("LLAMA-train")
    flt = bar.current_filter()
    assert flt.workload == "LLAMA-train"
    with IncidentStore.open(tmp_path / "log.sqlite3") as store:
        store.submit([IncidentChange(ChangeKind.OPENED, i, i.opened_at) for i in (hit, other, blind)])
        store.flush()
        assert [i.id for i in store.query(flt).incidents] == ["hit"]
        assert [i.id for i in store.query(IncidentFilter(workload="4711")).incidents] == ["other"]
        assert len(store.query(IncidentFilter()).incidents) == 3
