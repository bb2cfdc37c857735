"""The one normalized sample schema that every source produces.

Units (converted at the source boundary, never later):
    power            W        (NVML reports mW; dcgm-exporter already W)
    energy           J        (NVML and DCGM report mJ since driver load)
    temperature      degC
    utilization      %        0..100
    memory           MiB      (NVML reports bytes; DCGM already MiB)
    clocks           MHz
    coolant flow     L/min
    throughput       MiB/s    (PCIe and NVLink traffic; DCGM reports bytes/s, NVML KB/s)
    fan speed        % of the board's maximum for GPU fans, RPM for chassis fans
    counters         monotonic totals since the last driver load / GPU reset; a decrease is a reset

A value the source does not report is ``None``, never 0. A source that learns that a field is unsupported on a
device lists the field name in ``GpuSample.unsupported`` (a capability flag), so the UI can say "not supported"
rather than "no data yet".

The JSON form (``sample_to_json`` / ``sample_from_json``) is what ``probe --json``, exports and the agent speak.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import repeat
from operator import call, itemgetter
from typing import Any, TypeVar

_D = TypeVar("_D", "GpuSample", "ChassisSample")


class ThrottleReason(StrEnum):
    """NVML clock-event ("throttle") reasons; the bit values are shared by NVML, pynvml and DCGM."""

    GPU_IDLE = "gpu_idle"
    APPLICATIONS_CLOCKS_SETTING = "applications_clocks_setting"
    SW_POWER_CAP = "sw_power_cap"
    HW_SLOWDOWN = "hw_slowdown"
    SYNC_BOOST = "sync_boost"
    SW_THERMAL_SLOWDOWN = "sw_thermal_slowdown"
    HW_THERMAL_SLOWDOWN = "hw_thermal_slowdown"
    HW_POWER_BRAKE_SLOWDOWN = "hw_power_brake_slowdown"
    DISPLAY_CLOCK_SETTING = "display_clock_setting"


THROTTLE_REASON_BITS: Mapping[ThrottleReason, int] = {
    ThrottleReason.GPU_IDLE: 0x001,
    ThrottleReason.APPLICATIONS_CLOCKS_SETTING: 0x002,
    ThrottleReason.SW_POWER_CAP: 0x004,
    ThrottleReason.HW_SLOWDOWN: 0x008,
    ThrottleReason.SYNC_BOOST: 0x010,
    ThrottleReason.SW_THERMAL_SLOWDOWN: 0x020,
    ThrottleReason.HW_THERMAL_SLOWDOWN: 0x040,
    ThrottleReason.HW_POWER_BRAKE_SLOWDOWN: 0x080,
    ThrottleReason.DISPLAY_CLOCK_SETTING: 0x100,
}

# Reasons that mean the GPU is being slowed by something an operator must look at (shaded on charts).
SLOWDOWN_REASONS: frozenset[ThrottleReason] = frozenset(
    {
        ThrottleReason.HW_SLOWDOWN,
        ThrottleReason.HW_THERMAL_SLOWDOWN,
        ThrottleReason.HW_POWER_BRAKE_SLOWDOWN,
        ThrottleReason.SW_THERMAL_SLOWDOWN,
    }
)


@functools.lru_cache(maxsize=256)
def throttle_reasons_from_mask(mask: int) -> tuple[ThrottleReason, ...]:
    """Names of the bits set in an NVML/DCGM clock-event bitmask, in bit order (cached: a fleet shows a handful of
    masks, and every GPU of every poll asks)."""
    return tuple(reason for reason, bit in THROTTLE_REASON_BITS.items() if mask & bit)


def throttle_mask(reasons: Iterable[ThrottleReason]) -> int:
    mask = 0
    for reason in reasons:
        mask |= THROTTLE_REASON_BITS[reason]
    return mask


class RecoveryAction(StrEnum):
    """The driver's own required recovery (NVML_GPU_RECOVERY_ACTION_*), the authoritative "what to do now"."""

    NONE = "none"
    GPU_RESET = "gpu_reset"
    NODE_REBOOT = "node_reboot"
    DRAIN_P2P = "drain_p2p"
    DRAIN_AND_RESET = "drain_and_reset"
    RECOVER_IMEX_DOMAIN = "recover_imex_domain"
    BUS_RESET = "bus_reset"
    SYSTEM_REBOOT = "system_reboot"


