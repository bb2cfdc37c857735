"""Correlation: causes over symptoms within a node or GPU, and one incident per fault shared by several GPUs or
nodes (rack, cooling loop, power feed), on engine traces with the trace's own times as the clock."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path

import pytest

from console.config.fleet import Topology
from console.incidents.correlation_groups import group_id
from console.incidents.correlation_rules import (
    CorrelationError,
    default_correlation_rules,
    load_correlation_rules,
)
from console.incidents.engine import IncidentEngine
from console.incidents.model import ChangeKind, Incident, IncidentChange, Outcome, Scope, Severity, Status
from console.incidents.rules import load_rules
from console.incidents.xid import load_xid_catalog
from console.samples.results import PollResult
from console.samples.schema import ChassisSample, GpuSample, Health, ThrottleReason
from tests.helpers.traces import (
    NODE,
    SITE,
    T0,
    VICTIM,
    build_trace,
    make_fleet,
    merge,
    replace,
    run,
    victim,
    xid_at,
)

RULES = load_rules()
CATALOG = load_xid_catalog()
LOOP = "hall-2-cdu-1"
RACK = "hall-2-rack-01"


def engine(nodes: Iterable[str] = (NODE,), topology: dict[str, Topology] | None = None, **kw: object) -> IncidentEngine:
    fleet = make_fleet(nodes=tuple((n, SITE) for n in nodes), topology=topology)
    return IncidentEngine(RULES, fleet, clock=lambda: T0, xid_catalog=CATALOG, **kw)  # type: ignore[arg-type]


def latest(changes: Iterable[IncidentChange]) -> dict[str, Incident]:
    out: dict[str, Incident] = {}
    for change in changes:
        out[change.incident.id] = change.incident
    return out


def roots(incidents: dict[str, Incident]) -> list[Incident]:
    return [i for i in incidents.values() if i.parent_id is None]


def root_of(incidents: dict[str, Incident], incident: Incident) -> Incident:
    while incident.parent_id is not None:
        incident = incidents[incident.parent_id]
    return incident


def _flow_drop(from_step: int = 20, until: int = 10**9, health_from: int | None = None):  # type: ignore[no-untyped-def]
    """The coolant flow falls to a third of rated (and the chassis reports a warning, from ``health_from``)."""

    def fault(step: int, chassis: ChassisSample) -> ChassisSample:
        changes: dict[str, object] = {}
        if from_step <= step < until:
            changes["coolant_flow_lpm"] = 10.0
        if health_from is not None and health_from <= step < until:
            changes["health"] = Health.WARNING
        return dataclasses.replace(chassis, **changes) if changes else chassis  # type: ignore[arg-type]

    return fault


def _hot(from_step: int, until: int = 10**9, gpus: Iterable[int] = range(8)):  # type: ignore[no-untyped-def]
    """The GPUs run out of thermal margin and slow down (hardware thermal slowdown)."""
    chosen = set(gpus)

    def fault(step: int, gpu: GpuSample) -> GpuSample:
        if gpu.index not in chosen or not from_step <= step < until:
            return gpu
        reasons = (ThrottleReason.HW_SLOWDOWN, ThrottleReason.HW_THERMAL_SLOWDOWN)
        return dataclasses.replace(gpu, thermal_margin_c=-1.0, throttle_reasons=reasons)

    return fault


# --- the rules as data ----------------------------------------------------------------------------------------


def test_the_default_rules_load_and_name_only_rules_that_exist() -> None:
    rules = load_correlation_rules(rule_ids={r.id for r in RULES.rules})
    assert rules.xid_burst_gap_s == 180.0  # NVSentinel's burst gap
    assert {c.id for c in rules.causes} >= {"node_down", "cooling", "power", "gpu_lost"}
    assert {g.id for g in rules.groups} >= {"gpu_power_brake", "shared_cooling"}
    assert default_correlation_rules() == load_correlation_rules()


def test_every_problem_of_a_file_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "correlation.toml"
    path.write_text(
        """
[settings]
xid_burst_gap_s = "long"
colour = 1

[[causes]]
id = "cooling"
within = "rack"
causes = ["coolant_flow_low", "coolant_flow_low"]
symptoms = ["thermal_margn", "xid:"]
after_s = 60
speed = 3

