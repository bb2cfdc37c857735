"""Synthetic poll-result traces for the incident engine: a healthy 8-GPU H100 node, and one fault per rule.

Values follow reference.md section 6 (H100 SXM under gpu-burn: ~630 W of a 700 W cap with sw_power_cap, GPU
~60 C with a 26 C T.Limit margin, HBM ~55 C, SM 1980 MHz; idle ~70 W at ~41 C with the PCIe link down-trained to
Gen1 to save power). Times are epoch seconds from T0 so the engine's fake clock is the trace itself.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec, Topology
from console.incidents.engine import IncidentEngine
from console.incidents.model import ChangeKind, IncidentChange
from console.samples.results import PollFailure, PollResult, SourceFailure
from console.samples.schema import (
    ChassisSample,
    GpuEvent,
    GpuSample,
    Health,
    NodeSample,
    RecoveryAction,
    ThrottleReason,
)

T0 = 1_800_000_000.0
NODE = "node-a"
SITE = "site-a"
PROVIDER = "provider-a"
GPUS = 8
VICTIM = 2  # the GPU index that faults

GpuFault = Callable[[int, GpuSample], GpuSample]
ChassisFault = Callable[[int, ChassisSample], ChassisSample]
EventsAt = Callable[[int, float, Sequence[GpuSample]], tuple[GpuEvent, ...]]
StepState = Callable[[int], str]  # "ok", "fail" (a failed poll) or "silent" (no result at all)


def uuid_of(index: int, node: str = NODE) -> str:
    return f"GPU-{abs(hash(node)) % 10**8:08d}-0000-4000-8000-{index:012d}"


def make_fleet(
    nodes: Iterable[tuple[str, str]] = ((NODE, SITE),),
    sites: Iterable[tuple[str, str]] = ((SITE, PROVIDER),),
    overrides: tuple[tuple[str, str, str, float], ...] = (),
    topology: dict[str, Topology] | None = None,
) -> Fleet:
    """A fleet of ``nodes`` ((name, site)); ``topology`` places nodes in racks, cooling loops, feeds, domains."""
    spec = SourceSpec(kind=SourceKind.DEMO)
    where = topology or {}
    return Fleet(
        sites=tuple(Site(name=name, provider=provider) for name, provider in sites),
        nodes=tuple(
            Node(name=name, site=site, sources=(spec,), topology=where.get(name, Topology())) for name, site in nodes
        ),
        rule_overrides=overrides,
    )


def load_phase(step: int) -> bool:
    """Load for 300 s, idle for 100 s, repeating."""
    return step % 400 < 300


def healthy_gpu(index: int, step: int, energy_j: float, rng: random.Random, node: str = NODE) -> GpuSample:
    busy = load_phase(step)
    jitter = rng.uniform(-1.0, 1.0)
    power = (630.0 if busy else 70.0) + 5 * jitter
    temp = (60.0 if busy else 41.0) + jitter
    return GpuSample(
        index=index,
        uuid=uuid_of(index, node),
        name="NVIDIA H100 80GB HBM3",
        serial=f"16524220{index:05d}",
        pci_bus_id=f"00000000:{0x18 + index * 0x10:02X}:00.0",
        driver_version="590.48.01",
        vbios_version="96.00.99.00.01",
        utilization_pct=100.0 if busy else 0.0,
        memory_used_mib=70000.0 if busy else 0.0,
        memory_total_mib=81559.0,
        power_w=power,
        power_limit_w=700.0,
        power_default_limit_w=700.0,
        energy_j=energy_j,
        temperature_c=temp,
        memory_temperature_c=(55.0 if busy else 48.0) + jitter,
        thermal_margin_c=86.0 - temp,
        sm_clock_mhz=(1980.0 if busy else 345.0) + 10 * jitter,
        memory_clock_mhz=2619.0,
        pstate=0,
        throttle_reasons=(ThrottleReason.SW_POWER_CAP,) if busy else (ThrottleReason.GPU_IDLE,),
        ecc_sbe_volatile=0,
        ecc_dbe_volatile=0,
        remapped_rows_correctable=0,
        remapped_rows_uncorrectable=0,
        remapped_rows_pending=False,
        remapped_rows_failure=False,
        pcie_replays=9,
        pcie_link_gen=5 if busy else 1,
        pcie_link_gen_max=5,
        pcie_link_width=16,
        pcie_link_width_max=16,
        nvlink_crc_errors=0,
        nvlink_replay_errors=0,
        nvlink_recovery_errors=0,
        xid_last=0,
        recovery_action=RecoveryAction.NONE,
    )


def healthy_chassis(step: int, gpu_power_w: float, rng: random.Random) -> ChassisSample:
    node_power = gpu_power_w + 1500.0
    supply = 30.0 + 0.2 * rng.uniform(-1.0, 1.0)
    return ChassisSample(
        inlet_c=24.0 + 0.3 * rng.uniform(-1.0, 1.0),
        exhaust_c=40.0,
        coolant_supply_c=supply,
        coolant_return_c=supply + 1.6 * node_power / 1000.0,
        coolant_flow_lpm=28.0 + 0.3 * rng.uniform(-1.0, 1.0),
        coolant_flow_rated_lpm=30.0,
        leak_detected=False,
        fans_rpm=(9000.0,) * 6,
        fans_min_rpm=3000.0,
        power_w=node_power,
        health=Health.OK,
        pump_health=Health.OK,
        psu_health=Health.OK,
    )


def build_trace(
    seconds: int,
    *,
    node: str = NODE,
    site: str = SITE,
    start: float = T0,
    seed: int = 7,
    gpu_fault: GpuFault | None = None,
    chassis_fault: ChassisFault | None = None,
    events: EventsAt | None = None,
    state: StepState | None = None,
    latency_s: Callable[[int], float] | None = None,
) -> list[PollResult | float]:
    """One entry per second: a PollResult, or the bare time when the node is silent (the runner only ticks)."""
    rng = random.Random(seed)
    energy = [1.0e6] * GPUS
    out: list[PollResult | float] = []
    for step in range(seconds):
        t = start + step
        gpus = []
        for index in range(GPUS):
            gpu = healthy_gpu(index, step, energy[index], rng, node)
            energy[index] += gpu.power_w or 0.0
            if gpu_fault is not None:
                gpu = gpu_fault(step, gpu)
            gpus.append(gpu)
        chassis = healthy_chassis(step, sum(g.power_w or 0.0 for g in gpus), rng)
        if chassis_fault is not None:
            chassis = chassis_fault(step, chassis)
        what = state(step) if state is not None else "ok"
        latency = latency_s(step) if latency_s is not None else 0.05
        if what == "silent":
            out.append(t)
        elif what == "fail":
            failure = SourceFailure("demo", PollFailure.TIMEOUT, "no answer within 3 s")
            out.append(PollResult(node, site, t - latency, latency, None, (failure,)))
        else:
            evs = events(step, t, gpus) if events is not None else ()
            sample = NodeSample(node, site, "demo", t, tuple(gpus), chassis, evs)
            out.append(PollResult(node, site, t - latency, latency, sample))
    return out


def merge(*traces: list[PollResult | float]) -> list[PollResult | float]:
    """Several nodes' traces as one, in time order (a silent step of one node is dropped: the others tick)."""
    results = [entry for trace in traces for entry in trace if isinstance(entry, PollResult)]
    return sorted(results, key=lambda r: (r.started + r.latency_s, r.node))


