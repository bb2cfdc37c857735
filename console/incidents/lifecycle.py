"""An incident's life: opened, updated or escalated, acknowledged, resolved; and the changes each step emits.

``tracking`` decides *when* a condition opens, is seen again or has cleared; this module decides *what* the
incident then says (id, title, detail, context, count, peak) and emits the matching ``IncidentChange``. It also
keeps the index of open incidents by id that the operator's acknowledge and resolve go through.

Severity only escalates during one incident; a recurrence after resolution opens a new one with a new id.

Ids are what two consoles watching the same node agree on (``incident_id``): a hash of node, GPU UUID, rule, code
and the onset (the first sighting), never of the console's own poll time. The onset is the source's own time
where the sample carries one (a Prometheus or timestamped dcgm-exporter series: two consoles see the same stamp
on the same measurement), else the console's time rounded down to a 10-minute window (``ID_WINDOW_S``): two
consoles polling the same exporter a fraction of a second to a few seconds apart land in the same window, except
when a window boundary falls between their first sightings (a chance of offset / 600 s). Those pairs are the same
fault under two ids; ``same_fault`` tells them apart at merge time: same node, GPU, rule and code, with
overlapping open intervals. A second incident of one condition in the same window (it cleared and came back)
takes the next sequence number (ids given out per condition are remembered, and seeded at resume), so ids stay
unique and two consoles that saw both occurrences still agree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math

from console.incidents.coverage import missing_note, utc_minute
from console.incidents.model import (
    ChangeKind,
    Incident,
    IncidentChange,
    IncidentContext,
    Outcome,
    Severity,
    Status,
)
from console.incidents.recorder import EvidenceRecorder
from console.incidents.state import Batch, NodeState, Track, TrackKey
from console.samples.schema import GpuSample, NodeSample, Workload, merge_workloads

log = logging.getLogger(__name__)

UNKNOWN_MARK = "\ncondition unknown: "  # how an incident's detail carries the note while its data is missing


ID_WINDOW_S = 600.0  # the onset window of ids whose source gave no time of its own
_USED_IDS_PER_CONDITION = 4  # a condition opens a few times per window at most: older ids cannot collide
_USED_ID_CONDITIONS = 256  # per node, oldest forgotten first (a node that churns GPU UUIDs stays bounded)


def incident_id(
    node: str, gpu_uuid: str | None, rule: str, code: str, onset: float, *, stamped: bool = False, seq: int = 0
) -> str:
    """The id of the incident of (node, GPU, rule, code) first seen at ``onset``.

    ``stamped``: ``onset`` is the source's own time (kept to the millisecond); otherwise it is the console's and
    only its ``ID_WINDOW_S`` window counts. ``seq`` numbers the incidents of one condition within one window."""
    when = f"s{onset:.3f}" if stamped else f"w{math.floor(onset / ID_WINDOW_S) * ID_WINDOW_S:.0f}"
    text = f"{node}\x1f{gpu_uuid or ''}\x1f{rule}\x1f{code}\x1f{when}" + (f"\x1f{seq}" if seq else "")
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def same_fault(a: Incident, b: Incident) -> bool:
    """Two incidents that are one fault seen by two consoles whose first sightings fell on either side of an id
    window boundary: same node, GPU, rule and code, onsets less than a window apart and open intervals that
    overlap (``console.store.merge`` asks the same in SQL)."""
    if (a.context.node, a.context.gpu_uuid, a.rule, a.code) != (b.context.node, b.context.gpu_uuid, b.rule, b.code):
        return False
    if abs(a.opened_at - b.opened_at) >= ID_WINDOW_S:
        return False
    a_end = a.resolved_at if a.resolved_at is not None else math.inf
    b_end = b.resolved_at if b.resolved_at is not None else math.inf
    return a.opened_at <= b_end and b.opened_at <= a_end


def remember_id(ns: NodeState, key: TrackKey, incident_id_: str) -> None:
    """Note an id given out (or resumed) for a condition, so that its next incident in the window differs."""
    used = ns.used_ids.pop(key, None) or []  # re-inserted: the dict's order is the order of last use
    if incident_id_ not in used:
        used.append(incident_id_)
    ns.used_ids[key] = used[-_USED_IDS_PER_CONDITION:]
    if len(ns.used_ids) > _USED_ID_CONDITIONS:
        del ns.used_ids[next(iter(ns.used_ids))]


class IncidentLifecycle:
    __slots__ = ("_by_id", "_recorder", "_update_every_s")

    def __init__(self, recorder: EvidenceRecorder, update_every_s: float) -> None:
        self._recorder = recorder
        self._update_every_s = update_every_s  # an UPDATED change for last_seen/peak alone at most this often
        self._by_id: dict[str, NodeState] = {}

    # --- steps the engine takes -----------------------------------------------------------------------------

    def open(self, ns: NodeState, track: Track, t: float, batch: Batch) -> None:
        rule = track.rule
        uuid, _, code = track.key
        context = incident_context(ns, uuid, batch.sample or ns.last_sample)
        stamped = track.onset_source is not None
        onset = track.onset_source if track.onset_source is not None else track.pending_since
        used = ns.used_ids.get(track.key, ())
        seq = 0
        new_id = incident_id(ns.name, uuid, rule.id, code, onset, stamped=stamped)
        while new_id in used:
            seq += 1
            new_id = incident_id(ns.name, uuid, rule.id, code, onset, stamped=stamped, seq=seq)
        remember_id(ns, track.key, new_id)
        incident = Incident(
            id=new_id,
            rule=rule.id,
            code=code,
            kind=rule.category,
            severity=track.severity,
            status=Status.OPEN,
            title=incident_title(ns, track, track.severity, context),
            detail=incident_detail(track),
            context=context,
            opened_at=t,
            last_seen_at=t,
            count=1,
            peak=track.peak,
            recommended_action=track.action or rule.action,
            workload=workload_of(uuid, batch.sample or ns.last_sample),
        )
        track.incident = incident
        track.last_emit = t
        self._by_id[new_id] = ns
        evidence = self._recorder.start(ns, incident, uuid, t)
        log.info("incident opened: %s %s %s", ns.name, rule.id, incident.title)
        batch.changes.append(IncidentChange(ChangeKind.OPENED, incident, t, evidence=evidence))

    def seen(
        self,
        ns: NodeState,
        track: Track,
        severity: Severity,
        t: float,
        batch: Batch,
        *,
        recurred: bool,
        event: bool,
        new_detail: bool,
    ) -> None:
        """The open incident's condition was seen again at ``severity``: escalate, count a recurrence, or note
        ``last_seen_at`` and the peak (the latter at most every ``update_every_s``). ``new_detail``: the finding
        brought a detail text of its own (already on the track)."""
        incident = track.incident
        assert incident is not None
        escalated = severity > incident.severity
        workload = grown_workload(incident, batch.sample)
        if not (escalated or recurred or workload is not None or t - track.last_emit >= self._update_every_s):
            return
        updates: dict[str, object] = {"last_seen_at": t, "peak": track.peak}
        if workload is not None:
            updates["workload"] = workload
        note = ""
        if escalated:
            track.severity = severity
            updates["severity"] = severity
            updates["title"] = incident_title(ns, track, severity)
            note = f"escalated to {severity.label}"
        if recurred:
            updates["count"] = incident.count + 1
        if new_detail and (escalated or event):
            updates["detail"] = incident_detail(track)
        incident = dataclasses.replace(incident, **updates)  # type: ignore[arg-type]
        track.incident = incident
        track.last_emit = t
        batch.changes.append(IncidentChange(ChangeKind.UPDATED, incident, t, note))

    def still_seen(self, track: Track, t: float, batch: Batch) -> None:
        """A repeated sample holds the condition: report ``last_seen_at`` as often as a new sample would."""
        incident = track.incident
        assert incident is not None
        if t - track.last_emit >= self._update_every_s:
            track.incident = dataclasses.replace(incident, last_seen_at=t, peak=track.peak)
            track.last_emit = t
            batch.changes.append(IncidentChange(ChangeKind.UPDATED, track.incident, t, ""))

    def unknown(self, ns: NodeState, track: Track, t: float, batch: Batch) -> None:
        """The open incident's inputs are missing from this result: say so, and hold it (neither seen nor clear)."""
        incident = track.incident
        assert incident is not None
        since = ns.last_complete_t if batch.failures and ns.last_complete_t is not None else t
        note = missing_note(track.rule, batch.failures, min(since, t))
        track.unknown_since, track.unknown_note = t, note
        incident = dataclasses.replace(incident, detail=f"{incident.detail}{UNKNOWN_MARK}{note}")
        track.incident = incident
        track.last_emit = t
        log.info("incident condition unknown: %s %s: %s", ns.name, incident.title, note)
        batch.changes.append(IncidentChange(ChangeKind.UPDATED, incident, t, f"condition unknown: {note}"))

    def known_again(self, track: Track, t: float, batch: Batch) -> None:
        """Data for an unknown condition returned: drop the note; clearing counts from now."""
        incident = track.incident
        assert incident is not None
        note = f"data again at {utc_minute(t)} after {track.unknown_note}"
        detail = incident.detail.split(UNKNOWN_MARK, 1)[0]
        track.unknown_since, track.unknown_note, track.known_again = None, "", t
        track.incident = dataclasses.replace(incident, detail=detail)
        track.last_emit = t
        batch.changes.append(IncidentChange(ChangeKind.UPDATED, track.incident, t, note))

    def adopt(self, ns: NodeState, track: Track) -> None:
        """A resumed incident (open before a restart) is live again: acknowledge and resolve reach it by id."""
        assert track.incident is not None
        self._by_id[track.incident.id] = ns
        remember_id(ns, track.key, track.incident.id)

    def add_note(self, track: Track, note: str, t: float, batch: Batch) -> None:
        """Append ``note`` to the open incident's detail (e.g. the Xid that describes it)."""
        incident = track.incident
        assert incident is not None
        incident = dataclasses.replace(incident, detail=f"{incident.detail}\n{note}", last_seen_at=t)
        track.incident = incident
        track.last_emit = t
        batch.changes.append(IncidentChange(ChangeKind.UPDATED, incident, t, note))

    def auto_resolve(self, ns: NodeState, key: TrackKey, track: Track, t: float, batch: Batch) -> None:
        incident = track.incident
        assert incident is not None
        incident = dataclasses.replace(
            incident,
            status=Status.RESOLVED,
            resolved_at=t,
            outcome=Outcome.AUTO_CLEARED,
            last_seen_at=max(incident.last_seen_at, track.last_active),
            peak=track.peak,
        )
        del ns.tracks[key]
        self._by_id.pop(incident.id, None)
        self._recorder.refresh(ns, incident)
        log.info("incident cleared: %s %s", ns.name, incident.title)
        note = f"clear for {track.rule.clear_s:g} s"
        batch.changes.append(IncidentChange(ChangeKind.RESOLVED, incident, t, note))

    # --- steps the operator takes ---------------------------------------------------------------------------

    def acknowledge(self, incident_id: str, note: str, now: float) -> IncidentChange:
        _, track = self._find(incident_id)
        incident = track.incident
        assert incident is not None
        incident = dataclasses.replace(incident, status=Status.ACKNOWLEDGED, acknowledged_at=now)
        track.incident = incident
        return IncidentChange(ChangeKind.ACKNOWLEDGED, incident, now, note)

    def resolve(self, incident_id: str, note: str, outcome: Outcome, now: float) -> IncidentChange:
        ns, track = self._find(incident_id)
        incident = track.incident
        assert incident is not None
        incident = dataclasses.replace(
            incident, status=Status.RESOLVED, resolved_at=now, resolution_note=note, outcome=outcome
        )
        del ns.tracks[track.key]
        del self._by_id[incident_id]
        if track.rule.kind == "gpu_lost" and track.key[0] is not None:
            ns.memory.missing.pop(track.key[0], None)  # the operator dealt with it (e.g. replaced the GPU)
        self._recorder.refresh(ns, incident)
        return IncidentChange(ChangeKind.RESOLVED, incident, now, note)

    def open_incidents(self) -> list[Incident]:
        found = [
            track.incident for ns in self._by_id.values() for track in ns.tracks.values() if track.incident is not None
        ]
        unique = {incident.id: incident for incident in found}
        return sorted(unique.values(), key=lambda i: (-i.severity, i.opened_at, i.id))

    def _find(self, incident_id: str) -> tuple[NodeState, Track]:
        ns = self._by_id.get(incident_id)
        if ns is not None:
            track = ns.track_of(incident_id)
            if track is not None:
                return ns, track
        raise KeyError(f"no open incident with id {incident_id!r}")


