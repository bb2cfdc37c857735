"""The fleet map: one tile per GPU, grouped by site and node, coloured by the chosen metric, with tooltips and
click-to-drill. Pixels are read back from ``grab()`` of the painted canvas, as an operator would see them."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QRect, Qt
from PySide6.QtGui import QColor, QHelpEvent
from PySide6.QtWidgets import QToolTip
from pytestqt.qtbot import QtBot

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.incidents.model import ChangeKind, Incident, IncidentChange, IncidentContext, Severity, Status
from console.live.fleet_map import VIRIDIS, MapMetric
from console.live.fleet_state import FleetState, NodeStatus
from console.samples.results import PollResult
from console.samples.schema import GpuSample, NodeSample
from widgets.common.style import SEVERITY_COLORS, STATUS_COLORS
from widgets.live.fleet_map import (
    BACKGROUND,
    EMPTY_SLOT,
    NO_DATA,
    NO_INCIDENT,
    OFFLINE_FILL,
    FleetMapWidget,
    literal_tooltip,
)

SPEC = (SourceSpec(SourceKind.DCGM, url="http://127.0.0.1:9400/metrics"),)
MODEL = "NVIDIA H100 80GB HBM3"


def _gpu(node: str, index: int, **values: object) -> GpuSample:
    fields: dict[str, object] = {
        "name": MODEL,
        "temperature_c": 50.0,
        "thermal_margin_c": 30.0,
        "power_w": 300.0,
        "power_limit_w": 700.0,
        "utilization_pct": 50.0,
    }
    fields.update(values)
    return GpuSample(index=index, uuid=f"GPU-{node}-{index}", **fields)  # type: ignore[arg-type]


def _feed(state: FleetState, node: str, gpus: tuple[GpuSample, ...]) -> None:
    site = state.nodes[node].site
    sample = NodeSample(node=node, site=site, source="dcgm", time=time.time(), gpus=gpus)
    state.apply_result(PollResult(node, site, time.time(), 0.01, sample))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def small_state() -> FleetState:
    """Two sites; hot/cool/no-data GPUs on node 'a', a node with 4 GPUs, one unreachable, one never polled."""
    fleet = Fleet(
        (Site("aws-use1", "aws"), Site("lab", "onprem")),
        (
            Node("a", "aws-use1", SPEC),
            Node("b", "aws-use1", SPEC),
            Node("small", "aws-use1", SPEC),
            Node("down", "lab", SPEC),
            Node("new", "lab", SPEC),
        ),
    )
    state = FleetState(fleet, clock=Clock())
    hot_cool = (
        _gpu("a", 0, temperature_c=88.0, utilization_pct=5.0),
        _gpu("a", 1, temperature_c=35.0, utilization_pct=95.0),
        _gpu("a", 2, utilization_pct=None),
        _gpu("a", 3, utilization_pct=0.0),
        *(_gpu("a", i) for i in range(4, 8)),
    )
    _feed(state, "a", hot_cool)
    _feed(state, "b", tuple(_gpu("b", i) for i in range(8)))
    _feed(state, "small", tuple(_gpu("small", i) for i in range(4)))
    _feed(state, "down", tuple(_gpu("down", i, temperature_c=85.0) for i in range(8)))
    state.apply_result(PollResult("down", "lab", time.time(), 3.0, None))  # stopped answering
    return state


@pytest.fixture
def fleet_map(qtbot: QtBot, small_state: FleetState) -> FleetMapWidget:
    widget = FleetMapWidget(small_state)
    qtbot.addWidget(widget)
    widget.resize(900, 420)
    widget.show()
    qtbot.waitExposed(widget)
    widget.refresh()
    return widget


def _pixel(widget: FleetMapWidget, node: str, uuid: str) -> QColor:
    rect = widget.canvas.tile_rect(node, uuid)
    assert rect is not None, f"{node}/{uuid} has no tile"
    return widget.canvas.grab().toImage().pixelColor(rect.center())


def _centre(widget: FleetMapWidget, node: str, uuid: str) -> QPoint:
    rect = widget.canvas.tile_rect(node, uuid)
    assert rect is not None
    return rect.center()


def test_every_gpu_has_its_own_painted_tile(fleet_map: FleetMapWidget, small_state: FleetState) -> None:
    assert fleet_map.canvas.tile_count == small_state.gpu_count == 28
    image = fleet_map.canvas.grab().toImage()
    rects = []
    for node in small_state.nodes.values():
        for uuid in node.gpus:
            rect = fleet_map.canvas.tile_rect(node.name, uuid)
            assert rect is not None and fleet_map.canvas.rect().contains(rect)
            colour = image.pixelColor(rect.center()).name()
            assert colour not in (BACKGROUND, EMPTY_SLOT), f"{node.name}/{uuid} is not painted"
            rects.append(rect)
    assert not any(r1.intersects(r2) for i, r1 in enumerate(rects) for r2 in rects[i + 1 :])
    # the node with 4 GPUs leaves 4 empty slots in its 8-slot block, drawn faint and not counted as GPUs
    block = fleet_map.canvas.node_rect("small")
    assert block is not None
    assert image.pixelColor(block.right() - 2, block.bottom() - 2).name() == EMPTY_SLOT


def test_hot_gpu_is_coloured_differently_from_a_cool_one(fleet_map: FleetMapWidget) -> None:
    assert fleet_map.colour_metric is MapMetric.TEMPERATURE
    hot, cool = _pixel(fleet_map, "a", "GPU-a-0"), _pixel(fleet_map, "a", "GPU-a-1")
    assert hot.red() > 180 and hot.blue() < 80, hot.name()  # the red end of the scale
    assert cool.blue() > 150 and cool.red() < 100, cool.name()  # the blue end


def test_colour_changes_with_the_chosen_metric(fleet_map: FleetMapWidget, qtbot: QtBot) -> None:
    before = _pixel(fleet_map, "a", "GPU-a-0")  # 88 °C but 5 % busy
    fleet_map.metric_combo.setCurrentIndex(fleet_map.metric_combo.findText("Utilization"))
    assert fleet_map.colour_metric is MapMetric.UTILIZATION
    after = _pixel(fleet_map, "a", "GPU-a-0")
    assert after != before
    assert after.red() < 100, after.name()  # low utilization: the dark end of the scale, no longer "hot"
    busy = _pixel(fleet_map, "a", "GPU-a-1")
    assert busy.green() > 180, busy.name()  # 95 % busy: the bright end


def test_missing_value_is_drawn_as_no_data_never_as_zero(fleet_map: FleetMapWidget) -> None:
    fleet_map.set_metric(MapMetric.UTILIZATION)
    assert _pixel(fleet_map, "a", "GPU-a-2").name() == NO_DATA  # utilization None
    zero = _pixel(fleet_map, "a", "GPU-a-3").name()  # utilization 0 %: the low end of the scale
    assert zero == VIRIDIS[0] != NO_DATA


def test_unreachable_node_is_hatched_in_its_status_colour(fleet_map: FleetMapWidget) -> None:
    purple = STATUS_COLORS[NodeStatus.UNREACHABLE]
    block = fleet_map.canvas.node_rect("down")
    assert block is not None
    image = fleet_map.canvas.grab().toImage()
    assert image.pixelColor(block.left() - 1, block.center().y()).name() == purple  # outline
    inside = {
        image.pixelColor(x, y).name()
        for x in range(block.left(), block.right() + 1)
        for y in range(block.top(), block.bottom() + 1)
    }
    assert purple in inside and OFFLINE_FILL in inside  # hatch over greyed tiles
    # its last values (85 °C) are no longer shown as live colours
    assert not any(QColor(c).red() > 180 and QColor(c).blue() < 80 for c in inside)


def test_stale_node_turns_grey_hatched_when_results_stop(qtbot: QtBot, small_state: FleetState) -> None:
    widget = FleetMapWidget(small_state)
    qtbot.addWidget(widget)
    widget.resize(900, 420)
    widget.show()
    qtbot.waitExposed(widget)
    block = widget.canvas.node_rect("b")
    assert block is not None
    edge = QPoint(block.left() - 1, block.center().y())
    assert widget.canvas.grab().toImage().pixelColor(edge).name() == BACKGROUND
    clock = small_state._clock
    assert isinstance(clock, Clock)
    clock.now += 120.0  # no result from anyone for two minutes
    widget.refresh()
    assert widget.canvas.grab().toImage().pixelColor(edge).name() == STATUS_COLORS[NodeStatus.STALE]


def test_severity_metric_shows_open_incidents_and_lost_gpus(qtbot: QtBot, small_state: FleetState) -> None:
    incident = Incident(
        id="i1",
        rule="thermal_margin",
        code="",
        kind="thermal",
        severity=Severity.MAJOR,
        status=Status.OPEN,
        title="thermal margin low",
        detail="",
        context=IncidentContext(site="aws-use1", provider="aws", node="b", gpu_uuid="GPU-b-5", gpu_index=5),
        opened_at=1.0,
        last_seen_at=1.0,
    )
    small_state.apply_changes([IncidentChange(ChangeKind.OPENED, incident, time=1.0)])
    _feed(small_state, "a", (*(_gpu("a", i) for i in range(7)), _gpu("a", 7, lost=True, temperature_c=None)))
    widget = FleetMapWidget(small_state)
    qtbot.addWidget(widget)
    widget.resize(900, 420)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_metric(MapMetric.SEVERITY)
    assert _pixel(widget, "b", "GPU-b-5").name() == SEVERITY_COLORS[Severity.MAJOR]
    assert _pixel(widget, "b", "GPU-b-4").name() == NO_INCIDENT
    assert _pixel(widget, "a", "GPU-a-7").name() == SEVERITY_COLORS[Severity.CRITICAL]


def test_tooltip_names_node_gpu_model_uuid_and_values(fleet_map: FleetMapWidget) -> None:
    text = fleet_map.tooltip_text(_centre(fleet_map, "a", "GPU-a-0"))
    assert text is not None
    assert "a · GPU 0 · " + MODEL in text
    assert "UUID GPU-a-0" in text
    assert "Temperature 88 °C" in text and "Power 300 W of 700 W" in text and "Utilization 5 %" in text
    no_data = fleet_map.tooltip_text(_centre(fleet_map, "a", "GPU-a-2"))
    assert no_data is not None and "Utilization n/a" in no_data
    down = fleet_map.tooltip_text(_centre(fleet_map, "down", "GPU-down-3"))
    assert down is not None and "Node unreachable" in down and "last received" in down
    assert fleet_map.tooltip_text(QPoint(2, 2)) is None  # the site header: nothing to describe


@pytest.mark.qt_log_ignore("This plugin does not support raise")  # the offscreen platform cannot raise a tooltip
def test_tooltip_shows_network_strings_as_plain_text(qtbot: QtBot) -> None:
    name = "<b>node</b><img src=x>"
    fleet = Fleet((Site("s", "aws"),), (Node(name, "s", SPEC),))
    state = FleetState(fleet)
    _feed(state, name, (_gpu("n", 0, name="<i>H100</i>"),))
    widget = FleetMapWidget(state)
    qtbot.addWidget(widget)
    widget.resize(600, 300)
    widget.show()
    qtbot.waitExposed(widget)
    centre = _centre(widget, name, "GPU-n-0")
    text = widget.tooltip_text(centre)
    assert text is not None and name in text and "<i>H100</i>" in text
    shown = literal_tooltip(text)
    assert "<b>" not in shown and "&lt;b&gt;node&lt;/b&gt;" in shown and "&lt;i&gt;H100" in shown
    # the real hover path: a ToolTip event shows that escaped text
    event = QHelpEvent(QEvent.Type.ToolTip, centre, widget.canvas.mapToGlobal(centre))
    widget.canvas.event(event)
    qtbot.waitUntil(QToolTip.isVisible, timeout=2000)
    assert QToolTip.text() == shown
    QToolTip.hideText()


def test_click_on_a_tile_emits_node_and_uuid(fleet_map: FleetMapWidget, qtbot: QtBot) -> None:
    with qtbot.waitSignal(fleet_map.gpu_selected, timeout=1000) as blocker:
        qtbot.mouseClick(fleet_map.canvas, Qt.MouseButton.LeftButton, pos=_centre(fleet_map, "small", "GPU-small-2"))
    assert blocker.args == ["small", "GPU-small-2"]
    with qtbot.waitSignal(fleet_map.gpu_selected, timeout=1000) as blocker:
        qtbot.mouseClick(fleet_map.canvas, Qt.MouseButton.LeftButton, pos=_centre(fleet_map, "down", "GPU-down-7"))
    assert blocker.args == ["down", "GPU-down-7"]
    with qtbot.assertNotEmitted(fleet_map.gpu_selected):
        qtbot.mouseClick(fleet_map.canvas, Qt.MouseButton.LeftButton, pos=QPoint(3, 3))  # header, no tile


def test_click_on_a_node_without_gpus_selects_the_node(fleet_map: FleetMapWidget, qtbot: QtBot) -> None:
    block = fleet_map.canvas.node_rect("new")
    assert block is not None
    with qtbot.waitSignal(fleet_map.node_selected, timeout=1000) as blocker:
        qtbot.mouseClick(fleet_map.canvas, Qt.MouseButton.LeftButton, pos=block.center())
    assert blocker.args == ["new"]


def test_layout_is_rebuilt_only_when_the_shape_or_size_changes(fleet_map: FleetMapWidget, qtbot: QtBot) -> None:
    first = fleet_map.canvas.layout_
    _feed(fleet_map.state, "b", tuple(_gpu("b", i, temperature_c=80.0) for i in range(8)))
    fleet_map.refresh()
    assert fleet_map.canvas.layout_ is first  # new values, same shape: colours only
    assert _pixel(fleet_map, "b", "GPU-b-0").red() > 200
    fleet_map.resize(700, 420)
    qtbot.waitUntil(lambda: fleet_map.canvas.layout_ is not first, timeout=2000)
    assert fleet_map.canvas.layout_ is not None and fleet_map.canvas.layout_.width == fleet_map.canvas.width()


def test_hidden_map_defers_its_refresh_until_shown(qtbot: QtBot, small_state: FleetState) -> None:
    widget = FleetMapWidget(small_state)
    qtbot.addWidget(widget)
    widget.refresh()
    assert widget.canvas.arrays is None  # nothing read while nobody looks
    widget.resize(900, 420)
    widget.show()
    qtbot.waitExposed(widget)
    assert widget.canvas.tile_count == small_state.gpu_count


def _big_state(nodes: int, gpus_per_node: int) -> FleetState:
    sites = tuple(Site(f"site-{i}", "aws") for i in range(4))
    fleet_nodes = tuple(Node(f"n{i:05d}", f"site-{i % 4}", SPEC) for i in range(nodes))
    state = FleetState(Fleet(sites, fleet_nodes))
    rng = np.random.default_rng(3)
    temps = rng.uniform(30, 90, size=(nodes, gpus_per_node))
    for number, node in enumerate(fleet_nodes):
        gpus = tuple(
            GpuSample(index=i, uuid=f"GPU-{number}-{i}", temperature_c=float(temps[number, i]))
            for i in range(gpus_per_node)
        )
        state.apply_result(
            PollResult(node.name, node.site, 0.0, 0.01, NodeSample(node.name, node.site, "dcgm", 0.0, gpus))
        )
    return state


@pytest.mark.slow
def test_sixteen_thousand_gpus_fit_one_screen_one_tile_each(qtbot: QtBot) -> None:
    state = _big_state(2000, 8)
    widget = FleetMapWidget(state)
    qtbot.addWidget(widget)
    widget.resize(1600, 1000)
    widget.show()
    qtbot.waitExposed(widget)
    canvas = widget.canvas
    layout = canvas.layout_
    assert layout is not None and not layout.overflows and layout.tile >= 5
    assert canvas.tile_count == 16_000
    image = canvas.grab().toImage()
    empty = {QColor(BACKGROUND).rgb(), QColor(EMPTY_SLOT).rgb(), QColor(NO_DATA).rgb()}
    arrays = canvas.arrays
    assert arrays is not None
    seen = set()
    for node_position, name in enumerate(arrays.nodes):
        for slot in range(8):
            rect = QRect(*layout.slot_box(node_position, slot))
            assert image.pixel(rect.center()) not in empty
            # hit testing is the inverse of the layout, for every tile
            assert canvas.target_at(rect.center()) == (name, arrays.uuids[node_position * 8 + slot])
            seen.add((rect.x(), rect.y()))
    assert len(seen) == 16_000


def test_empty_fleet_and_never_polled_nodes_draw_without_tiles(qtbot: QtBot) -> None:
    never_polled = Fleet((Site("s", "aws"),), (Node("n1", "s", SPEC), Node("n2", "s", SPEC)))
    for fleet in (Fleet((), ()), never_polled):
        widget = FleetMapWidget(FleetState(fleet))
        qtbot.addWidget(widget)
        widget.resize(600, 300)
        widget.show()
        qtbot.waitExposed(widget)
        for metric in MapMetric:
            widget.set_metric(metric)
            widget.canvas.grab()
        assert widget.canvas.tile_count == 0
    block = widget.canvas.node_rect("n2")
    assert block is not None
    text = widget.tooltip_text(block.center())
    assert text is not None and text.startswith("n2 · no GPU reported") and "Node stale" in text


def test_fleet_too_big_for_the_window_is_cut_and_says_so(qtbot: QtBot) -> None:
    widget = FleetMapWidget(_big_state(1000, 8))
    qtbot.addWidget(widget)
    widget.resize(400, 300)
    widget.show()
    qtbot.waitExposed(widget)
    layout = widget.canvas.layout_
    assert layout is not None and layout.overflows and layout.tile == 2
    below = QPoint(100, widget.canvas.height() + 5)
    assert widget.canvas.target_at(below) is None  # nothing hidden is clickable
    widget.resize(1600, 1000)
    qtbot.waitUntil(lambda: widget.canvas.layout_ is not None and not widget.canvas.layout_.overflows, timeout=2000)
