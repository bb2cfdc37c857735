"""What the incident engine remembers per node, and the changes one call collects.

Plain mutable containers, shared by the parts of the engine (``detection``, ``tracking``, ``lifecycle``,
``recorder``) so that each part can be read alone: a ``Track`` is one condition on its way to an incident (or
carrying its open incident), a ``NodeState`` holds a node's tracks, detector memory and evidence, and a ``Batch``
collects what one ``observe`` or ``tick`` call emits. They are mutated in place on the hot path, hence not frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from console.incidents.detectors import NodeMemory
from console.incidents.evidence import Recording, SampleBuffer
from console.incidents.model import Incident, IncidentChange, Severity
from console.incidents.plan import RulePlan
from console.incidents.rule import Rule
from console.samples.results import SourceFailure
from console.samples.schema import NodeSample

TrackKey = tuple[str | None, str, str]  # (gpu uuid or None, rule id, code)


@dataclass(slots=True)
class Track:
    """One (node, GPU, rule, code): pending until ``for_s`` has passed, then carrying its open incident."""

    rule: Rule
    key: TrackKey
    pending_since: float
    last_active: float
    severity: Severity
    active: bool = False
    value: float | None = None
    peak: float | None = None
    detail: str = ""
    action: str = ""
    mnemonic: str = ""
    incident: Incident | None = None
    last_emit: float = 0.0
    onset_source: float | None = None  # the source's own time of the first sighting, where the sample had one
    resumed: bool = False  # carried over from the database at start: its first sighting here is no recurrence
    # The condition's data is missing (its collector is down, or the value is None): it can neither hold nor clear.
    unknown_since: float | None = None
    unknown_note: str = ""  # what the incident says meanwhile ("no data from redfish since 14:02 UTC")
    known_again: float = 0.0  # data returned at this time: clear_s counts from here, not from before the gap


@dataclass(slots=True)
class NodeState:
    name: str
    site: str
    provider: str
    interval_s: float
    plan: RulePlan
    buffer: SampleBuffer
    memory: NodeMemory = field(default_factory=NodeMemory)
    tracks: dict[TrackKey, Track] = field(default_factory=dict)
    recordings: list[Recording] = field(default_factory=list)
    last_result_t: float | None = None
    last_result_ok: bool = True
    last_complete_t: float | None = None  # the last result in which every source answered
    last_sample: NodeSample | None = None
    gpu_ids: tuple[str, ...] = ()
    # Incident ids given out per condition (recent ones only), so that a recurrence in the same id window gets the
    # next sequence number instead of the same id (console.incidents.lifecycle.incident_id).
    used_ids: dict[TrackKey, list[str]] = field(default_factory=dict)

    def track_of(self, incident_id: str) -> Track | None:
        """The track carrying the open incident ``incident_id``, if it is open on this node."""
        for track in self.tracks.values():
            if track.incident is not None and track.incident.id == incident_id:
                return track
        return None


class Batch:
    """The changes and touched tracks of one observe/tick call."""

    __slots__ = ("changes", "failures", "ns", "sample", "source_t", "t", "touched")

    def __init__(
        self,
        ns: NodeState | None,
        t: float,
        sample: NodeSample | None,
        failures: tuple[SourceFailure, ...] = (),
        source_t: float | None = None,
    ) -> None:
        self.changes: list[IncidentChange] = []
        self.touched: set[TrackKey] = set()
        self.ns = ns
        self.t = t
        self.sample = sample
        self.failures = failures  # the sources of this result that did not answer
        self.source_t = source_t  # the sample's own time when the source stamped it, else None
