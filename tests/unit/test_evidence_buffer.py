"""The incident engine's per-node sample buffer: what it gives back is what it was given (values, types, evidence
text byte for byte), while it keeps it compact and out of the garbage collector's way."""

from __future__ import annotations

import dataclasses
import gc
import math
import threading
import tracemalloc
from collections import deque
from enum import StrEnum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from console.incidents.evidence import SampleBuffer, evidence_json
from console.incidents.rules import EvidenceSettings
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

EVIDENCE = EvidenceSettings()
NODE, SITE = "node-a", "site-a"
UUIDS = ("GPU-a", "GPU-b", "GPU-c", "GPU-d")

_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e300, 0.1, 62.0, 2.0**53 + 2]),
)
_ints = st.one_of(st.integers(-300, 300), st.integers(-(2**80), 2**80), st.sampled_from([2**53 + 1, 2**63, -(2**63)]))
_texts = st.text(max_size=10)  # commas, quotes, non-ASCII, "NaN" inside a string
# What a source may put where the schema declares a float, int or bool: the declared type, None, and its neighbours
# (an int in a float field, a bool in an int field), which must come back as they were, not converted.
_NUMBER_VALUES: dict[str, Any] = {
    "float | None": st.none() | _floats | _ints | st.booleans(),
    "int | None": st.none() | _ints | st.booleans() | _floats,
    "bool | None": st.none() | st.booleans() | st.integers(0, 1),
    "bool": st.booleans(),
    "int": st.integers(0, 16),
}


def _gpu(index: int, uuid: str, data: st.DataObject) -> GpuSample:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(GpuSample):
        kind = str(f.type)
        if f.name in ("index", "uuid"):
            continue
        if kind in _NUMBER_VALUES:
            values[f.name] = data.draw(_NUMBER_VALUES[kind])
        elif kind == "str | None":
            values[f.name] = data.draw(st.none() | _texts | st.sampled_from(["NVIDIA H100 80GB HBM3", "590.48.01"]))
    values["throttle_reasons"] = tuple(data.draw(st.lists(st.sampled_from(list(ThrottleReason)), max_size=3)))
    values["recovery_action"] = data.draw(st.none() | st.sampled_from(list(RecoveryAction)))
    values["unsupported"] = tuple(data.draw(st.lists(st.sampled_from(["fan_pct", "energy_j"]) | _texts, max_size=3)))
    return GpuSample(index=index, uuid=uuid, **values)


def _chassis(data: st.DataObject) -> ChassisSample:
    if data.draw(st.booleans()):
        return EMPTY_CHASSIS
    health = st.none() | st.sampled_from(list(Health))
    fans: Any = data.draw(st.none() | st.just(()) | st.tuples(_floats, st.none() | _floats, st.integers(0, 20000)))
    return ChassisSample(
        inlet_c=data.draw(_NUMBER_VALUES["float | None"]),
        exhaust_c=data.draw(st.none() | _floats),
        coolant_return_c=data.draw(st.none() | _floats),
        coolant_flow_lpm=data.draw(st.none() | _floats),
        leak_detected=data.draw(st.none() | st.booleans()),
        fans_rpm=fans,  # a None or an int among the fans comes back as it was
        fans_min_rpm=data.draw(st.none() | _floats),
        power_w=data.draw(st.none() | _floats),
        health=data.draw(health),
        pump_health=data.draw(health),
        psu_health=data.draw(health),
        conditions=tuple(data.draw(st.lists(_texts, max_size=2))),
    )


def _sample(data: st.DataObject, time: float) -> NodeSample:
    # GPUs appear, disappear and change order from one sample to the next; a UUID may repeat within one sample
    uuids = data.draw(st.lists(st.sampled_from(UUIDS), max_size=4))
    gpus = tuple(_gpu(i, uuid, data) for i, uuid in enumerate(uuids))
    events = tuple(
        GpuEvent(data.draw(st.sampled_from(list(EventKind))), time, uuid, 1, code, message)
        for uuid, code, message in data.draw(
            st.lists(st.tuples(st.sampled_from([None, *UUIDS]), st.none() | _ints, _texts), max_size=2)
        )
    )
    sample_time: float = data.draw(st.sampled_from([time, int(time), -0.0]) | _floats)
    source = data.draw(st.sampled_from(["dcgm", "nvml+redfish"]) | _texts)
    return NodeSample(NODE, SITE, source, sample_time, gpus, _chassis(data), events)


