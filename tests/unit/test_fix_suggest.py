"""What to try next: fixes proven here (same provider, GPU model and driver) ranked by verified success, then
evidence from elsewhere never called proven here, then the catalog's action; the escalation ladder moves its next
step first once the lower steps did not hold on this GPU; repeated hardware Xids flag the GPU. And the catalog
files: every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.incidents.xid import load_xid_catalog
from console.remediation.catalog import ACTIONS_PATH, LADDERS_PATH, CatalogError, load_catalog
from console.remediation.suggest import Source, suggest
from console.store import IncidentStore
from tests.unit.test_ledger import T0, WINDOW, H, opened, resolved, xid79

CATALOG = load_catalog()
XIDS = load_xid_catalog()
NOW = T0 + 20 * WINDOW


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with IncidentStore.open(tmp_path / "incidents.sqlite3") as opened_store:
        yield opened_store


def _fix(store: IncidentStore, n: int, action: str, *, relapse: bool, **fields: Any) -> None:
    """An Xid 79 fixed with ``action`` at ``T0 + n`` windows; with ``relapse`` it came back an hour later."""
    gpu = fields.pop("gpu_uuid", f"GPU-{action}-{n}")
    start = T0 + n * 2 * WINDOW
    incident = xid79(f"{action}-{n}", start, gpu_uuid=gpu, **fields)
    store.submit([opened(incident), resolved(incident, start + 60, action)])
    if relapse:
        store.submit([opened(xid79(f"{action}-{n}-again", start + H, gpu_uuid=gpu, **fields))])


def test_a_held_action_ranks_above_one_that_did_not_hold_and_elsewhere_is_never_proven_here(
    store: IncidentStore,
) -> None:
    for n in range(3):
        _fix(store, n, "node_reboot", relapse=False)  # here: held 3 of 3
        _fix(store, n, "gpu_reset", relapse=True)  # here: held 0 of 3
    for n in range(4):  # elsewhere, a reseat held every time, on another provider
        _fix(store, n, "reseat", relapse=False, provider="gpucloud")
    current = xid79("now", NOW - H, gpu_uuid="GPU-NEW")
    store.submit([opened(current)])
    store.flush()
    found = suggest(store, current, CATALOG, XIDS, now=NOW)
    ranked = [(s.action, s.proven_here, s.attempts, s.held, s.source) for s in found.ranked]
    assert ranked == [
        ("node_reboot", True, 3, 3, Source.LEDGER),
        ("gpu_reset", True, 3, 0, Source.LEDGER),
        ("reseat", False, 4, 4, Source.LEDGER),  # 100 % elsewhere still ranks below what is proven here
    ]
    assert found.ranked[0].success_rate == 1.0 and found.ranked[1].success_rate == 0.0
    assert found.suspect_hardware is None


def test_with_no_record_the_catalog_action_for_the_code_is_offered(store: IncidentStore) -> None:
    current = xid79("now", NOW, gpu_uuid="GPU-NEW")
    store.submit([opened(current)])
    store.flush()
    found = suggest(store, current, CATALOG, XIDS, now=NOW)
    # Xid 79's bucket is RESTART_BM: a reboot, from the catalog, proven nowhere
    assert [(s.action, s.source, s.proven_here, s.attempts) for s in found.ranked] == [
        ("node_reboot", Source.CATALOG, False, 0)
    ]


def test_the_ladder_moves_its_next_step_first_once_the_lower_ones_did_not_hold_on_this_gpu(
    store: IncidentStore,
) -> None:
    for n in range(3):
        _fix(store, n, "node_reboot", relapse=False)  # reboots held on other GPUs here...
    _fix(store, 5, "node_reboot", relapse=True, gpu_uuid="GPU-SICK")  # ...but not on this one
    current = xid79("now", NOW, gpu_uuid="GPU-SICK")
    store.submit([opened(current)])
    store.flush()
    found = suggest(store, current, CATALOG, XIDS, now=NOW)
    first, *rest = found.ranked
    assert (first.action, first.escalated, first.source) == ("reseat", True, Source.CATALOG)  # xid:79's next step
    assert rest[-1].action == "node_reboot" and rest[-1].failed_on_this_gpu == 1
    assert [f.verdict for f in found.earlier_fixes] == ["did_not_hold"]


def test_hardware_xids_on_several_days_flag_the_gpu_as_suspect(store: IncidentStore) -> None:
    for day in range(3):
        store.submit([opened(xid79(f"d{day}", T0 + day * 86400, gpu_uuid="GPU-FLAKY", code="48"))])
    store.submit([opened(xid79("same-day", T0 + 3 * 86400, gpu_uuid="GPU-OK", code="48"))])
    store.submit([opened(xid79("app", T0 + 4 * 86400, gpu_uuid="GPU-OK", code="13"))])  # an application Xid
    store.flush()
    flaky = suggest(store, xid79("d2", T0 + 2 * 86400, gpu_uuid="GPU-FLAKY", code="48"), CATALOG, XIDS, now=NOW)
    assert flaky.suspect_hardware is not None and "Xid 48" in flaky.suspect_hardware
    assert "3 days" in flaky.suspect_hardware
    fine = suggest(store, xid79("app", T0 + 4 * 86400, gpu_uuid="GPU-OK", code="13"), CATALOG, XIDS, now=NOW)
    assert fine.suspect_hardware is None


def test_the_shipped_catalog_has_the_actions_the_ledger_speaks_of() -> None:
    expected = {
        "gpu_reset", "node_reboot", "drain", "reseat", "driver_update", "firmware_update", "cooling_service",
        "replace_part", "rma", "provider_ticket", "app_restart", "other",
    }  # fmt: skip
    assert expected <= set(CATALOG.actions)
    assert CATALOG.verify_window_h == 72.0
    assert all(action.label for action in CATALOG.actions.values())
    assert CATALOG.ladder_for("xid", "79") is not None and CATALOG.ladder_for("xid", "9999") is None


def test_a_broken_catalog_reports_every_problem_at_once(tmp_path: Path) -> None:
    actions = tmp_path / "actions.toml"
    actions.write_text(
        ACTIONS_PATH.read_text(encoding="utf-8")
        .replace("verify_window_h = 72.0", "verify_window_h = -1\ncolour = 'red'")
        .replace('label = "Reseat the GPU, cables or board"', "label = 3"),
        encoding="utf-8",
    )
    ladders = tmp_path / "ladders.toml"
    ladders.write_text(
        LADDERS_PATH.read_text(encoding="utf-8").replace(
            '["reseat", 1], ["rma", 1]]', '["repaint", 1], ["rma", 0]]', 1
        ),
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(actions, ladders)
    problems = caught.value.problems
    assert any("settings.verify_window_h: must be a number of hours above 0" in p for p in problems)
    assert any("settings.colour: unknown key" in p for p in problems)
    assert any("actions.reseat.label: must be a non-empty string" in p for p in problems)
    assert any("ladders[0].steps[1]: unknown action 'repaint'" in p for p in problems)
    assert any("ladders[0].steps[2]: expected [action, tries]" in p for p in problems)
    assert len(problems) == 5


def test_one_xid_under_different_workloads_flags_the_gpu_and_under_one_workload_does_not(
    store: IncidentStore,
) -> None:
    from dataclasses import replace

    from console.samples.schema import JobWorkload, PodWorkload

    pod = PodWorkload(namespace="ml", pod="train-0", container="a")
    same_pod_other_container = PodWorkload(namespace="ml", pod="train-0", container="b")
    for n, (gpu, workload) in enumerate(
        [
            ("GPU-HW", (pod,)),
            ("GPU-HW", (JobWorkload(id="4711"),)),
            ("GPU-APP", (pod,)),
            ("GPU-APP", (same_pod_other_container,)),  # the same pod's job crashing again: its own bug
        ]
    ):
        incident = replace(xid79(f"x{n}", T0 + n * 60, gpu_uuid=gpu, code="13"), workload=workload)
        store.submit([opened(incident)])
    store.flush()
    hardware = suggest(store, xid79("x1", T0 + 60, gpu_uuid="GPU-HW", code="13"), CATALOG, XIDS, now=NOW)
    assert hardware.suspect_hardware is not None
    assert "Xid 13 on this GPU under 2 different workloads (pod ml/train-0 (a); job 4711)" in hardware.suspect_hardware
    application = suggest(store, xid79("x3", T0 + 180, gpu_uuid="GPU-APP", code="13"), CATALOG, XIDS, now=NOW)
    assert application.suspect_hardware is None
    # The signal feeds the escalation: Xid 13's ladder is app_restart (3 tries), gpu_reset, rma. An Xid that
    # followed the GPU across workloads skips restarting the application; one that follows its job does not.
    assert (hardware.ranked[0].action, hardware.ranked[0].escalated) == ("gpu_reset", True)
    assert not application.ranked[0].escalated
