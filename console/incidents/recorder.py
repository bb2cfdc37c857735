"""Evidence recording: the samples before an incident when it opens, and those after it, in batches.

``console.incidents.evidence`` knows how to keep and encode samples; this is the engine's use of it per node:
start a recording when an incident opens, offer it every new sample, and emit EVIDENCE changes as batches fill.
A recording outlives its incident's resolution until its last batch has left.
"""

from __future__ import annotations

from console.incidents.evidence import Recording, SampleJson
from console.incidents.model import ChangeKind, EvidencePoint, Incident, IncidentChange
from console.incidents.rules import EvidenceSettings
from console.incidents.state import Batch, NodeState
from console.samples.schema import NodeSample


class EvidenceRecorder:
    __slots__ = ("_settings",)

    def __init__(self, settings: EvidenceSettings) -> None:
        self._settings = settings

    def start(self, ns: NodeState, incident: Incident, gpu_uuid: str | None, t: float) -> tuple[EvidencePoint, ...]:
        """Start recording for a new incident; returns its "before" evidence from the node's buffer."""
        evidence = tuple(
            EvidencePoint(incident.id, when, text) for when, text in ns.buffer.evidence(ns.name, ns.site, gpu_uuid)
        )
        until = t + self._settings.after_s
        ns.recordings.append(Recording(incident, gpu_uuid, started=t, until=until, last_point_t=t))
        return evidence

    def record(self, ns: NodeState, t: float, sample: NodeSample | None, batch: Batch) -> None:
        """Offer a new sample (None: no new sample) to the node's recordings, then emit what is due."""
        settings = self._settings
        if sample is not None:
            pieces = SampleJson(sample)  # encodes lazily, once per GPU, for every recording that wants this point
            for recording in ns.recordings:
                recording.offer(t, pieces, settings)
        self.flush(ns, t, batch)

    def flush(self, ns: NodeState, now: float, batch: Batch) -> None:
        """Emit the batches that are due, and forget recordings that are over and empty."""
        settings = self._settings
        keep = []
        for recording in ns.recordings:
            if recording.due(now, settings):
                track = ns.track_of(recording.incident.id)  # the incident as it is now, while it is open
                if track is not None and track.incident is not None:
                    recording.incident = track.incident
                batch.changes.append(
                    IncidentChange(ChangeKind.EVIDENCE, recording.incident, now, evidence=recording.take())
                )
            if now < recording.until or recording.batch:
                keep.append(recording)
        ns.recordings = keep

    @staticmethod
    def refresh(ns: NodeState, incident: Incident) -> None:
        """The incident changed after its track went away (resolved): later batches carry the resolved state."""
        for recording in ns.recordings:
            if recording.incident.id == incident.id:
                recording.incident = incident
