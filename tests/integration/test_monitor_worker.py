"""The monitoring worker process behind the window: a killed worker is reported and replaced and polling goes on;
an operator's acknowledge and resolve go to it and come back; it never outlives the window's process; closing the
window ends it. Real processes, real SQLite, the demo fleet."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from console.demo.faults import FaultKind
from console.demo.fleet import build_demo_fleet
from console.demo.options import fault_schedule
from console.incidents.model import Outcome, Status
from widgets.app import build_app

ROOT = Path(__file__).resolve().parents[2]
SEED = 5


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a parent that is itself gone counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, within_s: float = 20.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def test_a_killed_worker_is_reported_restarted_and_polling_resumes(qtbot: QtBot, tmp_path: Path) -> None:
    app = build_app(build_demo_fleet(seed=3), tmp_path / "incidents.sqlite3", seed=3)
    qtbot.addWidget(app.window)
    app.start()
    try:
        window = app.window
        qtbot.waitUntil(lambda: window.state.samples_seen > 50, timeout=15_000)
        first = app.monitor.pid
        assert first is not None and first != os.getpid()
        os.kill(first, signal.SIGKILL)
        qtbot.waitUntil(lambda: "stopped unexpectedly" in window.problem_banner.text(), timeout=10_000)
        assert "killed by signal 9" in window.problem_banner.text()
        assert not window.problem_banner.isHidden()
        qtbot.waitUntil(lambda: app.monitor.pid not in (None, first) and app.monitor.polling, timeout=30_000)
        seen = window.state.samples_seen
        qtbot.waitUntil(lambda: window.state.samples_seen > seen + 50, timeout=15_000)  # polling resumed
        assert "restarted" in window.statusBar().currentMessage()
        assert _wait_gone(first)
    finally:
        app.shutdown()
    assert not app.monitor.alive


def test_acknowledge_and_resolve_go_to_the_worker_and_reach_the_window_and_the_file(
    qtbot: QtBot, tmp_path: Path
) -> None:
    probe = build_demo_fleet(seed=SEED, anchor=0.0)
    fault = next(f for f in fault_schedule(probe, 600) if f.kind is FaultKind.GPU_LOST)
    fleet = build_demo_fleet(seed=SEED, anchor=time.time() - fault.start_s + 3.0)
    app = build_app(fleet, tmp_path / "incidents.sqlite3", seed=SEED)
    qtbot.addWidget(app.window)
    app.start()
    try:
        rows = app.window.incidents.model

        def lost() -> str | None:
            for r in range(rows.rowCount()):
                incident = rows.incident(r)
                if incident.rule == "gpu_lost" and incident.context.node == fault.node:
                    return incident.id
            return None

        qtbot.waitUntil(lambda: lost() is not None, timeout=25_000)
        incident_id = lost()
        assert incident_id is not None
        change = app.monitor.acknowledge(incident_id, "looking")
        assert change.incident.status is Status.ACKNOWLEDGED
        qtbot.waitUntil(
            lambda: any(
                rows.incident(r).id == incident_id and rows.incident(r).status is Status.ACKNOWLEDGED
                for r in range(rows.rowCount())
            ),
            timeout=5_000,
        )
        assert app.store.get(incident_id).status is Status.ACKNOWLEDGED  # type: ignore[union-attr]
        app.monitor.resolve(incident_id, "reseated", Outcome.FIXED, "other")
        qtbot.waitUntil(lambda: all(rows.incident(r).id != incident_id for r in range(rows.rowCount())), timeout=5_000)
        with sqlite3.connect(app.db_path) as db:
            [(status,)] = db.execute("SELECT status FROM incidents WHERE id = ?", (incident_id,)).fetchall()
        assert status == "resolved"
        with pytest.raises(KeyError, match="no-such-incident"):  # the engine's refusal crosses back as it is
            app.monitor.acknowledge("no-such-incident", "")
    finally:
        app.shutdown()


def test_closing_the_window_stops_the_worker(qtbot: QtBot, tmp_path: Path) -> None:
    app = build_app(build_demo_fleet(seed=1), tmp_path / "incidents.sqlite3", seed=1)
    qtbot.addWidget(app.window)
    app.start()
    qtbot.waitUntil(lambda: app.monitor.counters.samples > 10, timeout=15_000)
    pid = app.monitor.pid
    assert pid is not None
    app.window.close()
    app.shutdown()
    assert _wait_gone(pid)
    assert app.monitor.counters.samples > 10  # its last counts came back before it ended


_GUI_THAT_DIES = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication
    from console.demo.fleet import build_demo_fleet
    from widgets.app import build_app

    qt_app = QApplication([])
    app = build_app(build_demo_fleet(seed=2), Path(sys.argv[1]), seed=2)
    app.start()
    end = time.monotonic() + 60
    while app.monitor.counters.samples < 10 and time.monotonic() < end:
        qt_app.processEvents()
        time.sleep(0.02)
    print(app.monitor.pid, flush=True)
    time.sleep(120)  # killed by the test long before
    """
)


def test_the_worker_never_outlives_a_window_process_that_is_killed(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _GUI_THAT_DIES, str(tmp_path / "incidents.sqlite3")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as gui:
        try:
            assert gui.stdout is not None
            line = gui.stdout.readline().strip()
            assert line.isdigit(), f"the window's process said {line!r}"
            worker = int(line)
            assert not _gone(worker)
            gui.send_signal(signal.SIGKILL)
            gui.wait(10)
            assert _wait_gone(worker), "the worker is still running after its window's process was killed"
        finally:
            if gui.poll() is None:
                gui.kill()
                gui.wait(10)
