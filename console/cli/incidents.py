"""``gpu-console incidents list|show|export|stats|merge|acknowledge|resolve``: the incident log without a window."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from console.incidents.model import Incident
    from console.store import DamagedRow, IncidentFilter, IncidentStore
    from console.store.export import ExportFormat

HELP = "review the incident log: list, show, export, stats, merge, repair, acknowledge, resolve"
EXIT_NOT_FOUND = 1
EXIT_STORE_ERROR = 2
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STATS_DEFAULT_WINDOW_S = 30 * 86400
# C0 and C1 control characters and DEL: text from nodes must never drive the operator's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TREE_DEPTH = 6  # levels of symptoms shown under a root (correlation makes two; more only from merged logs)
_TREE_CHILDREN = 50  # symptoms listed per incident in the tree; the rest are counted
_READERS = frozenset({"list", "show", "export", "stats"})
_DAMAGED_SHOWN = 20  # damaged rows named on standard error; the rest are counted


def plain(value: object) -> str:
    """Text for the terminal, with control characters shown as escapes instead of obeyed."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", str(value))


def parse_time(text: str) -> float:
    """Epoch seconds, an ISO 8601 time (UTC unless it says otherwise), or an age such as 30m, 6h, 7d."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return time.time() - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use epoch seconds, ISO 8601 such as 2025-05-01T12:00, or an age like 6h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _severity(text: str) -> Any:
    from console.incidents.model import Severity

    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _statuses(text: str) -> list[Any]:
    from console.incidents.model import Status

    try:
        return [Status(part.strip().lower()) for part in text.split(",") if part.strip()]
    except ValueError:
        names = ", ".join(str(status) for status in Status)
        raise argparse.ArgumentTypeError(f"unknown status in {text!r} ({names})") from None


def _add_db(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps a ``gpu-console --db X incidents ...`` given before the subcommand from being overwritten.
    parser.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="incident database")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (combined with AND)")
    group.add_argument("--site")
    group.add_argument("--provider")
    group.add_argument("--node")
    group.add_argument("--gpu", help="GPU UUID or index")
    group.add_argument("--model", help="GPU model, exactly as reported")
    group.add_argument("--driver", help="driver version")
    group.add_argument("--severity", type=_severity, help="minimum severity: info, warning, major, critical")
    group.add_argument("--rule")
    group.add_argument("--kind")
    group.add_argument("--status", type=_statuses, help="open, acknowledged, resolved (comma-separated)")
    group.add_argument("--since", type=parse_time, help="opened at or after (epoch, ISO 8601 or age: 6h, 7d)")
    group.add_argument("--until", type=parse_time, help="opened before")
    group.add_argument("--text", help="words in the title, detail or resolution note")
    group.add_argument("--workload", help="a pod, namespace, container, HPC job id or process name it hit")
    group.add_argument(
        "--roots", action="store_true", help="only roots: causes and uncorrelated incidents, no symptoms"
    )


def _add_format(parser: argparse.ArgumentParser, *, csv: bool) -> None:
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json", help="print JSON")
    if csv:
        fmt.add_argument("--csv", dest="fmt", action="store_const", const="csv", help="print CSV")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="incidents_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="incidents, newest first")
    _add_db(listing)
    _add_filters(listing)
    _add_format(listing, csv=True)
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")

    show = actions.add_parser("show", help="one incident with its timeline, evidence and seen-before")
    _add_db(show)
    show.add_argument("incident_id", metavar="ID")
    _add_format(show, csv=False)

    export = actions.add_parser("export", help="every matching incident as CSV (default) or JSON")
    _add_db(export)
    _add_filters(export)
    _add_format(export, csv=True)
    export.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")

    stats = actions.add_parser("stats", help="incidents per 1,000 GPU-hours by site, provider and kind")
    _add_db(stats)
    stats.add_argument("--since", type=parse_time, help="window start (default: 30 days ago)")
    stats.add_argument("--until", type=parse_time, help="window end (default: now)")
    _add_format(stats, csv=False)

    merge = actions.add_parser("merge", help="import another operator's database (no duplicates)")
    _add_db(merge)
    merge.add_argument("other", metavar="OTHER.db")
    _add_format(merge, csv=False)

    repair = actions.add_parser("repair", help="remove stored rows that cannot be read (listed with the reason)")
    _add_db(repair)
    repair.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    _add_format(repair, csv=False)

    from console.cli import incident_steps

    incident_steps.add_parsers(actions, _add_db)


def run(args: argparse.Namespace) -> int:
    from console.store import IncidentStore, StoreError, default_db_path

    path = Path(args.db) if getattr(args, "db", None) else default_db_path()
    action: str = args.incidents_action
    if action != "merge" and not path.is_file():
        print(f"gpu-console incidents: no incident database at {path}", file=sys.stderr)
        return EXIT_STORE_ERROR
    # Readers open the file read-only: an archived log on read-only media, or one on a full disk, can be read,
    # and a damaged file is reported as it is, never renamed or replaced by a new one.
    opener = IncidentStore.open_readonly if action in _READERS else IncidentStore.open
    try:
        with opener(path) as store:
            if store.recovered is not None:
                print(f"gpu-console incidents: {store.recovered.message}", file=sys.stderr)
            from console.cli.incident_steps import run_step

            handler = {
                "list": _list,
                "show": _show,
                "export": _export,
                "stats": _stats,
                "merge": _merge,
                "repair": _repair,
                "acknowledge": run_step,
                "resolve": run_step,
            }[action]
            return handler(store, args)
    except StoreError as exc:
        print(f"gpu-console incidents: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR


def _filter(args: argparse.Namespace) -> IncidentFilter:
    from console.store import IncidentFilter

    return IncidentFilter(
        since=args.since,
        until=args.until,
        site=args.site,
        provider=args.provider,
        node=args.node,
        gpu=args.gpu,
        gpu_model=args.model,
        driver=args.driver,
        severity=args.severity,
        rule=args.rule,
        kind=args.kind,
        status=tuple(args.status or ()),
        text=args.text,
        roots_only=args.roots,
        workload=args.workload,
    )


def _stamp(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _silence_marks(store: IncidentStore, incidents: Sequence[Incident], args: argparse.Namespace) -> dict[str, Any]:
    """Each incident's silence now (``silenced_by``), from the notification file beside the database; the
    inventory given with ``--config`` names the racks of nodes, for rack silences."""
    from console.notify.schema import NotifyError, notify_path_for
    from console.notify.state import read_marks

    racks: dict[str, str] = {}
    if getattr(args, "config", None):
        from console.config.inventory import InventoryError, load_inventory

        try:
            racks = {n.name: n.topology.rack for n in load_inventory(Path(args.config)).nodes if n.topology.rack}
        except (InventoryError, OSError) as exc:
            print(f"gpu-console incidents: racks unknown, {exc}", file=sys.stderr)
    try:
        marks = read_marks(notify_path_for(store.path), incidents, racks)
    except NotifyError as exc:
        print(f"gpu-console incidents: silences unknown: {exc}", file=sys.stderr)
        return {}
    return {incident_id: mark.to_json() for incident_id, mark in marks.items()}


def _list(store: IncidentStore, args: argparse.Namespace) -> int:
    from console.store.export import write_csv, write_json

    if args.limit <= 0:
        print("gpu-console incidents: --limit must be > 0", file=sys.stderr)
        return EXIT_STORE_ERROR
    page = store.query(_filter(args), limit=args.limit)
    incidents = page.incidents
    _warn_damaged(page.damaged)
    symptoms = store.symptom_counts([incident.id for incident in incidents])
    if args.fmt == "json":
        write_json(incidents, sys.stdout, symptoms, _silence_marks(store, incidents, args))
    elif args.fmt == "csv":
        write_csv(incidents, sys.stdout, symptoms)
    else:
        for incident in incidents:
            ctx = incident.context
            gpu = "-" if ctx.gpu_index is None else str(ctx.gpu_index)
            rule = f"{incident.rule}:{incident.code}" if incident.code else incident.rule
            print(
                plain(
                    f"{_stamp(incident.opened_at)}  {incident.severity.label:8} {incident.status:12} "
                    f"{ctx.site}/{ctx.node} gpu {gpu:2}  {_scope(incident):<12} "
                    f"{_relation(incident, symptoms.get(incident.id, 0)):>3}  {rule}  x{incident.count}  "
                    f"{incident.title}  [{incident.id}]"
                )
            )
        print(f"{len(incidents)} incident(s)", file=sys.stderr)
    return 0


def _scope(incident: Incident) -> str:
    """Compact scope: ``gpu``, ``node``, or a shared scope with its name and member count (``rack:r12[3]``)."""
    scope = str(incident.effective_scope)
    nodes = incident.member_nodes
    if incident.effective_scope_name != incident.context.node or len(nodes) > 1:
        scope += f":{incident.effective_scope_name}"
    return scope + (f"[{len(nodes)}]" if len(nodes) > 1 else "")


def _relation(incident: Incident, symptoms: int) -> str:
    """``+N``: a root with N symptoms beneath it; ``^``: a symptom (``show`` gives its root); ``-``: neither."""
    if incident.parent_id is not None:
        return "^"
    return f"+{symptoms}" if symptoms else "-"


def _tree_line(incident: Incident, symptoms: int, *, here: bool) -> str:
    nodes = ", ".join(incident.member_nodes)
    rule = f"{incident.rule}:{incident.code}" if incident.code else incident.rule
    marker = "* " if here else ""
    counted = f"  {symptoms} symptom(s)" if symptoms else ""
    return plain(
        f"{marker}{incident.id}  {incident.effective_scope} {incident.effective_scope_name}  nodes: {nodes}  "
        f"{incident.severity.label} {incident.status}  {rule}  {incident.title}{counted}"
    )


def _top(store: IncidentStore, incident: Incident) -> tuple[Incident | None, str | None]:
    """The root at the top of ``incident``'s tree, or (None, the missing parent's id) when a link is dangling."""
    seen = {incident.id}
    current = incident
    while current.parent_id is not None and current.parent_id not in seen:
        parent = store.get(current.parent_id)
        if parent is None:
            return None, current.parent_id
        seen.add(parent.id)
        current = parent
    return current, None


def _print_tree(store: IncidentStore, incident: Incident) -> None:
    """The incident's correlation: its root with every symptom indented beneath (this one marked ``*``)."""
    print("\nCorrelation (root, then its symptoms):")
    top, missing = _top(store, incident)
    if top is None:
        print(plain(f"  {incident.id} is a symptom of {missing}, which is not in this database"))
        top = incident
    visited: set[str] = set()

    def show(node: Incident, depth: int) -> None:
        visited.add(node.id)
        children = store.children(node.id) if depth < _TREE_DEPTH else ()
        print("  " + "    " * depth + _tree_line(node, len(children), here=node.id == incident.id))
        fresh = [child for child in children if child.id not in visited]
        for child in fresh[:_TREE_CHILDREN]:
            show(child, depth + 1)
        if len(fresh) > _TREE_CHILDREN:
            print("  " + "    " * (depth + 1) + f"... and {len(fresh) - _TREE_CHILDREN} more symptom(s)")

    show(top, 0)


