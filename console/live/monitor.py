"""The pipeline behind the window and the headless `poll`: poller -> incident engine -> store -> one sink.

Everything here runs off the GUI thread. The engine is called from the poller thread (results), a ticker thread
(clear durations, stale nodes) and the caller's thread (operator actions); one lock serialises those calls.
What leaves through ``on_update`` is an immutable ``MonitorUpdate``: the app's bridge turns it into one Qt signal.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from console.config.fleet import Fleet
from console.incidents.lifecycle import ID_WINDOW_S
from console.incidents.model import ChangeKind, Incident, IncidentChange, Outcome, Status
from console.polling.poller import Poller, PollerStats, SourceMaker
from console.samples.results import PollResult
from console.samples.schema import NodeSample
from console.sources import make_source as default_make_source
from console.store.ledger import EntryKind, LedgerEntry, entry_id, operator_name
from console.store.types import IncidentFilter

log = logging.getLogger(__name__)

EXPOSURE_FLUSH_S = 60.0
OPERATOR_STEPS_EVERY_S = 2.0  # how soon an acknowledgement or fix made in another process reaches this engine


@dataclass(frozen=True, slots=True)
class MonitorUpdate:
    """What the GUI (or the headless loop) receives: one poll's result and/or incident lifecycle changes."""

    time: float
    result: PollResult | None = None
    changes: tuple[IncidentChange, ...] = ()


UpdateSink = Callable[[MonitorUpdate], None]


class Engine(Protocol):
    """What the monitor needs of the incident engine (console.incidents.engine.IncidentEngine)."""

    def observe(self, result: PollResult) -> list[IncidentChange]: ...

    def tick(self, now: float) -> list[IncidentChange]: ...

    def acknowledge(self, incident_id: str, note: str, now: float) -> IncidentChange: ...

    def resolve(self, incident_id: str, note: str, outcome: Outcome, now: float) -> IncidentChange: ...

    def resume(self, incidents: Iterable[Incident], *, resolved: Iterable[Incident] = ()) -> list[IncidentChange]: ...


class ChangeSink(Protocol):
    """What the monitor needs of the store (console.store.IncidentStore): non-blocking submissions."""

    def submit(self, changes: Sequence[IncidentChange]) -> None: ...

    def get(self, incident_id: str) -> Incident | None: ...

    def unresolved(self) -> tuple[Incident, ...]: ...

    def iter_incidents(self, flt: IncidentFilter) -> Iterator[Incident]: ...

    def record_exposure(self, site: str, provider: str, gpu_model: str, gpu_seconds: float, at: float) -> None: ...

    def ledger_since(self, after: int, limit: int = 500) -> list[tuple[int, LedgerEntry]]: ...

    def ledger_cursor(self) -> int: ...


class NotifySink(Protocol):
    """What the monitor needs of the notifier (console.notify.notifier.Notifier): non-blocking hand-offs."""

    def submit(self, changes: Sequence[IncidentChange]) -> None: ...

    def resume(self, incidents: Iterable[Incident]) -> None: ...


class HistorySink(Protocol):
    """What the monitor needs of the history rollup (console.history.rollup.RollupStore): a non-blocking observe."""

    def observe(self, sample: NodeSample) -> None: ...


@dataclass(slots=True)
class MonitorCounters:
    """The poller's counts (it keeps them already), plus what only the monitor sees."""

    poller: PollerStats
    incidents_opened: int = 0

    @property
    def polls(self) -> int:
        return self.poller.polls

    @property
    def ok_polls(self) -> int:
        return self.poller.ok_polls

    @property
    def failed_polls(self) -> int:
        return self.poller.failed_polls

    @property
    def repeated_polls(self) -> int:
        return self.poller.repeated_polls

    @property
    def samples(self) -> int:
        return self.poller.ok_polls


