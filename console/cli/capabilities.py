"""`gpu-console capabilities`: after one poll round, which fields each site reports, does not support, never
showed, or misses because a collector fails."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from console.cli.bounds import seconds

HELP = "poll every node once and print, per site, each field's capability (reported, not supported, ...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="cap_config", metavar="FILE", help="fleet inventory (TOML); default: demo")
    parser.add_argument("--demo", dest="cap_demo", action="store_true", help="the built-in demo fleet")
    parser.add_argument("--seed", dest="cap_seed", type=int, default=None, help="demo fleet seed")
    parser.add_argument("--json", dest="cap_json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--timeout", dest="cap_timeout", type=seconds, default=60.0, metavar="S", help="wait at most S s for the round"
    )


def run(args: argparse.Namespace) -> int:
    from console.config.inventory import InventoryError
    from console.live.capabilities import NodeObservation, capabilities_text, capabilities_to_json, capability_map
    from console.live.startup import resolve_fleet
    from console.polling.poller import Poller
    from console.samples.results import PollResult
    from console.sources import make_source

    seed = args.cap_seed if args.cap_seed is not None else args.seed
    try:
        fleet = resolve_fleet(args.cap_config or args.config, args.cap_demo or args.demo, seed)
    except InventoryError as exc:
        print(f"gpu-console capabilities: {exc}", file=sys.stderr)
        return 2
    results: dict[str, PollResult] = {}
    lock = threading.Lock()
    round_done = threading.Event()
    expected = {node.name for node in fleet.nodes}

    def on_result(result: PollResult) -> None:
        with lock:
            results.setdefault(result.node, result)  # the first poll of each node is the round
            if expected <= results.keys():
                round_done.set()

    poller = Poller(fleet, make_source, on_result, seed=seed)
    poller.start()
    try:
        round_done.wait(args.cap_timeout)
    finally:
        poller.stop()
    with lock:
        seen = dict(results)
    observations = [
        NodeObservation(
            node=node.name,
            site=node.site,
            sample=seen[node.name].sample if node.name in seen else None,
            failures=tuple(f"{f.source}: {f.failure}: {f.reason}" for f in seen[node.name].failures)
            if node.name in seen
            else (f"{node.name}: no answer within {args.cap_timeout:g} s",),
        )
        for node in fleet.nodes
    ]
    sites = capability_map(observations)
    if args.cap_json:
        print(json.dumps({"time": time.time(), "sites": capabilities_to_json(sites)}, indent=2))
    else:
        print(capabilities_text(sites))
    return 0
