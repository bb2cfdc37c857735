"""Debian's real /usr/bin/prometheus on loopback behind basic auth, scraping real exporter stand-ins, and a real
aiohttp proxy in front of it that counts the requests it gets, may delay them and adds (or withholds) the
credentials: one Prometheus serves a working site, a slow one and one that answers 401."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.helpers.builders import LoopbackServer, free_port

USER = "console"
PASSWORD = "console-test"
# bcrypt of PASSWORD (cost 4: quick to check), computed once: neither bcrypt nor htpasswd is needed here
PASSWORD_BCRYPT = "$2b$04$BDndKaJbrBxzUFiXU6TZ2O6FXxeHkBPrho/DJjPa/yRSumtBsfe/u"
AUTHORIZATION = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _query(url: str, promql: str) -> list[dict[str, object]]:
    request = urllib.request.Request(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", headers={"Authorization": AUTHORIZATION}
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        result: list[dict[str, object]] = json.loads(response.read())["data"]["result"]
    return result


@contextmanager
def _prometheus(work: Path, scrapes: str, *, scrape_interval_s: float = 1.0, basic_auth: bool = True) -> Iterator[str]:
    """The process, scraping ``scrapes`` (scrape_configs entries), stopped on exit; yields its URL at once."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus (Debian package) is not installed")
    config = work / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {scrape_interval_s:g}s\n  scrape_timeout: {scrape_interval_s:g}s\n"
        f"scrape_configs:\n{scrapes}"
    )
    args = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}"]
    if basic_auth:
        web_config = work / "web.yml"
        web_config.write_text(f"basic_auth_users:\n  {USER}: '{PASSWORD_BCRYPT}'\n")
        args.append(f"--web.config.file={web_config}")
    port = free_port()
    args.append(f"--web.listen-address=127.0.0.1:{port}")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_until(ready: Callable[[], str | None], what: str, within_s: float = 30.0) -> None:
    """``ready`` returns None when ready, else what it saw; fails the test after ``within_s``."""
    deadline = time.monotonic() + within_s
    last: str | None = ""
    while True:
        try:
            last = ready()
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        if last is None:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus did not {what} in {within_s:g} s (last: {last})")
        time.sleep(0.3)


@contextmanager
def running_prometheus(jobs: Mapping[str, str], work: Path, *, scrape_interval_s: float = 1.0) -> Iterator[str]:
    """Prometheus scraping each job's one target (``host:port``), behind basic auth; yields its URL once every
    job is up and scraped twice. Skips when Debian's prometheus is not installed."""
    scrapes = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n" for job, target in jobs.items()
    )
    with _prometheus(work, scrapes, scrape_interval_s=scrape_interval_s) as url:

        def every_job_scraped() -> str | None:
            scraped = _query(url, "count_over_time(up[1h]) >= 2")
            twice = len(scraped) == len(jobs) and all(row["value"][1] for row in scraped)  # type: ignore[index]
            return None if twice and len(_query(url, "up == 1")) == len(jobs) else str(scraped)

        _wait_until(every_job_scraped, "scrape every job")
        yield url


class PrometheusProxy(LoopbackServer):
    """A real HTTP server in its own thread forwarding to Prometheus: counts requests, waits ``delay_s`` before
    forwarding, and adds the credentials while ``authorized`` (without them Prometheus answers 401)."""

    thread_name = "prometheus-proxy"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.delay_s = 0.0
        self.authorized = True
        self.requests = 0
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, *, delay_s: float = 0.0, authorized: bool = True) -> None:
        with self._lock:
            self.delay_s, self.authorized, self.requests = delay_s, authorized, 0
            self.queries.clear()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as self._session:
            yield

    def build_app(self) -> web.Application:
        async def forward(request: web.Request) -> web.Response:
            with self._lock:
                self.requests += 1
                self.queries.append(request.query.get("query", ""))
                delay, authorized = self.delay_s, self.authorized
            if delay:
                await asyncio.sleep(delay)
            headers = {"Authorization": AUTHORIZATION} if authorized else {}
            assert self._session is not None
            async with self._session.get(
                f"{self.upstream}{request.path}", params=request.query, headers=headers
            ) as response:
                body = await response.read()
                return web.Response(status=response.status, body=body, content_type=response.content_type)

        app = web.Application()
        app.router.add_get("/{path:.*}", forward)
        return app


# --- one job, with or without basic auth, ready once every GPU was scraped ---


def available() -> bool:
    return shutil.which("prometheus") is not None


def _get_json(url: str, auth: bool) -> bytes:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", AUTHORIZATION)
    with urllib.request.urlopen(request, timeout=2) as answer:
        body: bytes = answer.read()
        return body


@contextmanager
def prometheus_over(
    work: Path, targets: Sequence[str], *, basic_auth: bool = False, gpus: int, ready_within_s: float = 30.0
) -> Iterator[str]:
    """One job over ``targets``; yields the base URL once every one of ``gpus`` GPUs' temperature was scraped."""
    listed = ", ".join(f"'{target}'" for target in targets)
    scrapes = f"  - job_name: dcgm\n    static_configs:\n      - targets: [{listed}]\n"
    with _prometheus(work, scrapes, basic_auth=basic_auth) as url:

        def every_gpu_scraped() -> str | None:
            body = _get_json(f"{url}/api/v1/query?query=count(DCGM_FI_DEV_GPU_TEMP)", basic_auth)
            result = json.loads(body)["data"]["result"]
            return None if result and int(result[0]["value"][1]) == gpus else str(result)

        _wait_until(every_gpu_scraped, f"scrape {gpus} GPUs", ready_within_s)
        yield url
