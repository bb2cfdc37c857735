"""The incident engine's lifecycle, Xid handling, counters, staleness and evidence, on synthetic traces with the
trace's own times as the clock (no sleeping)."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from console.incidents.engine import IncidentEngine, incident_id
from console.incidents.evidence import evidence_json
from console.incidents.model import ChangeKind, IncidentChange, Outcome, Severity, Status
from console.incidents.rules import load_rules
from console.incidents.xid import load_xid_catalog
from console.samples.results import PollResult
from console.samples.schema import GpuSample
from tests.helpers.traces import (
    NODE,
    T0,
    VICTIM,
    build_trace,
    make_fleet,
    opened,
    replace,
    run,
    uuid_of,
    victim,
    xid_at,
)

RULES = load_rules()
CATALOG = load_xid_catalog()


def _engine() -> IncidentEngine:
    return IncidentEngine(RULES, make_fleet(), clock=lambda: T0, xid_catalog=CATALOG)


def _of(changes: list[IncidentChange], rule: str, kind: ChangeKind | None = None) -> list[IncidentChange]:
    return [c for c in changes if c.incident.rule == rule and (kind is None or c.kind is kind)]


def _margin(by_step: dict[range, float]) -> object:
    def fault(step: int, gpu: GpuSample) -> GpuSample:
        if gpu.index != VICTIM:
            return gpu
        for steps, margin in by_step.items():
            if step in steps:
                return dataclasses.replace(gpu, thermal_margin_c=margin)
        return gpu

    return fault


def test_for_s_delays_opening_and_a_gap_restarts_it() -> None:
    # margin 3 C (warning) for 9 s, healthy for 1 s, then 3 C again: for_s = 10 s counts from the second onset.
    fault = _margin({range(10, 19): 3.0, range(20, 60): 3.0})
    changes = run(_engine(), build_trace(60, gpu_fault=fault))  # type: ignore[arg-type]
    fired = opened(changes, "thermal_margin")
    assert [c.time - T0 for c in fired] == [30.0]
    assert fired[0].incident.severity is Severity.WARNING
    assert fired[0].incident.context.gpu_uuid == uuid_of(VICTIM)


def test_hysteresis_holds_then_clear_duration_resolves() -> None:
    # open at 3 C; 6 C is past the 5 C threshold but inside the 2 C hysteresis: still active;
    # 8 C clears it; the incident resolves itself clear_s = 60 s after it was last seen.
    fault = _margin({range(0, 20): 3.0, range(20, 100): 6.0, range(100, 200): 8.0})
    changes = run(_engine(), build_trace(200, gpu_fault=fault))  # type: ignore[arg-type]
    mine = _of(changes, "thermal_margin")
    assert [c.kind for c in mine if c.kind is not ChangeKind.UPDATED and c.kind is not ChangeKind.EVIDENCE] == [
        ChangeKind.OPENED,
        ChangeKind.RESOLVED,
    ]
    resolved = _of(changes, "thermal_margin", ChangeKind.RESOLVED)[0]
    assert resolved.time - T0 == 99.0 + 60.0
    assert resolved.incident.outcome is Outcome.AUTO_CLEARED
    assert resolved.incident.last_seen_at - T0 == 99.0
    assert resolved.incident.peak == 3.0
    assert resolved.incident.count == 1


def test_flapping_inside_hysteresis_stays_one_incident() -> None:
    flapping = {range(i, i + 1): (3.0 if i % 2 else 6.5) for i in range(0, 120)}
    changes = run(_engine(), build_trace(120, gpu_fault=_margin(flapping)))  # type: ignore[arg-type]
    assert len(opened(changes, "thermal_margin")) == 1
    assert not _of(changes, "thermal_margin", ChangeKind.RESOLVED)


def test_severity_only_escalates_during_one_incident() -> None:
    fault = _margin({range(0, 30): 3.0, range(30, 40): -1.0, range(40, 90): 3.0})
    changes = run(_engine(), build_trace(90, gpu_fault=fault))  # type: ignore[arg-type]
    escalations = [c for c in _of(changes, "thermal_margin", ChangeKind.UPDATED) if c.note.startswith("escalated")]
    assert len(escalations) == 1 and escalations[0].time - T0 == 30.0
    assert escalations[0].incident.severity is Severity.CRITICAL
    last = _of(changes, "thermal_margin")[-1].incident
    assert last.severity is Severity.CRITICAL and last.peak == -1.0
    assert len(opened(changes)) == 1


def test_xid_burst_is_one_incident_until_three_minutes_of_silence() -> None:
    engine = _engine()
    xids = {20: (13, "Graphics SM Warp Exception"), 60: (13, ""), 200: (13, ""), 400: (13, "again")}
    changes = run(engine, build_trace(420, events=xid_at(xids)))
    fired = opened(changes, "xid")
    assert [c.time - T0 for c in fired] == [20.0, 400.0]
    first = fired[0].incident
    assert first.severity is Severity.MAJOR and first.code == "13" and first.kind == "xid"
    assert "RESTART_APP" in first.detail and "Graphics SM Warp Exception" in first.detail
    assert first.recommended_action.startswith("Graphics engine exception")
    resolved = _of(changes, "xid", ChangeKind.RESOLVED)[0]
    assert resolved.incident.id == first.id and resolved.incident.count == 3
    assert resolved.time - T0 == 200.0 + 180.0
    assert fired[1].incident.id != first.id


def test_xid_154_and_45_annotate_the_xid_before_them() -> None:
    xids = {
        20: (48, "DBE (double bit error) ECC error"),
        22: (154, "GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)"),
        23: (45, "Preemptive Cleanup"),
    }
    changes = run(_engine(), build_trace(40, events=xid_at(xids)))
    assert [c.incident.code for c in opened(changes)] == ["48"]
    notes = [c.note for c in _of(changes, "xid", ChangeKind.UPDATED)]
    assert notes == [
        "followed by Xid 154: GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)",
        "followed by Xid 45: Preemptive Cleanup",
    ]
    final = _of(changes, "xid", ChangeKind.UPDATED)[-1].incident
    assert "Xid 154" in final.detail and final.severity is Severity.CRITICAL and final.count == 1


def test_solo_xid_45_opens_its_own_incident() -> None:
    changes = run(_engine(), build_trace(30, events=xid_at({20: (45, "Preemptive Cleanup")})))
    fired = opened(changes, "xid")
    assert [(c.incident.code, c.incident.severity) for c in fired] == [("45", Severity.INFO)]


def test_unknown_and_nvlink5_xids() -> None:
    xids = {20: (999, "NVRM: Xid (PCI:0000:9b:00): 999, something new"), 21: (149, "NETIR_LINK_EVT  Fatal  XC0 i0")}
    changes = run(_engine(), build_trace(30, events=xid_at(xids)))
    by_code = {c.incident.code: c.incident for c in opened(changes, "xid")}
    assert by_code["999"].severity is Severity.WARNING
    assert "not in NVIDIA's catalog" in by_code["999"].detail and "something new" in by_code["999"].detail
    assert by_code["149"].severity is Severity.CRITICAL


def test_xid_from_last_value_changes_only() -> None:
    # dcgm-exporter only shows the last Xid: the first sight is history, a change is a new Xid.
    def fault(step: int, gpu: GpuSample) -> GpuSample:
        if gpu.index != VICTIM:
            return gpu
        return dataclasses.replace(gpu, xid_last=79 if step < 30 else 48)

    changes = run(_engine(), build_trace(40, gpu_fault=fault))
    assert [(c.incident.code, c.time - T0) for c in opened(changes, "xid")] == [("48", 30.0)]


def test_counter_reset_is_never_a_negative_rate() -> None:
    # NVLink CRC total 100,000 falls to 0 (driver reload), then grows 5/s: warning, never critical, no negative.
    def fault(step: int, gpu: GpuSample) -> GpuSample:
        if gpu.index != VICTIM:
            return gpu
        total = 100_000 if step < 20 else (step - 20) * 5
        return dataclasses.replace(gpu, nvlink_crc_errors=total, pcie_replays=500 if step < 20 else 0)

    changes = run(_engine(), build_trace(40, gpu_fault=fault))
    fired = opened(changes)
    assert [(c.incident.rule, c.time - T0) for c in fired] == [("nvlink_crc", 21.0)]
    assert fired[0].incident.severity is Severity.WARNING
    peaks = [c.incident.peak for c in _of(changes, "nvlink_crc")]
    assert all(p is not None and p >= 0 for p in peaks)


def test_stale_node_is_found_by_tick_and_clears_when_results_return() -> None:
    engine = _engine()
    trace = build_trace(120, state=lambda s: "silent" if 20 <= s < 60 else "ok")
    changes = run(engine, trace)
    fired = opened(changes, "node_stale")
    assert [c.time - T0 for c in fired] == [24.0]  # last result at 19 s, 5 intervals of 1 s
    assert [c.note for c in _of(changes, "node_stale", ChangeKind.UPDATED) if c.note] == ["escalated to major"]
    resolved = _of(changes, "node_stale", ChangeKind.RESOLVED)
    assert [c.time - T0 for c in resolved] == [59.0 + 30.0]  # clear_s after the last silent tick


def test_a_node_never_heard_from_goes_stale() -> None:
    engine = _engine()
    assert not engine.tick(T0 + 4.0)
    assert [c.incident.rule for c in engine.tick(T0 + 5.0)] == ["node_stale"]


def test_unreachable_opens_after_for_s_even_while_backing_off() -> None:
    # polls fail from 20 s on, but results arrive only every 16 s (backoff): tick still opens it at 30 s of failure.
    trace = build_trace(100, state=lambda s: "ok" if s < 20 else ("fail" if (s - 20) % 16 == 0 else "silent"))
    changes = run(_engine(), trace)
    fired = opened(changes, "node_unreachable")
    assert [c.time - T0 for c in fired] == [50.0]
    assert "timeout: no answer within 3 s" in fired[0].incident.detail
    assert not opened(changes, "node_stale")  # a node that answers with failures is unreachable, not stale


def test_gpu_vanished_from_enumeration_is_lost() -> None:
    trace = build_trace(40)
    for i in range(20, 40):
        entry = trace[i]
        assert isinstance(entry, PollResult) and entry.sample is not None
        sample = dataclasses.replace(entry.sample, gpus=tuple(g for g in entry.sample.gpus if g.index != VICTIM))
        trace[i] = dataclasses.replace(entry, sample=sample)
    engine = _engine()
    changes = run(engine, trace)
    fired = opened(changes, "gpu_lost")
    assert len(fired) == 1 and fired[0].time - T0 == 20.0
    incident = fired[0].incident
    assert incident.context.gpu_uuid == uuid_of(VICTIM) and incident.context.serial == "1652422000002"
    assert "vanished" in incident.detail
    assert [i.rule for i in engine.open_incidents()] == ["gpu_lost"]  # still missing: still open


def test_evidence_before_and_after_is_bounded_and_filtered() -> None:
    engine = _engine()
    trace = build_trace(700, gpu_fault=victim(replace(remapped_rows_pending=True), from_step=400))
    changes = run(engine, trace)
    opening = opened(changes, "row_remap_pending")[0]
    before = opening.evidence
    times = [p.time - T0 for p in before]
    assert times == sorted(times) and times[-1] == 400.0
    assert 100.0 <= times[0] <= 115.0  # five minutes back, thinned
    assert times[-61:] == [float(t) for t in range(340, 401)]  # the last minute at full rate
    assert len(before) <= 80
    doc = json.loads(before[-1].sample_json)
    assert doc["schema"] == "gpu-console.sample/1"
    assert [g["uuid"] for g in doc["gpus"]] == [uuid_of(VICTIM)] and doc["chassis"]["coolant_flow_lpm"] > 0
    assert all(p.incident_id == opening.incident.id for p in before)
    original = trace[400]
    assert isinstance(original, PollResult) and original.sample is not None
    assert before[-1].sample_json == evidence_json(original.sample, uuid_of(VICTIM))  # kept samples lose nothing
    after = [c for c in changes if c.kind is ChangeKind.EVIDENCE and c.incident.id == opening.incident.id]
    after_times = [p.time - T0 for c in after for p in c.evidence]
    assert after_times[0] == 401.0 and after_times[-1] <= 700.0 and max(after_times) <= 400.0 + 300.0
    assert len(after_times) <= 90
    batches = [c.time for c in after]
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(batches))
    assert engine.buffered_samples(NODE) <= 80  # memory per node stays bounded


def test_ids_are_stable_across_engines_and_unique_per_opening() -> None:
    xids = {20: (79, "GPU has fallen off the bus."), 300: (79, "GPU has fallen off the bus.")}
    first = opened(run(_engine(), build_trace(320, events=xid_at(xids))))
    second = opened(run(_engine(), build_trace(320, events=xid_at(xids))))
    assert [c.incident.id for c in first] == [c.incident.id for c in second]
    assert len({c.incident.id for c in first}) == 2
    incident = first[0].incident
    assert incident.id == incident_id(NODE, uuid_of(VICTIM), "xid", "79", incident.opened_at)
    assert incident_id("other-node", uuid_of(VICTIM), "xid", "79", incident.opened_at) != incident.id


def test_operator_acknowledges_and_resolves_then_recurrence_opens_a_new_incident() -> None:
    engine = _engine()
    pending = victim(replace(remapped_rows_pending=True), from_step=0)
    run(engine, build_trace(20, gpu_fault=pending))
    (incident,) = engine.open_incidents()
    ack = engine.acknowledge(incident.id, "reset planned for Sunday", T0 + 20)
    assert ack.kind is ChangeKind.ACKNOWLEDGED and ack.incident.status is Status.ACKNOWLEDGED
    assert ack.note == "reset planned for Sunday" and ack.incident.acknowledged_at == T0 + 20
    done = engine.resolve(incident.id, "GPU reset", Outcome.FIXED, T0 + 25)
    assert done.incident.status is Status.RESOLVED and done.incident.outcome is Outcome.FIXED
    assert done.incident.resolution_note == "GPU reset" and not engine.open_incidents()
    with pytest.raises(KeyError, match="no open incident"):
        engine.acknowledge(incident.id, "", T0 + 26)
    # the flag is still set: the next sample opens a new incident
    changes = run(engine, build_trace(3, start=T0 + 30, gpu_fault=pending))
    again = opened(changes, "row_remap_pending")
    assert len(again) == 1 and again[0].incident.id != incident.id


def test_context_is_frozen_at_opening() -> None:
    changes = run(_engine(), build_trace(30, gpu_fault=victim(replace(remapped_rows_failure=True))))
    context = opened(changes)[0].incident.context
    assert (context.site, context.provider, context.node) == ("site-a", "provider-a", NODE)
    assert context.gpu_index == VICTIM and context.gpu_model == "NVIDIA H100 80GB HBM3"
    assert (context.driver_version, context.vbios_version) == ("590.48.01", "96.00.99.00.01")
    assert context.pci_bus_id == "00000000:38:00.0"


def test_thresholds_read_per_device() -> None:
    # No T.Limit margin reported: the absolute slowdown threshold is used; HBM max from the GPU itself.
    gpu_fault = victim(
        replace(thermal_margin_c=None, slowdown_temp_c=62.0, memory_max_temp_c=58.0, memory_temperature_c=55.0),
        from_step=0,
    )
    changes = run(_engine(), build_trace(30, gpu_fault=gpu_fault))
    rules = {c.incident.rule for c in opened(changes)}
    assert rules == {"thermal_margin", "hbm_temperature"}
    healthy_gpu = victim(replace(thermal_margin_c=None, slowdown_temp_c=89.0), from_step=0)
    assert not opened(run(_engine(), build_trace(30, gpu_fault=healthy_gpu)))


def test_a_recovered_node_keeps_gpu_conditions_open_through_failed_polls() -> None:
    # a failed poll says nothing about a GPU: the remap incident must not clear because the node was unreachable
    fault = victim(replace(remapped_rows_pending=True), from_step=0)
    trace = build_trace(200, gpu_fault=fault, state=lambda s: "fail" if 20 <= s < 150 else "ok")
    changes = run(_engine(), trace)
    assert not _of(changes, "row_remap_pending", ChangeKind.RESOLVED)
    assert len(opened(changes, "row_remap_pending")) == 1
