"""What to try next for an incident: ranked fixes, proven here kept apart from proven elsewhere.

Order: fixes recorded for the same rule and code at the same provider, on the same GPU model and driver, by
verified success rate; then the same fixes recorded elsewhere (``proven_here`` false: leads, not proof); then the
catalog's action for the code. The escalation ladder of the code reorders that list for this GPU: once the lower
steps did not hold here as often as the ladder allows, its next step goes first and the steps that failed on this
GPU go last. A GPU with incidents of hardware-bucket Xids on several days is flagged as suspect hardware, and so is
one where the same Xid hit different workloads (no pod, job or process in common): an application Xid follows its
job, a hardware one stays with the GPU: then the ladder treats its first step (restarting the job, resetting) as
spent and puts the next one first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from console.incidents.model import Incident
from console.incidents.xid import XidCatalog
from console.remediation.catalog import RemediationCatalog
from console.samples.schema import JobWorkload, PodWorkload, Workload
from console.samples.workload import workload_text
from console.store import IncidentFilter, IncidentStore
from console.store.ledger import Verdict, VerifiedFix


class Source(StrEnum):
    LEDGER = "ledger"
    CATALOG = "catalog"


@dataclass(frozen=True, slots=True)
class Suggestion:
    action: str
    label: str
    proven_here: bool
    attempts: int
    held: int
    did_not_hold: int
    source: Source
    failed_on_this_gpu: int = 0
    escalated: bool = False  # moved first by the escalation ladder

    @property
    def success_rate(self) -> float | None:
        decided = self.held + self.did_not_hold
        return self.held / decided if decided else None


@dataclass(frozen=True, slots=True)
class Suggestions:
    incident: Incident
    ranked: tuple[Suggestion, ...]
    suspect_hardware: str | None  # why, or None
    earlier_fixes: tuple[VerifiedFix, ...]  # on this GPU (node), any rule, oldest first


def is_here(fix: VerifiedFix, incident: Incident) -> bool:
    ctx, entry = incident.context, fix.entry
    return (entry.provider, entry.gpu_model, entry.driver) == (ctx.provider, ctx.gpu_model, ctx.driver_version)


def on_same_hardware(fix: VerifiedFix, incident: Incident) -> bool:
    ctx = incident.context
    if ctx.gpu_uuid is not None:
        return fix.entry.gpu_uuid == ctx.gpu_uuid
    return fix.entry.gpu_uuid is None and fix.entry.node == ctx.node


def _tally(fixes: Iterable[VerifiedFix], here: bool, catalog: RemediationCatalog) -> list[Suggestion]:
    by_action: dict[str, list[VerifiedFix]] = {}
    for fix in fixes:
        by_action.setdefault(fix.entry.action, []).append(fix)
    out = [
        Suggestion(
            action=action,
            label=catalog.label(action),
            proven_here=here,
            attempts=len(group),
            held=sum(1 for f in group if f.verdict is Verdict.HELD),
            did_not_hold=sum(1 for f in group if f.verdict is Verdict.DID_NOT_HOLD),
            source=Source.LEDGER,
        )
        for action, group in by_action.items()
    ]
    out.sort(key=lambda s: (s.success_rate is None, -(s.success_rate or 0.0), -s.held, -s.attempts, s.action))
    return out


def _catalog_action(incident: Incident, catalog: RemediationCatalog, xids: XidCatalog) -> str | None:
    buckets: tuple[str, ...] = ()
    if incident.rule == "xid" and incident.code.isdigit():
        entry = xids.get(int(incident.code))
        if entry is not None:
            buckets = (entry.immediate_bucket, entry.investigatory_bucket)
    return catalog.action_for(incident.rule, buckets)


def _escalate(
    ranked: list[Suggestion],
    incident: Incident,
    mine: list[VerifiedFix],
    catalog: RemediationCatalog,
    *,
    follows_the_gpu: bool = False,
) -> list[Suggestion]:
    ladder = catalog.ladder_for(incident.rule, incident.code)
    if ladder is None or not ladder.steps:
        return ranked
    failed = {step.action: 0 for step in ladder.steps}
    for fix in mine:
        if fix.entry.action in failed and fix.verdict is Verdict.DID_NOT_HOLD:
            failed[fix.entry.action] += 1
    due = next((i for i, step in enumerate(ladder.steps) if failed[step.action] < step.tries), len(ladder.steps) - 1)
    if follows_the_gpu:
        due = max(due, min(1, len(ladder.steps) - 1))  # the Xid hit other workloads too: its first step is spent
    if due == 0:
        return ranked
    next_action = ladder.steps[due].action
    spent = {step.action for step in ladder.steps[:due]}
    existing = next((s for s in ranked if s.action == next_action and s.proven_here), None) or next(
        (s for s in ranked if s.action == next_action), None
    )
    first = (
        replace(existing, escalated=True)
        if existing is not None
        else Suggestion(next_action, catalog.label(next_action), False, 0, 0, 0, Source.CATALOG, escalated=True)
    )
    rest = [s for s in ranked if s is not existing]
    keep = [s for s in rest if s.action not in spent]
    demoted = [replace(s, failed_on_this_gpu=failed[s.action]) for s in rest if s.action in spent]
    return [first, *keep, *demoted]


SUSPECT_AFTER_WORKLOADS = 2  # one Xid under this many workloads with nothing in common


def _workload_keys(workload: tuple[Workload, ...] | None) -> frozenset[tuple[str, ...]]:
    """What makes two workloads the same: the pod (not its container), the job, the process's program."""
    keys: set[tuple[str, ...]] = set()
    for entry in workload or ():
        if isinstance(entry, PodWorkload):
            keys.add(("pod", entry.namespace or "", entry.pod))
        elif isinstance(entry, JobWorkload):
            keys.add(("job", entry.id))
        else:
            keys.add(("process", entry.name or str(entry.pid)))
    return frozenset(keys)


