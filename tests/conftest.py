"""Test-wide settings: offscreen Qt, UTC, a private runtime dir, and a guard against leaked threads."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["TZ"] = "UTC"
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="gpu-console-xdg-"))
os.chmod(os.environ["XDG_RUNTIME_DIR"], 0o700)
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
