"""The one Protocol every telemetry source implements, and the errors a poll may end with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from console.fleet import Node, Site, SourceSpec

_T = TypeVar("_T")

if TYPE_CHECKING:
    import aiohttp

    from console.schema import NodeSample


class PollFailure(StrEnum):
    """Why a poll produced no sample. ``probe`` maps these to exit codes 2, 3 and 4."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    AUTH_REFUSED = "auth_refused"
    BAD_PAYLOAD = "bad_payload"
    BUSY = "busy"  # the previous request to this node is still running (never two in flight)
    INTERNAL = "internal"


class SourceError(Exception):
    """A poll failed for a reason the operator should see, e.g. ``SourceError(UNREACHABLE, "connection refused")``."""

    def __init__(self, failure: PollFailure, reason: str) -> None:
        super().__init__(f"{failure}: {reason}")
        self.failure = failure
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source gets from the poller: who it polls for and the shared HTTP session (one for all nodes)."""

    node: Node
    site: Site
    spec: SourceSpec
    timeout_s: float
    http: aiohttp.ClientSession | None = None


class Source(Protocol):
    """Reads one node once per ``poll``. Implementations are small classes registered in ``console.sources``.

    ``poll`` returns a ``NodeSample`` in the schema's units or raises ``SourceError``; it must not block the event
    loop (blocking libraries run in a worker thread, with at most one such call outstanding).
    """

    async def poll(self) -> NodeSample: ...

    async def aclose(self) -> None: ...


class BlockingCallGuard:
    """Runs blocking calls in a thread with at most one outstanding, even after a timeout abandoned one.

    ``asyncio.wait_for`` cannot stop a thread; without this guard a hung driver call plus the next poll would
    put two requests in flight.
    """

    def __init__(self) -> None:
        self._running: asyncio.Future[Any] | None = None

    async def run(self, func: Callable[..., _T], *args: Any) -> _T:
        if self._running is not None and not self._running.done():
            raise SourceError(PollFailure.BUSY, "the previous request to this node has not returned yet")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, func, *args)
        self._running = future
        # shield: a timeout cancels our wait, not the bookkeeping of the thread still running
        return await asyncio.shield(future)
