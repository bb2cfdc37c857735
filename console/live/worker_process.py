"""The monitoring worker: poller, parsing, incident engine, the store's writer, the chart rollup and the notifier
in a process of their own, so that the window's GIL is never theirs.

In one process, 1,000 dcgm nodes a second kept the poller, parser and engine threads holding the GIL most of the
time, and the GUI thread waited for it after every call into Qt: event-loop stalls p99 61-89 ms, longest
141-228 ms (``scripts/bench/bench_poll.py --app``). Here the window receives one compact ``Batch`` every 50 ms and
sends ``Command``s (acknowledge, resolve, silence, flush) whose ``Answer``s ride in a later batch.

The worker never outlives the window: its command loop ends when the pipe reports end-of-file (the window's process
is gone, however it died) or when its parent process changes. ``start`` runs it in a fresh interpreter: a fork of
a process that runs Qt's threads is unsafe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from console.incidents.model import Outcome
from console.live.monitor import FleetMonitor, MonitorUpdate
from console.live.startup import (
    WORKER_ARGUMENT,
    incident_engine_for,
    open_chart_history,
    open_notifier,
    tune_garbage_collector,
)
from console.live.worker_messages import (
    MAX_BATCH_UPDATES,
    Answer,
    Batch,
    Command,
    Counters,
    Failed,
    Ready,
    SampleRepeats,
    Stopped,
    WorkerConfig,
    decode,
    encode,
)
from console.notify.notifier import Notifier
from console.notify.silences import Matcher, Silence
from console.store import IncidentStore

log = logging.getLogger(__name__)

PARENT_CHECK_S = 1.0  # how often a quiet command loop checks that the window's process is still its parent
SILENCES_EVERY_S = 2.0  # the window re-reads silences every few seconds; sending them more often is waste
STOP_TIMEOUT_S = 10.0
WORKER_NICENESS = 5


def send(conn: Connection, message: object) -> None:
    """One message, pickled at protocol 5 (both ends use these two functions)."""
    conn.send_bytes(encode(message))


def receive(conn: Connection) -> object:
    return decode(conn.recv_bytes())


def worker_command(fd: int) -> list[str]:
    """The command line that runs ``main`` over the socket ``fd``: this module with this interpreter, or (in a
    PyInstaller build, which has no ``-m``) the binary itself with ``WORKER_ARGUMENT``."""
    if getattr(sys, "frozen", False):
        return [sys.executable, WORKER_ARGUMENT, str(fd)]
    return [sys.executable, "-m", "console.live.worker_process", str(fd)]


def start(config: WorkerConfig) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start a worker for ``config``; returns the process and the window's end of its socket.

    A fresh interpreter, not ``multiprocessing``'s spawn: spawn runs the parent's main script again in the child,
    which fails (or starts a second window) for a script that builds the app at its top level. The first message
    on the socket is ``Ready`` or ``Failed``. The worker ends when told (``Command("stop")``) or when this
    process's end of the socket closes.
    """
    ours, theirs = socket.socketpair()
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    try:
        process = subprocess.Popen(
            worker_command(theirs.fileno()), pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env
        )
    finally:
        theirs.close()  # only the worker holds its end now, so its death is our end-of-file
    conn = Connection(ours.detach())
    send(conn, config)
    return process, conn


def main(argv: list[str] | None = None) -> int:
    """The worker process's entry point: ``python -m console.live.worker_process FD``."""
    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[-1]))
    try:
        config = receive(conn)
    except (EOFError, OSError):
        return 1  # the window went away before saying what to watch
    if not isinstance(config, WorkerConfig):
        return 2
    run(conn, config)
    return 0


