"""The window's side of the monitoring worker (``console.live.worker_process``): reads its batches on the GUI
thread, sends it commands, and restarts it when it dies.

No thread of this process touches the pipe's reading side: a ``QSocketNotifier`` wakes the GUI thread when a batch
is waiting, and the GUI thread unpickles it (a few milliseconds per 50 ms batch at 1,000 nodes a second). A reader
thread would have brought back what the worker process is for: another thread taking the GIL from the GUI thread.

A worker that dies (killed, out of memory, a crash in a library) is reported in the banner and the log, and started
again; the new one resumes the open incidents from the database, as a restarted console does.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from PySide6.QtCore import QObject, QSocketNotifier, QThread, QTimer

from console.incidents.model import Incident, IncidentChange, Outcome
from console.live import worker_process
from console.live.worker_messages import (
    Answer,
    Batch,
    Command,
    Counters,
    Failed,
    Ready,
    SampleRepeats,
    Stopped,
    WorkerConfig,
)
from console.notify.health import ReceiverStatus
from console.notify.notifier import Notifier
from console.notify.silences import Matcher, Silence, SilenceMark
from widgets.bridge import MonitorBridge

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0  # a cold start imports numpy and the sources; a slow disk may add seconds
CALL_TIMEOUT_S = 15.0  # an Alertmanager asked for a silence may take its own 10 s
STOP_TIMEOUT_S = 10.0
WATCH_MS = 1000  # how often the process is checked, beside the end-of-file its death makes on the pipe
RESTART_DELAYS_S = (0.0, 1.0, 5.0, 30.0)  # a worker that keeps dying is restarted less and less often


class WorkerFailed(RuntimeError):
    """The worker could not be started, or is gone while a call waited for its answer."""


class _Waiter:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Answer | None = None


class MonitorClient(QObject):
    """Lives in the GUI thread. ``call`` may be used from any thread; everything else from the GUI thread.

    Updates, problems and the worker's fate reach the window through ``bridge``.
    """

    def __init__(self, config: WorkerConfig, bridge: MonitorBridge, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._config = config
        self._bridge = bridge
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._waiters_lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._notifier: QSocketNotifier | None = None
        self._repeats = SampleRepeats()
        self._polling_wanted = False
        self._stopped = False
        self._deaths: list[float] = []
        self.counters = Counters()
        self.restarts = 0
        self.ready: Ready | None = None
        self._book = Notifier.mirror_book(config.fleet)  # the worker's notifier's silences, as last sent
        self.receiver_statuses: tuple[ReceiverStatus, ...] = ()
        self.polling = False  # the worker said it polls
        self._watch = QTimer(self)
        self._watch.setObjectName("monitor-worker-watch")
        self._watch.setInterval(WATCH_MS)
        self._watch.timeout.connect(self._on_watch_timeout)
        self._restart_timer = QTimer(self)
        self._restart_timer.setObjectName("monitor-worker-restart")
        self._restart_timer.setSingleShot(True)
        self._restart_timer.timeout.connect(self._on_restart_timer_timeout)

    # -- lifecycle ----

    def launch(self) -> Ready:
        """Start the worker and wait for it to open the database (blocking: start-up only). WorkerFailed says why
        it could not; the window then never opens."""
        process, conn = worker_process.start(self._config)
        try:
            if not conn.poll(READY_TIMEOUT_S):
                raise WorkerFailed(f"the monitoring process did not start within {READY_TIMEOUT_S:g} s")
            first = worker_process.receive(conn)
        except (EOFError, OSError) as exc:
            _reap(process, STOP_TIMEOUT_S)
            conn.close()
            raise WorkerFailed(f"the monitoring process ended at start (exit code {process.returncode})") from exc
        except WorkerFailed:
            _reap(process, 0)
            conn.close()
            raise
        if not isinstance(first, Ready):
            _reap(process, STOP_TIMEOUT_S)
            conn.close()
            raise WorkerFailed(getattr(first, "message", repr(first)))
        self._attach(process, conn)
        self.ready = first
        for problem in first.problems:
            self._bridge.report_problem(problem)
        return first

    def start_polling(self) -> None:
        self._polling_wanted = True
        self._send(Command(0, "start_polling"))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the worker to stop polling, flush and close its files; wait up to ``timeout_s``, then kill it.

        Its last batches are read meanwhile (a full pipe would keep it from finishing). Safe to call twice.
        """
        self._stopped = True
        self._watch.stop()
        self._restart_timer.stop()
        process, conn = self._process, self._conn
        self._detach()
        if process is None or conn is None:
            return
        try:
            worker_process.send(conn, Command(0, "stop"))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and conn.poll(max(0.0, deadline - time.monotonic())):
                message = worker_process.receive(conn)
                if isinstance(message, Batch):
                    self.counters = message.counters
                elif isinstance(message, Stopped):
                    self.counters = message.counters
                    break
        except (EOFError, OSError):
            pass  # it ended (or died) on its own
        if not _reap(process, max(0.5, timeout_s / 2)):
            log.warning("the monitoring process did not stop within %g s: killed it", timeout_s)
        conn.close()
        self._fail_waiters("the monitoring process stopped")

    # -- commands ----

    def call(self, name: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S, **kwargs: Any) -> Any:
        """Run a worker command and return its value, or raise its error (any thread).

        On the GUI thread this reads the pipe itself until the answer comes (other batches are handled on the
        way); elsewhere it waits for the GUI thread to find the answer.
        """
        call_id = next(self._ids)
        waiter = _Waiter()
        with self._waiters_lock:
            self._waiters[call_id] = waiter
        try:
            self._send(Command(call_id, name, args, kwargs))
            if QThread.currentThread() is self.thread():
                deadline = time.monotonic() + timeout_s
                while not waiter.done.is_set() and time.monotonic() < deadline and self._conn is not None:
                    if self._conn.poll(min(0.05, max(0.0, deadline - time.monotonic()))):
                        self._read_available()
            else:
                waiter.done.wait(timeout_s)
        finally:
            with self._waiters_lock:
                self._waiters.pop(call_id, None)
        answer = waiter.answer
        if answer is None:
            raise WorkerFailed(f"the monitoring process did not answer {name!r} within {timeout_s:g} s")
        if answer.error is not None:
            raise answer.error
        return answer.value

    def acknowledge(self, incident_id: str, note: str = "") -> IncidentChange:
        change: IncidentChange = self.call("acknowledge", incident_id, note)
        return change

    def resolve(self, incident_id: str, note: str, outcome: Outcome, action: str = "other") -> IncidentChange:
        change: IncidentChange = self.call("resolve", incident_id, note, outcome, action)
        return change

    def add_silence(self, matchers: Sequence[Matcher], duration_s: float, comment: str, created_by: str) -> Silence:
        silence: Silence = self.call("add_silence", list(matchers), duration_s, comment, created_by)
        return silence

    def flush(self) -> None:
        """Wait until the worker has committed what it holds (tests, and a window about to read the file)."""
        self.call("flush")

    def silence_of(self, incident: Incident) -> SilenceMark | None:
        """The silence covering ``incident`` as of the worker's last word (every couple of seconds)."""
        return self._book.silence_of(incident)

    def statuses(self) -> tuple[ReceiverStatus, ...]:
        return self.receiver_statuses

    # -- the pipe (GUI thread) ----

    def _attach(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self._process, self._conn = process, conn
        self._repeats = SampleRepeats()  # a new worker's first samples are all new to it
        notifier = QSocketNotifier(conn.fileno(), QSocketNotifier.Type.Read, self)
        notifier.activated.connect(self._on_notifier_activated)
        self._notifier = notifier
        self._watch.start()

    def _detach(self) -> None:
        if self._notifier is not None:
            self._notifier.setEnabled(False)
            self._notifier.deleteLater()
            self._notifier = None
        self._process = None
        self._conn = None

    def _send(self, command: Command) -> None:
        conn = self._conn
        if conn is None:
            raise WorkerFailed("the monitoring process is not running (it is being restarted)")
        try:
            with self._send_lock:
                worker_process.send(conn, command)
        except OSError as exc:
            raise WorkerFailed(f"the monitoring process is gone: {exc}") from exc

    def _on_notifier_activated(self) -> None:
        # One message per wake-up: a GUI thread that fell behind (a long paint) then catches up between events
        # instead of holding the loop for every batch queued meanwhile; the notifier fires again while data waits.
        self._read_available(at_most=1)

    def _read_available(self, at_most: int | None = None) -> None:
        conn = self._conn
        failure: Exception | None = None
        read = 0
        try:
            while conn is not None and conn is self._conn and (at_most is None or read < at_most) and conn.poll():
                read += 1
                message = worker_process.receive(conn)
                try:
                    self._handle(message)
                except Exception as exc:  # a bug in a view must not leave the rest of the pipe unread
                    failure = failure or exc
        except (EOFError, OSError):
            self._on_worker_lost()
        if failure is not None:
            raise failure

    def _handle(self, message: object) -> None:
        if isinstance(message, Ready):  # a restarted worker
            self.ready = message
            for problem in message.problems:
                self._bridge.report_problem(problem)
            if self._polling_wanted:
                self.start_polling()
            self._bridge.status_reported.emit(f"Monitoring process restarted (pid {message.pid}).")
            log.warning("monitoring process restarted (pid %d)", message.pid)
            return
        if isinstance(message, Failed):  # a restarted worker that cannot open the files: its exit is noticed next
            self._bridge.report_problem(f"The monitoring process cannot start: {message.message}")
            return
        if not isinstance(message, Batch):
            return
        self.counters = message.counters
        self.polling = message.running
        if message.silences is not None:
            self._book.adopt(message.silences)
        if message.receivers is not None:
            self.receiver_statuses = message.receivers
        for problem in message.problems:
            self._bridge.report_problem(problem)
        try:
            if message.updates:
                self._bridge.deliver(self._repeats.restore(message.updates, message.repeats))
        finally:
            self._answer(message.answers)

    def _answer(self, answers: tuple[Answer, ...]) -> None:
        for answer in answers:
            with self._waiters_lock:
                waiter = self._waiters.get(answer.call_id)
            if waiter is not None:
                waiter.answer = answer
                waiter.done.set()

    def _fail_waiters(self, why: str) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters.items())
        for call_id, waiter in waiters:
            waiter.answer = Answer(call_id, error=WorkerFailed(why))
            waiter.done.set()

    # -- death and restart ----

    def _on_watch_timeout(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._read_available()  # what it sent before dying, then its end-of-file
            if self._process is not None:
                self._on_worker_lost()

    def _on_worker_lost(self) -> None:
        process = self._process
        if process is None or self._stopped:
            return
        if self._conn is not None:
            self._conn.close()
        self._detach()
        _reap(process, 1.0)
        code = process.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < 300] + [now]
        delay = RESTART_DELAYS_S[min(len(self._deaths), len(RESTART_DELAYS_S)) - 1]
        message = (
            f"The monitoring process stopped unexpectedly ({how}); "
            + ("restarting it." if delay == 0 else f"restarting it in {delay:g} s.")
            + " Polling pauses until it is back."
        )
        log.error("monitoring process (pid %s) lost: %s; restarting in %g s", process.pid, how, delay)
        self._fail_waiters("the monitoring process stopped unexpectedly")
        self._bridge.report_problem(message)
        self._bridge.worker_lost.emit(message)
        self._watch.stop()
        self._restart_timer.start(int(delay * 1000))

    def _on_restart_timer_timeout(self) -> None:
        if self._stopped:
            return
        try:
            process, conn = worker_process.start(self._config)
        except Exception as exc:  # cannot even spawn (no memory, no file descriptors): try again later
            log.exception("cannot restart the monitoring process")
            self._bridge.report_problem(f"The monitoring process cannot be restarted: {exc}")
            self._restart_timer.start(int(RESTART_DELAYS_S[-1] * 1000))
            return
        self.restarts += 1
        self._attach(process, conn)  # its Ready arrives through the notifier like any batch


def _reap(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``process`` to end, then kill it; True when it ended by itself."""
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True
