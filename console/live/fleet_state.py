"""What the operator sees at a glance: per node and GPU a status (ok, warning, critical, stale, unreachable),
per site the counts, and the latest values. Pure Python, updated from ``MonitorUpdate``s by one thread (the GUI's);
the Qt models in ``widgets/`` are thin adapters over it.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from console.config.fleet import Fleet
from console.incidents.model import ChangeKind, Incident, IncidentChange, Severity, Status
from console.samples.results import PollResult
from console.samples.schema import MAX_GPUS_PER_NODE, GpuSample, NodeSample

STALE_AFTER_INTERVALS = 3.0
REPEAT_AGE_STEP_S = 5.0  # while an exporter repeats itself, views refresh its node this often
# GPUs that left a node's enumeration are kept (an operator wants to see what vanished), up to MAX_GPUS_PER_NODE
# per node, so a node reporting a new UUID on every poll cannot grow the state and the fleet panel without bound.


class NodeStatus(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    STALE = "stale"
    UNREACHABLE = "unreachable"


# Worst first: what an operator must look at before anything else.
STATUS_RANK: dict[NodeStatus, int] = {
    NodeStatus.UNREACHABLE: 0,
    NodeStatus.CRITICAL: 1,
    NodeStatus.STALE: 2,
    NodeStatus.WARNING: 3,
    NodeStatus.OK: 4,
}


def status_for_severity(severity: Severity | None) -> NodeStatus:
    if severity is None or severity <= Severity.INFO:
        return NodeStatus.OK
    return NodeStatus.CRITICAL if severity >= Severity.MAJOR else NodeStatus.WARNING


@dataclass(slots=True)
class GpuState:
    uuid: str
    index: int
    sample: GpuSample
    worst_severity: Severity | None = None
    last_seen: float = 0.0  # monotonic time of the last sample that included this GPU

    @property
    def status(self) -> NodeStatus:
        if self.sample.lost:
            return NodeStatus.CRITICAL
        return status_for_severity(self.worst_severity)


@dataclass(slots=True)
class NodeState:
    name: str
    site: str
    provider: str
    interval_s: float
    sample: NodeSample | None = None
    gpus: dict[str, GpuState] = field(default_factory=dict)
    last_result_mono: float | None = None
    last_success: float | None = None  # epoch
    last_fresh: float | None = None  # epoch of the last poll with new values (exporters repeat between collections)
    last_latency_s: float | None = None
    last_error: str = ""
    reachable: bool = True
    node_severity: Severity | None = None  # incidents on the node itself (unreachable, cooling, ...)
    sources: str = ""
    version: int = 0  # bumped on every change, so views can skip nodes that did not change
    gpu_layout: int = 0  # bumped when a GPU appears, goes or changes index: views rebuild their GPU rows then only
    shown_age_step: int = 0  # how old the repeated values were when the version last moved (REPEAT_AGE_STEP_S)

    @property
    def values_unchanged_s(self) -> float | None:
        """How long the node has answered with the same measurement, once that is two intervals or more (the
        exporter collects less often than we poll); None while its values keep changing."""
        if self.last_fresh is None or self.last_success is None:
            return None
        unchanged = self.last_success - self.last_fresh
        return unchanged if unchanged >= 2 * self.interval_s else None

    def status(self, now_mono: float) -> NodeStatus:
        if not self.reachable:
            return NodeStatus.UNREACHABLE
        if (
            self.last_result_mono is None
            or now_mono - self.last_result_mono > self.interval_s * STALE_AFTER_INTERVALS + 2.0
        ):
            return NodeStatus.STALE
        worst = self.node_severity
        for gpu in self.gpus.values():
            if gpu.sample.lost:
                return NodeStatus.CRITICAL
            if gpu.worst_severity is not None and (worst is None or gpu.worst_severity > worst):
                worst = gpu.worst_severity
        return status_for_severity(worst)


@dataclass(frozen=True, slots=True)
class SiteCounts:
    site: str
    provider: str
    counts: dict[NodeStatus, int]
    gpus: int

    @property
    def nodes(self) -> int:
        return sum(self.counts.values())


class FleetState:
    def __init__(self, fleet: Fleet, clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self._clock = clock
        providers = {site.name: site.provider for site in fleet.sites}
        self.nodes: dict[str, NodeState] = {
            node.name: NodeState(
                name=node.name,
                site=node.site,
                provider=providers[node.site],
                interval_s=fleet.interval_s(node),
                sources=", ".join(f"{s.kind} {s.target()}" for s in node.sources),
            )
            for node in fleet.nodes
        }
        self.open_incidents: dict[str, Incident] = {}
        self._latencies: deque[float] = deque(maxlen=2000)
        self.samples_seen = 0

    # -- updates ----

    def apply_result(self, result: PollResult) -> None:
        node = self.nodes.get(result.node)
        if node is None:
            return
        node.last_result_mono = self._clock()
        node.last_latency_s = result.latency_s
        self._latencies.append(result.latency_s)
        if result.sample is None:
            node.version += 1
            node.reachable = False
            node.last_error = result.reason
            return
        self.samples_seen += 1
        if not result.fresh and result.sample is node.sample and node.reachable and node.last_error == result.reason:
            # The same measurement again: the node answered and nothing a view shows changed, so views (which
            # redraw nodes whose version moved) skip it, except every few seconds to show how old the values are.
            node.last_success = result.started
            unchanged = node.values_unchanged_s
            age_step = 0 if unchanged is None else 1 + int(unchanged // REPEAT_AGE_STEP_S)
            if age_step != node.shown_age_step:
                node.shown_age_step = age_step
                node.version += 1
            return
        node.shown_age_step = 0
        node.version += 1
        node.reachable = True
        node.last_error = result.reason  # a partial failure (one of several sources) stays visible
        node.last_success = result.started
        if not result.fresh and result.sample is node.sample:
            return
        node.sample = result.sample
        node.last_fresh = result.started
        now = node.last_result_mono
        for gpu in result.sample.gpus:
            state = node.gpus.get(gpu.uuid)
            if state is None:
                node.gpus[gpu.uuid] = GpuState(uuid=gpu.uuid, index=gpu.index, sample=gpu, last_seen=now)
                node.gpu_layout += 1
            else:
                if state.index != gpu.index:
                    state.index = gpu.index
                    node.gpu_layout += 1
                state.sample = gpu
                state.last_seen = now
        if len(node.gpus) > MAX_GPUS_PER_NODE:
            by_age = sorted(node.gpus.values(), key=lambda g: g.last_seen)
            for gone in by_age[: len(node.gpus) - MAX_GPUS_PER_NODE]:
                del node.gpus[gone.uuid]
            node.gpu_layout += 1

    def apply_changes(self, changes: Iterable[IncidentChange]) -> set[str]:
        """Track open incidents; returns the names of nodes whose status may have changed."""
        touched: set[str] = set()
        for change in changes:
            if change.kind == ChangeKind.EVIDENCE:
                continue
            incident = change.incident
            if incident.status == Status.RESOLVED:
                self.open_incidents.pop(incident.id, None)
            else:
                self.open_incidents[incident.id] = incident
            touched.add(incident.context.node)
        for name in touched:
            self._recompute_severity(name)
        return touched

    def _recompute_severity(self, node_name: str) -> None:
        node = self.nodes.get(node_name)
        if node is None:
            return
        node.version += 1
        node.node_severity = None
        for gpu in node.gpus.values():
            gpu.worst_severity = None
        for incident in self.open_incidents.values():
            if incident.context.node != node_name or incident.severity <= Severity.INFO:
                continue
            uuid = incident.context.gpu_uuid
            gpu_state = node.gpus.get(uuid) if uuid else None
            if gpu_state is not None:
                if gpu_state.worst_severity is None or incident.severity > gpu_state.worst_severity:
                    gpu_state.worst_severity = incident.severity
            elif node.node_severity is None or incident.severity > node.node_severity:
                node.node_severity = incident.severity

    # -- reads ----

    def node_status(self, name: str) -> NodeStatus:
        return self.nodes[name].status(self._clock())

    def nodes_worst_first(self, site: str | None = None) -> list[NodeState]:
        now = self._clock()
        chosen = [n for n in self.nodes.values() if site is None or n.site == site]
        return sorted(chosen, key=lambda n: (STATUS_RANK[n.status(now)], n.name))

    def statuses(self) -> dict[str, NodeStatus]:
        """Every node's status now: one pass that the views of one refresh share."""
        now = self._clock()
        return {name: node.status(now) for name, node in self.nodes.items()}

    def site_counts(self, statuses: Mapping[str, NodeStatus] | None = None) -> list[SiteCounts]:
        """Nodes per status and GPUs, per site; ``statuses`` from ``statuses()`` when the caller has them."""
        status_of = self.statuses() if statuses is None else statuses
        counts = {site.name: dict.fromkeys(NodeStatus, 0) for site in self.fleet.sites}
        gpus = dict.fromkeys(counts, 0)
        for name, node in self.nodes.items():
            counts[node.site][status_of[name]] += 1
            gpus[node.site] += len(node.gpus)
        return [SiteCounts(site.name, site.provider, counts[site.name], gpus[site.name]) for site in self.fleet.sites]

    def fleet_counts(self, statuses: Mapping[str, NodeStatus] | None = None) -> dict[NodeStatus, int]:
        counts = dict.fromkeys(NodeStatus, 0)
        for status in (self.statuses() if statuses is None else statuses).values():
            counts[status] += 1
        return counts

    def latency_summary(self) -> tuple[float, float] | None:
        """Median and 95th percentile of recent poll latencies, seconds."""
        if len(self._latencies) < 2:
            return None
        values = sorted(self._latencies)
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        return statistics.median(values), p95

    @property
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for n in self.nodes.values())
