"""The options of a demo source (``[[nodes.sources]] kind = "demo"``): GPU model, cooling and the fault plan.

A node of the built-in demo fleet (``nodes_per_site`` set) shares the fleet's plan, so that faults move from node
to node; any other demo node (e.g. one added in an inventory) gets a plan of its own with every fault.
``fault_schedule`` reads the plan back from a fleet. A bad option is a ``SourceError(BAD_PAYLOAD)`` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from console.config.fleet import Fleet, SourceKind, SourceSpec
from console.demo.faults import DemoPlan, ScheduledFault, fleet_plan, solo_plan
from console.demo.fleet import Cooling, GpuModel
from console.samples.results import PollFailure, SourceError

_E = TypeVar("_E", bound=StrEnum)


def _bad(reason: str) -> SourceError:
    return SourceError(PollFailure.BAD_PAYLOAD, reason)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    model: GpuModel
    cooling: Cooling
    plan: DemoPlan

    @classmethod
    def parse(cls, spec: SourceSpec, node: str, default_anchor: float) -> DemoOptions:
        """Read a demo ``SourceSpec``; a bad option raises ``SourceError(BAD_PAYLOAD)`` naming the option."""
        known = {"model", "cooling", "seed", "anchor", "nodes_per_site"}
        unknown = sorted({key for key, _ in spec.options} - known)
        if unknown:
            raise _bad(f"demo source options: unknown {unknown} (known: {sorted(known)})")
        model = _enum_option(spec, "model", GpuModel, GpuModel.H100_SXM)
        cooling = _enum_option(spec, "cooling", Cooling, Cooling.AIR)
        seed = int(_number_option(spec, "seed", 0.0, integer=True))
        anchor = _number_option(spec, "anchor", default_anchor, integer=False)
        per_site = spec.option("nodes_per_site")
        if per_site is None:
            return cls(model, cooling, solo_plan(seed, anchor, node, cooling))
        count = int(_number_option(spec, "nodes_per_site", 0.0, integer=True))
        if count < 1:
            raise _bad(f"demo option 'nodes_per_site': must be >= 1, got {per_site!r}")
        plan = fleet_plan(seed, anchor, count)
        if node not in plan.order:  # a renamed node cannot take part in the fleet's schedule: fault it alone
            plan = solo_plan(seed, anchor, node, cooling)
        return cls(model, cooling, plan)


def _enum_option(spec: SourceSpec, key: str, enum: type[_E], default: _E) -> _E:
    raw = spec.option(key)
    if raw is None:
        return default
    try:
        return enum(raw)
    except ValueError:
        choices = ", ".join(str(v) for v in enum)
        raise _bad(f"demo option {key!r}: unknown value {raw!r} (expected one of {choices})") from None


def _number_option(spec: SourceSpec, key: str, default: float, *, integer: bool) -> float:
    raw = spec.option(key)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _bad(f"demo option {key!r}: expected {kind}, got {raw!r}") from None
    if not math.isfinite(value):
        raise _bad(f"demo option {key!r}: must be finite, got {raw!r}")
    return value


def fault_schedule(fleet: Fleet, until_s: float) -> tuple[ScheduledFault, ...]:
    """The scripted faults of a demo fleet in its first ``until_s`` seconds (empty without a demo node)."""
    for node in fleet.nodes:
        for spec in node.sources:
            if spec.kind is SourceKind.DEMO:
                return DemoOptions.parse(spec, node.name, default_anchor=0.0).plan.schedule(until_s)
    return ()
