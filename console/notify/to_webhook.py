"""Delivery to one webhook: one signed JSON document per change, in order, retried until it lands or stops mattering.

Events, not state: *opened* (the first document a receiver gets about an incident), *escalated*, *resolved* and
*grouped* (it became a symptom of another incident, which speaks for it from now on), each built once and signed at
each attempt with that attempt's timestamp. The head of the queue is retried with exponential backoff; nothing
behind it overtakes it. A document is dropped unsent once its incident has been over for 15 minutes, or, the oldest
non-resolution first, when the queue is full (counted as dropped). A silenced incident is not announced; if the
silence ends while it is still open, it is announced then (``catch_up``).

What a receiver gets, per document (``POST`` to the receiver's ``url``, any 2xx is success)::

    Content-Type: application/json
    X-GPU-Console-Event: opened | escalated | resolved | grouped | test
    X-GPU-Console-Delivery: <the document's "id": a UUID, the same on every retry (dedup on it)>
    X-GPU-Console-Timestamp: <epoch seconds of this attempt, an integer>
    X-GPU-Console-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>   (only with a secret)

    {"schema": "gpu-console.notify/1", "id": "...", "event": "opened", "time": "2026-05-01T12:00:00.000Z",
     "incident": {"id", "parent_id", "rule", "code", "kind", "severity", "status", "title", "detail",
                  "recommended_action", "site", "provider", "node", "gpu_uuid", "gpu_index", "gpu_model", "rack",
                  "scope", "scope_name", "nodes", "count", "opened_at", "last_seen_at", "resolved_at", "outcome"},
     "previous_severity": "warning"}                                        (escalated only)

To check a delivery: compute HMAC-SHA256 with the shared secret over the timestamp header's bytes, a ``.``, then
the raw body bytes; compare ``"sha256=" + hexdigest`` with the signature header in constant time, and refuse a
timestamp far from your clock (a replayed capture). ``console.notify.alerts.verify_signature`` does the first part.
A ``test`` document (the inventory editor's *Send test*, ``console.notify.trial``) has no ``incident``: it has
``summary`` and ``description`` instead, and is signed like the others. Times in the document are RFC 3339 UTC;
the schema only gains fields (a new meaning gets a new ``schema``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from console.config.fleet import Receiver
from console.config.secrets import SecretError, resolve_secret
from console.incidents.model import Incident
from console.notify.alerts import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    RESOLVED_KEEP_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Event,
    encode,
    signature,
    webhook_document,
)
from console.notify.filters import Wants, wait_event
from console.notify.health import BACKOFF_MAX_S, Health, ReceiverStatus
from console.notify.http import DeliveryError, request
from console.notify.tracking import Tracked

QUEUE_LIMIT = 1000
_SUCCESS = tuple(range(200, 300))
_CLOSING = (Event.RESOLVED, Event.GROUPED)


@dataclass(frozen=True, slots=True)
class _Pending:
    event: Event
    incident_id: str
    delivery_id: str
    body: bytes
    created: float


async def post_document(
    session: aiohttp.ClientSession, receiver: Receiver, event: Event, delivery_id: str, body: bytes, *, now: float
) -> None:
    """One signed POST of a document; DeliveryError says why it did not land."""
    timestamp = str(int(now))
    headers = {EVENT_HEADER: str(event), DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: timestamp}
    if receiver.secret is not None:
        try:
            key = resolve_secret(receiver.secret)
        except SecretError as exc:
            raise DeliveryError(f"{receiver.label}: cannot read its signing secret: {exc}") from None
        headers[SIGNATURE_HEADER] = signature(key, timestamp, body)
    await request(session, receiver, "POST", receiver.url, body=body, headers=headers, ok=_SUCCESS)


class WebhookDelivery:
    """Runs on the notifier's loop: ``consider`` each change, ``run`` sends the queue in order."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        rack_of: Callable[[Incident], str | None],
        silenced: Callable[[Incident], bool],
        relevant: Callable[[str, float], bool],
        clock: Callable[[], float] = time.time,
        keep_s: float = RESOLVED_KEEP_S,
        queue_limit: int = QUEUE_LIMIT,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.receiver = receiver
        self.health = Health(receiver, backoff_max_s=backoff_max_s)
        self._wants = Wants(receiver)
        self._rack_of = rack_of
        self._silenced = silenced
        self._relevant = relevant
        self._clock = clock
        self._keep_s = keep_s
        self._limit = max(queue_limit, 1)
        self._announced: set[str] = set()
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._retry_in = 0.0  # the backoff after the last failure

    def resume(self, incidents: Iterable[Incident]) -> None:
        """An earlier run's open incidents were announced by it: not again as new."""
        self._announced.update(incident.id for incident in incidents if self._wants(incident))

    def consider(self, tracked: Tracked) -> None:
        incident, event = tracked.incident, tracked.event
        if event is None:
            return
        if event in _CLOSING:
            if incident.id in self._announced:
                self._announced.discard(incident.id)
                self._enqueue(event, incident, tracked.time)
            return
        if not self._wants(incident) or self._silenced(incident):
            return
        if incident.id not in self._announced:
            event = Event.OPENED  # the first word a receiver hears of an incident, even if it came in by escalating
            self._announced.add(incident.id)
        extra = {}
        if event is Event.ESCALATED and tracked.previous is not None:
            extra["previous_severity"] = tracked.previous.severity.label
        self._enqueue(event, incident, tracked.time, **extra)

    def catch_up(self, open_roots: Iterable[Incident], now: float) -> None:
        """Announce the open incidents wanted here but never announced (a silence over them has ended)."""
        for incident in open_roots:
            if incident.id not in self._announced and self._wants(incident) and not self._silenced(incident):
                self._announced.add(incident.id)
                self._enqueue(Event.OPENED, incident, now)

    def _enqueue(self, event: Event, incident: Incident, at: float, **extra: str) -> None:
        document = webhook_document(event, incident, self._rack_of(incident), at, **extra)
        self._queue.append(_Pending(event, incident.id, document["id"], encode(document), at))
        if len(self._queue) > self._limit:
            self._drop_one()
        self._wake.set()  # only an empty queue waits for it; a failing head waits out its backoff regardless

    def _drop_one(self) -> None:
        for i, item in enumerate(self._queue):
            if item.event not in _CLOSING and i > 0:  # never a resolution, never the one being sent
                del self._queue[i]
                self.health.dropped += 1
                return
        if len(self._queue) > 2 * self._limit:  # only resolutions left: a bound all the same
            self._queue.popleft()
            self.health.dropped += 1

    def wake(self) -> None:
        self._wake.set()

    async def run(self, session: aiohttp.ClientSession, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if not self._queue:
                await wait_event(self._wake, None)
                self._wake.clear()
                continue
            if not await self._send_head(session):
                await wait_event(stopping, self._retry_in)

    async def _send_head(self, session: aiohttp.ClientSession) -> bool:
        item = self._queue[0]
        now = self._clock()
        if now - item.created >= self._keep_s and not self._relevant(item.incident_id, now):
            self._queue.popleft()  # its incident has been over for a while: no longer worth telling
            self.health.dropped += 1
            return True
        try:
            await post_document(session, self.receiver, item.event, item.delivery_id, item.body, now=now)
        except DeliveryError as exc:
            self._retry_in = self.health.failed(str(exc), self._clock())
            return False
        if self._queue and self._queue[0] is item:
            self._queue.popleft()
        self.health.succeeded(self._clock())
        return True

    async def final(self, session: aiohttp.ClientSession) -> None:
        """At stop: what is queued, in order, while the receiver answers."""
        while self._queue and not self.health.failing:
            if not await self._send_head(session):
                return

    def status(self) -> ReceiverStatus:
        return self.health.status(len(self._queue))
