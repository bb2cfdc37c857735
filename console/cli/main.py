"""The command line, Qt-free: the parser for every command and the headless subcommands.

Subcommands live in ``console/cli/<name>.py``, each with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. They are registered here explicitly. A command module imports its heavy dependencies inside
``run`` so that building the parser stays cheap and the agent runs without the GUI stack installed.
The GUI itself (no subcommand) is started by ``widgets.launcher``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from types import ModuleType

from console import __version__
from console.cli.bounds import seconds_or_zero

COMMANDS: dict[str, str] = {
    "agent": "console.cli.agent",
    "probe": "console.cli.probe",
    "poll": "console.cli.poll",
    "incidents": "console.cli.incidents",
    "simulate": "console.cli.simulate",
    "inventory": "console.cli.inventory",
    "fixes": "console.cli.fixes",
    "silence": "console.cli.silence",
    "capabilities": "console.cli.capabilities",
}


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-console",
        description="GPU Ops Console: live GPU fleet telemetry, incidents and fixes across provider sites.",
    )
    parser.add_argument("--version", action="version", version=f"gpu-console {__version__}")
    parser.add_argument("--demo", action="store_true", help="run on the built-in demo fleet (default without a config)")
    parser.add_argument("--config", metavar="PATH", help="fleet inventory (TOML); default: the user config file")
    parser.add_argument("--db", metavar="PATH", help="incident database; default: the user data directory")
    parser.add_argument("--seed", type=int, default=None, help="seed for the demo fleet (repeatable runs)")
    parser.add_argument(
        "--smoke-test",
        type=seconds_or_zero,
        metavar="SECONDS",
        default=None,
        help="build the main window, run the demo fleet for SECONDS, print a JSON summary and exit",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _command_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("console.cli"):
                continue  # command not built yet in this checkout
            raise
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
    return parser


EXIT_OUTPUT_FAILED = 1  # standard output could not be written (a full disk behind a redirect, a closed pipe)
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EPIPE, errno.EIO, errno.EFBIG})


def run_command(args: argparse.Namespace) -> int:
    """Run a subcommand; a standard output that cannot be written ends it with one line, never a traceback."""
    try:
        code: int = _command_module(args.command).run(args)
        sys.stdout.flush()
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        # Point stdout at /dev/null so the interpreter's own flush at exit does not fail a second time.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if exc.errno != errno.EPIPE:  # the reader left (`| head`): nothing to tell
            with contextlib.suppress(OSError):
                print(f"gpu-console {args.command}: cannot write the output: {exc.strerror}", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    return code


def configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
