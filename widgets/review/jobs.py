"""Store reads for the incident review, run off the GUI thread.

A few worker threads ("lanes") each take jobs from their own queue, so a slow count or a long export never
delays the next page. Every job belongs to a topic ("page", "count", "detail", ...) and carries the topic's
generation at submission: a newer job on the same topic makes the older one stale, so a queued stale job is
skipped and a stale answer is dropped on arrival. Answers cross into Qt through one queued signal, and the
callback runs on the GUI thread. Errors become data (``JobError``), never exceptions across threads.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal

from console.store import StoreError

log = logging.getLogger(__name__)

LANES = ("query", "count", "bulk")  # pages and details; counts; rates and exports
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class JobError:
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


class StoreJobs(QObject):
    """Lives in the GUI thread. ``submit`` from the GUI thread only; callbacks run there too."""

    answered = Signal(object)  # _Answer, emitted from a worker thread (queued to the GUI thread)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._latest: dict[str, int] = {}
        self._callbacks: dict[int, Callable[[Any], None]] = {}
        self._queues: dict[str, queue.SimpleQueue[object]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self.cancelled = threading.Event()  # long jobs (exports) poll it so that stop() is prompt
        self.answered.connect(self._on_worker_answered)

    @property
    def pending(self) -> int:
        """Jobs submitted whose answer has not reached the GUI thread (stale ones included until skipped)."""
        return len(self._callbacks)

    def is_current(self, topic: str, generation: int) -> bool:
        return self._latest.get(topic) == generation

    def submit(self, lane: str, topic: str, work: Callable[[], Any], on_done: Callable[[Any], None]) -> int:
        """Run ``work()`` on ``lane``; ``on_done(value or JobError)`` runs on the GUI thread unless superseded.

        Returns the job's generation for ``topic``.
        """
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r} (one of {', '.join(LANES)})")
        generation = self._latest.get(topic, 0) + 1
        self._latest[topic] = generation
        job = _Job(next(self._ids), topic, generation, work)
        self._callbacks[job.job_id] = on_done
        self._lane(lane).put(job)
        return generation

    def stop(self) -> None:
        """Ask every lane to finish its current job and end; wait for them (cooperative, never terminate)."""
        self.cancelled.set()
        threads = list(self._threads.values())
        for lane_queue in self._queues.values():
            lane_queue.put(_STOP)
        for thread in threads:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("incident review worker %s did not stop within %g s", thread.name, STOP_TIMEOUT_S)
        self._threads.clear()
        self._queues.clear()
        self._callbacks.clear()

    # -- internals ----

    def _lane(self, lane: str) -> queue.SimpleQueue[object]:
        thread = self._threads.get(lane)
        if thread is None or not thread.is_alive():
            self.cancelled.clear()
            lane_queue: queue.SimpleQueue[object] = queue.SimpleQueue()
            thread = threading.Thread(target=self._run, args=(lane_queue,), name=f"incident-review-{lane}", daemon=True)
            self._queues[lane] = lane_queue
            self._threads[lane] = thread
            thread.start()
        return self._queues[lane]

    def _run(self, lane_queue: queue.SimpleQueue[object]) -> None:
        while True:
            job = lane_queue.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            if self._latest.get(job.topic) != job.generation:
                value: Any = None  # superseded while queued: skip the read, tell the GUI to forget the job
            else:
                value = _run_job(job)
            self.answered.emit(_Answer(job.job_id, job.topic, job.generation, value))

    def _on_worker_answered(self, answer: _Answer) -> None:
        callback = self._callbacks.pop(answer.job_id, None)
        if callback is None or not self.is_current(answer.topic, answer.generation):
            return  # an older filter's answer, or one that arrived after stop()
        callback(answer.value)


def _run_job(job: _Job) -> Any:
    try:
        return job.work()
    except (StoreError, OSError, ValueError) as exc:
        return JobError(str(exc))
    except sqlite3.Error as exc:
        return JobError(f"the incident database could not be read: {exc}")
    except Exception as exc:  # a bug in one read must not end the lane, nor freeze the review
        log.exception("incident review job %s failed", job.topic)
        return JobError(f"{type(exc).__name__}: {exc}")