[[groups]]
id = "shared"
by = ["row"]
members = ["coolant_flow_low"]
min_members = 1
category = "cooling"
title = "{what} on {name}"
"""
    )
    with pytest.raises(CorrelationError) as caught:
        load_correlation_rules(path, rule_ids={r.id for r in RULES.rules})
    text = "\n".join(caught.value.problems)
    for expected in (
        "settings.xid_burst_gap_s: expected a number",
        "settings.colour: unknown key",
        "causes[0] (cooling).within: expected one of gpu, node",
        "causes[0] (cooling).causes: names a rule twice",
        "causes[0] (cooling).symptoms[1]: expected 'rule' or 'rule:code'",
        "causes[0].speed: unknown key",
        "groups[0] (shared).by: unknown 'row'",
        "groups[0] (shared).min_members: expected an integer >= 2",
        "groups[0] (shared).title: unknown placeholder {what}",
    ):
        assert expected in text, (expected, text)
    assert all(line.startswith(str(path)) for line in caught.value.problems)


def test_an_unknown_rule_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[causes]]\nid = "x"\ncauses = ["gpu_lost"]\nsymptoms = ["thermal_margn"]\nafter_s = 5\n')
    with pytest.raises(CorrelationError, match="unknown rule 'thermal_margn'"):
        load_correlation_rules(path, rule_ids={r.id for r in RULES.rules})


# --- within a node ----------------------------------------------------------------------------------------------


def test_a_coolant_flow_drop_is_the_parent_of_every_thermal_symptom_on_its_node() -> None:
    # the chassis reports a warning first (opens at once), the flow rule needs 10 s, the GPUs heat up later
    trace = build_trace(200, chassis_fault=_flow_drop(20, health_from=18), gpu_fault=_hot(40, until=100))
    changes = run(engine(), trace)
    incidents = latest(changes)
    [root] = roots(incidents)
    assert root.rule == "coolant_flow_low"
    rules = sorted(i.rule for i in incidents.values() if i is not root)
    assert rules == sorted(["chassis_health"] + ["thermal_margin", "hw_thermal_slowdown", "hw_slowdown"] * 8)
    assert all(i.parent_id == root.id for i in incidents.values() if i is not root)
    # the chassis warning opened before its cause: it is adopted with an UPDATED change
    adopted = [c for c in changes if c.incident.rule == "chassis_health" and c.incident.parent_id == root.id]
    assert adopted[0].kind is ChangeKind.UPDATED and adopted[0].note.startswith("caused by")
    # every later change of a child still names its parent (the lifecycle knows nothing of parents)
    later = [c for c in changes if c.incident.rule == "thermal_margin" and c.kind is not ChangeKind.OPENED]
    assert later and all(c.incident.parent_id == root.id for c in later)


def test_a_symptom_long_before_its_cause_stays_a_root() -> None:
    trace = build_trace(200, chassis_fault=_flow_drop(150), gpu_fault=_hot(20, gpus=[VICTIM]))
    incidents = latest(run(engine(), trace))
    assert {i.rule for i in roots(incidents)} == {"coolant_flow_low", "thermal_margin"}
    # without a cause on the node, the GPU's heat is the cause of its slowdowns
    margin = next(i for i in roots(incidents) if i.rule == "thermal_margin")
    below = sorted(i.rule for i in incidents.values() if i.parent_id == margin.id)
    assert below == ["hw_slowdown", "hw_thermal_slowdown"]


def test_a_power_brake_on_every_gpu_is_one_node_incident_over_its_symptoms() -> None:
    def brake(step: int, gpu: GpuSample) -> GpuSample:
        if 20 <= step < 60:
            reasons = (ThrottleReason.HW_SLOWDOWN, ThrottleReason.HW_POWER_BRAKE_SLOWDOWN)
            return dataclasses.replace(gpu, throttle_reasons=reasons)
        return gpu

    changes = run(engine(), build_trace(200, gpu_fault=brake))
    incidents = latest(changes)
    [root] = roots(incidents)
    assert root.rule == "gpu_power_brake" and root.scope is Scope.NODE and root.scope_name == NODE
    assert root.nodes == (NODE,) and root.context.gpu_uuid is None
    assert root.title == f"HW power brake on 8 GPUs of {NODE}"
    assert root.severity is Severity.CRITICAL
    children = [i for i in incidents.values() if i.parent_id == root.id]
    assert sorted(i.rule for i in children) == ["hw_power_brake_slowdown"] * 8 + ["hw_slowdown"] * 8
    # it resolves with its last child, and its growth is reported once per batch, not once per GPU
    assert root.status is Status.RESOLVED and root.outcome is Outcome.AUTO_CLEARED
    assert root.resolved_at == max(i.resolved_at or 0.0 for i in children)
    opened_at = next(c.time for c in changes if c.incident.id == root.id and c.kind is ChangeKind.OPENED)
    assert sum(1 for c in changes if c.incident.id == root.id and c.time == opened_at) == 2  # opened, grown


def test_a_brake_on_one_gpu_stays_a_gpu_incident_over_its_slowdown() -> None:
    reasons = (ThrottleReason.HW_SLOWDOWN, ThrottleReason.HW_POWER_BRAKE_SLOWDOWN)
    incidents = latest(run(engine(), build_trace(90, gpu_fault=victim(replace(throttle_reasons=reasons)))))
    [root] = roots(incidents)
    assert root.rule == "hw_power_brake_slowdown" and root.context.gpu_index == VICTIM
    assert [i.rule for i in incidents.values() if i.parent_id == root.id] == ["hw_slowdown"]


def test_gpu_lost_is_the_parent_of_its_xid_79() -> None:
    trace = build_trace(
        60, gpu_fault=victim(replace(lost=True)), events=xid_at({20: (79, "GPU has fallen off the bus.")})
    )
    incidents = latest(run(engine(), trace))
    [root] = roots(incidents)
    assert root.rule == "gpu_lost"
    [child] = [i for i in incidents.values() if i is not root]
    assert (child.rule, child.code, child.parent_id) == ("xid", "79", root.id)


def test_an_unreachable_node_is_the_parent_of_what_was_open_and_what_opens_while_it_is_down() -> None:
    def state(step: int) -> str:
        return "fail" if 60 <= step < 130 else "ok"

    trace = build_trace(
        200, gpu_fault=_hot(20, gpus=[VICTIM]), state=state, events=xid_at({150: (13, "Graphics SM Warp Exception")})
    )
    incidents = latest(run(engine(), trace))
    [root] = roots(incidents)
    assert root.rule == "node_unreachable"
    below = {i.rule for i in incidents.values() if i.parent_id == root.id}
    assert {"thermal_margin", "hw_thermal_slowdown", "hw_slowdown"} <= below  # open when it went down
    assert "xid" in below  # opened before it resolved (clear_s 30 s after the node answers again)


def test_an_xid_after_the_node_is_back_and_resolved_is_a_root_of_its_own() -> None:
    trace = build_trace(300, state=lambda s: "fail" if 20 <= s < 80 else "ok", events=xid_at({250: (13, "x")}))
    incidents = latest(run(engine(), trace))
    assert sorted(i.rule for i in roots(incidents)) == ["node_unreachable", "xid"]


def test_an_uncorrectable_ecc_error_is_the_parent_of_its_xids_and_remap() -> None:
    def fault(step: int, gpu: GpuSample) -> GpuSample:
        if gpu.index != VICTIM or step < 20:
            return gpu
        return dataclasses.replace(gpu, ecc_dbe_volatile=1, remapped_rows_pending=step >= 24)

    trace = build_trace(80, gpu_fault=fault, events=xid_at({20: (48, "DBE"), 24: (63, "Row Remapper")}))
    incidents = latest(run(engine(), trace))
    [root] = roots(incidents)
    assert root.rule == "ecc_dbe_increase"
    below = sorted((i.rule, i.code) for i in incidents.values() if i is not root)
    assert below == [("row_remap_pending", ""), ("xid", "48"), ("xid", "63")]


# --- Xid bursts -------------------------------------------------------------------------------------------------


def test_the_xid_burst_gap_is_correlation_data(tmp_path: Path) -> None:
    xids = xid_at({20: (13, "a"), 120: (13, "b")})  # 100 s of silence between them
    assert len([c for c in run(engine(), build_trace(140, events=xids)) if c.kind is ChangeKind.OPENED]) == 1
    short = dataclasses.replace(default_correlation_rules(), xid_burst_gap_s=60.0)
    changes = run(engine(correlation=short), build_trace(140, events=xids))
    assert [c.time - T0 for c in changes if c.kind is ChangeKind.OPENED] == [20.0, 120.0]


# --- across nodes -----------------------------------------------------------------------------------------------

LOOP_NODES = ("dgx-01", "dgx-02", "dgx-03")
LOOP_TOPOLOGY = {
    "dgx-01": Topology(rack=RACK, cooling_loop=LOOP),
    "dgx-02": Topology(rack=RACK, cooling_loop=LOOP),
    "dgx-03": Topology(rack=RACK, cooling_loop=LOOP),
    "dgx-04": Topology(rack="hall-2-rack-02", cooling_loop="hall-2-cdu-2"),
}


def _loop_trace(starts: dict[str, int], seconds: int = 300) -> list[PollResult | float]:
    traces = [
        build_trace(
            seconds,
            node=node,
            seed=i,
            chassis_fault=_flow_drop(start, until=start + 60),
            gpu_fault=_hot(start + 15, until=start + 60, gpus=[0, 1]),
        )
        for i, (node, start) in enumerate(starts.items())
    ]
    return merge(*traces)


def test_a_loop_wide_flow_drop_is_one_loop_incident_over_every_node_and_symptom() -> None:
    starts = {"dgx-01": 20, "dgx-02": 22, "dgx-03": 60, "dgx-04": 21}  # dgx-04 is on another loop
    changes = run(engine([*LOOP_NODES, "dgx-04"], LOOP_TOPOLOGY), _loop_trace(starts))
    incidents = latest(changes)
    loop = next(i for i in incidents.values() if i.scope is Scope.COOLING_LOOP)
    assert (loop.rule, loop.scope_name, loop.nodes) == ("shared_cooling", LOOP, LOOP_NODES)
    assert loop.kind == "cooling" and loop.severity is Severity.CRITICAL
    assert loop.title == f"Cooling fault on cooling loop {LOOP}: 3 nodes (coolant_flow_low)"
    # dgx-04's own flow drop stays its own root; everything on the loop's nodes is beneath the loop incident
    assert sorted(r.rule for r in roots(incidents)) == ["coolant_flow_low", "shared_cooling"]
    for incident in incidents.values():
        if incident.context.node in LOOP_NODES and incident is not loop:
            assert root_of(incidents, incident) is loop, incident
    causes = [i for i in incidents.values() if i.parent_id == loop.id]
    assert sorted(i.context.node for i in causes) == list(LOOP_NODES)
    assert {i.rule for i in causes} == {"coolant_flow_low"}
    for cause in causes:  # each node's symptoms stay beneath its own cause
        assert sorted(i.rule for i in incidents.values() if i.parent_id == cause.id) == sorted(
            ["thermal_margin", "hw_thermal_slowdown", "hw_slowdown"] * 2
        )
    # it opened with the second member, the third joined later, and it resolved with its last child
    opened = [c for c in changes if c.incident.id == loop.id and c.kind is ChangeKind.OPENED]
    assert len(opened) == 1 and opened[0].incident.nodes == ("dgx-01", "dgx-02")
    assert loop.status is Status.RESOLVED
    assert loop.resolved_at == max(i.resolved_at or 0.0 for i in causes)
    assert loop.opened_at == min(i.opened_at for i in causes)


def test_the_same_cause_on_nodes_too_far_apart_in_time_is_not_grouped() -> None:
    incidents = latest(run(engine(LOOP_NODES[:2], LOOP_TOPOLOGY), _loop_trace({"dgx-01": 20, "dgx-02": 200}, 400)))
    assert not any(i.scope is Scope.COOLING_LOOP for i in incidents.values())
    assert sorted(r.rule for r in roots(incidents)) == ["coolant_flow_low", "coolant_flow_low"]


def test_nodes_without_a_shared_part_are_not_grouped() -> None:
    apart = {"dgx-01": Topology(rack="r1"), "dgx-02": Topology(rack="r2")}
    incidents = latest(run(engine(LOOP_NODES[:2], apart), _loop_trace({"dgx-01": 20, "dgx-02": 21})))
    assert len(roots(incidents)) == 2


def test_a_rack_is_the_scope_where_no_loop_is_shared() -> None:
    rack_only = {"dgx-01": Topology(rack=RACK), "dgx-02": Topology(rack=RACK)}
    incidents = latest(run(engine(LOOP_NODES[:2], rack_only), _loop_trace({"dgx-01": 20, "dgx-02": 21})))
    [root] = roots(incidents)
    assert (root.scope, root.scope_name, root.nodes) == (Scope.RACK, RACK, ("dgx-01", "dgx-02"))


def test_a_group_id_is_derived_from_what_every_console_sees() -> None:
    trace = _loop_trace({"dgx-01": 20, "dgx-02": 22})
    ids = []
    for _ in range(2):
        incidents = latest(run(engine(LOOP_NODES[:2], LOOP_TOPOLOGY), trace))
        ids.append(next(i for i in incidents.values() if i.scope is Scope.COOLING_LOOP))
    first, second = ids
    assert first.id == second.id
    window = default_correlation_rules().group_id_window_s
    onset = math.floor(first.opened_at / window) * window
    assert first.id == group_id(SITE, Scope.COOLING_LOOP, LOOP, "shared_cooling", onset=onset)


def test_the_operator_acknowledges_and_resolves_a_group() -> None:
    eng = engine(LOOP_NODES[:2], LOOP_TOPOLOGY)
    changes = run(eng, _loop_trace({"dgx-01": 20, "dgx-02": 22}, 60))
    loop = next(i for i in latest(changes).values() if i.scope is Scope.COOLING_LOOP)
    listed = {i.id: i for i in eng.open_incidents()}
    assert loop.id in listed
    assert all(listed[i.id].parent_id == loop.id for i in latest(changes).values() if i.rule == "coolant_flow_low")
    ack = eng.acknowledge(loop.id, "on it", T0 + 61)
    assert ack.kind is ChangeKind.ACKNOWLEDGED and ack.incident.status is Status.ACKNOWLEDGED
    done = eng.resolve(loop.id, "CDU pump replaced", Outcome.FIXED, T0 + 62)
    assert done.incident.status is Status.RESOLVED and done.incident.outcome is Outcome.FIXED
    assert loop.id not in {i.id for i in eng.open_incidents()}
    with pytest.raises(KeyError):
        eng.resolve(loop.id, "again", Outcome.FIXED, T0 + 63)
    # a child resolved by the operator keeps its parent in the change
    child = next(i for i in eng.open_incidents() if i.rule == "coolant_flow_low")
    assert eng.resolve(child.id, "", Outcome.FIXED, T0 + 64).incident.parent_id == loop.id


def test_a_healthy_batch_passes_through_without_a_copy() -> None:
    eng = engine()
    trace = build_trace(5)
    for entry in trace:
        assert isinstance(entry, PollResult)
        assert eng.observe(entry) == []
        assert eng.tick(entry.started + entry.latency_s) == []


def test_groups_and_parents_carry_on_after_a_restart() -> None:
    trace = _loop_trace({"dgx-01": 20, "dgx-02": 22}, 300)
    cut = next(i for i, e in enumerate(trace) if isinstance(e, PollResult) and e.started >= T0 + 50)
    before = engine(LOOP_NODES[:2], LOOP_TOPOLOGY)
    first = run(before, trace[:cut])
    still_open = before.open_incidents()
    loop = next(i for i in still_open if i.scope is Scope.COOLING_LOOP)
    after = engine(LOOP_NODES[:2], LOOP_TOPOLOGY)
    assert after.resume(still_open) == []
    assert {i.id for i in after.open_incidents()} == {i.id for i in still_open}
    second = run(after, trace[cut:])
    incidents = latest(first + second)
    assert [i.id for i in incidents.values() if i.scope is Scope.COOLING_LOOP] == [loop.id]  # no second group
    later = [c for c in second if c.incident.rule == "coolant_flow_low"]
    assert later and all(c.incident.parent_id == loop.id for c in later)
    assert incidents[loop.id].status is Status.RESOLVED


def test_a_resumed_group_without_children_resolves() -> None:
    eng = engine(LOOP_NODES[:2], LOOP_TOPOLOGY)
    changes = run(eng, _loop_trace({"dgx-01": 20, "dgx-02": 22}, 60))
    loop = next(i for i in latest(changes).values() if i.scope is Scope.COOLING_LOOP)
    fresh = engine(LOOP_NODES[:2], LOOP_TOPOLOGY)
    fresh.resume([loop])
    resolved = [c for c in fresh.tick(T0 + 100) if c.incident.id == loop.id]
    assert [c.kind for c in resolved] == [ChangeKind.RESOLVED]
