"""`gpu-console poll`: polling and incident rules without a window, for a server or cron."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from console.cli.bounds import hours, seconds

EXIT_UNSAVED = 3  # some incident changes could not be written (the summary's "unsaved_changes")
HELP = "poll a fleet and record incidents without a window (ends on SIGINT/SIGTERM or after --duration)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="poll_config", metavar="FILE", help="fleet inventory (TOML); default: demo")
    parser.add_argument("--db", dest="poll_db", metavar="PATH", help="incident database (default: user data dir)")
    parser.add_argument("--duration", type=seconds, metavar="S", help="stop after S seconds")
    parser.add_argument("--demo", dest="poll_demo", action="store_true", help="poll the built-in demo fleet")
    parser.add_argument("--seed", dest="poll_seed", type=int, default=None, help="demo fleet seed")
    parser.add_argument(
        "--history-retention-h",
        dest="poll_history_retention_h",
        type=hours,
        default=24.0,
        metavar="H",
        help="keep H hours of per-minute chart history beside the database (default 24)",
    )


def run(args: argparse.Namespace) -> int:
    from console.config.inventory import InventoryError
    from console.history.rollup import history_path_for
    from console.live.monitor import FleetMonitor, MonitorUpdate
    from console.live.startup import (
        incident_engine_for,
        open_chart_history,
        open_notifier,
        resolve_db_path,
        resolve_fleet,
        tune_garbage_collector,
    )
    from console.store import IncidentStore, StoreError

    seed = args.poll_seed if args.poll_seed is not None else args.seed
    try:
        fleet = resolve_fleet(args.poll_config or args.config, args.poll_demo or args.demo, seed)
    except InventoryError as exc:
        print(f"gpu-console poll: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gpu-console poll: cannot read the inventory: {exc}", file=sys.stderr)
        return 2
    if not args.poll_history_retention_h > 0:
        print("gpu-console poll: --history-retention-h must be > 0", file=sys.stderr)
        return 2
    db_path = resolve_db_path(args.poll_db or args.db)
    try:
        store = IncidentStore.open(db_path)
    except StoreError as exc:
        print(f"gpu-console poll: {exc}", file=sys.stderr)
        return 2
    rollup = open_chart_history(
        history_path_for(db_path),
        args.poll_history_retention_h,
        lambda problem: print(f"gpu-console poll: {problem}", file=sys.stderr),
    )
    engine = incident_engine_for(fleet)
    tune_garbage_collector()
    done = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_update(_update: MonitorUpdate) -> None:
        return None

    notifier = open_notifier(fleet, db_path, lambda problem: print(f"gpu-console poll: {problem}", file=sys.stderr))
    monitor = FleetMonitor(
        fleet, engine=engine, store=store, on_update=on_update, seed=seed, history=rollup, notifier=notifier
    )
    monitor.start()
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not done.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            done.wait(0.5 if remaining is None else min(0.5, remaining))
    finally:
        monitor.stop()
        if notifier is not None:
            notifier.stop()  # one last short try for what is queued
        store.close()
        if rollup is not None:
            rollup.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counters = monitor.counters
    print(
        json.dumps(
            {
                "nodes": len(fleet.nodes),
                "polls": counters.polls,
                "ok_polls": counters.ok_polls,
                "failed_polls": counters.failed_polls,
                "repeated_polls": counters.repeated_polls,
                "on_time_polls": monitor.poller.stats.on_time_polls,
                "incidents_opened": counters.incidents_opened,
                # Incident changes lost because the database could not be written (a full disk that never
                # freed up): any makes the exit code 3.
                "unsaved_changes": store.unsaved_changes,
                # Shared collectors (a site read through Prometheus): the real refresh period, slow or failing.
                "collectors": [
                    {
                        "name": c.name,
                        "site": c.site,
                        "reads": c.reads,
                        "failed_reads": c.failed_reads,
                        "last_read_s": round(c.last_duration_s, 3),
                        "period_s": round(c.period_s, 3),
                        "error": c.error,
                    }
                    for c in monitor.poller.stats.collectors.values()
                ],
                # Per receiver: last success, last error, queued, sent, dropped (console.notify.health).
                "receivers": [status.to_json() for status in notifier.statuses()] if notifier is not None else [],
            }
        )
    )
    if store.unsaved_changes:
        print(
            f"gpu-console poll: {store.unsaved_changes} incident changes could not be saved to {db_path}: "
            f"{store.last_error or 'the disk refused them'}",
            file=sys.stderr,
        )
        return EXIT_UNSAVED
    return 0
