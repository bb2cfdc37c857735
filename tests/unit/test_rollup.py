"""The per-minute history rollup: aggregation, restarts, retention, damage, the writer thread, and the charts and
the ring budget that lean on it. Real SQLite files in tmp_path; the chart test drives a real ChartPanel."""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from console.cli.main import build_parser, run_command
from console.history.rings import FleetHistory, ring_bytes
from console.history.rollup import RollupError, RollupStore, history_path_for
from console.samples.schema import ChassisSample, GpuSample, NodeSample, ThrottleReason, throttle_mask

WRITER = "history-rollup-writer"


class Clock:
    """The rollup's notion of now, moved by the test (retention is relative to it)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _sample(node: str, t: float, power: float | None, *, gpus: int = 2, inlet: float = 25.0, **extra) -> NodeSample:
    return NodeSample(
        node,
        "site",
        "test",
        t,
        tuple(
            GpuSample(i, f"GPU-{node}-{i}", power_w=None if power is None else power + i, temperature_c=60.0, **extra)
            for i in range(gpus)
        ),
        ChassisSample(inlet_c=inlet),
    )


def _minute_start(minutes_ago: int) -> float:
    return (math.floor(time.time() / 60) - minutes_ago) * 60.0


def test_minutes_aggregate_min_mean_max_and_or_the_slowdown_bits(tmp_path: Path) -> None:
    m0 = _minute_start(30)
    with_cap = {"throttle_reasons": (ThrottleReason.SW_POWER_CAP,)}
    with_thermal = {"throttle_reasons": (ThrottleReason.HW_THERMAL_SLOWDOWN, ThrottleReason.SW_POWER_CAP)}
    rollup = RollupStore.open(tmp_path / "h.sqlite3")
    try:
        rollup.observe(_sample("n1", m0 + 1, 100.0, inlet=20.0, **with_cap))
        rollup.observe(_sample("n1", m0 + 20, None, inlet=22.0, **with_cap))  # not reported: not a zero
        rollup.observe(_sample("n1", m0 + 40, 400.0, inlet=30.0, **with_thermal))
        rollup.observe(_sample("n1", m0 + 61, 50.0, inlet=21.0))  # the next minute
        rollup.flush()
        power = rollup.reader.series("n1", "GPU-n1-1", "power_w", m0 - 600, m0 + 600)
        inlet = rollup.reader.series("n1", None, "inlet_c", m0 - 600, m0 + 600)
        masks = rollup.reader.series("n1", "GPU-n1-0", "throttle_mask", m0, m0 + 60)
        memory = rollup.reader.series("n1", "GPU-n1-0", "memory_used_mib", m0, m0 + 120)
    finally:
        rollup.close()
    assert power.t.tolist() == [m0 + 30, m0 + 90]
    assert power.min.tolist() == [101.0, 51.0]
    assert power.mean.tolist() == [251.0, 51.0]  # (101 + 401) / 2: the missing value is not averaged in as 0
    assert power.max.tolist() == [401.0, 51.0]
    assert inlet.min[0] == 20.0 and inlet.max[0] == 30.0 and inlet.mean[0] == pytest.approx(24.0)
    assert masks.max[0] == throttle_mask(with_thermal["throttle_reasons"])  # any bit seen in the minute
    assert masks.min[0] == throttle_mask(with_cap["throttle_reasons"])  # bits held all minute
    assert np.isnan(memory.mean).all()


def test_a_minute_split_by_a_restart_is_merged_and_a_missing_minute_is_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    m0 = _minute_start(20)
    first = RollupStore.open(path)
    first.observe(_sample("n1", m0 + 5, 100.0))
    first.observe(_sample("n1", m0 + 10, 200.0))
    first.close()  # mid-minute: the partial minute is written at close
    second = RollupStore.open(path)
    try:
        second.observe(_sample("n1", m0 + 50, 600.0))
        second.observe(_sample("n1", m0 + 185, 10.0))  # minutes m0+1 and m0+2 are missing
        second.flush()
        power = second.reader.series("n1", "GPU-n1-0", "power_w", m0, m0 + 240)
    finally:
        second.close()
    assert power.min[0] == 100.0 and power.max[0] == 600.0 and power.mean[0] == pytest.approx(300.0)
    assert len(power.t) == 4 and np.isnan(power.mean[1:3]).all() and power.mean[3] == 10.0


def test_after_a_restart_the_24h_chart_shows_the_earlier_minutes_from_the_rollup(qtbot, tmp_path: Path) -> None:
    from widgets.live.charts import ChartPanel, Selection

    path = history_path_for(tmp_path / "incidents.sqlite3")
    # three hours of history from a previous run that ended over a minute ago (so no minute is still open,
    # wherever in the current minute the test happens to run)
    start = _minute_start(181)
    before = RollupStore.open(path)
    for second in range(0, 180 * 60, 30):
        power = 200.0 + (second // 60) % 100  # a new value each minute
        before.observe(_sample("n1", start + second, power, gpus=2, inlet=20.0 + (second // 60) % 5))
    before.close()

    after = RollupStore.open(path)  # the restart: a fresh process with empty rings
    history = FleetHistory()
    now = time.time()
    for t in (now - 2, now - 1):
        history.record(_sample("n1", t, 300.0, gpus=2))
    panel = ChartPanel(history)
    qtbot.addWidget(panel)
    try:
        panel.set_rollup(after.reader)
        panel.select(Selection("n1", "GPU-n1-0"))
        with qtbot.waitSignal(panel.history_loaded, timeout=5_000):  # read off the GUI thread
            panel.set_window(86400.0)
        panel.redraw()
        x, y = panel.power_curves[0].getData()
        assert x is not None and y is not None
        earlier = x < now - 10
        assert x.min() == start + 30  # the first minute of the previous run
        assert earlier.sum() == 180  # every minute of it, one point each (its mean)
        assert y[earlier][:3].tolist() == [200.0, 201.0, 202.0]
        assert y[-1] == 300.0  # the live ring still ends the curve
        _low, high, _fill = panel.bands["power_w"]
        bx, by = high.getData()
        assert bx is not None and by is not None and len(bx) == 180  # the min-max band under the earlier part
        assert by[:3].tolist() == [200.0, 201.0, 202.0]
        fx, _fy = panel.cooling_curves["inlet_c"].getData()
        assert fx is not None and fx.min() == start + 30  # chassis metrics too
        # A 5 min window reaches past the two-second ring as well, and only shows the last minutes.
        panel.set_window(300.0)
        x5, _y5 = panel.power_curves[0].getData()
        assert x5 is not None and x5.min() >= now - 330
    finally:
        panel.stop()
        after.close()


def test_retention_deletes_old_minutes_and_the_file_stops_growing(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    start = _minute_start(200)
    clock = Clock(start)
    rollup = RollupStore.open(path, retention_h=10 / 60, clock=clock, prune_every_s=0)
    nodes, gpus = 6, 8
    entities = nodes * (gpus + 1)
    sizes: dict[int, int] = {}
    counts: dict[int, int] = {}
    try:
        for minute in range(90):
            for second in range(0, 60, 20):
                clock.now = start + minute * 60 + second
                for n in range(nodes):
                    rollup.observe(_sample(f"n{n}", clock.now, 100.0 + minute, gpus=gpus))
            if minute in (40, 65, 89):
                rollup.flush(checkpoint=True)
                sizes[minute] = path.stat().st_size
                counts[minute] = rollup.reader.row_count()
        oldest = rollup.reader.series("n0", "GPU-n0-0", "power_w", start, clock.now + 60)
    finally:
        rollup.close()
    assert all(count <= entities * 12 for count in counts.values()), counts  # 10 minutes kept, plus the edges
    assert oldest.t[0] >= clock.now - 11 * 60
    # freed pages are reused: once retention is reached the file stops growing with the minutes written (without
    # retention minute 89 would hold ~9x the rows of a 10-minute window); allow slack for checkpoint timing
    assert sizes[89] <= sizes[65] * 1.3, sizes
    assert sizes[89] < 2 * 2**20


def test_a_damaged_file_is_moved_aside_with_a_message(tmp_path: Path, caplog) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database, it is a shopping list" * 200)
    with caplog.at_level(logging.WARNING, logger="console.history.rollup"):
        rollup = RollupStore.open(path)
    try:
        assert rollup.recovered is not None
        assert rollup.recovered.moved_to.exists() and rollup.recovered.moved_to.read_bytes().startswith(b"this is")
        assert "damaged" in rollup.recovered.message and str(rollup.recovered.moved_to) in rollup.recovered.message
        assert rollup.recovered.message in caplog.text
        m0 = _minute_start(5)
        rollup.observe(_sample("n1", m0, 10.0))
        rollup.flush()
        assert rollup.reader.row_count() == 3  # the new file works
    finally:
        rollup.close()


def test_a_file_from_a_newer_console_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("CREATE TABLE future (x)")
    conn.commit()
    conn.close()
    with pytest.raises(RollupError, match=r"version 7, newer than this console supports"):
        RollupStore.open(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 7


def test_a_failed_write_is_logged_once_and_observing_goes_on(tmp_path: Path, caplog) -> None:
    path = tmp_path / "h.sqlite3"
    rollup = RollupStore.open(path)
    try:
        saboteur = sqlite3.connect(path)
        saboteur.execute("DROP TABLE minutes")
        saboteur.close()
        m0 = _minute_start(10)
        with caplog.at_level(logging.ERROR, logger="console.history.rollup"):
            for minute in range(3):
                rollup.observe(_sample("n1", m0 + minute * 60, 1.0))
                rollup.flush()
        assert rollup.failed_writes >= 3 and rollup.writer_alive  # three minutes (and the pruning)
        assert "no such table: minutes" in (rollup.last_error or "")
        assert caplog.text.count("writing to the history database") == 1  # a transition, not a flood
    finally:
        rollup.close()


def test_samples_from_a_node_with_a_wrong_clock_are_dropped_not_kept_forever(tmp_path: Path) -> None:
    rollup = RollupStore.open(tmp_path / "h.sqlite3", retention_h=1.0)
    try:
        now = time.time()
        for t in (now + 86400 * 365, now - 7200, 0.0, now):
            rollup.observe(_sample("n1", t, 1.0))
        rollup.flush()
        assert rollup.dropped_samples == 3
        assert rollup.reader.row_count() == 3  # only the sample of now: two GPUs and the chassis
    finally:
        rollup.close()


def test_the_writer_thread_stops_on_close_and_late_samples_are_ignored(tmp_path: Path) -> None:
    rollup = RollupStore.open(tmp_path / "h.sqlite3")
    assert any(t.name == WRITER for t in threading.enumerate())
    rollup.close()
    rollup.close()  # twice is harmless
    assert not any(t.name == WRITER for t in threading.enumerate())
    rollup.observe(_sample("n1", time.time(), 1.0))  # a poller still finishing: no exception


def test_the_headless_poll_keeps_history_beside_the_incident_database(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite3"
    args = build_parser().parse_args(["poll", "--demo", "--duration", "2.5", "--db", str(db), "--seed", "3"])
    assert run_command(args) == 0
    history = history_path_for(db)
    assert history.name == "incidents.history.sqlite3"
    conn = sqlite3.connect(history)
    try:
        nodes = {
            row[0] for row in conn.execute("SELECT DISTINCT e.node FROM minutes m JOIN entities e ON e.id = m.entity")
        }
    finally:
        conn.close()
    assert len(nodes) >= 2


def test_a_budgeted_fleet_history_stays_under_its_budget_even_when_the_fleet_outgrows_the_estimate() -> None:
    budget = 2**20
    history = FleetHistory(budget_bytes=budget, expected_gpus=64)
    assert history.capacity < 3600
    assert ring_bytes(history.capacity, 64, 8) <= budget
    t0 = 1_700_000_000.0
    for second in range(40):
        for n in range(40):  # five times the estimate
            history.record(_sample(f"n{n}", t0 + second, float(second), gpus=8))
    assert history.gpu_count == 320
    assert history.nbytes <= budget
    series = history.node("n0").gpu_series("GPU-n0-0", "power_w")
    assert series.y[-1] == 39.0 and series.t[-1] == t0 + 39  # shrinking kept the newest rows
    assert np.all(np.diff(series.t) == 1.0)
    unbudgeted = FleetHistory()
    assert unbudgeted.capacity == 3600


def test_the_headless_poll_goes_on_without_chart_history_it_cannot_open(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "incidents.sqlite3"
    history_path_for(db).mkdir()  # a directory where the history file should be
    args = build_parser().parse_args(["poll", "--demo", "--duration", "1.5", "--db", str(db), "--seed", "3"])
    assert run_command(args) == 0
    out = capsys.readouterr()
    assert "gpu-console poll: chart history disabled:" in out.err
    assert '"ok_polls"' in out.out.splitlines()[-1]