# --- what an incident says ------------------------------------------------------------------------------------


def workload_of(uuid: str | None, sample: NodeSample | None) -> tuple[Workload, ...] | None:
    """What runs on the GPU ``uuid`` (on any of the node's GPUs when None); None when no source can tell."""
    if sample is None:
        return None
    if uuid is not None:
        gpu = sample.gpu(uuid)
        return gpu.workload if gpu is not None else None
    return merge_workloads(*(gpu.workload for gpu in sample.gpus))


def grown_workload(incident: Incident, sample: NodeSample | None) -> tuple[Workload, ...] | None:
    """The incident's workload with what ``sample`` shows that it lacks; None when nothing new appeared (the
    onset's stays: a job that ended is still the one the fault hit)."""
    now = workload_of(incident.context.gpu_uuid, sample)
    if not now:
        return None
    merged = merge_workloads(incident.workload, now)
    return merged if merged != incident.workload else None


def incident_context(ns: NodeState, uuid: str | None, sample: NodeSample | None) -> IncidentContext:
    gpu: GpuSample | None = None
    if uuid is not None:
        gpu = sample.gpu(uuid) if sample is not None else None
        if gpu is None:
            mem = ns.memory.gpus.get(uuid)
            gpu = mem.prev if mem is not None and mem.prev is not None else ns.memory.missing.get(uuid)
    if gpu is not None:
        return IncidentContext(
            site=ns.site,
            provider=ns.provider,
            node=ns.name,
            gpu_uuid=uuid,
            gpu_index=gpu.index,
            gpu_model=gpu.name,
            serial=gpu.serial,
            driver_version=gpu.driver_version,
            vbios_version=gpu.vbios_version,
            pci_bus_id=gpu.pci_bus_id,
        )
    # A node incident: name the node's GPU model and driver when all its GPUs agree (for "seen before").
    gpus = sample.gpus if sample is not None else ()
    models = {g.name for g in gpus}
    drivers = {g.driver_version for g in gpus}
    return IncidentContext(
        site=ns.site,
        provider=ns.provider,
        node=ns.name,
        gpu_uuid=uuid,
        gpu_model=models.pop() if len(models) == 1 else None,
        driver_version=drivers.pop() if len(drivers) == 1 else None,
    )


