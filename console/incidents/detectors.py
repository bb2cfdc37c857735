"""Detectors: the code behind each rule ``kind``. Thresholds, timing and text live in the rules file.

Four scopes:
- GPU detectors run once per GPU per sample. "Level" ones return the measured value (or None when the GPU does not
  report it) and the engine classifies it against the rule's thresholds with hysteresis; the others return a
  ``Finding`` when their condition holds. They are the hot path: no allocation when the GPU is healthy.
- NODE detectors run once per sample and return findings (chassis, cooling, cohort, lost GPUs).
- RESULT detectors run on every poll result, failed or not (unreachable, collector down, collector slow).
- ENGINE detectors are evaluated by the engine itself (Xid with its catalog, stale nodes in ``tick``).

Counters are monotonic totals; rates come from deltas, and a decrease is a reset, never a negative rate.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum

from console.incidents.model import Severity
from console.incidents.rule import Rule
from console.samples.results import PollFailure, PollResult
from console.samples.schema import (
    ChassisSample,
    ComponentKind,
    EventKind,
    GpuSample,
    Health,
    NodeSample,
    RecoveryAction,
    ThrottleReason,
)

GPU_FIELDS = frozenset(f.name for f in fields(GpuSample))
CHASSIS_FIELDS = frozenset(f.name for f in fields(ChassisSample))
_HEALTH_SEVERITY = {Health.WARNING: Severity.WARNING, Health.CRITICAL: Severity.CRITICAL}


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition seen now. ``severity`` None: classify ``value`` with the rule's thresholds (or its fixed
    severity when it has none)."""

    gpu_uuid: str | None
    code: str = ""
    value: float | None = None
    severity: Severity | None = None
    detail: str = ""


def _may_matter(rule: Rule, value: float) -> bool:
    """False when the engine would drop a finding with this value anyway (no threshold crossed, outside the
    hysteresis band): detectors that run on every sample skip allocating it and formatting its detail."""
    return not rule.thresholds or rule.level(value) is not None or rule.holds(value)


class WindowCounter:
    """Increase of a monotonic counter over a sliding window, storing only the points where it changed."""

    __slots__ = ("points",)

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque()

    def update(self, t: float, value: float, window_s: float) -> float:
        points = self.points
        if not points or value < points[-1][1]:  # first sight, or a reset: start over from here
            points.clear()
            points.append((t, value))
            return 0.0
        if value != points[-1][1]:
            points.append((t, value))
        cutoff = t - window_s
        while len(points) > 1 and points[1][0] <= cutoff:
            points.popleft()
        return value - points[0][1]


@dataclass(slots=True)
class GpuMemory:
    """What the engine remembers about one GPU between samples."""

    prev: GpuSample | None = None
    prev_t: float = 0.0
    windows: dict[str, WindowCounter] = field(default_factory=dict)

    def window(self, name: str) -> WindowCounter:
        counter = self.windows.get(name)
        if counter is None:
            counter = self.windows[name] = WindowCounter()
        return counter


@dataclass(slots=True)
class NodeMemory:
    """What the engine remembers about one node between samples."""

    gpus: dict[str, GpuMemory] = field(default_factory=dict)
    missing: dict[str, GpuSample] = field(default_factory=dict)  # GPUs that vanished from enumeration
    failing_since: float | None = None
    dt_baseline: float | None = None  # coolant delta-T per kW of node power, slowly learned
    dt_since: float | None = None
    dt_last_t: float = 0.0


class Scope(Enum):
    GPU = "gpu"
    NODE = "node"
    RESULT = "result"
    ENGINE = "engine"


class SignalKind(StrEnum):
    NONE = "none"
    GPU_FIELD = "gpu_field"
    CHASSIS_FIELD = "chassis_field"
    THROTTLE_REASON = "throttle_reason"


