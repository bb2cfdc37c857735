"""Issue 18 item 7 (and 3's readers): reading the incident log never writes it. An archived log on a read-only
mount can be listed, and a damaged file is reported as it is: no rename, no new database beside it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.incidents.model import ChangeKind, IncidentChange
from console.store import IncidentStore
from tests.helpers.builders import make_incident

SCRIPT = Path(sys.executable).with_name("gpu-console")
T0 = 1_750_003_200.0


def gpu_console(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def _log(path: Path) -> Path:
    with IncidentStore.open(path) as store:
        store.submit([IncidentChange(ChangeKind.OPENED, make_incident("archived-1", T0), T0)])
    return path


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``target`` (needs root, as CI runs; permissions do not stop root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only mount needs root (CI runs the suite as root)")
    target.mkdir()
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(target)], capture_output=True, text=True, check=False
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remount.stderr.strip()}")
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_an_archived_log_on_a_read_only_mount_can_be_listed_shown_and_exported(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    _log(archive / "incidents.sqlite3")
    with read_only_mount(archive, tmp_path / "ro") as mounted:
        db = str(mounted / "incidents.sqlite3")
        for args in (("list",), ("list", "--json"), ("show", "archived-1"), ("export",), ("stats",)):
            result = gpu_console("incidents", *args, "--db", db)
            assert result.returncode == 0, (args, result.stderr)
            assert "Traceback" not in result.stderr
        assert "archived-1" in gpu_console("incidents", "list", "--db", db).stdout
        fixes = gpu_console("fixes", "stats", "--db", db)
        assert fixes.returncode == 0, fixes.stderr
        refused = gpu_console("incidents", "repair", "--db", db)
        assert refused.returncode == 2 and "for writing" in refused.stderr
    assert sorted(path.name for path in archive.iterdir()) == ["incidents.sqlite3"]


def test_listing_a_damaged_file_reports_it_and_leaves_it_exactly_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    for args in (("list",), ("show", "x"), ("export",)):
        result = gpu_console("incidents", *args, "--db", str(db))
        assert result.returncode == 2
        assert "is damaged" in result.stderr and "left as it is" in result.stderr
    assert db.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["incidents.sqlite3"]  # no rename, no new file
