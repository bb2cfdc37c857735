"""`gpu-console simulate`: the real console script in a subprocess, read by the real sources."""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from console.config.fleet import Node, Site, SourceKind, SourceSpec
from console.config.inventory import parse_inventory
from console.demo.faults import FaultKind
from console.demo.fleet import Cooling
from console.demo.server import SimulatorConfig, SimulatorServer, parse_faults, simulated_roster
from console.samples.results import PollFailure, SourceError
from console.samples.schema import NodeSample
from console.sources import make_source
from console.sources.base import SourceContext
from console.sources.dcgm.source import parse_dcgm_payload

CONSOLE = Path(sys.executable).with_name("gpu-console")
READY = re.compile(r"at (http://\S+?)/? ")


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    process: subprocess.Popen[str]
    url: str


@contextmanager
def running_simulator(*args: str, ready_within_s: float = 20.0) -> Iterator[RunningSimulator]:
    """`gpu-console simulate ARGS` on a free loopback port; stopped (SIGTERM, then kill) at the end."""
    command = [str(CONSOLE), "simulate", "--listen", "127.0.0.1:0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield RunningSimulator(process, _wait_ready(process, ready_within_s))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def _wait_ready(process: subprocess.Popen[str], within_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.2)
        if readable:
            line = process.stdout.readline()
            match = READY.search(line)
            if match:
                return match.group(1)
        if process.poll() is not None:
            break
    process.kill()
    _out, err = process.communicate(timeout=5)
    pytest.fail(f"gpu-console simulate did not become ready: {err[-2000:]}")


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


async def poll_once(kind: SourceKind, url: str, node: str = "n", site: str = "s") -> NodeSample:
    spec = SourceSpec(kind, url=url)
    async with aiohttp.ClientSession() as http:
        ctx = SourceContext(Node(node, site, (spec,)), Site(site, "p"), spec, timeout_s=5.0, http=http)
        source = make_source(ctx)
        try:
            return await source.poll()
        finally:
            await source.aclose()


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    with running_simulator("--nodes", "6", "--faults", "none", "--redfish", "--duration", "120") as running:
        yield running


def test_targets_list_every_node_with_its_urls(simulator: RunningSimulator) -> None:
    rows = json.loads(get(f"{simulator.url}/targets"))
    assert [row["node"] for row in rows] == [entry.node for entry in simulated_roster(6)]
    assert len({row["site"] for row in rows}) == 4  # spread over the demo sites
    for row in rows:
        assert row["metrics_url"] == f"{simulator.url}/nodes/{row['node']}/metrics"
        assert row["redfish_url"] == f"{simulator.url}/nodes/{row['node']}/redfish/v1"
    groups = json.loads(get(f"{simulator.url}/prometheus/targets"))
    assert {g["labels"]["__metrics_path__"] for g in groups} == {f"/nodes/{r['node']}/metrics" for r in rows}


def test_node_metrics_parse_into_eight_gpus_with_physical_values(simulator: RunningSimulator) -> None:
    text = get(f"{simulator.url}/nodes/p5-use1-001/metrics").decode()
    sample = parse_dcgm_payload(text, "p5-use1-001", "aws-use1", time.time())
    assert len(sample.gpus) == 8
    assert len({gpu.uuid for gpu in sample.gpus}) == 8
    for gpu in sample.gpus:
        assert gpu.name == "NVIDIA H100 80GB HBM3"
        assert gpu.power_w is not None and 50.0 <= gpu.power_w <= 710.0
        assert gpu.temperature_c is not None and 20.0 <= gpu.temperature_c <= 95.0
        assert gpu.utilization_pct is not None and 0.0 <= gpu.utilization_pct <= 100.0
        assert gpu.memory_total_mib == pytest.approx(81559.0)
        assert gpu.energy_j is not None and gpu.energy_j > 0
        assert gpu.fan_pct is None  # SXM parts have no fan of their own: no value, never 0


def test_a_node_payload_is_cached_within_a_second_and_moves_on_after(simulator: RunningSimulator) -> None:
    url = f"{simulator.url}/nodes/cw-ord1-001/metrics"
    while time.time() % 1.0 > 0.6:  # both requests in the same wall-clock second
        time.sleep(0.05)
    assert get(url) == get(url)
    first = parse_dcgm_payload(get(url).decode(), "n", "s", 0.0)
    time.sleep(1.1)
    later = parse_dcgm_payload(get(url).decode(), "n", "s", 0.0)
    energy = [(a.energy_j or 0.0, b.energy_j or 0.0) for a, b in zip(first.gpus, later.gpus, strict=True)]
    assert all(after > before for before, after in energy)  # the energy counter keeps counting


def test_unknown_node_is_404(simulator: RunningSimulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        get(f"{simulator.url}/nodes/no-such-node/metrics")
    caught.value.close()  # an HTTPError holds the response and its socket
    assert caught.value.code == 404


def test_inventory_loads_and_its_dcgm_sources_poll(simulator: RunningSimulator) -> None:
    fleet = parse_inventory(get(f"{simulator.url}/inventory.toml").decode(), "simulate")
    assert len(fleet.nodes) == 6
    node = fleet.nodes[0]
    assert [spec.kind for spec in node.sources] == [SourceKind.DCGM, SourceKind.REDFISH]
    sample = asyncio.run(poll_once(SourceKind.DCGM, node.sources[0].url or "", node.name, node.site))
    assert len(sample.gpus) == 8


def test_the_inventory_carries_the_demo_topology() -> None:
    with running_simulator("--nodes", "8", "--faults", "none", "--duration", "60") as running:
        fleet = parse_inventory(get(f"{running.url}/inventory.toml").decode(), "simulate")
    by_name = {node.name: node.topology for node in fleet.nodes}
    assert all(topology.rack and topology.power_feed for topology in by_name.values())
    liquid = [name for name, e in {e.node: e for e in simulated_roster(8)}.items() if e.site.cooling is Cooling.LIQUID]
    assert len(liquid) == 2
    assert {by_name[name].cooling_loop for name in liquid} == {"onprem-dgx-a-cdu-1"}  # one loop, both nodes
    assert all(by_name[name].cooling_loop is None for name in by_name if name not in liquid)


def test_a_loop_fault_reaches_every_node_of_its_loop() -> None:
    config = SimulatorConfig(nodes=8, faults=parse_faults("loop_flow_drop"), anchor=0.0)
    server = SimulatorServer(config)
    fault = next(iter(server.nodes.values())).simulation.plan.schedule(600.0)[0]
    assert fault.kind is FaultKind.LOOP_FLOW_DROP and len(fault.nodes) == 2
    flows: dict[str, float | None] = {}
    for name, node in server.nodes.items():  # one step a second, as when polled, up to 20 s into the fault
        for t in range(int(fault.start_s) - 5, int(fault.start_s) + 21):
            flows[name] = node.sample(float(t)).chassis.coolant_flow_lpm
    assert all(flows[name] is not None and flows[name] < 10.0 for name in fault.nodes)  # type: ignore[operator]
    assert all(flow is None or flow > 20.0 for name, flow in flows.items() if name not in fault.nodes)


def test_redfish_bmc_reads_through_the_redfish_source(simulator: RunningSimulator) -> None:
    rows = {row["node"]: row for row in json.loads(get(f"{simulator.url}/targets"))}
    roster = {entry.node: entry for entry in simulated_roster(6)}
    air = next(name for name, e in roster.items() if e.site.cooling is Cooling.AIR)
    liquid = next(name for name, e in roster.items() if e.site.cooling is Cooling.LIQUID)

    air_chassis = asyncio.run(poll_once(SourceKind.REDFISH, rows[air]["redfish_url"])).chassis
    assert air_chassis.inlet_c is not None and 18.0 <= air_chassis.inlet_c <= 28.0
    assert air_chassis.exhaust_c is not None and air_chassis.exhaust_c > air_chassis.inlet_c
    assert air_chassis.fans_rpm is not None and len(air_chassis.fans_rpm) == 10
    assert all(3000.0 <= rpm <= 16000.0 for rpm in air_chassis.fans_rpm)
    assert air_chassis.power_w is not None and 1400.0 <= air_chassis.power_w <= 9000.0

    wet = asyncio.run(poll_once(SourceKind.REDFISH, rows[liquid]["redfish_url"])).chassis
    assert wet.coolant_flow_lpm is not None and 20.0 <= wet.coolant_flow_lpm <= 35.0
    assert wet.coolant_flow_rated_lpm == 30.0
    assert wet.coolant_supply_c is not None and wet.coolant_return_c is not None
    assert wet.coolant_return_c > wet.coolant_supply_c
    assert wet.power_w is not None and wet.power_w >= 1400.0
    assert wet.inlet_c is not None


def test_it_ends_by_itself_after_duration() -> None:
    with running_simulator("--nodes", "2", "--duration", "1.5") as running:
        started = time.monotonic()
        assert running.process.wait(15) == 0
        assert time.monotonic() - started < 10.0


def test_sigterm_ends_it_cleanly() -> None:
    with running_simulator("--nodes", "3") as running:
        get(f"{running.url}/nodes/p5-use1-001/metrics")
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(10) == 0
        assert running.process.stderr is not None
        assert "Traceback" not in running.process.stderr.read()


def test_bad_arguments_exit_2_with_a_specific_message() -> None:
    for args, expected in (
        (["--nodes", "3", "--faults", "power_brake,meteor"], "'meteor'"),
        (["--nodes", "0"], "--nodes must be >= 1"),
        (["--nodes", "2", "--gpus-per-node", "9"], "--gpus-per-node must be 1-8"),
        (["--nodes", "2", "--listen", "nowhere"], "HOST:PORT"),
    ):
        result = subprocess.run([str(CONSOLE), "simulate", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr


def test_gpus_per_node_and_fault_selection() -> None:
    assert parse_faults("none") == frozenset()
    assert parse_faults("all") == frozenset(FaultKind)
    config = SimulatorConfig(nodes=8, gpus_per_node=4, faults=parse_faults("gpu_lost,power_brake"), anchor=0.0)
    server = SimulatorServer(config)
    node = server.nodes["p5-use1-001"]
    assert len(node.sample(1000.0).gpus) == 4
    plan = node.simulation.plan
    kinds = {fault.kind for fault in plan.schedule(3600.0)}
    assert kinds == {FaultKind.GPU_LOST, FaultKind.POWER_BRAKE}
    assert {fault.node for fault in plan.schedule(3600.0)} <= set(server.nodes)


def test_a_node_in_the_unreachable_fault_hangs_while_the_others_answer() -> None:
    probe = SimulatorServer(SimulatorConfig(nodes=8, faults=frozenset({FaultKind.UNREACHABLE}), anchor=0.0))
    fault = next(iter(probe.nodes.values())).simulation.plan.schedule(600.0)[0]
    # anchor the schedule so that the fault is 5 s into its run now
    config = SimulatorConfig(nodes=8, faults=frozenset({FaultKind.UNREACHABLE}), anchor=time.time() - fault.start_s - 5)

    async def scenario() -> None:
        server = SimulatorServer(config)
        url = await server.start()
        try:
            healthy = next(name for name in server.nodes if name != fault.node)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http:
                async with http.get(f"{url}/nodes/{healthy}/metrics") as response:
                    assert response.status == 200
                with pytest.raises(TimeoutError):
                    async with http.get(f"{url}/nodes/{fault.node}/metrics") as response:
                        await response.read()
            spec = SourceSpec(SourceKind.DCGM, url=f"{url}/nodes/{fault.node}/metrics")
            async with aiohttp.ClientSession() as http:
                ctx = SourceContext(Node(fault.node, "s", (spec,)), Site("s", "p"), spec, 1.0, http)
                source = make_source(ctx)
                with pytest.raises(SourceError) as caught:
                    await source.poll()
            assert caught.value.failure is PollFailure.TIMEOUT
        finally:
            await server.close()

    asyncio.run(scenario())
