"""``gpu-console incidents ...`` run as the real console script against a real database file."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from console.incidents.model import ChangeKind, EvidencePoint, Incident, IncidentChange, Outcome, Severity, Status
from console.store import IncidentStore
from tests.helpers.builders import make_incident

SCRIPT = Path(sys.executable).with_name("gpu-console")
T0 = 1_750_003_200.0  # an hour boundary
ISO_T0_PLUS_25 = datetime.fromtimestamp(T0 + 25, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
LIST_FIELDS = {
    "id",
    "rule",
    "code",
    "severity",
    "status",
    "site",
    "provider",
    "node",
    "gpu_uuid",
    "gpu_index",
    "title",
    "opened_at",
    "last_seen_at",
    "resolved_at",
    "count",
    "recommended_action",
}


def make(incident_id: str, opened_at: float, *, site: str, provider: str, **changes: Any) -> Incident:
    return make_incident(
        incident_id,
        opened_at,
        site=site,
        provider=provider,
        node=f"{site}-node01",
        gpu_index=2,
        gpu_uuid=f"GPU-{incident_id}",
        serial=None,
        vbios=None,
        pci_bus_id=None,
        **{
            "title": "GPU has fallen off the bus (Xid 79)",
            "detail": "NVRM: Xid (PCI:0000:18:00): 79, GPU has fallen off the bus.",
            "last_seen_at": opened_at + 30,
            "recommended_action": "drain the node, reset the GPU; RMA if it recurs",
            **changes,
        },
    )


def gpu_console(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "incidents.sqlite3"
    fixed_at_gpucloud = make(
        "fixed-gpucloud",
        T0 + 10,
        site="fra",
        provider="gpucloud",
        status=Status.RESOLVED,
        outcome=Outcome.FIXED,
        resolution_note="reseated the HGX tray",
        resolved_at=T0 + 900,
    )
    open_here = make("open-hyperscaler", T0 + 20, site="iad", provider="hyperscaler")
    thermal = make(
        "thermal-1",
        T0 + 30,
        site="fra",
        provider="gpucloud",
        rule="thermal_margin",
        code="",
        kind="thermal",
        severity=Severity.WARNING,
        title="=cmd|' /C calc'!A0 thermal margin low",
    )
    with IncidentStore.open(path) as store:
        for inc in (fixed_at_gpucloud, open_here, thermal):
            evidence = (EvidencePoint(inc.id, inc.opened_at - 1, "{}"), EvidencePoint(inc.id, inc.opened_at, "{}"))
            store.submit(
                [IncidentChange(ChangeKind.OPENED, replace(inc, status=Status.OPEN), inc.opened_at, evidence=evidence)]
            )
        store.submit([IncidentChange(ChangeKind.RESOLVED, fixed_at_gpucloud, T0 + 900, note="operator")])
        for hour in range(10):
            store.record_exposure("iad", "hyperscaler", "NVIDIA H100 80GB HBM3", 8 * 3600, T0 + hour * 3600)
            store.record_exposure("fra", "gpucloud", "NVIDIA H100 80GB HBM3", 4 * 3600, T0 + hour * 3600)
    return path


def test_list_json_prints_every_documented_field_newest_first(db: Path) -> None:
    result = gpu_console("incidents", "list", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert [item["id"] for item in items] == ["thermal-1", "open-hyperscaler", "fixed-gpucloud"]
    for item in items:
        assert set(item) >= LIST_FIELDS
    fixed = items[2]
    assert fixed["status"] == "resolved"
    assert fixed["severity"] == "critical"
    assert fixed["gpu_index"] == 2
    assert fixed["resolved_at"] == T0 + 900


def test_list_filters_combine(db: Path) -> None:
    result = gpu_console(
        "--db", str(db), "incidents", "list", "--site", "fra", "--status", "open", "--severity", "warning", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert [item["id"] for item in json.loads(result.stdout)] == ["thermal-1"]
    by_text = gpu_console("incidents", "list", "--db", str(db), "--text", "HGX tray", "--json")
    assert [item["id"] for item in json.loads(by_text.stdout)] == ["fixed-gpucloud"]
    by_gpu = gpu_console("incidents", "list", "--db", str(db), "--gpu", "GPU-open-hyperscaler", "--json")
    assert [item["id"] for item in json.loads(by_gpu.stdout)] == ["open-hyperscaler"]
    by_time = gpu_console(
        "incidents", "list", "--db", str(db), "--since", str(T0 + 15), "--until", ISO_T0_PLUS_25, "--json"
    )
    assert [item["id"] for item in json.loads(by_time.stdout)] == ["open-hyperscaler"]
    text = gpu_console("incidents", "list", "--db", str(db), "--limit", "1")
    assert text.returncode == 0
    assert "thermal-1" in text.stdout
    assert "open-hyperscaler" not in text.stdout


def test_bad_arguments_give_clear_errors(db: Path, tmp_path: Path) -> None:
    bad_severity = gpu_console("incidents", "list", "--db", str(db), "--severity", "catastrophic")
    assert bad_severity.returncode == 2
    assert "unknown severity 'catastrophic'" in bad_severity.stderr
    bad_time = gpu_console("incidents", "list", "--db", str(db), "--since", "yesterday-ish")
    assert bad_time.returncode == 2
    assert "not a time" in bad_time.stderr
    missing = gpu_console("incidents", "list", "--db", str(tmp_path / "absent.sqlite3"))
    assert missing.returncode == 2
    assert "no incident database at" in missing.stderr
    assert not (tmp_path / "absent.sqlite3").exists()
    assert "Traceback" not in bad_severity.stderr + bad_time.stderr + missing.stderr


def test_show_prints_timeline_evidence_and_seen_before(db: Path) -> None:
    result = gpu_console("incidents", "show", "open-hyperscaler", "--db", str(db))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "GPU has fallen off the bus" in out
    assert "Timeline:" in out
    assert "opened" in out
    assert "Evidence: 2 sample(s)" in out
    # Fixed at gpucloud; this one is at hyperscaler: the fix shows under "elsewhere", never as proven here.
    assert "same provider, GPU model and driver (hyperscaler, NVIDIA H100 80GB HBM3, 590.48.01): 0 seen, 0 fixed" in out
    assert "elsewhere: 1 seen, 1 fixed" in out
    assert "not proven" in out
    as_json = json.loads(gpu_console("incidents", "show", "fixed-gpucloud", "--db", str(db), "--json").stdout)
    assert [entry["kind"] for entry in as_json["timeline"]] == ["opened", "resolved"]
    assert as_json["evidence_count"] == 2
    assert as_json["incident"]["outcome"] == "fixed"
    missing = gpu_console("incidents", "show", "nope", "--db", str(db))
    assert missing.returncode == 1
    assert "no incident with id 'nope'" in missing.stderr


def test_export_csv_to_a_file_is_safe_for_spreadsheets(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    result = gpu_console("incidents", "export", "--db", str(db), "--csv", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert "exported 3 incident(s)" in result.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert {row["id"] for row in rows} == {"thermal-1", "open-hyperscaler", "fixed-gpucloud"}
    thermal = next(row for row in rows if row["id"] == "thermal-1")
    assert thermal["title"] == "'=cmd|' /C calc'!A0 thermal margin low"
    as_json = gpu_console("incidents", "export", "--db", str(db), "--json", "--provider", "gpucloud")
    assert sorted(item["id"] for item in json.loads(as_json.stdout)) == ["fixed-gpucloud", "thermal-1"]


def test_stats_prints_rates_per_thousand_gpu_hours(db: Path) -> None:
    window = ("--since", str(T0), "--until", str(T0 + 10 * 3600))
    result = gpu_console("incidents", "stats", "--db", str(db), *window, "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    by_site = {row["group"]: row for row in stats["by_site"]}
    assert by_site["iad"]["gpu_hours"] == pytest.approx(80)
    assert by_site["iad"]["per_1000_gpu_hours"] == pytest.approx(12.5)
    assert by_site["fra"]["per_1000_gpu_hours"] == pytest.approx(2 / 40 * 1000)
    assert {row["group"] for row in stats["by_provider"]} == {"hyperscaler", "gpucloud"}
    by_kind = {row["group"]: row for row in stats["by_kind"]}
    assert by_kind["xid"]["per_1000_gpu_hours"] == pytest.approx(2 / 120 * 1000)
    text = gpu_console("incidents", "stats", "--db", str(db), *window)
    assert "per 1,000 GPU-h" in text.stdout
    assert "by provider:" in text.stdout


def test_merge_prints_counts_and_never_duplicates(db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    with IncidentStore.open(other) as store:
        store.submit(
            [
                IncidentChange(ChangeKind.OPENED, make("theirs", T0 + 40, site="dgx", provider="onprem"), T0 + 40),
                IncidentChange(
                    ChangeKind.OPENED, make("open-hyperscaler", T0 + 20, site="iad", provider="hyperscaler"), T0 + 20
                ),
            ]
        )
    first = gpu_console("incidents", "merge", str(other), "--db", str(db), "--json")
    assert first.returncode == 0, first.stderr
    counts = json.loads(first.stdout)
    assert counts["incidents_added"] == 1
    assert counts["incidents_unchanged"] == 1
    again = gpu_console("incidents", "merge", str(other), "--db", str(db))
    assert again.returncode == 0
    assert "0 added, 0 updated, 2 unchanged" in again.stdout
    listed = json.loads(gpu_console("incidents", "list", "--db", str(db), "--json").stdout)
    assert sorted(item["id"] for item in listed) == ["fixed-gpucloud", "open-hyperscaler", "theirs", "thermal-1"]
    bad = gpu_console("incidents", "merge", str(tmp_path / "absent.db"), "--db", str(db))
    assert bad.returncode == 2
    assert "no such file" in bad.stderr


def test_a_newer_database_is_refused_by_the_cli(db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    result = gpu_console("incidents", "list", "--db", str(db))
    assert result.returncode == 2
    assert "schema version 7" in result.stderr
    assert "Traceback" not in result.stderr


def test_text_from_nodes_cannot_drive_the_terminal(tmp_path: Path) -> None:
    path = tmp_path / "incidents.sqlite3"
    hostile = "\x1b]0;owned\x07\x1b[2J\x9b31m BMC says hi"
    inc = make("esc", T0, site="fra", provider="gpucloud", title=hostile, detail=hostile)
    with IncidentStore.open(path) as store:
        store.submit([IncidentChange(ChangeKind.OPENED, inc, T0, note=hostile)])
    for args in (("list",), ("show", "esc"), ("list", "--json"), ("show", "esc", "--json"), ("export", "--json")):
        result = gpu_console("incidents", *args, "--db", str(path))
        assert result.returncode == 0, result.stderr
        assert not any(char in result.stdout for char in "\x1b\x07\x9b"), args
    shown = gpu_console("incidents", "show", "esc", "--db", str(path)).stdout
    assert "\\x1b]0;owned\\x07" in shown  # visible as escapes, not obeyed
    listed = json.loads(gpu_console("incidents", "list", "--json", "--db", str(path)).stdout)
    assert listed[0]["title"] == hostile  # JSON keeps the exact text, escaped


CORRELATION_FIELDS = {"parent_id", "scope", "scope_name", "nodes", "symptoms"}


@pytest.fixture
def correlated(tmp_path: Path) -> Path:
    """A cooling-loop fault over three nodes with a thermal slowdown on two of them, and an unrelated Xid."""
    from console.incidents.model import Scope

    path = tmp_path / "correlated.sqlite3"
    root = make_incident(
        "loop-fault",
        T0,
        site="fra",
        provider="gpucloud",
        node="fra-node01",
        gpu_index=None,
        rule="coolant_flow",
        code="",
        kind="cooling",
        title="Coolant flow low on loop fra-loop-2",
        scope=Scope.COOLING_LOOP,
        scope_name="fra-loop-2",
        nodes=("fra-node01", "fra-node02", "fra-node03"),
    )
    slow = [
        make_incident(
            f"slow-{n}",
            T0 + n,
            site="fra",
            provider="gpucloud",
            node=f"fra-node0{n}",
            rule="hw_slowdown",
            code="hw_thermal_slowdown",
            kind="thermal",
            severity=Severity.MAJOR,
            title=f"HW thermal slowdown on fra-node0{n}",
        )
        for n in (1, 2)
    ]
    lone = make("lone-xid", T0 + 5, site="iad", provider="hyperscaler")
    with IncidentStore.open(path) as store:
        store.submit([IncidentChange(ChangeKind.OPENED, inc, inc.opened_at) for inc in (root, *slow, lone)])
        # The second slowdown was grouped under the loop's fault after it opened: an UPDATED change links it.
        store.submit([IncidentChange(ChangeKind.OPENED, replace(slow[0], parent_id=root.id), T0 + 1)])
        store.submit([IncidentChange(ChangeKind.UPDATED, replace(slow[1], parent_id=root.id), T0 + 8)])
    return path


def test_list_json_gives_parent_scope_nodes_and_symptoms(correlated: Path) -> None:
    result = gpu_console("incidents", "list", "--db", str(correlated), "--json")
    assert result.returncode == 0, result.stderr
    items = {item["id"]: item for item in json.loads(result.stdout)}
    assert set(items) == {"loop-fault", "slow-1", "slow-2", "lone-xid"}
    for item in items.values():
        assert set(item) >= LIST_FIELDS | CORRELATION_FIELDS
    root = items["loop-fault"]
    assert root["parent_id"] is None
    assert (root["scope"], root["scope_name"]) == ("cooling_loop", "fra-loop-2")
    assert root["nodes"] == ["fra-node01", "fra-node02", "fra-node03"]
    assert root["symptoms"] == 2
    slow = items["slow-2"]
    assert slow["parent_id"] == "loop-fault"
    assert (slow["scope"], slow["scope_name"], slow["nodes"], slow["symptoms"]) == (
        "gpu",
        "fra-node02",
        ["fra-node02"],
        0,
    )
    lone = items["lone-xid"]
    assert (lone["parent_id"], lone["scope"], lone["symptoms"]) == (None, "gpu", 0)


def test_list_roots_leaves_out_symptoms_in_every_format(correlated: Path) -> None:
    as_json = gpu_console("incidents", "list", "--db", str(correlated), "--roots", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [item["id"] for item in json.loads(as_json.stdout)] == ["lone-xid", "loop-fault"]
    as_csv = gpu_console("incidents", "list", "--db", str(correlated), "--roots", "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [row["id"] for row in rows] == ["lone-xid", "loop-fault"]
    assert rows[1]["symptoms"] == "2"
    assert json.loads(rows[1]["nodes"]) == ["fra-node01", "fra-node02", "fra-node03"]
    table = gpu_console("incidents", "list", "--db", str(correlated), "--roots")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 2
    assert "slow-" not in table.stdout
    loop_line = next(line for line in lines if "[loop-fault]" in line)
    assert "cooling_loop:fra-loop-2[3]" in loop_line
    assert " +2 " in loop_line
    everything = gpu_console("incidents", "list", "--db", str(correlated)).stdout
    slow_line = next(line for line in everything.splitlines() if "[slow-1]" in line)
    assert " ^ " in slow_line  # a symptom; show gives its root
    assert " gpu " in slow_line
    exported = gpu_console("incidents", "export", "--db", str(correlated), "--roots", "--json")
    assert sorted(item["id"] for item in json.loads(exported.stdout)) == ["lone-xid", "loop-fault"]


def test_show_prints_the_tree_of_a_root_and_of_a_symptom(correlated: Path) -> None:
    root = gpu_console("incidents", "show", "loop-fault", "--db", str(correlated))
    assert root.returncode == 0, root.stderr
    out = root.stdout
    assert "Timeline:" in out and "Seen before" in out  # everything show printed before is still there
    assert "nodes: fra-node01, fra-node02, fra-node03" in out
    tree = out[out.index("Correlation") :].splitlines()[1:4]
    assert tree[0].startswith("  * loop-fault  cooling_loop fra-loop-2  nodes: fra-node01, fra-node02, fra-node03")
    assert "2 symptom(s)" in tree[0]
    assert tree[1].startswith("      slow-2  gpu fra-node02  nodes: fra-node02")  # newest first, indented
    assert tree[2].startswith("      slow-1  gpu fra-node01")
    symptom = gpu_console("incidents", "show", "slow-1", "--db", str(correlated)).stdout
    tree = symptom[symptom.index("Correlation") :].splitlines()[1:4]
    assert tree[0].startswith("  loop-fault  cooling_loop fra-loop-2")  # the root it belongs to, above it
    assert tree[2].startswith("      * slow-1  gpu fra-node01")  # this one, marked
    lone = gpu_console("incidents", "show", "lone-xid", "--db", str(correlated)).stdout
    assert lone[lone.index("Correlation") :].splitlines()[1].startswith("  * lone-xid  gpu iad-node01")
    as_json = json.loads(gpu_console("incidents", "show", "slow-1", "--db", str(correlated), "--json").stdout)
    assert as_json["incident"]["parent_id"] == "loop-fault"
    assert as_json["parent"]["id"] == "loop-fault"
    assert as_json["parent"]["symptoms"] == 2
    root_json = json.loads(gpu_console("incidents", "show", "loop-fault", "--db", str(correlated), "--json").stdout)
    assert [child["id"] for child in root_json["children"]] == ["slow-2", "slow-1"]
    assert root_json["incident"]["symptoms"] == 2
    assert root_json["parent"] is None
