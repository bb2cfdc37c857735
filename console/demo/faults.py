"""The demo's faults: their schedule as data, and what a node's share of it does to the node.

* ``DemoPlan`` and ``ScheduledFault``: the fault schedule. Faults come in rounds of ``period_s`` (4-5.5 min,
  from the seed); round 0 starts every kind within the first minute after the fleet's anchor, later rounds
  repeat each kind on other nodes. ``console.demo.options.fault_schedule`` lists them for a fleet (tests,
  ``simulate --faults``). One kind spans a part of the topology: ``loop_flow_drop`` (a CDU fails) drops the
  coolant flow on every node of one cooling loop at once; its ``ScheduledFault`` names them all in ``nodes``.
* ``NodeFaults``: one node's faults at a time, as the flags the physics reads (``ActiveFaults``), and the Xids
  whose moment has come, applied to the GPUs they hit (counters, ``xid_last``) and returned as events.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from console.demo.fleet import Cooling, RosterEntry, demo_roster
from console.demo.physics import GPUS_PER_NODE, SimulatedGpu
from console.samples.schema import EventKind, GpuEvent

XID63_DELAY_S = 4.0  # Xid 63 (row remap) follows Xid 48 (DBE) on the same GPU this much later
XID_MESSAGES = {
    79: "GPU has fallen off the bus.",
    48: "An uncorrectable double bit error (DBE) has been detected.",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
}

# --- the fault schedule -------------------------------------------------------------------------------------


class FaultKind(StrEnum):
    COOLANT_FLOW_DROP = "coolant_flow_drop"  # liquid-cooled node: flow falls, coolant and GPUs heat up
    POWER_BRAKE = "power_brake"  # every GPU of the node: hw_power_brake_slowdown
    GPU_LOST = "gpu_lost"  # Xid 79, the GPU falls off the bus and returns later
    ECC_ROW_REMAP = "ecc_row_remap"  # Xid 48 (DBE), then Xid 63 (row remap pending)
    NVLINK_CRC_BURST = "nvlink_crc_burst"  # CRC errors rising by hundreds per second
    UNREACHABLE = "unreachable"  # the node stops answering
    LOOP_FLOW_DROP = "loop_flow_drop"  # a CDU fails: the coolant flow drops on every node of its cooling loop


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
    FaultKind.LOOP_FLOW_DROP: _FaultTiming(16.0, 90.0, 150.0, per_gpu=False),  # last: earlier kinds keep their draws
}
_COOLANT_KINDS = frozenset({FaultKind.COOLANT_FLOW_DROP, FaultKind.LOOP_FLOW_DROP})
_NODE_KINDS = tuple(kind for kind in FAULT_TIMING if kind not in _COOLANT_KINDS)

# A cooling loop: its name, its nodes (fleet order), and every node of the racks they are in (its neighbours).
Loop = tuple[str, tuple[str, ...], frozenset[str]]


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    kind: FaultKind
    start_s: float  # seconds after the plan's anchor
    duration_s: float
    node: str  # the node it hits (for a loop fault: the first of them it is listed under)
    gpu_index: int | None = None
    nodes: tuple[str, ...] = ()  # a fault of a part of the topology: every node it hits
    scope_name: str = ""  # that part's name (the cooling loop's)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def hits(self, node: str) -> bool:
        return node == self.node or node in self.nodes

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
    loops: tuple[Loop, ...] = ()  # cooling loops (loop faults go there), in fleet order

    def round_of(self, elapsed_s: float) -> int:
        return math.floor(elapsed_s / self.period_s)

    def faults_in_round(self, index: int) -> tuple[ScheduledFault, ...]:
        if index < 0 or not self.order:
            return ()
        rng = random.Random(f"{self.seed}/round/{index}")
        origin = index * self.period_s
        jitter = 12.0 if index == 0 else 60.0
        coolant_node = self._coolant_node(index)
        loop = self._loop(index, coolant_node)
        excluded = {coolant_node} | set(loop[1] if loop else ())
        targets = self._distinct_targets(index, exclude=excluded)
        faults: list[ScheduledFault] = []
        for kind, timing in FAULT_TIMING.items():
            start = origin + timing.first_offset_s + rng.uniform(0.0, jitter)
            duration = rng.uniform(timing.min_duration_s, timing.max_duration_s)
            gpu = rng.randrange(GPUS_PER_NODE) if timing.per_gpu else None
            start, duration = round(start, 3), round(duration, 3)
            if kind is FaultKind.LOOP_FLOW_DROP:
                if loop is not None:
                    name, members, _ = loop
                    lead = members[index % len(members)]  # listed under another node each round
                    faults.append(ScheduledFault(kind, start, duration, lead, None, members, name))
                continue
            node = coolant_node if kind is FaultKind.COOLANT_FLOW_DROP else targets[kind]
            if node is not None:
                faults.append(ScheduledFault(kind, start, duration, node, gpu))
        return tuple(faults)

    def _loop(self, index: int, coolant_node: str | None) -> Loop | None:
        """The loop whose CDU fails in round ``index``, in turn among those away from this round's single-node
        coolant fault (not in its rack, so that the two stay two faults) and from the last round's (so that its
        node cools down first); where the fleet is too small for that, as far away as it allows."""
        if not self.loops:
            return None
        last = self._coolant_node(index - 1)
        for fits in (
            lambda loop: coolant_node not in loop[2] and last not in loop[1],
            lambda loop: coolant_node not in loop[2],
            lambda loop: coolant_node not in loop[1],
        ):
            others = [loop for loop in self.loops if fits(loop)]
            if others:
                return others[index % len(others)]
        return self.loops[index % len(self.loops)]

    def _coolant_node(self, index: int) -> str | None:
        if index < 0 or not self.liquid_order:
            return None
        return self.liquid_order[index % len(self.liquid_order)]

    def _distinct_targets(self, index: int, exclude: set[str | None]) -> dict[FaultKind, str]:
        """Consecutive entries of the seeded order, skipping the coolant node: one round's faults do not pile
        onto one node (unless the fleet is smaller than a round) and each round moves on to other nodes."""
        count = len(self.order)
        picks: list[str] = []
        position = index * len(_NODE_KINDS)
        for _ in range(count + len(_NODE_KINDS)):
            candidate = self.order[position % count]
            position += 1
            if candidate not in exclude and candidate not in picks:
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
        loops=roster_loops(roster),
    )


def roster_loops(roster: Iterable[RosterEntry]) -> tuple[Loop, ...]:
    """The cooling loops of a roster: their nodes, in fleet order, and the nodes of the racks they are in."""
    loops: dict[str, list[str]] = {}
    racks: dict[str | None, set[str]] = {}
    rack_of: dict[str, str | None] = {}
    for entry in roster:
        rack_of[entry.node] = entry.topology.rack
        racks.setdefault(entry.topology.rack, set()).add(entry.node)
        if entry.topology.cooling_loop is not None:
            loops.setdefault(entry.topology.cooling_loop, []).append(entry.node)
    return tuple(
        (name, tuple(nodes), frozenset(n for node in nodes for n in racks[rack_of[node]]))
        for name, nodes in loops.items()
    )


def solo_plan(seed: int, anchor: float, node: str, cooling: Cooling) -> DemoPlan:
    """A demo node outside the built-in fleet (e.g. from an inventory) gets every fault itself."""
    return DemoPlan(
        seed=seed,
        anchor=anchor,
        order=(node,),
        liquid_order=(node,) if cooling is Cooling.LIQUID else (),
        period_s=_period(seed),
        loops=((f"{node}-loop", (node,), frozenset({node})),) if cooling is Cooling.LIQUID else (),
    )


# --- one node's faults --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActiveFaults:
    """The faults acting on one node at one moment, as the physics reads them (GPU sets hold GPU indexes)."""

    coolant_flow_drop: bool
    power_brake: bool
    lost: frozenset[int | None]
    crc_burst: frozenset[int | None]
    remap_pending: frozenset[int | None]  # Xid 63 has fired: a row waits for remapping


@dataclass(frozen=True, slots=True)
class _Instant:
    elapsed: float
    gpu: int | None
    code: int  # Xid number


class NodeFaults:
    """One node's share of a ``DemoPlan``, looked up round by round (a bounded cache of its rounds)."""

    __slots__ = ("_rounds", "node", "plan")

    def __init__(self, node: str, plan: DemoPlan) -> None:
        self.node = node
        self.plan = plan
        self._rounds: dict[int, tuple[ScheduledFault, ...]] = {}

    def faults_at(self, now: float) -> tuple[ScheduledFault, ...]:
        """This node's faults active at ``now`` (faults last less than a round, so two rounds suffice)."""
        elapsed = now - self.plan.anchor
        current = self.plan.round_of(elapsed)
        return tuple(f for r in (current - 1, current) for f in self._mine(r) if f.active(elapsed))

    def unreachable(self, now: float) -> bool:
        return any(f.kind is FaultKind.UNREACHABLE for f in self.faults_at(now))

    def active(self, now: float) -> ActiveFaults:
        elapsed = now - self.plan.anchor
        active = self.faults_at(now)
        kinds = {f.kind for f in active}
        return ActiveFaults(
            coolant_flow_drop=bool(kinds & _COOLANT_KINDS),
            power_brake=FaultKind.POWER_BRAKE in kinds,
            lost=frozenset(f.gpu_index for f in active if f.kind is FaultKind.GPU_LOST),
            crc_burst=frozenset(f.gpu_index for f in active if f.kind is FaultKind.NVLINK_CRC_BURST),
            remap_pending=frozenset(
                f.gpu_index
                for f in active
                if f.kind is FaultKind.ECC_ROW_REMAP and elapsed >= f.start_s + XID63_DELAY_S
            ),
        )

    def xid_events(self, gpus: Sequence[SimulatedGpu], after: float, upto: float, now: float) -> list[GpuEvent]:
        """The Xids whose moment falls in (``after``, ``upto``] seconds after the anchor, applied to their GPUs
        (``xid_last``, ECC and remap counters) and returned as events stamped no later than ``now``."""
        events: list[GpuEvent] = []
        for instant in self._instants(after, upto):
            if instant.gpu is None:
                continue
            gpu = gpus[instant.gpu]
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

    def _mine(self, round_index: int) -> tuple[ScheduledFault, ...]:
        if round_index not in self._rounds:
            if len(self._rounds) > 8:  # bounded: rounds are visited in time order
                self._rounds.clear()
            mine = tuple(f for f in self.plan.faults_in_round(round_index) if f.hits(self.node))
            self._rounds[round_index] = mine
        return self._rounds[round_index]

    def _instants(self, after: float, upto: float) -> list[_Instant]:
        """Xids whose moment falls in (after, upto], in time order."""
        found: list[_Instant] = []
        for r in range(self.plan.round_of(after) - 1, self.plan.round_of(upto) + 1):
            for fault in self._mine(r):
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
