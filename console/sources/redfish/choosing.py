"""From what the leaves say (``readings.Findings``) to the samples: per field the most trustworthy reading, each
chassis of a multi-chassis BMC as a named part, the unhealthy components named, the GPUs an HGX HMC reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from console.samples.schema import ChassisPart, ChassisSample, ComponentCondition, GpuSample
from console.sources.redfish.readings import (
    COOLANT_RETURN,
    COOLANT_SUPPLY,
    EXHAUST,
    HEALTH_ORDER,
    INLET,
    Findings,
    Leaf,
    read_leaf,
    worst,
)


def unexplained(chassis: ChassisSample) -> bool:
    """Whether the BMC says something is unhealthy that no polled component names (a sensor that was fine when
    the tree was walked): the source then walks the tree again to find it."""
    if chassis.parts:
        return any(unexplained(part.readings) for part in chassis.parts)
    named = worst(c.health for c in chassis.components)
    return chassis.health is not None and HEALTH_ORDER[chassis.health] > (HEALTH_ORDER[named] if named else 0)


def _coolant(findings: Findings) -> tuple[float | None, float | None, float | None, float | None]:
    """Supply, return, flow, rated flow from the most direct loops (cold plates, then a CDU's rack side).

    Among several loops of one rank the hottest supply and return are shown, and flow and rated flow come as a
    pair from the loop with the least flow relative to its rating: the loop an operator must look at first.
    """
    supply = ret = flow = rated = None
    ranks = sorted({loop.rank[0] for loop in findings.loops})
    for rank in ranks:
        group = [loop for loop in findings.loops if loop.rank[0] == rank]
        supplies = [loop.supply for loop in group if loop.supply is not None]
        returns = [loop.ret for loop in group if loop.ret is not None]
        if supply is None and supplies:
            supply = max(supplies)
        if ret is None and returns:
            ret = max(returns)
        if flow is None and rated is None:
            paired = [loop for loop in group if loop.flow is not None and loop.rated]
            if paired:
                starved = min(paired, key=lambda loop: (loop.flow or 0.0) / (loop.rated or 1.0))
                flow, rated = starved.flow, starved.rated
            else:
                flows = [loop.flow for loop in group if loop.flow is not None]
                rateds = [loop.rated for loop in group if loop.rated is not None]
                flow = min(flows) if flows else None
                rated = min(rateds) if rateds else None
    if supply is None:
        supply = findings.best(COOLANT_SUPPLY)
    if ret is None:
        ret = findings.best(COOLANT_RETURN)
    if flow is None:
        flow = findings.best("coolant_flow_lpm")
    return supply, ret, flow, rated


Fetched = tuple[Leaf, Mapping[str, Any], str]


@dataclass(frozen=True, slots=True)
class BmcReading:
    """What one round of fetched resources says: the chassis (with each chassis of a multi-chassis BMC as a
    part), the GPUs an HGX HMC reports, and the components seen in place (to tell a pulled PSU later)."""

    chassis: ChassisSample
    gpus: tuple[GpuSample, ...] = ()
    present: frozenset[str] = frozenset()


def _findings(fetched: Sequence[Fetched], was_present: frozenset[str]) -> Findings:
    findings = Findings(was_present=was_present)
    for leaf, doc, url in fetched:
        read_leaf(leaf, doc, url, findings)
    return findings


def _chassis(findings: Findings, chassis_name: str = "") -> ChassisSample:
    supply, ret, flow, rated = _coolant(findings)
    fans = findings.fans[min(findings.fans)] if findings.fans else None
    fan_rank = min(findings.fans) if findings.fans else None
    minimums = [value for rank, value in findings.fan_minimums if rank == fan_rank]
    power = findings.best("power_w")
    if power is None and findings.psu_input_w:
        power = sum(findings.psu_input_w)
    leak_states = [state for state in findings.leak_states if state != "Absent"]
    components = tuple(
        ComponentCondition(name=name, kind=kind, health=health, text=text, chassis=chassis_name)
        for (kind, name), (health, text) in findings.components.items()
    )
    conditions = [*findings.conditions, *(c.text for c in components if c.text not in findings.conditions)]
    return ChassisSample(
        inlet_c=findings.best(INLET),
        exhaust_c=findings.best(EXHAUST),
        coolant_supply_c=supply,
        coolant_return_c=ret,
        coolant_flow_lpm=flow,
        coolant_flow_rated_lpm=rated,
        leak_detected=any(state != "OK" for state in leak_states) if leak_states else None,
        fans_rpm=tuple(fans) if fans else None,
        fans_min_rpm=max(minimums) if minimums else None,
        power_w=power,
        health=worst([*findings.health, *(c.health for c in components)]),
        pump_health=worst(findings.pump_health),
        psu_health=worst(findings.psu_health),
        conditions=tuple(conditions),
        components=components,
    )


def _gpus(findings: Findings) -> tuple[GpuSample, ...]:
    gpus = []
    for position, (path, readings) in enumerate(sorted(findings.gpu_readings.items())):
        known = findings.processors.get(path)
        if known is None:
            continue  # no UUID: nothing to match it with the host's view of the same GPU
        uuid, index, model = known

        def value(name: str, readings: dict[str, list[tuple[str, float]]] = readings) -> float | None:
            found = readings.get(name)
            return min(found)[1] if found else None  # ..._TEMP_0 before ..._TEMP_1

        gpus.append(
            GpuSample(
                index=position if index is None else index,
                uuid=uuid,
                name=model,
                temperature_c=value("temperature_c"),
                memory_temperature_c=value("memory_temperature_c"),
                power_w=value("power_w"),
            )
        )
    return tuple(sorted(gpus, key=lambda gpu: gpu.index))


def read_bmc(fetched: Sequence[Fetched], was_present: frozenset[str] = frozenset()) -> BmcReading:
    """The reading from ``(leaf, document, url)`` triples; ``was_present``: components seen in place before."""
    findings = _findings(fetched, was_present)
    orders = sorted({leaf.chassis_order for leaf, _doc, _url in fetched})
    if len(orders) <= 1:
        chassis = _chassis(findings, findings.chassis_name or "")
    else:
        # each chassis read on its own (ranked as a first chassis), then the whole BMC as before, naming the
        # chassis each unhealthy component sits in
        parts = []
        for order in orders:
            group = [
                (replace(leaf, chassis_order=0), doc, url) for leaf, doc, url in fetched if leaf.chassis_order == order
            ]
            own = _findings(group, was_present)
            name = own.chassis_name or f"chassis {order + 1}"
            parts.append(ChassisPart(name=name, readings=_chassis(own, name)))
        named = [c for part in parts for c in part.readings.components]
        findings.components.clear()
        whole = _chassis(findings)
        chassis = replace(
            whole,
            components=tuple(named),
            conditions=(*whole.conditions, *(c.text for c in named if c.text not in whole.conditions)),
            health=worst([*([whole.health] if whole.health else []), *(c.health for c in named)]),
            parts=tuple(parts),
        )
    return BmcReading(chassis=chassis, gpus=_gpus(findings), present=frozenset(findings.present))


def chassis_from_leaves(fetched: Sequence[Fetched]) -> ChassisSample:
    """The chassis sample from ``(leaf, document, url)`` triples."""
    return read_bmc(fetched).chassis