GpuLevelFn = Callable[[Rule, GpuSample, GpuMemory, float], float | None]
GpuFlagFn = Callable[[Rule, GpuSample, GpuMemory, float], Finding | None]
NodeFn = Callable[[Rule, NodeSample, NodeMemory, float], list[Finding]]
ResultFn = Callable[[Rule, PollResult, NodeMemory, float, float], list[Finding]]


@dataclass(frozen=True, slots=True)
class Detector:
    scope: Scope
    fn: Callable[..., object] | None
    level: bool = False  # GPU scope: fn returns a value to classify
    event: bool = False  # one-shot findings: the condition is "seen at t", then clears after clear_s of silence
    signal: SignalKind = SignalKind.NONE
    thresholds: bool = False  # the rule must give thresholds and a direction
    params: frozenset[str] = frozenset()
    code_is_signal: bool = False  # the incident code is the rule's signal (e.g. the throttle reason)

    def check_signal(self, signal: str) -> str | None:
        if self.signal is SignalKind.GPU_FIELD and signal not in GPU_FIELDS:
            return f"{signal!r} is not a GPU sample field"
        if self.signal is SignalKind.CHASSIS_FIELD and signal not in CHASSIS_FIELDS:
            return f"{signal!r} is not a chassis sample field"
        if self.signal is SignalKind.THROTTLE_REASON and signal not in ThrottleReason.__members__.values():
            return f"{signal!r} is not a throttle reason ({', '.join(ThrottleReason)})"
        return None


# --- GPU level detectors (return a value) ----------------------------------------------------------------------


