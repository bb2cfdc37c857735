"""The built-in demo fleet: what the console watches when no inventory exists (and with ``--demo``).

Four sites at four providers, ``nodes_per_site`` nodes each (8 by default: 32 nodes, 256 GPUs). Every node has
one ``demo`` source whose options carry all the simulation needs, so that every node of one fleet shares
the same seed and the same anchor (the moment the fault schedule starts):

    model           h100-sxm | h200-sxm
    cooling         air | liquid
    seed            the ``--seed`` value
    anchor          epoch seconds the scripted faults count from
    nodes_per_site  lets each source rebuild the fleet's roster, so faults can be spread over "other" nodes

The roster (node names, cooling and topology, in fleet order) is a pure function of ``nodes_per_site`` so the
source (``console.demo.faults``) and this module always agree on it. Topology (``demo_topology``): air-cooled
and liquid-cooled sites alike hold four nodes per rack and one power feed per two racks; in the liquid-cooled site
each rack has two CDU cooling loops of two nodes each (a loop fault is narrower than its rack). HGX H100/H200
baseboards are an NVLink domain of their own (eight GPUs behind the node's NVSwitches), so no demo node names one.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from enum import StrEnum

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec, Topology

DEMO_ORIGIN = "built-in demo fleet"
DEFAULT_NODES_PER_SITE = 8
DEMO_INTERVAL_S = 1.0
DEMO_TIMEOUT_S = 2.0


class GpuModel(StrEnum):
    H100_SXM = "h100-sxm"
    H200_SXM = "h200-sxm"


class Cooling(StrEnum):
    AIR = "air"
    LIQUID = "liquid"  # direct liquid cooling with a coolant loop (CDU supply/return, flow)


@dataclass(frozen=True, slots=True)
class DemoSiteTemplate:
    name: str
    provider: str
    region: str
    model: GpuModel
    cooling: Cooling
    node_prefix: str
    instance_type: str


DEMO_SITES: tuple[DemoSiteTemplate, ...] = (
    DemoSiteTemplate("aws-use1", "aws", "us-east-1", GpuModel.H100_SXM, Cooling.AIR, "p5-use1-", "p5.48xlarge"),
    DemoSiteTemplate(
        "coreweave-ord1",
        "coreweave",
        "us-central (ORD1)",
        GpuModel.H200_SXM,
        Cooling.AIR,
        "cw-ord1-",
        "gd-8xh200",
    ),
    DemoSiteTemplate("gcp-usc1", "gcp", "us-central1", GpuModel.H100_SXM, Cooling.AIR, "a3-usc1-", "a3-highgpu-8g"),
    DemoSiteTemplate("onprem-dgx-a", "onprem", "dc-a hall 2", GpuModel.H100_SXM, Cooling.LIQUID, "dgx-a-", "dgx-h100"),
)


NODES_PER_RACK = 4
NODES_PER_LOOP = 2
RACKS_PER_FEED = 2


@dataclass(frozen=True, slots=True)
class RosterEntry:
    node: str
    site: DemoSiteTemplate
    topology: Topology = field(default_factory=Topology)


def node_name(site: DemoSiteTemplate, number: int) -> str:
    return f"{site.node_prefix}{number:03d}"


def demo_topology(site: DemoSiteTemplate, number: int) -> Topology:
    """Where demo node ``number`` (from 1) of ``site`` sits: a pure function of the two, so any subset of the
    roster (the simulator serves the first N) agrees with the full fleet."""
    rack = (number - 1) // NODES_PER_RACK
    loop = (number - 1) // NODES_PER_LOOP
    return Topology(
        rack=f"{site.name}-rack-{rack + 1:02d}",
        cooling_loop=f"{site.name}-cdu-{loop + 1}" if site.cooling is Cooling.LIQUID else None,
        power_feed=f"{site.name}-feed-{rack // RACKS_PER_FEED + 1}",
    )


@functools.lru_cache(maxsize=8)
def demo_roster(nodes_per_site: int = DEFAULT_NODES_PER_SITE) -> tuple[RosterEntry, ...]:
    """Every demo node in fleet order. Cached: each of the fleet's sources asks for the same roster."""
    if nodes_per_site < 1:
        raise ValueError(f"nodes_per_site must be >= 1, got {nodes_per_site}")
    return tuple(
        RosterEntry(node_name(site, number), site, demo_topology(site, number))
        for site in DEMO_SITES
        for number in range(1, nodes_per_site + 1)
    )


def build_demo_fleet(seed: int = 0, nodes_per_site: int = DEFAULT_NODES_PER_SITE, anchor: float | None = None) -> Fleet:
    """The demo fleet; ``anchor`` (default: now) is when its scripted faults start counting."""
    start = time.time() if anchor is None else anchor
    sites = tuple(
        Site(
            name=t.name,
            provider=t.provider,
            region=t.region,
            interval_s=DEMO_INTERVAL_S,
            timeout_s=DEMO_TIMEOUT_S,
            demo=True,
        )
        for t in DEMO_SITES
    )
    shared = (("seed", str(seed)), ("anchor", repr(start)), ("nodes_per_site", str(nodes_per_site)))
    nodes = tuple(
        Node(
            name=entry.node,
            site=entry.site.name,
            sources=(
                SourceSpec(
                    kind=SourceKind.DEMO,
                    options=(("model", str(entry.site.model)), ("cooling", str(entry.site.cooling)), *shared),
                ),
            ),
            tags=("demo", entry.site.instance_type),
            topology=entry.topology,
        )
        for entry in demo_roster(nodes_per_site)
    )
    return Fleet(sites=sites, nodes=nodes, is_demo=True, origin=DEMO_ORIGIN)


__all__ = [
    "DEFAULT_NODES_PER_SITE",
    "DEMO_ORIGIN",
    "DEMO_SITES",
    "Cooling",
    "DemoSiteTemplate",
    "GpuModel",
    "RosterEntry",
    "build_demo_fleet",
    "demo_roster",
    "demo_topology",
]