def _same(restored: object, original: object) -> bool:
    """Equal in value and in type; floats bit for bit (NaN is NaN, -0.0 is not 0.0). An enum comes back as its text,
    as the buffer has always given it (it compares and encodes as the member does)."""
    if isinstance(original, StrEnum) and not isinstance(restored, StrEnum):
        return type(restored) is str and restored == original.value
    if type(restored) is not type(original):
        return False
    if isinstance(original, float):
        assert isinstance(restored, float)
        if math.isnan(original):
            return math.isnan(restored)
        return restored == original and math.copysign(1.0, restored) == math.copysign(1.0, original)
    if isinstance(original, tuple):
        assert isinstance(restored, tuple)
        return len(restored) == len(original) and all(map(_same, restored, original))
    if dataclasses.is_dataclass(original):
        return all(_same(getattr(restored, f.name), getattr(original, f.name)) for f in dataclasses.fields(original))
    return restored == original


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_buffer_gives_back_every_kept_sample_and_its_evidence_text_exactly(data: st.DataObject) -> None:
    buffer = SampleBuffer(EVIDENCE)
    originals: dict[float, NodeSample] = {}
    t = 1_800_000_000.0
    for _ in range(data.draw(st.integers(1, 8))):
        # 0.5 s: dropped (min spacing); 20 s: older samples get thinned; 400 s: everything before is forgotten
        t += data.draw(st.sampled_from([0.5, 1.0, 1.0, 20.0, 400.0]))
        sample = _sample(data, t)
        buffer.add(t, sample)
        originals.setdefault(t, sample)
    kept = buffer.samples(NODE, SITE)
    assert len(kept) == len(buffer) >= 1
    for when, restored in kept:
        assert _same(restored, originals[when]), (restored, originals[when])
    for uuid in (None, *UUIDS, "GPU-missing"):
        texts = buffer.evidence(NODE, SITE, uuid)
        assert [when for when, _ in texts] == [when for when, _ in kept]
        assert all(text == evidence_json(originals[when], uuid) for when, text in texts)


def _h100_node(step: int) -> NodeSample:
    """An 8-GPU node as a source builds it each poll: new strings and floats every time."""
    gpus = tuple(
        GpuSample(
            index=i,
            uuid=f"GPU-{i:02d}",
            name="NVIDIA H100 80GB HBM3",
            serial=f"{1650000000 + i}",
            pci_bus_id=f"00000000:{0x18 + i * 0x10:02X}:00.0",
            driver_version="590.48.01",
            utilization_pct=float(step % 100),
            memory_used_mib=70000.0 + step,
            memory_total_mib=81559.0,
            power_w=630.0 + (step % 7) / 3,
            power_limit_w=700.0,
            energy_j=1e9 + step * 630.5,
            temperature_c=60.0 + (step % 5) / 7,
            memory_temperature_c=55.0 + (step % 3) / 7,
            thermal_margin_c=26.0 - (step % 5) / 7,
            sm_clock_mhz=1980.0,
            pstate=0,
            throttle_reasons=(ThrottleReason.SW_POWER_CAP,) if step % 2 else (),
            ecc_sbe_volatile=0,
            pcie_replays=9,
            pcie_link_gen=5,
            pcie_link_width=16,
            nvlink_crc_errors=0,
            xid_last=0,
            recovery_action=RecoveryAction.NONE,
        )
        for i in range(8)
    )
    chassis = ChassisSample(inlet_c=24.0 + step % 2, fans_rpm=(9000.0 + step,) * 6, health=Health.OK)
    return NodeSample(NODE, SITE, "dcgm", 1_800_000_000.0 + step, gpus, chassis)


def _kept_records(buffer: SampleBuffer) -> list[object]:
    """What the buffer holds per sample (the entries of its deques), found without naming its internals."""
    return [record for held in gc.get_referents(buffer) if isinstance(held, deque) for record in held]


def test_five_minutes_of_an_8_gpu_node_stay_compact_and_untracked_by_the_collector() -> None:
    buffer = SampleBuffer(EVIDENCE)
    gc.collect()  # empties the free lists, so that only what the buffer keeps counts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for step in range(400):
            buffer.add(1_800_000_000.0 + step, _h100_node(step))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(buffer) == 77  # 60 s at full rate, then one per 15 s back to 300 s: the same thinning as before
    assert held < 0.15 * 2**20  # a tuple of Python values per GPU took ~0.47 MiB
    records = _kept_records(buffer)
    assert len(records) == len(buffer)
    for _ in range(4):  # each collection untracks one more level of nested tuples
        gc.collect()
    assert not [record for record in records if gc.is_tracked(record)]  # no collection pause grows with them
    newest = buffer.samples(NODE, SITE)[-1][1]
    assert _same(newest, _h100_node(399))


def test_a_value_that_does_not_pickle_is_kept_as_it_is() -> None:
    odd = threading.Lock()  # no source should put this in a GPU field; the buffer must still give it back
    buffer = SampleBuffer(EVIDENCE)
    good = _h100_node(0)
    bad = dataclasses.replace(_h100_node(1), gpus=(dataclasses.replace(good.gpus[0], power_w=odd),))  # type: ignore[arg-type]
    buffer.add(1.0, good)
    buffer.add(2.0, bad)
    (_, first), (_, second) = buffer.samples(NODE, SITE)
    assert _same(first, good)
    assert second.gpus[0].power_w is odd
    assert _same(dataclasses.replace(second, gpus=()), dataclasses.replace(bad, gpus=()))
