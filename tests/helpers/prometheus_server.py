"""Debian's real Prometheus (``/usr/bin/prometheus``) on 127.0.0.1 for tests: scraping given targets every second,
storage in a temporary folder, optionally behind basic auth (``--web.config.file``), stopped on exit."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.helpers.builders import free_port

# A bcrypt hash (cost 5) of BASIC_AUTH_PASSWORD, made once with crypt.crypt(password, "$2b$05$" + salt):
# Prometheus' web config takes only hashes, and no bcrypt tool is needed at test time.
BASIC_AUTH_USER = "console"
BASIC_AUTH_PASSWORD = "s3cret-prom"
BASIC_AUTH_HASH = "$2b$05$abcdefghijklmnopqrstuuPZMNE0paYlguApXl08SF799ZN7abktS"


def available() -> bool:
    return shutil.which("prometheus") is not None


def _get(url: str, auth: bool) -> bytes:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{BASIC_AUTH_USER}:{BASIC_AUTH_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=2) as answer:
        body: bytes = answer.read()
        return body


@contextlib.contextmanager
def running_prometheus(
    work: Path, targets: Sequence[str], *, basic_auth: bool = False, gpus: int, ready_within_s: float = 30.0
) -> Iterator[str]:
    """Yields the base URL once every one of ``gpus`` GPUs' temperature was scraped."""
    prometheus = shutil.which("prometheus")
    assert prometheus is not None, "check available() first"
    config = work / "prometheus.yml"
    listed = ", ".join(f"'{target}'" for target in targets)
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: dcgm\n    static_configs:\n      - targets: [{listed}]\n"
    )
    args = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}"]
    if basic_auth:
        web = work / "web.yml"
        web.write_text(f"basic_auth_users:\n  {BASIC_AUTH_USER}: '{BASIC_AUTH_HASH}'\n")
        args.append(f"--web.config.file={web}")
    port = free_port()
    args.append(f"--web.listen-address=127.0.0.1:{port}")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within_s
        last = ""
        while True:
            try:
                body = _get(f"{url}/api/v1/query?query=count(DCGM_FI_DEV_GPU_TEMP)", basic_auth)
                result = json.loads(body)["data"]["result"]
                if result and int(result[0]["value"][1]) == gpus:
                    break
                last = str(result)
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not scrape {gpus} GPUs in {ready_within_s:g} s (last: {last})")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
