"""A client of Alertmanager's API v2 (operations.md 2.1): post alerts, read alerts and silences back, create and
expire silences. Every failure is a ``DeliveryError`` whose message is one sentence for the operator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from console.config.fleet import Receiver
from console.notify.alerts import encode, rfc3339
from console.notify.http import DeliveryError, json_answer, request
from console.notify.silences import Matcher, Silence, silence_from_alertmanager

BATCH = 256  # alerts per POST, as Prometheus' notifier sends them
OUR_ALERTS = 'incident_id=~".+"'  # the read-back asks for the console's alerts only


class SilenceNotFound(DeliveryError):
    """Alertmanager has no silence of that id."""


class AlertmanagerClient:
    def __init__(self, receiver: Receiver, session: aiohttp.ClientSession) -> None:
        self.receiver = receiver
        self._session = session
        self._base = receiver.url.rstrip("/")

    async def post_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(alerts), BATCH):
            body = encode(list(alerts[start : start + BATCH]))
            await request(self._session, self.receiver, "POST", f"{self._base}/api/v2/alerts", body=body)

    async def alerts(self) -> list[dict[str, Any]]:
        """The console's alerts as Alertmanager holds them (status.state, status.silencedBy)."""
        answer = await request(
            self._session, self.receiver, "GET", f"{self._base}/api/v2/alerts", params={"filter": OUR_ALERTS}
        )
        found = json_answer(answer, self.receiver)
        if not isinstance(found, list):
            raise DeliveryError(f"{self.receiver.label} answered /api/v2/alerts with something that is not a list")
        return [item for item in found if isinstance(item, dict)]

    async def silences(self) -> tuple[Silence, ...]:
        answer = await request(self._session, self.receiver, "GET", f"{self._base}/api/v2/silences")
        found = json_answer(answer, self.receiver)
        if not isinstance(found, list):
            raise DeliveryError(f"{self.receiver.label} answered /api/v2/silences with something that is not a list")
        silences: list[Silence] = []
        for item in found:
            try:
                silences.append(silence_from_alertmanager(item))
            except ValueError:
                continue  # one odd entry (a newer Alertmanager's) must not hide the others
        return tuple(silences)

    async def create_silence(
        self, matchers: Sequence[Matcher], starts_at: float, ends_at: float, created_by: str, comment: str
    ) -> str:
        document = {
            "matchers": [matcher.to_alertmanager() for matcher in matchers],
            "startsAt": rfc3339(starts_at),
            "endsAt": rfc3339(ends_at),
            "createdBy": created_by,
            "comment": comment,
        }
        answer = await request(
            self._session, self.receiver, "POST", f"{self._base}/api/v2/silences", body=encode(document)
        )
        found = json_answer(answer, self.receiver)
        silence_id = found.get("silenceID") if isinstance(found, dict) else None
        if not isinstance(silence_id, str) or not silence_id:
            raise DeliveryError(f"{self.receiver.label} created a silence but did not say its id")
        return silence_id

    async def silence(self, silence_id: str) -> Silence:
        """``GET /api/v2/silence/{id}``; SilenceNotFound when Alertmanager has none of that id."""
        try:
            answer = await request(self._session, self.receiver, "GET", f"{self._base}/api/v2/silence/{silence_id}")
        except DeliveryError as exc:
            if exc.status in (404, 422) or (exc.status == 500 and "not found" in str(exc)):
                raise SilenceNotFound(
                    f"{self.receiver.label} has no silence with id {silence_id}", status=exc.status
                ) from None
            raise
        try:
            return silence_from_alertmanager(json_answer(answer, self.receiver))
        except ValueError as exc:
            raise DeliveryError(f"{self.receiver.label} answered /api/v2/silence with {exc}") from None

    async def expire_silence(self, silence_id: str) -> None:
        try:
            await request(self._session, self.receiver, "DELETE", f"{self._base}/api/v2/silence/{silence_id}")
        except DeliveryError as exc:
            # 0.25 answers 500 "silence not found" for an unknown id (newer ones 404), 422 for an id not a UUID.
            if exc.status in (404, 422) or (exc.status == 500 and "not found" in str(exc)):
                raise SilenceNotFound(
                    f"{self.receiver.label} has no silence with id {silence_id}", status=exc.status
                ) from None
            raise


def new_session() -> aiohttp.ClientSession:
    """One session per loop for every receiver; few connections (a handful of receivers, never hundreds)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16), raise_for_status=False)
