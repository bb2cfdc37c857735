"""Resuming the incidents of an earlier run: the open and acknowledged ones from the database become live tracks.

Without this, a restart left every open incident ``open`` in the database forever and the same fault opened a
second one. A resumed incident keeps its id, count and severity; its track starts inactive at the engine's start,
so a condition that shows again continues it (no recurrence counted for that first sighting) and one that never
shows again clears ``clear_s`` after start, as if it had last been seen then. A GPU lost before the restart is
remembered as missing again, since its absence from the enumeration is the only sign of it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

from console.incidents.lifecycle import UNKNOWN_MARK, IncidentLifecycle, remember_id
from console.incidents.model import ChangeKind, Incident, IncidentChange, Outcome, Status
from console.incidents.rules import RuleSet
from console.incidents.state import NodeState, Track
from console.samples.schema import GpuSample

log = logging.getLogger(__name__)

NodeLookup = Callable[[str, str, str], NodeState]  # (node, site, provider) -> its state, created if need be


def resume_incidents(
    node_state: NodeLookup,
    rules: RuleSet,
    lifecycle: IncidentLifecycle,
    incidents: Iterable[Incident],
    *,
    resolved: Iterable[Incident],
    now: float,
    fleet_nodes: frozenset[str],
) -> list[IncidentChange]:
    for incident in resolved:
        ns = node_state(incident.context.node, incident.context.site, incident.context.provider)
        remember_id(ns, (incident.context.gpu_uuid, incident.rule, incident.code), incident.id)
    changes: list[IncidentChange] = []
    resumed = skipped = 0
    for incident in incidents:
        if incident.status is Status.RESOLVED:
            continue
        context = incident.context
        ns = node_state(context.node, context.site, context.provider)
        key = (context.gpu_uuid, incident.rule, incident.code)
        rule = next((r for r in rules.for_scope(ns.site, ns.provider) if r.id == incident.rule), None)
        if rule is None:
            skipped += 1  # not a detection rule's (a correlation group's, or a rule since removed): not ours to end
            continue
        if not rule.enabled:
            note = f"rule {incident.rule} is disabled here now: closed at start-up"
            done = dataclasses.replace(incident, status=Status.RESOLVED, resolved_at=now, outcome=Outcome.AUTO_CLEARED)
            changes.append(IncidentChange(ChangeKind.RESOLVED, done, now, note))
            continue
        current = ns.tracks.get(key)
        if current is not None and current.incident is not None:
            # The same condition open twice in the database (an earlier run's duplicate): one stays live.
            note = f"duplicate of {current.incident.id}: closed at start-up"
            done = dataclasses.replace(incident, status=Status.RESOLVED, resolved_at=now, outcome=Outcome.AUTO_CLEARED)
            changes.append(IncidentChange(ChangeKind.RESOLVED, done, now, note))
            continue
        track = Track(
            rule,
            key,
            pending_since=incident.opened_at,
            last_active=now,
            severity=incident.severity,
            peak=incident.peak,
            action=incident.recommended_action,
            incident=incident,
            last_emit=0.0,  # its first sighting after the restart reports last_seen_at at once
            resumed=True,
        )
        if UNKNOWN_MARK in incident.detail and context.node in fleet_nodes:
            # Its data was missing when the last run ended: still unknown until it returns. (A node no longer in
            # the fleet never reports again: its incidents clear clear_s after start instead.)
            track.unknown_since = now
            track.unknown_note = incident.detail.split(UNKNOWN_MARK, 1)[1]
        ns.tracks[key] = track
        lifecycle.adopt(ns, track)
        resumed += 1
        if rule.kind == "gpu_lost" and context.gpu_uuid is not None and context.gpu_uuid not in ns.gpu_ids:
            ns.memory.missing[context.gpu_uuid] = GpuSample(
                index=context.gpu_index if context.gpu_index is not None else -1,
                uuid=context.gpu_uuid,
                name=context.gpu_model,
                serial=context.serial,
                pci_bus_id=context.pci_bus_id,
                driver_version=context.driver_version,
                vbios_version=context.vbios_version,
                lost=True,
            )
    if resumed or changes or skipped:
        log.info("resumed %d open incidents; closed %d; left %d of no detection rule", resumed, len(changes), skipped)
    return changes
