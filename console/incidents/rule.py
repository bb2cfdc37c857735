"""One incident rule: the frozen value that detectors evaluate and the engine tracks.

It lives apart from ``console.incidents.rules`` (which loads and validates rule sets) because the two sides meet
here: the detectors read a ``Rule``, and the loader checks every rule against the detector registry. With the
rule in its own module, ``detectors`` imports ``rule``, ``rules`` imports both, and nothing imports in a circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from console.incidents.model import Severity


class Direction(StrEnum):
    ABOVE = "above"  # fires when value >= threshold
    BELOW = "below"  # fires when value <= threshold


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: str  # the detector that evaluates it (console.incidents.detectors.DETECTORS)
    category: str  # Incident.kind: xid, thermal, power, ecc, remap, pcie, nvlink, cooling, node, ...
    signal: str = ""
    unit: str = ""
    direction: Direction | None = None
    thresholds: tuple[tuple[Severity, float], ...] = ()  # worst severity first
    severity: Severity = Severity.WARNING  # for rules that fire without thresholds (flags, events)
    for_s: float = 0.0
    hysteresis: float = 0.0
    clear_s: float = 60.0
    title: str = ""
    action: str = ""
    params: Mapping[str, float] = field(default_factory=dict, compare=False)
    enabled: bool = True

    def level(self, value: float) -> Severity | None:
        """The worst severity whose threshold ``value`` crosses, or None."""
        if self.direction is Direction.BELOW:
            for severity, threshold in self.thresholds:
                if value <= threshold:
                    return severity
        else:
            for severity, threshold in self.thresholds:
                if value >= threshold:
                    return severity
        return None

    def holds(self, value: float) -> bool:
        """Still inside the hysteresis band of the mildest threshold: an open condition does not clear yet."""
        if not self.thresholds:
            return False
        mildest = self.thresholds[-1][1]
        if self.direction is Direction.BELOW:
            return value < mildest + self.hysteresis
        return value > mildest - self.hysteresis

    def threshold_text(self) -> str:
        op = "<=" if self.direction is Direction.BELOW else ">="
        unit = f" {self.unit}" if self.unit else ""
        return ", ".join(f"{sev.label} at {op} {thr:g}{unit}" for sev, thr in self.thresholds)

    def param(self, name: str) -> float:
        return self.params[name]
