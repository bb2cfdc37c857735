"""Issue 18 item 3: a full disk loses nothing silently. Changes the disk refuses stay queued (bounded) and are
retried until space returns; what is finally lost is counted, said once, in poll's summary ("unsaved_changes")
and its exit code. On a real small tmpfs (CI runs as root; elsewhere these tests skip, saying why)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.incidents.model import ChangeKind, EvidencePoint, IncidentChange
from console.store import IncidentFilter, IncidentStore
from tests.helpers.builders import make_incident

SCRIPT = Path(sys.executable).with_name("gpu-console")
T0 = 1_750_003_200.0
_SAMPLE = json.dumps({"padding": "x" * 20_000})  # big evidence, so every change needs new pages on disk


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Take every free block of the file system ``folder`` is on; returns the filler (delete it to free them)."""
    filler = folder / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def _change(n: int) -> IncidentChange:
    incident = make_incident(f"full-{n}", T0 + n, node=f"node{n:02d}")
    evidence = (EvidencePoint(incident.id, T0 + n, _SAMPLE),)
    return IncidentChange(ChangeKind.OPENED, incident, T0 + n, evidence=evidence)


def _wait_until(condition: object, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_changes_refused_by_a_full_disk_are_kept_and_written_when_space_returns(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        errors: list[str] = []
        store = IncidentStore.open(disk / "incidents.sqlite3", on_error=errors.append)
        try:
            store.submit([_change(0)])
            store.flush()
            filler = fill(disk)
            store.submit([_change(n) for n in range(1, 11)])
            store.flush()
            assert store.pending_changes == 10  # refused, not dropped
            assert any("disk is full" in error for error in errors)
            assert store.count(IncidentFilter()) == 1  # readers still work on the full disk
            filler.unlink()  # space returns
            assert _wait_until(lambda: store.pending_changes == 0), "the queued changes were not retried"
            assert store.count(IncidentFilter()) == 11
            assert all(store.evidence_count(f"full-{n}") == 1 for n in range(11))
        finally:
            store.close()
        assert store.unsaved_changes == 0


def test_what_a_full_disk_never_takes_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="console.store")
    with small_tmpfs(tmp_path / "disk") as disk:
        store = IncidentStore.open(disk / "incidents.sqlite3")
        store.submit([_change(0)])
        store.flush()
        fill(disk)
        for n in range(1, 6):
            store.submit([_change(n)])
        store.close()
        assert store.unsaved_changes == 5
        lost = [record.getMessage() for record in caplog.records if "are lost" in record.getMessage()]
        assert lost == [lost[0]] and lost[0].startswith("5 incident changes could not be written")


@contextlib.contextmanager
def _poll(db: Path, duration_s: float) -> Iterator[subprocess.Popen[str]]:
    poll = subprocess.Popen(
        [str(SCRIPT), "poll", "--demo", "--seed", "7", "--db", str(db), "--duration", str(duration_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with poll:
        try:
            yield poll
        finally:
            if poll.poll() is None:
                poll.kill()
                poll.communicate(timeout=30)


@contextlib.contextmanager
def _wal_pinned(db: Path) -> Iterator[None]:
    """A reader holding a snapshot: the WAL cannot start over, so every commit needs new blocks on the disk."""
    assert _wait_until(lambda: Path(f"{db}-wal").exists(), timeout_s=60), "poll did not open its database"
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        assert _wait_until(lambda: _snapshot(reader), timeout_s=60), "poll did not create its tables"
        yield
    finally:
        reader.close()


def _snapshot(reader: sqlite3.Connection) -> bool:
    """Begin a read transaction on the migrated file (False while poll is still creating its tables)."""
    reader.execute("BEGIN")
    try:
        reader.execute("SELECT count(*) FROM ledger").fetchone()  # the last table the migrations create
    except sqlite3.OperationalError:
        reader.execute("ROLLBACK")
        return False
    return True


def test_poll_on_a_disk_that_stays_full_says_unsaved_changes_and_exits_3(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", size="4m") as disk:
        db = disk / "incidents.sqlite3"
        with _poll(db, 4) as poll, _wal_pinned(db):
            fill(disk)
            out, err = poll.communicate(timeout=120)
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["unsaved_changes"] > 0
        assert poll.returncode == 3
        assert f"{summary['unsaved_changes']} incident changes could not be saved" in err
        assert "Traceback" not in err


def test_poll_saves_everything_once_space_returns_and_exits_0(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", size="4m") as disk:
        db = disk / "incidents.sqlite3"
        with _poll(db, 8) as poll:
            with _wal_pinned(db):
                filler = fill(disk)
                time.sleep(2)
            filler.unlink()
            out, err = poll.communicate(timeout=120)
        summary = json.loads(out.strip().splitlines()[-1])
        assert poll.returncode == 0, err
        assert summary["unsaved_changes"] == 0
        with IncidentStore.open_readonly(db) as store:
            assert store.count(IncidentFilter()) == summary["incidents_opened"]


def test_past_the_in_memory_bound_the_oldest_changes_are_dropped_counted_and_reported(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        errors: list[str] = []
        store = IncidentStore.open(disk / "incidents.sqlite3", on_error=errors.append, max_pending_changes=3)
        store.submit([_change(0)])
        store.flush()
        fill(disk)
        for n in range(1, 6):
            store.submit([_change(n)])
            store.flush()
        assert store.pending_changes == 3
        assert store.unsaved_changes == 2
        assert any("2 incident changes not saved" in e or "1 incident changes not saved" in e for e in errors)
        assert any("more than 3 changes were waiting" in error for error in errors)
        store.close()
        assert store.unsaved_changes == 5  # the two dropped and the three still refused at close
