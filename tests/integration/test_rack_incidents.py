"""One incident per fault, end to end: the simulator server serves a cooling loop's CDU failure over HTTP (dcgm-
exporter text and a Redfish BMC per node), the real poller reads it through the real dcgm and redfish sources, and
the incident engine makes it ONE cooling-loop incident with every per-node incident and symptom beneath it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from console.config.fleet import Fleet
from console.demo.faults import FaultKind, ScheduledFault
from console.demo.server import SimulatorConfig, SimulatorServer, simulated_roster, simulation_plan
from console.incidents.engine import IncidentEngine
from console.incidents.model import Incident, IncidentChange, Scope
from console.incidents.rules import load_rules
from console.polling.poller import Poller
from console.samples.results import PollResult
from console.sources import make_source

pytestmark = pytest.mark.slow

NODES = 8  # two per demo site: the liquid-cooled site's two share cooling loop "onprem-dgx-a-cdu-1"
LEAD_S = 3.0  # the CDU fails this long after the server starts
WAIT_S = 90.0  # the GPUs run out of thermal margin ~40 s into the fault


@contextmanager
def serving(config: SimulatorConfig) -> Iterator[SimulatorServer]:
    """The simulator server on a free loopback port, in a thread with its own event loop."""
    server = SimulatorServer(config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    thread = threading.Thread(target=run, name="simulator", daemon=True)
    thread.start()
    assert ready.wait(10), "the simulator server did not start"
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _loop_fault(config: SimulatorConfig) -> ScheduledFault:
    plan = simulation_plan(config, simulated_roster(config.nodes), anchor=0.0)
    return next(f for f in plan.faults_in_round(0) if f.kind is FaultKind.LOOP_FLOW_DROP)


def _latest(changes: list[IncidentChange]) -> dict[str, Incident]:
    out: dict[str, Incident] = {}
    for change in changes:
        out[change.incident.id] = change.incident
    return out


def _root(incidents: dict[str, Incident], incident: Incident) -> Incident:
    while incident.parent_id is not None:
        incident = incidents[incident.parent_id]
    return incident


def test_a_loop_wide_coolant_flow_drop_is_one_loop_incident_over_its_nodes_and_symptoms() -> None:
    faults = frozenset({FaultKind.LOOP_FLOW_DROP})
    fault = _loop_fault(SimulatorConfig(nodes=NODES, faults=faults))
    config = SimulatorConfig(nodes=NODES, faults=faults, redfish=True, anchor=time.time() + LEAD_S - fault.start_s)
    with serving(config) as server:
        fleet: Fleet = server.fleet(server.url)
        members = fault.nodes
        assert len(members) == 2
        assert {n.topology.cooling_loop for n in fleet.nodes if n.name in members} == {fault.scope_name}
        engine = IncidentEngine(load_rules(), fleet)
        lock = threading.Lock()
        changes: list[IncidentChange] = []

        def on_result(result: PollResult) -> None:
            with lock:
                changes.extend(engine.observe(result))

        def done() -> bool:
            incidents = _latest(changes)
            thermal = {i.context.node for i in incidents.values() if i.context.gpu_uuid and i.kind == "thermal"}
            return set(members) <= thermal and any(i.scope is Scope.COOLING_LOOP for i in incidents.values())

        poller = Poller(fleet, make_source, on_result, seed=1)
        poller.start()
        try:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                time.sleep(0.5)
                with lock:
                    changes.extend(engine.tick(time.time()))
                    if done():
                        break
        finally:
            poller.stop()
    incidents = _latest(changes)
    [loop] = [i for i in incidents.values() if i.scope is Scope.COOLING_LOOP]
    assert (loop.rule, loop.scope_name, loop.nodes) == ("shared_cooling", fault.scope_name, members)
    assert loop.parent_id is None and loop.kind == "cooling"
    on_members = [i for i in incidents.values() if i.context.node in members and i is not loop]
    assert {i.rule for i in on_members} >= {"coolant_flow_low", "thermal_margin"}
    for incident in on_members:  # every per-node incident and symptom is beneath the loop's incident
        assert _root(incidents, incident) is loop, (incident.rule, incident.context.node, incident.title)
    causes = [i for i in incidents.values() if i.parent_id == loop.id]
    assert sorted(i.context.node for i in causes) == sorted(members)
    assert {i.rule for i in causes} == {"coolant_flow_low"}
    assert loop.severity == max(i.severity for i in causes)
    symptoms = [i for i in on_members if i.context.gpu_uuid is not None]
    assert symptoms and all(incidents[i.parent_id].rule == "coolant_flow_low" for i in symptoms if i.parent_id)
    # no other cooling incident in the fleet, and no other root on the loop's nodes (elsewhere a healthy link's
    # stray CRC error may open an incident of its own)
    others = [i for i in incidents.values() if i.parent_id is None and i is not loop]
    assert not [i for i in others if i.kind in ("cooling", "thermal") or i.context.node in members]
