"""The incident engine: poll results in, lifecycle changes out.

Called from one thread at a time (the app serialises calls). ``observe`` runs on every poll result and must stay
cheap: per GPU it runs the level detectors and allocates nothing while the GPU is healthy. ``tick`` (about once a
second) finds stale nodes, promotes node conditions that need no new sample, resolves what stayed clear long
enough and flushes evidence batches.

A result that repeats the previous sample (``PollResult.fresh`` False: the exporter served the same bytes) takes a
light path: liveness and result rules only, while the conditions of that sample are held as still true.

One incident per (node, GPU UUID or none, rule, code) at a time. Severity only escalates during one incident; a
recurrence after resolution opens a new one with a new id (a hash of node, GPU, rule, code and opening time, so
ids are stable across databases and ``merge`` can deduplicate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from console.config.fleet import Fleet
from console.incidents.detectors import DETECTORS, Finding, GpuMemory, NodeMemory, Scope, uuid_at_index
from console.incidents.evidence import Recording, SampleBuffer, SampleJson
from console.incidents.model import (
    ChangeKind,
    EvidencePoint,
    Incident,
    IncidentChange,
    IncidentContext,
    Outcome,
    Severity,
    Status,
)
from console.incidents.rules import Direction, Rule, RuleSet
from console.incidents.xid import XidCatalog, load_xid_catalog
from console.samples.results import PollResult
from console.samples.schema import (
    MAX_GPUS_PER_NODE,
    RECOVERY_ACTION_CODES,
    EventKind,
    GpuSample,
    NodeSample,
    RecoveryAction,
)

log = logging.getLogger(__name__)

TrackKey = tuple[str | None, str, str]  # (gpu uuid or None, rule id, code)

# GpuEvents that feed a rule directly, besides what the rule reads from the sample: (detector kind, signal).
_EVENT_RULES: dict[EventKind, tuple[str, str]] = {
    EventKind.ECC_DBE: ("counter_increase", "ecc_dbe_volatile"),
    EventKind.ROW_REMAP_FAILURE: ("gpu_flag", "remapped_rows_failure"),
    EventKind.RECOVERY_ACTION: ("recovery_action", ""),
}


def incident_id(node: str, gpu_uuid: str | None, rule: str, code: str, opened_at: float) -> str:
    text = f"{node}\x1f{gpu_uuid or ''}\x1f{rule}\x1f{code}\x1f{opened_at:.3f}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


_uuid_of = operator.attrgetter("uuid")


@dataclass(slots=True)
class _Track:
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


@dataclass(slots=True)
class _Plan:
    """The rules of one (site, provider), sorted by how the engine runs them.

    A GPU level rule comes with (below, limit): its value can cross a threshold only when it is at or past
    ``limit`` in its direction, so the usual healthy value skips ``Rule.level``."""

    gpu_level: list[tuple[Rule, Callable[..., float | None], str, bool, float]] = field(default_factory=list)
    gpu_flag: list[tuple[Rule, Callable[..., Finding | None], bool]] = field(default_factory=list)
    node: list[tuple[Rule, Callable[..., list[Finding]], bool]] = field(default_factory=list)
    result: list[tuple[Rule, Callable[..., list[Finding]]]] = field(default_factory=list)
    result_ids: frozenset[str] = frozenset()
    xid: Rule | None = None
    stale: Rule | None = None
    events: dict[EventKind, Rule] = field(default_factory=dict)


def _plan(rules: tuple[Rule, ...]) -> _Plan:
    plan = _Plan()
    for rule in rules:
        if not rule.enabled:
            continue
        detector = DETECTORS[rule.kind]
        for event_kind, (kind, signal) in _EVENT_RULES.items():
            if rule.kind == kind and (not signal or rule.signal == signal):
                plan.events[event_kind] = rule
        if detector.scope is Scope.GPU:
            if detector.level:
                code = rule.signal if detector.code_is_signal else ""
                below = rule.direction is Direction.BELOW
                limits = [threshold for _, threshold in rule.thresholds]
                limit = max(limits, default=-math.inf) if below else min(limits, default=math.inf)
                plan.gpu_level.append((rule, detector.fn, code, below, limit))  # type: ignore[arg-type]
            else:
                plan.gpu_flag.append((rule, detector.fn, detector.event))  # type: ignore[arg-type]
        elif detector.scope is Scope.NODE:
            plan.node.append((rule, detector.fn, detector.event))  # type: ignore[arg-type]
        elif detector.scope is Scope.RESULT:
            plan.result.append((rule, detector.fn))  # type: ignore[arg-type]
        elif rule.kind == "xid":
            plan.xid = rule
        elif rule.kind == "stale":
            plan.stale = rule
    plan.result_ids = frozenset({rule.id for rule, _ in plan.result} | ({plan.stale.id} if plan.stale else set()))
    return plan


@dataclass(slots=True)
class _NodeState:
    name: str
    site: str
    provider: str
    interval_s: float
    plan: _Plan
    buffer: SampleBuffer
    memory: NodeMemory = field(default_factory=NodeMemory)
    tracks: dict[TrackKey, _Track] = field(default_factory=dict)
    recordings: list[Recording] = field(default_factory=list)
    last_result_t: float | None = None
    last_result_ok: bool = True
    last_sample: NodeSample | None = None
    gpu_ids: tuple[str, ...] = ()


class _Batch:
    """The changes and touched tracks of one observe/tick call."""

    __slots__ = ("changes", "ns", "sample", "t", "touched")

    def __init__(self, ns: _NodeState | None, t: float, sample: NodeSample | None) -> None:
        self.changes: list[IncidentChange] = []
        self.touched: set[TrackKey] = set()
        self.ns = ns
        self.t = t
        self.sample = sample


class IncidentEngine:
    def __init__(
        self,
        rules: RuleSet,
        fleet: Fleet,
        *,
        clock: Callable[[], float] = time.time,
        xid_catalog: XidCatalog | None = None,
    ) -> None:
        self._rules = rules
        self._fleet = fleet
        self._clock = clock
        self._catalog = xid_catalog if xid_catalog is not None else load_xid_catalog()
        self._started = clock()
        self._plans: dict[tuple[str, str], _Plan] = {}
        self._nodes: dict[str, _NodeState] = {}
        self._by_id: dict[str, _NodeState] = {}
        sites = {site.name: site for site in fleet.sites}
        for node in fleet.nodes:
            site = sites.get(node.site)
            provider = site.provider if site else ""
            interval = node.interval_s if node.interval_s is not None else (site.interval_s if site else 1.0)
            self._nodes[node.name] = self._new_node(node.name, node.site, provider, interval)

    # --- public API ---------------------------------------------------------------------------------------

    def observe(self, result: PollResult) -> list[IncidentChange]:
        ns = self._nodes.get(result.node)
        if ns is None:
            ns = self._nodes[result.node] = self._new_node(result.node, result.site, "", 1.0)
        t = result.started + result.latency_s
        sample = result.sample
        batch = _Batch(ns, t, sample)
        plan = ns.plan
        memory = ns.memory
        ns.last_result_t = t
        ns.last_result_ok = sample is not None
        for rule, result_fn in plan.result:
            for finding in result_fn(rule, result, memory, t, ns.interval_s):
                self._finding(batch, rule, finding, False)
        if sample is None:
            new = False
        elif not result.fresh and sample is ns.last_sample:
            # The source served the very measurement it served last time: the node is alive and the conditions
            # of that measurement still hold. Nothing new to evaluate, buffer or record.
            new = False
            if ns.tracks:
                self._hold(ns, t, batch)
        else:
            new = True
            ns.buffer.add(t, sample)
            if result.ok:
                self._track_enumeration(ns, sample)
            self._observe_sample(ns, plan, sample, t, batch)
            ns.last_sample = sample
        if ns.tracks:
            self._settle_untouched(ns, t, batch, new)
        if ns.recordings:
            self._record(ns, t, sample if new else None, batch)
        return batch.changes

    def tick(self, now: float) -> list[IncidentChange]:
        batch = _Batch(None, now, None)
        for ns in self._nodes.values():
            batch.ns = ns
            stale = ns.plan.stale
            if stale is not None and ns.last_result_ok:
                silence = now - (ns.last_result_t if ns.last_result_t is not None else self._started)
                batch.sample = ns.last_sample
                detail = f"no poll result for {silence:.0f} s (interval {ns.interval_s:g} s)"
                self._finding(batch, stale, Finding(None, value=silence / ns.interval_s, detail=detail), False)
            if ns.tracks:
                batch.sample = ns.last_sample
                for key, track in list(ns.tracks.items()):
                    if track.incident is None:
                        if (
                            track.active
                            and track.rule.id in ns.plan.result_ids
                            and now - track.pending_since >= track.rule.for_s
                        ):
                            self._open(ns, track, now, batch)
                    elif not track.active and now - track.last_active >= track.rule.clear_s:
                        self._auto_resolve(ns, key, track, now, batch)
            if ns.recordings:
                self._flush_recordings(ns, now, batch)
        return batch.changes

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
        self._refresh_recording(ns, incident)
        return IncidentChange(ChangeKind.RESOLVED, incident, now, note)

    def open_incidents(self) -> list[Incident]:
        found = [
            track.incident for ns in self._by_id.values() for track in ns.tracks.values() if track.incident is not None
        ]
        unique = {incident.id: incident for incident in found}
        return sorted(unique.values(), key=lambda i: (-i.severity, i.opened_at, i.id))

    def buffered_samples(self, node: str) -> int:
        """How many samples the engine holds for ``node`` (for memory accounting and tests)."""
        ns = self._nodes.get(node)
        return len(ns.buffer) if ns else 0

    # --- observing ----------------------------------------------------------------------------------------

    def _new_node(self, name: str, site: str, provider: str, interval_s: float) -> _NodeState:
        key = (site, provider)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _plan(self._rules.for_scope(site, provider))
        return _NodeState(name, site, provider, interval_s, plan, SampleBuffer(self._rules.evidence))

    def _track_enumeration(self, ns: _NodeState, sample: NodeSample) -> None:
        ids = tuple(map(_uuid_of, sample.gpus))
        if ids == ns.gpu_ids:
            return
        missing = ns.memory.missing
        if ns.last_sample is not None:
            for uuid in set(ns.gpu_ids) - set(ids):
                last = ns.memory.gpus.get(uuid)
                if last is not None and last.prev is not None:
                    missing[uuid] = last.prev
        for uuid in ids:
            missing.pop(uuid, None)
        ns.gpu_ids = ids
        # A node that reports a new UUID every poll (a broken exporter) must not grow this memory without bound:
        # forget the longest-known GPUs that are not present now (dicts keep insertion order).
        current = set(ids)
        for table in (ns.memory.gpus, missing):
            room = MAX_GPUS_PER_NODE - sum(1 for u in current if u not in table)  # new GPUs get memory next
            if len(table) > room:
                for uuid in [u for u in table if u not in current][: len(table) - room]:
                    del table[uuid]

    def _observe_sample(self, ns: _NodeState, plan: _Plan, sample: NodeSample, t: float, batch: _Batch) -> None:
        tracks = ns.tracks
        gpu_memory = ns.memory.gpus
        gpu_level = plan.gpu_level
        gpu_flag = plan.gpu_flag
        hit = self._hit
        xid_rule = plan.xid
        xid_seen: set[str | None] = set()
        if sample.events:
            xid_seen = self._observe_events(ns, plan, sample, t, batch)
        for gpu in sample.gpus:
            uuid = gpu.uuid
            mem = gpu_memory.get(uuid)
            if mem is None:
                mem = gpu_memory[uuid] = GpuMemory()
            for rule, level_fn, code, below, limit in gpu_level:
                value = level_fn(rule, gpu, mem, t)
                if value is None:
                    continue
                severity = rule.level(value) if (value <= limit if below else value >= limit) else None
                if severity is None:
                    if not tracks:
                        continue
                    track = tracks.get((uuid, rule.id, code))
                    if track is None or not rule.holds(value):
                        continue
                    severity = track.severity
                hit(batch, rule, (uuid, rule.id, code), severity, value)
            for rule, flag_fn, event in gpu_flag:
                finding = flag_fn(rule, gpu, mem, t)
                if finding is not None:
                    self._finding(batch, rule, finding, event)
            if xid_rule is not None and gpu.xid_last and uuid not in xid_seen:
                prev = mem.prev
                if prev is not None and prev.xid_last != gpu.xid_last:
                    # Only the last Xid is visible (dcgm-exporter): a change is a new one, the first sight is history.
                    self._xid(batch, xid_rule, uuid, gpu.xid_last, "")
            mem.prev = gpu
            mem.prev_t = t
        node_memory = ns.memory
        for rule, node_fn, event in plan.node:
            for finding in node_fn(rule, sample, node_memory, t):
                self._finding(batch, rule, finding, event)

    def _observe_events(
        self, ns: _NodeState, plan: _Plan, sample: NodeSample, t: float, batch: _Batch
    ) -> set[str | None]:
        xid_seen: set[str | None] = set()
        for event in sample.events:
            uuid = event.gpu_uuid
            if uuid is None and event.gpu_index is not None:
                uuid = uuid_at_index(sample, event.gpu_index)
            if event.kind is EventKind.XID:
                if plan.xid is not None and event.code is not None:
                    xid_seen.add(uuid)
                    self._xid(batch, plan.xid, uuid, event.code, event.message)
                continue
            rule = plan.events.get(event.kind)
            if rule is None:
                continue
            code = ""
            if event.kind is EventKind.RECOVERY_ACTION:
                action = RECOVERY_ACTION_CODES.get(event.code if event.code is not None else -1)
                if action is None or action is RecoveryAction.NONE:
                    continue
                code = str(action)
            detail = event.message or f"{event.kind} event"
            self._finding(batch, rule, Finding(uuid, code, detail=detail), DETECTORS[rule.kind].event)
        return xid_seen

    def _xid(self, batch: _Batch, rule: Rule, uuid: str | None, code: int, message: str) -> None:
        entry = self._catalog.get(code)
        if entry is not None and entry.annotates_previous and self._annotate(batch, rule, uuid, code, message):
            return
        if entry is None:
            severity, action, mnemonic = self._catalog.unknown_severity, self._catalog.unknown_action, "unknown Xid"
            detail = f"Xid {code} is not in NVIDIA's catalog. Raw: {message or '(no message)'}"
        else:
            severity, action, mnemonic = entry.severity_for(message), entry.action, entry.mnemonic or f"Xid {code}"
            detail = (
                f"Xid {code} {entry.mnemonic}: {entry.description}. NVIDIA resolution: immediate "
                f"{entry.immediate_bucket or 'n/a'}, investigatory {entry.investigatory_bucket or 'n/a'}."
            )
            if message:
                detail += f" Raw: {message}"
        self._hit(
            batch,
            rule,
            (uuid, rule.id, str(code)),
            severity,
            None,
            detail=detail,
            event=True,
            action=action,
            mnemonic=mnemonic,
        )

    def _annotate(self, batch: _Batch, rule: Rule, uuid: str | None, code: int, message: str) -> bool:
        """Xid 45/154 describe the Xid before them: add to that incident instead of opening one of their own."""
        ns, t = batch.ns, batch.t
        assert ns is not None
        annotating = {c for c, e in self._catalog.entries.items() if e.annotates_previous}
        candidates = [
            track
            for key, track in ns.tracks.items()
            if key[0] == uuid
            and key[1] == rule.id
            and track.incident is not None
            and int(key[2]) not in annotating
            and t - track.last_active <= rule.clear_s
        ]
        if not candidates:
            return False
        target = max(candidates, key=lambda track: track.last_active)
        incident = target.incident
        assert incident is not None
        note = f"followed by Xid {code}" + (f": {message}" if message else "")
        incident = dataclasses.replace(incident, detail=f"{incident.detail}\n{note}", last_seen_at=t)
        target.incident = incident
        target.last_emit = t
        batch.changes.append(IncidentChange(ChangeKind.UPDATED, incident, t, note))
        return True

    def _finding(self, batch: _Batch, rule: Rule, finding: Finding, event: bool) -> None:
        ns = batch.ns
        assert ns is not None
        key = (finding.gpu_uuid, rule.id, finding.code)
        severity = finding.severity
        if severity is None:
            if rule.thresholds:
                if finding.value is None:
                    return
                severity = rule.level(finding.value)
                if severity is None:
                    track = ns.tracks.get(key)
                    if track is None or not rule.holds(finding.value):
                        return
                    severity = track.severity
            else:
                severity = rule.severity
        self._hit(batch, rule, key, severity, finding.value, detail=finding.detail, event=event)

    def _hit(
        self,
        batch: _Batch,
        rule: Rule,
        key: TrackKey,
        severity: Severity,
        value: float | None,
        *,
        detail: str = "",
        event: bool = False,
        action: str = "",
        mnemonic: str = "",
    ) -> None:
        ns, t = batch.ns, batch.t
        assert ns is not None
        batch.touched.add(key)
        track = ns.tracks.get(key)
        if track is None:
            track = ns.tracks[key] = _Track(rule, key, pending_since=t, last_active=t, severity=severity)
            track.action, track.mnemonic = action, mnemonic
        was_active = track.active
        track.active = not event  # an event is seen at one instant; its incident clears after clear_s of silence
        track.last_active = t
        track.value = value
        if detail:
            track.detail = detail
        if value is not None:
            worse = track.peak is None or (value < track.peak if rule.direction == "below" else value > track.peak)
            if worse:
                track.peak = value
        incident = track.incident
        if incident is None:
            track.severity = max(track.severity, severity)
            if t - track.pending_since >= rule.for_s:
                self._open(ns, track, t, batch)
            return
        escalated = severity > incident.severity
        recurred = event or not was_active
        if not (escalated or recurred or t - track.last_emit >= self._rules.update_every_s):
            return
        updates: dict[str, object] = {"last_seen_at": t, "peak": track.peak}
        note = ""
        if escalated:
            track.severity = severity
            updates["severity"] = severity
            updates["title"] = self._title(ns, track, severity)
            note = f"escalated to {severity.label}"
        if recurred:
            updates["count"] = incident.count + 1
        if detail and (escalated or event):
            updates["detail"] = self._detail(track)
        incident = dataclasses.replace(incident, **updates)  # type: ignore[arg-type]
        track.incident = incident
        track.last_emit = t
        batch.changes.append(IncidentChange(ChangeKind.UPDATED, incident, t, note))

    def _hold(self, ns: _NodeState, t: float, batch: _Batch) -> None:
        """A repeated sample: what the last new sample found still holds at ``t``, as if it were seen again.

        Sample conditions stay active and their clocks run: a pending one opens once ``for_s`` has passed, an open
        one reports ``last_seen_at`` as often as a new sample would, and ``clear_s`` counts from the last repeat."""
        result_ids = ns.plan.result_ids
        touched = batch.touched
        for key, track in list(ns.tracks.items()):
            if not track.active or key in touched or track.rule.id in result_ids:
                continue
            touched.add(key)
            track.last_active = t
            incident = track.incident
            if incident is None:
                if t - track.pending_since >= track.rule.for_s:
                    self._open(ns, track, t, batch)
            elif t - track.last_emit >= self._rules.update_every_s:
                incident = dataclasses.replace(incident, last_seen_at=t, peak=track.peak)
                track.incident = incident
                track.last_emit = t
                batch.changes.append(IncidentChange(ChangeKind.UPDATED, incident, t, ""))

    def _settle_untouched(self, ns: _NodeState, t: float, batch: _Batch, new_sample: bool) -> None:
        """Conditions not seen in this result are inactive; resolve those clear for ``clear_s``.

        Without a new sample (a failed poll, or a repeat) only result conditions are known to be absent."""
        touched = batch.touched
        result_ids = ns.plan.result_ids
        for key, track in list(ns.tracks.items()):
            if key in touched:
                continue
            if not new_sample and track.rule.id not in result_ids:
                continue  # no new data about this condition
            track.active = False
            if track.incident is None:
                del ns.tracks[key]  # a pending condition that went away: its for_s starts over next time
            elif t - track.last_active >= track.rule.clear_s:
                self._auto_resolve(ns, key, track, t, batch)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _open(self, ns: _NodeState, track: _Track, t: float, batch: _Batch) -> None:
        rule = track.rule
        uuid, _, code = track.key
        context = self._context(ns, uuid, batch.sample or ns.last_sample)
        new_id = incident_id(ns.name, uuid, rule.id, code, t)
        incident = Incident(
            id=new_id,
            rule=rule.id,
            code=code,
            kind=rule.category,
            severity=track.severity,
            status=Status.OPEN,
            title=self._title(ns, track, track.severity, context),
            detail=self._detail(track),
            context=context,
            opened_at=t,
            last_seen_at=t,
            count=1,
            peak=track.peak,
            recommended_action=track.action or rule.action,
        )
        track.incident = incident
        track.last_emit = t
        self._by_id[new_id] = ns
        evidence = tuple(EvidencePoint(new_id, when, text) for when, text in ns.buffer.evidence(ns.name, ns.site, uuid))
        settings = self._rules.evidence
        ns.recordings.append(Recording(incident, uuid, started=t, until=t + settings.after_s, last_point_t=t))
        log.info("incident opened: %s %s %s", ns.name, rule.id, incident.title)
        batch.changes.append(IncidentChange(ChangeKind.OPENED, incident, t, evidence=evidence))

    def _auto_resolve(self, ns: _NodeState, key: TrackKey, track: _Track, t: float, batch: _Batch) -> None:
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
        self._refresh_recording(ns, incident)
        log.info("incident cleared: %s %s", ns.name, incident.title)
        note = f"clear for {track.rule.clear_s:g} s"
        batch.changes.append(IncidentChange(ChangeKind.RESOLVED, incident, t, note))

    def _find(self, incident_id: str) -> tuple[_NodeState, _Track]:
        ns = self._by_id.get(incident_id)
        if ns is not None:
            for track in ns.tracks.values():
                if track.incident is not None and track.incident.id == incident_id:
                    return ns, track
        raise KeyError(f"no open incident with id {incident_id!r}")

    def _context(self, ns: _NodeState, uuid: str | None, sample: NodeSample | None) -> IncidentContext:
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

    def _title(self, ns: _NodeState, track: _Track, severity: Severity, context: IncidentContext | None = None) -> str:
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
            return rule.title.format_map(fields)
        except (ValueError, TypeError, KeyError, IndexError):
            return f"{rule.id} {track.key[2]} on {ns.name}".strip()

    def _detail(self, track: _Track) -> str:
        rule = track.rule
        parts = [track.detail] if track.detail else []
        if track.value is not None and rule.thresholds:
            unit = f" {rule.unit}" if rule.unit else ""
            parts.append(f"{rule.signal or rule.kind} {track.value:.4g}{unit} ({rule.threshold_text()})")
        if rule.for_s:
            parts.append(f"held for {rule.for_s:g} s since {track.pending_since:.0f}")
        return "; ".join(parts)

    # --- evidence -----------------------------------------------------------------------------------------

    def _record(self, ns: _NodeState, t: float, sample: NodeSample | None, batch: _Batch) -> None:
        settings = self._rules.evidence
        if sample is not None:
            pieces = SampleJson(sample)  # encodes lazily, once per GPU, for every recording that wants this point
            for recording in ns.recordings:
                recording.offer(t, pieces, settings)
        self._flush_recordings(ns, t, batch)

    def _flush_recordings(self, ns: _NodeState, now: float, batch: _Batch) -> None:
        settings = self._rules.evidence
        keep = []
        for recording in ns.recordings:
            if recording.due(now, settings):
                incident = self._current(ns, recording.incident)
                recording.incident = incident
                batch.changes.append(IncidentChange(ChangeKind.EVIDENCE, incident, now, evidence=recording.take()))
            if now < recording.until or recording.batch:
                keep.append(recording)
        ns.recordings = keep

    def _current(self, ns: _NodeState, incident: Incident) -> Incident:
        if incident.id in self._by_id:
            for track in ns.tracks.values():
                if track.incident is not None and track.incident.id == incident.id:
                    return track.incident
        return incident

    def _refresh_recording(self, ns: _NodeState, incident: Incident) -> None:
        for recording in ns.recordings:
            if recording.incident.id == incident.id:
                recording.incident = incident
