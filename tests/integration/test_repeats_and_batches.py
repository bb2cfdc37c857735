"""The whole app against exporters that collect less often than we poll, and the bridge's batches.

dcgm-exporter serves the same bytes until its next collection (every 30 s by default). The window must show the
node alive at every poll, chart each measurement once, and say in the tooltip that the values are old.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from PySide6.QtCore import Qt

from console.config.inventory import parse_inventory
from console.live.monitor import MonitorUpdate
from tests.integration.test_simulate import get, running_simulator
from widgets.app import build_app
from widgets.bridge import MonitorBridge


def test_repeated_payloads_keep_the_node_alive_without_charting_them_again(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with running_simulator("--nodes", "2", "--faults", "none", "--refresh", "4", "--duration", "60") as simulator:
        inventory = get(f"{simulator.url}/inventory.toml").decode()
        fleet = parse_inventory(inventory.replace("interval_s = 1.0", "interval_s = 0.5"), "simulated.toml")
        app = build_app(fleet, tmp_path / "incidents.sqlite3", seed=1)
        qtbot.addWidget(app.window)
        app.start()
        try:
            window = app.window
            name = fleet.nodes[0].name
            qtbot.waitUntil(lambda: window.state.nodes[name].last_fresh is not None, timeout=10_000)
            started = time.monotonic()
            qtbot.wait(9_000)
            node = window.state.nodes[name]
            polls = app.monitor.counters.polls / len(fleet.nodes)
            charted = len(window.history.node(name).times)
            assert polls >= 14, "polled every 0.5 s"
            elapsed = time.monotonic() - started
            assert 2 <= charted <= 5, f"{charted} chart points for ~{elapsed:.0f} s of 4 s collections"
            assert node.last_success is not None and time.time() - node.last_success < 2.0, "alive at every poll"
            qtbot.waitUntil(lambda: (node.last_success or 0) - (node.last_fresh or 0) >= 1.5, timeout=6_000)
            window.fleet_panel.model.refresh()
            tip = window.fleet_panel.model.node_index(name, 5).data(Qt.ItemDataRole.ToolTipRole)
            assert "values unchanged for" in tip and "has not collected since" in tip
        finally:
            app.shutdown()


def test_updates_posted_while_the_gui_is_busy_arrive_as_one_batch_in_order(qtbot) -> None:  # type: ignore[no-untyped-def]
    bridge = MonitorBridge()
    batches: list[tuple[MonitorUpdate, ...]] = []
    bridge.updates_received.connect(batches.append)

    def worker() -> None:
        for i in range(500):
            bridge.post(MonitorUpdate(time=float(i)))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()  # the GUI thread did not run meanwhile: everything waits for one flush
    qtbot.waitUntil(lambda: sum(len(b) for b in batches) == 500, timeout=5_000)
    assert len(batches) == 1
    assert [u.time for u in batches[0]] == [float(i) for i in range(500)]
    bridge.post(MonitorUpdate(time=1e9))
    qtbot.waitUntil(lambda: len(batches) == 2, timeout=5_000)
    assert [u.time for u in batches[1]] == [1e9]


def test_the_headless_poll_counts_repeated_and_on_time_polls(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from console.cli.main import build_parser, run_command

    with running_simulator("--nodes", "3", "--faults", "none", "--refresh", "3", "--duration", "60") as simulator:
        inventory = tmp_path / "inventory.toml"
        inventory.write_bytes(get(f"{simulator.url}/inventory.toml"))
        db = tmp_path / "incidents.sqlite3"
        args = build_parser().parse_args(["poll", "--config", str(inventory), "--db", str(db), "--duration", "5.5"])
        assert run_command(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["nodes"] == 3 and summary["polls"] >= 12 and summary["ok_polls"] == summary["polls"]
    assert 1 <= summary["repeated_polls"] < summary["polls"], "exporters collecting every 3 s repeat between"
    assert 0 < summary["on_time_polls"] <= summary["polls"]