def _gpu_field(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> float | None:
    value = getattr(gpu, rule.signal)
    return None if value is None else float(value)


def _thermal_margin(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> float | None:
    if gpu.thermal_margin_c is not None:
        return gpu.thermal_margin_c
    # No T.Limit margin (GeForce, older drivers): distance to the absolute slowdown threshold instead.
    if gpu.slowdown_temp_c is not None and gpu.temperature_c is not None:
        return gpu.slowdown_temp_c - gpu.temperature_c
    return None


def _hbm_margin(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> float | None:
    temp = gpu.memory_temperature_c
    if temp is None:
        return None
    limit = gpu.memory_max_temp_c if gpu.memory_max_temp_c is not None else rule.params["default_max_c"]
    return limit - temp


def _power_limit_deficit(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> float | None:
    if gpu.power_limit_w is None or gpu.power_default_limit_w is None:
        return None
    return gpu.power_default_limit_w - gpu.power_limit_w


def _window_increase(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> float | None:
    value = getattr(gpu, rule.signal)
    if value is None:
        return None
    return mem.window(rule.signal).update(t, value, rule.params["window_s"])


_PCIE_LANE_PARAMS = {gen: f"per_lane_gen{gen}" for gen in range(1, 7)}


def _pcie_replay_excess(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> float | None:
    """Replays in the last minute above DCGM's allowance: ceil(per-lane rate of the link generation x width)."""
    replays = gpu.pcie_replays
    if replays is None:
        return None
    increase = mem.window("pcie_replays").update(t, replays, rule.params["window_s"])
    gen = gpu.pcie_link_gen or gpu.pcie_link_gen_max
    width = gpu.pcie_link_width or gpu.pcie_link_width_max
    per_lane = rule.params.get(_PCIE_LANE_PARAMS.get(gen or 0, ""), rule.params["per_lane_gen5"])
    allowed = math.ceil(per_lane * (width or 16) * rule.params["window_s"] / 60.0)
    return increase - allowed


# --- GPU flag detectors (return a Finding when the condition holds) --------------------------------------------


def _gpu_flag(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> Finding | None:
    return Finding(gpu.uuid) if getattr(gpu, rule.signal) is True else None


def _throttle(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> Finding | None:
    if not gpu.throttle_reasons or rule.signal not in gpu.throttle_reasons:
        return None
    return Finding(gpu.uuid, rule.signal, detail=f"active reasons: {', '.join(gpu.throttle_reasons)}")


def _recovery_action(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> Finding | None:
    action = gpu.recovery_action
    if action is None or action is RecoveryAction.NONE:
        return None
    return Finding(gpu.uuid, str(action), detail=f"driver recovery action: {action}")


def _pcie_link_degraded(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> Finding | None:
    narrow = (
        gpu.pcie_link_width is not None
        and gpu.pcie_link_width_max is not None
        and gpu.pcie_link_width < gpu.pcie_link_width_max
    )
    # The link generation drops at idle to save power; only a slow link under load is a fault.
    busy = (gpu.utilization_pct or 0.0) >= rule.params["busy_utilization_pct"]
    slow = (
        busy
        and gpu.pcie_link_gen is not None
        and gpu.pcie_link_gen_max is not None
        and gpu.pcie_link_gen < gpu.pcie_link_gen_max
    )
    if not (narrow or slow):
        return None
    return Finding(
        gpu.uuid,
        detail=f"link Gen{gpu.pcie_link_gen} x{gpu.pcie_link_width}, "
        f"max Gen{gpu.pcie_link_gen_max} x{gpu.pcie_link_width_max}",
    )


def _counter_increase(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> Finding | None:
    prev = mem.prev
    if prev is None:
        return None
    now_value, before = getattr(gpu, rule.signal), getattr(prev, rule.signal)
    if now_value is None or before is None or now_value <= before:  # equal, or a reset
        return None
    delta = now_value - before
    return Finding(gpu.uuid, value=float(delta), detail=f"{rule.signal} +{delta} (now {now_value})")


def _counter_rate(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> Finding | None:
    prev = mem.prev
    if prev is None:
        return None
    now_value, before = getattr(gpu, rule.signal), getattr(prev, rule.signal)
    if now_value is None or before is None or now_value <= before:
        return None
    delta = now_value - before
    rate = delta / max(t - mem.prev_t, 1e-3)
    return Finding(gpu.uuid, value=rate, detail=f"{rule.signal} +{delta} ({rate:.1f}/s)")


def _counter_reset(rule: Rule, gpu: GpuSample, mem: GpuMemory, t: float) -> Finding | None:
    prev = mem.prev
    if prev is None:
        return None
    now_value, before = getattr(gpu, rule.signal), getattr(prev, rule.signal)
    if now_value is None or before is None or now_value >= before:
        return None
    return Finding(gpu.uuid, detail=f"{rule.signal} fell from {before:g} to {now_value:g}: driver reload or GPU reset")


# --- node detectors ------------------------------------------------------------------------------------------


def _gpu_lost(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    found = [Finding(gpu.uuid, detail="GPU reported lost (fell off the bus)") for gpu in sample.gpus if gpu.lost]
    found += [Finding(uuid, detail="GPU vanished from enumeration") for uuid in mem.missing]
    found += [
        Finding(e.gpu_uuid or uuid_at_index(sample, e.gpu_index), detail=e.message or "GPU lost event")
        for e in sample.events
        if e.kind is EventKind.GPU_LOST
    ]
    return found


def uuid_at_index(sample: NodeSample, index: int | None) -> str | None:
    """The UUID of the sample's GPU with this index (events may name a GPU by index only)."""
    return next((gpu.uuid for gpu in sample.gpus if gpu.index == index), None)


def _chassis_flag(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    return [Finding(None, detail=f"{rule.signal} reported")] if getattr(sample.chassis, rule.signal) is True else []


def _chassis_level(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    value = getattr(sample.chassis, rule.signal)
    if value is None or not _may_matter(rule, float(value)):
        return []
    return [Finding(None, value=float(value))]


def _coolant_flow_fraction(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    chassis = sample.chassis
    rated = chassis.coolant_flow_rated_lpm or rule.params.get("rated_lpm") or None
    if chassis.coolant_flow_lpm is None or not rated:
        return []
    fraction = chassis.coolant_flow_lpm / rated
    if not _may_matter(rule, fraction):
        return []
    return [Finding(None, value=fraction, detail=f"flow {chassis.coolant_flow_lpm:.1f} of rated {rated:g} L/min")]


def _coolant_delta_t_drift(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    """Coolant delta-T per kW of node power against its own slowly learned baseline: a change means less (or more)
    heat reaching the coolant for the same load (fouled cold plate, sensor drift, bypass)."""
    chassis = sample.chassis
    if chassis.coolant_supply_c is None or chassis.coolant_return_c is None or chassis.power_w is None:
        return []
    if chassis.power_w < rule.params["min_power_w"]:
        return []
    ratio = (chassis.coolant_return_c - chassis.coolant_supply_c) / (chassis.power_w / 1000.0)
    if mem.dt_baseline is None or mem.dt_since is None:
        mem.dt_baseline, mem.dt_since, mem.dt_last_t = ratio, t, t
        return []
    drift = abs(ratio / mem.dt_baseline - 1.0) if mem.dt_baseline > 0 else 0.0
    learning = rule.level(drift) is None and not rule.holds(drift)  # never learn the fault itself
    if learning:
        alpha = min(1.0, max(t - mem.dt_last_t, 0.0) / rule.params["baseline_tau_s"])
        mem.dt_baseline += alpha * (ratio - mem.dt_baseline)
    mem.dt_last_t = t
    if t - mem.dt_since < rule.params["warmup_s"] or not _may_matter(rule, drift):
        return []
    return [Finding(None, value=drift, detail=f"delta-T {ratio:.2f} C/kW, baseline {mem.dt_baseline:.2f} C/kW")]


# Which unhealthy BMC components each health rule names (the chassis rule takes every kind the others do not).
_HEALTH_COMPONENTS = {
    "pump_health": frozenset({ComponentKind.PUMP}),
    "psu_health": frozenset({ComponentKind.POWER_SUPPLY}),
}
_OTHER_COMPONENTS = frozenset(ComponentKind) - {ComponentKind.PUMP, ComponentKind.POWER_SUPPLY}


def _health(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    """One finding per unhealthy component the BMC names (code: its name), and one for the health itself where
    no named component accounts for it (the chassis health counts every component: a PSU raising it is the PSU
    rule's)."""
    chassis = sample.chassis
    health = getattr(chassis, rule.signal)
    severity = _HEALTH_SEVERITY.get(health) if health is not None else None
    if severity is None:
        return []
    kinds = _HEALTH_COMPONENTS.get(rule.signal, _OTHER_COMPONENTS)
    several = len(chassis.parts) > 1
    # on a BMC with several chassis the chassis is part of the name: two blades each have a "Fan 1"
    found = [
        Finding(
            None,
            code=f"{c.chassis} {c.name}" if several and c.chassis and not c.name.startswith(c.chassis) else c.name,
            severity=_HEALTH_SEVERITY[c.health],
            detail=f"{c.text} (chassis {c.chassis})" if several and c.chassis else c.text,
        )
        for c in chassis.components
        if c.kind in kinds
    ]
    accounting = chassis.components if rule.signal == "health" else [c for c in chassis.components if c.kind in kinds]
    if not any(_HEALTH_SEVERITY[c.health] >= severity for c in accounting):
        conditions = ", ".join(chassis.conditions) or "no conditions reported"
        found.append(Finding(None, severity=severity, detail=f"{rule.signal} {health}: {conditions}"))
    return found


def _fan_minimum(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    chassis = sample.chassis
    if not chassis.fans_rpm or not chassis.fans_min_rpm:
        return []
    slowest = min(range(len(chassis.fans_rpm)), key=chassis.fans_rpm.__getitem__)
    rpm = chassis.fans_rpm[slowest]
    if not _may_matter(rule, rpm / chassis.fans_min_rpm):
        return []
    return [
        Finding(
            None,
            value=rpm / chassis.fans_min_rpm,
            detail=f"fan {slowest} at {rpm:.0f} RPM, minimum {chassis.fans_min_rpm:.0f} RPM",
        )
    ]


def _cohort(rule: Rule, sample: NodeSample, attribute: str, hotter: bool) -> list[Finding]:
    """Each busy GPU against the median of its siblings drawing similar power on the same node."""
    params = rule.params
    min_power = params["min_power_w"]
    busy: list[tuple[GpuSample, float, float]] = []  # (gpu, power, the compared value)
    for gpu in sample.gpus:
        power = gpu.power_w
        if power is None or power < min_power or gpu.lost:
            continue
        own = getattr(gpu, attribute)
        if own is not None:
            busy.append((gpu, power, own))
    min_siblings = params["min_siblings"]
    if len(busy) < min_siblings + 1:
        return []
    tolerance = params["power_tolerance"]
    powers = [power for _, power, _ in busy]
    values = [own for _, _, own in busy]
    # The usual node: every busy GPU within the power band of every other (rounding is monotonic, so the widest
    # pair against the narrowest band decides it for all pairs), no NaN, each GPU once. Then a GPU's siblings are
    # all the others: one sort serves every GPU.
    everyone = (
        max(powers) - min(powers) <= tolerance * min(powers)
        and not any(math.isnan(v) for v in values)
        and len({id(gpu) for gpu, _, _ in busy}) == len(busy)
    )
    ordered = sorted(values) if everyone else []
    found = []
    for gpu, power, own in busy:
        if everyone:
            # The others in order are ``ordered`` without one occurrence of its own value, at ``skip``.
            count = len(ordered) - 1
            skip = bisect_left(ordered, own)
            mid = count // 2
            upper = ordered[mid + (mid >= skip)]
            median = upper if count % 2 else (ordered[mid - 1 + (mid - 1 >= skip)] + upper) / 2
        else:
            band = tolerance * power
            siblings = sorted([v for other, p, v in busy if other is not gpu and abs(p - power) <= band])
            count = len(siblings)
            if count < min_siblings:
                continue
            mid = count // 2
            median = siblings[mid] if count % 2 else (siblings[mid - 1] + siblings[mid]) / 2
        value = own - median if hotter else (1.0 - own / median if median > 0 else 0.0)
        if not _may_matter(rule, value):
            continue  # the usual case, a GPU like its siblings: skip building the detail text
        if hotter:
            detail = f"{own:.0f} C against {median:.0f} C for {count} siblings at similar power"
        else:
            detail = f"SM clock {own:.0f} MHz against {median:.0f} MHz for {count} siblings at similar power"
        found.append(Finding(gpu.uuid, value=value, detail=detail))
    return found


def _cohort_hotter(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    return _cohort(rule, sample, "temperature_c", hotter=True)


def _cohort_slower(rule: Rule, sample: NodeSample, mem: NodeMemory, t: float) -> list[Finding]:
    return _cohort(rule, sample, "sm_clock_mhz", hotter=False)


# --- result detectors ----------------------------------------------------------------------------------------


def _unreachable(rule: Rule, result: PollResult, mem: NodeMemory, t: float, interval_s: float) -> list[Finding]:
    if result.sample is not None:
        return []
    if result.failures and all(f.failure is PollFailure.COLLECTOR for f in result.failures):
        return []  # the shared collector is down, not the node: one collector_down stands for all its nodes
    return [Finding(None, detail=result.reason or "no sample")]


def _collector_down(rule: Rule, result: PollResult, mem: NodeMemory, t: float, interval_s: float) -> list[Finding]:
    """A source that failed while another source of the node answered: that collector is down, not the node (a
    node none of whose sources answers is ``unreachable`` alone). The code is the source's kind."""
    if result.sample is None or not result.failures:
        return []
    return [
        Finding(None, f.source.split(" ", 1)[0], detail=f"{f.source}: {f.failure}: {f.reason}") for f in result.failures
    ]


def _collector_slow(rule: Rule, result: PollResult, mem: NodeMemory, t: float, interval_s: float) -> list[Finding]:
    if any(f.failure is PollFailure.TIMEOUT for f in result.failures):
        return []  # the poll waited for a source that timed out: that source is down (or the node), not slow
    fraction = result.latency_s / interval_s if interval_s > 0 else 0.0
    if not _may_matter(rule, fraction):
        return []
    return [
        Finding(
            None, value=fraction, detail=f"poll took {result.latency_s * 1000:.0f} ms of a {interval_s:g} s interval"
        )
    ]


_GPU_F = SignalKind.GPU_FIELD
_CH_F = SignalKind.CHASSIS_FIELD

DETECTORS: Mapping[str, Detector] = {
    # GPU, level
    "gpu_level": Detector(Scope.GPU, _gpu_field, level=True, signal=_GPU_F, thresholds=True),
    "thermal_margin": Detector(Scope.GPU, _thermal_margin, level=True, thresholds=True),
    "hbm_margin": Detector(Scope.GPU, _hbm_margin, level=True, thresholds=True, params=frozenset({"default_max_c"})),
    "power_limit_deficit": Detector(Scope.GPU, _power_limit_deficit, level=True, thresholds=True),
    "counter_window": Detector(
        Scope.GPU, _window_increase, level=True, signal=_GPU_F, thresholds=True, params=frozenset({"window_s"})
    ),
    "pcie_replay_rate": Detector(
        Scope.GPU,
        _pcie_replay_excess,
        level=True,
        thresholds=True,
        params=frozenset({"window_s", "per_lane_gen5"}),
    ),
    # GPU, flags and events
    "gpu_flag": Detector(Scope.GPU, _gpu_flag, signal=_GPU_F),
    "throttle": Detector(Scope.GPU, _throttle, signal=SignalKind.THROTTLE_REASON, code_is_signal=True),
    "recovery_action": Detector(Scope.GPU, _recovery_action),
    "pcie_link": Detector(Scope.GPU, _pcie_link_degraded, params=frozenset({"busy_utilization_pct"})),
    "counter_increase": Detector(Scope.GPU, _counter_increase, event=True, signal=_GPU_F),
    "counter_rate": Detector(Scope.GPU, _counter_rate, event=True, signal=_GPU_F, thresholds=True),
    "counter_reset": Detector(Scope.GPU, _counter_reset, event=True, signal=_GPU_F),
    # node
    "gpu_lost": Detector(Scope.NODE, _gpu_lost),
    "chassis_flag": Detector(Scope.NODE, _chassis_flag, signal=_CH_F),
    "chassis_level": Detector(Scope.NODE, _chassis_level, signal=_CH_F, thresholds=True),
    "coolant_flow": Detector(Scope.NODE, _coolant_flow_fraction, thresholds=True),
    "coolant_delta_t": Detector(
        Scope.NODE,
        _coolant_delta_t_drift,
        thresholds=True,
        params=frozenset({"min_power_w", "baseline_tau_s", "warmup_s"}),
    ),
    "health": Detector(Scope.NODE, _health, signal=_CH_F),
    "fan_minimum": Detector(Scope.NODE, _fan_minimum, thresholds=True),
    "cohort_hotter": Detector(
        Scope.NODE,
        _cohort_hotter,
        thresholds=True,
        params=frozenset({"min_power_w", "power_tolerance", "min_siblings"}),
    ),
    "cohort_slower": Detector(
        Scope.NODE,
        _cohort_slower,
        thresholds=True,
        params=frozenset({"min_power_w", "power_tolerance", "min_siblings"}),
    ),
    # poll results
    "unreachable": Detector(Scope.RESULT, _unreachable),
    "collector_down": Detector(Scope.RESULT, _collector_down),
    "collector_slow": Detector(Scope.RESULT, _collector_slow, thresholds=True),
    # evaluated by the engine
    "xid": Detector(Scope.ENGINE, None, event=True),
    "stale": Detector(Scope.ENGINE, None, thresholds=True),
}
