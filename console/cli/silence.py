"""``gpu-console silence add|list|expire``: maintenance silences, in Alertmanager when the inventory names one.

``add`` mutes one node, rack or site for some hours: an Alertmanager silence (matcher ``node=``, ``rack=`` or
``site=``) when the inventory has an ``alertmanager`` receiver, else a local one kept in the notification file
beside the incident database, which a running console applies. Silenced incidents are still detected, stored and
shown; only telling people about them stops. Exit codes: 0 done, 1 refused (no such silence, a bad silence),
2 an inventory or receiver problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from console.notify.notifier import Notifier

HELP = "maintenance silences: add (node, rack or site, for some hours), list, expire"
EXIT_REFUSED = 1
EXIT_PROBLEM = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="silence_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="silence a node, a rack or a site for --hours")
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--node", help="the node's name in the inventory")
    what.add_argument("--rack", help="the rack's name (every node of it)")
    what.add_argument("--site", help="the site's name (every node of it)")
    add.add_argument("--hours", type=float, required=True, help="how long, from now")
    add.add_argument("--comment", required=True, help="why: the ticket, the work being done")
    listing = actions.add_parser("list", help="the silences in force (and, with --all, the expired ones)")
    listing.add_argument("--all", action="store_true", help="include expired silences")
    listing.add_argument("--json", action="store_true", help="print JSON")
    expire = actions.add_parser("expire", help="end a silence now")
    expire.add_argument("silence_id", metavar="ID")
    for sub in (add, listing, expire):
        sub.add_argument("--config", dest="silence_config", metavar="FILE", help="the inventory (its [[notify]])")
        sub.add_argument("--db", dest="silence_db", metavar="PATH", help="incident database (local silences beside)")


def run(args: argparse.Namespace) -> int:
    from console.config.inventory import InventoryError
    from console.live.startup import resolve_db_path, resolve_fleet
    from console.notify.notifier import Notifier
    from console.notify.schema import NotifyError, notify_path_for

    try:
        fleet = resolve_fleet(args.silence_config or args.config, False, None)
    except (InventoryError, OSError) as exc:
        return _say(f"cannot read the inventory: {exc}", EXIT_PROBLEM)
    path = notify_path_for(resolve_db_path(args.silence_db or args.db))
    problems: list[str] = []
    notifier = Notifier.open(fleet, path, problems.append)
    try:
        if problems:
            print(f"gpu-console silence: {'; '.join(problems)}", file=sys.stderr)
        if args.silence_action == "add":
            return _add(notifier, args)
        if args.silence_action == "list":
            return _list(notifier, args)
        silence = notifier.expire_silence(args.silence_id)
        print(f"expired {silence.id} ({silence.describe()})")
        return 0
    except NotifyError as exc:
        return _say(str(exc), EXIT_REFUSED if "no silence" in str(exc) else EXIT_PROBLEM)
    except ValueError as exc:
        return _say(str(exc), EXIT_REFUSED)
    finally:
        notifier.stop()


def _add(notifier: Notifier, args: argparse.Namespace) -> int:
    from console.notify.silences import Matcher
    from console.store.ledger import operator_name

    if not 0 < args.hours <= 24 * 90:
        return _say("--hours must be above 0 and at most 2160 (90 days)", EXIT_REFUSED)
    name, value = next((key, getattr(args, key)) for key in ("node", "rack", "site") if getattr(args, key))
    silence = notifier.add_silence([Matcher(name, value)], args.hours * 3600, args.comment, operator_name())
    ends = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(silence.ends_at))
    print(f"{silence.id}: {silence.describe()} silenced until {ends} ({silence.source}): {silence.comment}")
    return 0


def _list(notifier: Notifier, args: argparse.Namespace) -> int:
    from console.cli.incidents import plain

    now = time.time()
    silences = notifier.silences(include_expired=args.all)
    if args.json:
        print(json.dumps([silence.to_json(now) for silence in silences], indent=2))
        return 0
    for silence in silences:
        ends = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(silence.ends_at))
        print(
            plain(
                f"{silence.id}  {silence.state(now):<8} {silence.source:<12} {silence.describe():<32} "
                f"until {ends}  {silence.created_by}: {silence.comment}"
            )
        )
    if not silences:
        print("no silences in force")
    return 0


def _say(message: str, code: int) -> int:
    print(f"gpu-console silence: {message}", file=sys.stderr)
    return code