def run(engine: IncidentEngine, trace: Iterable[PollResult | float], *, tick: bool = True) -> list[IncidentChange]:
    """Feed a trace: observe each result, then tick at the same second (as the app does about once a second)."""
    changes: list[IncidentChange] = []
    for entry in trace:
        if isinstance(entry, PollResult):
            changes += engine.observe(entry)
            now = entry.started + entry.latency_s
        else:
            now = entry
        if tick:
            changes += engine.tick(now)
    return changes


def opened(changes: Iterable[IncidentChange], rule: str | None = None) -> list[IncidentChange]:
    return [c for c in changes if c.kind is ChangeKind.OPENED and (rule is None or c.incident.rule == rule)]


def victim(fault: Callable[[GpuSample], GpuSample], from_step: int = 20) -> GpuFault:
    """A fault on GPU ``VICTIM`` from ``from_step`` on."""

    def apply(step: int, gpu: GpuSample) -> GpuSample:
        return fault(gpu) if gpu.index == VICTIM and step >= from_step else gpu

    return apply


def chassis_from(fault: Callable[[ChassisSample], ChassisSample], from_step: int = 20) -> ChassisFault:
    def apply(step: int, chassis: ChassisSample) -> ChassisSample:
        return fault(chassis) if step >= from_step else chassis

    return apply


def xid_at(steps: dict[int, tuple[int, str]], index: int = VICTIM) -> EventsAt:
    """Xid events on one GPU: {step: (code, kernel message)}."""

    def apply(step: int, t: float, gpus: Sequence[GpuSample]) -> tuple[GpuEvent, ...]:
        if step not in steps:
            return ()
        code, message = steps[step]
        from console.samples.schema import EventKind

        return (GpuEvent(EventKind.XID, t, gpus[index].uuid, index, code, message),)

    return apply


def replace(**changes: object) -> Callable[[GpuSample], GpuSample]:
    return lambda gpu: dataclasses.replace(gpu, **changes)  # type: ignore[arg-type]


def replace_chassis(**changes: object) -> Callable[[ChassisSample], ChassisSample]:
    return lambda chassis: dataclasses.replace(chassis, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class FaultTrace:
    """A trace on which ``rule`` must open an incident (with at least ``severity`` when given)."""

    rule: str
    trace: Callable[[], list[PollResult | float]]
    gpu_index: int | None = VICTIM