RECOVERY_ACTION_CODES: Mapping[int, RecoveryAction] = dict(enumerate(RecoveryAction))


class Health(StrEnum):
    """Redfish-style health of a chassis or a cooling component."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


class EventKind(StrEnum):
    XID = "xid"
    GPU_LOST = "gpu_lost"
    RECOVERY_ACTION = "recovery_action"
    ECC_DBE = "ecc_dbe"
    ROW_REMAP_FAILURE = "row_remap_failure"


class WorkloadKind(StrEnum):
    POD = "pod"
    JOB = "job"
    PROCESS = "process"


@dataclass(frozen=True, slots=True)
class PodWorkload:
    """A Kubernetes pod on the GPU (dcgm-exporter's ``pod``/``namespace``/``container`` labels)."""

    namespace: str | None
    pod: str
    container: str | None = None
    kind: WorkloadKind = WorkloadKind.POD


@dataclass(frozen=True, slots=True)
class JobWorkload:
    """An HPC (Slurm) job on the GPU (dcgm-exporter's ``hpc_job`` label)."""

    id: str
    kind: WorkloadKind = WorkloadKind.JOB


@dataclass(frozen=True, slots=True)
class ProcessWorkload:
    """A compute process on the GPU (NVML running processes, ``nvidia-smi --query-compute-apps``); host PID."""

    pid: int
    name: str | None = None
    used_memory_mib: float | None = None
    kind: WorkloadKind = WorkloadKind.PROCESS


Workload = PodWorkload | JobWorkload | ProcessWorkload


def merge_workloads(*lists: tuple[Workload, ...] | None) -> tuple[Workload, ...] | None:
    """The union of several workload lists in first-seen order; ``None`` only when every list is ``None``."""
    known = [entries for entries in lists if entries is not None]
    if not known:
        return None
    return tuple(dict.fromkeys(entry for entries in known for entry in entries))


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG GPU instance of a GPU, as DCGM reports it (its series carry ``GPU_I_ID``)."""

    instance_id: str  # GPU_I_ID
    profile: str | None = None  # GPU_I_PROFILE, e.g. "1g.10gb"
    utilization_pct: float | None = None  # graphics engine active (GPU_UTIL is not reported per instance)
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one instant. Identity first; key everything by ``uuid`` (index order is not stable)."""

    index: int
    uuid: str
    name: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    driver_version: str | None = None
    vbios_version: str | None = None
    utilization_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None  # enforced limit (minimum of all limiters)
    power_default_limit_w: float | None = None
    energy_j: float | None = None  # counter since driver load
    temperature_c: float | None = None
    memory_temperature_c: float | None = None  # HBM
    thermal_margin_c: float | None = None  # distance to the nearest slowdown threshold (T.Limit)
    slowdown_temp_c: float | None = None  # absolute thresholds where the hardware reports them
    shutdown_temp_c: float | None = None
    memory_max_temp_c: float | None = None
    fan_pct: float | None = None  # None on SXM / passively cooled parts
    sm_clock_mhz: float | None = None
    memory_clock_mhz: float | None = None
    pstate: int | None = None
    throttle_reasons: tuple[ThrottleReason, ...] = ()
    ecc_sbe_volatile: int | None = None
    ecc_dbe_volatile: int | None = None
    ecc_sbe_aggregate: int | None = None
    ecc_dbe_aggregate: int | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    pcie_replays: int | None = None
    pcie_link_gen: int | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width: int | None = None
    pcie_link_width_max: int | None = None
    nvlink_crc_errors: int | None = None  # FLIT + data CRC, all links
    nvlink_replay_errors: int | None = None
    nvlink_recovery_errors: int | None = None
    nvlink_links_up: int | None = None  # links in the active state (None: no NVLink, or not readable)
    nvlink_links_down: int | None = None  # links the GPU has that are not active
    # DCGM profiling ("DCP") metrics, data-center parts: the share of time each unit was busy, and traffic.
    graphics_active_pct: float | None = None
    sm_active_pct: float | None = None
    tensor_active_pct: float | None = None
    dram_active_pct: float | None = None
    pcie_tx_mib_s: float | None = None  # DCGM profiling, or NVML's PCIe throughput counter (read rarely)
    pcie_rx_mib_s: float | None = None
    nvlink_tx_mib_s: float | None = None
    nvlink_rx_mib_s: float | None = None
    xid_last: int | None = None  # the most recent Xid (0 = none since driver load)
    recovery_action: RecoveryAction | None = None
    mig_mode: bool | None = None
    mig_instances: tuple[MigInstance, ...] = ()  # under their GPU, by instance id
    lost: bool = False  # the GPU fell off the bus (NVML GpuIsLost, or vanished from enumeration)
    unsupported: tuple[str, ...] = ()  # capability flags: fields the device does not report
    # What runs on the GPU: () when nothing does, None when the source cannot tell (no pod/job labels, no
    # process list).
    workload: tuple[Workload, ...] | None = None


GPU_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(GpuSample))
_GPU_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GpuSample) if f.default is not dataclasses.MISSING}
_gpu_values_in_field_order = itemgetter(*GPU_FIELD_NAMES)
# The slots' own setters: the frozen class's __setattr__ refuses, and the generated __init__ pays a frozen-check
# call per field (46 of them) on every GPU of every poll.
_GPU_SLOT_SETTERS = tuple(GpuSample.__dict__[name].__set__ for name in GPU_FIELD_NAMES)


