"""The client of our node agent (kind ``agent``): the normalized sample and the events since our cursor.

Uses the poller's shared aiohttp session. The bearer token is resolved from its reference at each poll (never
stored); TLS is verified unless the inventory turns it off for this agent. Bodies are capped. The sample keeps
the node and site names of the inventory, not the names the agent reports about itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import aiohttp

from console.samples.codec import event_from_json, sample_from_json
from console.samples.results import PollFailure, SourceError
from console.samples.schema import GpuEvent, NodeSample, SchemaError
from console.sources.base import (
    HttpSession,
    SourceContext,
    http_failure,
    read_capped,
    resolve_secret_for_poll,
    tls_setting,
)

log = logging.getLogger(__name__)

API_SAMPLE = "/api/v1/sample"
API_EVENTS = "/api/v1/events"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # an 8-GPU sample is ~15 KB; anything near this is not an agent


class AgentSource:
    def __init__(self, ctx: SourceContext, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        if not ctx.spec.url:
            raise ValueError("an agent source needs a url")
        self._ctx = ctx
        self._base = ctx.spec.url.rstrip("/")
        self._max_bytes = max_payload_bytes
        self._http = HttpSession(ctx.http)
        self._ssl = tls_setting(ctx.spec.verify_tls, ctx.spec.ca_file)
        self._timeout = aiohttp.ClientTimeout(total=ctx.timeout_s)
        self._cursor = 0
        self._epoch: str | None = None

    # -- Source protocol ------------------------------------------------------------------------------------

    async def poll(self) -> NodeSample:
        headers = {"Accept": "application/json"}
        if self._ctx.spec.token is not None:
            headers["Authorization"] = f"Bearer {await resolve_secret_for_poll(self._ctx.spec.token, 'token')}"
        sample_doc, events_doc = await asyncio.gather(
            self._get_json(API_SAMPLE, headers), self._get_json(f"{API_EVENTS}?since={self._cursor}", headers)
        )
        try:
            sample = sample_from_json(sample_doc)
        except SchemaError as exc:
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{API_SAMPLE}: {exc}") from None
        events = self._take_events(events_doc)
        return dataclasses.replace(
            sample, node=self._ctx.node.name, site=self._ctx.site.name, source="agent", events=events
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- helpers --------------------------------------------------------------------------------------------

    async def _get_json(self, path: str, headers: dict[str, str]) -> Any:
        url = f"{self._base}{path}"
        try:
            async with self._http.get().get(
                url, headers=headers, ssl=self._ssl, timeout=self._timeout, allow_redirects=False
            ) as response:
                if response.status in (401, 403):
                    raise SourceError(PollFailure.AUTH_REFUSED, f"the agent refused the token (HTTP {response.status})")
                if response.status != 200:
                    raise SourceError(PollFailure.UNREACHABLE, f"{path}: HTTP {response.status} {response.reason}")
                body = await read_capped(response, self._max_bytes, lambda size: self._oversize(path, size))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise http_failure(exc, path, self._ctx.timeout_s) from None
        try:
            return json.loads(body)
        except UnicodeDecodeError:
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{path}: body is not UTF-8") from None
        except ValueError as exc:
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{path}: invalid JSON: {exc}") from None

    def _oversize(self, path: str, declared: int | None) -> str:
        if declared is not None:
            return f"{path}: {declared} bytes exceeds the {self._max_bytes} cap"
        return f"{path}: body exceeds the {self._max_bytes} byte cap"

    def _take_events(self, doc: Any) -> tuple[GpuEvent, ...]:
        where = API_EVENTS
        if not isinstance(doc, dict):
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: expected a JSON object")
        epoch, cursor, items = doc.get("epoch"), doc.get("cursor"), doc.get("events")
        if not isinstance(epoch, str):
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: epoch: expected a string")
        if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: cursor: expected a non-negative integer")
        if not isinstance(items, list):
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: events: expected a list")
        restarted = self._epoch is not None and epoch != self._epoch
        events: list[GpuEvent] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: events[{i}]: expected an object")
            fields = {k: v for k, v in item.items() if k != "cursor"}
            try:
                events.append(event_from_json(fields, f"events[{i}]"))
            except SchemaError as exc:
                raise SourceError(PollFailure.BAD_PAYLOAD, f"{where}: {exc}") from None
        self._epoch = epoch
        if restarted:
            # A restarted agent numbers from 1 again, so "since our old cursor" skipped its first events: drop
            # this answer and read all of the new agent's events next poll, rather than lose or repeat any.
            log.info("agent %s restarted; reading its events from the start", self._base)
            self._cursor = 0
            return ()
        self._cursor = cursor
        return tuple(events)


def make_source(ctx: SourceContext) -> AgentSource:
    return AgentSource(ctx)
