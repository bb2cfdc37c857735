"""The worker's stream to the window: what gathered while its sender ran late travels in several short messages
(the window unpickles one per wake-up, between its timers and paints), at once, in order, none lost at a stop."""

from __future__ import annotations

import threading
import time
from multiprocessing import Pipe
from pathlib import Path

from console.demo.fleet import build_demo_fleet
from console.live.monitor import MonitorUpdate
from console.live.worker_messages import MAX_BATCH_UPDATES, Batch, WorkerConfig, decode
from console.live.worker_process import WorkerHost


def _host(tmp_path: Path, batch_s: float) -> tuple[WorkerHost, object]:
    window_end, worker_end = Pipe()
    config = WorkerConfig(
        fleet=build_demo_fleet(seed=1),
        db_path=tmp_path / "incidents.sqlite3",
        history_path=tmp_path / "history.sqlite3",
        history_retention_h=1.0,
        batch_s=batch_s,
    )
    return WorkerHost(worker_end, config), window_end


def _received(window_end: object, within_s: float) -> list[Batch]:
    batches: list[Batch] = []
    end = time.monotonic() + within_s
    while time.monotonic() < end and window_end.poll(max(0.0, end - time.monotonic())):  # type: ignore[attr-defined]
        message = decode(window_end.recv_bytes())  # type: ignore[attr-defined]
        if isinstance(message, Batch):
            batches.append(message)
            if sum(len(b.updates) for b in batches) == 100:
                break
    return batches


def test_a_backlog_travels_at_once_in_short_messages_in_order(tmp_path: Path) -> None:
    host, window_end = _host(tmp_path, batch_s=30.0)  # a sender that waited its interval would take minutes
    for n in range(100):
        host._post(MonitorUpdate(time=float(n)))
    sender = threading.Thread(target=host._send_loop, daemon=True)
    sender.start()
    host._wake.set()
    try:
        batches = _received(window_end, within_s=5.0)
    finally:
        host._stopping.set()
        while sender.is_alive():  # the sender reads the stop flag before it waits: wake it until it has
            host._wake.set()
            sender.join(0.05)
    assert [len(b.updates) for b in batches] == [32, 32, 32, 4]
    assert [u.time for b in batches for u in b.updates] == [float(n) for n in range(100)]
    assert max(len(b.updates) for b in batches) <= MAX_BATCH_UPDATES


def test_a_stopping_worker_sends_all_it_gathered(tmp_path: Path) -> None:
    host, window_end = _host(tmp_path, batch_s=0.01)
    for n in range(100):
        host._post(MonitorUpdate(time=float(n)))
    host._stopping.set()
    host._send_loop()  # returns once everything is sent
    batches = _received(window_end, within_s=2.0)
    assert [u.time for b in batches for u in b.updates] == [float(n) for n in range(100)]
