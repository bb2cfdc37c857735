"""Notifier: tells the inventory's receivers about root incidents, off the GUI thread and off the poller's loop.

The monitor hands it every batch of incident changes (``submit``: a dict insert under a lock, never a wait). Its
own thread runs one asyncio loop: the intake turns changes into events (``tracking``), each receiver's delivery
sends them (``to_alertmanager``, ``to_webhook``) with its own retries and backoff, and every ``sync_s`` (30 s) the
read-back asks Alertmanager which silences exist and which of the console's alerts they suppress (``book``),
writing each open root's mark to the notification file, where another process reads it (``state.read_marks``).

The operator's silences (``add_silence``, ``silences``, ``expire_silence``; ``silencing``) are Alertmanager's when
one is configured, else local ones kept in the notification file and applied by the console itself. They block for
an answer (call them from a worker or the CLI, never the GUI thread) and raise ``NotifyError`` with one sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from console.config.fleet import Fleet, ReceiverKind
from console.incidents.model import Incident, IncidentChange
from console.notify.alertmanager import AlertmanagerClient, new_session
from console.notify.alerts import RESEND_S, RESOLVED_KEEP_S, incident_labels, rack_of
from console.notify.book import SilenceBook, suppressed_by
from console.notify.health import BACKOFF_MAX_S, ReceiverStatus
from console.notify.http import DeliveryError
from console.notify.schema import NotifyError
from console.notify.silences import Matcher, Silence, SilenceMark
from console.notify.silencing import OPERATOR_TIMEOUT_S, Silencer
from console.notify.state import NotifyStore
from console.notify.to_alertmanager import AlertmanagerDelivery
from console.notify.to_webhook import QUEUE_LIMIT, WebhookDelivery
from console.notify.tracking import Intake, RootTracker

log = logging.getLogger("console.notify")

SYNC_S = 30.0  # silence read-back from Alertmanager, and local silences from the file
INTAKE_LIMIT = 10_000
STOP_GRACE_S = 2.0
Delivery = AlertmanagerDelivery | WebhookDelivery


class Notifier:
    """``start``/``stop`` from the composition root; ``submit`` and ``resume`` from the monitor; ``silence_of``,
    ``is_silenced`` and ``statuses`` from any thread; the silence operations from a worker or the CLI."""

    def __init__(
        self,
        fleet: Fleet,
        store: NotifyStore | None = None,
        *,
        resend_s: float = RESEND_S,
        sync_s: float = SYNC_S,
        keep_s: float = RESOLVED_KEEP_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        intake_limit: int = INTAKE_LIMIT,
        queue_limit: int = QUEUE_LIMIT,
        stop_grace_s: float = STOP_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.receivers = fleet.receivers
        self.store = store
        self._alertmanagers = tuple(r for r in fleet.receivers if r.kind is ReceiverKind.ALERTMANAGER)
        self._racks = {node.name: node.topology.rack for node in fleet.nodes if node.topology.rack}
        self._sync_s = sync_s
        self._stop_grace_s = stop_grace_s
        self._clock = clock
        self._intake = Intake(intake_limit)
        self._tracker = RootTracker(keep_s)
        self.book = SilenceBook(self.labels_of, clock)
        self._deliveries: list[Delivery] = []
        for receiver in fleet.receivers:
            if receiver.kind is ReceiverKind.ALERTMANAGER:
                self._deliveries.append(
                    AlertmanagerDelivery(
                        receiver,
                        labels_of=self.labels_of,
                        locally_silenced=self.book.locally_silenced,
                        clock=clock,
                        resend_s=resend_s,
                        keep_s=keep_s,
                        backoff_max_s=backoff_max_s,
                    )
                )
            else:
                self._deliveries.append(
                    WebhookDelivery(
                        receiver,
                        rack_of=self.rack_of,
                        silenced=self.is_silenced,
                        relevant=self._tracker.relevant,
                        clock=clock,
                        keep_s=keep_s,
                        queue_limit=queue_limit,
                        backoff_max_s=backoff_max_s,
                    )
                )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._sync_now: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.readback_error: str | None = None  # why the last silence read-back failed (None: it worked)
        self._silencer = Silencer(self._alertmanagers, store, self.book, clock=clock, changed=self._silences_changed)

    @classmethod
    def open(cls, fleet: Fleet, path: Path, on_problem: Callable[[str], None], **options: Any) -> Notifier:
        """A notifier over the notification file at ``path`` (``schema.notify_path_for(db)``); a file that cannot
        be used is said (``on_problem``) and the notifier runs without it (no local silences, no marks kept):
        telling people matters more. ``options`` are the constructor's keywords."""
        store: NotifyStore | None = None
        try:
            store = NotifyStore.open(path)
        except NotifyError as exc:
            on_problem(f"silences and silence marks are not kept: {exc}")
        if store is not None and store.recovered is not None:
            on_problem(store.recovered.message)
        return cls(fleet, store, **options)

    # --- what an incident is, for receivers (any thread) ---

    def rack_of(self, incident: Incident) -> str | None:
        return rack_of(incident, self._racks)

    @staticmethod
    def mirror_book(fleet: Fleet) -> SilenceBook:
        """A book that reads incidents as this fleet's notifier does, for ``SilenceBook.adopt`` in another process."""
        racks = {node.name: node.topology.rack for node in fleet.nodes if node.topology.rack}
        return SilenceBook(lambda incident: incident_labels(incident, rack_of(incident, racks)))

    def labels_of(self, incident: Incident) -> dict[str, str]:
        return incident_labels(incident, self.rack_of(incident))

    def silence_of(self, incident: Incident) -> SilenceMark | None:
        """The silence covering ``incident`` now (Alertmanager's or local), or None."""
        return self.book.silence_of(incident)

    def is_silenced(self, incident: Incident) -> bool:
        """Whether people are not to be told about ``incident`` (the tray's ``is_silenced``)."""
        return self.book.silence_of(incident) is not None

    def statuses(self) -> tuple[ReceiverStatus, ...]:
        """Each receiver's last success, last error, queue and counts, in the inventory's order."""
        return tuple(delivery.status() for delivery in self._deliveries)

    @property
    def dropped_changes(self) -> int:
        return self._intake.dropped

    # --- from the monitor (any thread, never blocks) ---

    def submit(self, changes: Sequence[IncidentChange]) -> None:
        """A batch of the engine's changes; evidence and acknowledgements are ignored."""
        self._intake.put(changes)
        self._poke()

    def resume(self, incidents: Iterable[Incident]) -> None:
        """The open incidents an earlier run left: known (not announced again) and re-sent to Alertmanager."""
        self._intake.put_resumed(incidents)
        self._poke()

    def resync(self) -> None:
        """Read silences back now, not at the next ``sync_s`` round."""
        loop, event = self._loop, self._sync_now
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(event.set)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # --- the operator's silences (a worker or the CLI: these wait for an answer; see ``silencing``) ---

    def add_silence(
        self,
        matchers: Sequence[Matcher],
        duration_s: float,
        comment: str,
        created_by: str,
        *,
        timeout_s: float = OPERATOR_TIMEOUT_S,
    ) -> Silence:
        """Silence what matches every matcher, from now for ``duration_s``: on the first configured Alertmanager
        that answers, else locally (one ``node``, ``rack`` or ``site`` matcher). ValueError for a silence that
        cannot be made; NotifyError when it could not be recorded."""
        return self._silencer.add(matchers, duration_s, comment, created_by, timeout_s=timeout_s)

    def silences(self, *, include_expired: bool = False, timeout_s: float = OPERATOR_TIMEOUT_S) -> tuple[Silence, ...]:
        """Alertmanager's silences (from the first that answers) and the local ones, active and pending ones
        unless ``include_expired``; NotifyError when a configured Alertmanager could not be asked."""
        return self._silencer.list(include_expired=include_expired, timeout_s=timeout_s)

    def expire_silence(self, silence_id: str, *, timeout_s: float = OPERATOR_TIMEOUT_S) -> Silence:
        """End a silence now (local or Alertmanager's); the expired silence. NotifyError when none has that id."""
        return self._silencer.expire(silence_id, timeout_s=timeout_s)

    def _silences_changed(self) -> None:
        self._load_local_silences()
        self.resync()  # the marks of the open incidents follow

    # --- lifecycle ---

    def start(self) -> None:
        if self._thread is not None:
            return
        self._load_local_silences()  # before the first change: a node under maintenance is muted from the start
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="gpu-console-notifier", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the notifier's loop did not start")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop delivering (one last short try for what is queued), then close the notification file."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if thread is not None and loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
            thread.join(timeout_s)
        self._thread = None
        if self.store is not None:
            self.store.close()

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every change submitted so far is taken in and its marks are written (tests, shutdown)."""
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._take_in_now(), loop).result(timeout_s)
        if self.store is not None:
            self.store.flush(timeout_s)

    async def _take_in_now(self) -> None:
        self._take_in()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._wake, self._sync_now, self._stopping = asyncio.Event(), asyncio.Event(), asyncio.Event()
        stopping = self._stopping
        async with new_session() as session:
            self._loop = asyncio.get_running_loop()
            self._silencer.running = (self._loop, session, threading.current_thread())
            self._wake.set()  # whatever was submitted before the loop existed
            self._ready.set()
            tasks = [asyncio.create_task(self._intake_loop()), asyncio.create_task(self._sync_loop(session))]
            tasks += [asyncio.create_task(delivery.run(session, stopping)) for delivery in self._deliveries]
            await stopping.wait()
            self._wake.set()
            self._sync_now.set()
            for delivery in self._deliveries:
                delivery.wake()
            _done, running = await asyncio.wait(tasks, timeout=self._stop_grace_s / 2)
            for task in running:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._take_in()
            finals = [delivery.final(session) for delivery in self._deliveries]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*finals, return_exceptions=True), self._stop_grace_s)
            self._loop = None
            self._silencer.running = None

    # --- the loop ---

    async def _intake_loop(self) -> None:
        wake, stopping = self._wake, self._stopping
        assert wake is not None
        assert stopping is not None
        while not stopping.is_set():
            await wake.wait()
            wake.clear()
            try:
                self._take_in()
            except Exception:  # a bug here must not end telling people
                log.exception("notifier intake failed")

    def _take_in(self) -> None:
        resumed, batch = self._intake.take()
        if resumed:
            self._tracker.resume(resumed)
            for delivery in self._deliveries:
                delivery.resume(resumed)
        touched: list[Incident] = []
        for change in batch:
            tracked = self._tracker.apply(change)
            if tracked is None:
                continue
            for delivery in self._deliveries:
                delivery.consider(tracked)
            if tracked.incident.id in self._tracker.open:
                touched.append(tracked.incident)
            else:
                self.book.forget(tracked.incident.id)
        self._write_marks(touched + [i for i in resumed if i.id in self._tracker.open])

    def _write_marks(self, incidents: Iterable[Incident]) -> None:
        changes = self.book.refresh(incidents)
        if changes and self.store is not None:
            self.store.put_marks(changes)

    async def _sync_loop(self, session: aiohttp.ClientSession) -> None:
        sync_now, stopping = self._sync_now, self._stopping
        assert sync_now is not None
        assert stopping is not None
        while not stopping.is_set():
            sync_now.clear()
            try:
                await self._sync(session)
            except Exception:
                log.exception("silence read-back failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sync_now.wait(), self._sync_s)

    async def _sync(self, session: aiohttp.ClientSession) -> None:
        """Silences and suppressed alerts from the first Alertmanager that answers; local silences from the file."""
        self._load_local_silences()
        for receiver in self._alertmanagers:
            client = AlertmanagerClient(receiver, session)
            try:
                alerts = await client.alerts()
                silences = await client.silences()  # after the alerts: every id they name is in this list
            except DeliveryError as exc:
                self._readback_failed(f"silence read-back from {exc}")
                continue
            self.book.set_alertmanager(silences, suppressed_by(alerts))
            self.readback_error = None
            break
        now = self._clock()
        self._tracker.prune(now)
        self._write_marks(self._tracker.open.values())
        for delivery in self._deliveries:
            if isinstance(delivery, WebhookDelivery):
                delivery.catch_up(list(self._tracker.open.values()), now)

    def _load_local_silences(self) -> None:
        if self.store is None:
            return
        try:
            self.book.set_local(self.store.local_silences())
        except NotifyError as exc:
            self._readback_failed(f"local silences: {exc}")

    def _readback_failed(self, message: str) -> None:
        if message != self.readback_error:
            log.warning("%s", message)
        self.readback_error = message
