"""SilenceBook: which silences are in force and which incident each one covers, readable from any thread.

What it knows comes from the notifier's loop: Alertmanager's silences and its read-back of the console's alerts
(``status.state`` suppressed, ``status.silencedBy``), every ~30 s, and the local silences of the notification file.
An incident is silenced when Alertmanager said so, or when an active silence's matchers match its labels (so an
incident opening on a node under maintenance is muted before Alertmanager's next read-back). The view is one
immutable object replaced whole, so ``silence_of`` on the GUI thread needs no lock (writers take one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from console.incidents.model import Incident
from console.notify.silences import Silence, SilenceMark, first_match
from console.notify.state import MarkChange


@dataclass(frozen=True, slots=True)
class _View:
    alertmanager: tuple[Silence, ...] = ()
    local: tuple[Silence, ...] = ()
    suppressed_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # incident id -> silence ids
    by_id: Mapping[str, Silence] = field(default_factory=dict)


def suppressed_by(alerts: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """From ``GET /api/v2/alerts``: the silence ids muting each of the console's incidents."""
    found: dict[str, tuple[str, ...]] = {}
    for alert in alerts:
        labels, status = alert.get("labels"), alert.get("status")
        if not isinstance(labels, dict) or not isinstance(status, dict):
            continue
        incident_id = labels.get("incident_id")
        silenced = status.get("silencedBy") or []
        if isinstance(incident_id, str) and status.get("state") == "suppressed" and isinstance(silenced, list):
            found[incident_id] = tuple(str(sid) for sid in silenced)
    return found


class SilenceBook:
    def __init__(self, labels_of: Callable[[Incident], Mapping[str, str]], clock: Callable[[], float] = time.time):
        self._labels_of = labels_of
        self._clock = clock
        self._view = _View()
        self._lock = threading.Lock()  # writers only (the loop, an operator's silence): readers take the view whole
        self._marks: dict[str, SilenceMark] = {}  # the notifier's loop only: what the file says per open root

    # --- any thread ---

    def silence_of(self, incident: Incident) -> SilenceMark | None:
        view, now = self._view, self._clock()
        for silence_id in view.suppressed_by.get(incident.id, ()):
            silence = view.by_id.get(silence_id)
            if silence is not None and silence.active(now):
                return silence.mark()
        labels = self._labels_of(incident)
        silence = first_match(view.alertmanager, labels, now) or first_match(view.local, labels, now)
        return None if silence is None else silence.mark()

    def locally_silenced(self, incident: Incident) -> bool:
        return first_match(self._view.local, self._labels_of(incident), self._clock()) is not None

    def silences(self) -> tuple[Silence, ...]:
        view = self._view
        return view.alertmanager + view.local

    def view(self) -> object:
        """What the book knows now, as one immutable picklable value: a mirror in another process ``adopt``s it
        (the window's process, while the notifier runs in the monitoring worker)."""
        return self._view

    def adopt(self, view: object) -> None:
        """Know what another book's ``view`` says (a mirror's only writer)."""
        if not isinstance(view, _View):
            raise TypeError(f"not a silence book's view: {type(view).__name__}")
        with self._lock:
            self._view = view

    # --- the notifier's loop ---

    def set_local(self, silences: tuple[Silence, ...]) -> None:
        with self._lock:
            view = self._view
            self._view = _View(
                view.alertmanager, silences, view.suppressed_by, self._index(view.alertmanager, silences)
            )

    def set_alertmanager(self, silences: tuple[Silence, ...], suppressed: Mapping[str, tuple[str, ...]]) -> None:
        with self._lock:
            view = self._view
            self._view = _View(silences, view.local, dict(suppressed), self._index(silences, view.local))

    def put_alertmanager(self, silence: Silence) -> None:
        """One silence just made or expired from the console: in force (or not) before the next read-back."""
        with self._lock:
            view = self._view
            silences = (*(s for s in view.alertmanager if s.id != silence.id), silence)
            suppressed = view.suppressed_by
            if silence.expired:
                suppressed = {iid: ids for iid, ids in suppressed.items() if silence.id not in ids}
            self._view = _View(silences, view.local, suppressed, self._index(silences, view.local))

    @staticmethod
    def _index(*groups: tuple[Silence, ...]) -> dict[str, Silence]:
        return {silence.id: silence for group in groups for silence in group}

    def refresh(self, incidents: Iterable[Incident]) -> list[MarkChange]:
        """The marks of these open roots that changed since last time (for the notification file)."""
        changes: list[MarkChange] = []
        for incident in incidents:
            mark = self.silence_of(incident)
            if mark != self._marks.get(incident.id):
                changes.append((incident.id, mark))
                if mark is None:
                    self._marks.pop(incident.id, None)
                else:
                    self._marks[incident.id] = mark
        return changes

    def forget(self, incident_id: str) -> None:
        """An incident that ended keeps its last mark in the file (what covered it); only this copy goes."""
        self._marks.pop(incident_id, None)
