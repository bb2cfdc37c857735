"""Running the detectors: a poll result, its sample and its events in, hits on condition tracks out.

This is the hot path of ``IncidentEngine.observe``: per GPU it runs the plan's level detectors and allocates
nothing while the GPU is healthy (a value short of every threshold is skipped with one comparison). Xid codes are
read from events and, where only the last Xid is visible (dcgm-exporter), from a change of ``xid_last``; the Xids
that describe the one before them annotate that incident instead of opening their own.
"""

from __future__ import annotations

import operator

from console.incidents.detectors import DETECTORS, Finding, GpuMemory, uuid_at_index
from console.incidents.lifecycle import IncidentLifecycle
from console.incidents.plan import RulePlan
from console.incidents.rule import Rule
from console.incidents.state import Batch, NodeState
from console.incidents.tracking import ConditionTracker
from console.incidents.xid import XidCatalog
from console.samples.results import PollResult
from console.samples.schema import (
    MAX_GPUS_PER_NODE,
    RECOVERY_ACTION_CODES,
    EventKind,
    NodeSample,
    RecoveryAction,
)

_uuid_of = operator.attrgetter("uuid")


class DetectorRunner:
    __slots__ = ("_catalog", "_lifecycle", "_tracker")

    def __init__(self, tracker: ConditionTracker, lifecycle: IncidentLifecycle, catalog: XidCatalog) -> None:
        self._tracker = tracker
        self._lifecycle = lifecycle
        self._catalog = catalog

    def result(self, ns: NodeState, result: PollResult, t: float, batch: Batch) -> None:
        """The rules judged on the poll result itself (unreachable, slow collector)."""
        finding = self._tracker.finding
        memory = ns.memory
        for rule, result_fn in ns.plan.result:
            for found in result_fn(rule, result, memory, t, ns.interval_s):
                finding(batch, rule, found, False)

    def silence(self, ns: NodeState, rule: Rule, now: float, since: float, batch: Batch) -> None:
        """The stale rule: how many intervals the node has been silent (``since``: its last result, or start-up)."""
        silence = now - since
        detail = f"no poll result for {silence:.0f} s (interval {ns.interval_s:g} s)"
        self._tracker.finding(batch, rule, Finding(None, value=silence / ns.interval_s, detail=detail), False)

    def enumeration(self, ns: NodeState, sample: NodeSample) -> None:
        """Remember GPUs that left the enumeration (for ``gpu_lost``), within a bounded memory."""
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

    def sample(self, ns: NodeState, plan: RulePlan, sample: NodeSample, t: float, batch: Batch) -> None:
        """A new sample: its events, every GPU's level and flag rules, an ``xid_last`` change, the node rules."""
        tracks = ns.tracks
        gpu_memory = ns.memory.gpus
        gpu_level = plan.gpu_level
        gpu_flag = plan.gpu_flag
        hit = self._tracker.hit
        finding = self._tracker.finding
        xid_rule = plan.xid
        xid_seen: set[str | None] = set()
        if sample.events:
            xid_seen = self._events(plan, sample, batch)
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
                found = flag_fn(rule, gpu, mem, t)
                if found is not None:
                    finding(batch, rule, found, event)
            if xid_rule is not None and gpu.xid_last and uuid not in xid_seen:
                prev = mem.prev
                if prev is not None and prev.xid_last != gpu.xid_last:
                    # Only the last Xid is visible (dcgm-exporter): a change is a new one, the first sight is history.
                    self._xid(batch, xid_rule, uuid, gpu.xid_last, "")
            mem.prev = gpu
            mem.prev_t = t
        node_memory = ns.memory
        for rule, node_fn, event in plan.node:
            for found in node_fn(rule, sample, node_memory, t):
                finding(batch, rule, found, event)

    def _events(self, plan: RulePlan, sample: NodeSample, batch: Batch) -> set[str | None]:
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
            self._tracker.finding(batch, rule, Finding(uuid, code, detail=detail), DETECTORS[rule.kind].event)
        return xid_seen

    def _xid(self, batch: Batch, rule: Rule, uuid: str | None, code: int, message: str) -> None:
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
        self._tracker.hit(
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

    def _annotate(self, batch: Batch, rule: Rule, uuid: str | None, code: int, message: str) -> bool:
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
        note = f"followed by Xid {code}" + (f": {message}" if message else "")
        self._lifecycle.add_note(target, note, t, batch)
        return True