def _show(store: IncidentStore, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from console.store.export import incident_dict

    incident = store.get(args.incident_id)
    if incident is None and (damaged := store.damaged(args.incident_id)) is not None:
        print(f"gpu-console incidents: {plain(damaged.message)}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if incident is None:
        print(f"gpu-console incidents: no incident with id {args.incident_id!r} in {store.path}", file=sys.stderr)
        return EXIT_NOT_FOUND
    timeline = store.timeline(incident.id)
    evidence = store.evidence_count(incident.id)
    seen = store.seen_before(incident)
    children = store.children(incident.id)
    if args.fmt == "json":
        parent = None if incident.parent_id is None else store.get(incident.parent_id)
        grandchildren = store.symptom_counts([child.id for child in children])
        document = {
            "incident": incident_dict(incident, len(children)),
            "parent": None if parent is None else incident_dict(parent, len(store.children(parent.id))),
            "children": [incident_dict(child, grandchildren.get(child.id, 0)) for child in children],
            "timeline": [
                {**asdict(entry), "severity": entry.severity.label, "kind": str(entry.kind)} for entry in timeline
            ],
            "evidence_count": evidence,
            "seen_before": _jsonable(asdict(seen)),
        }
        print(json.dumps(document, indent=2))  # ASCII escapes: no control character reaches the terminal
        return 0
    for key, value in incident_dict(incident, len(children)).items():
        shown = _stamp(value) if key.endswith("_at") and value is not None else value
        if isinstance(shown, list):
            shown = ", ".join(shown)
        print(f"{key:>20}: {'-' if shown in (None, '') else plain(shown)}")
    _print_tree(store, incident)
    print("\nTimeline:")
    for entry in timeline:
        note = f"  {plain(entry.note)}" if entry.note else ""
        print(
            f"  {_stamp(entry.time)}  {entry.kind:12} {entry.severity.label:8} {entry.status:12} x{entry.count}{note}"
        )
    print(f"\nEvidence: {evidence} sample(s)")
    print("\nSeen before (same rule and code):")
    for line in seen.summary_lines():
        print(f"  {plain(line)}")
    for group in (seen.same_context, seen.elsewhere):
        for past in group.incidents:
            outcome = past.outcome or past.status
            note = f" - {past.resolution_note}" if past.resolution_note else ""
            where = f"{past.provider}/{past.site} {past.gpu_model or '?'} driver {past.driver_version or '?'}"
            name = "same" if group is seen.same_context else "elsewhere"
            print(plain(f"    [{name}] {_stamp(past.opened_at)} {where}: {outcome}{note}"))
    return 0


def _jsonable(value: Any) -> Any:
    from enum import Enum

    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Enum):
        return str(value)
    return value


def _warn_damaged(damaged: Sequence[DamagedRow]) -> None:
    for row in damaged[:_DAMAGED_SHOWN]:
        print(f"gpu-console incidents: {plain(row.message)}", file=sys.stderr)
    if len(damaged) > _DAMAGED_SHOWN:
        print(f"gpu-console incidents: ... and {len(damaged) - _DAMAGED_SHOWN} more damaged row(s)", file=sys.stderr)


def _export(store: IncidentStore, args: argparse.Namespace) -> int:
    fmt: ExportFormat = "json" if args.fmt == "json" else "csv"
    damaged: list[DamagedRow] = []
    if args.output:
        target = Path(args.output)
        try:
            with target.open("w", encoding="utf-8", newline="") as out:
                written = store.export(_filter(args), fmt, out, damaged=damaged)
        except OSError as exc:
            print(f"gpu-console incidents: cannot write {target}: {exc.strerror}", file=sys.stderr)
            return EXIT_STORE_ERROR
        print(f"exported {written} incident(s) to {target}", file=sys.stderr)
    else:
        written = store.export(_filter(args), fmt, sys.stdout, damaged=damaged)
    _warn_damaged(damaged)
    return 0


def _stats(store: IncidentStore, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    until = args.until if args.until is not None else time.time()
    since = args.since if args.since is not None else until - _STATS_DEFAULT_WINDOW_S
    tables = {group: store.rates(group, since, until) for group in ("site", "provider", "kind")}
    if args.fmt == "json":
        document = {
            "since": since,
            "until": until,
            **{f"by_{group}": [asdict(row) for row in rows] for group, rows in tables.items()},
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"Incidents per 1,000 GPU-hours, {_stamp(since)} to {_stamp(until)}")
    for group, rows in tables.items():
        print(f"\nby {group}:")
        print(f"  {group:<28} {'incidents':>10} {'GPU-hours':>12} {'per 1,000 GPU-h':>16}")
        for row in rows:
            rate = "n/a" if row.per_1000_gpu_hours is None else f"{row.per_1000_gpu_hours:.2f}"
            print(f"  {plain(row.group):<28} {row.incidents:>10} {row.gpu_hours:>12.1f} {rate:>16}")
    return 0


def _merge(store: IncidentStore, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    result = store.merge_from(Path(args.other))
    if args.fmt == "json":
        print(json.dumps(asdict(result)))
    else:
        print(
            f"merged {args.other} into {store.path}: {result.incidents_added} added, "
            f"{result.incidents_updated} updated, {result.incidents_unchanged} unchanged, "
            f"{result.incidents_joined} joined to the same fault under another id, "
            f"{result.timeline_added} timeline entries, {result.evidence_added} evidence samples, "
            f"{result.ledger_added} ledger entries, "
            f"{result.exposure_rows} exposure rows"
            + (
                f"; refused {result.incidents_refused} incident(s) and {result.history_refused} other row(s)"
                if result.incidents_refused or result.history_refused
                else ""
            )
        )
    for reason in result.refusals:
        print(f"gpu-console incidents: refused {plain(reason)}", file=sys.stderr)
    return 0


def _repair(store: IncidentStore, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    result = store.repair(dry_run=args.dry_run)
    if args.fmt == "json":
        print(json.dumps(asdict(result)))
        return 0
    for line in result.removed:
        print(plain(line))
    verb = "would remove" if result.dry_run else "removed"
    print(
        f"{store.path}: {verb} {result.incidents_removed} damaged incident row(s) and "
        f"{result.history_removed} timeline, evidence, ledger or exposure row(s)"
    )
    return 0