def incident_title(ns: NodeState, track: Track, severity: Severity, context: IncidentContext | None = None) -> str:
    rule = track.rule
    gpu_index = (
        context.gpu_index
        if context is not None
        else (track.incident.context.gpu_index if track.incident is not None else None)
    )
    fields = {
        "node": ns.name,
        "site": ns.site,
        "gpu_index": "-" if gpu_index is None else gpu_index,
        "gpu_uuid": track.key[0] or "-",
        "code": track.key[2],
        "value": track.value if track.value is not None else math.nan,
        "severity": severity.label,
        "mnemonic": track.mnemonic,
        "detail": track.detail,
        "signal": rule.signal,
    }
    try:
        return " ".join(rule.title.format_map(fields).split())  # an empty {code} leaves no double space
    except (ValueError, TypeError, KeyError, IndexError):
        return f"{rule.id} {track.key[2]} on {ns.name}".strip()


def incident_detail(track: Track) -> str:
    rule = track.rule
    parts = [track.detail] if track.detail else []
    if track.value is not None and rule.thresholds:
        unit = f" {rule.unit}" if rule.unit else ""
        parts.append(f"{rule.signal or rule.kind} {track.value:.4g}{unit} ({rule.threshold_text()})")
    if rule.for_s:
        parts.append(f"held for {rule.for_s:g} s since {utc_minute(track.pending_since)}")
    return "; ".join(parts)
