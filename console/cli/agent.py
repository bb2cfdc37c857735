"""``gpu-console agent``: serve this machine's GPUs (NVML) over HTTP for Prometheus and the console."""

from __future__ import annotations

import argparse
import sys

from console.cli.bounds import seconds

HELP = "run the node agent: serve local GPU telemetry on /metrics (dcgm-exporter names) and /api/v1"

EXIT_CONFIG = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default="127.0.0.1:9400",
        metavar="HOST:PORT",
        help="address to listen on (default %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the bearer token clients must send (required off loopback)",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (needs --tls-key)")
    parser.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    parser.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        metavar="S",
        help="seconds between NVML samples (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from console.agent.server import (
        AgentConfig,
        AgentConfigError,
        parse_listen,
        read_token_file,
        run_agent,
        validate_config,
    )

    try:
        host, port = parse_listen(args.listen)
        token = read_token_file(args.token_file) if args.token_file else None
        config = AgentConfig(
            host=host,
            port=port,
            token=token,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            interval_s=args.interval,
        )
        validate_config(config)
    except AgentConfigError as exc:
        print(f"gpu-console agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(run_agent(config))
