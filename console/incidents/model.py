"""What an incident is, shared by the engine, the store, the CLI and the GUI."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from console.samples.schema import Workload


class Severity(IntEnum):
    """Ordered so that ``max`` gives the worse one; stored and shown by name."""

    INFO = 1
    WARNING = 2
    MAJOR = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (info, warning, major, critical)") from None


class Status(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Outcome(StrEnum):
    """What the operator's fix did, recorded at resolution."""

    FIXED = "fixed"
    NOT_FIXED = "not_fixed"
    WORKAROUND = "workaround"
    AUTO_CLEARED = "auto_cleared"  # resolved by the engine after the clear duration


class Scope(StrEnum):
    """How far an incident reaches in the physical topology: one GPU, one node, or what several nodes share."""

    GPU = "gpu"
    NODE = "node"
    RACK = "rack"
    COOLING_LOOP = "cooling_loop"
    POWER_FEED = "power_feed"
    NVLINK_DOMAIN = "nvlink_domain"
    SITE = "site"


class ChangeKind(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"  # count, last seen, peak or severity changed
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    EVIDENCE = "evidence"  # more samples recorded after the incident opened


@dataclass(frozen=True, slots=True)
class IncidentContext:
    """Frozen when the incident opens: where and on what it happened."""

    site: str
    provider: str
    node: str
    gpu_uuid: str | None = None
    gpu_index: int | None = None
    gpu_model: str | None = None
    serial: str | None = None
    driver_version: str | None = None
    vbios_version: str | None = None
    pci_bus_id: str | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident per (node, GPU or none, rule, code). ``id`` is stable across databases (merge relies on it)."""

    id: str
    rule: str
    code: str  # Xid number, throttle reason, Redfish MessageId, ... ("" when the rule has none)
    kind: str  # xid | thermal | power | ecc | remap | pcie | nvlink | recovery_action | cooling | node | ...
    severity: Severity
    status: Status
    title: str
    detail: str
    context: IncidentContext
    opened_at: float
    last_seen_at: float
    resolved_at: float | None = None
    count: int = 1
    peak: float | None = None  # worst value seen (e.g. lowest margin, highest temperature)
    recommended_action: str = ""
    acknowledged_at: float | None = None
    resolution_note: str = ""
    outcome: Outcome | None = None
    # Correlation: a symptom points at the incident of its cause (None for a root); a root that groups several
    # nodes says what they share (scope and its name: the rack's, the loop's; the node's name for node scope) and
    # which nodes it covers. How many symptoms a root has is counted from the children, never stored.
    parent_id: str | None = None
    scope: Scope | None = None  # None: derived from the context (GPU when it has a UUID, else node)
    scope_name: str = ""
    nodes: tuple[str, ...] = ()
    # What ran on the GPU (the node's GPUs for a node incident) at onset, plus what appeared while it was open;
    # None: no source could tell.
    workload: tuple[Workload, ...] | None = None

    @property
    def effective_scope(self) -> Scope:
        if self.scope is not None:
            return self.scope
        return Scope.GPU if self.context.gpu_uuid else Scope.NODE

    @property
    def member_nodes(self) -> tuple[str, ...]:
        return self.nodes or (self.context.node,)

    @property
    def effective_scope_name(self) -> str:
        return self.scope_name or self.context.node


@dataclass(frozen=True, slots=True)
class EvidencePoint:
    """One sample of evidence: a node sample as JSON text (schema gpu-console.sample/1) at a time."""

    incident_id: str
    time: float
    sample_json: str


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """A lifecycle step, as the engine emits it and the store persists it."""

    kind: ChangeKind
    incident: Incident
    time: float
    note: str = ""
    evidence: tuple[EvidencePoint, ...] = ()
    # An operator's step (acknowledge, resolve) says who took it and, for a resolution, the fix applied (an id
    # of resources/remediation/actions.toml); the store keeps each such step as one entry of the fix ledger.
    operator: str = ""
    action: str = ""
