"""Entry point of ``gpu-console``: headless subcommands go to ``console``; no subcommand starts the GUI.

Qt is imported only when the GUI starts, so ``gpu-console agent`` runs on a GPU node without PySide6 (the agent's
lean install leaves the GUI stack out). When the GUI cannot load, the operator gets one sentence that names what
is missing, never a traceback.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from console.cli.main import build_parser, configure_logging, run_command
from console.live.startup import WORKER_ARGUMENT

GUI_MODULES = ("PySide6", "shiboken6", "pyqtgraph")
# The Debian packages that carry the shared libraries Qt most often finds missing (scripts/setup.sh installs them).
QT_LIBRARY_PACKAGES = {
    "libEGL": "libegl1",
    "libGL": "libgl1",
    "libOpenGL": "libopengl0",
    "libxkbcommon": "libxkbcommon0",
    "libfontconfig": "libfontconfig1",
    "libfreetype": "libfreetype6",
    "libdbus": "libdbus-1-3",
    "libglib": "libglib2.0-0",
}


def gui_import_problem(exc: ImportError) -> str:
    """One sentence for an operator whose GUI stack did not load."""
    missing = exc.name or ""
    if missing.split(".")[0] in GUI_MODULES:
        return (
            f"gpu-console: the desktop GUI needs {missing.split('.')[0]}, which is not installed here "
            "(`pip install gpu-ops-console` installs it; the node agent's lean install leaves it out on purpose). "
            "The headless commands work without it: gpu-console agent|poll|probe|incidents|simulate."
        )
    library = re.search(r"(lib[\w.+-]+\.so[\w.]*)", str(exc))
    if library:
        stem = library.group(1).split(".so")[0]
        package = next((pkg for prefix, pkg in QT_LIBRARY_PACKAGES.items() if stem.startswith(prefix)), None)
        hint = f" (on Debian or Ubuntu: apt install {package})" if package else ""
        return f"gpu-console: Qt cannot load the system library {library.group(1)}{hint}."
    return f"gpu-console: the desktop GUI could not be loaded: {exc}."


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == [WORKER_ARGUMENT]:  # a frozen build runs itself again as the window's monitoring worker
        from console.live.worker_process import main as worker_main

        return worker_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    configure_logging(args.log_level)
    if args.command:
        return run_command(args)
    try:
        from widgets.app import run_gui
    except ImportError as exc:
        print(gui_import_problem(exc), file=sys.stderr)
        return 2
    return run_gui(args)


if __name__ == "__main__":
    sys.exit(main())
