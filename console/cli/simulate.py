"""``gpu-console simulate``: serve N simulated nodes as dcgm-exporter endpoints (and Redfish BMCs) on one port."""

from __future__ import annotations

import argparse
import sys

from console.cli.bounds import seconds

HELP = "serve simulated demo nodes as dcgm-exporter endpoints (and Redfish BMCs) for tests and benchmarks"

EXIT_CONFIG = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, required=True, metavar="N", help="number of simulated nodes")
    parser.add_argument(
        "--gpus-per-node", type=int, default=8, metavar="G", help="GPUs per node, 1-8 (default %(default)s)"
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free one (default %(default)s)",
    )
    parser.add_argument(
        "--faults",
        default="all",
        metavar="LIST",
        help="scripted demo faults: all, none, or a comma-separated list of kinds (default %(default)s)",
    )
    # own dest: the top-level --seed would otherwise be overwritten by this parser's default
    parser.add_argument("--seed", dest="simulate_seed", type=int, default=None, help="simulation seed")
    parser.add_argument("--duration", type=seconds, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--refresh",
        type=seconds,
        default=1.0,
        metavar="S",
        help="seconds between a node's value updates, like dcgm-exporter's -c (default %(default)s; "
        "raise it to serve thousands of nodes from a small machine)",
    )
    parser.add_argument("--redfish", action="store_true", help="also serve a Redfish BMC per node")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from console.agent.server import AgentConfigError, parse_listen
    from console.demo.server import SimulatorConfig, SimulatorConfigError, parse_faults, serve, validate_config

    seed = args.simulate_seed if args.simulate_seed is not None else (args.seed or 0)
    try:
        if args.duration is not None and not args.duration > 0:
            raise SimulatorConfigError(f"--duration must be > 0, got {args.duration}")
        host, port = parse_listen(args.listen)
        config = SimulatorConfig(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            host=host,
            port=port,
            faults=parse_faults(args.faults),
            seed=seed,
            redfish=args.redfish,
            refresh_s=args.refresh,
        )
        validate_config(config)
    except (SimulatorConfigError, AgentConfigError) as exc:
        print(f"gpu-console simulate: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(config, args.duration, stop)
        except OSError as exc:  # e.g. the port is taken
            print(f"gpu-console simulate: cannot listen on {args.listen}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return 0

    return asyncio.run(main())
