"""The operator's silences: made, listed and expired in Alertmanager when one is configured, else local ones kept in
the notification file (one ``node``, ``rack`` or ``site`` matcher) and applied by the console itself.

Each call waits for its answer (call from a worker or the CLI, never the GUI thread) and raises ``NotifyError``
with one sentence, ValueError for a silence that cannot be made. While the notifier runs, Alertmanager is asked
from its loop and session; before it starts (``gpu-console silence add``) from a loop of the caller's own. A
silence made or expired here is in the ``SilenceBook`` at once, before the next read-back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import aiohttp

from console.config.fleet import Receiver
from console.notify.alertmanager import AlertmanagerClient, SilenceNotFound, new_session
from console.notify.book import SilenceBook
from console.notify.http import DeliveryError
from console.notify.schema import NotifyError
from console.notify.silences import LOCAL_MATCHERS, Matcher, Silence
from console.notify.state import NotifyStore

OPERATOR_TIMEOUT_S = 15.0  # an operator's silence request: Alertmanager's answer, or the file's
R = TypeVar("R")
Job = Callable[[aiohttp.ClientSession], Coroutine[Any, Any, R]]


class Silencer:
    def __init__(
        self,
        alertmanagers: Sequence[Receiver],
        store: NotifyStore | None,
        book: SilenceBook,
        *,
        changed: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._alertmanagers = tuple(alertmanagers)
        self._store = store
        self._book = book
        self._changed = changed  # local silences changed: reload them, refresh the marks
        self._clock = clock
        # Set by the notifier's loop while it runs: the loop, its session, its thread.
        self.running: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession, threading.Thread] | None = None

    def add(
        self,
        matchers: Sequence[Matcher],
        duration_s: float,
        comment: str,
        created_by: str,
        *,
        timeout_s: float = OPERATOR_TIMEOUT_S,
    ) -> Silence:
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if duration_s <= 0:
            raise ValueError("a silence must last more than 0 s")
        if not comment.strip():
            raise ValueError("a silence needs a comment (why, and who to ask)")
        if not self._alertmanagers:
            if len(matchers) != 1 or matchers[0].is_regex or not matchers[0].is_equal:
                raise ValueError(f"a local silence has one matcher of the form {'|'.join(LOCAL_MATCHERS)}=value")
            if self._store is None:
                raise NotifyError("no Alertmanager is configured and the notification file is not open")
            silence = self._store.add_local_silence(
                matchers[0].name, matchers[0].value, duration_s, comment, created_by
            )
            self._changed()
            return silence

        async def create(session: aiohttp.ClientSession) -> Silence:
            start = self._clock()

            async def one(client: AlertmanagerClient) -> Silence:
                silence_id = await client.create_silence(matchers, start, start + duration_s, created_by, comment)
                return await client.silence(silence_id)

            silence = await _first_answer(self._alertmanagers, session, one)
            self._book.put_alertmanager(silence)
            return silence

        silence = self._call(create, timeout_s)
        self._changed()
        return silence

    def list(self, *, include_expired: bool = False, timeout_s: float = OPERATOR_TIMEOUT_S) -> tuple[Silence, ...]:
        async def read(session: aiohttp.ClientSession) -> tuple[Silence, ...]:
            return await _first_answer(self._alertmanagers, session, lambda client: client.silences())

        found = self._call(read, timeout_s) if self._alertmanagers else ()
        if self._store is not None:
            found += self._store.local_silences()
        now = self._clock()
        return tuple(s for s in found if include_expired or (s.ends_at > now and not s.expired))

    def expire(self, silence_id: str, *, timeout_s: float = OPERATOR_TIMEOUT_S) -> Silence:
        if self._store is not None:
            local = self._store.expire_local_silence(silence_id)
            if local is not None:
                self._store.forget_silence(silence_id)
                self._changed()
                return local
        if not self._alertmanagers:
            raise NotifyError(f"there is no silence with id {silence_id}")

        async def expire(session: aiohttp.ClientSession) -> Silence:
            async def one(client: AlertmanagerClient) -> Silence:
                await client.expire_silence(silence_id)
                return await client.silence(silence_id)

            silence = await _first_answer(self._alertmanagers, session, one)
            self._book.put_alertmanager(silence)
            return silence

        silence = self._call(expire, timeout_s)
        if self._store is not None:
            self._store.forget_silence(silence_id)  # no mark naming it survives, even of an incident now closed
        self._changed()
        return silence

    def _call(self, job: Job[R], timeout_s: float) -> R:
        """``job`` on the notifier's loop while it runs (its session), else on a loop of its own here."""
        running = self.running
        try:
            if running is not None:
                loop, session, thread = running
                if threading.current_thread() is thread:
                    raise RuntimeError("a silence operation waits for an answer: not on the notifier's own thread")
                future = asyncio.run_coroutine_threadsafe(job(session), loop)
                try:
                    return future.result(timeout_s)
                finally:
                    future.cancel()
            return asyncio.run(_with_session(job, timeout_s))
        except TimeoutError:
            raise NotifyError(f"Alertmanager did not answer within {timeout_s:g} s") from None
        except DeliveryError as exc:
            raise NotifyError(str(exc)) from None


async def _with_session(job: Job[R], timeout_s: float) -> R:
    async with new_session() as session:
        return await asyncio.wait_for(job(session), timeout_s)


async def _first_answer(
    receivers: Sequence[Receiver],
    session: aiohttp.ClientSession,
    ask: Callable[[AlertmanagerClient], Coroutine[Any, Any, R]],
) -> R:
    """``ask`` the first Alertmanager that answers; one that cannot be reached, or lacks the silence asked for,
    passes to the next. One that answers and refuses ends it (another peer would refuse too)."""
    problem: DeliveryError | None = None
    for receiver in receivers:
        try:
            return await ask(AlertmanagerClient(receiver, session))
        except DeliveryError as exc:
            if not (exc.unreachable or isinstance(exc, SilenceNotFound)):
                raise
            problem = exc
    assert problem is not None, "no Alertmanager to ask"
    raise problem
