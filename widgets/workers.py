"""Request/answer work off the GUI thread: store reads, chart-history reads, connection tests.

A few worker threads ("lanes") each take jobs from their own queue, so a slow count or a long export never
delays the next page. Every job belongs to a topic ("page", "count", "rollup", ...) and carries the topic's
generation at submission: a newer job on the same topic makes the older one stale, so a queued stale job is
skipped and a stale answer is dropped on arrival. Answers come back through a ``widgets.bridge.Crossing`` and the
callback runs on the GUI thread. Errors become data (``WorkError``), never exceptions across threads: a bug in
one job is logged and answered as an error, and the lane lives on.

    workers = Workers("incident-review", ("query", "count"), expected_errors=(StoreError,), parent=window)
    workers.submit("query", "page", lambda: store.query(flt), on_page)   # on_page(IncidentPage | WorkError)
    workers.stop()                                                        # on close: cooperative, joins

Lanes start on their first job and end on ``stop``; a job after ``stop`` starts its lane again.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject

from widgets.bridge import Crossing

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class WorkError:
    """What went wrong in a job, as the operator should read it."""

    message: str


@dataclass(frozen=True, slots=True)
class _Job:
    job_id: int
    topic: str
    generation: int
    work: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class _Answer:
    job_id: int
    topic: str
    generation: int
    value: Any


_STOP = object()


class Workers(QObject):
    """Lives in the GUI thread. ``submit`` and ``stop`` from the GUI thread only; callbacks run there too.

    ``expected_errors`` are the failures a job reports to the operator as they are (the store's ``StoreError``, a
    ``RollupError``, ``OSError``); anything else is a bug: logged with its traceback, answered as a ``WorkError``.
    """

    def __init__(
        self,
        name: str,
        lanes: Sequence[str],
        *,
        expected_errors: tuple[type[Exception], ...] = (),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.name = name
        self.lanes = tuple(lanes)
        self._expected = expected_errors
        self._ids = itertools.count(1)
        self._latest: dict[str, int] = {}
        self._callbacks: dict[int, Callable[[Any], None]] = {}
        self._queues: dict[str, queue.SimpleQueue[object]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self.cancelled = threading.Event()  # long jobs (exports) poll it so that stop() is prompt
        self._crossing = Crossing(self)
        self._crossing.delivered.connect(self._on_crossing_delivered)

    @property
    def pending(self) -> int:
        """Jobs submitted whose answer has not reached the GUI thread (stale ones included until skipped)."""
        return len(self._callbacks)

    @property
    def running(self) -> bool:
        """Some lane's thread is alive (it ends on ``stop``)."""
        return any(thread.is_alive() for thread in self._threads.values())

    def is_current(self, topic: str, generation: int) -> bool:
        return self._latest.get(topic) == generation

    def submit(self, lane: str, topic: str, work: Callable[[], Any], on_done: Callable[[Any], None]) -> int:
        """Run ``work()`` on ``lane``; ``on_done(value or WorkError)`` runs on the GUI thread unless superseded.

        Returns the job's generation for ``topic``.
        """
        if lane not in self.lanes:
            raise ValueError(f"unknown lane {lane!r} (one of {', '.join(self.lanes)})")
        generation = self._latest.get(topic, 0) + 1
        self._latest[topic] = generation
        job = _Job(next(self._ids), topic, generation, work)
        self._callbacks[job.job_id] = on_done
        self._lane(lane).put(job)
        return generation

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask every lane to finish its current job and end; wait up to ``timeout_s`` for each (never terminate).

        Answers still on their way are dropped. Safe to call more than once.
        """
        self.cancelled.set()
        threads = list(self._threads.values())
        for lane_queue in self._queues.values():
            lane_queue.put(_STOP)
        for thread in threads:
            thread.join(timeout_s)
            if thread.is_alive() and timeout_s > 0:
                log.warning("worker %s did not stop within %g s", thread.name, timeout_s)
        self._threads.clear()
        self._queues.clear()
        self._callbacks.clear()

    # -- internals ----

    def _lane(self, lane: str) -> queue.SimpleQueue[object]:
        thread = self._threads.get(lane)
        if thread is None or not thread.is_alive():
            self.cancelled.clear()
            lane_queue: queue.SimpleQueue[object] = queue.SimpleQueue()
            thread = threading.Thread(target=self._run, args=(lane_queue,), name=f"{self.name}-{lane}", daemon=True)
            self._queues[lane] = lane_queue
            self._threads[lane] = thread
            thread.start()
        return self._queues[lane]

    def _run(self, lane_queue: queue.SimpleQueue[object]) -> None:
        """A lane's thread: never touches a widget; answers cross to the GUI thread through the crossing."""
        while True:
            job = lane_queue.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            if self._latest.get(job.topic) != job.generation:
                value: Any = None  # superseded while queued: skip the work, tell the GUI to forget the job
            else:
                value = self._do(job)
            self._crossing.post(_Answer(job.job_id, job.topic, job.generation, value))

    def _do(self, job: _Job) -> Any:
        try:
            return job.work()
        except self._expected as exc:
            return WorkError(str(exc))
        except Exception as exc:  # a bug in one job must not end the lane, nor freeze the window waiting on it
            log.exception("%s job %s failed", self.name, job.topic)
            return WorkError(f"{type(exc).__name__}: {exc}")

    def _on_crossing_delivered(self, batch: Sequence[object]) -> None:
        failure: Exception | None = None
        for answer in batch:
            assert isinstance(answer, _Answer)
            callback = self._callbacks.pop(answer.job_id, None)
            if callback is None or not self.is_current(answer.topic, answer.generation):
                continue  # an older request's answer, or one that arrived after stop()
            try:
                callback(answer.value)
            except Exception as exc:  # the batch's other answers still get delivered; the first bug surfaces
                failure = failure or exc
        if failure is not None:
            raise failure
