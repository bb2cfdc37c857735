"""The engine's light path for repeated samples (``PollResult.fresh`` False: the exporter served the same bytes),
and the shared evidence encoding (``SampleJson``) against the reference ``evidence_json``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from console.incidents.engine import IncidentEngine
from console.incidents.evidence import SampleBuffer, SampleJson, evidence_json
from console.incidents.model import ChangeKind, IncidentChange
from console.incidents.rules import load_rules
from console.incidents.xid import load_xid_catalog
from console.samples.results import PollResult
from console.samples.schema import (
    EMPTY_CHASSIS,
    ChassisSample,
    EventKind,
    GpuEvent,
    GpuSample,
    Health,
    NodeSample,
    RecoveryAction,
    ThrottleReason,
)
from tests.helpers.traces import NODE, T0, VICTIM, build_trace, make_fleet, opened, replace, run, uuid_of, victim

RULES = load_rules()
CATALOG = load_xid_catalog()


def _engine() -> IncidentEngine:
    return IncidentEngine(RULES, make_fleet(), clock=lambda: T0, xid_catalog=CATALOG)


def _repeating(trace: list[PollResult | float], fresh: set[int]) -> list[PollResult | float]:
    """The trace as a node whose exporter refreshes only at the ``fresh`` steps: every other poll answers with the
    previous sample object, marked not fresh, at its own time."""
    out: list[PollResult | float] = []
    last: NodeSample | None = None
    for step, entry in enumerate(trace):
        if isinstance(entry, PollResult) and entry.sample is not None and step not in fresh and last is not None:
            out.append(dataclasses.replace(entry, sample=last, fresh=False))
            continue
        if isinstance(entry, PollResult) and entry.sample is not None:
            last = entry.sample
        out.append(entry)
    return out


def _margin(value: float, steps: range) -> Callable[[int, GpuSample], GpuSample]:
    def fault(step: int, gpu: GpuSample) -> GpuSample:
        return dataclasses.replace(gpu, thermal_margin_c=value) if gpu.index == VICTIM and step in steps else gpu

    return fault


def _of(changes: list[IncidentChange], rule: str, kind: ChangeKind) -> list[IncidentChange]:
    return [c for c in changes if c.incident.rule == rule and c.kind is kind]


EVERY_30_FROM_20 = {0} | set(range(20, 400, 30))  # dcgm-exporter's 30 s refresh, the fault starting on one


def test_hot_gpu_whose_samples_repeat_opens_after_for_s_and_stays_open() -> None:
    # margin 3 C (warning, for_s = 10 s) from 20 s on; new samples only at 20, 50, 80, ... s, repeats in between.
    trace = build_trace(200, gpu_fault=_margin(3.0, range(20, 200)))
    every_second = run(_engine(), trace)
    changes = run(_engine(), _repeating(trace, EVERY_30_FROM_20))
    fired = opened(changes, "thermal_margin")
    assert [c.time - T0 for c in fired] == [c.time - T0 for c in opened(every_second, "thermal_margin")] == [30.0]
    assert not _of(changes, "thermal_margin", ChangeKind.RESOLVED)  # repeats never settle the held condition
    seen = [c.incident.last_seen_at - T0 for c in _of(changes, "thermal_margin", ChangeKind.UPDATED)]
    assert seen and max(seen) >= 190.0  # the repeats keep it "last seen" as new samples would


def test_repeats_do_not_count_towards_for_s_of_a_condition_they_never_showed() -> None:
    # the fault starts at 21 s, but the exporter's next new sample is at 50 s: repeats of the healthy 20 s sample
    # must not open anything; the incident opens for_s after the first sample that shows it.
    trace = build_trace(120, gpu_fault=_margin(3.0, range(21, 120)))
    changes = run(_engine(), _repeating(trace, EVERY_30_FROM_20))
    assert [c.time - T0 for c in opened(changes, "thermal_margin")] == [60.0]


def test_cleared_condition_resolves_clear_s_after_the_last_repeat_that_held_it() -> None:
    # hot from 20 s to 79 s (new samples at 20 and 50 s show it, the one at 80 s is cool): clear_s = 60 s counts
    # from the last repeat of a hot sample (79 s), as it does when every second brings a new sample.
    trace = build_trace(200, gpu_fault=_margin(3.0, range(20, 80)))
    expected = _of(run(_engine(), trace), "thermal_margin", ChangeKind.RESOLVED)
    resolved = _of(run(_engine(), _repeating(trace, EVERY_30_FROM_20)), "thermal_margin", ChangeKind.RESOLVED)
    assert [c.time - T0 for c in resolved] == [c.time - T0 for c in expected] == [79.0 + 60.0]
    assert resolved[0].incident.last_seen_at - T0 == 79.0


def test_repeats_add_no_evidence_points() -> None:
    fresh = {0} | set(range(20, 700, 30))
    trace = build_trace(700, gpu_fault=victim(replace(remapped_rows_pending=True), from_step=380))
    engine = _engine()
    changes = run(engine, _repeating(trace, fresh))
    opening = opened(changes, "row_remap_pending")[0]
    assert opening.time - T0 == 380.0  # a flag with no for_s: the first new sample that shows it
    fresh_times = {T0 + s for s in fresh}
    before = [p.time for p in opening.evidence]
    assert before and set(before) <= fresh_times
    after = [p.time for c in changes if c.kind is ChangeKind.EVIDENCE for p in c.evidence]
    assert after and set(after) <= fresh_times
    newest = max(fresh)  # the buffer holds new samples only: those of the last five minutes before the newest
    assert engine.buffered_samples(NODE) == len([s for s in fresh if s >= newest - 300])


def test_node_answering_only_repeats_is_not_stale() -> None:
    trace = build_trace(120)
    repeats = run(_engine(), _repeating(trace, {0}))
    assert not opened(repeats, "node_stale")
    # the same node falling silent after its first sample is stale: the check above can fail
    silent = run(_engine(), [trace[0], *[T0 + s for s in range(1, 120)]])
    assert opened(silent, "node_stale")


def test_result_rules_still_run_on_repeats() -> None:
    # the exporter answers slowly (0.8 s of a 1 s interval) with the same bytes: collector_slow opens after for_s
    trace = build_trace(100, latency_s=lambda step: 0.8 if step >= 10 else 0.05)
    changes = run(_engine(), _repeating(trace, {0}))
    assert [round(c.time - T0, 3) for c in opened(changes, "collector_slow")] == [70.0]


def test_a_repeat_after_a_failed_poll_keeps_gpu_conditions() -> None:
    # a failed poll between a hot sample and its repeat: the repeat still holds the condition, nothing resolves
    trace = build_trace(150, gpu_fault=_margin(3.0, range(0, 150)), state=lambda s: "fail" if s == 40 else "ok")
    changes = run(_engine(), _repeating(trace, {0}))
    assert [c.time - T0 for c in opened(changes, "thermal_margin")] == [10.0]
    assert not _of(changes, "thermal_margin", ChangeKind.RESOLVED)


# --- evidence text: pieces composed per sample equal the reference encoding, byte for byte -----------------------

_weird_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e300, 5e-324, 62.0, 412.345]),
)
_texts = st.text(max_size=12)  # commas, quotes, brackets, non-ASCII, "NaN" inside a string: all allowed


def _gpu(index: int, uuid: str, data: st.DataObject) -> GpuSample:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(GpuSample):
        kind = str(f.type)
        if f.name in ("index", "uuid"):
            continue
        if kind == "float | None":
            values[f.name] = data.draw(st.none() | _weird_floats)
        elif kind == "int | None":
            values[f.name] = data.draw(st.none() | st.integers(-(2**70), 2**70))
        elif kind in ("bool | None", "bool"):
            values[f.name] = data.draw(st.booleans() if kind == "bool" else st.none() | st.booleans())
        elif kind in ("str", "str | None"):
            values[f.name] = data.draw(_texts if kind == "str" else st.none() | _texts)
    values["throttle_reasons"] = tuple(data.draw(st.lists(st.sampled_from(list(ThrottleReason)), max_size=3)))
    values["recovery_action"] = data.draw(st.none() | st.sampled_from(list(RecoveryAction)))
    values["unsupported"] = tuple(data.draw(st.lists(_texts, max_size=3)))
    return GpuSample(index=index, uuid=uuid, **values)


def _chassis(data: st.DataObject) -> ChassisSample:
    if data.draw(st.booleans()):
        return EMPTY_CHASSIS
    health = st.none() | st.sampled_from(list(Health))
    return ChassisSample(
        inlet_c=data.draw(st.none() | _weird_floats),
        coolant_return_c=data.draw(st.none() | _weird_floats),
        leak_detected=data.draw(st.none() | st.booleans()),
        fans_rpm=data.draw(st.none() | st.tuples(_weird_floats, _weird_floats)),
        power_w=data.draw(st.none() | _weird_floats),
        health=data.draw(health),
        pump_health=data.draw(health),
        conditions=tuple(data.draw(st.lists(_texts, max_size=2))),
    )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_composed_evidence_equals_the_reference_encoding(data: st.DataObject) -> None:
    uuids = ["GPU-a", "GPU-b", "GPU-a" if data.draw(st.booleans()) else "GPU-c"]  # a duplicated UUID, sometimes
    gpus = tuple(_gpu(i, uuid, data) for i, uuid in enumerate(uuids))
    events = tuple(
        GpuEvent(EventKind.XID, data.draw(_weird_floats), data.draw(st.sampled_from([None, *uuids])), 1, code, msg)
        for code, msg in data.draw(st.lists(st.tuples(st.integers(0, 200), _texts), max_size=3))
    )
    sample = NodeSample(data.draw(_texts), data.draw(_texts), data.draw(_texts), data.draw(_weird_floats), gpus)
    sample = dataclasses.replace(sample, chassis=_chassis(data), events=events)
    pieces = SampleJson(sample)
    for uuid in (None, "GPU-a", "GPU-b", "GPU-c", "GPU-missing", "GPU-a"):  # again: from the cached pieces
        assert pieces.text(uuid) == evidence_json(sample, uuid)


def test_kept_samples_give_the_evidence_of_the_originals() -> None:
    trace = build_trace(90, gpu_fault=victim(replace(thermal_margin_c=math.nan, throttle_reasons=()), 30))
    buffer = SampleBuffer(RULES.evidence)
    originals = {}
    for entry in trace:
        assert isinstance(entry, PollResult) and entry.sample is not None
        buffer.add(entry.started + entry.latency_s, entry.sample)
        originals[entry.started + entry.latency_s] = entry.sample
    for uuid in (None, uuid_of(VICTIM), uuid_of(0)):
        kept = buffer.evidence(NODE, "site-a", uuid)
        assert len(kept) == len(buffer) > 60
        assert all(text == evidence_json(originals[t], uuid) for t, text in kept)
