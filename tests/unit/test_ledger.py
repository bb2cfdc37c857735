"""The fix ledger on real SQLite files: each operator step is one entry with the incident's context, and whether a
fix held is derived from what opened after it: did_not_hold with a recurrence in the window, held once the window
passed without one, pending before; stats per provider, model, driver, rule, code and action; merge without
duplicates; the console's stale copy never undoes a resolution made elsewhere."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from console.incidents.model import ChangeKind, Incident, IncidentChange, Outcome, Status
from console.store import IncidentFilter, IncidentStore
from console.store.ledger import EntryKind, Verdict
from tests.helpers.builders import make_incident

T0 = 1_750_000_000.0
H = 3600.0
WINDOW = 72 * H


def xid79(incident_id: str, opened_at: float, **fields: Any) -> Incident:
    return make_incident(incident_id, opened_at, gpu_uuid=fields.pop("gpu_uuid", "GPU-A"), **fields)


def opened(incident: Incident) -> IncidentChange:
    return IncidentChange(ChangeKind.OPENED, incident, incident.opened_at)


def resolved(
    incident: Incident, at: float, action: str, outcome: Outcome = Outcome.FIXED, who: str = "alice"
) -> IncidentChange:
    done = replace(incident, status=Status.RESOLVED, resolved_at=at, outcome=outcome, resolution_note=f"did {action}")
    return IncidentChange(ChangeKind.RESOLVED, done, at, f"did {action}", operator=who, action=action)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with IncidentStore.open(tmp_path / "incidents.sqlite3") as opened_store:
        yield opened_store


def test_each_operator_step_is_one_entry_with_the_incident_context(store: IncidentStore) -> None:
    incident = xid79("a", T0)
    acked = replace(incident, status=Status.ACKNOWLEDGED, acknowledged_at=T0 + 60)
    store.submit([opened(incident), IncidentChange(ChangeKind.ACKNOWLEDGED, acked, T0 + 60, "looking", operator="bob")])
    store.submit([resolved(acked, T0 + 120, "gpu_reset")])
    auto = replace(xid79("b", T0, gpu_uuid="GPU-B"), status=Status.RESOLVED, outcome=Outcome.AUTO_CLEARED)
    store.submit([opened(xid79("b", T0, gpu_uuid="GPU-B")), IncidentChange(ChangeKind.RESOLVED, auto, T0 + 5)])
    store.flush()
    entries = store.ledger_entries(incident_id="a")
    assert [(e.kind, e.who, e.action, e.note) for e in entries] == [
        (EntryKind.ACKNOWLEDGE, "bob", "", "looking"),
        (EntryKind.RESOLVE, "alice", "gpu_reset", "did gpu_reset"),
    ]
    fix = entries[1]
    assert (fix.provider, fix.site, fix.node, fix.gpu_uuid) == ("hyperscaler", "iad-hyperscaler", "node01", "GPU-A")
    assert (fix.gpu_model, fix.driver, fix.rule, fix.code, fix.outcome) == (
        "NVIDIA H100 80GB HBM3", "590.48.01", "xid", "79", "fixed"
    )  # fmt: skip
    assert store.ledger_entries(incident_id="b") == []  # the engine clearing an incident is no fix


def test_a_recurrence_inside_the_window_means_the_fix_did_not_hold(store: IncidentStore) -> None:
    first = xid79("first", T0)
    store.submit([opened(first), resolved(first, T0 + H, "gpu_reset")])
    store.submit([opened(xid79("again", T0 + 5 * H))])  # the same Xid on the same GPU, 4 h after the reset
    store.submit([opened(xid79("other-gpu", T0 + 2 * H, gpu_uuid="GPU-B"))])  # elsewhere: not a recurrence
    store.flush()
    [fix] = store.verified_fixes(WINDOW, T0 + 10 * H)
    assert (fix.verdict, fix.recurrence) == (Verdict.DID_NOT_HOLD, "again")


def test_without_a_recurrence_a_fix_is_pending_then_held_once_the_window_passed(store: IncidentStore) -> None:
    first = xid79("first", T0)
    store.submit([opened(first), resolved(first, T0 + H, "node_reboot")])
    store.submit([opened(xid79("later", T0 + H + WINDOW + 60))])  # after the window: a new fault, not a relapse
    store.submit([opened(xid79("other-code", T0 + 2 * H, code="48", rule="xid"))])
    store.flush()
    assert store.verified_fixes(WINDOW, T0 + 2 * H)[0].verdict is Verdict.PENDING
    assert store.verified_fixes(WINDOW, T0 + H + WINDOW)[0].verdict is Verdict.HELD
    shorter = store.verified_fixes(WINDOW * 10, T0 + H + WINDOW * 10)[0]  # a longer window sees the later one
    assert (shorter.verdict, shorter.recurrence) == (Verdict.DID_NOT_HOLD, "later")


def test_a_node_level_fix_is_verified_on_its_node_and_not_fixed_never_held(store: IncidentStore) -> None:
    down = make_incident("down", T0, gpu_index=None, rule="node_unreachable", code="", kind="node")
    store.submit([opened(down), resolved(down, T0 + 60, "node_reboot")])
    store.submit([opened(make_incident("down-again", T0 + H, gpu_index=None, rule="node_unreachable", code=""))])
    other = make_incident("tried", T0, node="node07", rule="psu_health", code="", gpu_index=None)
    store.submit([opened(other), resolved(other, T0 + 60, "replace_part", Outcome.NOT_FIXED)])
    store.flush()
    verdicts = {f.entry.incident_id: (f.verdict, f.recurrence) for f in store.verified_fixes(WINDOW, T0 + 2 * WINDOW)}
    assert verdicts == {"down": (Verdict.DID_NOT_HOLD, "down-again"), "tried": (Verdict.DID_NOT_HOLD, None)}


def test_stats_group_by_provider_model_driver_rule_code_and_action(store: IncidentStore) -> None:
    now = T0 + 10 * WINDOW
    for n in range(3):  # three resets that held at aws, one that did not
        incident = xid79(f"held-{n}", T0 + n * 2 * WINDOW, gpu_uuid=f"GPU-{n}", provider="aws")
        store.submit([opened(incident), resolved(incident, incident.opened_at + 60, "gpu_reset")])
    bad = xid79("bad", T0, gpu_uuid="GPU-9", provider="aws")
    store.submit([opened(bad), resolved(bad, T0 + 60, "gpu_reset"), opened(xid79("relapse", T0 + H, gpu_uuid="GPU-9"))])
    cw = xid79("cw", now - H, provider="coreweave", gpu_uuid="GPU-C")
    store.submit([opened(cw), resolved(cw, now - 30, "node_reboot")])
    store.flush()
    rows = {(r.provider, r.action): r for r in store.fix_stats(WINDOW, now)}
    aws = rows[("aws", "gpu_reset")]
    assert (aws.attempts, aws.held, aws.did_not_hold, aws.pending) == (4, 3, 1, 0)
    assert aws.success_rate == pytest.approx(0.75)
    assert (aws.gpu_model, aws.driver, aws.rule, aws.code) == ("NVIDIA H100 80GB HBM3", "590.48.01", "xid", "79")
    fresh = rows[("coreweave", "node_reboot")]
    assert (fresh.attempts, fresh.pending, fresh.success_rate) == (1, 1, None)


def test_merge_carries_ledger_entries_without_duplicates(tmp_path: Path) -> None:
    mine_path, theirs_path = tmp_path / "mine.sqlite3", tmp_path / "theirs.sqlite3"
    incident = xid79("shared", T0)
    with IncidentStore.open(theirs_path) as theirs:
        theirs.submit([opened(incident), resolved(incident, T0 + 60, "gpu_reset", who="bob")])
    with IncidentStore.open(mine_path) as mine:
        mine.submit([opened(incident)])
        mine.flush()
        assert mine.merge_from(theirs_path).ledger_added == 1
        assert mine.merge_from(theirs_path).ledger_added == 0
        assert [(e.who, e.action) for e in mine.ledger_entries(gpu_uuid="GPU-A")] == [("bob", "gpu_reset")]
        assert mine.get("shared").status is Status.RESOLVED  # type: ignore[union-attr]


def test_a_stale_open_copy_never_undoes_a_resolution_or_an_acknowledgement(store: IncidentStore) -> None:
    incident = xid79("a", T0)
    store.submit([opened(incident), resolved(incident, T0 + 60, "gpu_reset")])
    store.submit([IncidentChange(ChangeKind.UPDATED, replace(incident, count=9, last_seen_at=T0 + 90), T0 + 90)])
    other = xid79("b", T0, gpu_uuid="GPU-B")
    acked = replace(other, status=Status.ACKNOWLEDGED, acknowledged_at=T0 + 10)
    store.submit([opened(other), IncidentChange(ChangeKind.ACKNOWLEDGED, acked, T0 + 10, operator="bob")])
    store.submit([IncidentChange(ChangeKind.UPDATED, replace(other, count=4, last_seen_at=T0 + 95), T0 + 95)])
    store.flush()
    kept = store.get("a")
    assert kept is not None and (kept.status, kept.count, kept.outcome) == (Status.RESOLVED, 1, Outcome.FIXED)
    still = store.get("b")
    assert still is not None and (still.status, still.acknowledged_at, still.count) == (Status.ACKNOWLEDGED, T0 + 10, 4)
    assert store.count(IncidentFilter(status=Status.OPEN)) == 0


def test_the_recurrence_is_the_same_whichever_order_fixes_and_incidents_arrive_in(tmp_path: Path) -> None:
    """The link to the next incident is kept by the database (a fix recorded before or after the incidents that
    follow it, merged in from another file): it must equal a brute-force search over what is stored."""
    rng = random.Random(14)
    incidents = [
        xid79(f"i{n}", T0 + rng.uniform(0, 10 * WINDOW), gpu_uuid=rng.choice(("GPU-A", "GPU-B", None)))
        for n in range(120)
    ]
    incidents = [replace(i, code=rng.choice(("79", "48"))) for i in incidents]
    fixes = [
        resolved(i, i.opened_at + rng.uniform(1, 2 * H), rng.choice(("gpu_reset", "node_reboot")))
        for i in incidents[:60]
    ]
    changes = [opened(i) for i in incidents] + fixes
    rng.shuffle(changes)
    half = len(changes) // 2
    mine_path, theirs_path = tmp_path / "mine.sqlite3", tmp_path / "theirs.sqlite3"
    with IncidentStore.open(theirs_path) as theirs:
        theirs.submit(changes[half:])
    now = T0 + 12 * WINDOW
    with IncidentStore.open(mine_path) as mine:
        for change in changes[:half]:
            mine.submit([change])
        mine.flush()
        mine.merge_from(theirs_path)
        found = {fix.entry.incident_id: (fix.verdict, fix.recurrence) for fix in mine.verified_fixes(WINDOW, now)}
    expected = {}
    for fix in fixes:
        fixed = fix.incident
        later = sorted(
            (i.opened_at, i.id)
            for i in incidents
            if (i.context.gpu_uuid, i.rule, i.code) == (fixed.context.gpu_uuid, fixed.rule, fixed.code)
            and (i.context.gpu_uuid is not None or i.context.node == fixed.context.node)
            and fix.time < i.opened_at <= fix.time + WINDOW
        )
        recurrence = later[0][1] if later else None
        expected[fixed.id] = (Verdict.DID_NOT_HOLD if recurrence else Verdict.HELD, recurrence)
    assert found == expected
    assert sum(1 for verdict, _ in found.values() if verdict is Verdict.DID_NOT_HOLD) >= 5  # both kinds occur
