"""Which measurement an incident's evidence chart leads with: the signal its rule fired on.

A rule names its signal in ``resources/rules/default.toml`` (``signal``, ``category``); a rule whose detector
computes its value (coolant flow as a fraction of rated, thermal margin, a power-limit deficit) names none there,
and the measurement it reads is given here by rule id. A flag or a throttle reason is not worth a line of zeros and
ones: the chart shows what the operator would check it against (the GPU's temperature under a thermal slowdown,
the coolant flow under a leak or a pump alarm). Unknown rules fall back on their category.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

from console.incidents.model import Incident
from console.samples.schema import ChassisSample, GpuSample, NodeSample

log = logging.getLogger(__name__)

GpuRead = Callable[[GpuSample], float | None]
ChassisRead = Callable[[ChassisSample], float | None]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One measurement: of the incident's GPU (``gpu``) or of each node's chassis (``chassis``)."""

    name: str  # the sample field (or a derived name, e.g. coolant_delta_t)
    title: str  # the plot's title: our own words
    unit: str
    gpu: GpuRead | None = None
    chassis: ChassisRead | None = None

    def read(self, sample: NodeSample, gpu: GpuSample | None) -> float:
        """The value in ``sample`` (NaN where it is not reported): ``gpu`` for a GPU signal."""
        if self.chassis is not None:
            value = self.chassis(sample.chassis)
        elif self.gpu is not None and gpu is not None:
            value = self.gpu(gpu)
        else:
            value = None
        return math.nan if value is None else float(value)


def _gpu(name: str, title: str, unit: str) -> SignalSpec:
    return SignalSpec(name, title, unit, gpu=lambda g: _number(getattr(g, name)))


def _chassis(name: str, title: str, unit: str) -> SignalSpec:
    return SignalSpec(name, title, unit, chassis=lambda c: _number(getattr(c, name)))


def _number(value: object) -> float | None:
    if value is None or isinstance(value, tuple):
        return None
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def _delta_t(chassis: ChassisSample) -> float | None:
    if chassis.coolant_return_c is None or chassis.coolant_supply_c is None:
        return None
    return chassis.coolant_return_c - chassis.coolant_supply_c


def _slowest_fan(chassis: ChassisSample) -> float | None:
    return min(chassis.fans_rpm) if chassis.fans_rpm else None


TEMPERATURE = _gpu("temperature_c", "GPU temperature", "°C")
THERMAL_MARGIN = _gpu("thermal_margin_c", "GPU thermal margin (to slowdown)", "°C")
GPU_POWER = _gpu("power_w", "GPU power", "W")
COOLANT_FLOW = _chassis("coolant_flow_lpm", "Coolant flow", "L/min")
INLET = _chassis("inlet_c", "Inlet air temperature", "°C")
CHASSIS_POWER = _chassis("power_w", "Chassis power", "W")

BY_RULE: dict[str, SignalSpec] = {
    "coolant_flow_low": COOLANT_FLOW,
    "leak_detected": COOLANT_FLOW,
    "pump_health": COOLANT_FLOW,
    "coolant_supply_temperature": _chassis("coolant_supply_c", "Coolant supply temperature", "°C"),
    "coolant_delta_t_drift": SignalSpec("coolant_delta_t", "Coolant delta-T (return − supply)", "°C", chassis=_delta_t),
    "inlet_temperature": INLET,
    "chassis_health": INLET,
    "fan_below_minimum": SignalSpec("fans_rpm", "Slowest chassis fan", "RPM", chassis=_slowest_fan),
    "psu_health": CHASSIS_POWER,
    "thermal_margin": THERMAL_MARGIN,
    "hbm_temperature": _gpu("memory_temperature_c", "HBM temperature", "°C"),
    "power_limit_below_default": _gpu("power_limit_w", "GPU enforced power limit", "W"),
    "hw_power_brake_slowdown": GPU_POWER,
    "energy_counter_reset": _gpu("energy_j", "GPU energy counter", "J"),
    "pcie_replay_rate": _gpu("pcie_replays", "PCIe replays (total)", "replays"),
    "pcie_link_degraded": _gpu("pcie_link_gen", "PCIe link generation", "gen"),
    "cohort_slower": _gpu("sm_clock_mhz", "SM clock", "MHz"),
}
# A thermal rule leads with the margin the slowdown fires on (the temperature has its own plot below); evidence
# without a margin falls back on the temperature (``evidence_series``).
BY_CATEGORY: dict[str, SignalSpec] = {"cooling": COOLANT_FLOW, "power": GPU_POWER, "thermal": THERMAL_MARGIN}
_GPU_FIELDS = frozenset(f.name for f in fields(GpuSample))
_CHASSIS_FIELDS = frozenset(f.name for f in fields(ChassisSample))
_TITLES = {
    "ecc_dbe_volatile": "Uncorrectable ECC errors (volatile)",
    "ecc_sbe_volatile": "Correctable ECC errors (volatile)",
    "nvlink_crc_errors": "NVLink CRC errors (total)",
    "nvlink_replay_errors": "NVLink replay errors (total)",
    "nvlink_recovery_errors": "NVLink recovery errors (total)",
    "remapped_rows_pending": "Row remap pending (1 = yes)",
    "remapped_rows_failure": "Row remapping failed (1 = yes)",
    "coolant_supply_c": "Coolant supply temperature",
}


@functools.cache
def _rule_signals() -> dict[str, tuple[str, str]]:
    """Rule id -> (signal, category) from the default rule set (read once, on the worker that first asks)."""
    from console.incidents.rules import DEFAULT_RULES_PATH, RuleError, load_rules

    try:
        rules = load_rules(DEFAULT_RULES_PATH)
    except (OSError, RuleError) as exc:  # the chart falls back on categories; the engine reports the file itself
        log.warning("rule signals unavailable: %s", exc)
        return {}
    return {rule.id: (rule.signal, rule.category) for rule in rules.rules}


def signal_for(incident: Incident) -> SignalSpec:
    """The measurement that shows why ``incident`` fired."""
    spec = BY_RULE.get(incident.rule)
    if spec is not None:
        return spec
    signal, category = _rule_signals().get(incident.rule, ("", incident.kind))
    if signal in _CHASSIS_FIELDS:
        return _chassis(signal, _TITLES.get(signal, signal.replace("_", " ")), "")
    if signal in _GPU_FIELDS:
        return _gpu(signal, _TITLES.get(signal, signal.replace("_", " ")), "count")
    return BY_CATEGORY.get(category, TEMPERATURE)  # thermal, xid, lost GPUs, throttle reasons: its temperature
