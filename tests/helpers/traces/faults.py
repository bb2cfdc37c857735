"""One synthetic fault trace per built-in rule (tests/test_incident_rules.py fails for a rule without one)."""

from __future__ import annotations

import dataclasses
from typing import Any

from console.samples.results import PollFailure, PollResult, SourceFailure
from console.samples.schema import EMPTY_CHASSIS, GpuSample, Health, RecoveryAction, ThrottleReason
from tests.helpers.traces import FaultTrace, build_trace, chassis_from, replace, replace_chassis, victim, xid_at

Trace = list[PollResult | float]


def _counter(field: str, per_step: int, from_step: int = 20) -> Trace:
    def fault(step: int, gpu: GpuSample) -> GpuSample:
        if gpu.index != 2 or step < from_step:
            return gpu
        changes: dict[str, Any] = {field: (step - from_step + 1) * per_step}
        return dataclasses.replace(gpu, **changes)

    return build_trace(120, gpu_fault=fault)


def _throttle(reason: ThrottleReason) -> Trace:
    return build_trace(90, gpu_fault=victim(replace(throttle_reasons=(ThrottleReason.SW_POWER_CAP, reason))))


def _energy_reset(step: int, gpu: GpuSample) -> GpuSample:
    if gpu.index == 2 and step >= 20 and gpu.energy_j is not None:
        return dataclasses.replace(gpu, energy_j=gpu.energy_j - 1.0e6 + 10.0)  # driver reload at step 20
    return gpu


def _bmc_down(seconds: int, from_step: int = 20) -> Trace:
    """The BMC stops answering from ``from_step`` while the in-band source keeps answering: GPUs, no chassis."""
    failure = SourceFailure("redfish https://bmc.node-a", PollFailure.TIMEOUT, "no answer within 3 s")
    trace = build_trace(seconds)
    for step in range(from_step, seconds):
        entry = trace[step]
        assert isinstance(entry, PollResult) and entry.sample is not None
        sample = dataclasses.replace(entry.sample, chassis=EMPTY_CHASSIS)
        trace[step] = dataclasses.replace(entry, sample=sample, failures=(failure,))
    return trace


def _delta_t_drift() -> Trace:
    # Heat stops reaching the coolant as it did (fouled cold plate): the return runs half as far above supply.
    def fault(chassis):  # type: ignore[no-untyped-def]
        supply, ret = chassis.coolant_supply_c, chassis.coolant_return_c
        return dataclasses.replace(chassis, coolant_return_c=supply + (ret - supply) * 0.5)

    return build_trace(1000, chassis_fault=chassis_from(fault, from_step=650))


