"""Test-wide settings: offscreen Qt, UTC, a private runtime dir, and guards against leaked threads and timers."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["TZ"] = "UTC"
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="gpu-console-xdg-"))
os.chmod(os.environ["XDG_RUNTIME_DIR"], 0o700)
# Settings a test saves (desktop notifications, QSettings) go to a private place, never the user's config.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="gpu-console-config-")
if os.environ["QT_QPA_PLATFORM"] != "offscreen" and not os.environ.get("DISPLAY"):
    raise pytest.UsageError("Qt tests need QT_QPA_PLATFORM=offscreen or a DISPLAY; neither is set")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A test must stop every thread it started (pollers, writers, servers)."""
    before = set(threading.enumerate())
    yield
    deadline = 5.0
    import time

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
        ]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads left running: {[t.name for t in leaked]}")


def _monitor_workers() -> list[int]:
    """This process's children that are the window's monitoring worker (console.live.worker_process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) != os.getpid() or stat[0] in ("Z", "X"):
                continue
            if b"console.live.worker_process" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):  # it ended meanwhile
            continue
    return found


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    """A test must end every monitoring worker it started (closing the window, or the app's shutdown)."""
    yield
    import signal
    import time

    end = time.monotonic() + 5.0
    while _monitor_workers() and time.monotonic() < end:
        time.sleep(0.05)
    left = _monitor_workers()
    for pid in left:  # not to spoil the next tests: the failure below says it happened
        os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail(f"monitoring workers left running: {left}")


# -- Qt timers and QThreads ----
# QTimer.start and QThread.start are wrapped (once, and only once Qt is loaded) to remember what a test started and
# where; after the test, one still active or running fails it. A closed window whose timer keeps ticking, or a
# worker QThread nobody stopped, costs CPU for the rest of the session and hides a shutdown bug of the app.
_QT_STARTED: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # timer or thread -> "file:line"


def _remembering(original: Callable[..., Any]) -> Callable[..., Any]:
    def start(self: Any, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        _QT_STARTED[self] = f"{caller.f_code.co_filename}:{caller.f_lineno}"
        return original(self, *args, **kwargs)

    start.remembers_starts = True  # type: ignore[attr-defined]
    return start


def _wrap_qt_starts() -> bool:
    """Wrap the starts if Qt is already loaded (pytest-qt loads it at configure time); never import it here."""
    qt_core = sys.modules.get("PySide6.QtCore")
    if qt_core is None:
        return False
    for kind in (qt_core.QTimer, qt_core.QThread):
        if not getattr(kind.start, "remembers_starts", False):
            kind.start = _remembering(kind.start)
    return True


def _still_running() -> list[str]:
    import shiboken6
    from PySide6.QtCore import QThread, QTimer

    found = []
    for obj, where in list(_QT_STARTED.items()):
        if not shiboken6.isValid(obj):
            continue  # its C++ side was deleted, which stopped it
        if isinstance(obj, QTimer) and obj.isActive():
            parent = obj.parent()
            owner = type(parent).__name__ if parent is not None else "no parent"
            name = f"{obj.objectName()!r} " if obj.objectName() else ""
            found.append(f"QTimer {name}({obj.interval()} ms, owned by {owner}) started at {where}")
        elif isinstance(obj, QThread) and obj.isRunning():
            found.append(f"QThread {obj.objectName() or type(obj).__name__} started at {where}")
    return found


@pytest.fixture(autouse=True)
def _no_leaked_qt_timers_or_threads() -> Iterator[None]:
    """A test must stop every QTimer and QThread it started (close or shut down what it built)."""
    if not _wrap_qt_starts():
        yield
        return
    _QT_STARTED.clear()
    yield
    running = _still_running()
    if running:
        import time

        from PySide6.QtCore import QCoreApplication

        end = time.monotonic() + 2.0  # a QThread asked to quit, or a deleteLater() not yet processed
        while running and time.monotonic() < end and QCoreApplication.instance() is not None:
            QCoreApplication.processEvents()
            time.sleep(0.01)
            running = _still_running()
    _QT_STARTED.clear()
    if running:
        pytest.fail("Qt timers or threads left running after the test:\n  " + "\n  ".join(running))
