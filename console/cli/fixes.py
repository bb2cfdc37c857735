"""``gpu-console fixes stats|suggest``: which fix held where, verified by what happened next (the fix ledger)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from console.remediation.catalog import RemediationCatalog
    from console.remediation.suggest import Suggestions
    from console.store import IncidentStore

HELP = "which fix held where: success rates by provider, GPU model and driver; what to try next for an incident"
EXIT_NOT_FOUND = 1
EXIT_STORE_ERROR = 2
EXIT_CATALOG_ERROR = 3
_RELIABILITY_WINDOW_S = 30 * 86400


def _window(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not 0 < hours < 1e6:
        raise argparse.ArgumentTypeError("the verify window must be above 0 hours")
    return hours


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="fixes_action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="attempts, held, did_not_hold, pending and success rate per fix")
    suggest = actions.add_parser("suggest", help="ranked fixes for an incident, proven here apart from elsewhere")
    suggest.add_argument("incident_id", metavar="INCIDENT_ID")
    for sub in (stats, suggest):
        sub.add_argument("--db", metavar="PATH", help="incident database (default: the user data directory)")
        sub.add_argument(
            "--verify-window-h",
            type=_window,
            metavar="H",
            help="a fix held when H hours passed with no recurrence (default: the catalog's, 72)",
        )
        sub.add_argument("--json", action="store_true", help="print JSON")
    parser.epilog = "exit codes: 0 done, 1 no such incident, 2 database problem, 3 broken remediation catalog"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from console.remediation.catalog import CatalogError, load_catalog
    from console.store import IncidentStore, StoreError, default_db_path

    path = Path(args.db) if args.db else default_db_path()
    if not path.is_file():
        print(f"gpu-console fixes: no incident database at {path}", file=sys.stderr)
        return EXIT_STORE_ERROR
    try:
        catalog = load_catalog()
    except CatalogError as exc:
        print(f"gpu-console fixes: the remediation catalog is broken: {exc}", file=sys.stderr)
        return EXIT_CATALOG_ERROR
    window_h = args.verify_window_h if args.verify_window_h is not None else catalog.verify_window_h
    try:
        with IncidentStore.open_readonly(path) as store:
            if args.fixes_action == "stats":
                return _stats(store, window_h, args.json)
            return _suggest(store, catalog, args.incident_id, window_h, args.json)
    except StoreError as exc:
        print(f"gpu-console fixes: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _stats(store: IncidentStore, window_h: float, as_json: bool) -> int:
    from console.cli.incidents import plain

    now = time.time()
    rows = store.fix_stats(window_h * 3600, now)
    reliability = store.reliability(now - _RELIABILITY_WINDOW_S, now)
    if as_json:
        fields = ("provider", "gpu_model", "driver", "rule", "code", "action")
        counts = ("attempts", "held", "did_not_hold", "pending")
        document = {
            "verify_window_h": window_h,
            "fixes": [{**{f: getattr(r, f) for f in fields + counts}, "success_rate": r.success_rate} for r in rows],
            "reliability": [{name: getattr(r, name) for name in r.__dataclass_fields__} for r in reliability],
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"Fixes verified over {window_h:g} h (held: no recurrence in the window; pending: window not over)")
    header = f"  {'provider':<12} {'GPU model':<24} {'driver':<11} {'rule:code':<22} {'action':<16}"
    print(header + f" {'tries':>5} {'held':>5} {'failed':>6} {'pend.':>5} {'success':>7}")
    for r in rows:
        rule = f"{r.rule}:{r.code}" if r.code else r.rule
        print(
            plain(f"  {r.provider:<12} {r.gpu_model[:24]:<24} {r.driver[:11]:<11} {rule[:22]:<22} {r.action:<16}")
            + f" {r.attempts:>5} {r.held:>5} {r.did_not_hold:>6} {r.pending:>5} {_rate(r.success_rate):>7}"
        )
    if not rows:
        print("  (no fix recorded yet: resolve incidents with --action, or from the incident log)")
    print("\nReliability over the last 30 days (root incidents)")
    print(
        f"  {'provider':<12} {'GPU model':<24} {'faults':>7} {'GPU-hours':>10} {'per 1k GPU-h':>12} "
        f"{'MTTR h':>7} {'MTBI GPU-h':>10}"
    )
    for row in reliability:
        per = "n/a" if row.per_1000_gpu_hours is None else f"{row.per_1000_gpu_hours:.2f}"
        mttr = "n/a" if row.mttr_h is None else f"{row.mttr_h:.2f}"
        mtbi = "n/a" if row.mtbi_gpu_hours is None else f"{row.mtbi_gpu_hours:.1f}"
        print(
            plain(f"  {row.provider:<12} {(row.gpu_model or 'node-level')[:24]:<24}")
            + f" {row.incidents:>7} {row.gpu_hours:>10.1f} {per:>12} {mttr:>7} {mtbi:>10}"
        )
    return 0


def suggestions_json(found: Suggestions) -> dict[str, Any]:
    return {
        "incident_id": found.incident.id,
        "suggestions": [
            {
                "action": s.action,
                "label": s.label,
                "proven_here": s.proven_here,
                "attempts": s.attempts,
                "held": s.held,
                "did_not_hold": s.did_not_hold,
                "success_rate": s.success_rate,
                "source": str(s.source),
                "escalated": s.escalated,
                "failed_on_this_gpu": s.failed_on_this_gpu,
            }
            for s in found.ranked
        ],
        "suspect_hardware": found.suspect_hardware is not None,
        "suspect_reason": found.suspect_hardware,
        "earlier_fixes": [
            {
                "incident_id": f.entry.incident_id,
                "time": f.entry.time,
                "action": f.entry.action,
                "outcome": f.entry.outcome,
                "verdict": str(f.verdict),
                "recurrence": f.recurrence,
            }
            for f in found.earlier_fixes
        ],
    }


def _suggest(
    store: IncidentStore, catalog: RemediationCatalog, incident_id: str, window_h: float, as_json: bool
) -> int:
    from console.cli.incidents import plain
    from console.incidents.xid import load_xid_catalog
    from console.remediation.suggest import suggest

    incident = store.get(incident_id)
    if incident is None:
        print(f"gpu-console fixes: no incident with id {incident_id!r} in {store.path}", file=sys.stderr)
        return EXIT_NOT_FOUND
    found = suggest(store, incident, catalog, load_xid_catalog(), window_s=window_h * 3600)
    if as_json:
        print(json.dumps(suggestions_json(found), indent=2))
        return 0
    ctx = incident.context
    print(
        plain(
            f"What to try for {incident.title} "
            f"({ctx.provider}, {ctx.gpu_model or 'node'}, driver {ctx.driver_version or '?'})"
        )
    )
    if found.suspect_hardware:
        print(plain(f"  ! {found.suspect_hardware}"))
    for n, s in enumerate(found.ranked, 1):
        where = (
            "proven here" if s.proven_here else ("catalog" if s.source == "catalog" else "elsewhere (not proven here)")
        )
        extra = " [escalation: next step]" if s.escalated else ""
        failed = f", did not hold {s.failed_on_this_gpu}x on this GPU" if s.failed_on_this_gpu else ""
        record = f"{s.held}/{s.attempts} held, success {_rate(s.success_rate)}" if s.attempts else "no record"
        print(plain(f"  {n}. {s.label} ({s.action}): {where}, {record}{failed}{extra}"))
    if found.earlier_fixes:
        print("\nEarlier fixes on this GPU:")
        for f in found.earlier_fixes:
            after = f" (came back: {f.recurrence})" if f.recurrence else ""
            print(plain(f"  {f.entry.rule}:{f.entry.code} {f.entry.action} {f.entry.outcome}: {f.verdict}{after}"))
    return 0
