"""Entry point of ``gpu-console``: headless subcommands go to ``console``; no subcommand starts the GUI.

Qt is imported only when the GUI starts, so ``gpu-console agent`` runs on a GPU node without PySide6.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from console.cli.main import build_parser, configure_logging, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if args.command:
        return run_command(args)
    from widgets.app import run_gui

    return run_gui(args)


if __name__ == "__main__":
    sys.exit(main())
