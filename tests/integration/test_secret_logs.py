"""Logs never carry secrets (issue 18) on the auth paths beyond the agent and Redfish: a Prometheus behind basic
auth read with a wrong and then the right password, Alertmanager receivers with basic auth and a bearer token
(one answering, one not listening), a webhook with an HMAC key answering 500, and SSH with a wrong client key.
Every log record at DEBUG, tracebacks included, is searched for each secret and for its prefix and suffix."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from console.config.fleet import (
    Fleet,
    Node,
    Receiver,
    ReceiverKind,
    SecretKind,
    SecretRef,
    Site,
    SourceKind,
    SourceSpec,
)
from console.incidents.model import ChangeKind, IncidentChange
from console.notify.notifier import Notifier
from console.notify.state import NotifyStore
from console.notify.trial import send_test
from console.samples.results import SourceError
from console.sources import make_source
from console.sources.base import Source, SourceContext
from console.sources.dcgm.render import render_dcgm_exposition
from tests.helpers.alertmanager_server import Alertmanager, Recorder
from tests.helpers.alertmanager_server import available as alertmanager_available
from tests.helpers.builders import ExporterStandIn, free_port, h100_dcgm_sample, make_incident
from tests.helpers.prometheus_server import PASSWORD, USER, prometheus_over
from tests.helpers.prometheus_server import available as prometheus_available

WRONG_PASSWORD = "pw-wrong-Prom-8Jd7Ks6"
AM_PASSWORD = "am-pass-Xy7Wq2Lp9Zr4"
AM_TOKEN = "am-tok-Vb3Nm8Kj1Hg6"
HOOK_KEY = "hook-key-Rt5Yu8Io2Pq7"
SECRET_ENVS = {
    "GPU_CONSOLE_TEST_LOG_PROM": WRONG_PASSWORD,
    "GPU_CONSOLE_TEST_LOG_AM_PASS": AM_PASSWORD,
    "GPU_CONSOLE_TEST_LOG_AM_TOKEN": AM_TOKEN,
    "GPU_CONSOLE_TEST_LOG_HOOK": HOOK_KEY,
}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # with any traceback text


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    for name, value in SECRET_ENVS.items():
        monkeypatch.setenv(name, value)
    handler = _Collect()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def assert_secret_free(lines: list[str], secrets: tuple[str, ...]) -> None:
    assert lines, "the run logged something to check"
    text = "\n".join(lines)
    for secret in secrets:
        for part in (secret, secret[:10], secret[-8:]):
            assert part not in text, f"a secret or part of one ({part[:6]}...) appears in the log"


async def _poll_once(source: Source) -> None:
    try:
        with contextlib.suppress(SourceError):
            await source.poll()
    finally:
        await source.aclose()


def ref(name: str) -> SecretRef:
    return SecretRef(SecretKind.ENV, name)


@pytest.mark.skipif(not prometheus_available(), reason="prometheus (Debian package) is not installed")
def test_prometheus_basic_auth_logs_no_password(
    tmp_path: Path, log_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def poll(password: SecretRef) -> object:
        spec = SourceSpec(SourceKind.PROMETHEUS, url=url, user=USER, password=password)
        async with aiohttp.ClientSession() as http:
            source = make_source(SourceContext(Node("p5-017", "lab", (spec,)), Site("lab", "x"), spec, 5.0, http))
            try:
                return await source.poll()
            finally:
                await source.aclose()

    with (
        ExporterStandIn(render_dcgm_exposition([h100_dcgm_sample("p5-017")])) as exporter,
        prometheus_over(tmp_path, [f"127.0.0.1:{exporter.port}"], basic_auth=True, gpus=8) as url,
    ):
        with pytest.raises(SourceError):
            asyncio.run(poll(ref("GPU_CONSOLE_TEST_LOG_PROM")))
        monkeypatch.setenv("GPU_CONSOLE_TEST_LOG_PROM_RIGHT", PASSWORD)
        assert asyncio.run(poll(ref("GPU_CONSOLE_TEST_LOG_PROM_RIGHT"))) is not None
    assert_secret_free(log_lines, (WRONG_PASSWORD, PASSWORD))


@pytest.mark.skipif(not alertmanager_available(), reason="needs Debian's prometheus-alertmanager")
def test_receivers_log_no_credentials_or_signing_key(tmp_path: Path, log_lines: list[str]) -> None:
    with Alertmanager(tmp_path / "am") as alertmanager, Recorder() as hook:
        hook.answer = 500
        receivers = (
            Receiver(ReceiverKind.ALERTMANAGER, alertmanager.url, name="am-basic", user="console",
                     password=ref("GPU_CONSOLE_TEST_LOG_AM_PASS"), timeout_s=2.0),
            Receiver(ReceiverKind.ALERTMANAGER, f"http://127.0.0.1:{free_port()}", name="am-down",
                     token=ref("GPU_CONSOLE_TEST_LOG_AM_TOKEN"), timeout_s=1.0),
            Receiver(ReceiverKind.WEBHOOK, hook.url(), name="hook", secret=ref("GPU_CONSOLE_TEST_LOG_HOOK"),
                     timeout_s=1.0),
        )  # fmt: skip
        for receiver in receivers:
            send_test(receiver)
        fleet = Fleet(sites=(Site("lab", "onprem"),), nodes=(Node("n1", "lab", ()),), receivers=receivers)
        store = NotifyStore.open(tmp_path / "incidents.notify.sqlite3")
        notifier = Notifier(fleet, store, resend_s=0.3, sync_s=0.2, backoff_max_s=0.2, stop_grace_s=1.0)
        notifier.start()
        try:
            incident = make_incident("i-1", time.time() - 5, site="lab", provider="onprem", node="n1")
            notifier.submit([IncidentChange(ChangeKind.OPENED, incident, incident.last_seen_at)])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(hook.received()) < 3:
                time.sleep(0.1)
        finally:
            notifier.stop()
        assert len(hook.received()) >= 3, "the failing webhook was retried (and logged about)"
    assert_secret_free(log_lines, (AM_PASSWORD, AM_TOKEN, HOOK_KEY))


@pytest.mark.skipif(
    shutil.which("/usr/sbin/sshd") is None or shutil.which("ssh-keygen") is None,
    reason="needs Debian's openssh-server (/usr/sbin/sshd) and ssh-keygen",
)
def test_ssh_with_a_wrong_key_logs_no_key_material(tmp_path: Path, log_lines: list[str]) -> None:
    from tests.helpers.sshd_server import running_sshd, ssh_keygen

    with running_sshd(tmp_path) as (server, _nvidia_smi, client_key, known_hosts):
        stranger = ssh_keygen(tmp_path / "stranger_key")
        for key in (stranger, client_key):
            spec = SourceSpec(SourceKind.SSH, host="127.0.0.1", port=server.port, key_file=str(key),
                              known_hosts=str(known_hosts))  # fmt: skip
            source = make_source(SourceContext(Node("gpu-node-1", "lab", (spec,)), Site("lab", "x"), spec, 10.0))
            asyncio.run(_poll_once(source))
    material = tuple(
        line
        for path in (stranger, client_key)
        for line in path.read_text().splitlines()
        if line and not line.startswith("-----") and len(line) > 20
    )
    assert material
    assert_secret_free(log_lines, material)
