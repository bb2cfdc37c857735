"""``gpu-console incidents acknowledge|resolve``: an operator's step from the command line, one ledger entry each.

The step goes into the database the console writes (its writer accepts it beside the console's own writes, and
never lets the console's next update of the incident undo it); a console polling that database picks it up within
seconds and stops tracking a resolved incident.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from console.store import IncidentStore

EXIT_REFUSED = 1  # no such incident, already resolved, or an unknown action
OUTCOMES = ("fixed", "not_fixed", "workaround")


def add_parsers(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], add_db: Callable[[argparse.ArgumentParser], None]
) -> None:
    ack = actions.add_parser("acknowledge", help="acknowledge an open incident (one ledger entry: who, when, note)")
    add_db(ack)
    ack.add_argument("incident_id", metavar="ID")
    ack.add_argument("--note", default="", help="what you are doing about it")
    resolve = actions.add_parser(
        "resolve",
        help="resolve an incident with the fix applied (one ledger entry; exit 1: no such open incident or action)",
    )
    add_db(resolve)
    resolve.add_argument("incident_id", metavar="ID")
    resolve.add_argument("--outcome", required=True, choices=OUTCOMES, help="what the fix did")
    resolve.add_argument(
        "--action", required=True, help="the fix applied: an id of resources/remediation/actions.toml (e.g. gpu_reset)"
    )
    resolve.add_argument("--note", default="", help="what was done, in your words")


def run_step(store: IncidentStore, args: argparse.Namespace) -> int:
    from console.incidents.model import ChangeKind, IncidentChange, Outcome, Status
    from console.remediation.catalog import CatalogError, load_catalog
    from console.store.ledger import operator_name

    incident = store.get(args.incident_id)
    if incident is None:
        return _refuse(f"no incident with id {args.incident_id!r} in {store.path}")
    if incident.status is Status.RESOLVED:
        return _refuse(f"incident {incident.id} is already resolved")
    now = time.time()
    who = operator_name()
    if args.incidents_action == "acknowledge":
        acked = dataclasses.replace(incident, status=Status.ACKNOWLEDGED, acknowledged_at=now)
        change = IncidentChange(ChangeKind.ACKNOWLEDGED, acked, now, args.note, operator=who)
        verb = "acknowledged"
    else:
        try:
            catalog = load_catalog()
        except CatalogError as exc:
            return _refuse(f"the action catalog is broken: {exc}")
        if args.action not in catalog.actions:
            return _refuse(f"unknown action {args.action!r}; choose one of {', '.join(catalog.actions)}")
        outcome = Outcome(args.outcome)
        resolved = dataclasses.replace(
            incident, status=Status.RESOLVED, resolved_at=now, resolution_note=args.note, outcome=outcome
        )
        change = IncidentChange(ChangeKind.RESOLVED, resolved, now, args.note, operator=who, action=args.action)
        verb = f"resolved ({outcome}, {args.action})"
    store.submit([change])
    store.flush()
    if store.last_error is not None:
        return _refuse(f"not recorded: {store.last_error}")
    print(f"{incident.id} {verb} by {who}")
    return 0


def _refuse(message: str) -> int:
    print(f"gpu-console incidents: {message}", file=sys.stderr)
    return EXIT_REFUSED
