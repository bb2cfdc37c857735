"""Collectors apart from nodes, missing data as unknown, and ids two consoles agree on (issue 13), on synthetic
traces with the trace's own times as the clock."""

from __future__ import annotations

import dataclasses

from console.incidents.engine import IncidentEngine
from console.incidents.lifecycle import ID_WINDOW_S, incident_id, same_fault
from console.incidents.model import ChangeKind, IncidentChange, Severity
from console.incidents.rules import load_rules
from console.incidents.xid import load_xid_catalog
from console.samples.results import PollFailure, PollResult, SourceFailure
from console.samples.schema import EMPTY_CHASSIS
from tests.helpers.builders import make_incident
from tests.helpers.traces import T0, VICTIM, build_trace, chassis_from, make_fleet, opened, replace, run, victim
from tests.helpers.traces import replace_chassis as chassis_with

RULES = load_rules()
CATALOG = load_xid_catalog()
BMC_TIMEOUT = SourceFailure("redfish https://bmc.node-a", PollFailure.TIMEOUT, "no answer within 3 s")
DCGM_REFUSED = SourceFailure("dcgm http://node-a:9400/metrics", PollFailure.UNREACHABLE, "connection refused")
BMC_REFUSED = SourceFailure("redfish https://bmc.node-a", PollFailure.UNREACHABLE, "connection refused")

Trace = list[PollResult | float]


def _engine(clock: float = T0) -> IncidentEngine:
    return IncidentEngine(RULES, make_fleet(), clock=lambda: clock, xid_catalog=CATALOG)


def _of(changes: list[IncidentChange], rule: str, kind: ChangeKind | None = None) -> list[IncidentChange]:
    return [c for c in changes if c.incident.rule == rule and (kind is None or c.kind is kind)]


def _bmc_down(trace: Trace, steps: range) -> Trace:
    """The BMC times out during ``steps``: the results carry the GPUs (dcgm answered) and no chassis."""
    out = list(trace)
    for step in steps:
        entry = out[step]
        assert isinstance(entry, PollResult) and entry.sample is not None
        sample = dataclasses.replace(entry.sample, chassis=EMPTY_CHASSIS)
        out[step] = dataclasses.replace(entry, sample=sample, failures=(BMC_TIMEOUT,))
    return out


def _all_down(trace: Trace, steps: range) -> Trace:
    out = list(trace)
    for step in steps:
        entry = out[step]
        assert isinstance(entry, PollResult)
        out[step] = dataclasses.replace(entry, sample=None, failures=(DCGM_REFUSED, BMC_REFUSED))
    return out


def _shifted(trace: Trace, offset: float) -> Trace:
    """The same exporter's samples as a second console sees them, polling ``offset`` seconds later."""
    out: Trace = []
    for entry in trace:
        if isinstance(entry, PollResult):
            sample = entry.sample
            if sample is not None and sample.time >= entry.started:  # console-stamped: this console's own time
                sample = dataclasses.replace(sample, time=sample.time + offset)
            out.append(dataclasses.replace(entry, started=entry.started + offset, sample=sample))
        else:
            out.append(entry + offset)
    return out


# --- a collector is not its node --------------------------------------------------------------------------------


def test_a_bmc_that_times_out_while_dcgm_answers_opens_collector_down_and_nothing_critical() -> None:
    changes = run(_engine(), _bmc_down(build_trace(150), range(20, 100)))
    fired = opened(changes)
    assert [c.incident.rule for c in fired] == ["collector_down"]
    incident = fired[0].incident
    assert incident.code == "redfish" and incident.severity is Severity.WARNING
    assert fired[0].time - T0 == 50.0  # for_s 30 from the first failed poll at 20 s
    assert "redfish" in incident.title and "no answer within 3 s" in incident.detail
    resolved = _of(changes, "collector_down", ChangeKind.RESOLVED)
    assert [c.time - T0 for c in resolved] == [129.0]  # last failure at 99 s, the BMC answers again: clear_s 30
    assert not _of(changes, "node_unreachable")


