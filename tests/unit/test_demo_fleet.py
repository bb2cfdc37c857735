"""The built-in demo fleet and its simulation: shape, physics over an hour, scripted faults, repeatability, and
the demo source's real timeout path through the poller."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time

import pytest

from console.config.fleet import Fleet, Node, SourceKind, SourceSpec
from console.demo.faults import FaultKind, ScheduledFault
from console.demo.fleet import DEMO_ORIGIN, build_demo_fleet
from console.demo.options import fault_schedule
from console.demo.simulation import NodeSimulation
from console.polling.poller import Poller
from console.samples.codec import sample_from_json, sample_to_json
from console.samples.results import PollFailure, PollResult, SourceError
from console.samples.schema import EventKind, NodeSample, ThrottleReason
from console.sources import make_source
from console.sources.base import SourceContext

ANCHOR = 1_750_000_000.0
SHUTDOWN_C = 95.0  # T.Limit 87 C + 8 C
POWER_TOLERANCE_W = 5.0  # nvidia-smi: readings are accurate to +-5 W


def value(reading: float | None) -> float:
    assert reading is not None
    return reading


def simulations(fleet: Fleet) -> dict[str, NodeSimulation]:
    return {n.name: NodeSimulation.for_spec(n.name, n.site, n.sources[0], 0.0) for n in fleet.nodes}


def simulation_of(fleet: Fleet, node: str) -> NodeSimulation:
    spec = next(n for n in fleet.nodes if n.name == node)
    return NodeSimulation.for_spec(spec.name, spec.site, spec.sources[0], 0.0)


def first(kind: FaultKind, seed: int = 0, nodes_per_site: int = 8) -> tuple[Fleet, ScheduledFault]:
    fleet = build_demo_fleet(seed=seed, nodes_per_site=nodes_per_site, anchor=ANCHOR)
    fault = next(f for f in fault_schedule(fleet, 600) if f.kind is kind)
    return fleet, fault


def run(sim: NodeSimulation, start_s: float, end_s: float) -> list[NodeSample]:
    """Step a node once per simulated second (no sleeping) from ``start_s`` to ``end_s`` after the anchor."""
    return [sim.sample(ANCHOR + t) for t in range(int(start_s), int(end_s))]


# --- shape --------------------------------------------------------------------------------------------------


def test_demo_fleet_has_several_providers_and_256_gpus() -> None:
    fleet = build_demo_fleet(seed=3, anchor=ANCHOR)
    assert fleet.is_demo
    assert fleet.origin == DEMO_ORIGIN
    assert len(fleet.sites) >= 3
    assert len({site.provider for site in fleet.sites}) == len(fleet.sites)
    assert {"aws", "onprem"} <= {site.provider for site in fleet.sites}
    assert len(fleet.nodes) >= 32
    assert len({node.name for node in fleet.nodes}) == len(fleet.nodes)
    for node in fleet.nodes:
        assert [spec.kind for spec in node.sources] == [SourceKind.DEMO]
        assert fleet.interval_s(node) == 1.0
        assert fleet.timeout_s(node) == 2.0
    samples = [sim.sample(ANCHOR) for sim in simulations(fleet).values()]
    assert sum(len(s.gpus) for s in samples) == 256
    uuids = [g.uuid for s in samples for g in s.gpus]
    assert len(set(uuids)) == 256
    assert all(u.startswith("GPU-") and len(u) == 40 for u in uuids)
    names = {g.name for s in samples for g in s.gpus}
    assert names == {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}
    assert {g.memory_total_mib for s in samples for g in s.gpus} == {81559.0, 143771.0}
    # One liquid-cooled site with a coolant loop; air-cooled nodes report chassis fans instead.
    liquid = [s for s in samples if s.chassis.coolant_flow_lpm is not None]
    air = [s for s in samples if s.chassis.coolant_flow_lpm is None]
    assert liquid
    assert air
    assert all(s.chassis.coolant_flow_rated_lpm == 30.0 and s.chassis.leak_detected is False for s in liquid)
    assert all(s.chassis.fans_rpm for s in air)


def test_nodes_per_site_scales_the_fleet() -> None:
    small = build_demo_fleet(nodes_per_site=2, anchor=ANCHOR)
    large = build_demo_fleet(nodes_per_site=30, anchor=ANCHOR)
    assert len(small.nodes) == 2 * len(small.sites)
    assert len(large.nodes) == 30 * len(large.sites)


def test_a_sample_survives_the_json_round_trip() -> None:
    fleet, fault = first(FaultKind.GPU_LOST)
    sim = simulation_of(fleet, fault.node)
    for sample in run(sim, fault.start_s - 2, fault.start_s + 2):
        assert sample_from_json(sample_to_json(sample)) == sample


# --- an hour of physics -------------------------------------------------------------------------------------


def _assert_physical_hour(nodes_per_site: int) -> set[str]:
    """Every GPU of the fleet, every second of an hour; returns what the faults visibly did."""
    fleet = build_demo_fleet(seed=7, nodes_per_site=nodes_per_site, anchor=ANCHOR)
    sims = simulations(fleet)
    seen: set[str] = set()
    previous: dict[str, tuple[float, int, int, int, bool]] = {}
    cooling_trouble: dict[str, int] = {}  # node -> last second its coolant flow was below 25 L/min
    for t in range(3600):
        now = ANCHOR + t
        for name, sim in sims.items():
            if sim.unreachable(now):
                seen.add("unreachable")
            sample = sim.sample(now)
            chassis = sample.chassis
            assert 20.0 <= chassis.inlet_c <= 27.0  # type: ignore[operator]
            assert chassis.power_w is not None
            if chassis.coolant_flow_lpm is not None:
                assert chassis.coolant_return_c > chassis.coolant_supply_c  # type: ignore[operator]
                assert chassis.coolant_flow_lpm > 0
                assert chassis.leak_detected is False
                if chassis.coolant_flow_lpm < 10:
                    seen.add("low flow")
                if chassis.coolant_flow_lpm < 25:
                    cooling_trouble[name] = t
            else:
                assert chassis.fans_rpm
                assert all(1500 < rpm < 20000 for rpm in chassis.fans_rpm)
            gpu_power = 0.0
            for gpu in sample.gpus:
                key = gpu.uuid
                if gpu.lost:
                    assert gpu.power_w is None
                    assert gpu.temperature_c is None
                    assert gpu.xid_last == 79
                    seen.add("lost")
                    previous.pop(key, None)  # it returns as after a reset: counters start over
                    continue
                assert gpu.utilization_pct is not None
                assert gpu.power_w is not None
                assert gpu.temperature_c is not None
                assert 0 <= gpu.utilization_pct <= 100
                assert 0 < gpu.power_w <= gpu.power_limit_w + POWER_TOLERANCE_W  # type: ignore[operator]
                assert 15 < gpu.temperature_c < SHUTDOWN_C
                assert gpu.memory_temperature_c is not None
                assert 15 < gpu.memory_temperature_c < SHUTDOWN_C
                assert gpu.thermal_margin_c == 87.0 - gpu.temperature_c
                assert gpu.fan_pct is None
                assert "fan_pct" in gpu.unsupported
                assert gpu.memory_used_mib is not None
                assert 0 <= gpu.memory_used_mib <= gpu.memory_total_mib  # type: ignore[operator]
                assert 300 <= gpu.sm_clock_mhz <= 1980  # type: ignore[operator]
                reasons = set(gpu.throttle_reasons)
                if ThrottleReason.HW_THERMAL_SLOWDOWN in reasons:
                    assert gpu.thermal_margin_c <= 0
                    seen.add("thermal")
                elif t - cooling_trouble.get(name, -1e9) > 240:
                    assert gpu.temperature_c <= 85  # away from a cooling fault, GPUs stay in the normal range
                if ThrottleReason.HW_POWER_BRAKE_SLOWDOWN in reasons:
                    assert ThrottleReason.HW_SLOWDOWN in reasons
                    seen.add("power brake")
                if ThrottleReason.SW_POWER_CAP in reasons:
                    seen.add("power cap")
                counters = (
                    gpu.energy_j,
                    gpu.ecc_dbe_volatile,
                    gpu.nvlink_crc_errors,
                    gpu.pcie_replays,
                    bool(gpu.remapped_rows_pending),
                )
                if key in previous:
                    before = previous[key]
                    assert counters[0] > before[0]  # type: ignore[operator]
                    assert counters[1] >= before[1]  # type: ignore[operator]
                    assert counters[2] >= before[2]  # type: ignore[operator]
                    assert counters[3] >= before[3]  # type: ignore[operator]
                    if counters[2] - before[2] >= 150:  # type: ignore[operator]
                        seen.add("crc burst")
                if gpu.remapped_rows_pending:
                    seen.add("remap pending")
                previous[key] = counters  # type: ignore[assignment]
                gpu_power += gpu.power_w
            assert chassis.power_w > gpu_power, name
    return seen


EVERY_FAULT_EFFECT = {
    "unreachable",
    "low flow",
    "lost",
    "thermal",
    "power brake",
    "power cap",
    "crc burst",
    "remap pending",
}


def test_an_hour_at_one_second_steps_stays_physical_for_every_gpu() -> None:
    # one node per site: every fault kind lands on these four nodes every round, so all paths are exercised
    assert _assert_physical_hour(nodes_per_site=1) == EVERY_FAULT_EFFECT


@pytest.mark.slow
def test_an_hour_of_the_full_256_gpu_fleet_stays_physical() -> None:
    assert _assert_physical_hour(nodes_per_site=8) == EVERY_FAULT_EFFECT


# --- the fault schedule -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 41])
def test_every_fault_kind_starts_within_a_minute_and_recurs_on_other_nodes(seed: int) -> None:
    fleet = build_demo_fleet(seed=seed, anchor=ANCHOR)
    schedule = fault_schedule(fleet, 3600)
    liquid = {n.name for n in fleet.nodes if dict(n.sources[0].options)["cooling"] == "liquid"}
    for kind in FaultKind:
        occurrences = [f for f in schedule if f.kind is kind]
        assert occurrences[0].start_s <= 60, kind
        assert len(occurrences) >= 10, kind  # every 4-5.5 minutes for an hour
        gaps = [b.start_s - a.start_s for a, b in itertools.pairwise(occurrences)]
        assert all(180 <= gap <= 420 for gap in gaps), (kind, gaps)
        assert all(a.node != b.node for a, b in itertools.pairwise(occurrences)), kind
        if kind is FaultKind.COOLANT_FLOW_DROP:
            assert {f.node for f in occurrences} <= liquid
    first_round = [f for f in schedule if f.start_s <= 60]
    assert len({f.node for f in first_round}) == len(FaultKind)  # one node each, not one unlucky node


def test_every_node_has_a_rack_and_feed_and_liquid_nodes_share_cooling_loops() -> None:
    fleet = build_demo_fleet(anchor=ANCHOR)
    assert all(node.topology.rack and node.topology.power_feed for node in fleet.nodes)
    liquid = {n.name for n in fleet.nodes if dict(n.sources[0].options)["cooling"] == "liquid"}
    loops: dict[str, set[str]] = {}
    for node in fleet.nodes:
        assert (node.topology.cooling_loop is not None) == (node.name in liquid)
        if node.topology.cooling_loop:
            loops.setdefault(node.topology.cooling_loop, set()).add(node.name)
    assert len(loops) >= 2 and all(len(members) >= 2 for members in loops.values())
    racks = {node.name: node.topology.rack for node in fleet.nodes}
    assert all(len({racks[n] for n in members}) == 1 for members in loops.values())  # a loop inside one rack
    assert len({racks[n] for n in liquid}) >= 2


@pytest.mark.parametrize("seed", [0, 1, 2, 41])
def test_a_loop_fault_drops_the_flow_on_every_node_of_its_loop_at_once(seed: int) -> None:
    fleet = build_demo_fleet(seed=seed, anchor=ANCHOR)
    by_name = {node.name: node for node in fleet.nodes}
    schedule = fault_schedule(fleet, 3600)
    for fault in (f for f in schedule if f.kind is FaultKind.LOOP_FLOW_DROP):
        loop = by_name[fault.node].topology.cooling_loop
        assert fault.scope_name == loop
        assert set(fault.nodes) == {n.name for n in fleet.nodes if n.topology.cooling_loop == loop}
        # the same round's single-node coolant fault is in another rack: two faults stay two
        same_round = [
            f for f in schedule if f.kind is FaultKind.COOLANT_FLOW_DROP and abs(f.start_s - fault.start_s) < 120
        ]
        racks = {by_name[n].topology.rack for n in fault.nodes}
        assert all(by_name[f.node].topology.rack not in racks for f in same_round)
    first = next(f for f in schedule if f.kind is FaultKind.LOOP_FLOW_DROP)
    rack = by_name[first.node].topology.rack
    neighbour = next(n.name for n in fleet.nodes if n.topology.rack == rack and n.name not in first.nodes)
    for name in (*first.nodes, neighbour):  # the loop's nodes lose their flow, their rack neighbour keeps it
        series = [s.chassis.coolant_flow_lpm for s in run(simulation_of(fleet, name), 0, first.start_s + 20)]
        assert value(series[int(first.start_s) - 1]) > 25
        assert (value(series[-1]) < 10) == (name in first.nodes), name


def test_the_coolant_flow_drop_drives_the_margin_to_zero_and_hw_thermal_slowdown() -> None:
    for seed in (0, 1, 2, 3):
        fleet, fault = first(FaultKind.COOLANT_FLOW_DROP, seed=seed)
        samples = run(simulation_of(fleet, fault.node), 0, fault.end_s + 180)
        before = samples[int(fault.start_s) - 1]
        assert value(before.chassis.coolant_flow_lpm) > 25
        during = samples[int(fault.start_s) + 5 : int(fault.end_s)]
        assert min(value(s.chassis.coolant_flow_lpm) for s in during) < 10
        hottest_return = max(value(s.chassis.coolant_return_c) for s in during)
        assert hottest_return > value(before.chassis.coolant_return_c) + 15
        slowed = [(s, g) for s in during for g in s.gpus if ThrottleReason.HW_THERMAL_SLOWDOWN in g.throttle_reasons]
        assert slowed, f"seed {seed}: no hw_thermal_slowdown during the coolant fault"
        for _sample, gpu in slowed:
            assert gpu.thermal_margin_c <= 0  # type: ignore[operator]
            assert ThrottleReason.HW_SLOWDOWN in gpu.throttle_reasons
            assert gpu.sm_clock_mhz < 1200  # type: ignore[operator]
            assert gpu.temperature_c < SHUTDOWN_C  # type: ignore[operator]
        assert not any(
            ThrottleReason.HW_THERMAL_SLOWDOWN in g.throttle_reasons
            for s in samples[: int(fault.start_s)]
            for g in s.gpus
        )
        # after the flow is restored the node cools down and the slowdown ends
        assert all(ThrottleReason.HW_THERMAL_SLOWDOWN not in g.throttle_reasons for g in samples[-1].gpus)


def test_xid_48_precedes_xid_63_on_the_same_gpu() -> None:
    fleet, fault = first(FaultKind.ECC_ROW_REMAP)
    samples = run(simulation_of(fleet, fault.node), 0, fault.end_s + 5)
    xids = [(s.time, e) for s in samples for e in s.events if e.kind is EventKind.XID]
    assert [e.code for _, e in xids] == [48, 63]
    (t48, e48), (t63, e63) = xids
    assert e48.gpu_uuid == e63.gpu_uuid
    assert e48.gpu_index == e63.gpu_index == fault.gpu_index
    assert 2 <= t63 - t48 <= 10
    dbe = [e for s in samples for e in s.events if e.kind is EventKind.ECC_DBE]
    assert len(dbe) == 1
    assert dbe[0].gpu_uuid == e48.gpu_uuid
    gpu_at = {s.time: s.gpus[fault.gpu_index] for s in samples}  # type: ignore[index]
    assert gpu_at[t48].ecc_dbe_volatile == gpu_at[t48 - 1].ecc_dbe_volatile + 1  # type: ignore[operator]
    assert gpu_at[t48].xid_last == 48
    assert gpu_at[t48].remapped_rows_pending is False
    assert gpu_at[t63].xid_last == 63
    assert gpu_at[t63].remapped_rows_pending is True
    assert samples[-1].gpus[fault.gpu_index].remapped_rows_pending is False  # type: ignore[index]


def test_xid_79_loses_one_gpu_which_comes_back_later() -> None:
    fleet, fault = first(FaultKind.GPU_LOST)
    samples = run(simulation_of(fleet, fault.node), 0, fault.end_s + 5)
    index = fault.gpu_index
    assert index is not None
    hit = next(s for s in samples if s.gpus[index].lost)
    gpu = hit.gpus[index]
    assert gpu.xid_last == 79
    assert gpu.power_w is None
    assert gpu.temperature_c is None
    assert gpu.utilization_pct is None
    assert gpu.uuid == samples[0].gpus[index].uuid  # still identified, so the UI knows which GPU is gone
    assert {(e.kind, e.code, e.gpu_uuid) for e in hit.events} == {
        (EventKind.XID, 79, gpu.uuid),
        (EventKind.GPU_LOST, None, gpu.uuid),
    }
    assert sum(1 for s in samples for e in s.events if e.kind is EventKind.GPU_LOST) == 1
    assert all(not g.lost for g in hit.gpus if g.index != index)
    back = samples[-1].gpus[index]
    assert not back.lost
    assert back.power_w is not None
    assert back.energy_j < samples[0].gpus[index].energy_j  # type: ignore[operator]  # reset, as after a reboot


def test_power_brake_slows_every_gpu_of_the_node_for_a_while() -> None:
    fleet, fault = first(FaultKind.POWER_BRAKE)
    samples = run(simulation_of(fleet, fault.node), fault.start_s - 5, fault.end_s + 5)
    braked = [s for s in samples if all(ThrottleReason.HW_POWER_BRAKE_SLOWDOWN in g.throttle_reasons for g in s.gpus)]
    assert 20 <= len(braked) <= 41
    for sample in braked:
        assert all(ThrottleReason.HW_SLOWDOWN in g.throttle_reasons for g in sample.gpus)
        assert all(g.sm_clock_mhz <= 700 for g in sample.gpus)  # type: ignore[operator]
    assert not any(ThrottleReason.HW_POWER_BRAKE_SLOWDOWN in g.throttle_reasons for g in samples[-1].gpus)


def test_an_nvlink_crc_burst_adds_hundreds_of_errors_per_second() -> None:
    fleet, fault = first(FaultKind.NVLINK_CRC_BURST)
    samples = run(simulation_of(fleet, fault.node), fault.start_s - 3, fault.end_s + 3)
    index = fault.gpu_index
    assert index is not None
    counts = [s.gpus[index].nvlink_crc_errors for s in samples]
    rates = [b - a for a, b in itertools.pairwise(counts)]  # type: ignore[operator]
    assert sum(1 for r in rates if r >= 100) >= 9
    assert rates[-1] < 10  # over after the burst
    others = [s.gpus[(index + 1) % 8].nvlink_crc_errors for s in samples]
    assert others[-1] - others[0] < 10  # type: ignore[operator]


# --- repeatability ------------------------------------------------------------------------------------------


def test_the_same_seed_and_times_give_identical_samples() -> None:
    fleet, fault = first(FaultKind.GPU_LOST, seed=11)
    times = [ANCHOR + t + (0.37 if t % 3 else 0.0) for t in range(0, int(fault.end_s) + 3)]
    one = simulation_of(fleet, fault.node)
    two = simulation_of(build_demo_fleet(seed=11, anchor=ANCHOR), fault.node)
    assert [one.sample(t) for t in times] == [two.sample(t) for t in times]


def test_different_seeds_place_faults_differently() -> None:
    placements = {
        seed: [(f.kind, f.node, f.gpu_index) for f in fault_schedule(build_demo_fleet(seed=seed, anchor=ANCHOR), 900)]
        for seed in (0, 1, 2)
    }
    assert placements[0] != placements[1]
    assert placements[1] != placements[2]
    samples = {
        seed: simulation_of(build_demo_fleet(seed=seed, anchor=ANCHOR), "p5-use1-001").sample(ANCHOR + 10)
        for seed in (0, 1)
    }
    assert samples[0].gpus[0].uuid == samples[1].gpus[0].uuid  # the hardware is the same
    assert samples[0] != samples[1]  # its workload is not


# --- the source ---------------------------------------------------------------------------------------------


def _context(fleet: Fleet, node_name: str, timeout_s: float = 2.0) -> SourceContext:
    node = next(n for n in fleet.nodes if n.name == node_name)
    return SourceContext(node=node, site=fleet.site(node.site), spec=node.sources[0], timeout_s=timeout_s)


def test_the_demo_source_does_not_answer_during_the_unreachable_fault() -> None:
    schedule_fleet, fault = first(FaultKind.UNREACHABLE)
    # anchor the fleet so that the wall clock is 5 s into the node's unreachable period
    fleet = build_demo_fleet(seed=0, anchor=time.time() - fault.start_s - 5.0)
    assert fault_schedule(fleet, 600) == fault_schedule(schedule_fleet, 600)
    healthy = next(n.name for n in fleet.nodes if n.name != fault.node)

    async def poll_both() -> NodeSample:
        silent = make_source(_context(fleet, fault.node))
        answering = make_source(_context(fleet, healthy))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(silent.poll(), 0.3)
        assert time.monotonic() - started < 2.0
        sample = await asyncio.wait_for(answering.poll(), 0.3)
        await silent.aclose()
        await answering.aclose()
        return sample

    sample = asyncio.run(poll_both())
    assert sample.node == healthy
    assert len(sample.gpus) == 8


def test_the_poller_reports_a_timeout_for_the_silent_node() -> None:
    _, fault = first(FaultKind.UNREACHABLE)
    fleet = build_demo_fleet(seed=0, anchor=time.time() - fault.start_s - 2.0)
    node = next(n for n in fleet.nodes if n.name == fault.node)
    site = dataclasses.replace(fleet.site(node.site), interval_s=0.2, timeout_s=0.3)
    one_node = Fleet(sites=(site,), nodes=(node,), is_demo=True, origin=fleet.origin)
    results: list[PollResult] = []
    arrived = threading.Event()

    def on_result(result: PollResult) -> None:
        results.append(result)
        arrived.set()

    poller = Poller(one_node, make_source, on_result, seed=1)
    poller.start()
    try:
        assert arrived.wait(5.0)
    finally:
        poller.stop()
    assert results[0].sample is None
    assert [f.failure for f in results[0].failures] == [PollFailure.TIMEOUT]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ((("model", "h300-sxm"),), "'model'"),
        ((("cooling", "oil"),), "'cooling'"),
        ((("seed", "one"),), "'seed'"),
        ((("anchor", "soon"),), "'anchor'"),
        ((("nodes_per_site", "0"),), "'nodes_per_site'"),
        ((("profile", "fast"),), "unknown ['profile']"),
    ],
)
def test_a_bad_demo_option_is_named_in_the_error(options: tuple[tuple[str, str], ...], named: str) -> None:
    fleet = build_demo_fleet(anchor=ANCHOR)
    node = Node(name="lab-01", site=fleet.sites[0].name, sources=(SourceSpec(SourceKind.DEMO, options=options),))
    ctx = SourceContext(node=node, site=fleet.sites[0], spec=node.sources[0], timeout_s=2.0)
    with pytest.raises(SourceError) as caught:
        make_source(ctx)
    assert caught.value.failure is PollFailure.BAD_PAYLOAD
    assert named in caught.value.reason


def test_a_demo_node_from_an_inventory_gets_its_own_faults() -> None:
    fleet = build_demo_fleet(anchor=ANCHOR)
    spec = SourceSpec(SourceKind.DEMO, options=(("cooling", "liquid"), ("seed", "5"), ("anchor", repr(ANCHOR))))
    node = Node(name="lab-01", site=fleet.sites[0].name, sources=(spec,))
    lab = Fleet(sites=fleet.sites[:1], nodes=(node,), is_demo=False, origin="lab.toml")
    schedule = fault_schedule(lab, 90)
    assert {f.kind for f in schedule} == set(FaultKind)
    assert {f.node for f in schedule} == {"lab-01"}
    sample = NodeSimulation.for_spec("lab-01", node.site, spec, 0.0).sample(ANCHOR + 1)
    assert sample.chassis.coolant_flow_lpm is not None
