"""Which rules the engine runs, and how: the rules of one (site, provider) sorted by the path that evaluates them.

Sorting once per scope keeps ``IncidentEngine.observe`` from asking every rule what it is on every sample: the
GPU level rules come with the threshold a value must reach before it can matter, so a healthy GPU costs one
comparison per rule and no allocation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from console.incidents.detectors import DETECTORS, Finding, Scope
from console.incidents.rule import Direction, Rule
from console.samples.schema import EventKind

# GpuEvents that feed a rule directly, besides what the rule reads from the sample: (detector kind, signal).
_EVENT_RULES: dict[EventKind, tuple[str, str]] = {
    EventKind.ECC_DBE: ("counter_increase", "ecc_dbe_volatile"),
    EventKind.ROW_REMAP_FAILURE: ("gpu_flag", "remapped_rows_failure"),
    EventKind.RECOVERY_ACTION: ("recovery_action", ""),
}

# (rule, detector, incident code, direction is below, the value a threshold needs at least in that direction)
GpuLevelStep = tuple[Rule, Callable[..., float | None], str, bool, float]
GpuFlagStep = tuple[Rule, Callable[..., Finding | None], bool]  # (rule, detector, its findings are events)
NodeStep = tuple[Rule, Callable[..., list[Finding]], bool]
ResultStep = tuple[Rule, Callable[..., list[Finding]]]


@dataclass(frozen=True, slots=True)
class RulePlan:
    """The rules of one (site, provider), sorted by how the engine runs them.

    A GPU level rule comes with (below, limit): its value can cross a threshold only when it is at or past
    ``limit`` in its direction, so the usual healthy value skips ``Rule.level``."""

    gpu_level: tuple[GpuLevelStep, ...] = ()
    gpu_flag: tuple[GpuFlagStep, ...] = ()
    node: tuple[NodeStep, ...] = ()
    result: tuple[ResultStep, ...] = ()
    result_ids: frozenset[str] = frozenset()  # rules judged on poll results: known absent even without a sample
    xid: Rule | None = None
    stale: Rule | None = None
    events: Mapping[EventKind, Rule] = field(default_factory=dict)  # events that feed a rule directly


def plan_rules(rules: tuple[Rule, ...]) -> RulePlan:
    gpu_level: list[GpuLevelStep] = []
    gpu_flag: list[GpuFlagStep] = []
    node: list[NodeStep] = []
    result: list[ResultStep] = []
    events: dict[EventKind, Rule] = {}
    xid: Rule | None = None
    stale: Rule | None = None
    for rule in rules:
        if not rule.enabled:
            continue
        detector = DETECTORS[rule.kind]
        for event_kind, (kind, signal) in _EVENT_RULES.items():
            if rule.kind == kind and (not signal or rule.signal == signal):
                events[event_kind] = rule
        if detector.scope is Scope.GPU:
            if detector.level:
                code = rule.signal if detector.code_is_signal else ""
                below = rule.direction is Direction.BELOW
                limits = [threshold for _, threshold in rule.thresholds]
                limit = max(limits, default=-math.inf) if below else min(limits, default=math.inf)
                gpu_level.append((rule, detector.fn, code, below, limit))  # type: ignore[arg-type]
            else:
                gpu_flag.append((rule, detector.fn, detector.event))  # type: ignore[arg-type]
        elif detector.scope is Scope.NODE:
            node.append((rule, detector.fn, detector.event))  # type: ignore[arg-type]
        elif detector.scope is Scope.RESULT:
            result.append((rule, detector.fn))  # type: ignore[arg-type]
        elif rule.kind == "xid":
            xid = rule
        elif rule.kind == "stale":
            stale = rule
    result_ids = frozenset({rule.id for rule, _ in result} | ({stale.id} if stale else set()))
    return RulePlan(
        gpu_level=tuple(gpu_level),
        gpu_flag=tuple(gpu_flag),
        node=tuple(node),
        result=tuple(result),
        result_ids=result_ids,
        xid=xid,
        stale=stale,
        events=events,
    )
