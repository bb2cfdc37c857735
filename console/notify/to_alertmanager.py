"""Delivery to one Alertmanager: the open root incidents it should hold, kept there as Prometheus keeps alerts.

State, not events: what Alertmanager should hold is every open root incident that passes the receiver's filters
(``endsAt`` = now + 4 min) and every one that ended less than 15 minutes ago (``endsAt`` = its end). A change is
posted at once; everything is re-posted every minute, and after a failure (with backoff) everything is posted
again, so an Alertmanager that was down or restarted (it keeps no alert state) gets the open incidents back and
the resolutions it missed. An incident whose labels change (its severity rose) ends under the old labels.
A locally silenced incident is not posted. Silenced in Alertmanager, it is: Alertmanager does the muting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from console.config.fleet import Receiver
from console.incidents.model import Incident
from console.notify.alertmanager import AlertmanagerClient
from console.notify.alerts import HOLD_INTERVALS, RESEND_S, RESOLVED_KEEP_S, Event, alert_document
from console.notify.filters import Wants, wait_event
from console.notify.health import BACKOFF_MAX_S, Health, ReceiverStatus
from console.notify.http import DeliveryError
from console.notify.tracking import Tracked

Labels = dict[str, str]
LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class _EndedAlert:
    incident: Incident
    labels: Labels
    ends_at: float


def _key(labels: Labels) -> LabelKey:
    return tuple(sorted(labels.items()))


class AlertmanagerDelivery:
    """Runs on the notifier's loop: ``consider`` each change, ``run`` posts."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        labels_of: Callable[[Incident], Labels],
        locally_silenced: Callable[[Incident], bool],
        clock: Callable[[], float] = time.time,
        resend_s: float = RESEND_S,
        keep_s: float = RESOLVED_KEEP_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.receiver = receiver
        self.health = Health(receiver, backoff_max_s=backoff_max_s)
        self._wants = Wants(receiver)
        self._labels_of = labels_of
        self._locally_silenced = locally_silenced
        self._clock = clock
        self._resend_s = resend_s
        self._keep_s = keep_s
        self._open: dict[str, tuple[Incident, Labels]] = {}
        self._ended: dict[LabelKey, _EndedAlert] = {}
        self._dirty_open: set[str] = set()
        self._dirty_ended: set[LabelKey] = set()
        self._wake = asyncio.Event()
        self._retry_in = 0.0  # the backoff after the last failure

    # --- what it should hold ---

    def resume(self, incidents: Iterable[Incident]) -> None:
        for incident in incidents:
            if self._wants(incident):
                self._open[incident.id] = (incident, self._labels_of(incident))
                self._dirty_open.add(incident.id)
        self._poke()

    def consider(self, tracked: Tracked) -> None:
        incident = tracked.incident
        before = self._open.get(incident.id)
        if tracked.event in (Event.RESOLVED, Event.GROUPED) or not self._wants(incident):
            if before is not None:
                del self._open[incident.id]
                ends_at = tracked.time
                if tracked.event is Event.RESOLVED and incident.resolved_at is not None:
                    ends_at = incident.resolved_at
                self._end(incident, before[1], ends_at)
            return
        labels = self._labels_of(incident)
        if before is not None and before[1] != labels:
            self._end(before[0], before[1], tracked.time)
        self._open[incident.id] = (incident, labels)
        if before is None or before[1] != labels:
            self._dirty_open.add(incident.id)
            self._poke()

    def _end(self, incident: Incident, labels: Labels, ends_at: float) -> None:
        key = _key(labels)
        self._ended[key] = _EndedAlert(incident, labels, max(ends_at, incident.opened_at))
        self._dirty_ended.add(key)
        self._poke()

    def _poke(self) -> None:
        self._wake.set()  # a failing receiver waits out its backoff all the same; its next try sends everything

    def wake(self) -> None:
        self._wake.set()

    def _payload(self, full: bool, now: float) -> list[dict[str, object]]:
        if full:
            for key in [k for k, ended in self._ended.items() if now - ended.ends_at >= self._keep_s]:
                del self._ended[key]
        open_ids = list(self._open) if full else [iid for iid in self._dirty_open if iid in self._open]
        ended_keys = list(self._ended) if full else [key for key in self._dirty_ended if key in self._ended]
        alerts: list[dict[str, object]] = []
        for iid in open_ids:
            incident, labels = self._open[iid]
            if not self._locally_silenced(incident):
                alerts.append(alert_document(incident, labels, now + HOLD_INTERVALS * self._resend_s))
        for key in ended_keys:
            ended = self._ended[key]
            alerts.append(alert_document(ended.incident, ended.labels, ended.ends_at))
        return alerts

    # --- posting ---

    async def run(self, session: aiohttp.ClientSession, stopping: asyncio.Event) -> None:
        client = AlertmanagerClient(self.receiver, session)
        next_full = 0.0  # monotonic; the first round posts everything (resumed incidents included)
        while not stopping.is_set():
            if self.health.failing:
                pass  # the backoff was waited below
            elif not (self._dirty_open or self._dirty_ended):
                await wait_event(self._wake, max(0.0, next_full - time.monotonic()))
                self._wake.clear()
            if stopping.is_set():
                return
            full = self.health.failing or time.monotonic() >= next_full
            if await self._post(client, full=full) and full:
                next_full = time.monotonic() + self._resend_s
            if self.health.failing:
                await wait_event(stopping, self._retry_in)

    async def _post(self, client: AlertmanagerClient, *, full: bool) -> bool:
        alerts = self._payload(full, self._clock())
        # Taken now: a change made while the POST is in flight stays dirty for the next round.
        taken_open, self._dirty_open = self._dirty_open, set()
        taken_ended, self._dirty_ended = self._dirty_ended, set()
        if alerts:
            try:
                await client.post_alerts(alerts)
            except DeliveryError as exc:
                self._dirty_open |= taken_open
                self._dirty_ended |= taken_ended
                self._retry_in = self.health.failed(str(exc), self._clock())
                return False
            self.health.succeeded(self._clock())
        return True

    async def final(self, session: aiohttp.ClientSession) -> None:
        """At stop: one last try for what changed since the last post (a resolution made just before)."""
        if self.health.failing or not (self._dirty_open or self._dirty_ended):
            return
        await self._post(AlertmanagerClient(self.receiver, session), full=False)

    def status(self) -> ReceiverStatus:
        if self.health.failing:
            queued = len(self._open) + len(self._ended)
        else:
            queued = len(self._dirty_open) + len(self._dirty_ended)
        return self.health.status(queued)