def gpu_sample_from_fields(fields: dict[str, Any]) -> GpuSample:
    """``GpuSample(**fields)`` at about half the cost, for sources that build thousands a second.

    Fields not given take their defaults; keys that are not fields are ignored (a source's intermediate values).
    ``index`` and ``uuid`` are required (``KeyError`` without them); types are the caller's business, as with
    keywords.
    """
    sample = object.__new__(GpuSample)
    values = _gpu_values_in_field_order(_GPU_DEFAULTS | fields)
    deque(map(call, _GPU_SLOT_SETTERS, repeat(sample, len(_GPU_SLOT_SETTERS)), values), maxlen=0)
    return sample


class ComponentKind(StrEnum):
    """What a BMC component is (a Redfish resource, or an entry of a legacy Thermal/Power array)."""

    CHASSIS = "chassis"
    COOLING_UNIT = "cooling_unit"
    FAN = "fan"
    POWER_SUPPLY = "power_supply"
    PUMP = "pump"
    LEAK_DETECTOR = "leak_detector"
    SENSOR = "sensor"
    GPU = "gpu"


@dataclass(frozen=True, slots=True)
class ComponentCondition:
    """One BMC component that is not healthy: ``text`` reads "System Fan 2: Critical, 0 RPM"."""

    name: str
    kind: ComponentKind
    health: Health  # WARNING or CRITICAL
    text: str
    chassis: str = ""  # the name of the chassis it belongs to, on a BMC with several


@dataclass(frozen=True, slots=True)
class ChassisSample:
    """The node's enclosure: BMC sensors, cooling loop, fans, node power."""

    inlet_c: float | None = None
    exhaust_c: float | None = None
    coolant_supply_c: float | None = None
    coolant_return_c: float | None = None
    coolant_flow_lpm: float | None = None
    coolant_flow_rated_lpm: float | None = None
    leak_detected: bool | None = None
    fans_rpm: tuple[float, ...] | None = None
    fans_min_rpm: float | None = None  # the BMC's lower critical threshold where it reports one
    power_w: float | None = None
    health: Health | None = None
    pump_health: Health | None = None
    psu_health: Health | None = None
    conditions: tuple[str, ...] = ()  # Redfish Conditions[].MessageId and similar free text
    components: tuple[ComponentCondition, ...] = ()  # the unhealthy components behind ``health``
    parts: tuple[ChassisPart, ...] = ()  # each chassis of a multi-chassis BMC (blades, trays, a GPU baseboard)


@dataclass(frozen=True, slots=True)
class ChassisPart:
    """The readings of one chassis of a BMC that has several (its own ``parts`` are empty)."""

    name: str
    readings: ChassisSample


@dataclass(frozen=True, slots=True)
class GpuEvent:
    """Something that happened between two polls (an NVML event, an Xid seen in a counter)."""

    kind: EventKind
    time: float
    gpu_uuid: str | None = None
    gpu_index: int | None = None
    code: int | None = None  # Xid number, recovery-action code
    message: str = ""


EMPTY_CHASSIS = ChassisSample()
# The most GPUs of one node that the history, the fleet state and the incident engine each remember: a node
# reporting a new UUID on every poll (a broken exporter) must not grow any of them without bound.
MAX_GPUS_PER_NODE = 64


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One node, one poll: what every source produces and everything downstream consumes."""

    node: str
    site: str
    source: str
    time: float  # epoch seconds when the values were read (the exporter's own stamp where it has one)
    gpus: tuple[GpuSample, ...] = ()
    chassis: ChassisSample = EMPTY_CHASSIS
    events: tuple[GpuEvent, ...] = ()

    def gpu(self, uuid: str) -> GpuSample | None:
        return next((gpu for gpu in self.gpus if gpu.uuid == uuid), None)


OUT_OF_BAND_SOURCE = "redfish"  # the source kind whose GPU readings come from a BMC, not the host


class SchemaError(ValueError):
    """A JSON document that is not a valid sample; the message names the offending key path."""


# --- merging samples from several sources of one node -----------------------------------------------------------


def _merge_dataclass(first: _D, second: _D) -> _D:
    """Field-wise: keep ``first``'s value unless it is missing (None or empty)."""
    updates: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        if f.name == "workload":  # pods from one source, processes from another: both are true
            merged = merge_workloads(getattr(first, f.name), getattr(second, f.name))
            if merged != getattr(first, f.name):
                updates["workload"] = merged
            continue
        mine = getattr(first, f.name)
        if mine is None or mine == () or mine is False:
            theirs = getattr(second, f.name)
            if theirs is not None and theirs != ():
                updates[f.name] = theirs
    return dataclasses.replace(first, **updates) if updates else first


def merge_samples(samples: Sequence[NodeSample]) -> NodeSample:
    """Combine what several sources said about one node (e.g. dcgm-exporter for GPUs, Redfish for chassis).

    GPUs are matched by UUID; the earlier source wins where both report a field.
    """
    if not samples:
        raise ValueError("merge_samples needs at least one sample")
    if len(samples) == 1:
        return samples[0]
    gpus: dict[str, GpuSample] = {}
    chassis = EMPTY_CHASSIS
    for sample in samples:
        if sample.source != OUT_OF_BAND_SOURCE:
            for gpu in sample.gpus:
                gpus[gpu.uuid] = _merge_dataclass(gpus[gpu.uuid], gpu) if gpu.uuid in gpus else gpu
        chassis = _merge_dataclass(chassis, sample.chassis)
    # A BMC's GPU readings (an HGX HMC) only fill what no in-band source reported, and add no GPUs of their own
    # beside the in-band ones (its UUIDs may be spelled otherwise): on their own they are the node's GPUs.
    in_band = bool(gpus)
    for sample in samples:
        if sample.source == OUT_OF_BAND_SOURCE:
            for gpu in sample.gpus:
                if gpu.uuid in gpus:
                    gpus[gpu.uuid] = _merge_dataclass(gpus[gpu.uuid], gpu)
                elif not in_band:
                    gpus[gpu.uuid] = gpu
    first = samples[0]
    return NodeSample(
        node=first.node,
        site=first.site,
        source="+".join(s.source for s in samples),
        time=max(s.time for s in samples),
        gpus=tuple(sorted(gpus.values(), key=lambda g: g.index)),
        chassis=chassis,
        events=tuple(e for s in samples for e in s.events),
    )
