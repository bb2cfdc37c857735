"""The real main window watching 100 dcgm nodes of which 30 hang (issue 7): a 10 ms QTimer measures the event
loop; no gap between its ticks may exceed 100 ms while the hanging nodes time out and back off."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer

from tests.helpers.hostile_server import HostileServer, hostile_fleet

NODES = 100  # hostile_fleet's defaults
HANGING = 30
MEASURE_S = 10.0
MAX_GAP_S = 0.100


class TickGaps:
    """Records the time between ticks of a 10 ms QTimer: a long gap is the event loop stalled."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._last: float | None = None
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._on_timer_timeout)

    def start(self) -> None:
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _on_timer_timeout(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now


@pytest.mark.slow
def test_event_loop_never_stalls_over_100_ms_with_30_of_100_nodes_hanging(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from widgets.app import build_app

    with HostileServer() as server:
        fleet = hostile_fleet(server)
        hanging = sum(1 for n in fleet.nodes if n.sources[0].url and n.sources[0].url.endswith("/hang"))
        assert hanging == HANGING
        app = build_app(fleet, tmp_path / "incidents.sqlite3", seed=2)
        qtbot.addWidget(app.window)
        app.start()
        app.window.show()
        meter = TickGaps()
        try:
            qtbot.waitUntil(lambda: app.window.state.samples_seen >= NODES - HANGING, timeout=10_000)
            meter.start()
            qtbot.wait(int(MEASURE_S * 1000))
            meter.stop()
            state = app.window.state
            unreachable = [n for n in state.nodes.values() if not n.reachable]
        finally:
            meter.stop()
            app.shutdown()
    assert len(meter.gaps) > MEASURE_S / 0.02, "the timer hardly ran"
    worst = max(meter.gaps)
    assert worst < MAX_GAP_S, f"event loop stalled {worst * 1000:.0f} ms (p99 {_p99(meter.gaps) * 1000:.0f} ms)"
    assert len(unreachable) == HANGING and all("no answer within 3 s" in n.last_error for n in unreachable)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
