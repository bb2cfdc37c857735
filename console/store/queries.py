"""Read queries for the review: filters to SQL, keyset pages, detail, seen-before and rates.

Every function takes a connection, so any thread can run them on its own read connection.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from console.incidents.model import ChangeKind, EvidencePoint, Incident, Outcome, Severity, Status
from console.store.schema import INCIDENT_COLUMNS, SELECT_INCIDENT, incident_from_row
from console.store.types import (
    DamagedRow,
    IncidentFilter,
    IncidentPage,
    PageCursor,
    PastIncident,
    RateRow,
    SeenBefore,
    SeenGroup,
    TimelineEntry,
)
from console.store.validate import incident_problem, timeline_problem

RATE_GROUPS = ("site", "provider", "kind")
_OPENED_AT = INCIDENT_COLUMNS.index("opened_at")
SEEN_BEFORE_LISTED = 20
_IDS_PER_STATEMENT = 500  # bound parameters per IN (...) list, well under SQLite's limit
COMMON_TEXT_MATCHES = 2000
_FEW_VALUES = frozenset(
    {"site", "provider", "kind", "rule"}
)  # incidents listed per group; the counts cover all of them
# Filters a count answers from the rows themselves (no index holds these columns), and broad columns.
_READ_FROM_ROWS = ("text", "gpu_model", "driver", "severity", "workload")
_BROAD = ("site", "provider", "kind", "rule")
_EQUALITY_FILTERS = (
    ("site", "site"),
    ("provider", "provider"),
    ("node", "node"),
    ("gpu_model", "gpu_model"),
    ("driver", "driver_version"),
    ("rule", "rule"),
    ("kind", "kind"),
)


def read_incident(row: Sequence[Any]) -> Incident | DamagedRow:
    """A stored row (INCIDENT_COLUMNS in order) as an incident, or as damaged when it cannot be one."""
    problem = incident_problem(row)
    if problem is not None:
        return DamagedRow(id=str(row[0])[:200], problem=problem)
    try:
        return incident_from_row(row)
    except (ValueError, TypeError) as exc:  # the check above should have caught it; never crash a reader
        return DamagedRow(id=str(row[0])[:200], problem=str(exc))


def readable(rows: Sequence[Sequence[Any]]) -> tuple[Incident, ...]:
    """The rows that read as incidents; damaged ones are left out (``page`` lists them)."""
    return tuple(item for item in map(read_incident, rows) if isinstance(item, Incident))


def fts_query(text: str) -> str | None:
    """Free text as an FTS5 query: every word must occur. Words are quoted, so FTS syntax in them is inert.

    Words split where the FTS tokenizer splits (underscores too): a quoted run of two tokens would be a phrase
    query, which the index (detail='column') does not support.
    """
    words = re.findall(r"[^\W_]+", text)
    if not words:
        return None
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def where(flt: IncidentFilter, *, text_is_common: bool = False) -> tuple[list[str], list[Any]]:
    """SQL terms and parameters for ``flt``. ``text_is_common``: see ``_text_is_common``."""
    terms: list[str] = []
    params: list[Any] = []
    if flt.since is not None:
        terms.append("i.opened_at >= ?")
        params.append(flt.since)
    if flt.until is not None:
        terms.append("i.opened_at < ?")
        params.append(flt.until)
    statuses = flt.statuses
    unresolved_only = bool(statuses) and Status.RESOLVED not in statuses
    for attribute, column in _EQUALITY_FILTERS:
        value = getattr(flt, attribute)
        if value is not None:
            # Unresolved rows are a few percent of a log: their partial index (covering site, provider and
            # severity) beats any index on a column with a handful of values. "+" takes such a column's index
            # out of the planner's choice; the selective ones (node, GPU, ...) stay available.
            plus = "+" if unresolved_only and column in _FEW_VALUES else ""
            terms.append(f"{plus}i.{column} = ?")
            params.append(value)
    if flt.gpu is not None:
        if flt.gpu.strip().isdigit():
            terms.append("i.gpu_index = ?")
            params.append(int(flt.gpu))
        else:
            terms.append("i.gpu_uuid = ?")
            params.append(flt.gpu)
    if flt.severity is not None:
        terms.append("i.severity >= ?")
        params.append(int(flt.severity))
    if statuses:
        terms.append(f"i.status IN ({', '.join('?' for _ in statuses)})")
        params.extend(str(status) for status in statuses)
        if unresolved_only:
            # Spelled exactly as the partial index's WHERE, so the planner may use the small unresolved index.
            terms.append("i.status <> 'resolved'")
    if flt.text is not None:
        match = fts_query(flt.text)
        if match is not None:
            # "+" keeps the planner from driving the query by the match list when it is long (see page()).
            plus = "+" if text_is_common else ""
            terms.append(f"{plus}i.seq IN (SELECT rowid FROM incidents_fts WHERE incidents_fts MATCH ?)")
            params.append(match)
    if flt.workload is not None and flt.workload.strip():
        # The column's JSON text holds each entry's names and ids; no index, it is read from the row.
        terms.append("instr(lower(i.workload), lower(?)) > 0")
        params.append(flt.workload.strip())
    if flt.roots_only:
        # Checked on the row the page reads anyway (or from the unresolved index, which covers parent_id).
        terms.append("i.parent_id IS NULL")
    return terms, params


def page(conn: sqlite3.Connection, flt: IncidentFilter, after: PageCursor | None, limit: int) -> IncidentPage:
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    terms, params = where(flt, text_is_common=_text_is_common(conn, flt))
    if after is not None:
        # The plain range term lets the index seek to the cursor; the OR breaks ties on the same opening time.
        terms.append("i.opened_at <= ? AND (i.opened_at < ? OR i.seq < ?)")
        params.extend((after.opened_at, after.opened_at, after.seq))
    sql = f"SELECT i.seq, {SELECT_INCIDENT} FROM incidents i"
    if terms:
        sql += " WHERE " + " AND ".join(terms)
    sql += " ORDER BY i.opened_at DESC, i.seq DESC LIMIT ?"
    rows = conn.execute(sql, [*params, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    read = [read_incident(row[1:]) for row in rows]
    incidents = tuple(item for item in read if isinstance(item, Incident))
    damaged = tuple(item for item in read if isinstance(item, DamagedRow))
    # The raw opening time, not the incident's: the page's last row may be a damaged one.
    cursor = PageCursor(opened_at=rows[-1][1 + _OPENED_AT], seq=rows[-1][0]) if more and rows else None
    return IncidentPage(incidents=incidents, next=cursor, damaged=damaged)


def _text_is_common(conn: sqlite3.Connection, flt: IncidentFilter) -> bool:
    """Whether the free text matches so many rows that walking the time index beats sorting the matches.

    A rare word: fetch its few matches and sort them. A common one (100k matches in a 1M log took 355 ms that
    way): walk opened_at newest first and keep matching rows until the page is full (about 20 ms).
    """
    match = None if flt.text is None else fts_query(flt.text)
    if match is None:
        return False
    probe = "SELECT count(*) FROM (SELECT rowid FROM incidents_fts WHERE incidents_fts MATCH ? LIMIT ?)"
    found: int = conn.execute(probe, (match, COMMON_TEXT_MATCHES)).fetchone()[0]
    return found >= COMMON_TEXT_MATCHES


def count(conn: sqlite3.Connection, flt: IncidentFilter) -> int:
    if flt.roots_only and not _reads_rows(flt):
        return _count_roots_by_subtraction(conn, flt)
    terms, params = where(flt)
    sql = "SELECT count(*) FROM incidents i" + (" WHERE " + " AND ".join(terms) if terms else "")
    total: int = conn.execute(sql, params).fetchone()[0]
    return total


def _reads_rows(flt: IncidentFilter) -> bool:
    """Whether counting ``flt`` reads each matching row (or the unresolved index, which holds parent_id) anyway,
    so that testing parent_id there costs nothing more."""
    gpu_index = flt.gpu is not None and flt.gpu.strip().isdigit()
    return gpu_index or bool(flt.statuses) or any(getattr(flt, name) is not None for name in _READ_FROM_ROWS)


def _count_roots_by_subtraction(conn: sqlite3.Connection, flt: IncidentFilter) -> int:
    """Roots = the matching rows less the matching symptoms. The first count keeps its plan (one index alone);
    the second reads at most the symptom index, which covers the filtered columns. Testing parent_id on each
    matching row instead reads every one of them (a 1M log's roots: about a second)."""
    terms, params = where(replace(flt, roots_only=False))
    matching = " AND ".join(terms) if terms else "1"
    # Left alone, the planner walks a broad column's index (kind, say) and reads each row it lists rather than
    # scan the covering symptom index; name that index for those. Node and GPU have indexes that find their few
    # rows faster.
    broad = any(getattr(flt, name) is not None for name in _BROAD) and flt.node is None and flt.gpu is None
    symptoms = "incidents i INDEXED BY incidents_parent_opened" if broad else "incidents i"
    sql = (
        f"SELECT (SELECT count(*) FROM incidents i WHERE {matching}) - "
        f"(SELECT count(*) FROM {symptoms} WHERE {matching} AND i.parent_id IS NOT NULL)"
    )
    roots: int = conn.execute(sql, [*params, *params]).fetchone()[0]
    return roots


def get(conn: sqlite3.Connection, incident_id: str) -> Incident | None:
    """The incident, or None when there is none or its row is damaged (``damaged`` says why)."""
    row = conn.execute(f"SELECT {SELECT_INCIDENT} FROM incidents i WHERE i.id = ?", (incident_id,)).fetchone()
    item = None if row is None else read_incident(row)
    return item if isinstance(item, Incident) else None


def damaged(conn: sqlite3.Connection, incident_id: str) -> DamagedRow | None:
    row = conn.execute(f"SELECT {SELECT_INCIDENT} FROM incidents i WHERE i.id = ?", (incident_id,)).fetchone()
    item = None if row is None else read_incident(row)
    return item if isinstance(item, DamagedRow) else None


def damaged_rows(conn: sqlite3.Connection, limit: int) -> tuple[list[tuple[int, DamagedRow]], int]:
    """Up to ``limit`` damaged incident rows (with their row numbers) and how many there are in all."""
    found: list[tuple[int, DamagedRow]] = []
    total = 0
    for row in conn.execute(f"SELECT i.seq, {SELECT_INCIDENT} FROM incidents i"):
        item = read_incident(row[1:])
        if isinstance(item, DamagedRow):
            total += 1
            if len(found) < limit:
                found.append((row[0], item))
    return found, total


def children(conn: sqlite3.Connection, parent_id: str) -> tuple[Incident, ...]:
    """The symptoms grouped under ``parent_id``, newest first (from the symptom index)."""
    rows = conn.execute(
        f"SELECT {SELECT_INCIDENT} FROM incidents i WHERE i.parent_id = ? ORDER BY i.opened_at DESC, i.seq DESC",
        (parent_id,),
    ).fetchall()
    return readable(rows)


def symptom_counts(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
    """How many symptoms each of ``ids`` has; ids without any are absent. Counted from the symptom index alone."""
    wanted = list(dict.fromkeys(ids))
    counts: dict[str, int] = {}
    for start in range(0, len(wanted), _IDS_PER_STATEMENT):
        chunk = wanted[start : start + _IDS_PER_STATEMENT]
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            f"SELECT parent_id, count(*) FROM incidents WHERE parent_id IN ({marks}) GROUP BY parent_id", chunk
        ).fetchall()
        counts.update((parent, int(n)) for parent, n in rows)
    return counts


def unresolved(conn: sqlite3.Connection) -> tuple[Incident, ...]:
    """Every open or acknowledged incident, newest first (from the unresolved index)."""
    rows = conn.execute(
        f"SELECT {SELECT_INCIDENT} FROM incidents i WHERE i.status <> 'resolved' ORDER BY i.opened_at DESC, i.seq DESC"
    ).fetchall()
    return readable(rows)


def timeline(conn: sqlite3.Connection, incident_id: str) -> list[TimelineEntry]:
    rows = [
        row
        for row in conn.execute(
            "SELECT time, kind, note, severity, status, count FROM timeline WHERE incident_id = ? ORDER BY time, rowid",
            (incident_id,),
        )
        if timeline_problem((incident_id, *row)) is None  # a damaged step is left out, never a crash
    ]
    return [
        TimelineEntry(
            incident_id=incident_id,
            time=time,
            kind=ChangeKind(kind),
            note=note,
            severity=Severity(severity),
            status=Status(status),
            count=n,
        )
        for time, kind, note, severity, status, n in rows
    ]


def evidence(conn: sqlite3.Connection, incident_id: str) -> list[EvidencePoint]:
    rows = conn.execute("SELECT time, sample_json FROM evidence WHERE incident_id = ? ORDER BY time", (incident_id,))
    return [EvidencePoint(incident_id=incident_id, time=time, sample_json=text) for time, text in rows]


def evidence_count(conn: sqlite3.Connection, incident_id: str) -> int:
    total: int = conn.execute("SELECT count(*) FROM evidence WHERE incident_id = ?", (incident_id,)).fetchone()[0]
    return total


def seen_before(conn: sqlite3.Connection, incident: Incident) -> SeenBefore:
    ctx = incident.context
    known_context = None not in (ctx.gpu_model, ctx.driver_version)
    # Same context needs all three known and equal: an unknown model or driver proves nothing.
    same_sql = "(i.provider = ? AND i.gpu_model = ? AND i.driver_version = ?)" if known_context else "0"
    same_params: list[Any] = [ctx.provider, ctx.gpu_model, ctx.driver_version] if known_context else []
    base = "FROM incidents i WHERE i.rule = ? AND i.code = ? AND i.id <> ?"
    base_params = [incident.rule, incident.code, incident.id]
    counts = conn.execute(
        f"SELECT {same_sql} AS same, i.status, i.outcome, count(*) {base} GROUP BY same, i.status, i.outcome",
        [*same_params, *base_params],
    ).fetchall()
    groups: dict[bool, list[PastIncident]] = {}
    for same in (True, False):
        condition = same_sql if same else f"NOT {same_sql}"
        rows = conn.execute(
            f"SELECT {SELECT_INCIDENT} {base} AND {condition} ORDER BY i.opened_at DESC LIMIT ?",
            [*base_params, *same_params, SEEN_BEFORE_LISTED],
        ).fetchall()
        groups[same] = [
            PastIncident(
                id=past.id,
                site=past.context.site,
                provider=past.context.provider,
                node=past.context.node,
                gpu_model=past.context.gpu_model,
                driver_version=past.context.driver_version,
                opened_at=past.opened_at,
                status=past.status,
                outcome=past.outcome,
                resolution_note=past.resolution_note,
            )
            for past in readable(rows)
        ]

    def group(same: bool, label: str) -> SeenGroup:
        tallies = {"total": 0, "fixed": 0, "not_fixed": 0, "workaround": 0, "unresolved": 0}
        for row_same, status, outcome, n in counts:
            if bool(row_same) != same:
                continue
            tallies["total"] += n
            if status != Status.RESOLVED:
                tallies["unresolved"] += n
            elif outcome in tallies:
                tallies[outcome] += n
        return SeenGroup(label=label, incidents=tuple(groups[same]), **tallies)

    same_label = f"same provider, GPU model and driver ({ctx.provider}, {ctx.gpu_model}, {ctx.driver_version})"
    same_group = group(True, same_label)
    return SeenBefore(
        rule=incident.rule,
        code=incident.code,
        same_context=same_group,
        elsewhere=group(False, "elsewhere"),
        proven_fixes=tuple(p for p in same_group.incidents if p.outcome is Outcome.FIXED),
    )


def rates(
    conn: sqlite3.Connection, group_by: str, since: float, until: float, roots_only: bool = False
) -> list[RateRow]:
    """``roots_only``: count each fault once (its symptoms left out)."""
    if group_by not in RATE_GROUPS:
        raise ValueError(f"rates can be grouped by {', '.join(RATE_GROUPS)}, not {group_by!r}")
    roots = " AND parent_id IS NULL" if roots_only else ""
    incidents = dict(
        conn.execute(
            f"SELECT {group_by}, count(*) FROM incidents WHERE opened_at >= ? AND opened_at < ?{roots} "
            f"GROUP BY {group_by}",
            (since, until),
        ).fetchall()
    )
    # Hour buckets that start inside the window (an hour is counted whole: exposure is kept per hour).
    hour_window = "hour >= CAST(? / 3600 AS INTEGER) AND hour * 3600 < ?"
    if group_by == "kind":
        total = conn.execute(f"SELECT sum(gpu_seconds) FROM exposure WHERE {hour_window}", (since, until)).fetchone()
        seconds = dict.fromkeys(incidents, total[0] or 0.0)
    else:
        seconds = dict(
            conn.execute(
                f"SELECT {group_by}, sum(gpu_seconds) FROM exposure WHERE {hour_window} GROUP BY {group_by}",
                (since, until),
            ).fetchall()
        )
    rows = []
    for name in sorted(set(incidents) | set(seconds)):
        gpu_hours = float(seconds.get(name) or 0.0) / 3600
        n = int(incidents.get(name, 0))
        rate = n / gpu_hours * 1000 if gpu_hours > 0 else None
        rows.append(RateRow(group=name, incidents=n, gpu_hours=gpu_hours, per_1000_gpu_hours=rate))
    rows.sort(key=lambda row: (row.per_1000_gpu_hours is None, -(row.per_1000_gpu_hours or 0.0), row.group))
    return rows
