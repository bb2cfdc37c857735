"""The physics of a demo node: GPU power, temperatures, clocks and counters; jobs; air, fans and coolant.

Temperatures follow power through first-order lags over a cooling reference (the inlet air, or the mean coolant
temperature of a liquid loop whose resistance grows as the flow drops); the coolant loop, chassis fans and
counters evolve with them. Values stay inside the H100/H200 envelope of the domain reference (section 6). Faults
reach this module only as flags (a power brake, a CRC burst, a low coolant flow): ``console.demo.faults`` decides
when they apply. Every random draw comes from a ``random.Random`` passed in, in a fixed order, so that the same seed
gives the same samples.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from console.demo.fleet import Cooling, GpuModel
from console.samples.schema import ChassisSample, GpuSample, Health, PodWorkload, RecoveryAction, ThrottleReason

GPUS_PER_NODE = 8
ALL_GPUS = frozenset(range(GPUS_PER_NODE))
DRIVER_VERSION = "590.48.01"
POWER_LIMIT_W = 700.0
T_LIMIT_C = 87.0  # GPU max operating temperature: the margin (T.Limit) is measured from here
SLOWDOWN_MARGIN_C = -2.0  # hardware slowdown engages at T.Limit -2 C (driver 590 reports relative thresholds)
SHUTDOWN_MARGIN_C = -8.0
COOLANT_RATED_LPM = 30.0
# Fields driver 590 does not report on SXM parts; the UI shows "not supported" rather than "no data".
UNSUPPORTED = ("fan_pct", "slowdown_temp_c", "shutdown_temp_c", "memory_max_temp_c")
# PCI buses of the eight SXM GPUs on an HGX/DGX H100 baseboard.
PCI_BUSES = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")

TAU_GPU_S = 25.0
TAU_HBM_S = 40.0
TAU_COOLANT_S = 15.0
TAU_FLOW_S = 4.0
TAU_AIR_S = 20.0


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
# Profiling shares of a training step at 100 % utilization (SM, tensor pipe, DRAM) and its traffic (MiB/s per
# GPU): an all-reduce-heavy job moves far more over NVLink than over PCIe. Derived from utilization alone, so the
# demo's random draws (and so its fault timings) are the same as without them.
SM_SHARE = 0.82
TENSOR_SHARE = 0.46
DRAM_SHARE = 0.38
PCIE_MIB_S = (1900.0, 650.0)  # TX, RX at full load
NVLINK_MIB_S = 95_000.0  # each way at full load
NVLINK_LINKS = 18  # H100 / H200 SXM


@dataclass(frozen=True, slots=True)
class Job:
    start: float  # seconds after the anchor
    ramp_end: float
    end: float
    intensity: float  # demand at 100 % relative to the profile's typical job
    gpus: frozenset[int]
    memory_fraction: float
    checkpoint_every_s: float
    checkpoint_s: float

    @property
    def pod(self) -> PodWorkload:
        """The job as Kubernetes would name it: derived from its start, so the demo's random draws stay the same."""
        name = f"llm-train-{int(self.start * 1000) % 100_000:05d}-0"
        return PodWorkload(namespace="ml-research", pod=name, container="pytorch")

    def utilization(self, elapsed: float, gpu: int) -> float:
        if gpu not in self.gpus or not self.start <= elapsed < self.end:
            return 0.0
        if elapsed < self.ramp_end:
            return BUSY_UTIL_PCT * (elapsed - self.start) / (self.ramp_end - self.start)
        if (elapsed - self.ramp_end) % self.checkpoint_every_s < self.checkpoint_s:
            return CHECKPOINT_UTIL_PCT
        return BUSY_UTIL_PCT