FAULT_TRACES: dict[str, FaultTrace] = {
    f.rule: f
    for f in (
        FaultTrace("xid", lambda: build_trace(60, events=xid_at({20: (79, "GPU has fallen off the bus.")}))),
        FaultTrace("gpu_lost", lambda: build_trace(60, gpu_fault=victim(replace(lost=True)))),
        FaultTrace(
            "recovery_action",
            lambda: build_trace(60, gpu_fault=victim(replace(recovery_action=RecoveryAction.GPU_RESET))),
        ),
        FaultTrace("row_remap_pending", lambda: build_trace(60, gpu_fault=victim(replace(remapped_rows_pending=True)))),
        FaultTrace("row_remap_failure", lambda: build_trace(60, gpu_fault=victim(replace(remapped_rows_failure=True)))),
        FaultTrace("ecc_dbe_increase", lambda: build_trace(60, gpu_fault=victim(replace(ecc_dbe_volatile=2)))),
        FaultTrace("ecc_sbe_rate", lambda: _counter("ecc_sbe_volatile", 1)),
        FaultTrace("nvlink_crc", lambda: _counter("nvlink_crc_errors", 500)),
        FaultTrace("nvlink_replay", lambda: build_trace(60, gpu_fault=victim(replace(nvlink_replay_errors=1)))),
        FaultTrace("nvlink_recovery", lambda: build_trace(60, gpu_fault=victim(replace(nvlink_recovery_errors=1)))),
        FaultTrace("pcie_replay_rate", lambda: _counter("pcie_replays", 2)),
        FaultTrace("pcie_link_degraded", lambda: build_trace(150, gpu_fault=victim(replace(pcie_link_width=8)))),
        FaultTrace("hw_slowdown", lambda: _throttle(ThrottleReason.HW_SLOWDOWN)),
        FaultTrace("hw_thermal_slowdown", lambda: _throttle(ThrottleReason.HW_THERMAL_SLOWDOWN)),
        FaultTrace("hw_power_brake_slowdown", lambda: _throttle(ThrottleReason.HW_POWER_BRAKE_SLOWDOWN)),
        FaultTrace("sw_thermal_slowdown", lambda: _throttle(ThrottleReason.SW_THERMAL_SLOWDOWN)),
        FaultTrace("thermal_margin", lambda: build_trace(60, gpu_fault=victim(replace(thermal_margin_c=3.0)))),
        FaultTrace("hbm_temperature", lambda: build_trace(60, gpu_fault=victim(replace(memory_temperature_c=93.0)))),
        FaultTrace(
            "power_limit_below_default", lambda: build_trace(120, gpu_fault=victim(replace(power_limit_w=500.0)))
        ),
        FaultTrace("energy_counter_reset", lambda: build_trace(60, gpu_fault=_energy_reset)),
        FaultTrace(
            "leak_detected",
            lambda: build_trace(60, chassis_fault=chassis_from(replace_chassis(leak_detected=True))),
            gpu_index=None,
        ),
        FaultTrace(
            "coolant_flow_low",
            lambda: build_trace(60, chassis_fault=chassis_from(replace_chassis(coolant_flow_lpm=12.0))),
            gpu_index=None,
        ),
        FaultTrace(
            "coolant_supply_temperature",
            lambda: build_trace(90, chassis_fault=chassis_from(replace_chassis(coolant_supply_c=47.0))),
            gpu_index=None,
        ),
        FaultTrace("coolant_delta_t_drift", _delta_t_drift, gpu_index=None),
        FaultTrace(
            "pump_health",
            lambda: build_trace(60, chassis_fault=chassis_from(replace_chassis(pump_health=Health.WARNING))),
            gpu_index=None,
        ),
        FaultTrace(
            "psu_health",
            lambda: build_trace(60, chassis_fault=chassis_from(replace_chassis(psu_health=Health.CRITICAL))),
            gpu_index=None,
        ),
        FaultTrace(
            "chassis_health",
            lambda: build_trace(
                60,
                chassis_fault=chassis_from(
                    replace_chassis(health=Health.WARNING, conditions=("Environmental.1.2.PumpFailed",))
                ),
            ),
            gpu_index=None,
        ),
        FaultTrace(
            "fan_below_minimum",
            lambda: build_trace(
                60, chassis_fault=chassis_from(replace_chassis(fans_rpm=(9000.0, 9000.0, 2000.0, 9000.0)))
            ),
            gpu_index=None,
        ),
        FaultTrace(
            "inlet_temperature",
            lambda: build_trace(120, chassis_fault=chassis_from(replace_chassis(inlet_c=38.0))),
            gpu_index=None,
        ),
        FaultTrace(
            "node_unreachable", lambda: build_trace(90, state=lambda s: "fail" if s >= 20 else "ok"), gpu_index=None
        ),
        FaultTrace("collector_down", lambda: _bmc_down(90), gpu_index=None),
        FaultTrace(
            "node_stale", lambda: build_trace(60, state=lambda s: "silent" if s >= 20 else "ok"), gpu_index=None
        ),
        FaultTrace(
            "collector_slow",
            lambda: build_trace(120, latency_s=lambda s: 0.8 if s >= 20 else 0.05),
            gpu_index=None,
        ),
        FaultTrace(
            "cohort_hotter",
            lambda: build_trace(
                200, gpu_fault=victim(lambda g: dataclasses.replace(g, temperature_c=(g.temperature_c or 0) + 15))
            ),
        ),
        FaultTrace(
            "cohort_slower",
            lambda: build_trace(200, gpu_fault=victim(replace(sm_clock_mhz=1500.0))),
        ),
    )
}
