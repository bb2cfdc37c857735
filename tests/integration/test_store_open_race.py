"""Issue 18 item 2: several processes opening one new incident database at the same moment all get a working,
fully migrated log (no "table incidents already exists")."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

from console.store.schema import SCHEMA_VERSION

_OPENERS = 6
_ROUNDS = 3


def _open_at_once(path: str, barrier: Any, results: Any) -> None:
    from console.store import IncidentStore, StoreError

    barrier.wait(timeout=60)
    try:
        IncidentStore.open(Path(path)).close()
        results.put("ok")
    except (StoreError, sqlite3.Error) as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(_ROUNDS):
        path = tmp_path / f"new-{round_}.sqlite3"
        barrier = ctx.Barrier(_OPENERS)
        results = ctx.Queue()
        workers = [ctx.Process(target=_open_at_once, args=(str(path), barrier, results)) for _ in range(_OPENERS)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert outcomes == ["ok"] * _OPENERS, outcomes
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 0
        finally:
            conn.close()
