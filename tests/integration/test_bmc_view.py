"""The node's BMC chassis tab, on what the Redfish source reads from a real loopback server serving our
multi-chassis HGX mockup (tests/fixtures/redfish/multi_chassis_hgx)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from PySide6.QtGui import QColor

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.live.fleet_state import NodeStatus
from console.samples.results import PollFailure, PollResult, SourceFailure
from console.samples.schema import NodeSample
from console.sources.base import SourceContext
from console.sources.redfish.source import make_source
from tests.helpers.redfish_server import RedfishMockServer
from widgets.common.style import STATUS_COLORS
from widgets.live.bmc_view import COLUMNS
from widgets.live.main_window import MainWindow

MULTI = Path(__file__).resolve().parents[1] / "fixtures" / "redfish" / "multi_chassis_hgx"


def _poll(fleet: Fleet) -> NodeSample:
    async def main() -> NodeSample:
        async with RedfishMockServer(MULTI) as server, aiohttp.ClientSession() as http:
            spec = SourceSpec(kind=SourceKind.REDFISH, url=server.url)
            node = Node("hgx-01", "lab", (spec,))
            source = make_source(SourceContext(node=node, site=fleet.sites[0], spec=spec, timeout_s=3.0, http=http))
            try:
                return await source.poll()
            finally:
                await source.aclose()

    return asyncio.run(main())


def _cells(window: MainWindow) -> list[list[str]]:
    table = window.bmc.table
    return [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]


def test_the_node_view_shows_every_chassis_of_the_bmc_with_its_named_conditions(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = SourceSpec(kind=SourceKind.REDFISH, url="http://127.0.0.1:9/")
    fleet = Fleet(
        sites=(Site("lab", "onprem"), Site("dark", "onprem")),
        nodes=(Node("hgx-01", "lab", (spec,)), Node("dark-01", "dark", (spec,))),
    )
    window = MainWindow(fleet, tmp_path / "incidents.sqlite3")
    qtbot.addWidget(window)
    try:
        sample = _poll(fleet)
        window._apply_result(PollResult("hgx-01", "lab", sample.time - 0.05, 0.05, sample))
        window.select_node("hgx-01")
        window.center_tabs.setCurrentWidget(window.bmc)
        window._on_refresh_timer_timeout()
        rows = _cells(window)
        assert [row[0] for row in rows] == ["Blade 1", "Tray 2", "HGX_GPU_SXM_1", "HGX_GPU_SXM_2"]
        blade = dict(zip(COLUMNS, rows[0], strict=True))
        assert (blade["Health"], blade["Inlet °C"], blade["Exhaust °C"], blade["Power W"], blade["Fans RPM"]) == (
            "critical",
            "22.0",
            "38.5",
            "1210",
            "8100 0",
        )
        assert blade["Conditions"] == "System Fan 2: Critical, 0 RPM"
        tray = dict(zip(COLUMNS, rows[1], strict=True))
        assert (tray["Health"], tray["Inlet °C"], tray["Fans RPM"]) == ("warning", "27.0", "—")
        assert tray["Conditions"] == "Tray 2 P12V: Warning, 11.2 V"
        assert window.bmc.table.item(0, 1).foreground().color() == QColor(STATUS_COLORS[NodeStatus.CRITICAL])
        assert "4 chassis" in window.bmc.title.text() and "critical" in window.bmc.title.text()
        # a second node whose BMC does not answer: its site's chassis fields are "no data", naming the collector
        failure = SourceFailure("redfish http://127.0.0.1:9", PollFailure.UNREACHABLE, "connection refused")
        window._apply_result(PollResult("dark-01", "dark", sample.time, 0.01, None, (failure,)))
        window.center_tabs.setCurrentWidget(window.capabilities)
        tree = window.capabilities.tree
        dark = next(
            tree.topLevelItem(i) for i in range(tree.topLevelItemCount()) if tree.topLevelItem(i).text(0) == "dark"
        )
        inlet = next(dark.child(i) for i in range(dark.childCount()) if dark.child(i).text(0) == "inlet_c")
        assert (inlet.text(2), inlet.text(3)) == (
            "no data",
            "collector failing: redfish http://127.0.0.1:9: unreachable: connection refused",
        )
    finally:
        window.shutdown()