def test_a_node_all_of_whose_sources_fail_is_one_node_unreachable_incident() -> None:
    changes = run(_engine(), _all_down(build_trace(120), range(20, 120)))
    assert [c.incident.rule for c in opened(changes)] == ["node_unreachable"]
    assert "connection refused" in opened(changes)[0].incident.detail


def test_a_collector_down_stays_open_while_the_whole_node_is_down() -> None:
    trace = _all_down(_bmc_down(build_trace(200), range(20, 200)), range(80, 150))
    changes = run(_engine(), trace)
    assert [c.incident.rule for c in opened(changes)] == ["collector_down", "node_unreachable"]
    assert not _of(changes, "collector_down", ChangeKind.RESOLVED)  # the BMC never answered


def test_a_dcgm_that_fails_while_the_bmc_answers_is_collector_down_and_gpu_incidents_hold() -> None:
    trace = build_trace(200, gpu_fault=victim(replace(remapped_rows_pending=True), from_step=0))
    for step in range(40, 150):
        entry = trace[step]
        assert isinstance(entry, PollResult) and entry.sample is not None
        sample = dataclasses.replace(entry.sample, gpus=())
        trace[step] = dataclasses.replace(entry, sample=sample, failures=(DCGM_REFUSED,))
    changes = run(_engine(), trace)
    assert sorted(c.incident.rule for c in opened(changes)) == ["collector_down", "row_remap_pending"]
    assert opened(changes, "collector_down")[0].incident.code == "dcgm"
    assert not _of(changes, "row_remap_pending", ChangeKind.RESOLVED)
    notes = [c.note for c in _of(changes, "row_remap_pending", ChangeKind.UPDATED) if c.note]
    assert notes[0].startswith("condition unknown: no data from dcgm since ")


# --- missing data is unknown, never "the condition ended" -------------------------------------------------------


def test_an_open_leak_does_not_clear_while_the_bmc_is_down_and_clears_once_it_shows_the_leak_ended() -> None:
    leak = chassis_from(chassis_with(leak_detected=True), from_step=10)
    trace = build_trace(1200, chassis_fault=lambda s, c: c if s >= 400 else leak(s, c))
    changes = run(_engine(), _bmc_down(trace, range(20, 400)))  # the leak ends while the BMC is down
    leaks = _of(changes, "leak_detected")
    assert [c.time - T0 for c in leaks if c.kind is ChangeKind.OPENED] == [10.0]
    unknown = [c for c in leaks if c.note.startswith("condition unknown")]
    assert len(unknown) == 1 and unknown[0].time - T0 == 20.0
    # the last poll in which every source answered was at 19 s: 00:00 UTC of T0's day + 19 s
    assert unknown[0].note == "condition unknown: no data from redfish since 08:00 UTC"
    assert "condition unknown: no data from redfish since 08:00 UTC" in unknown[0].incident.detail
    assert "1800000" not in unknown[0].note  # times as HH:MM UTC, never raw epoch numbers
    back = [c for c in leaks if c.note.startswith("data again")]
    assert len(back) == 1 and back[0].time - T0 == 400.0 and "condition unknown" not in back[0].incident.detail
    resolved = [c for c in leaks if c.kind is ChangeKind.RESOLVED]
    assert [c.time - T0 for c in resolved] == [400.0 + 300.0]  # clear_s counted from the data's return


def test_a_leak_still_there_when_the_bmc_returns_stays_open_as_one_incident() -> None:
    trace = build_trace(900, chassis_fault=chassis_from(chassis_with(leak_detected=True), from_step=10))
    changes = run(_engine(), _bmc_down(trace, range(20, 400)))
    assert len(opened(changes, "leak_detected")) == 1
    assert not _of(changes, "leak_detected", ChangeKind.RESOLVED)


