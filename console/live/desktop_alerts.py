"""Which incident changes deserve a desktop notification, and what the open faults add up to.

Qt-free, so the tray (``widgets/live/tray.py``) only paints and shows what this decides. The rules:

* only faults are announced: a root incident (no parent) that opens, or escalates, at or above the chosen
  severity. Symptoms ride under their cause and would repeat it.
* at most one notification per incident, whatever it does later (an operator woken once for a fault has seen it);
* at most ``per_minute`` in any rolling minute: a burst (a rack losing cooling) shows the first few and counts the
  rest, which the tooltip and the next notification mention, instead of covering the screen;
* a silenced incident (maintenance) is tracked and counted but never announced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from console.incidents.model import ChangeKind, Incident, IncidentChange, Severity, Status

RATE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class AlertSettings:
    enabled: bool = True
    min_severity: Severity = Severity.MAJOR
    per_minute: int = 3


@dataclass(frozen=True, slots=True)
class Announcement:
    """One notification to show: about ``incident``, with ``held_back`` others suppressed by the rate limit so far."""

    incident: Incident
    escalated: bool
    held_back: int

    @property
    def title(self) -> str:
        verb = "escalated to" if self.escalated else "new"
        return f"{self.incident.severity.label.upper()} {verb}: {self.incident.title}"[:120]

    @property
    def body(self) -> str:
        ctx = self.incident.context
        where = " · ".join(part for part in (ctx.site, self.incident.effective_scope_name) if part)
        more = f"\n(+{self.held_back} more not shown: open the console)" if self.held_back else ""
        return f"{where}\n{self.incident.recommended_action}"[:400] + more


@dataclass(frozen=True, slots=True)
class FaultSummary:
    """The open root incidents by severity, worst first (the tray's colour and tooltip)."""

    counts: tuple[tuple[Severity, int], ...]

    @property
    def worst(self) -> Severity | None:
        return self.counts[0][0] if self.counts else None

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def text(self) -> str:
        if not self.counts:
            return "no open faults"
        parts = ", ".join(f"{n} {severity.label}" for severity, n in self.counts)
        return f"{self.total} open fault{'' if self.total == 1 else 's'}: {parts}"


class DesktopAlerts:
    """Feed it every incident change (``consider``); it answers the announcements to show, in order."""

    __slots__ = ("_announced", "_held_back", "_is_silenced", "_open_roots", "_sent_at", "settings")

    def __init__(
        self, settings: AlertSettings | None = None, is_silenced: Callable[[Incident], bool] | None = None
    ) -> None:
        self.settings = settings or AlertSettings()
        self._is_silenced = is_silenced or (lambda _incident: False)
        self._open_roots: dict[str, Severity] = {}
        self._announced: set[str] = set()
        self._sent_at: deque[float] = deque()
        self._held_back = 0

    @property
    def held_back(self) -> int:
        """Announcements the rate limit has suppressed since the last one shown."""
        return self._held_back

    def summary(self) -> FaultSummary:
        counts: dict[Severity, int] = {}
        for severity in self._open_roots.values():
            counts[severity] = counts.get(severity, 0) + 1
        return FaultSummary(tuple(sorted(counts.items(), key=lambda item: -item[0])))

    def consider(self, changes: Iterable[IncidentChange], now: float) -> list[Announcement]:
        out: list[Announcement] = []
        for change in changes:
            if change.kind is ChangeKind.EVIDENCE:
                continue
            incident = change.incident
            before = self._open_roots.get(incident.id)
            if incident.status is Status.RESOLVED:
                self._open_roots.pop(incident.id, None)
                self._announced.discard(incident.id)  # its id is not given out again: the set stays small
                continue
            if incident.parent_id is not None:  # a symptom now: its cause speaks for it
                self._open_roots.pop(incident.id, None)
                continue
            self._open_roots[incident.id] = incident.severity
            escalated = before is not None and incident.severity > before
            if change.kind is not ChangeKind.OPENED and not escalated:
                continue
            if not self._wanted(incident):
                continue
            self._announced.add(incident.id)
            if self._rate_limited(now):
                self._held_back += 1
                continue
            out.append(Announcement(incident, escalated, self._held_back))
            self._held_back = 0
        return out

    def _wanted(self, incident: Incident) -> bool:
        settings = self.settings
        return (
            settings.enabled
            and incident.severity >= settings.min_severity
            and incident.id not in self._announced
            and not self._is_silenced(incident)
        )

    def _rate_limited(self, now: float) -> bool:
        sent = self._sent_at
        while sent and now - sent[0] >= RATE_WINDOW_S:
            sent.popleft()
        if len(sent) >= max(self.settings.per_minute, 0):
            return True
        sent.append(now)
        return False