def _across_workloads(incidents: Iterable[Incident]) -> dict[str, str]:
    """Code -> "Xid N under k different workloads", for each code that hit workloads with nothing in common
    (in code order)."""
    by_code: dict[str, list[tuple[frozenset[tuple[str, ...]], Incident]]] = {}
    for other in sorted(incidents, key=lambda i: (i.opened_at, i.id)):  # named oldest first
        keys = _workload_keys(other.workload)
        if keys:
            by_code.setdefault(other.code, []).append((keys, other))
    found: dict[str, str] = {}
    for code in sorted(by_code, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c)):
        apart: list[tuple[frozenset[tuple[str, ...]], Incident]] = []
        for keys, other in by_code[code]:
            if all(not keys & seen for seen, _ in apart):
                apart.append((keys, other))
        if len(apart) >= SUSPECT_AFTER_WORKLOADS:
            names = "; ".join(workload_text(other.workload) for _, other in apart[:3])
            found[code] = f"Xid {code} on this GPU under {len(apart)} different workloads ({names})"
    return found


def _suspect(
    store: IncidentStore, incident: Incident, catalog: RemediationCatalog, xids: XidCatalog
) -> tuple[str | None, bool]:
    """Why the GPU is suspect hardware (or None), and whether this incident's own code hit different workloads."""
    uuid = incident.context.gpu_uuid
    if uuid is None:
        return None, False
    history = list(store.iter_incidents(IncidentFilter(gpu=uuid, rule="xid")))
    across = _across_workloads(history)
    first_across = next(iter(across.values()), None)
    by_days = _on_several_days(history, catalog, xids)
    if first_across is None and by_days is None:
        return None, False
    reasons = "; ".join(reason for reason in (by_days, first_across) if reason is not None)
    return f"suspect hardware: {reasons}; consider drain and RMA", incident.code in across


def _on_several_days(history: Iterable[Incident], catalog: RemediationCatalog, xids: XidCatalog) -> str | None:
    if not catalog.hardware_buckets:
        return None
    days: dict[str, set[str]] = {}
    for other in history:
        entry = xids.get(int(other.code)) if other.code.isdigit() else None
        if entry is None or not {entry.immediate_bucket, entry.investigatory_bucket} & catalog.hardware_buckets:
            continue
        day = datetime.fromtimestamp(other.opened_at, UTC).date().isoformat()
        days.setdefault(day, set()).add(other.code)
    if len(days) < catalog.suspect_after_days:
        return None
    codes = sorted({code for found in days.values() for code in found}, key=int)
    return f"Xid {', '.join(codes)} on this GPU on {len(days)} days ({', '.join(sorted(days))})"


def suggest(
    store: IncidentStore,
    incident: Incident,
    catalog: RemediationCatalog,
    xids: XidCatalog,
    *,
    window_s: float | None = None,
    now: float | None = None,
) -> Suggestions:
    window = catalog.verify_window_h * 3600 if window_s is None else window_s
    now = time.time() if now is None else now
    fixes = store.verified_fixes(window, now, rule=incident.rule, code=incident.code)
    here = [f for f in fixes if is_here(f, incident)]
    elsewhere = [f for f in fixes if not is_here(f, incident)]
    ranked = _tally(here, True, catalog) + _tally(elsewhere, False, catalog)
    fallback = _catalog_action(incident, catalog, xids)
    if fallback is not None and all(s.action != fallback for s in ranked):
        ranked.append(Suggestion(fallback, catalog.label(fallback), False, 0, 0, 0, Source.CATALOG))
    mine = [f for f in fixes if on_same_hardware(f, incident)]
    suspect, follows_the_gpu = _suspect(store, incident, catalog, xids)
    ranked = _escalate(ranked, incident, mine, catalog, follows_the_gpu=follows_the_gpu)
    uuid = incident.context.gpu_uuid
    history = store.verified_fixes(window, now, gpu_uuid=uuid) if uuid is not None else mine
    return Suggestions(incident, tuple(ranked), suspect, tuple(history))
