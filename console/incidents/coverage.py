"""Whether a sample says anything about a condition: a value that is missing is unknown, never "the condition ended".

A node's sources feed different rules: the BMC (Redfish) feeds the chassis rules (leak, coolant, pump, PSU, fans,
inlet, chassis health), the in-band sources (dcgm-exporter, NVML, the agent, SSH, Prometheus) feed the GPU rules.
When a source fails while another of the node answers, the merged sample simply lacks that source's fields; an
open incident whose inputs are missing from a sample must then neither clear nor count as seen. ``known`` answers
that per rule from the sample alone (so it also covers a source that answers without a field), and ``missing_note``
says what the incident shows meanwhile, naming the collector that went quiet where the result says which.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from console.incidents.rule import Rule
from console.samples.results import SourceFailure
from console.samples.schema import NodeSample

# Detectors that read the chassis (the BMC's data); every other sample rule reads the GPUs.
CHASSIS_KINDS = frozenset({"chassis_flag", "chassis_level", "coolant_flow", "coolant_delta_t", "health", "fan_minimum"})
# Source kinds that report the chassis only (their failure leaves the GPU rules judged, the chassis rules unknown).
CHASSIS_SOURCES = frozenset({"redfish"})

# The fields a detector reads, where it is not the rule's signal: known when any of them is present.
_CHASSIS_INPUTS: Mapping[str, tuple[str, ...]] = {
    "coolant_flow": ("coolant_flow_lpm",),
    "coolant_delta_t": ("coolant_supply_c", "coolant_return_c", "power_w"),
    "fan_minimum": ("fans_rpm",),
}
_GPU_INPUTS: Mapping[str, tuple[str, ...]] = {
    "thermal_margin": ("thermal_margin_c", "temperature_c"),
    "hbm_margin": ("memory_temperature_c",),
    "power_limit_deficit": ("power_limit_w",),
    "pcie_replay_rate": ("pcie_replays",),
    "pcie_link": ("pcie_link_width", "pcie_link_gen"),
    "recovery_action": ("recovery_action",),
    "cohort_hotter": ("temperature_c",),
    "cohort_slower": ("sm_clock_mhz",),
    "throttle": (),  # an empty tuple of reasons is a reading: the GPU's presence is enough
    "xid": (),
}


def known(rule: Rule, sample: NodeSample, gpu_uuid: str | None) -> bool:
    """Does ``sample`` carry what ``rule`` reads (for this GPU)? False: the condition is unknown in it."""
    kind = rule.kind
    if kind in CHASSIS_KINDS:
        chassis = sample.chassis
        fields = _CHASSIS_INPUTS.get(kind) or (rule.signal,)
        return any(getattr(chassis, name) not in (None, ()) for name in fields)
    if kind == "gpu_lost":
        return bool(sample.gpus)  # the lost GPU is absent by definition: known when the in-band source answered
    if gpu_uuid is None:
        return bool(sample.gpus)
    gpu = sample.gpu(gpu_uuid)
    if gpu is None:
        return False
    fields = _GPU_INPUTS.get(kind, (rule.signal,) if rule.signal else ())
    return not fields or any(getattr(gpu, name, None) is not None for name in fields)


def source_kind(failure: SourceFailure) -> str:
    """The kind of a failed source ("redfish" of "redfish https://bmc-17")."""
    return failure.source.split(" ", 1)[0]


def utc_minute(t: float) -> str:
    """14:02 UTC: how incidents say when, never as an epoch number."""
    return time.strftime("%H:%M UTC", time.gmtime(t))


def missing_note(rule: Rule, failures: tuple[SourceFailure, ...], since: float) -> str:
    """What an incident says while its condition is unknown: which collector is quiet, and since when."""
    if not failures:
        return f"no {rule.signal or rule.id} value reported since {utc_minute(since)}"
    kinds = [source_kind(f) for f in failures]
    chassis = rule.kind in CHASSIS_KINDS
    feeding = [k for k in kinds if (k in CHASSIS_SOURCES) == chassis] or kinds
    return f"no data from {', '.join(dict.fromkeys(feeding))} since {utc_minute(since)}"