class FleetMonitor:
    """Owns the poller and a 1 Hz ticker; feeds the engine and the store; reports through ``on_update``."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        engine: Engine,
        store: ChangeSink | None,
        on_update: UpdateSink,
        make_source: SourceMaker = default_make_source,
        seed: int | None = None,
        tick_s: float = 1.0,
        history: HistorySink | None = None,
        notifier: NotifySink | None = None,
    ) -> None:
        self.fleet = fleet
        self._notifier = notifier
        self._engine = engine
        self._store = store
        self._history = history
        self._on_update = on_update
        self._poller = Poller(fleet, make_source, self._on_result, seed=seed)
        self._lock = threading.Lock()
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._exposure: dict[tuple[str, str, str], float] = defaultdict(float)
        self._exposure_flushed = time.monotonic()
        self._providers = {site.name: site.provider for site in fleet.sites}
        self._intervals = {node.name: fleet.interval_s(node) for node in fleet.nodes}
        self.counters = MonitorCounters(self._poller.stats)
        self._resumed = False
        self._ledger_seen = 0  # the ledger rowid up to which other processes' steps have been applied
        self._steps_checked = time.monotonic()
        self._own_steps: set[str] = set()  # ledger ids of the steps taken through this monitor

    # -- lifecycle ----

    def start(self) -> None:
        self.resume()
        self._poller.start()
        self._ticker = threading.Thread(target=self._tick_loop, name="gpu-console-ticker", daemon=True)
        self._ticker.start()

    def resume(self) -> None:
        """Carry on the incidents an earlier run left open or acknowledged in the database (before any result):
        the engine keeps updating them instead of opening the same fault again. The recently resolved ones come
        along so that a recurrence in the same id window takes a new id. Called once, by ``start``."""
        store = self._store
        if store is None or self._resumed:
            return
        self._resumed = True
        try:
            unresolved = store.unresolved()
            recent = tuple(
                store.iter_incidents(IncidentFilter(since=time.time() - 2 * ID_WINDOW_S, status=Status.RESOLVED))
            )
        except Exception:  # an unreadable log must not stop polling: the engine then starts empty, as before
            log.exception("cannot read the unresolved incidents: starting without them")
            return
        with self._lock:
            changes = self._engine.resume(unresolved, resolved=recent)
        if self._notifier is not None:
            self._notifier.resume(unresolved)  # re-sent to Alertmanager, not announced again
        self._publish(None, changes)
        try:
            self._ledger_seen = store.ledger_cursor()
        except Exception:
            log.exception("cannot read the fix ledger: steps taken elsewhere will not reach this console")

    def stop(self) -> None:
        self._stop.set()
        self._poller.stop()
        if self._ticker is not None:
            self._ticker.join(5)
            self._ticker = None
        self._flush_exposure()

    @property
    def poller(self) -> Poller:
        return self._poller

    # -- operator actions (any thread) ----

    def acknowledge(self, incident_id: str, note: str = "", *, operator: str | None = None) -> IncidentChange:
        now = time.time()
        with self._lock:
            try:
                change = self._engine.acknowledge(incident_id, note, now)
            except KeyError:  # not live in this run (an older incident, a merged log): record it in the store
                incident = self._stored_unresolved(incident_id)
                acked = dataclasses.replace(incident, status=Status.ACKNOWLEDGED, acknowledged_at=now)
                change = IncidentChange(ChangeKind.ACKNOWLEDGED, acked, now, note)
        change = dataclasses.replace(change, operator=operator or operator_name())
        self._own_steps.add(entry_id(incident_id, EntryKind.ACKNOWLEDGE, change.time, change.operator))
        self._publish(None, [change])
        return change

    def resolve(
        self, incident_id: str, note: str, outcome: Outcome, action: str = "other", *, operator: str | None = None
    ) -> IncidentChange:
        """Resolve with the fix applied (an action of resources/remediation/actions.toml): one ledger entry."""
        now = time.time()
        with self._lock:
            try:
                change = self._engine.resolve(incident_id, note, outcome, now)
            except KeyError:
                incident = self._stored_unresolved(incident_id)
                resolved = dataclasses.replace(
                    incident, status=Status.RESOLVED, resolved_at=now, resolution_note=note, outcome=outcome
                )
                change = IncidentChange(ChangeKind.RESOLVED, resolved, now, note)
        change = dataclasses.replace(change, operator=operator or operator_name(), action=action)
        self._own_steps.add(entry_id(incident_id, EntryKind.RESOLVE, change.time, change.operator))
        self._publish(None, [change])
        return change

    def _apply_steps_taken_elsewhere(self) -> None:
        """Acknowledgements and fixes another process (the CLI, a second console) wrote to the ledger: applied
        to this engine, so that its next update carries them instead of an open copy. Steps of this console are
        in the ledger too, and skipped."""
        store = self._store
        if store is None:
            return
        steps = store.ledger_since(self._ledger_seen)
        for rowid, entry in steps:
            self._ledger_seen = rowid
            self._apply_step(entry)

    def _apply_step(self, entry: LedgerEntry) -> None:
        if entry.id in self._own_steps:
            self._own_steps.discard(entry.id)
            return
        with self._lock:
            try:
                if entry.kind is EntryKind.RESOLVE:
                    outcome = Outcome(entry.outcome) if entry.outcome else Outcome.FIXED
                    change = self._engine.resolve(entry.incident_id, entry.note, outcome, entry.time)
                else:
                    change = self._engine.acknowledge(entry.incident_id, entry.note, entry.time)
            except (KeyError, ValueError):  # not live here, or already resolved: the database has it already
                return
        # No operator on the change: the ledger has this step already (one entry per step).
        self._publish(None, [change])

    def _stored_unresolved(self, incident_id: str) -> Incident:
        incident = self._store.get(incident_id) if self._store is not None else None
        if incident is None:
            raise KeyError(f"no incident with id {incident_id!r}")
        if incident.status is Status.RESOLVED:
            raise KeyError(f"incident {incident_id} is already resolved")
        return incident

    # -- the pipeline ----

    def _on_result(self, result: PollResult) -> None:
        with self._lock:
            changes: list[IncidentChange] = self._engine.observe(result)
        if result.sample is not None:
            self._account_exposure(result)
            if self._history is not None and result.fresh:  # a repeat would count one measurement twice
                try:
                    for earlier in result.earlier:  # backfilled minutes (a Prometheus site's start, or a gap)
                        self._history.observe(earlier)
                    self._history.observe(result.sample)
                except Exception:  # history is a convenience: it must never stop polling
                    log.exception("history rollup failed")
        self._publish(result, changes)

    def _account_exposure(self, result: PollResult) -> None:
        sample = result.sample
        assert sample is not None
        interval = self._intervals.get(result.node, 1.0)
        for gpu in sample.gpus:
            if not gpu.lost:
                key = (result.site, self._providers.get(result.site, ""), gpu.name or "unknown")
                self._exposure[key] += interval

    def _flush_exposure(self) -> None:
        store = self._store
        pending, self._exposure = self._exposure, defaultdict(float)
        self._exposure_flushed = time.monotonic()
        if store is None:
            return
        now = time.time()
        for (site, provider, model), seconds in pending.items():
            store.record_exposure(site, provider, model, seconds, now)

    def _publish(self, result: PollResult | None, changes: list[IncidentChange]) -> None:
        if changes:
            self.counters.incidents_opened += sum(1 for c in changes if c.kind == "opened")
            if self._store is not None:
                self._store.submit(changes)
            if self._notifier is not None:
                self._notifier.submit(changes)
        if result is None and not changes:
            return
        try:
            self._on_update(MonitorUpdate(time=time.time(), result=result, changes=tuple(changes)))
        except Exception:
            log.exception("update sink failed")

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                with self._lock:
                    changes: list[IncidentChange] = self._engine.tick(time.time())
                self._publish(None, changes)
                if time.monotonic() - self._exposure_flushed >= EXPOSURE_FLUSH_S:
                    self._flush_exposure()
                if time.monotonic() - self._steps_checked >= OPERATOR_STEPS_EVERY_S:
                    self._steps_checked = time.monotonic()
                    self._apply_steps_taken_elsewhere()
            except Exception:
                log.exception("monitor tick failed")
