"""The demo source: a deterministic, Qt-free simulation of 8-GPU H100/H200 SXM nodes, with scripted faults.

Two parts:

* ``DemoPlan`` and ``ScheduledFault``: the fault schedule as data. Faults come in rounds of ``period_s``
  (4-5.5 min, from the seed); round 0 starts every kind within the first minute after the fleet's anchor,
  later rounds repeat each kind on other nodes. ``fault_schedule`` lists them (tests, ``simulate --faults``).
* ``NodeSimulation``: one node's physics, stepped from its previous call to ``now``. Temperatures follow
  power through a first-order lag; the coolant loop, chassis fans and counters evolve with it. Values stay
  inside the H100/H200 envelope of the domain reference (section 6).

Repeatability: hardware identity depends only on the node name; load, noise and faults depend on the seed. The
same seed, anchor and sequence of ``now`` values give identical samples.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from console.config.fleet import Fleet, SourceKind, SourceSpec
from console.demo.fleet import Cooling, GpuModel, demo_roster
from console.samples.results import PollFailure, SourceError
from console.samples.schema import (
    ChassisSample,
    EventKind,
    GpuEvent,
    GpuSample,
    Health,
    NodeSample,
    RecoveryAction,
    ThrottleReason,
)
from console.sources.base import SourceContext

_E = TypeVar("_E", bound=StrEnum)

SOURCE_NAME = "demo"
GPUS_PER_NODE = 8
DRIVER_VERSION = "590.48.01"
POWER_LIMIT_W = 700.0
T_LIMIT_C = 87.0  # GPU max operating temperature: the margin (T.Limit) is measured from here
SLOWDOWN_MARGIN_C = -2.0  # hardware slowdown engages at T.Limit -2 C (driver 590 reports relative thresholds)
SHUTDOWN_MARGIN_C = -8.0
XID63_DELAY_S = 4.0  # Xid 63 (row remap) follows Xid 48 (DBE) on the same GPU this much later
COOLANT_RATED_LPM = 30.0
# Fields driver 590 does not report on SXM parts; the UI shows "not supported" rather than "no data".
UNSUPPORTED = ("fan_pct", "slowdown_temp_c", "shutdown_temp_c", "memory_max_temp_c")
# PCI buses of the eight SXM GPUs on an HGX/DGX H100 baseboard.
PCI_BUSES = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")

XID_MESSAGES = {
    79: "GPU has fallen off the bus.",
    48: "An uncorrectable double bit error (DBE) has been detected.",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
}

TAU_GPU_S = 25.0
TAU_HBM_S = 40.0
TAU_COOLANT_S = 15.0
TAU_FLOW_S = 4.0
TAU_AIR_S = 20.0


# --- the fault schedule -------------------------------------------------------------------------------------


class FaultKind(StrEnum):
    COOLANT_FLOW_DROP = "coolant_flow_drop"  # liquid-cooled node: flow falls, coolant and GPUs heat up
    POWER_BRAKE = "power_brake"  # every GPU of the node: hw_power_brake_slowdown
    GPU_LOST = "gpu_lost"  # Xid 79, the GPU falls off the bus and returns later
    ECC_ROW_REMAP = "ecc_row_remap"  # Xid 48 (DBE), then Xid 63 (row remap pending)
    NVLINK_CRC_BURST = "nvlink_crc_burst"  # CRC errors rising by hundreds per second
    UNREACHABLE = "unreachable"  # the node stops answering


@dataclass(frozen=True, slots=True)
class _FaultTiming:
    first_offset_s: float  # where the kind lands in each round (round 0 adds 0-12 s, later rounds 0-60 s)
    min_duration_s: float
    max_duration_s: float
    per_gpu: bool


FAULT_TIMING: dict[FaultKind, _FaultTiming] = {
    FaultKind.NVLINK_CRC_BURST: _FaultTiming(8.0, 10.0, 20.0, per_gpu=True),
    FaultKind.COOLANT_FLOW_DROP: _FaultTiming(12.0, 130.0, 180.0, per_gpu=False),
    FaultKind.POWER_BRAKE: _FaultTiming(20.0, 20.0, 40.0, per_gpu=False),
    FaultKind.GPU_LOST: _FaultTiming(28.0, 60.0, 120.0, per_gpu=True),
    FaultKind.ECC_ROW_REMAP: _FaultTiming(36.0, 120.0, 240.0, per_gpu=True),
    FaultKind.UNREACHABLE: _FaultTiming(44.0, 30.0, 60.0, per_gpu=False),
}
_ALL_GPUS = frozenset(range(GPUS_PER_NODE))
_NODE_KINDS = tuple(kind for kind in FAULT_TIMING if kind is not FaultKind.COOLANT_FLOW_DROP)


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    kind: FaultKind
    start_s: float  # seconds after the plan's anchor
    duration_s: float
    node: str
    gpu_index: int | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, elapsed_s: float) -> bool:
        return self.start_s <= elapsed_s < self.end_s


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """Who gets which fault when: shared by every node of one demo fleet."""

    seed: int
    anchor: float  # epoch seconds; fault times count from here
    order: tuple[str, ...]  # all nodes, in a seeded order: round r hands faults to consecutive entries
    liquid_order: tuple[str, ...]  # liquid-cooled nodes, seeded order (coolant faults only go there)
    period_s: float

    def round_of(self, elapsed_s: float) -> int:
        return math.floor(elapsed_s / self.period_s)

    def faults_in_round(self, index: int) -> tuple[ScheduledFault, ...]:
        if index < 0 or not self.order:
            return ()
        rng = random.Random(f"{self.seed}/round/{index}")
        origin = index * self.period_s
        jitter = 12.0 if index == 0 else 60.0
        coolant_node = self.liquid_order[index % len(self.liquid_order)] if self.liquid_order else None
        targets = self._distinct_targets(index, exclude=coolant_node)
        faults: list[ScheduledFault] = []
        for kind, timing in FAULT_TIMING.items():
            start = origin + timing.first_offset_s + rng.uniform(0.0, jitter)
            duration = rng.uniform(timing.min_duration_s, timing.max_duration_s)
            gpu = rng.randrange(GPUS_PER_NODE) if timing.per_gpu else None
            node = coolant_node if kind is FaultKind.COOLANT_FLOW_DROP else targets[kind]
            if node is not None:
                faults.append(ScheduledFault(kind, round(start, 3), round(duration, 3), node, gpu))
        return tuple(faults)

    def _distinct_targets(self, index: int, exclude: str | None) -> dict[FaultKind, str]:
        """Consecutive entries of the seeded order, skipping the coolant node: one round's faults do not pile
        onto one node (unless the fleet is smaller than a round) and each round moves on to other nodes."""
        count = len(self.order)
        picks: list[str] = []
        position = index * len(_NODE_KINDS)
        for _ in range(count + len(_NODE_KINDS)):
            candidate = self.order[position % count]
            position += 1
            if candidate != exclude and candidate not in picks:
                picks.append(candidate)
            if len(picks) == len(_NODE_KINDS):
                break
        while len(picks) < len(_NODE_KINDS):  # fewer nodes than kinds: reuse
            picks.append(self.order[len(picks) % count])
        return dict(zip(_NODE_KINDS, picks, strict=True))

    def schedule(self, until_s: float) -> tuple[ScheduledFault, ...]:
        """Every fault starting before ``until_s`` seconds after the anchor, in start order."""
        faults = [f for r in range(self.round_of(until_s) + 1) for f in self.faults_in_round(r)]
        return tuple(sorted((f for f in faults if f.start_s < until_s), key=lambda f: f.start_s))


def _seeded_order(seed: int, salt: str, names: Iterable[str]) -> tuple[str, ...]:
    shuffled = list(names)
    random.Random(f"{seed}/{salt}").shuffle(shuffled)
    return tuple(shuffled)


def _period(seed: int) -> float:
    return round(random.Random(f"{seed}/period").uniform(240.0, 330.0), 3)


@functools.lru_cache(maxsize=16)
def fleet_plan(seed: int, anchor: float, nodes_per_site: int) -> DemoPlan:
    """The plan of a built-in demo fleet; cached because every one of its sources asks for the same one."""
    roster = demo_roster(nodes_per_site)
    return DemoPlan(
        seed=seed,
        anchor=anchor,
        order=_seeded_order(seed, "order", (e.node for e in roster)),
        liquid_order=_seeded_order(seed, "liquid", (e.node for e in roster if e.site.cooling is Cooling.LIQUID)),
        period_s=_period(seed),
    )


def solo_plan(seed: int, anchor: float, node: str, cooling: Cooling) -> DemoPlan:
    """A demo node outside the built-in fleet (e.g. from an inventory) gets every fault itself."""
    return DemoPlan(
        seed=seed,
        anchor=anchor,
        order=(node,),
        liquid_order=(node,) if cooling is Cooling.LIQUID else (),
        period_s=_period(seed),
    )


def fault_schedule(fleet: Fleet, until_s: float) -> tuple[ScheduledFault, ...]:
    """The scripted faults of a demo fleet in its first ``until_s`` seconds (empty without a demo node)."""
    for node in fleet.nodes:
        for spec in node.sources:
            if spec.kind is SourceKind.DEMO:
                return DemoOptions.parse(spec, node.name, default_anchor=0.0).plan.schedule(until_s)
    return ()


# --- options ------------------------------------------------------------------------------------------------


def _bad(reason: str) -> SourceError:
    return SourceError(PollFailure.BAD_PAYLOAD, reason)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    model: GpuModel
    cooling: Cooling
    plan: DemoPlan

    @classmethod
    def parse(cls, spec: SourceSpec, node: str, default_anchor: float) -> DemoOptions:
        """Read a demo ``SourceSpec``; a bad option raises ``SourceError(BAD_PAYLOAD)`` naming the option."""
        known = {"model", "cooling", "seed", "anchor", "nodes_per_site"}
        unknown = sorted({key for key, _ in spec.options} - known)
        if unknown:
            raise _bad(f"demo source options: unknown {unknown} (known: {sorted(known)})")
        model = _enum_option(spec, "model", GpuModel, GpuModel.H100_SXM)
        cooling = _enum_option(spec, "cooling", Cooling, Cooling.AIR)
        seed = int(_number_option(spec, "seed", 0.0, integer=True))
        anchor = _number_option(spec, "anchor", default_anchor, integer=False)
        per_site = spec.option("nodes_per_site")
        if per_site is None:
            return cls(model, cooling, solo_plan(seed, anchor, node, cooling))
        count = int(_number_option(spec, "nodes_per_site", 0.0, integer=True))
        if count < 1:
            raise _bad(f"demo option 'nodes_per_site': must be >= 1, got {per_site!r}")
        plan = fleet_plan(seed, anchor, count)
        if node not in plan.order:  # a renamed node cannot take part in the fleet's schedule: fault it alone
            plan = solo_plan(seed, anchor, node, cooling)
        return cls(model, cooling, plan)


def _enum_option(spec: SourceSpec, key: str, enum: type[_E], default: _E) -> _E:
    raw = spec.option(key)
    if raw is None:
        return default
    try:
        return enum(raw)
    except ValueError:
        choices = ", ".join(str(v) for v in enum)
        raise _bad(f"demo option {key!r}: unknown value {raw!r} (expected one of {choices})") from None


def _number_option(spec: SourceSpec, key: str, default: float, *, integer: bool) -> float:
    raw = spec.option(key)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _bad(f"demo option {key!r}: expected {kind}, got {raw!r}") from None
    if not math.isfinite(value):
        raise _bad(f"demo option {key!r}: must be finite, got {raw!r}")
    return value


# --- the physics --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuProfile:
    name: str
    idle_w: float
    typical_w: float  # a typical job at 100 % (gpu-burn: ~633 W); heavier jobs exceed the 700 W cap
    memory_total_mib: float
    memory_clock_mhz: float
    vbios: str
    # steady state over the cooling reference (inlet air or mean coolant): offset + slope * power
    gpu_offset_c: float
    gpu_c_per_w: float
    hbm_offset_c: float
    hbm_c_per_w: float


PROFILES: dict[GpuModel, GpuProfile] = {
    # H100: ~70 W at 41 C (HBM 48 C) idle, ~633 W at 59-65 C (HBM 55-59 C) under load (reference section 6)
    GpuModel.H100_SXM: GpuProfile(
        "NVIDIA H100 80GB HBM3", 70.0, 633.0, 81559.0, 2619.0, "96.00.A5.00.01", 15.0, 0.037, 22.0, 0.018
    ),
    # H200: ~78 W at 28 C idle, ~630 W at 52-54 C (HBM 41-42 C)
    GpuModel.H200_SXM: GpuProfile(
        "NVIDIA H200", 78.0, 630.0, 143771.0, 3201.0, "96.00.A5.00.03", 3.0, 0.040, 9.0, 0.015
    ),
}
LIQUID_GPU_OFFSET_C = 0.0  # over the mean coolant temperature
LIQUID_GPU_C_PER_W = 0.034  # at rated flow; grows as the flow drops
LIQUID_HBM_OFFSET_C = 8.0
NODE_BASE_W = 1400.0  # CPUs, NICs, NVSwitches, fans at idle
NODE_BASE_LOAD_W = 800.0
RACK_SHARED_HEAT_W = 7000.0  # the loop also carries the rest of the rack's heat
LOOP_W_PER_LPM_C = 39.0  # return - supply = heat / (flow * this): ~8 C idle, ~12 C under load at 30 L/min
FAULT_FLOW_LPM = 6.0
IDLE_SM_MHZ = 345.0
BOOST_SM_MHZ = 1980.0
BUSY_UTIL_PCT = 97.0
CHECKPOINT_UTIL_PCT = 30.0


@dataclass(frozen=True, slots=True)
class _Job:
    start: float  # seconds after the anchor
    ramp_end: float
    end: float
    intensity: float  # demand at 100 % relative to the profile's typical job
    gpus: frozenset[int]
    memory_fraction: float
    checkpoint_every_s: float
    checkpoint_s: float

    def utilization(self, elapsed: float, gpu: int) -> float:
        if gpu not in self.gpus or not self.start <= elapsed < self.end:
            return 0.0
        if elapsed < self.ramp_end:
            return BUSY_UTIL_PCT * (elapsed - self.start) / (self.ramp_end - self.start)
        if (elapsed - self.ramp_end) % self.checkpoint_every_s < self.checkpoint_s:
            return CHECKPOINT_UTIL_PCT
        return BUSY_UTIL_PCT


class _JobTimeline:
    """Jobs on one node: ramp up, run (with checkpoint dips), finish, idle gap. A pure function of time."""

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)
        self._jobs: list[_Job] = []
        self._next_start = self._rng.uniform(-900.0, 45.0)  # most nodes are already busy when the demo starts

    def at(self, elapsed: float) -> _Job | None:
        while not self._jobs or self._jobs[-1].end <= elapsed:
            self._jobs.append(self._new_job())
            del self._jobs[:-4]  # bounded memory; queries move forward in time
        for job in reversed(self._jobs):
            if job.start <= elapsed:
                return job if elapsed < job.end else None
        return None

    def _new_job(self) -> _Job:
        rng = self._rng
        start = self._next_start
        ramp = rng.uniform(10.0, 30.0)
        end = start + ramp + rng.uniform(240.0, 1500.0)
        all_gpus = rng.random() < 0.8
        half = rng.randrange(2)
        gpus = _ALL_GPUS if all_gpus else frozenset(range(half * 4, half * 4 + 4))
        job = _Job(
            start=start,
            ramp_end=start + ramp,
            end=end,
            intensity=rng.uniform(0.92, 1.2),
            gpus=gpus,
            memory_fraction=rng.uniform(0.55, 0.95),
            checkpoint_every_s=rng.uniform(120.0, 300.0),
            checkpoint_s=rng.uniform(6.0, 15.0),
        )
        self._next_start = end + rng.uniform(20.0, 180.0)
        return job


class _Gpu:
    """Mutable state of one simulated GPU."""

    __slots__ = (
        "dbe",
        "dbe_aggregate",
        "energy_j",
        "hbm_c",
        "index",
        "lost",
        "nvlink_crc",
        "nvlink_replay",
        "offset_c",
        "pci_bus_id",
        "pcie_replays",
        "power_factor",
        "remapped_uncorrectable",
        "sbe",
        "sbe_aggregate",
        "serial",
        "temp_c",
        "thermal_slowed",
        "uuid",
        "xid_last",
    )

    def __init__(self, index: int, identity: random.Random, history: random.Random) -> None:
        self.index = index
        hex32 = f"{identity.getrandbits(128):032x}"
        self.uuid = f"GPU-{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"
        self.serial = f"1654{identity.randrange(10**9):09d}"
        self.pci_bus_id = f"00000000:{PCI_BUSES[index]}:00.0"
        self.offset_c = identity.uniform(-1.5, 2.5)  # position in the chassis airflow / cold plate
        self.power_factor = identity.uniform(0.97, 1.03)
        self.temp_c = math.nan  # set on the first step, at steady state
        self.hbm_c = math.nan
        self.energy_j = round(history.uniform(2, 40) * 86400 * history.uniform(250.0, 450.0), 3)
        self.sbe = history.randrange(3)
        self.sbe_aggregate = self.sbe + history.randrange(40)
        self.dbe = 0
        self.dbe_aggregate = 0
        self.remapped_uncorrectable = 0
        self.pcie_replays = history.randrange(20)
        self.nvlink_crc = history.randrange(100)
        self.nvlink_replay = history.randrange(10)
        self.xid_last = 0
        self.thermal_slowed = False
        self.lost = False

    def reset_after_return(self) -> None:
        """The GPU came back (reset/reboot): counters since driver load start over."""
        self.energy_j = 0.0
        self.sbe = self.dbe = 0
        self.pcie_replays = self.nvlink_crc = self.nvlink_replay = 0
        self.xid_last = 0
        self.thermal_slowed = False


def _jitter(rng: random.Random, sigma: float) -> float:
    """Zero-mean triangular noise with standard deviation ``sigma`` (ten times cheaper than ``gauss``)."""
    return (rng.random() + rng.random() - 1.0) * sigma * 2.449


def _lag(current: float, target: float, alpha: float) -> float:
    return target if math.isnan(current) else current + (target - current) * alpha


def _alpha(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-dt / tau)


@dataclass(frozen=True, slots=True)
class _Instant:
    elapsed: float
    gpu: int | None
    code: int  # Xid number


class NodeSimulation:
    """One demo node. ``sample(now)`` steps the state from the previous call to ``now`` (epoch seconds)."""

    def __init__(self, node: str, site: str, model: GpuModel, cooling: Cooling, plan: DemoPlan) -> None:
        self.node = node
        self.site = site
        self.model = model
        self.cooling = cooling
        self.plan = plan
        self.profile = PROFILES[model]
        identity = random.Random(f"identity/{node}")  # hardware does not change with the seed
        history = random.Random(f"{plan.seed}/{node}/history")
        self._gpus = [_Gpu(i, identity, history) for i in range(GPUS_PER_NODE)]
        self._noise = random.Random(f"{plan.seed}/{node}/noise")
        self._jobs = _JobTimeline(f"{plan.seed}/{node}/jobs")
        self._inlet_base = 23.0 + identity.uniform(-2.5, 2.5)
        self._inlet_phase = identity.uniform(0.0, 2 * math.pi)
        self._supply_base = 28.0 + identity.uniform(-1.5, 1.5)
        self._fan_factors = tuple(identity.uniform(0.97, 1.03) for _ in range(10))
        self._last_now: float | None = None
        self._heat_w = NODE_BASE_W + GPUS_PER_NODE * self.profile.idle_w
        self._flow = COOLANT_RATED_LPM
        self._supply_c = math.nan
        self._return_c = math.nan
        self._exhaust_c = math.nan
        self._fan_rpm = math.nan
        self._rounds: dict[int, tuple[ScheduledFault, ...]] = {}

    @classmethod
    def for_spec(cls, node: str, site: str, spec: SourceSpec, default_anchor: float) -> NodeSimulation:
        options = DemoOptions.parse(spec, node, default_anchor)
        return cls(node, site, options.model, options.cooling, options.plan)

    # -- faults ----------------------------------------------------------------------------------------------

    def _my_faults(self, round_index: int) -> tuple[ScheduledFault, ...]:
        if round_index not in self._rounds:
            if len(self._rounds) > 8:  # bounded: rounds are visited in time order
                self._rounds.clear()
            mine = tuple(f for f in self.plan.faults_in_round(round_index) if f.node == self.node)
            self._rounds[round_index] = mine
        return self._rounds[round_index]

    def faults_at(self, now: float) -> tuple[ScheduledFault, ...]:
        """This node's faults active at ``now`` (faults last less than a round, so two rounds suffice)."""
        elapsed = now - self.plan.anchor
        current = self.plan.round_of(elapsed)
        return tuple(f for r in (current - 1, current) for f in self._my_faults(r) if f.active(elapsed))

    def unreachable(self, now: float) -> bool:
        return any(f.kind is FaultKind.UNREACHABLE for f in self.faults_at(now))

    def _instants(self, after: float, upto: float) -> list[_Instant]:
        """Xids whose moment falls in (after, upto], in time order."""
        found: list[_Instant] = []
        for r in range(self.plan.round_of(after) - 1, self.plan.round_of(upto) + 1):
            for fault in self._my_faults(r):
                moments: tuple[tuple[float, int], ...]
                if fault.kind is FaultKind.GPU_LOST:
                    moments = ((fault.start_s, 79),)
                elif fault.kind is FaultKind.ECC_ROW_REMAP:
                    moments = ((fault.start_s, 48), (fault.start_s + XID63_DELAY_S, 63))
                else:
                    continue
                found.extend(_Instant(t, fault.gpu_index, code) for t, code in moments if after < t <= upto)
        found.sort(key=lambda i: i.elapsed)
        return found

    # -- stepping --------------------------------------------------------------------------------------------

    def sample(self, now: float) -> NodeSample:
        elapsed = now - self.plan.anchor
        dt = 1.0 if self._last_now is None else min(max(now - self._last_now, 0.0), 3600.0)
        previous = elapsed - 1.0 if self._last_now is None else self._last_now - self.plan.anchor
        self._last_now = now if self._last_now is None else max(now, self._last_now)

        active = self.faults_at(now)
        kinds = {f.kind for f in active}
        coolant_fault = FaultKind.COOLANT_FLOW_DROP in kinds
        brake = FaultKind.POWER_BRAKE in kinds
        lost = {f.gpu_index for f in active if f.kind is FaultKind.GPU_LOST}
        crc_burst = {f.gpu_index for f in active if f.kind is FaultKind.NVLINK_CRC_BURST}
        remap_pending = {
            f.gpu_index for f in active if f.kind is FaultKind.ECC_ROW_REMAP and elapsed >= f.start_s + XID63_DELAY_S
        }
        events = self._apply_instants(self._instants(previous, elapsed), now)

        job = self._jobs.at(elapsed)
        if coolant_fault:
            # Scripted so the demo always shows the whole chain: the coolant fault hits a node at full load.
            job = _Job(elapsed - 60.0, elapsed - 50.0, elapsed + 1.0, 1.05, _ALL_GPUS, 0.8, 1e9, 0.0)

        rng = self._noise
        inlet = self._inlet(elapsed, rng)
        a_gpu, a_hbm, a_cool = _alpha(dt, TAU_GPU_S), _alpha(dt, TAU_HBM_S), _alpha(dt, TAU_COOLANT_S)
        if self.cooling is Cooling.LIQUID:
            self._step_coolant(elapsed, dt, coolant_fault, a_cool)
            ref_c = (self._supply_c + self._return_c) / 2.0
            gpu_offset, hbm_offset = LIQUID_GPU_OFFSET_C, LIQUID_HBM_OFFSET_C
            gpu_slope = LIQUID_GPU_C_PER_W * math.sqrt(COOLANT_RATED_LPM / self._flow)
            hbm_slope = self.profile.hbm_c_per_w * math.sqrt(COOLANT_RATED_LPM / self._flow)
        else:
            ref_c = inlet
            gpu_offset, hbm_offset = self.profile.gpu_offset_c, self.profile.hbm_offset_c
            gpu_slope, hbm_slope = self.profile.gpu_c_per_w, self.profile.hbm_c_per_w

        gpus: list[GpuSample] = []
        gpu_power_w = 0.0
        util_sum = 0.0
        for gpu in self._gpus:
            if gpu.index in lost:
                gpu.lost = True
                gpu.xid_last = 79
                gpus.append(self._lost_sample(gpu))
                continue
            if gpu.lost:
                gpu.lost = False
                gpu.reset_after_return()
            util = self._utilization(job, elapsed, gpu.index, rng)
            sample = self._step_gpu(
                gpu,
                util=util,
                job=job,
                dt=dt,
                brake=brake,
                ref_c=ref_c,
                offsets=(gpu_offset, hbm_offset),
                slopes=(gpu_slope, hbm_slope),
                alphas=(a_gpu, a_hbm),
                crc_burst=gpu.index in crc_burst,
                remap_pending=gpu.index in remap_pending,
                rng=rng,
            )
            gpus.append(sample)
            gpu_power_w += sample.power_w or 0.0
            util_sum += util

        node_power = NODE_BASE_W + NODE_BASE_LOAD_W * util_sum / (100.0 * GPUS_PER_NODE) + gpu_power_w
        self._heat_w = node_power
        chassis = self._chassis(inlet, node_power, dt, coolant_fault, rng)
        return NodeSample(
            node=self.node,
            site=self.site,
            source=SOURCE_NAME,
            time=float(now),
            gpus=tuple(gpus),
            chassis=chassis,
            events=tuple(events),
        )

    def _apply_instants(self, instants: list[_Instant], now: float) -> list[GpuEvent]:
        events: list[GpuEvent] = []
        for instant in instants:
            if instant.gpu is None:
                continue
            gpu = self._gpus[instant.gpu]
            gpu.xid_last = instant.code
            # an event is stamped when it happened, never later than the poll that reports it
            at = min(self.plan.anchor + instant.elapsed, now)
            xid = GpuEvent(EventKind.XID, at, gpu.uuid, gpu.index, instant.code, XID_MESSAGES[instant.code])
            events.append(xid)
            if instant.code == 79:
                events.append(GpuEvent(EventKind.GPU_LOST, at, gpu.uuid, gpu.index, None, "GPU is lost"))
            elif instant.code == 48:
                gpu.dbe += 1
                gpu.dbe_aggregate += 1
                events.append(GpuEvent(EventKind.ECC_DBE, at, gpu.uuid, gpu.index, None, "volatile DBE count +1"))
            elif instant.code == 63:
                gpu.remapped_uncorrectable += 1
        return events

    def _utilization(self, job: _Job | None, elapsed: float, index: int, rng: random.Random) -> float:
        base = job.utilization(elapsed, index) if job is not None else 0.0
        if base <= 0.0:
            return 0.0
        return float(round(min(100.0, max(1.0, base + _jitter(rng, 1.5)))))

    def _step_gpu(
        self,
        gpu: _Gpu,
        *,
        util: float,
        job: _Job | None,
        dt: float,
        brake: bool,
        ref_c: float,
        offsets: tuple[float, float],
        slopes: tuple[float, float],
        alphas: tuple[float, float],
        crc_burst: bool,
        remap_pending: bool,
        rng: random.Random,
    ) -> GpuSample:
        profile = self.profile
        intensity = job.intensity if job is not None else 1.0
        dynamic = (profile.typical_w - profile.idle_w) * intensity * gpu.power_factor * util / 100.0
        if gpu.thermal_slowed:
            dynamic *= 0.45
        if brake:
            dynamic *= 0.3
        demand = profile.idle_w + dynamic
        capped = demand > POWER_LIMIT_W
        if capped:
            power = POWER_LIMIT_W - 0.5 - abs(_jitter(rng, 1.5))
        else:
            # the reading is accurate to +-5 W; the limiter keeps it from drifting above the cap
            power = min(POWER_LIMIT_W + 1.0, max(profile.idle_w * 0.9, demand + _jitter(rng, 1.5)))

        gpu.temp_c = _lag(gpu.temp_c, ref_c + offsets[0] + gpu.offset_c + slopes[0] * power, alphas[0])
        gpu.hbm_c = _lag(gpu.hbm_c, ref_c + offsets[1] + gpu.offset_c + slopes[1] * power, alphas[1])
        temp = float(round(gpu.temp_c))
        margin = T_LIMIT_C - temp
        # hysteresis: engage at T.Limit -2 C, release once back under T.Limit -> margin <= 0 during slowdown
        if margin <= SLOWDOWN_MARGIN_C:
            gpu.thermal_slowed = True
        elif margin >= 1.0:
            gpu.thermal_slowed = False

        reasons: list[ThrottleReason] = []
        clock = BOOST_SM_MHZ if util > 0 else IDLE_SM_MHZ
        if util <= 0:
            reasons.append(ThrottleReason.GPU_IDLE)
        if capped:
            reasons.append(ThrottleReason.SW_POWER_CAP)
            clock *= (POWER_LIMIT_W / demand) ** 0.8
        if gpu.thermal_slowed or brake:
            reasons.append(ThrottleReason.HW_SLOWDOWN)
        if margin <= 0:
            reasons.append(ThrottleReason.SW_THERMAL_SLOWDOWN)
        if gpu.thermal_slowed:
            reasons.append(ThrottleReason.HW_THERMAL_SLOWDOWN)
            clock *= 0.55
        if brake:
            reasons.append(ThrottleReason.HW_POWER_BRAKE_SLOWDOWN)
            clock *= 0.35
        clock = max(IDLE_SM_MHZ, round(clock / 15.0) * 15.0)

        gpu.energy_j = round(gpu.energy_j + power * dt, 3)
        if rng.random() < 1e-4 * dt:
            gpu.sbe += 1
            gpu.sbe_aggregate += 1
        if rng.random() < 2e-4 * dt:
            gpu.pcie_replays += 1
        if crc_burst:
            burst = int(rng.uniform(200.0, 600.0) * dt)
            gpu.nvlink_crc += burst
            gpu.nvlink_replay += burst // 20
        elif rng.random() < 1e-5 * dt:  # a healthy link: a stray CRC error every day or so per GPU
            gpu.nvlink_crc += 1

        memory_used = 0.0
        if job is not None and gpu.index in job.gpus and util > 0:
            memory_used = float(round(profile.memory_total_mib * job.memory_fraction))
        return GpuSample(
            index=gpu.index,
            uuid=gpu.uuid,
            name=profile.name,
            serial=gpu.serial,
            pci_bus_id=gpu.pci_bus_id,
            driver_version=DRIVER_VERSION,
            vbios_version=profile.vbios,
            utilization_pct=util,
            memory_used_mib=memory_used,
            memory_total_mib=profile.memory_total_mib,
            power_w=round(power, 2),
            power_limit_w=POWER_LIMIT_W,
            power_default_limit_w=POWER_LIMIT_W,
            energy_j=gpu.energy_j,
            temperature_c=temp,
            memory_temperature_c=float(round(gpu.hbm_c)),
            thermal_margin_c=margin,
            sm_clock_mhz=clock,
            memory_clock_mhz=profile.memory_clock_mhz,
            pstate=0,  # persistence mode keeps SXM parts in P0 even when idle
            throttle_reasons=tuple(reasons),
            ecc_sbe_volatile=gpu.sbe,
            ecc_dbe_volatile=gpu.dbe,
            ecc_sbe_aggregate=gpu.sbe_aggregate,
            ecc_dbe_aggregate=gpu.dbe_aggregate,
            remapped_rows_correctable=0,
            remapped_rows_uncorrectable=gpu.remapped_uncorrectable,
            remapped_rows_pending=remap_pending,
            remapped_rows_failure=False,
            pcie_replays=gpu.pcie_replays,
            pcie_link_gen=5,
            pcie_link_gen_max=5,
            pcie_link_width=16,
            pcie_link_width_max=16,
            nvlink_crc_errors=gpu.nvlink_crc,
            nvlink_replay_errors=gpu.nvlink_replay,
            nvlink_recovery_errors=0,
            xid_last=gpu.xid_last,
            recovery_action=RecoveryAction.NONE,
            mig_mode=False,
            unsupported=UNSUPPORTED,
        )

    def _lost_sample(self, gpu: _Gpu) -> GpuSample:
        """Fallen off the bus: identity from before, no telemetry at all."""
        return GpuSample(
            index=gpu.index,
            uuid=gpu.uuid,
            name=self.profile.name,
            serial=gpu.serial,
            pci_bus_id=gpu.pci_bus_id,
            driver_version=DRIVER_VERSION,
            xid_last=gpu.xid_last,
            lost=True,
            unsupported=UNSUPPORTED,
        )

    def _inlet(self, elapsed: float, rng: random.Random) -> float:
        drift = 0.6 * math.sin(2 * math.pi * elapsed / 1800.0 + self._inlet_phase)
        return min(27.0, max(20.0, self._inlet_base + drift + _jitter(rng, 0.1)))

    def _step_coolant(self, elapsed: float, dt: float, fault: bool, alpha: float) -> None:
        rated = COOLANT_RATED_LPM
        flow_target = FAULT_FLOW_LPM if fault else rated * (1.0 + 0.03 * math.sin(elapsed / 97.0))
        self._flow = _lag(self._flow, flow_target, _alpha(dt, TAU_FLOW_S))
        supply_target = self._supply_base + 0.5 * math.sin(elapsed / 613.0) + (4.0 if fault else 0.0)
        self._supply_c = _lag(self._supply_c, supply_target, _alpha(dt, 2 * TAU_COOLANT_S))
        rise = min(45.0, (self._heat_w + RACK_SHARED_HEAT_W) / (self._flow * LOOP_W_PER_LPM_C))
        self._return_c = _lag(self._return_c, self._supply_c + rise, alpha)

    def _chassis(
        self, inlet: float, node_power: float, dt: float, coolant_fault: bool, rng: random.Random
    ) -> ChassisSample:
        liquid = self.cooling is Cooling.LIQUID
        air_share = 0.0006 if liquid else 0.0024  # most heat leaves through the coolant on liquid nodes
        self._exhaust_c = _lag(self._exhaust_c, inlet + 3.0 + air_share * node_power, _alpha(dt, TAU_AIR_S))
        if liquid:
            low_flow = self._flow < 0.7 * COOLANT_RATED_LPM
            return ChassisSample(
                inlet_c=round(inlet, 1),
                exhaust_c=round(self._exhaust_c, 1),
                coolant_supply_c=round(self._supply_c, 1),
                coolant_return_c=round(self._return_c, 1),
                coolant_flow_lpm=round(self._flow, 1),
                coolant_flow_rated_lpm=COOLANT_RATED_LPM,
                leak_detected=False,
                power_w=round(node_power),
                health=Health.WARNING if low_flow else Health.OK,
                pump_health=Health.OK,
                psu_health=Health.OK,
            )
        target_rpm = min(15000.0, max(3500.0, 4200.0 + 230.0 * (self._exhaust_c - inlet)))
        self._fan_rpm = _lag(self._fan_rpm, target_rpm, _alpha(dt, 5.0))
        fans = tuple(round(self._fan_rpm * f + _jitter(rng, 20.0), -1) for f in self._fan_factors)
        return ChassisSample(
            inlet_c=round(inlet, 1),
            exhaust_c=round(self._exhaust_c, 1),
            fans_rpm=fans,
            fans_min_rpm=1500.0,
            power_w=round(node_power),
            health=Health.OK,
            psu_health=Health.OK,
        )


