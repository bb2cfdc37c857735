"""The normalized sample: JSON round trip, null for unsupported, clear errors with key paths, merging."""

from __future__ import annotations

import json
import math

import pytest

from console.samples.codec import SCHEMA_ID, sample_from_json, sample_to_json
from console.samples.schema import (
    ChassisSample,
    EventKind,
    GpuEvent,
    GpuSample,
    Health,
    NodeSample,
    RecoveryAction,
    SchemaError,
    ThrottleReason,
    merge_samples,
    throttle_mask,
    throttle_reasons_from_mask,
)

REQUIRED_GPU_KEYS = {
    "index", "uuid", "name", "serial", "pci_bus_id", "driver_version", "vbios_version", "utilization_pct",
    "memory_used_mib", "memory_total_mib", "power_w", "power_limit_w", "energy_j", "temperature_c",
    "memory_temperature_c", "thermal_margin_c", "fan_pct", "sm_clock_mhz", "throttle_reasons", "ecc_sbe_volatile",
    "ecc_dbe_volatile", "remapped_rows_pending", "remapped_rows_failure", "pcie_replays", "nvlink_crc_errors",
    "xid_last", "recovery_action",
}  # fmt: skip
REQUIRED_CHASSIS_KEYS = {
    "inlet_c", "exhaust_c", "coolant_supply_c", "coolant_return_c", "coolant_flow_lpm", "leak_detected",
    "fans_rpm", "power_w", "health",
}  # fmt: skip


def _sample() -> NodeSample:
    gpu = GpuSample(
        index=0,
        uuid="GPU-1",
        name="NVIDIA H100 80GB HBM3",
        power_w=650.5,
        temperature_c=61.0,
        fan_pct=None,
        throttle_reasons=(ThrottleReason.SW_POWER_CAP,),
        recovery_action=RecoveryAction.NONE,
        remapped_rows_pending=False,
        unsupported=("fan_pct",),
    )
    chassis = ChassisSample(inlet_c=23.5, fans_rpm=(9000.0,), leak_detected=False, health=Health.OK)
    event = GpuEvent(EventKind.XID, 1.5, "GPU-1", 0, 79, "GPU has fallen off the bus")
    return NodeSample("n1", "aws-use1", "demo", 1_700_000_000.0, (gpu,), chassis, (event,))


def test_json_has_every_documented_key_and_round_trips() -> None:
    data = json.loads(json.dumps(sample_to_json(_sample())))
    assert data["schema"] == SCHEMA_ID
    assert set(data["gpus"][0]) >= REQUIRED_GPU_KEYS
    assert set(data["chassis"]) >= REQUIRED_CHASSIS_KEYS
    assert data["gpus"][0]["fan_pct"] is None, "not supported is null, never 0"
    assert data["gpus"][0]["throttle_reasons"] == ["sw_power_cap"]
    assert sample_from_json(data) == _sample()


def test_non_finite_numbers_become_null() -> None:
    sample = NodeSample("n", "s", "x", 1.0, (GpuSample(0, "u", power_w=math.nan),))
    assert sample_to_json(sample)["gpus"][0]["power_w"] is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema="other/1"), "schema: expected"),
        (lambda d: d["gpus"][0].update(power_w="high"), "gpus[0].power_w: expected"),
        (lambda d: d["gpus"][0].pop("uuid"), "gpus[0].uuid: missing"),
        (
            lambda d: d["gpus"][0].update(throttle_reasons=["melting"]),
            "gpus[0].throttle_reasons[0]: unknown value",
        ),
        (lambda d: d["chassis"].update(health="fine"), "chassis.health: unknown value"),
        (lambda d: d["gpus"][0].update(bogus=1), "gpus[0]: unknown keys"),
        (lambda d: d.update(time=None), "time:"),
    ],
)
def test_invalid_documents_name_the_key_path(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = sample_to_json(_sample())
    mutate(data)
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sample_from_json(data)


def test_throttle_mask_round_trip() -> None:
    reasons = throttle_reasons_from_mask(0x4 | 0x40 | 0x80)
    assert reasons == (
        ThrottleReason.SW_POWER_CAP,
        ThrottleReason.HW_THERMAL_SLOWDOWN,
        ThrottleReason.HW_POWER_BRAKE_SLOWDOWN,
    )
    assert throttle_mask(reasons) == 0xC4


def test_merge_takes_gpus_from_one_source_and_chassis_from_another() -> None:
    gpus = NodeSample("n", "s", "dcgm", 10.0, (GpuSample(0, "GPU-1", power_w=500.0),))
    bmc = NodeSample("n", "s", "redfish", 11.0, (), ChassisSample(inlet_c=25.0, coolant_flow_lpm=30.0))
    merged = merge_samples([gpus, bmc])
    assert merged.gpus[0].power_w == 500.0
    assert merged.chassis.inlet_c == 25.0 and merged.chassis.coolant_flow_lpm == 30.0
    assert merged.source == "dcgm+redfish" and merged.time == 11.0