class JobTimeline:
    """Jobs on one node: ramp up, run (with checkpoint dips), finish, idle gap. A pure function of time."""

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)
        self._jobs: list[Job] = []
        self._next_start = self._rng.uniform(-900.0, 45.0)  # most nodes are already busy when the demo starts

    def at(self, elapsed: float) -> Job | None:
        while not self._jobs or self._jobs[-1].end <= elapsed:
            self._jobs.append(self._new_job())
            del self._jobs[:-4]  # bounded memory; queries move forward in time
        for job in reversed(self._jobs):
            if job.start <= elapsed:
                return job if elapsed < job.end else None
        return None

    def _new_job(self) -> Job:
        rng = self._rng
        start = self._next_start
        ramp = rng.uniform(10.0, 30.0)
        end = start + ramp + rng.uniform(240.0, 1500.0)
        all_gpus = rng.random() < 0.8
        half = rng.randrange(2)
        gpus = ALL_GPUS if all_gpus else frozenset(range(half * 4, half * 4 + 4))
        job = Job(
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


class SimulatedGpu:
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

    def step(
        self,
        profile: GpuProfile,
        *,
        util: float,
        job: Job | None,
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
        """Advance this GPU by ``dt`` seconds at ``util`` and return its sample: power (capped, braked, slowed),
        temperatures lagging behind power, throttle reasons with hysteresis, clocks and counters."""
        intensity = job.intensity if job is not None else 1.0
        dynamic = (profile.typical_w - profile.idle_w) * intensity * self.power_factor * util / 100.0
        if self.thermal_slowed:
            dynamic *= 0.45
        if brake:
            dynamic *= 0.3
        demand = profile.idle_w + dynamic
        capped = demand > POWER_LIMIT_W
        if capped:
            power = POWER_LIMIT_W - 0.5 - abs(jitter(rng, 1.5))
        else:
            # the reading is accurate to +-5 W; the limiter keeps it from drifting above the cap
            power = min(POWER_LIMIT_W + 1.0, max(profile.idle_w * 0.9, demand + jitter(rng, 1.5)))

        self.temp_c = lag(self.temp_c, ref_c + offsets[0] + self.offset_c + slopes[0] * power, alphas[0])
        self.hbm_c = lag(self.hbm_c, ref_c + offsets[1] + self.offset_c + slopes[1] * power, alphas[1])
        temp = float(round(self.temp_c))
        margin = T_LIMIT_C - temp
        # hysteresis: engage at T.Limit -2 C, release once back under T.Limit -> margin <= 0 during slowdown
        if margin <= SLOWDOWN_MARGIN_C:
            self.thermal_slowed = True
        elif margin >= 1.0:
            self.thermal_slowed = False

        reasons: list[ThrottleReason] = []
        clock = BOOST_SM_MHZ if util > 0 else IDLE_SM_MHZ
        if util <= 0:
            reasons.append(ThrottleReason.GPU_IDLE)
        if capped:
            reasons.append(ThrottleReason.SW_POWER_CAP)
            clock *= (POWER_LIMIT_W / demand) ** 0.8
        if self.thermal_slowed or brake:
            reasons.append(ThrottleReason.HW_SLOWDOWN)
        if margin <= 0:
            reasons.append(ThrottleReason.SW_THERMAL_SLOWDOWN)
        if self.thermal_slowed:
            reasons.append(ThrottleReason.HW_THERMAL_SLOWDOWN)
            clock *= 0.55
        if brake:
            reasons.append(ThrottleReason.HW_POWER_BRAKE_SLOWDOWN)
            clock *= 0.35
        clock = max(IDLE_SM_MHZ, round(clock / 15.0) * 15.0)

        self.energy_j = round(self.energy_j + power * dt, 3)
        if rng.random() < 1e-4 * dt:
            self.sbe += 1
            self.sbe_aggregate += 1
        if rng.random() < 2e-4 * dt:
            self.pcie_replays += 1
        if crc_burst:
            burst = int(rng.uniform(200.0, 600.0) * dt)
            self.nvlink_crc += burst
            self.nvlink_replay += burst // 20
        elif rng.random() < 1e-5 * dt:  # a healthy link: a stray CRC error every day or so per GPU
            self.nvlink_crc += 1

        memory_used = 0.0
        workload: tuple[PodWorkload, ...] = ()
        if job is not None and self.index in job.gpus and util > 0:
            memory_used = float(round(profile.memory_total_mib * job.memory_fraction))
            workload = (job.pod,)
        return GpuSample(
            index=self.index,
            uuid=self.uuid,
            name=profile.name,
            serial=self.serial,
            pci_bus_id=self.pci_bus_id,
            driver_version=DRIVER_VERSION,
            vbios_version=profile.vbios,
            utilization_pct=util,
            memory_used_mib=memory_used,
            memory_total_mib=profile.memory_total_mib,
            power_w=round(power, 2),
            power_limit_w=POWER_LIMIT_W,
            power_default_limit_w=POWER_LIMIT_W,
            energy_j=self.energy_j,
            temperature_c=temp,
            memory_temperature_c=float(round(self.hbm_c)),
            thermal_margin_c=margin,
            sm_clock_mhz=clock,
            memory_clock_mhz=profile.memory_clock_mhz,
            pstate=0,  # persistence mode keeps SXM parts in P0 even when idle
            throttle_reasons=tuple(reasons),
            ecc_sbe_volatile=self.sbe,
            ecc_dbe_volatile=self.dbe,
            ecc_sbe_aggregate=self.sbe_aggregate,
            ecc_dbe_aggregate=self.dbe_aggregate,
            remapped_rows_correctable=0,
            remapped_rows_uncorrectable=self.remapped_uncorrectable,
            remapped_rows_pending=remap_pending,
            remapped_rows_failure=False,
            pcie_replays=self.pcie_replays,
            pcie_link_gen=5,
            pcie_link_gen_max=5,
            pcie_link_width=16,
            pcie_link_width_max=16,
            nvlink_crc_errors=self.nvlink_crc,
            nvlink_replay_errors=self.nvlink_replay,
            nvlink_recovery_errors=0,
            nvlink_links_up=NVLINK_LINKS,
            nvlink_links_down=0,
            graphics_active_pct=round(util * 0.98, 1),
            sm_active_pct=round(util * SM_SHARE, 1),
            tensor_active_pct=round(util * TENSOR_SHARE, 1),
            dram_active_pct=round(util * DRAM_SHARE, 1),
            pcie_tx_mib_s=round(8.0 + util / 100.0 * PCIE_MIB_S[0], 1),
            pcie_rx_mib_s=round(4.0 + util / 100.0 * PCIE_MIB_S[1], 1),
            nvlink_tx_mib_s=round(util / 100.0 * NVLINK_MIB_S, 1),
            nvlink_rx_mib_s=round(util / 100.0 * NVLINK_MIB_S, 1),
            xid_last=self.xid_last,
            recovery_action=RecoveryAction.NONE,
            mig_mode=False,
            workload=workload,
            unsupported=UNSUPPORTED,
        )

    def lost_sample(self, profile: GpuProfile) -> GpuSample:
        """Fallen off the bus: identity from before, no telemetry at all."""
        return GpuSample(
            index=self.index,
            uuid=self.uuid,
            name=profile.name,
            serial=self.serial,
            pci_bus_id=self.pci_bus_id,
            driver_version=DRIVER_VERSION,
            xid_last=self.xid_last,
            lost=True,
            unsupported=UNSUPPORTED,
        )


def jitter(rng: random.Random, sigma: float) -> float:
    """Zero-mean triangular noise with standard deviation ``sigma`` (ten times cheaper than ``gauss``)."""
    return (rng.random() + rng.random() - 1.0) * sigma * 2.449


def lag(current: float, target: float, alpha: float) -> float:
    return target if math.isnan(current) else current + (target - current) * alpha


def lag_factor(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-dt / tau)


def utilization(job: Job | None, elapsed: float, gpu: int, rng: random.Random) -> float:
    """What ``gpu`` runs at ``elapsed`` seconds after the anchor: the job's demand with a little noise, or idle."""
    base = job.utilization(elapsed, gpu) if job is not None else 0.0
    if base <= 0.0:
        return 0.0
    return float(round(min(100.0, max(1.0, base + jitter(rng, 1.5)))))


def node_power_w(gpu_power_w: float, util_sum: float) -> float:
    """The node's draw: a base, the rest of the node working with the GPUs (``util_sum``: % over all GPUs)."""
    return NODE_BASE_W + NODE_BASE_LOAD_W * util_sum / (100.0 * GPUS_PER_NODE) + gpu_power_w


@dataclass(frozen=True, slots=True)
class CoolingReference:
    """What the GPUs are cooled against in one step: temperature = ref_c + offset + slope * power (GPU, HBM)."""

    inlet_c: float
    ref_c: float
    offsets: tuple[float, float]
    slopes: tuple[float, float]


class NodeCooling:
    """The node's air path and, on liquid-cooled nodes, its coolant loop; the chassis sample they give."""

    __slots__ = (
        "_exhaust_c",
        "_fan_factors",
        "_fan_rpm",
        "_flow",
        "_inlet_base",
        "_inlet_phase",
        "_return_c",
        "_supply_base",
        "_supply_c",
        "cooling",
        "heat_w",
        "profile",
    )

    def __init__(self, cooling: Cooling, profile: GpuProfile, identity: random.Random) -> None:
        self.cooling = cooling
        self.profile = profile
        self._inlet_base = 23.0 + identity.uniform(-2.5, 2.5)
        self._inlet_phase = identity.uniform(0.0, 2 * math.pi)
        self._supply_base = 28.0 + identity.uniform(-1.5, 1.5)
        self._fan_factors = tuple(identity.uniform(0.97, 1.03) for _ in range(10))
        self.heat_w = NODE_BASE_W + GPUS_PER_NODE * profile.idle_w  # the node's draw at the last step
        self._flow = COOLANT_RATED_LPM
        self._supply_c = math.nan
        self._return_c = math.nan
        self._exhaust_c = math.nan
        self._fan_rpm = math.nan

    def step(self, elapsed: float, dt: float, coolant_fault: bool, rng: random.Random) -> CoolingReference:
        """Advance inlet air and coolant by ``dt``; ``coolant_fault``: the loop's flow is failing."""
        profile = self.profile
        inlet = self._inlet(elapsed, rng)
        if self.cooling is Cooling.LIQUID:
            self._step_coolant(elapsed, dt, coolant_fault, lag_factor(dt, TAU_COOLANT_S))
            ref_c = (self._supply_c + self._return_c) / 2.0
            offsets = (LIQUID_GPU_OFFSET_C, LIQUID_HBM_OFFSET_C)
            gpu_slope = LIQUID_GPU_C_PER_W * math.sqrt(COOLANT_RATED_LPM / self._flow)
            hbm_slope = profile.hbm_c_per_w * math.sqrt(COOLANT_RATED_LPM / self._flow)
            return CoolingReference(inlet, ref_c, offsets, (gpu_slope, hbm_slope))
        offsets = (profile.gpu_offset_c, profile.hbm_offset_c)
        return CoolingReference(inlet, inlet, offsets, (profile.gpu_c_per_w, profile.hbm_c_per_w))

    def _inlet(self, elapsed: float, rng: random.Random) -> float:
        drift = 0.6 * math.sin(2 * math.pi * elapsed / 1800.0 + self._inlet_phase)
        return min(27.0, max(20.0, self._inlet_base + drift + jitter(rng, 0.1)))

    def _step_coolant(self, elapsed: float, dt: float, fault: bool, alpha: float) -> None:
        rated = COOLANT_RATED_LPM
        flow_target = FAULT_FLOW_LPM if fault else rated * (1.0 + 0.03 * math.sin(elapsed / 97.0))
        self._flow = lag(self._flow, flow_target, lag_factor(dt, TAU_FLOW_S))
        supply_target = self._supply_base + 0.5 * math.sin(elapsed / 613.0) + (4.0 if fault else 0.0)
        self._supply_c = lag(self._supply_c, supply_target, lag_factor(dt, 2 * TAU_COOLANT_S))
        rise = min(45.0, (self.heat_w + RACK_SHARED_HEAT_W) / (self._flow * LOOP_W_PER_LPM_C))
        self._return_c = lag(self._return_c, self._supply_c + rise, alpha)

    def chassis(self, inlet: float, node_power: float, dt: float, rng: random.Random) -> ChassisSample:
        """The chassis sample of this step (``node_power``: what the node draws now, GPUs included)."""
        self.heat_w = node_power
        liquid = self.cooling is Cooling.LIQUID
        air_share = 0.0006 if liquid else 0.0024  # most heat leaves through the coolant on liquid nodes
        self._exhaust_c = lag(self._exhaust_c, inlet + 3.0 + air_share * node_power, lag_factor(dt, TAU_AIR_S))
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
        self._fan_rpm = lag(self._fan_rpm, target_rpm, lag_factor(dt, 5.0))
        fans = tuple(round(self._fan_rpm * f + jitter(rng, 20.0), -1) for f in self._fan_factors)
        return ChassisSample(
            inlet_c=round(inlet, 1),
            exhaust_c=round(self._exhaust_c, 1),
            fans_rpm=fans,
            fans_min_rpm=1500.0,
            power_w=round(node_power),
            health=Health.OK,
            psu_health=Health.OK,
        )