# --- the Source ---------------------------------------------------------------------------------------------


class DemoSource:
    """Polls a ``NodeSimulation`` at wall-clock time; during an "unreachable" fault it never answers."""

    def __init__(self, ctx: SourceContext, simulation: NodeSimulation) -> None:
        self._ctx = ctx
        self.simulation = simulation

    async def poll(self) -> NodeSample:
        now = time.time()
        if self.simulation.unreachable(now):
            # Outlast the poller's hard timeout so the real timeout path runs, as with a hung host.
            await asyncio.sleep(self._ctx.timeout_s + 5.0)
            raise SourceError(PollFailure.TIMEOUT, "demo node stopped answering (scripted fault)")
        return self.simulation.sample(now)

    async def aclose(self) -> None:
        return None


def make_source(ctx: SourceContext) -> DemoSource:
    # Without an anchor option, the schedule counts from when this source is created (the fleet's start).
    simulation = NodeSimulation.for_spec(ctx.node.name, ctx.site.name, ctx.spec, default_anchor=time.time())
    return DemoSource(ctx, simulation)


__all__ = [
    "FAULT_TIMING",
    "DemoOptions",
    "DemoPlan",
    "DemoSource",
    "FaultKind",
    "NodeSimulation",
    "ScheduledFault",
    "fault_schedule",
    "fleet_plan",
    "make_source",
    "solo_plan",
]
