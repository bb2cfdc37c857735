"""Which root incidents are open, which ended lately, and what each incident change means for the people told.

Only root incidents are told (a symptom rides under its cause). From the stream of the engine's changes this
derives events: a root seen for the first time *opened*; one whose severity rose *escalated*; one resolved
*resolved*; one that became a symptom of another incident *grouped* (its cause speaks for it now). An incident
that ended is kept ``keep_s`` (15 minutes, as Prometheus keeps re-sending a resolution), so its end is sent again
to a receiver that was away. Ids are never given out again, so a change arriving late for an ended incident (two
threads publish changes) is ignored rather than reopening it.

``Intake`` is where changes wait for the notifier's loop: bounded, coalesced per incident (the newest state of an
incident is what matters), and past its limit the oldest non-resolution is dropped and counted; a resolution is
never dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from console.incidents.model import ChangeKind, Incident, IncidentChange, Status
from console.notify.alerts import RESOLVED_KEEP_S, Event


@dataclass(frozen=True, slots=True)
class Tracked:
    """One change as the receivers see it: the incident now, what it means (None: nothing to tell), when."""

    incident: Incident
    event: Event | None
    time: float
    previous: Incident | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    incident: Incident
    ended_at: float


class RootTracker:
    """Runs on the notifier's loop only (no lock)."""

    def __init__(self, keep_s: float = RESOLVED_KEEP_S) -> None:
        self.keep_s = keep_s
        self.open: dict[str, Incident] = {}
        self.ended: dict[str, Ended] = {}

    def resume(self, incidents: Iterable[Incident]) -> None:
        """Open roots of an earlier run: known (so not announced again as opened), and sent to Alertmanager."""
        for incident in incidents:
            if incident.parent_id is None and incident.status is not Status.RESOLVED:
                self.open.setdefault(incident.id, incident)

    def apply(self, change: IncidentChange) -> Tracked | None:
        if change.kind in (ChangeKind.EVIDENCE, ChangeKind.ACKNOWLEDGED):
            return None  # no new fact about the fault (an acknowledged fault is still a fault)
        incident = change.incident
        if incident.id in self.ended:
            return None
        previous = self.open.get(incident.id)
        if incident.status is Status.RESOLVED:
            if previous is None and incident.parent_id is not None:
                return None  # a symptom that ends: never told, nothing to end
            self.open.pop(incident.id, None)
            ended_at = incident.resolved_at if incident.resolved_at is not None else change.time
            self.ended[incident.id] = Ended(incident, ended_at)
            return Tracked(incident, Event.RESOLVED, change.time, previous)
        if incident.parent_id is not None:
            if previous is None:
                return None
            del self.open[incident.id]
            self.ended[incident.id] = Ended(incident, change.time)
            return Tracked(incident, Event.GROUPED, change.time, previous)
        self.open[incident.id] = incident
        if previous is None:
            return Tracked(incident, Event.OPENED, change.time)
        if incident.severity > previous.severity:
            return Tracked(incident, Event.ESCALATED, change.time, previous)
        return Tracked(incident, None, change.time, previous)

    def relevant(self, incident_id: str, now: float) -> bool:
        """Still worth telling: open, or ended less than ``keep_s`` ago."""
        if incident_id in self.open:
            return True
        ended = self.ended.get(incident_id)
        return ended is not None and now - ended.ended_at < self.keep_s

    def prune(self, now: float) -> None:
        stale = [iid for iid, ended in self.ended.items() if now - ended.ended_at >= self.keep_s]
        for iid in stale:
            # Kept a while longer than relevant, so a very late change for it is still recognised and ignored.
            if now - self.ended[iid].ended_at >= 4 * self.keep_s:
                del self.ended[iid]


class Intake:
    """Changes from any thread (``put`` is a dict insert under a lock, never a wait) for the notifier's loop."""

    def __init__(self, limit: int) -> None:
        self._limit = max(limit, 1)
        self._lock = threading.Lock()
        self._pending: dict[str, IncidentChange] = {}
        self._resumed: list[Incident] = []
        self._dropped = 0

    def put(self, changes: Sequence[IncidentChange]) -> None:
        with self._lock:
            for change in changes:
                if change.kind in (ChangeKind.EVIDENCE, ChangeKind.ACKNOWLEDGED):
                    continue
                incident_id = change.incident.id
                queued = self._pending.get(incident_id)
                if queued is not None and queued.incident.status is Status.RESOLVED:
                    continue  # a late change published by another thread must not reopen it
                if queued is None and len(self._pending) >= self._limit:
                    self._drop_oldest()
                self._pending[incident_id] = change

    def _drop_oldest(self) -> None:
        for incident_id, change in self._pending.items():
            if change.incident.status is not Status.RESOLVED:
                del self._pending[incident_id]
                self._dropped += 1
                return

    def put_resumed(self, incidents: Iterable[Incident]) -> None:
        roots = [i for i in incidents if i.parent_id is None and i.status is not Status.RESOLVED]
        with self._lock:
            self._resumed.extend(roots)

    def take(self) -> tuple[list[Incident], list[IncidentChange]]:
        """What came in since the last take: resumed open roots, then the changes in arrival order."""
        with self._lock:
            resumed, self._resumed = self._resumed, []
            batch, self._pending = self._pending, {}
        return resumed, list(batch.values())

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped
