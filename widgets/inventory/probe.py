"""The inventory editor's "Test connection": one probe of one source, run on a worker lane, its outcome kept.

A probe (``console.polling.probe.probe``) is bounded by its timeout and reports failures as data. It runs on a
``widgets.workers`` lane so the dialog keeps responding while a target is silent; the outcome comes back through
the crossing. A few lanes let a few sources be tested at once. Results are kept per source table (by identity)
until that table is edited or removed, so selecting another source and coming back shows the last result.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from console.config.fleet import SourceSpec
from console.polling.probe import ProbeOutcome, probe
from console.samples.results import PollFailure
from widgets.workers import WorkError, Workers

ProbeFunction = Callable[..., ProbeOutcome]

PROBE_LANES = tuple(f"probe-{i}" for i in range(3))  # sources tested at the same time; later ones queue


@dataclass(frozen=True, slots=True)
class TestState:
    """What the source form shows for one source: a result, a test in flight, or nothing yet."""

    test_id: int = 0
    text: str = ""
    testing: bool = False
    ok: bool | None = None


NOT_TESTED = TestState()


class ConnectionTests(QObject):
    """Lives in the GUI thread; ``test_changed`` says some source's state changed (shown if it is on screen)."""

    test_changed = Signal()

    def __init__(self, probe_function: ProbeFunction = probe, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._probe_function = probe_function
        self._ids = itertools.count(1)
        self._states: dict[int, TestState] = {}  # id(source table) -> state
        self._workers = Workers("inventory-probe", PROBE_LANES, parent=self)

    def state(self, table: object) -> TestState:
        return self._states.get(id(table), NOT_TESTED)

    def refuse(self, table: object, reason: str) -> None:
        """A source that cannot be tested as it stands (it does not validate): say so instead of probing."""
        self._states[id(table)] = TestState(0, reason, False, False)

    def forget(self, table: object) -> None:
        self._states.pop(id(table), None)

    def forget_result(self, table: object) -> None:
        """An edit made the last result stale; a test still in flight keeps running and is shown when done."""
        if not self.state(table).testing:
            self.forget(table)

    def start(self, table: object, spec: SourceSpec, timeout_s: float, node: str, site: str) -> None:
        test_id = next(self._ids)
        self._states[id(table)] = TestState(test_id, "", True, None)
        probe_function = self._probe_function

        def run() -> ProbeOutcome:
            try:
                return probe_function(spec, timeout_s=timeout_s, node=node, site=site or "probe")
            except Exception as exc:  # probe() reports failures as data; this is a last guard for the lane
                return ProbeOutcome(spec, 0.0, failure=PollFailure.INTERNAL, reason=f"{type(exc).__name__}: {exc}")

        lane = PROBE_LANES[test_id % len(PROBE_LANES)]
        self._workers.submit(lane, f"probe:{test_id}", run, lambda answer: self._on_workers_answered(test_id, answer))

    def stop(self, timeout_s: float = 0.0) -> None:
        """End the lanes (a probe in flight ends by its own timeout); its test is abandoned, not left "testing"."""
        self._workers.stop(timeout_s)
        abandoned = [key for key, state in self._states.items() if state.testing]
        for key in abandoned:
            del self._states[key]
        if abandoned:
            self.test_changed.emit()

    def _on_workers_answered(self, test_id: int, answer: ProbeOutcome | WorkError) -> None:
        if isinstance(answer, WorkError):  # cannot happen (run() guards itself), but never leave "Testing..."
            text, ok = f"Failed: {answer.message}", False
        else:
            text = f"OK: {answer.summary().removeprefix('ok: ')}" if answer.ok else f"Failed: {answer.summary()}"
            ok = answer.ok
        for key, state in list(self._states.items()):
            if state.test_id == test_id:
                self._states[key] = TestState(test_id, text, False, ok)
        self.test_changed.emit()
