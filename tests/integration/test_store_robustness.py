"""Issue 7 item 3: the store survives damaged files, newer schemas, unwritable paths, full disks and SIGKILL.

Failures that need a process of their own (a file-size limit standing in for a full disk, a SIGKILL) run in a real
child process that uses the real store.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.store import IncidentFilter, IncidentStore, StoreError
from console.store.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]

# Shared by the child processes: build an OPENED change for id N with a few evidence samples.
CHILD_PRELUDE = """
import json, os, resource, signal, sys, time
from pathlib import Path
from console.incidents.model import (
    ChangeKind, EvidencePoint, Incident, IncidentChange, IncidentContext, Severity, Status,
)
from console.store import IncidentFilter, IncidentStore, StoreError

def change(incident_id, t, evidence=3, blob=""):
    inc = Incident(id=incident_id, rule="xid", code="79", kind="xid", severity=Severity.CRITICAL,
                   status=Status.OPEN, title=f"GPU lost {incident_id}", detail="Xid 79",
                   context=IncidentContext(site="fra", provider="gpucloud", node="node01", gpu_index=0),
                   opened_at=t, last_seen_at=t)
    points = tuple(EvidencePoint(incident_id, t - i, json.dumps({"t": t - i, "blob": blob}))
                   for i in range(evidence))
    return IncidentChange(ChangeKind.OPENED, inc, t, evidence=points)
"""


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def _fill(path: Path, count: int = 200) -> None:
    result = run_child(
        "s = IncidentStore.open(Path(sys.argv[1]))\n"
        "s.submit([change(f'i{n}', 1e9 + n) for n in range(int(sys.argv[2]))])\n"
        "s.close()\n",
        str(path),
        str(count),
    )
    assert result.returncode == 0, result.stderr


def test_a_file_that_is_not_a_database_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    garbage = b"this is not an SQLite database\n" * 200
    path.write_bytes(garbage)
    with IncidentStore.open(path) as store:
        recovered = store.recovered
        assert recovered is not None
        assert recovered.moved_to.name.startswith("incidents.sqlite3.corrupt-")
        assert recovered.moved_to.read_bytes() == garbage  # kept for the operator, untouched
        assert str(path) in recovered.message
        assert "moved" in recovered.message
        assert store.count(IncidentFilter()) == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_damaged_pages_are_detected_at_open_and_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    _fill(path)
    data = bytearray(path.read_bytes())
    page = 4096
    for number in range(3, len(data) // page, 2):  # keep the header, wreck every other b-tree page
        data[number * page : number * page + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with IncidentStore.open(path) as store:
        assert store.recovered is not None
        assert "malformed" in store.recovered.reason or "quick_check" in store.recovered.reason
        assert store.recovered.moved_to.exists()
        assert store.count(IncidentFilter()) == 0


def test_a_healthy_database_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    _fill(path, 20)
    with IncidentStore.open(path) as store:
        assert store.recovered is None
        assert store.count(IncidentFilter()) == 20
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name] == []


def test_a_newer_schema_version_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    IncidentStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # as a newer console might leave it: nothing may change it
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"schema version 99.*\(version {SCHEMA_VERSION}\)"):
        IncidentStore.open(path)
    assert path.read_bytes() == before  # refused, not "recovered"
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name] == []


def test_a_path_below_a_regular_file_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder") as caught:
        IncidentStore.open(blocker / "incidents.sqlite3")
    assert str(blocker) in str(caught.value)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, also for root (immutable attribute), or skip where that is impossible."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        try:
            yield
        finally:
            path.parent.chmod(0o755)
            path.chmod(0o644)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("running as root without the immutable attribute: cannot make a file read-only here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)


def test_a_read_only_database_gives_a_clear_error_at_open(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    IncidentStore.open(path).close()
    with read_only(path), pytest.raises(StoreError, match=r"incident database .*incidents\.sqlite3"):
        IncidentStore.open(path)


def test_a_full_disk_at_open_gives_a_clear_error(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes every write past the limit fail as a full disk would (SIGXFSZ ignored -> EFBIG).
    result = run_child(
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    IncidentStore.open(Path(sys.argv[1]))\n"
        "except StoreError as exc:\n"
        "    print('StoreError:', exc)\n"
        "    sys.exit(3)\n",
        str(tmp_path / "incidents.sqlite3"),
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "StoreError: cannot open the incident database" in result.stdout
    assert "disk full" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_write_failure_is_reported_and_the_writer_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    result = run_child(
        """
errors = []
store = IncidentStore.open(Path(sys.argv[1]), on_error=errors.append)
store.submit([change(f"ok{n}", 1e9 + n) for n in range(20)])
store.flush()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
largest = max(f.stat().st_size for f in Path(sys.argv[1]).parent.iterdir())
resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 8192, resource.RLIM_INFINITY))  # the disk fills up
store.submit([change("too-big", 2e9, evidence=5, blob="x" * 400_000)])
store.flush()
failed = {"errors": errors, "alive": store.writer_alive, "last_error": store.last_error}
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space is back
store.submit([change("after", 3e9)])
store.flush()
print(json.dumps({**failed, "ids": [i.id for i in store.query(IncidentFilter(), limit=50).incidents]}))
store.close()
""",
        str(path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["alive"] is True
    assert len(report["errors"]) >= 1
    assert report["last_error"].startswith(f"writing to the incident database {path} failed")
    assert "not saved" in report["last_error"]
    # Issue 18: the refused change stayed queued and went in, before the newer one, once there was room again.
    assert report["ids"][:2] == ["after", "too-big"]
    assert {f"ok{n}" for n in range(20)} <= set(report["ids"])
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM evidence WHERE incident_id LIKE 'ok%'").fetchone()[0] == 60
    finally:
        conn.close()


def test_sigkill_while_writing_keeps_every_flushed_incident(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD_PRELUDE
            + """
store = IncidentStore.open(Path(sys.argv[1]))
n = 0
while True:
    batch = [change(f"k{n + i}", 1e9 + n + i, evidence=4, blob="y" * 2000) for i in range(5)]
    for item in batch:
        store.submit([item])
    n += 5
    store.flush()
    print(" ".join(c.incident.id for c in batch), flush=True)
""",
            str(path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    reported: list[str] = []
    try:
        deadline = time.monotonic() + 30
        assert child.stdout is not None
        while len(reported) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported.extend(line.split())
        os.kill(child.pid, signal.SIGKILL)  # mid-write: the loop never pauses
        rest, errors = child.communicate(timeout=10)
        reported.extend(rest.split())  # lines printed after flush but before the kill count too
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert len(reported) >= 300, errors
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with IncidentStore.open(path) as store:
        assert store.recovered is None
        missing = [incident_id for incident_id in reported if store.get(incident_id) is None]
        assert missing == []
        assert all(len(store.evidence(incident_id)) == 4 for incident_id in reported[:: len(reported) // 10])
