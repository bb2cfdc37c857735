"""What travels between the window's process and the monitoring worker (``console.live.worker_process``).

The worker sends one ``Batch`` every ``WorkerConfig.batch_s`` (or at once when an answer is due) carrying every
update since the last one: at 1,000 nodes a second, one pickled message per update cost the window more than
handling the update. The window sends ``Command``s; each is answered by an ``Answer`` riding in a later batch,
after the updates the command produced, so the window sees an acknowledgement's change before its answer.
Everything here is a frozen dataclass that pickles as it is (the worker is started with ``spawn``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import operator
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from console.config.fleet import Fleet
from console.live.monitor import MonitorUpdate
from console.notify.health import ReceiverStatus
from console.samples import results, schema
from console.samples.schema import NodeSample

BATCH_S = 0.02  # how long updates gather before they travel: short, because the window unpickles a batch in one go
# At most this many updates a message: a sender that ran late (the poller held the GIL) splits what gathered
# into several messages, which the window reads one per wake-up, between its timers and paints.
MAX_BATCH_UPDATES = 32


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything the worker needs to build the pipeline the window used to build in its own process."""

    fleet: Fleet
    db_path: Path
    history_path: Path
    history_retention_h: float
    seed: int | None = None
    batch_s: float = BATCH_S
    log_level: int = logging.INFO  # the window's: the worker logs to the same stderr at the same level


@dataclass(frozen=True, slots=True)
class Counters:
    """The poller's and the monitor's counts, as of the batch that carries them."""

    polls: int = 0
    ok_polls: int = 0
    failed_polls: int = 0
    repeated_polls: int = 0
    on_time_polls: int = 0
    incidents_opened: int = 0

    @property
    def samples(self) -> int:
        return self.ok_polls


@dataclass(frozen=True, slots=True)
class Ready:
    """Sent once, when the store, the chart history and the notifier are open (before any polling)."""

    pid: int
    history_enabled: bool  # False when the chart-history file could not be opened (said in ``problems``)
    problems: tuple[str, ...] = ()  # a damaged database moved aside, history disabled, ...


@dataclass(frozen=True, slots=True)
class Failed:
    """Sent instead of ``Ready`` when the pipeline cannot be built (a database from a newer version, ...)."""

    message: str


@dataclass(frozen=True, slots=True)
class Command:
    call_id: int
    name: str  # a method of console.live.worker_process.WorkerHost listed in its COMMANDS
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    call_id: int
    value: Any = None
    error: BaseException | None = None  # raised again on the window's side


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything since the previous batch, oldest first within each field."""

    updates: tuple[MonitorUpdate, ...] = ()
    repeats: tuple[int, ...] = ()  # positions in ``updates`` whose result's sample was left out (``SampleRepeats``)
    problems: tuple[str, ...] = ()
    answers: tuple[Answer, ...] = ()
    counters: Counters = Counters()
    # Sent only when they changed: the notifier's silence book (``SilenceBook.view``), the receivers' health.
    silences: object | None = None
    receivers: tuple[ReceiverStatus, ...] | None = None
    running: bool = False  # polling has started


@dataclass(frozen=True, slots=True)
class Stopped:
    """The worker's last message: everything is stopped, flushed and closed."""

    counters: Counters


class SampleRepeats:
    """Leaves out a sample the other side already has, and puts it back there as the same object.

    A node whose exporter has not collected since its last poll answers with the very sample object it gave last
    time, and the window tells a repeat by that identity (``FleetState.apply_result``). Pickling makes a new object
    per message, so the worker's ``strip`` sends such a result without its sample and the window's ``restore``
    puts back the sample it received last from that node: identity survives the pipe, and repeats cost nothing.
    One instance per side and per worker (a restarted worker starts with a new pair).
    """

    def __init__(self) -> None:
        self._last: dict[str, NodeSample] = {}  # node -> its sample last sent (or received)

    def strip(self, updates: list[MonitorUpdate]) -> tuple[tuple[MonitorUpdate, ...], tuple[int, ...]]:
        repeats: list[int] = []
        out: list[MonitorUpdate] = []
        for position, update in enumerate(updates):
            result = update.result
            if result is not None and result.sample is not None and self._last.get(result.node) is result.sample:
                out.append(dataclasses.replace(update, result=dataclasses.replace(result, sample=None)))
                repeats.append(position)
                continue
            if result is not None and result.sample is not None:
                self._last[result.node] = result.sample
            out.append(update)
        return tuple(out), tuple(repeats)

    def restore(self, updates: tuple[MonitorUpdate, ...], repeats: tuple[int, ...]) -> tuple[MonitorUpdate, ...]:
        marked = set(repeats)
        out: list[MonitorUpdate] = []
        for position, update in enumerate(updates):
            result = update.result
            if result is not None and position in marked:
                sample = self._last.get(result.node)
                out.append(dataclasses.replace(update, result=dataclasses.replace(result, sample=sample)))
                continue
            if result is not None and result.sample is not None:
                self._last[result.node] = result.sample
            out.append(update)
        return tuple(out)


PICKLE_PROTOCOL = 5
Reducer = Callable[[Any], tuple[type, tuple[Any, ...]]]


def _positional(cls: type) -> Reducer | None:
    """A reducer that rebuilds ``cls`` by calling it with its fields in order, or None when some field is not an
    ``__init__`` argument. Frozen slotted dataclasses otherwise unpickle through ``dataclasses``' Python-level
    ``__setstate__``, which looks the fields up for every object: at 1,000 nodes a second (about 11 objects per
    poll) that was most of the window's unpickling time, 0.20 against 0.12 ms per poll this way."""
    fields = dataclasses.fields(cls)
    if not all(f.init for f in fields):
        return None
    get = operator.attrgetter(*(f.name for f in fields))
    if len(fields) == 1:
        return lambda obj: (type(obj), (get(obj),))
    return lambda obj: (type(obj), get(obj))


def _fast_table() -> dict[type, Reducer]:
    table: dict[type, Reducer] = {}
    for module in (schema, results):
        for value in vars(module).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                reducer = _positional(value)
                if reducer is not None:
                    table[value] = reducer
    reducer = _positional(MonitorUpdate)
    assert reducer is not None
    table[MonitorUpdate] = reducer
    return table


_FAST = _fast_table()


def encode(message: object) -> bytes:
    """One message as bytes (pickle protocol 5, samples and results as positional calls)."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=PICKLE_PROTOCOL)
    pickler.dispatch_table = _FAST
    pickler.dump(message)
    return out.getvalue()


def decode(data: bytes) -> object:
    return pickle.loads(data)
