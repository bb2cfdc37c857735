"""The store's value types: filters, pages, timeline, seen-before groups, rates, merge counts, errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from console.db import Recovered
from console.incidents.model import ChangeKind, Incident, Outcome, Severity, Status


class StoreError(Exception):
    """The incident database cannot be opened or used; the message says which file and why."""


# A damaged file moved aside at open; the same record for both database files (``what`` names which).
StoreRecovered = Recovered


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    """What the review asks for. Every field is optional; set fields are combined with AND.

    ``since``/``until`` bound ``opened_at`` (since inclusive, until exclusive). ``gpu`` is a UUID, or a number
    for the GPU index. ``severity`` is the minimum severity. ``status`` takes one status or several (any of).
    ``text`` is free text matched against title, detail and resolution note (every word must occur).
    ``workload`` matches incidents whose workload names it (a pod, namespace, container, job id or process name;
    case-insensitive substring).
    ``roots_only`` keeps the roots (``parent_id`` NULL: causes, and incidents no cause was found for) and leaves
    out the symptoms grouped under them.
    """

    since: float | None = None
    until: float | None = None
    site: str | None = None
    provider: str | None = None
    node: str | None = None
    gpu: str | None = None
    gpu_model: str | None = None
    driver: str | None = None
    severity: Severity | None = None
    rule: str | None = None
    kind: str | None = None
    status: Status | tuple[Status, ...] = ()
    text: str | None = None
    roots_only: bool = False
    workload: str | None = None

    @property
    def statuses(self) -> tuple[Status, ...]:
        """``status`` as a tuple (empty: any status)."""
        return (self.status,) if isinstance(self.status, Status) else tuple(self.status)


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the previous page ended (newest first): the last row's opening time and row number."""

    opened_at: float
    seq: int


@dataclass(frozen=True, slots=True)
class DamagedRow:
    """A stored incident row that cannot be read as an incident (a hand edit, a bad merge from before merges were
    checked): shown with its id and what is wrong; ``gpu-console incidents repair`` removes it."""

    id: str
    problem: str

    @property
    def message(self) -> str:
        return f"damaged incident row [{self.id}]: {self.problem}; run gpu-console incidents repair to remove it"


@dataclass(frozen=True, slots=True)
class IncidentPage:
    incidents: tuple[Incident, ...]
    next: PageCursor | None  # None when this was the last page
    damaged: tuple[DamagedRow, ...] = ()  # rows of this page that could not be read (left out of ``incidents``)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    incident_id: str
    time: float
    kind: ChangeKind
    note: str
    severity: Severity
    status: Status
    count: int


@dataclass(frozen=True, slots=True)
class PastIncident:
    """A matching earlier (or concurrent) incident, as shown under "seen before"."""

    id: str
    site: str
    provider: str
    node: str
    gpu_model: str | None
    driver_version: str | None
    opened_at: float
    status: Status
    outcome: Outcome | None
    resolution_note: str


@dataclass(frozen=True, slots=True)
class SeenGroup:
    """Matches in one group, newest first (at most a page of them), with counts over the whole group."""

    label: str
    total: int
    fixed: int
    not_fixed: int
    workaround: int
    unresolved: int
    incidents: tuple[PastIncident, ...] = ()

    def summary(self) -> str:
        return (
            f"{self.label}: {self.total} seen, {self.fixed} fixed, {self.not_fixed} not fixed, "
            f"{self.workaround} workaround, {self.unresolved} unresolved"
        )


@dataclass(frozen=True, slots=True)
class SeenBefore:
    """Issue 4 item 6. ``same_context`` is same provider, GPU model and driver; only there is a fix "proven".

    A fix recorded elsewhere is a lead, not a proof: ``proven_fixes`` holds only same-context fixes.
    """

    rule: str
    code: str
    same_context: SeenGroup
    elsewhere: SeenGroup
    proven_fixes: tuple[PastIncident, ...] = field(default=())

    def summary_lines(self) -> list[str]:
        lines = [self.same_context.summary(), self.elsewhere.summary()]
        if self.elsewhere.fixed and not self.same_context.fixed:
            lines.append("Fixes recorded elsewhere are not proven for this provider, GPU model and driver.")
        return lines


@dataclass(frozen=True, slots=True)
class RateRow:
    """Incidents opened in a window per 1,000 GPU-hours observed (None when no exposure was recorded)."""

    group: str
    incidents: int
    gpu_hours: float
    per_1000_gpu_hours: float | None


@dataclass(frozen=True, slots=True)
class MergeResult:
    incidents_added: int
    incidents_updated: int
    incidents_unchanged: int
    timeline_added: int
    evidence_added: int
    exposure_rows: int
    # The other file's incidents that are a fault this file already holds under another id (two consoles whose
    # first sightings fell either side of an id window): their history joins the incident this file has.
    incidents_joined: int = 0
    ledger_added: int = 0  # operator steps (acknowledgements, fixes) new to this file
    # Rows of the other file that failed their check (console/store/validate.py) and were not stored: incidents
    # (with their history), and timeline, evidence, ledger and exposure rows; the first few reasons in words.
    incidents_refused: int = 0
    history_refused: int = 0
    refusals: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What ``incidents repair`` removed (or, with ``dry_run``, would remove): damaged incident rows with their
    history, and damaged history rows of their own; ``removed`` lists the first few with what was wrong."""

    incidents_removed: int
    history_removed: int
    removed: tuple[str, ...] = ()
    dry_run: bool = False