def run(conn: Connection, config: WorkerConfig) -> None:
    """Serve one window over ``conn`` until it says stop or goes away."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s [monitor] %(name)s: %(message)s")
    # Ctrl-C in a terminal reaches the whole process group: the window decides when its worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # On a busy machine the window's thread gets the core first: a poll a few milliseconds late costs nothing an
    # operator sees, a frame late does (a 1 Hz poll has ~1 s of slack per node, the GUI's 10 ms timer has none).
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    WorkerHost(conn, config).serve()


class WorkerHost:
    """Builds the pipeline, answers commands on the main thread, and sends batches from a sender thread."""

    COMMANDS = frozenset({"start_polling", "acknowledge", "resolve", "add_silence", "flush"})

    def __init__(self, conn: Connection, config: WorkerConfig) -> None:
        self._conn = conn
        self._config = config
        self._parent = os.getppid()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._updates: list[MonitorUpdate] = []
        self._problems: list[str] = []
        self._answers: list[Answer] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._started = False
        self._silences_sent: object | None = None
        self._silences_at = 0.0
        self._receivers_sent: tuple[Any, ...] | None = None
        self._counters_sent = Counters()
        self._repeats = SampleRepeats()  # sender thread only
        self._store: IncidentStore | None = None
        self._notifier: Notifier | None = None
        self._monitor: FleetMonitor | None = None
        self._close: list[Any] = []

    # -- lifecycle ----

    def serve(self) -> None:
        try:
            ready = self._open()
        except Exception as exc:  # config, database or history problem: the window says it and exits
            log.debug("worker start-up failure", exc_info=True)
            self._close_all()
            with contextlib.suppress(OSError):
                self._send(Failed(str(exc)))
            return
        self._send(ready)
        sender = threading.Thread(target=self._send_loop, name="monitor-worker-sender", daemon=True)
        sender.start()
        commands = ThreadPoolExecutor(max_workers=2, thread_name_prefix="monitor-worker-command")
        try:
            self._command_loop(commands)
        finally:
            commands.shutdown(wait=True, cancel_futures=True)
            self._close_all()  # the monitor's last updates are posted before the sender's last batch
            self._stopping.set()
            self._wake.set()
            sender.join(STOP_TIMEOUT_S)
            with contextlib.suppress(OSError):
                self._send(Stopped(self._counters()))

    def _open(self) -> Ready:
        config = self._config
        tune_garbage_collector()
        problems: list[str] = []
        store = IncidentStore.open(config.db_path, on_error=self._report)
        self._store = store
        self._close.append(store)
        if store.recovered is not None:
            problems.append(store.recovered.message)
        rollup = open_chart_history(config.history_path, config.history_retention_h, problems.append)
        if rollup is not None:
            self._close.append(rollup)
            if rollup.recovered is not None:
                problems.append(rollup.recovered.message)
        notifier = open_notifier(config.fleet, config.db_path, self._report, always=True)
        assert notifier is not None  # always=True
        self._notifier = notifier
        self._close.insert(0, notifier)  # stopped before the store it may still mark incidents in
        self._monitor = FleetMonitor(
            config.fleet,
            engine=incident_engine_for(config.fleet),
            store=store,
            on_update=self._post,
            seed=config.seed,
            history=rollup,
            notifier=notifier,
        )
        self._close.insert(0, self._monitor)
        return Ready(pid=os.getpid(), history_enabled=rollup is not None, problems=tuple(problems))

    def _close_all(self) -> None:
        for part in self._close:
            try:
                part.stop() if isinstance(part, FleetMonitor | Notifier) else part.close()
            except Exception:  # one part that fails to close must not keep the others open
                log.exception("closing %s failed", type(part).__name__)
        self._close.clear()

    # -- commands (the main thread reads them; a small pool runs them) ----

    def _command_loop(self, pool: ThreadPoolExecutor) -> None:
        while True:
            try:
                if not self._conn.poll(PARENT_CHECK_S):
                    if os.getppid() != self._parent:
                        log.warning("the window's process is gone: stopping")
                        return
                    continue
                command = receive(self._conn)
            except (EOFError, OSError):
                return  # the window's process ended or closed its end: never outlive it
            if not isinstance(command, Command) or command.name == "stop":
                return
            pool.submit(self._run_command, command)

    def _run_command(self, command: Command) -> None:
        if command.name not in self.COMMANDS:
            answer = Answer(command.call_id, error=ValueError(f"unknown command {command.name!r}"))
        else:
            try:
                value = getattr(self, f"_do_{command.name}")(*command.args, **command.kwargs)
                answer = Answer(command.call_id, value=value)
            except Exception as exc:  # errors are data: the window raises them again for its caller
                answer = Answer(command.call_id, error=_picklable(exc))
        with self._lock:
            self._answers.append(answer)
        self._wake.set()  # an operator is waiting: do not hold the answer for the batch period

    def _do_start_polling(self) -> None:
        assert self._monitor is not None
        if not self._started:
            self._monitor.start()
            self._started = True

    def _do_acknowledge(self, incident_id: str, note: str = "") -> object:
        assert self._monitor is not None
        assert self._store is not None
        change = self._monitor.acknowledge(incident_id, note)
        self._store.flush()  # the window re-reads the incident from the file next
        return change

    def _do_resolve(self, incident_id: str, note: str, outcome: Outcome, action: str = "other") -> object:
        assert self._monitor is not None
        assert self._store is not None
        change = self._monitor.resolve(incident_id, note, outcome, action)
        self._store.flush()
        return change

    def _do_add_silence(self, matchers: list[Matcher], duration_s: float, comment: str, created_by: str) -> Silence:
        assert self._notifier is not None
        silence = self._notifier.add_silence(matchers, duration_s, comment, created_by)
        self._silences_at = 0.0  # the next batch carries the marks it makes
        return silence

    def _do_flush(self) -> None:
        if self._store is not None:
            self._store.flush()
        if self._notifier is not None:
            self._notifier.flush()

    # -- what goes to the window ----

    def _post(self, update: MonitorUpdate) -> None:
        with self._lock:
            self._updates.append(update)

    def _report(self, message: str) -> None:
        with self._lock:
            self._problems.append(message)
        self._wake.set()

    def _send(self, message: object) -> None:
        with self._send_lock:
            send(self._conn, message)

    def _send_loop(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            self._wake.wait(self._config.batch_s)
            self._wake.clear()
            batch = self._take()
            while batch is not None:
                try:
                    self._send(batch)
                except OSError:  # the window is gone; the command loop sees the same and stops everything
                    return
                batch = self._take() if stopping else None  # stopping: what is left travels now, all of it
            if stopping:
                return

    def _take(self) -> Batch | None:
        with self._lock:
            updates, self._updates = self._updates[:MAX_BATCH_UPDATES], self._updates[MAX_BATCH_UPDATES:]
            if self._updates:
                self._wake.set()  # the rest travel next, without waiting
            problems, self._problems = self._problems, []
            answers, self._answers = self._answers, []
        silences, receivers = self._notifier_news()
        counters = self._counters()
        news = updates or problems or answers or silences is not None or receivers is not None
        if not news and counters == self._counters_sent:
            return None
        self._counters_sent = counters
        sent, repeats = self._repeats.strip(updates)
        return Batch(
            updates=sent,
            repeats=repeats,
            problems=tuple(problems),
            answers=tuple(answers),
            counters=counters,
            silences=silences,
            receivers=receivers,
            running=self._started,
        )

    def _notifier_news(self) -> tuple[object | None, tuple[Any, ...] | None]:
        """The silence book's view and the receivers' statuses, when due and changed since last sent."""
        notifier = self._notifier
        now = time.monotonic()
        if notifier is None or now - self._silences_at < SILENCES_EVERY_S:
            return None, None
        self._silences_at = now
        view, statuses = notifier.book.view(), notifier.statuses()
        silences = view if view is not self._silences_sent else None  # the book replaces its view whole
        receivers = statuses if statuses != self._receivers_sent else None
        self._silences_sent, self._receivers_sent = view, statuses
        return silences, receivers

    def _counters(self) -> Counters:
        monitor = self._monitor
        if monitor is None:
            return Counters()
        stats = monitor.poller.stats
        return Counters(
            polls=stats.polls,
            ok_polls=stats.ok_polls,
            failed_polls=stats.failed_polls,
            repeated_polls=stats.repeated_polls,
            on_time_polls=stats.on_time_polls,
            incidents_opened=monitor.counters.incidents_opened,
        )


def _picklable(exc: Exception) -> Exception:
    """``exc`` itself when it survives pickling (KeyError, ValueError, NotifyError), else its text in a
    RuntimeError, so that the answer always reaches the window."""
    try:
        decode(encode(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


if __name__ == "__main__":
    sys.exit(main())
