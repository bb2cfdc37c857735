"""Debian's real Alertmanager (``/usr/bin/prometheus-alertmanager``) on 127.0.0.1 for tests (operations.md 2.3):
clustering off, storage and config in a temporary folder, every alert routed to a receiver that sends nothing, or
to a webhook (``Recorder``) with resolved alerts included. ``stop`` and ``start`` again reuse the same port and
storage (an Alertmanager that was down for a while).

``Recorder`` is a loopback HTTP server that records every POST it gets and answers with ``answer`` (set it to 500
to play a receiver that fails for a while): Alertmanager's notifications, or the console's webhook documents."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.helpers.builders import LoopbackServer, free_port

BINARY = Path("/usr/bin/prometheus-alertmanager")
CONFIG = """\
route:
  receiver: 'null'
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: 'null'
"""
WEBHOOK_CONFIG = """\
route:
  receiver: 'hook'
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: 'hook'
    webhook_configs:
      - url: '{url}'
        send_resolved: true
"""


def available() -> bool:
    return os.access(BINARY, os.X_OK)


class Alertmanager:
    """One Alertmanager process; ``url`` is its base URL. Use as a context manager, or ``start``/``stop``."""

    def __init__(self, workdir: Path, *, webhook_url: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        config = CONFIG if webhook_url is None else WEBHOOK_CONFIG.format(url=webhook_url)
        (workdir / "am.yml").write_text(config)
        self._log = workdir / "alertmanager.log"

    def __enter__(self) -> Alertmanager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_within_s: float = 15.0) -> None:
        assert self._process is None, "already running"
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(BINARY),
                    f"--config.file={self.workdir / 'am.yml'}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + ready_within_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"Alertmanager exited at start:\n{self._log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Alertmanager was not ready within {ready_within_s:g} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    # --- its API, as a test reads it ---

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as answer:
            return json.loads(answer.read())

    def post(self, path: str, document: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def delete(self, path: str) -> None:
        request = urllib.request.Request(f"{self.url}{path}", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Active, silenced and inhibited alerts (resolved ones are not listed), optionally only those with
        these label values."""
        query = [("filter", f'{name}="{value}"') for name, value in labels.items()]
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts{suffix}", timeout=5) as answer:
            found: list[dict[str, Any]] = json.loads(answer.read())
        return found

    def silences(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get("/api/v2/silences")
        return found


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int  # the status the recorder answered with

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder(LoopbackServer):
    """A real HTTP server in its own thread recording every POST; ``answer`` is the status it replies with."""

    thread_name = "recorder"

    def __init__(self) -> None:
        self.answer = 200
        self._received: list[Received] = []
        self._lock = threading.Lock()
        super().__init__()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, *, delivered_only: bool = False) -> list[Received]:
        with self._lock:
            found = list(self._received)
        return [r for r in found if r.answered < 300] if delivered_only else found

    def build_app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            body = await request.read()
            answer = self.answer
            with self._lock:
                self._received.append(Received(request.path, dict(request.headers), body, answer))
            return web.Response(status=answer, text="ok" if answer < 300 else "failing on purpose")

        app = web.Application()
        app.router.add_post("/{tail:.*}", record)
        return app
