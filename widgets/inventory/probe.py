"""The inventory editor's tests: "Test connection" (one probe of one source) and "Send test" (one delivery to one
receiver), each run on a worker lane, its outcome kept.

A probe (``console.polling.probe.probe``) and a test delivery (``console.notify.trial.send_test``) are bounded by
their timeouts and report failures as data. They run on ``widgets.workers`` lanes so the dialog keeps responding
while a target is silent; the outcome comes back through the crossing. A few lanes let a few tables be tested at
once. Results are kept per table (by identity) until that table is edited or removed, so selecting another one
and coming back shows the last result.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from console.config.fleet import Receiver, SourceSpec
from console.notify.trial import send_test
from console.polling.probe import ProbeOutcome
from widgets.workers import WorkError, Workers

ProbeFunction = Callable[..., ProbeOutcome]
Outcome = tuple[bool, str]  # passed, and the line the form shows
Job = Callable[[], Outcome]

PROBE_LANES = tuple(f"probe-{i}" for i in range(3))  # tables tested at the same time; later ones queue


def probe_job(probe_function: ProbeFunction, spec: SourceSpec, timeout_s: float, node: str, site: str) -> Job:
    def run() -> Outcome:
        answer = probe_function(spec, timeout_s=timeout_s, node=node, site=site or "probe")
        if answer.ok:
            return True, f"OK: {answer.summary().removeprefix('ok: ')}"
        return False, f"Failed: {answer.summary()}"

    return run


def send_test_job(receiver: Receiver) -> Job:
    def run() -> Outcome:
        result = send_test(receiver)
        took = f" ({result.elapsed_s * 1000:.0f} ms)"
        return result.ok, f"OK: {result.message}{took}" if result.ok else f"Failed: {result.message}{took}"

    return run


@dataclass(frozen=True, slots=True)
class TestState:
    """What a form shows for one table: a result, a test in flight, or nothing yet."""

    test_id: int = 0
    text: str = ""
    testing: bool = False
    ok: bool | None = None


NOT_TESTED = TestState()


class TableTests(QObject):
    """Lives in the GUI thread; ``test_changed`` says some table's state changed (shown if it is on screen)."""

    test_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._states: dict[int, TestState] = {}  # id(source table) -> state
        self._workers = Workers("inventory-probe", PROBE_LANES, parent=self)

    def state(self, table: object) -> TestState:
        return self._states.get(id(table), NOT_TESTED)

    def refuse(self, table: object, reason: str) -> None:
        """A table that cannot be tested as it stands (it does not validate): say so instead of probing."""
        self._states[id(table)] = TestState(0, reason, False, False)

    def forget(self, table: object) -> None:
        self._states.pop(id(table), None)

    def forget_result(self, table: object) -> None:
        """An edit made the last result stale; a test still in flight keeps running and is shown when done."""
        if not self.state(table).testing:
            self.forget(table)

    def start(self, table: object, job: Job) -> None:
        test_id = next(self._ids)
        self._states[id(table)] = TestState(test_id, "", True, None)

        def run() -> Outcome:
            try:
                return job()
            except Exception as exc:  # probes and test sends report failures as data; a last guard for the lane
                return False, f"Failed: {type(exc).__name__}: {exc}"

        lane = PROBE_LANES[test_id % len(PROBE_LANES)]
        self._workers.submit(lane, f"test:{test_id}", run, lambda answer: self._on_workers_answered(test_id, answer))

    def stop(self, timeout_s: float = 0.0) -> None:
        """End the lanes (a probe in flight ends by its own timeout); its test is abandoned, not left "testing"."""
        self._workers.stop(timeout_s)
        abandoned = [key for key, state in self._states.items() if state.testing]
        for key in abandoned:
            del self._states[key]
        if abandoned:
            self.test_changed.emit()

    def _on_workers_answered(self, test_id: int, answer: Outcome | WorkError) -> None:
        if isinstance(answer, WorkError):  # cannot happen (run() guards itself), but never leave "Testing..."
            ok, text = False, f"Failed: {answer.message}"
        else:
            ok, text = answer
        for key, state in list(self._states.items()):
            if state.test_id == test_id:
                self._states[key] = TestState(test_id, text, False, ok)
        self.test_changed.emit()
