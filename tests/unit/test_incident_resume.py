"""Incidents survive a restart (issue 13): a new engine resumes the open and acknowledged incidents of the last run
with their ids, keeps updating them, clears those whose condition never shows again, and opens no second one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from console.incidents.engine import IncidentEngine
from console.incidents.model import ChangeKind, Incident, IncidentChange, Status
from console.incidents.rules import load_rules
from console.incidents.xid import load_xid_catalog
from console.samples.results import PollResult
from console.store import IncidentFilter, IncidentStore
from tests.helpers.traces import T0, VICTIM, build_trace, make_fleet, opened, replace, run, victim

RULES = load_rules()
CATALOG = load_xid_catalog()
REMAP = victim(replace(remapped_rows_pending=True), from_step=0)


def _engine(start: float) -> IncidentEngine:
    return IncidentEngine(RULES, make_fleet(), clock=lambda: start, xid_catalog=CATALOG)


def _open_after(changes: list[IncidentChange]) -> list[Incident]:
    latest: dict[str, Incident] = {}
    for change in changes:
        latest[change.incident.id] = change.incident
    return [i for i in latest.values() if i.status is not Status.RESOLVED]


def _of(changes: list[IncidentChange], rule: str, kind: ChangeKind) -> list[IncidentChange]:
    return [c for c in changes if c.incident.rule == rule and c.kind is kind]


def test_a_restart_resumes_open_incidents_with_their_ids_and_opens_no_second_one() -> None:
    before = run(_engine(T0), build_trace(60, gpu_fault=REMAP))
    (incident,) = _open_after(before)
    restart = T0 + 120.0  # a minute down; the same id window
    engine = _engine(restart)
    assert engine.resume([incident]) == []
    assert [i.id for i in engine.open_incidents()] == [incident.id]
    after = run(engine, build_trace(200, start=restart, gpu_fault=REMAP))
    assert not opened(after)
    updates = _of(after, "row_remap_pending", ChangeKind.UPDATED)
    assert updates and {c.incident.id for c in updates} == {incident.id}
    assert updates[-1].incident.count == incident.count  # seeing it again continues it: no recurrence counted
    assert updates[-1].incident.last_seen_at > restart


def test_a_resumed_incident_whose_condition_never_shows_again_clears_clear_s_after_start() -> None:
    (incident,) = _open_after(run(_engine(T0), build_trace(60, gpu_fault=REMAP)))
    restart = T0 + 3600.0
    engine = _engine(restart)
    engine.resume([incident])
    after = run(engine, build_trace(200, start=restart))  # healthy now
    resolved = _of(after, "row_remap_pending", ChangeKind.RESOLVED)
    assert [(c.incident.id, c.time - restart) for c in resolved] == [(incident.id, 60.0)]  # the rule's clear_s
    # a node that never answers after the restart: cleared by the clock alone
    silent = _engine(restart)
    silent.resume([incident])
    ticks = [c for t in range(0, 400) for c in silent.tick(restart + t) if c.incident.id == incident.id]
    assert [c.kind for c in ticks] == [ChangeKind.RESOLVED] and ticks[0].time == restart + 60.0


def test_an_acknowledged_incident_stays_acknowledged_and_can_be_resolved_after_a_restart() -> None:
    engine = _engine(T0)
    run(engine, build_trace(30, gpu_fault=REMAP))
    (incident,) = engine.open_incidents()
    acked = engine.acknowledge(incident.id, "reset on Sunday", T0 + 30).incident
    resumed = _engine(T0 + 100)
    resumed.resume([acked])
    after = run(resumed, build_trace(30, start=T0 + 100, gpu_fault=REMAP))
    assert all(c.incident.status is Status.ACKNOWLEDGED for c in after if c.incident.id == incident.id)
    done = resumed.resolve(incident.id, "reset", "fixed", T0 + 200)  # type: ignore[arg-type]
    assert done.incident.status is Status.RESOLVED


def test_a_recurrence_after_a_resumed_incident_cleared_takes_a_new_id_in_the_same_window() -> None:
    (incident,) = _open_after(run(_engine(T0), build_trace(20, gpu_fault=REMAP)))
    engine = _engine(T0 + 30)
    engine.resume([incident])
    first = run(engine, build_trace(100, start=T0 + 30))  # clears at 60 s after start
    assert _of(first, "row_remap_pending", ChangeKind.RESOLVED)
    again = opened(run(engine, build_trace(5, start=T0 + 140, gpu_fault=REMAP)), "row_remap_pending")
    assert len(again) == 1 and again[0].incident.id != incident.id


def test_recently_resolved_ids_are_not_given_out_again() -> None:
    changes = run(_engine(T0), build_trace(20, gpu_fault=REMAP))
    (incident,) = _open_after(changes)
    closed = dataclasses.replace(incident, status=Status.RESOLVED, resolved_at=T0 + 20)
    engine = _engine(T0 + 40)
    engine.resume([], resolved=[closed])
    again = opened(run(engine, build_trace(5, start=T0 + 40, gpu_fault=REMAP)))
    assert len(again) == 1 and again[0].incident.id != incident.id


def test_a_gpu_lost_before_the_restart_stays_lost() -> None:
    def without_victim(trace: list[PollResult | float], steps: range) -> list[PollResult | float]:
        for i in steps:
            entry = trace[i]
            assert isinstance(entry, PollResult) and entry.sample is not None
            gpus = tuple(g for g in entry.sample.gpus if g.index != VICTIM)
            trace[i] = dataclasses.replace(entry, sample=dataclasses.replace(entry.sample, gpus=gpus))
        return trace

    (incident,) = _open_after(run(_engine(T0), without_victim(build_trace(40), range(20, 40))))
    assert incident.rule == "gpu_lost"
    engine = _engine(T0 + 100)
    engine.resume([incident])
    after = run(engine, without_victim(build_trace(300, start=T0 + 100), range(300)))  # still gone after it
    assert not opened(after) and not _of(after, "gpu_lost", ChangeKind.RESOLVED)
    assert [i.id for i in engine.open_incidents()] == [incident.id]


def test_an_incident_of_a_disabled_rule_is_closed_at_start_and_one_of_no_rule_left_alone() -> None:
    (incident,) = _open_after(run(_engine(T0), build_trace(20, gpu_fault=REMAP)))
    group = dataclasses.replace(incident, id="group-1", rule="rack_cooling")  # e.g. a correlation group's
    fleet = make_fleet(overrides=(("site:site-a", "row_remap_pending", "enabled", 0.0),))
    engine = IncidentEngine(load_rules(overrides=fleet.rule_overrides), fleet, clock=lambda: T0 + 50)
    changes = engine.resume([group, incident])
    assert [(c.kind, c.incident.id) for c in changes] == [(ChangeKind.RESOLVED, incident.id)]
    assert "disabled" in changes[0].note and not engine.open_incidents()


def test_a_restart_with_the_same_database_resumes_with_the_same_ids(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite3"
    with IncidentStore.open(db) as store:
        store.submit(run(_engine(T0), build_trace(60, gpu_fault=REMAP)))
        store.flush()
    with IncidentStore.open(db) as store:
        unresolved_status = IncidentFilter(status=(Status.OPEN, Status.ACKNOWLEDGED))
        stored = list(store.iter_incidents(unresolved_status))
        if hasattr(store, "unresolved"):
            assert {i.id for i in store.unresolved()} == {i.id for i in stored}
        engine = _engine(T0 + 120)
        engine.resume(stored)
        after = run(engine, build_trace(60, start=T0 + 120, gpu_fault=REMAP))
        store.submit(after)
        store.flush()
        assert not opened(after)
        assert [i.id for i in store.iter_incidents(unresolved_status)] == [i.id for i in stored]
