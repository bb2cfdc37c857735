"""The fleet panel: a real FleetPanel over a real FleetState fed PollResults, as the window feeds it. Texts, colours
and tooltips are read through the model's indexes (what the view paints); clicks go through the real view."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from PySide6.QtCore import QEvent, QModelIndex, QObject, QPersistentModelIndex, Qt
from pytestqt.modeltest import ModelTester
from pytestqt.qtbot import QtBot

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.live.fleet_state import FleetState, NodeStatus
from console.samples.results import PollFailure, PollResult, SourceFailure
from console.samples.schema import MAX_GPUS_PER_NODE, GpuSample, NodeSample
from tests.helpers.builders import h100_dcgm_sample
from widgets.common.style import STATUS_COLORS
from widgets.live.fleet_panel import COLUMNS, GPU_ROLE, NODE_ROLE, FleetPanel

SPEC = (SourceSpec(SourceKind.DCGM, url="http://127.0.0.1:9400/metrics"),)
INSECURE = (SourceSpec(SourceKind.DCGM, url="https://10.1.2.3:9400/metrics", verify_tls=False),)
TOOLTIP = Qt.ItemDataRole.ToolTipRole
FOREGROUND = Qt.ItemDataRole.ForegroundRole


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fleet() -> Fleet:
    """Sites listed out of name order; 'lab' has a node with TLS verification off."""
    return Fleet(
        (Site("lab", "onprem"), Site("aws-use1", "aws", region="us-east-1"), Site("empty", "gcp")),
        (
            Node("d", "aws-use1", SPEC),
            Node("a", "aws-use1", SPEC),
            Node("c", "aws-use1", SPEC),
            Node("b", "aws-use1", SPEC),
            Node("insecure", "lab", INSECURE),
        ),
    )


def _gpus(node: str, count: int = 8) -> tuple[GpuSample, ...]:
    return h100_dcgm_sample(node, count).gpus


def _feed(
    state: FleetState, node: str, gpus: tuple[GpuSample, ...] | None = None, latency_s: float = 0.012
) -> NodeSample:
    site = state.nodes[node].site
    sample = NodeSample(
        node=node, site=site, source="dcgm", time=time.time(), gpus=_gpus(node) if gpus is None else gpus
    )
    state.apply_result(PollResult(node, site, time.time(), latency_s, sample))
    return sample


def _fail(state: FleetState, node: str, reason: str) -> None:
    site = state.nodes[node].site
    failure = SourceFailure("dcgm http://127.0.0.1:9400/metrics", PollFailure.TIMEOUT, reason)
    state.apply_result(PollResult(node, site, time.time(), 3.0, None, failures=(failure,)))


def _lose_gpu(state: FleetState, node: str, index: int) -> None:
    _feed(state, node, tuple(replace(g, lost=True) if g.index == index else g for g in _gpus(node)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> FleetState:
    state = FleetState(_fleet(), clock=clock)
    for node in ("a", "b", "c", "d", "insecure"):
        _feed(state, node)
    return state


@pytest.fixture
def panel(qtbot: QtBot, state: FleetState) -> FleetPanel:
    panel = FleetPanel(state)
    qtbot.addWidget(panel)
    panel.resize(900, 500)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def _row_texts(index: QModelIndex) -> list[str]:
    return [str(index.siblingAtColumn(column).data()) for column in range(len(COLUMNS))]


def _listed(panel: FleetPanel, site: str) -> list[str]:
    model = panel.view.model()
    parent = next(model.index(r, 0) for r in range(model.rowCount()) if model.index(r, 0).data().startswith(site))
    return [model.index(r, 0, parent).data() for r in range(model.rowCount(parent))]


def _colour(index: QModelIndex) -> str:
    return str(index.data(FOREGROUND).color().name())


def test_sites_by_name_and_nodes_by_name_while_all_are_ok(panel: FleetPanel) -> None:
    model = panel.view.model()
    assert [model.index(r, 0).data() for r in range(model.rowCount())] == [
        "aws-use1  (aws, us-east-1)",
        "empty  (gcp)",
        "lab  (onprem)",
    ]
    assert _listed(panel, "aws-use1") == ["a", "b", "c", "d"]
    assert model.headerData(3, Qt.Orientation.Horizontal) == "Power W"


def test_worst_first_order_follows_status_and_the_selected_row_stays_selected(
    panel: FleetPanel, state: FleetState, qtbot: QtBot
) -> None:
    model = panel.model
    panel.view.expand(model.node_index("a"))
    panel.view.setCurrentIndex(model.node_index("c"))
    layouts: list[None] = []
    model.layoutChanged.connect(lambda *_: layouts.append(None))
    for node in ("a", "b", "c", "d"):
        _feed(state, node)  # new values, same statuses: the order stays and no relayout happens
    panel.refresh()
    assert layouts == []

    _lose_gpu(state, "b", 2)
    _fail(state, "d", "no answer in 3 s")
    panel.refresh()

    assert _listed(panel, "aws-use1") == ["d", "b", "a", "c"]
    assert len(layouts) == 1
    assert _row_texts(model.node_index("d"))[1] == "unreachable"
    assert _row_texts(model.node_index("b"))[1] == "critical"
    assert _colour(model.node_index("b", 1)) == STATUS_COLORS[NodeStatus.CRITICAL]
    current = panel.view.currentIndex()
    assert current.data() == "c" and current.row() == 3, "the operator's selection moved with its row"
    assert [i.data() for i in panel.view.selectionModel().selectedRows()] == ["c"]
    assert panel.view.isExpanded(model.node_index("a")), "an expanded node stays expanded after a reorder"

    _feed(state, "d")  # back: ok again, listed by name once more
    _feed(state, "b")
    panel.refresh()
    assert _listed(panel, "aws-use1") == ["a", "b", "c", "d"]
    assert panel.view.currentIndex().data() == "c"


def test_a_selected_gpu_row_stays_selected_when_its_node_moves(panel: FleetPanel, state: FleetState) -> None:
    model = panel.model
    uuid = _gpus("c")[5].uuid
    panel.reveal("c", uuid)
    _fail(state, "c", "connection refused")
    panel.refresh()
    assert _listed(panel, "aws-use1")[0] == "c"
    current = panel.view.currentIndex()
    assert (current.data(NODE_ROLE), current.data(GPU_ROLE)) == ("c", uuid)
    assert current == model.gpu_index("c", uuid)
    assert panel.view.isExpanded(model.node_index("c"))


def test_an_expanded_node_shows_its_gpu_rows_with_their_values(panel: FleetPanel, state: FleetState) -> None:
    model = panel.model
    _feed(state, "a", tuple(reversed(_gpus("a"))), latency_s=0.0123)  # listed out of order by the exporter
    _lose_gpu(state, "b", 4)
    panel.refresh()
    node = model.node_index("a")
    panel.view.expand(node)
    assert panel.view.isExpanded(node)
    assert _row_texts(node) == ["a", "ok", "66", "5084", "96", "8 GPUs, polled in 12 ms"]
    assert _colour(node.siblingAtColumn(1)) == STATUS_COLORS[NodeStatus.OK]
    rows = [_row_texts(model.index(r, 0, node)) for r in range(model.rowCount(node))]
    assert [r[0] for r in rows] == [f"GPU {i}  NVIDIA H100 80GB HBM3" for i in range(8)], "by index"
    assert rows[0] == ["GPU 0  NVIDIA H100 80GB HBM3", "ok", "59", "632", "100", "margin 26 °C, no throttle"]
    assert rows[7] == ["GPU 7  NVIDIA H100 80GB HBM3", "ok", "66", "639", "93", "margin 19 °C, sw_power_cap"]
    lost = model.gpu_index("b", _gpus("b")[4].uuid, 1)
    assert lost.data() == "lost" and _colour(lost) == STATUS_COLORS[NodeStatus.CRITICAL]

    # new values reach the expanded rows (and the view repaints) at the next refresh
    refreshes: list[None] = []
    model.refreshed.connect(lambda: refreshes.append(None))
    _feed(state, "a", tuple(replace(g, temperature_c=81.0) for g in _gpus("a")))
    panel.refresh()
    assert model.index(3, 2, node).data() == "81" and node.siblingAtColumn(2).data() == "81"
    assert refreshes == [None]


def test_a_refresh_repaints_the_view_only_when_something_changed(
    panel: FleetPanel, state: FleetState, qtbot: QtBot
) -> None:
    model = panel.model
    refreshes: list[None] = []
    model.refreshed.connect(lambda: refreshes.append(None))
    painted: list[None] = []
    panel.view.viewport().installEventFilter(filter_ := _PaintCounter(painted))
    qtbot.wait(50)
    painted.clear()
    panel.refresh()
    qtbot.wait(50)
    assert refreshes == [] and painted == [], "nothing moved: nothing to repaint"
    _feed(state, "c", tuple(replace(g, power_w=100.0) for g in _gpus("c")))
    assert model.node_index("c", 3).data() == "800", "cells are live: the state's current values"
    panel.refresh()
    qtbot.waitUntil(lambda: bool(painted), timeout=2000)
    assert refreshes == [None]
    panel.view.viewport().removeEventFilter(filter_)


class _PaintCounter(QObject):
    def __init__(self, painted: list[None]) -> None:
        super().__init__()
        self._painted = painted

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self._painted.append(None)
        return False


def test_a_node_losing_gpus_drops_their_rows_and_keeps_the_rest(
    panel: FleetPanel, state: FleetState, clock: Clock, qtmodeltester: ModelTester
) -> None:
    model = panel.model
    qtmodeltester.check(model)  # Qt's model checker also watches every insert, removal and relayout below
    node = model.node_index("a")
    panel.view.expand(node)
    first_set = [g.uuid for g in _gpus("a")]
    # Each poll reports eight new UUIDs (a re-enumerating node); the state keeps MAX_GPUS_PER_NODE of them.
    batches = MAX_GPUS_PER_NODE // 8 + 1
    for batch in range(1, batches):
        clock.now += 0.1  # the newest batch is the last seen; well short of the other nodes going stale
        gpus = tuple(replace(g, uuid=f"GPU-a-{batch}-{g.index}", index=8 * batch + g.index) for g in _gpus("a"))
        _feed(state, "a", gpus)
        panel.refresh()
        if batch == 1:
            assert model.rowCount(node) == 16, "new GPUs appear under their node"
            kept = model.gpu_index("a", "GPU-a-1-3")
            panel.view.setCurrentIndex(kept)
    assert len(state.nodes["a"].gpus) == MAX_GPUS_PER_NODE
    assert model.rowCount(node) == MAX_GPUS_PER_NODE
    uuids = [model.index(r, 0, node).data(GPU_ROLE) for r in range(model.rowCount(node))]
    assert not set(first_set) & set(uuids), "the oldest GPUs' rows are gone"
    assert all(not model.gpu_index("a", uuid).isValid() for uuid in first_set)
    assert model.index(0, 0, node).data() == "GPU 8  NVIDIA H100 80GB HBM3"
    assert panel.view.currentIndex().data(GPU_ROLE) == "GPU-a-1-3", "the selected GPU survived the removals"
    counts = model.index(0, len(COLUMNS) - 1).data()
    assert counts == f"4 nodes, {3 * 8 + MAX_GPUS_PER_NODE} GPUs"


def test_a_gpu_whose_index_changed_moves_to_its_place_and_stays_selected(
    panel: FleetPanel, state: FleetState, qtmodeltester: ModelTester
) -> None:
    model = panel.model
    qtmodeltester.check(model)
    node = model.node_index("a")
    panel.view.expand(node)
    gpus = _gpus("a")
    panel.view.setCurrentIndex(model.gpu_index("a", gpus[0].uuid))
    swapped = tuple(replace(g, index={0: 6, 6: 0}.get(g.index, g.index)) for g in gpus)
    _feed(state, "a", swapped)
    panel.refresh()
    assert model.index(0, 0, node).data(GPU_ROLE) == gpus[6].uuid
    assert model.index(6, 0, node).data(GPU_ROLE) == gpus[0].uuid
    assert model.index(6, 0, node).data() == "GPU 6  NVIDIA H100 80GB HBM3"
    current = panel.view.currentIndex()
    assert current.data(GPU_ROLE) == gpus[0].uuid and current.row() == 6


def test_site_rows_count_nodes_by_status_worst_colour_first(panel: FleetPanel, state: FleetState) -> None:
    model = panel.model
    _fail(state, "d", "no answer in 3 s")
    _lose_gpu(state, "b", 0)
    panel.refresh()
    aws = model.site_index("aws-use1")
    assert _row_texts(aws) == [
        "aws-use1  (aws, us-east-1)",
        "1 unreachable · 1 critical · 2 ok",
        "",
        "",
        "",
        "4 nodes, 32 GPUs",
    ]
    assert _colour(aws.siblingAtColumn(1)) == STATUS_COLORS[NodeStatus.UNREACHABLE]
    lab = model.site_index("lab")
    assert lab.siblingAtColumn(1).data() == "1 ok" and _colour(lab.siblingAtColumn(1)) == STATUS_COLORS[NodeStatus.OK]
    assert model.site_index("empty").siblingAtColumn(1).data() == "no nodes"
    assert model.site_index("empty").siblingAtColumn(5).data() == "0 nodes, 0 GPUs"
    assert model.site_counts[0].site == "lab" and {c.site for c in model.site_counts} == {"lab", "aws-use1", "empty"}
    assert model.statuses["d"] == "unreachable" and model.statuses["a"] == "ok"


def test_tooltips_and_details_say_what_the_operator_needs(panel: FleetPanel, state: FleetState) -> None:
    model = panel.model
    started = time.time() - 30
    sample = _feed(state, "a")
    site = state.nodes["a"].site
    # the exporter has not collected since: the same sample object again, 12 s later
    state.apply_result(PollResult("a", site, started, 0.01, sample, fresh=True))
    state.apply_result(PollResult("a", site, started + 12, 0.01, sample, fresh=False))
    _fail(state, "d", "answered <b>503</b>")
    panel.refresh()

    tip = model.node_index("a", 5).data(TOOLTIP)
    last_ok = time.strftime("%H:%M:%S UTC", time.gmtime(started + 12))
    assert f"sources: dcgm http://127.0.0.1:9400/metrics<br>last success: {last_ok}" in tip
    assert "last poll latency: 10 ms" in tip and "last error: none" in tip
    assert "values unchanged for 12 s (the exporter has not collected since)" in tip
    assert model.node_index("a", 0).data(TOOLTIP) is None
    assert "values unchanged" not in model.node_index("b", 5).data(TOOLTIP)

    down = model.node_index("d", 5)
    assert down.data() == "dcgm http://127.0.0.1:9400/metrics: timeout: answered <b>503</b>", "plain text"
    assert "last error: dcgm http://127.0.0.1:9400/metrics: timeout: answered &lt;b&gt;503&lt;/b&gt;" in (
        down.data(TOOLTIP)
    ), "a tooltip shows node text escaped, never as markup"

    insecure = model.node_index("insecure", 5)
    assert insecure.data() == "8 GPUs, polled in 12 ms · TLS verification off"
    assert "TLS verification off for https://10.1.2.3:9400/metrics" in insecure.data(TOOLTIP)
    assert "TLS" not in model.node_index("a", 5).data()

    gpu = _gpus("a")[2]
    gpu_tip = model.gpu_index("a", gpu.uuid).data(TOOLTIP)
    assert gpu_tip == (
        f"<p style='white-space:pre'>{gpu.uuid}<br>NVIDIA H100 80GB HBM3<br>serial 1652323000002<br>"
        "PCI 00000000:55:00.0</p>"
    )
    assert model.gpu_index("a", gpu.uuid, 3).data(TOOLTIP) is None


def test_reveal_expands_selects_and_scrolls_to_a_gpu_row(qtbot: QtBot, clock: Clock) -> None:
    nodes = tuple(Node(f"n{i:03d}", "big", SPEC) for i in range(80))
    state = FleetState(Fleet((Site("big", "onprem"),), nodes), clock=clock)
    for node in nodes:
        _feed(state, node.name)
    panel = FleetPanel(state)
    qtbot.addWidget(panel)
    panel.resize(700, 300)
    panel.show()
    qtbot.waitExposed(panel)
    model = panel.model
    gpu = _gpus("n077")[6]
    target = model.gpu_index("n077", gpu.uuid)
    viewport = panel.view.viewport().rect()
    assert not viewport.intersects(panel.view.visualRect(target)), "off screen before"

    panel.reveal("n077", gpu.uuid)

    current = panel.view.currentIndex()
    assert (current.data(NODE_ROLE), current.data(GPU_ROLE)) == ("n077", gpu.uuid)
    assert panel.view.isExpanded(model.node_index("n077"))
    assert viewport.contains(panel.view.visualRect(current)), "scrolled into view"
    panel.reveal("n003", None)
    assert panel.view.currentIndex() == model.node_index("n003")
    panel.reveal("no-such-node", None)  # an incident about a node since removed from the inventory
    assert panel.view.currentIndex() == model.node_index("n003")


def test_clicking_rows_emits_the_node_or_the_gpu(panel: FleetPanel, qtbot: QtBot) -> None:
    model = panel.model
    gpu = _gpus("b")[3]
    panel.view.expand(model.node_index("b"))
    index = model.gpu_index("b", gpu.uuid, 2)
    rect = panel.view.visualRect(index)
    with qtbot.waitSignal(panel.gpu_selected, timeout=2_000) as blocker:
        qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == ["b", gpu.uuid]
    rect = panel.view.visualRect(model.node_index("c", 4))
    with qtbot.waitSignal(panel.node_selected, timeout=2_000) as blocker:
        qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == ["c"]
    site = panel.view.visualRect(model.site_index("lab"))
    with qtbot.assertNotEmitted(panel.node_selected), qtbot.assertNotEmitted(panel.gpu_selected):
        qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=site.center())


def test_a_persistent_index_on_a_node_follows_it(panel: FleetPanel, state: FleetState) -> None:
    model = panel.model
    held = QPersistentModelIndex(model.node_index("d", 4))
    _lose_gpu(state, "d", 1)
    panel.refresh()
    assert held.row() == 0 and held.column() == 4 and held.data(NODE_ROLE) == "d"
