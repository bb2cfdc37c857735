"""Issue 18 item 1: a merge cannot break the log. Bad rows are refused at the boundary with their reason, rows
damaged some other way are shown as damaged (never a traceback), and ``incidents repair`` removes them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from console.incidents.model import ChangeKind, EvidencePoint, IncidentChange
from console.store import IncidentFilter, IncidentStore
from tests.helpers.builders import make_incident

SCRIPT = Path(sys.executable).with_name("gpu-console")
T0 = 1_750_003_200.0


def gpu_console(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def _log(path: Path, *ids: str) -> Path:
    with IncidentStore.open(path) as store:
        for n, incident_id in enumerate(ids):
            incident = make_incident(incident_id, T0 + n, node=f"node{n:02d}")
            evidence = (EvidencePoint(incident_id, T0 + n, "{}"),)
            store.submit([IncidentChange(ChangeKind.OPENED, incident, T0 + n, evidence=evidence)])
    return path


def _damage(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE incidents SET severity = 'critical!!' WHERE id = 'bad'",
        "UPDATE incidents SET opened_at = 'yesterday' WHERE id = 'bad'",
        "UPDATE incidents SET status = 'gone' WHERE id = 'bad'",
    ],
)
def test_a_merge_refuses_a_bad_row_with_its_reason_and_the_log_stays_readable(tmp_path: Path, damage: str) -> None:
    mine = _log(tmp_path / "mine.sqlite3", "good-mine")
    other = _log(tmp_path / "other.sqlite3", "bad", "good-other")
    _damage(other, damage)

    merged = gpu_console("incidents", "merge", "--db", str(mine), str(other), "--json")
    _no_traceback(merged)
    assert merged.returncode == 0
    result = json.loads(merged.stdout)
    assert result["incidents_refused"] == 1
    assert result["incidents_added"] == 1
    assert any("'bad'" in reason for reason in result["refusals"])

    for args in (("list",), ("list", "--json"), ("list", "--csv"), ("export",), ("show", "good-other")):
        run = gpu_console("incidents", *args, "--db", str(mine))
        _no_traceback(run)
        assert run.returncode == 0, (args, run.stderr)
        assert "bad" not in run.stdout
    with IncidentStore.open(mine) as store:
        assert {i.id for i in store.iter_incidents(IncidentFilter())} == {"good-mine", "good-other"}
        assert store.evidence_count("bad") == 0  # a refused incident's history is refused with it


def test_a_damaged_stored_row_is_shown_with_its_id_and_repair_removes_it(tmp_path: Path) -> None:
    db = _log(tmp_path / "log.sqlite3", "bad", "good")
    # As an older console's unchecked merge (or a hand edit) could have left it.
    _damage(db, "UPDATE incidents SET severity = 'critical!!' WHERE id = 'bad'")
    _damage(
        db,
        "INSERT INTO timeline (incident_id, time, kind, note, severity, status, count) "
        "VALUES ('good', 'noon', 'opened', '', 9, 'open', 1)",
    )

    for args in (("list",), ("list", "--json"), ("list", "--csv"), ("export", "--json")):
        run = gpu_console("incidents", *args, "--db", str(db))
        _no_traceback(run)
        assert run.returncode == 0, (args, run.stderr)
        assert "damaged incident row [bad]" in run.stderr
        assert "incidents repair" in run.stderr
    shown = gpu_console("incidents", "show", "bad", "--db", str(db))
    _no_traceback(shown)
    assert shown.returncode == 1 and "damaged incident row [bad]: severity 'critical!!'" in shown.stderr
    good = gpu_console("incidents", "show", "good", "--db", str(db))
    _no_traceback(good)
    assert good.returncode == 0

    dry = gpu_console("incidents", "repair", "--dry-run", "--db", str(db), "--json")
    assert json.loads(dry.stdout)["incidents_removed"] == 1
    repaired = gpu_console("incidents", "repair", "--db", str(db), "--json")
    _no_traceback(repaired)
    result = json.loads(repaired.stdout)
    assert result["incidents_removed"] == 1
    assert result["history_removed"] >= 2  # the bad incident's timeline and evidence, and the bad timeline row
    after = gpu_console("incidents", "list", "--db", str(db))
    assert after.returncode == 0 and "damaged" not in after.stderr and "[good]" in after.stdout


def test_the_engine_s_own_bad_write_is_refused_and_reported(tmp_path: Path) -> None:
    errors: list[str] = []
    with IncidentStore.open(tmp_path / "log.sqlite3", on_error=errors.append) as store:
        bad = make_incident("nan-time", float("nan"))
        good = make_incident("fine", T0)
        store.submit([IncidentChange(ChangeKind.OPENED, bad, T0), IncidentChange(ChangeKind.OPENED, good, T0)])
        store.flush()
        assert [i.id for i in store.iter_incidents(IncidentFilter())] == ["fine"]
        assert store.failed_writes == 1
    assert any("nan-time" in error and "opened_at" in error for error in errors)
