"""Ring buffers stay a fixed size; the fleet state ranks nodes worst first and counts them per site."""

from __future__ import annotations

import math

import numpy as np

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.history.rings import FleetHistory
from console.incidents.model import ChangeKind, Incident, IncidentChange, IncidentContext, Severity, Status
from console.live.fleet_state import FleetState, NodeStatus
from console.samples.results import PollFailure, PollResult, SourceFailure
from console.samples.schema import ChassisSample, GpuSample, NodeSample, ThrottleReason


def _sample(node: str, t: float, power: float | None, *, uuid: str = "GPU-a") -> NodeSample:
    gpu = GpuSample(0, uuid, power_w=power, temperature_c=50.0, throttle_reasons=(ThrottleReason.HW_SLOWDOWN,))
    return NodeSample(node, "s1", "test", t, (gpu,), ChassisSample(inlet_c=22.0, fans_rpm=(9000.0, 9100.0)))


def test_history_memory_does_not_grow_with_run_time() -> None:
    history = FleetHistory(capacity=100)
    history.record(_sample("n", 0.0, 1.0))
    size_after_one = history.nbytes
    for t in range(1, 5000):
        history.record(_sample("n", float(t), float(t)))
    assert history.nbytes == size_after_one
    series = history.node("n").gpu_series("GPU-a", "power_w")
    assert len(series.t) == 100
    assert series.t[-1] == 4999.0 and series.y[-1] == 4999.0
    assert np.all(np.diff(series.t) > 0), "oldest first"


def test_history_window_gaps_and_missing_values_are_nan() -> None:
    history = FleetHistory(capacity=50)
    for t in range(10):
        history.record(_sample("n", 1000.0 + t, None if t == 3 else 200.0))
    history.record_gap("n", 1010.0)
    node = history.node("n")
    window = node.gpu_series("GPU-a", "power_w", since=1005.0)
    assert list(window.t) == [1005.0, 1006.0, 1007.0, 1008.0, 1009.0, 1010.0]
    assert math.isnan(window.y[-1]), "a failed poll is a gap"
    full = node.gpu_series("GPU-a", "power_w")
    assert math.isnan(full.y[3]), "None is NaN, never 0"
    assert node.gpu_series("GPU-a", "throttle_mask").y[0] == 0x8
    assert node.chassis_series("fan1_rpm").y[0] == 9100.0
    # the caller gets a copy: mutating it must not change the ring
    full.y[:] = -1
    assert node.gpu_series("GPU-a", "power_w").y[0] == 200.0


def _fleet() -> Fleet:
    spec = (SourceSpec(SourceKind.DEMO),)
    return Fleet(
        (Site("s1", "aws", interval_s=1.0), Site("s2", "onprem", interval_s=1.0)),
        (Node("a", "s1", spec), Node("b", "s1", spec), Node("c", "s2", spec)),
    )


def _incident(node: str, severity: Severity, status: Status = Status.OPEN, uuid: str | None = "GPU-a") -> Incident:
    return Incident(
        id=f"{node}-{severity}",
        rule="thermal_margin",
        code="",
        kind="thermal",
        severity=severity,
        status=status,
        title="t",
        detail="",
        context=IncidentContext(site="s1", provider="aws", node=node, gpu_uuid=uuid, gpu_index=0),
        opened_at=1.0,
        last_seen_at=1.0,
    )


def test_status_ranks_worst_first_and_counts_per_site() -> None:
    clock = [100.0]
    state = FleetState(_fleet(), clock=lambda: clock[0])
    assert state.node_status("a") is NodeStatus.STALE, "never polled yet"
    for name in ("a", "b", "c"):
        state.apply_result(PollResult(name, "s1" if name != "c" else "s2", 1.0, 0.01, _sample(name, 1.0, 100.0)))
    assert state.fleet_counts()[NodeStatus.OK] == 3
    state.apply_changes([IncidentChange(ChangeKind.OPENED, _incident("b", Severity.CRITICAL), 1.0)])
    failure = SourceFailure("demo", PollFailure.TIMEOUT, "no answer within 2 s")
    state.apply_result(PollResult("c", "s2", 2.0, 2.0, None, (failure,)))
    assert [n.name for n in state.nodes_worst_first()] == ["c", "b", "a"]
    assert state.node_status("c") is NodeStatus.UNREACHABLE
    assert "no answer within 2 s" in state.nodes["c"].last_error
    counts = {c.site: c.counts for c in state.site_counts()}
    assert counts["s1"][NodeStatus.CRITICAL] == 1 and counts["s1"][NodeStatus.OK] == 1
    assert counts["s2"][NodeStatus.UNREACHABLE] == 1
    # the incident resolves: back to ok; time passes without polls: stale
    state.apply_changes([IncidentChange(ChangeKind.RESOLVED, _incident("b", Severity.CRITICAL, Status.RESOLVED), 2.0)])
    assert state.node_status("b") is NodeStatus.OK
    clock[0] += 30
    assert state.node_status("a") is NodeStatus.STALE


def test_warning_incident_and_lost_gpu() -> None:
    state = FleetState(_fleet(), clock=lambda: 0.0)
    state.apply_result(PollResult("a", "s1", 1.0, 0.01, _sample("a", 1.0, 100.0)))
    state.apply_changes([IncidentChange(ChangeKind.OPENED, _incident("a", Severity.WARNING), 1.0)])
    assert state.node_status("a") is NodeStatus.WARNING
    lost = NodeSample("b", "s1", "t", 1.0, (GpuSample(0, "GPU-b", lost=True),))
    state.apply_result(PollResult("b", "s1", 1.0, 0.01, lost))
    assert state.node_status("b") is NodeStatus.CRITICAL
