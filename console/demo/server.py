"""``gpu-console simulate``: many simulated demo nodes served as dcgm-exporter endpoints on one port.

Routes (``<name>`` is a node name such as ``p5-use1-001``):
    GET /nodes/<name>/metrics          dcgm-exporter text (``console.sources.dcgm.render``)
    GET /nodes/<name>/redfish/v1/...   with ``redfish``: a minimal BMC (service root, one Chassis, and either
                                       legacy Thermal/Power (air-cooled nodes) or ThermalSubsystem with a
                                       coolant connector plus EnvironmentMetrics (liquid-cooled nodes))
    GET /targets                       the nodes and their URLs (JSON)
    GET /prometheus/targets            the same in Prometheus' http_sd/file_sd shape (``__metrics_path__``
                                       per node, ``instance`` = node name), so Prometheus can scrape them all
    GET /inventory.toml                a fleet inventory (``console.config.inventory``) with one dcgm source per node

Nodes behave like the demo fleet (``console.demo.simulation.NodeSimulation``, its fault schedule and physics).
Cost is what matters at 1,000 nodes a second on two cores: a node's simulation steps only when the node is
asked for, at most once per wall-clock second, and the rendered payload of that second is cached and served
to every later request in the same second. A node in the scripted "unreachable" fault holds its requests
until the fault ends (as a hung host does), so clients see real timeouts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.demo.faults import DemoPlan, FaultKind, ScheduledFault, fleet_plan, roster_loops
from console.demo.fleet import DEMO_INTERVAL_S, DEMO_SITES, DEMO_TIMEOUT_S, RosterEntry, demo_roster
from console.demo.physics import GPUS_PER_NODE
from console.demo.simulation import NodeSimulation
from console.samples.schema import ChassisSample, Health, NodeSample
from console.sources.dcgm.render import render_dcgm_exposition

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HANG_S = 300.0  # an unreachable node holds a request at most this long (faults last 30-60 s)
_REDFISH_HEALTH = {Health.OK: "OK", Health.WARNING: "Warning", Health.CRITICAL: "Critical"}


class SimulatorConfigError(ValueError):
    """A setting ``simulate`` refuses; the message says what to change."""


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    nodes: int
    gpus_per_node: int = GPUS_PER_NODE
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (the ready line says which)
    faults: frozenset[FaultKind] = frozenset(FaultKind)
    seed: int = 0
    redfish: bool = False
    anchor: float | None = None  # when the fault schedule starts; None: when the server starts
    refresh_s: float = 1.0  # how often a node's values change (dcgm-exporter's -c; it defaults to 30 s)


def parse_faults(text: str) -> frozenset[FaultKind]:
    """``all``, ``none`` or a comma-separated list of fault kinds (``power_brake,gpu_lost``)."""
    words = [word.strip() for word in text.split(",") if word.strip()]
    if words == ["all"]:
        return frozenset(FaultKind)
    if words == ["none"]:
        return frozenset()
    known = {str(kind): kind for kind in FaultKind}
    unknown = [word for word in words if word not in known]
    if unknown or not words:
        raise SimulatorConfigError(
            f"--faults: unknown {', '.join(map(repr, unknown)) or 'empty list'} "
            f"(expected all, none or a comma-separated list of: {', '.join(known)})"
        )
    return frozenset(known[word] for word in words)


def validate_config(config: SimulatorConfig) -> None:
    if config.nodes < 1:
        raise SimulatorConfigError(f"--nodes must be >= 1, got {config.nodes}")
    if not 1 <= config.gpus_per_node <= GPUS_PER_NODE:
        raise SimulatorConfigError(
            f"--gpus-per-node must be 1-{GPUS_PER_NODE} (the demo baseboard has {GPUS_PER_NODE}), "
            f"got {config.gpus_per_node}"
        )
    if not (math.isfinite(config.refresh_s) and config.refresh_s >= 1.0):
        raise SimulatorConfigError(f"--refresh must be >= 1 second, got {config.refresh_s}")
    if not 0 <= config.port <= 65535:
        raise SimulatorConfigError(f"port must be 0-65535, got {config.port}")


def simulated_roster(count: int) -> tuple[RosterEntry, ...]:
    """``count`` demo nodes spread evenly over the demo sites (site order, numbers from 001)."""
    sites = len(DEMO_SITES)
    per_site = math.ceil(count / sites)
    quota = {site.name: count // sites + (1 if i < count % sites else 0) for i, site in enumerate(DEMO_SITES)}
    taken: dict[str, int] = dict.fromkeys(quota, 0)
    chosen = []
    for entry in demo_roster(per_site):
        if taken[entry.site.name] < quota[entry.site.name]:
            taken[entry.site.name] += 1
            chosen.append(entry)
    return tuple(chosen)


@dataclass(frozen=True, slots=True)
class KindFilteredPlan(DemoPlan):
    """The demo schedule with only the chosen fault kinds (``--faults``)."""

    kinds: frozenset[FaultKind] = frozenset(FaultKind)

    def faults_in_round(self, index: int) -> tuple[ScheduledFault, ...]:
        # explicit base call: zero-argument super() breaks in slots dataclasses on Python 3.11
        return tuple(f for f in DemoPlan.faults_in_round(self, index) if f.kind in self.kinds)


def simulation_plan(config: SimulatorConfig, roster: Iterable[RosterEntry], anchor: float) -> DemoPlan:
    """The demo fleet's seeded order and period, restricted to the served nodes and the chosen kinds."""
    entries = tuple(roster)
    served = {entry.node for entry in entries}
    base = fleet_plan(config.seed, anchor, math.ceil(len(entries) / len(DEMO_SITES)))
    return KindFilteredPlan(
        seed=base.seed,
        anchor=base.anchor,
        order=tuple(node for node in base.order if node in served),
        liquid_order=tuple(node for node in base.liquid_order if node in served),
        period_s=base.period_s,
        loops=roster_loops(entries),
        kinds=config.faults,
    )


