"""A receiver's filters (``min_severity``, ``sites``, ``providers``) as one predicate over incidents, and the small
awaiting helper the delivery loops share."""

from __future__ import annotations

import asyncio
import contextlib

from console.config.fleet import Receiver
from console.incidents.model import Incident, Severity


class Wants:
    __slots__ = ("_min", "_providers", "_sites")

    def __init__(self, receiver: Receiver) -> None:
        self._min = Severity.parse(receiver.min_severity) if receiver.min_severity else Severity.INFO
        self._sites = frozenset(receiver.sites)
        self._providers = frozenset(receiver.providers)

    def __call__(self, incident: Incident) -> bool:
        ctx = incident.context
        return (
            incident.severity >= self._min
            and (not self._sites or ctx.site in self._sites)
            and (not self._providers or ctx.provider in self._providers)
        )


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait for ``event`` at most ``timeout_s`` (None: no limit); whether it was set."""
    if timeout_s is not None and timeout_s <= 0:
        return event.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()
