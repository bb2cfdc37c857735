"""The main window's Capabilities tab on the demo fleet: per site, "reported", "not supported" (SXM GPUs have no
fan) and "no data" (an air-cooled site has no coolant loop)."""

from __future__ import annotations

from pathlib import Path

from console.demo.fleet import build_demo_fleet
from widgets.app import build_app


def _rows(tree, site: str) -> dict[tuple[str, str], tuple[str, str]]:  # type: ignore[no-untyped-def]
    top = next(tree.topLevelItem(i) for i in range(tree.topLevelItemCount()) if tree.topLevelItem(i).text(0) == site)
    return {
        (top.child(i).text(1), top.child(i).text(0)): (top.child(i).text(2), top.child(i).text(3))
        for i in range(top.childCount())
    }


def test_the_capabilities_tab_says_not_supported_and_no_data_per_site(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = build_app(build_demo_fleet(seed=5), tmp_path / "incidents.sqlite3", seed=5)
    qtbot.addWidget(app.window)
    app.start()
    try:
        window = app.window
        qtbot.waitUntil(lambda: window.state.gpu_count == 256, timeout=15_000)
        window.center_tabs.setCurrentWidget(window.capabilities)  # refreshes on showing
        tree = window.capabilities.tree
        sites = [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]
        assert len(sites) >= 3
        rows = _rows(tree, "aws-use1")
        assert rows[("gpu", "power_w")] == ("reported", "64 of 64")
        assert rows[("gpu", "fan_pct")] == ("not supported", "by 64 GPUs: NVIDIA H100 80GB HBM3 (64)")
        assert rows[("chassis", "coolant_flow_lpm")] == ("no data", "never seen")
    finally:
        app.shutdown()