class SimulatedNode:
    """One node: steps its simulation lazily, at most once per refresh period, and caches what it serves."""

    def __init__(self, entry: RosterEntry, plan: DemoPlan, gpus: int, refresh_s: float = 1.0) -> None:
        self.name = entry.node
        self.site = entry.site.name
        self.cooling = entry.site.cooling
        self.simulation = NodeSimulation(entry.node, entry.site.name, entry.site.model, entry.site.cooling, plan)
        self._gpus = gpus
        self._refresh_s = refresh_s
        # each node refreshes at its own phase, so a large fleet's work spreads over the period
        self._phase = (zlib.crc32(entry.node.encode()) % 1000) / 1000.0 * refresh_s if refresh_s > 1.0 else 0.0
        self._second: int | None = None
        self._sample: NodeSample | None = None
        self._payload: bytes | None = None
        self._redfish: dict[str, bytes] = {}

    def sample(self, now: float) -> NodeSample:
        second = math.floor((now + self._phase) / self._refresh_s)
        if self._sample is None or second != self._second:
            sample = self.simulation.sample(now)
            if self._gpus < len(sample.gpus):
                kept = sample.gpus[: self._gpus]
                uuids = {gpu.uuid for gpu in kept}
                events = tuple(e for e in sample.events if e.gpu_uuid is None or e.gpu_uuid in uuids)
                sample = dataclasses.replace(sample, gpus=kept, events=events)
            self._second, self._sample = second, sample
            self._payload = None
            self._redfish = {}
        return self._sample

    def metrics(self, now: float) -> bytes:
        sample = self.sample(now)
        if self._payload is None:
            self._payload = render_dcgm_exposition([sample]).encode("utf-8")
        return self._payload

    def redfish(self, service_path: str, prefix: str, now: float) -> bytes | None:
        """The Redfish resource at ``service_path`` (``/redfish/v1/...``), or None if there is none."""
        chassis = self.sample(now).chassis
        cached = self._redfish.get(service_path)
        if cached is None:
            document = redfish_document(service_path, prefix, chassis, self.cooling == "liquid")
            if document is None:
                return None
            cached = self._redfish[service_path] = json.dumps(document, separators=(",", ":")).encode()
        return cached

    def unreachable_for(self, now: float) -> float:
        """Seconds left of a scripted "stops answering" fault (0 when the node answers)."""
        elapsed = now - self.simulation.plan.anchor
        ends = [f.end_s for f in self.simulation.faults_at(now) if f.kind is FaultKind.UNREACHABLE]
        return max(0.0, max(ends) - elapsed) if ends else 0.0


