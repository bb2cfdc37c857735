"""The capability map: per site, whether each sample field is reported, not supported (by which GPUs), never
seen, or missing because its collector is failing.

Computed from the latest sample and failures of each node (one poll round is enough). GPU fields come from the
in-band sources, chassis fields from the BMC (``coverage.CHASSIS_SOURCES``), so a failing collector is blamed
only for the fields it feeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from console.incidents.coverage import CHASSIS_SOURCES
from console.samples.schema import ChassisSample, GpuSample, NodeSample

# Identity and bookkeeping, not measurements: always there when a GPU or chassis is.
_NOT_MEASURED = frozenset({"index", "uuid", "lost", "unsupported", "conditions", "components", "parts"})
GPU_FIELDS = tuple(f.name for f in dataclasses.fields(GpuSample) if f.name not in _NOT_MEASURED)
CHASSIS_FIELDS = tuple(f.name for f in dataclasses.fields(ChassisSample) if f.name not in _NOT_MEASURED)


class Capability(StrEnum):
    REPORTED = "reported"
    NOT_SUPPORTED = "not supported"
    COLLECTOR_FAILING = "collector failing"
    NEVER_SEEN = "never seen"


class Scope(StrEnum):
    GPU = "gpu"
    CHASSIS = "chassis"


@dataclass(frozen=True, slots=True)
class NodeObservation:
    node: str
    site: str
    sample: NodeSample | None
    failures: tuple[str, ...] = ()  # "KIND TARGET: failure: reason", one per failing source


@dataclass(frozen=True, slots=True)
class FieldCapability:
    field: str
    scope: Scope
    capability: Capability
    reported_by: int  # GPUs (or chassis) that gave a value
    of: int  # GPUs (or chassis) seen
    unsupported_by: tuple[str, ...] = ()  # "node GPU i" that flag it unsupported
    unsupported_models: tuple[tuple[str, int], ...] = ()  # (model, how many of its GPUs)
    failing: tuple[str, ...] = ()  # the failing collectors that feed it


@dataclass(frozen=True, slots=True)
class SiteCapabilities:
    site: str
    nodes: int
    fields: tuple[FieldCapability, ...]

    def of(self, field: str) -> FieldCapability:
        return next(f for f in self.fields if f.field == field)


def _has(value: Any) -> bool:
    return value is not None  # an empty tuple (no throttle reason now) is a reading


def _feeds_chassis(failure: str) -> bool:
    return failure.split(" ", 1)[0].rstrip(":") in CHASSIS_SOURCES


def _site(site: str, observations: Sequence[NodeObservation]) -> SiteCapabilities:
    gpus = [(o.node, gpu) for o in observations if o.sample is not None for gpu in o.sample.gpus]
    chassis = [o.sample.chassis for o in observations if o.sample is not None]
    failures = [f for o in observations for f in o.failures]
    gpu_failing = tuple(f for f in failures if not _feeds_chassis(f))
    chassis_failing = tuple(f for f in failures if _feeds_chassis(f))
    out = []
    for name in GPU_FIELDS:
        reported = sum(_has(getattr(gpu, name)) for _node, gpu in gpus)
        flagged = [(node, gpu) for node, gpu in gpus if name in gpu.unsupported]
        models: dict[str, int] = {}
        for _node, gpu in flagged:
            models[gpu.name or "unknown model"] = models.get(gpu.name or "unknown model", 0) + 1
        out.append(
            _field(
                FieldCapability(
                    name,
                    Scope.GPU,
                    Capability.NEVER_SEEN,
                    reported,
                    len(gpus),
                    unsupported_by=tuple(f"{node} GPU {gpu.index}" for node, gpu in flagged),
                    unsupported_models=tuple(sorted(models.items())),
                    failing=gpu_failing,
                )
            )
        )
    for name in CHASSIS_FIELDS:
        reported = sum(_has(getattr(c, name)) for c in chassis)
        out.append(
            _field(
                FieldCapability(
                    name, Scope.CHASSIS, Capability.NEVER_SEEN, reported, len(chassis), failing=chassis_failing
                )
            )
        )
    return SiteCapabilities(site=site, nodes=len(observations), fields=tuple(out))


def _field(seen: FieldCapability) -> FieldCapability:
    """The capability from the counts: a value anywhere beats a flag, a flag beats a failing collector."""
    if seen.reported_by:
        capability = Capability.REPORTED
    elif seen.unsupported_by:
        capability = Capability.NOT_SUPPORTED
    elif seen.failing:
        capability = Capability.COLLECTOR_FAILING
    else:
        capability = Capability.NEVER_SEEN
    return dataclasses.replace(seen, capability=capability)


def capability_map(observations: Iterable[NodeObservation]) -> tuple[SiteCapabilities, ...]:
    by_site: dict[str, list[NodeObservation]] = {}
    for observation in observations:
        by_site.setdefault(observation.site, []).append(observation)
    return tuple(_site(site, nodes) for site, nodes in sorted(by_site.items()))


def capabilities_to_json(sites: Sequence[SiteCapabilities]) -> list[dict[str, Any]]:
    return [
        {
            "site": site.site,
            "nodes": site.nodes,
            "fields": [
                {
                    "field": f.field,
                    "scope": str(f.scope),
                    "capability": str(f.capability),
                    "reported_by": f.reported_by,
                    "of": f.of,
                    "unsupported_by": list(f.unsupported_by),
                    "unsupported_models": {model: count for model, count in f.unsupported_models},
                    "failing": list(f.failing),
                }
                for f in site.fields
            ],
        }
        for site in sites
    ]


def models_text(field: FieldCapability) -> str:
    """ "by 64 GPUs: NVIDIA H100 80GB HBM3 (64)" """
    models = ", ".join(f"{model} ({count})" for model, count in field.unsupported_models)
    return f"by {len(field.unsupported_by)} GPUs: {models}"


def capabilities_text(sites: Sequence[SiteCapabilities]) -> str:
    lines = []
    for site in sites:
        lines.append(f"site {site.site} ({site.nodes} nodes)")
        width = max((len(f.field) for f in site.fields), default=10)
        for f in site.fields:
            detail = ""
            if f.capability is Capability.REPORTED:
                detail = f"{f.reported_by} of {f.of}"
                if f.unsupported_by:
                    detail += f"; not supported {models_text(f)}"
            elif f.capability is Capability.NOT_SUPPORTED:
                detail = models_text(f)
            elif f.capability is Capability.COLLECTOR_FAILING:
                detail = "; ".join(f.failing[:2]) + (" ..." if len(f.failing) > 2 else "")
            lines.append(f"  {f.scope:<7} {f.field:<{width}}  {f.capability:<17} {detail}".rstrip())
    return "\n".join(lines)
