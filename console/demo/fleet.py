"""The built-in demo fleet: what the console watches when no inventory exists (and with ``--demo``).

Four sites at four providers, ``nodes_per_site`` nodes each (8 by default: 32 nodes, 256 GPUs). Every node has
one ``demo`` source whose options carry all the simulation needs, so that every node of one fleet shares
the same seed and the same anchor (the moment the fault schedule starts):

    model           h100-sxm | h200-sxm
    cooling         air | liquid
    seed            the ``--seed`` value
    anchor          epoch seconds the scripted faults count from
    nodes_per_site  lets each source rebuild the fleet's roster, so faults can be spread over "other" nodes

The roster (node names and cooling, in fleet order) is a pure function of ``nodes_per_site`` so the source
(``console.demo.faults``) and this module always agree on it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from enum import StrEnum

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec

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


@dataclass(frozen=True, slots=True)
class RosterEntry:
    node: str
    site: DemoSiteTemplate


def node_name(site: DemoSiteTemplate, number: int) -> str:
    return f"{site.node_prefix}{number:03d}"


@functools.lru_cache(maxsize=8)
def demo_roster(nodes_per_site: int = DEFAULT_NODES_PER_SITE) -> tuple[RosterEntry, ...]:
    """Every demo node in fleet order. Cached: each of the fleet's sources asks for the same roster."""
    if nodes_per_site < 1:
        raise ValueError(f"nodes_per_site must be >= 1, got {nodes_per_site}")
    return tuple(
        RosterEntry(node_name(site, number), site) for site in DEMO_SITES for number in range(1, nodes_per_site + 1)
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
]