# --- Redfish documents --------------------------------------------------------------------------------------


def _link(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def _reading(value: float | None) -> dict[str, float | None]:
    return {"Reading": value}


def _status(health: Health | None) -> dict[str, str]:
    return {"State": "Enabled", "Health": _REDFISH_HEALTH.get(health, "OK") if health else "OK"}


def redfish_document(path: str, prefix: str, ch: ChassisSample, liquid: bool) -> dict[str, Any] | None:
    """A minimal, schema-shaped tree: what ``console.sources.redfish.source`` needs to fill a ``ChassisSample``."""
    root = f"{prefix}/redfish/v1"
    chassis = f"{root}/Chassis/1"
    path = path.rstrip("/") or "/"
    if path == "/redfish/v1":
        return {
            "@odata.id": root,
            "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService",
            "Name": "Simulated BMC",
            "RedfishVersion": "1.17.0",
            "Chassis": _link(f"{root}/Chassis"),
        }
    if path == "/redfish/v1/Chassis":
        return {
            "@odata.id": f"{root}/Chassis",
            "@odata.type": "#ChassisCollection.ChassisCollection",
            "Members": [_link(chassis)],
            "Members@odata.count": 1,
        }
    if path == "/redfish/v1/Chassis/1":
        document: dict[str, Any] = {
            "@odata.id": chassis,
            "@odata.type": "#Chassis.v1_25_0.Chassis",
            "Id": "1",
            "Name": "GPU baseboard chassis",
            "ChassisType": "RackMount",
            "Status": _status(ch.health),
        }
        if liquid:
            document["ThermalSubsystem"] = _link(f"{chassis}/ThermalSubsystem")
            document["EnvironmentMetrics"] = _link(f"{chassis}/EnvironmentMetrics")
        else:
            document["Thermal"] = _link(f"{chassis}/Thermal")
            document["Power"] = _link(f"{chassis}/Power")
        return document
    documents = _liquid_documents(chassis, ch) if liquid else _air_documents(chassis, ch)
    return documents.get(path.removeprefix("/redfish/v1/Chassis/1/"))


def _air_documents(chassis: str, ch: ChassisSample) -> dict[str, dict[str, Any]]:
    fans = [
        {
            "MemberId": str(i),
            "Name": f"Fan {i + 1}",
            "Reading": rpm,
            "ReadingUnits": "RPM",
            "LowerThresholdCritical": ch.fans_min_rpm,
            "Status": _status(Health.OK),
        }
        for i, rpm in enumerate(ch.fans_rpm or ())
    ]
    return {
        "Thermal": {
            "@odata.id": f"{chassis}/Thermal",
            "@odata.type": "#Thermal.v1_7_0.Thermal",
            "Temperatures": [
                {"Name": "Inlet Temp", "PhysicalContext": "Intake", "ReadingCelsius": ch.inlet_c},
                {"Name": "Exhaust Temp", "PhysicalContext": "Exhaust", "ReadingCelsius": ch.exhaust_c},
            ],
            "Fans": fans,
        },
        "Power": {
            "@odata.id": f"{chassis}/Power",
            "@odata.type": "#Power.v1_7_0.Power",
            "PowerControl": [{"MemberId": "0", "Name": "Chassis power", "PowerConsumedWatts": ch.power_w}],
            "PowerSupplies": [
                {"MemberId": str(i), "Name": f"PSU {i + 1}", "Status": _status(ch.psu_health)} for i in range(6)
            ],
        },
    }


def _liquid_documents(chassis: str, ch: ChassisSample) -> dict[str, dict[str, Any]]:
    thermal = f"{chassis}/ThermalSubsystem"
    connectors = f"{thermal}/CoolantConnectors"
    return {
        "ThermalSubsystem": {
            "@odata.id": thermal,
            "@odata.type": "#ThermalSubsystem.v1_3_0.ThermalSubsystem",
            "ThermalMetrics": _link(f"{thermal}/ThermalMetrics"),
            "CoolantConnectors": _link(connectors),
        },
        "ThermalSubsystem/ThermalMetrics": {
            "@odata.id": f"{thermal}/ThermalMetrics",
            "@odata.type": "#ThermalMetrics.v1_3_0.ThermalMetrics",
            "TemperatureSummaryCelsius": {"Intake": _reading(ch.inlet_c), "Exhaust": _reading(ch.exhaust_c)},
        },
        "ThermalSubsystem/CoolantConnectors": {
            "@odata.id": connectors,
            "@odata.type": "#CoolantConnectorCollection.CoolantConnectorCollection",
            "Members": [_link(f"{connectors}/ColdPlateLoop")],
            "Members@odata.count": 1,
        },
        "ThermalSubsystem/CoolantConnectors/ColdPlateLoop": {
            "@odata.id": f"{connectors}/ColdPlateLoop",
            "@odata.type": "#CoolantConnector.v1_1_0.CoolantConnector",
            "Id": "ColdPlateLoop",
            "SupplyTemperatureCelsius": _reading(ch.coolant_supply_c),
            "ReturnTemperatureCelsius": _reading(ch.coolant_return_c),
            "FlowLitersPerMinute": _reading(ch.coolant_flow_lpm),
            "RatedFlowLitersPerMinute": ch.coolant_flow_rated_lpm,
            "Status": _status(ch.pump_health),
        },
        "EnvironmentMetrics": {
            "@odata.id": f"{chassis}/EnvironmentMetrics",
            "@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
            "PowerWatts": _reading(ch.power_w),
        },
    }


# --- the server ---------------------------------------------------------------------------------------------


class SimulatorServer:
    """The aiohttp application around the simulated nodes. ``await start()``, then ``await close()``."""

    def __init__(self, config: SimulatorConfig) -> None:
        validate_config(config)
        self.config = config
        self.roster = simulated_roster(config.nodes)
        anchor = time.time() if config.anchor is None else config.anchor
        plan = simulation_plan(config, self.roster, anchor)
        self.nodes = {
            entry.node: SimulatedNode(entry, plan, config.gpus_per_node, config.refresh_s) for entry in self.roster
        }
        self._runner: web.AppRunner | None = None
        self.url = ""

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/targets", self._targets)
        app.router.add_get("/prometheus/targets", self._prometheus_targets)
        app.router.add_get("/inventory.toml", self._inventory)
        app.router.add_get("/nodes/{node}/metrics", self._metrics)
        if self.config.redfish:
            app.router.add_get("/nodes/{node}/redfish{tail:.*}", self._redfish)
        return app

    async def start(self) -> str:
        # A short shutdown grace: requests held by an "unreachable" node must not delay the exit.
        self._runner = web.AppRunner(self.application(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ----

    def _node(self, request: web.Request) -> SimulatedNode:
        node = self.nodes.get(request.match_info["node"])
        if node is None:
            raise web.HTTPNotFound(text=f"no simulated node {request.match_info['node']!r}\n")
        return node

    async def _hang_if_unreachable(self, node: SimulatedNode) -> None:
        remaining = node.unreachable_for(time.time())
        if remaining > 0:
            await asyncio.sleep(min(remaining, MAX_HANG_S))

    async def _metrics(self, request: web.Request) -> web.Response:
        node = self._node(request)
        await self._hang_if_unreachable(node)
        return web.Response(body=node.metrics(time.time()), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _redfish(self, request: web.Request) -> web.Response:
        node = self._node(request)
        await self._hang_if_unreachable(node)
        prefix = f"/nodes/{node.name}"
        body = node.redfish("/redfish" + request.match_info["tail"], prefix, time.time())
        if body is None:
            return web.json_response({"error": {"code": "Base.1.0.ResourceMissingAtURI"}}, status=404)
        return web.Response(body=body, content_type="application/json")

    def _base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def _targets(self, request: web.Request) -> web.Response:
        base = self._base(request)
        rows = []
        for name, node in self.nodes.items():
            row = {"node": name, "site": node.site, "metrics_url": f"{base}/nodes/{name}/metrics"}
            if self.config.redfish:
                row["redfish_url"] = f"{base}/nodes/{name}/redfish/v1"
            rows.append(row)
        return web.json_response(rows)

    async def _prometheus_targets(self, request: web.Request) -> web.Response:
        groups = [
            {
                "targets": [request.host],
                "labels": {"__metrics_path__": f"/nodes/{name}/metrics", "instance": name, "site": node.site},
            }
            for name, node in self.nodes.items()
        ]
        return web.json_response(groups)

    async def _inventory(self, request: web.Request) -> web.Response:
        from console.config.inventory import dump_inventory

        text = dump_inventory(self.fleet(self._base(request)))
        return web.Response(text=text, content_type="application/toml")

    def fleet(self, base_url: str) -> Fleet:
        """The served nodes as a fleet: one dcgm source each (plus a redfish source with ``redfish``), with the
        demo fleet's topology (racks, cooling loops, power feeds)."""
        used = {entry.site.name for entry in self.roster}
        sites = tuple(
            Site(t.name, t.provider, t.region, interval_s=DEMO_INTERVAL_S, timeout_s=DEMO_TIMEOUT_S)
            for t in DEMO_SITES
            if t.name in used
        )
        nodes = []
        for entry in self.roster:
            specs = [SourceSpec(SourceKind.DCGM, url=f"{base_url}/nodes/{entry.node}/metrics")]
            if self.config.redfish:
                specs.append(SourceSpec(SourceKind.REDFISH, url=f"{base_url}/nodes/{entry.node}/redfish/v1"))
            tags = ("simulated", entry.site.instance_type)
            nodes.append(Node(entry.node, entry.site.name, tuple(specs), tags=tags, topology=entry.topology))
        return Fleet(sites=sites, nodes=tuple(nodes), origin=f"{base_url}/inventory.toml")


async def serve(config: SimulatorConfig, duration_s: float | None, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set or ``duration_s`` passes; print one ready line with the URL."""
    server = SimulatorServer(config)
    url = await server.start()
    gpus = config.nodes * config.gpus_per_node
    print(
        f"gpu-console simulate: serving {config.nodes} nodes ({gpus} GPUs) at {url}/ "
        f"(node list: {url}/targets, inventory: {url}/inventory.toml)",
        flush=True,
    )
    try:
        await asyncio.wait_for(stop.wait(), duration_s)
    except TimeoutError:
        pass
    finally:
        await server.close()


__all__ = [
    "KindFilteredPlan",
    "SimulatedNode",
    "SimulatorConfig",
    "SimulatorConfigError",
    "SimulatorServer",
    "parse_faults",
    "redfish_document",
    "serve",
    "simulated_roster",
    "simulation_plan",
    "validate_config",
]