def test_a_value_that_goes_missing_is_unknown_not_the_condition_ending() -> None:
    trace = build_trace(
        400,
        gpu_fault=lambda s, g: (
            g
            if g.index != VICTIM or s < 20
            else dataclasses.replace(g, thermal_margin_c=3.0 if s < 60 else None, temperature_c=None if s >= 60 else 80)
        ),
    )
    changes = run(_engine(), trace)
    assert len(opened(changes, "thermal_margin")) == 1
    assert not _of(changes, "thermal_margin", ChangeKind.RESOLVED)
    notes = [c.note for c in _of(changes, "thermal_margin") if c.note.startswith("condition unknown")]
    assert notes == ["condition unknown: no thermal_margin value reported since 08:01 UTC"]


# --- ids two consoles agree on ------------------------------------------------------------------------------------


def _ids_of(changes: list[IncidentChange]) -> dict[tuple[str, str | None, str], str]:
    return {(c.incident.rule, c.incident.context.gpu_uuid, c.incident.code): c.incident.id for c in opened(changes)}


def _fault_trace() -> Trace:
    xids = {100: (79, "GPU has fallen off the bus.")}
    from tests.helpers.traces import xid_at

    trace = build_trace(
        400,
        gpu_fault=victim(replace(remapped_rows_pending=True), from_step=30),
        chassis_fault=chassis_from(chassis_with(leak_detected=True), from_step=45),
        events=xid_at(xids),
    )
    return _bmc_down(trace, range(200, 300))


def test_two_engines_fed_the_same_exporter_with_an_offset_give_the_same_ids() -> None:
    trace = _fault_trace()
    first = _ids_of(run(_engine(), trace))
    assert len(first) == 4  # remap, leak, Xid, collector_down
    for offset in (0.3, 1.7, 4.0):
        second = _ids_of(run(_engine(T0 + offset), _shifted(trace, offset)))
        assert second == first, offset


def test_source_stamped_samples_give_the_same_ids_whatever_the_consoles_poll_time() -> None:
    # a timestamped exporter: the sample's time is the source's (before the poll); each console polls later
    trace: Trace = []
    for entry in build_trace(120, gpu_fault=victim(replace(remapped_rows_pending=True), from_step=30)):
        assert isinstance(entry, PollResult) and entry.sample is not None
        stamped = dataclasses.replace(entry.sample, time=entry.started - 0.5)
        trace.append(dataclasses.replace(entry, sample=stamped))
    first = opened(run(_engine(), trace))
    second = opened(run(_engine(), _shifted(trace, 7.0)))  # far beyond the window rounding's tolerance
    assert [c.incident.id for c in first] == [c.incident.id for c in second]
    incident = first[0].incident
    onset = T0 + 30 - 0.05 - 0.5
    assert incident.id == incident_id(
        incident.context.node, incident.context.gpu_uuid, incident.rule, "", onset, stamped=True
    )


def test_ids_round_the_onset_to_a_window_and_same_fault_joins_the_pairs_a_boundary_splits() -> None:
    start = (T0 // ID_WINDOW_S + 1) * ID_WINDOW_S  # a window boundary
    before = incident_id("n", "GPU-1", "xid", "79", start - 0.4)
    after = incident_id("n", "GPU-1", "xid", "79", start + 1.2)
    assert incident_id("n", "GPU-1", "xid", "79", start + 599.0) == after
    assert before != after
    a = make_incident(incident_id=before, node="n", gpu_uuid="GPU-1", rule="xid", code="79", opened_at=start - 0.4)
    b = make_incident(incident_id=after, node="n", gpu_uuid="GPU-1", rule="xid", code="79", opened_at=start + 1.2)
    assert same_fault(a, b)
    later = dataclasses.replace(b, opened_at=start + 900.0)
    assert not same_fault(dataclasses.replace(a, resolved_at=start + 60.0), later)
    assert not same_fault(a, dataclasses.replace(b, code="48"))
