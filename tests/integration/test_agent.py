"""The node agent over real HTTP on 127.0.0.1 (fake NVML underneath), its client source, real Prometheus."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import logging
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from console.agent.server import AgentConfig, AgentConfigError, AgentServer, EventLog, RateLimiter, validate_config
from console.cli.main import build_parser, run_command
from console.config.fleet import Node, SecretKind, SecretRef, Site, SourceKind, SourceSpec
from console.samples.codec import sample_from_json
from console.samples.results import PollFailure, SourceError
from console.samples.schema import EventKind, GpuEvent, ProcessWorkload
from console.sources.agent import AgentSource
from console.sources.base import SourceContext
from console.sources.nvml.source import NvmlSource
from tests.helpers import fake_pynvml as F
from tests.helpers.builders import free_port
from tests.helpers.fake_pynvml import FakeGpu, FakeNvml

TOKEN = "s3cret-token-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


def _ctx(kind: SourceKind = SourceKind.NVML, **spec: Any) -> SourceContext:
    source = SourceSpec(kind=kind, **spec)
    return SourceContext(
        node=Node(name="inventory-name", site="inventory-site", sources=(source,)),
        site=Site(name="inventory-site", provider="onprem"),
        spec=source,
        timeout_s=3.0,
    )


class RunningAgent:
    """An AgentServer on its own loop in a thread, like `gpu-console agent` but with a fake NVML."""

    def __init__(self, config: AgentConfig, nvml: FakeNvml) -> None:
        self.nvml = nvml
        self.server = AgentServer(config, NvmlSource(_ctx(), nvml=nvml, event_timeout_ms=50))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="test-agent", daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            await self.server.stop()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    def __enter__(self) -> RunningAgent:
        self._thread.start()
        assert self._ready.wait(10), "agent did not start"
        if self._error is not None:
            self._thread.join(5)
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return self.server.url


def _get(
    url: str,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture
def agent() -> Iterator[RunningAgent]:
    config = AgentConfig(port=0, token=TOKEN, interval_s=0.1, rate_per_s=1000.0, rate_burst=1000)
    with RunningAgent(config, FakeNvml([FakeGpu(processes=[(4242, "python3", 2048 * 1024 * 1024)])])) as running:
        yield running


# --- security -----------------------------------------------------------------------------------------------


def test_token_required_401_without_200_with(agent: RunningAgent) -> None:
    for token in (None, "wrong-token-0123456789abcdef", TOKEN + "x"):
        status, body, headers = _get(agent.url + "/api/v1/sample", token)
        assert status == 401
        assert body == b"Unauthorized"  # no detail about why
        assert headers["WWW-Authenticate"] == "Bearer"
    status, _, _ = _get(agent.url + "/metrics", None)
    assert status == 401
    status, body, headers = _get(agent.url + "/api/v1/sample", TOKEN)
    assert status == 200
    sample = sample_from_json(json.loads(body))
    assert [g.uuid for g in sample.gpus] == ["GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"]
    assert sample.gpus[0].power_w == pytest.approx(631.95)
    assert sample.gpus[0].workload == (ProcessWorkload(4242, "python3", 2048.0),)  # the node's compute processes
    assert "aiohttp" not in headers.get("Server", "")
    assert _get(agent.url + "/healthz")[0] == 200  # liveness carries no data and needs no token


def test_non_loopback_without_token_is_refused_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AgentConfigError, match="without a token"):
        validate_config(AgentConfig(host="0.0.0.0"))
    with pytest.raises(AgentConfigError, match="without a token"):
        validate_config(AgentConfig(host="gpu-node.example.com"))
    validate_config(AgentConfig(host="::1"))  # loopback needs no token
    args = build_parser().parse_args(["agent", "--listen", "0.0.0.0:9400"])
    assert run_command(args) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without a token" in err
    args = build_parser().parse_args(["agent", "--listen", "127.0.0.1:9400", "--tls-cert", "c.pem"])
    assert run_command(args) == 2
    assert "--tls-key" in capsys.readouterr().err


def test_per_client_rate_limit_answers_429() -> None:
    config = AgentConfig(port=0, token=TOKEN, rate_per_s=1.0, rate_burst=3)
    with RunningAgent(config, FakeNvml()) as running:
        statuses = [_get(running.url + "/api/v1/sample", TOKEN)[0] for _ in range(3)]
        status, _, headers = _get(running.url + "/api/v1/sample", TOKEN)
        assert statuses == [200, 200, 200]
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        # unauthenticated guessing is limited too, in a bucket of its own (see the lock-out test below)
        guesses = [_get(running.url + "/api/v1/sample", "guess-0123456789abcdef")[0] for _ in range(4)]
        assert guesses == [401, 401, 401, 429]


def test_rate_limiter_refills_and_bounds_its_table() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    now[0] += 0.5
    assert limiter.retry_after("a") == 0.0
    assert limiter.retry_after("b") == 0.0  # per client


def test_request_body_and_oversized_headers_are_refused(agent: RunningAgent) -> None:
    host, port = "127.0.0.1", agent.server.port
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/api/v1/sample", body=b"x" * 100, headers={"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().status == 413
    conn.close()
    status, _, _ = _get(agent.url + "/api/v1/sample", TOKEN, headers={"X-Big": "y" * 20000})
    assert status in (400, 431)
    assert _get(agent.url + "/api/v1/sample", TOKEN)[0] == 200  # the agent is still serving


# --- events and no-GPU --------------------------------------------------------------------------------------


def test_events_endpoint_returns_xids_after_a_cursor(agent: RunningAgent) -> None:
    agent.nvml.inject_event(0, F.nvmlEventTypeXidCriticalError, 79)
    deadline = time.monotonic() + 5
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = json.loads(_get(agent.url + "/api/v1/events?since=0", TOKEN)[1])
        if doc["events"]:
            break
        time.sleep(0.05)
    [event] = doc["events"]
    assert (event["kind"], event["code"], event["cursor"]) == ("xid", 79, 1)
    assert event["gpu_uuid"] == "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
    later = json.loads(_get(agent.url + "/api/v1/events?since=1", TOKEN)[1])
    assert later["events"] == []
    assert later["epoch"] == doc["epoch"]
    assert _get(agent.url + "/api/v1/events?since=-1", TOKEN)[0] == 400
    assert _get(agent.url + "/api/v1/events?since=abc", TOKEN)[0] == 400


def test_event_log_is_bounded_and_reports_drops() -> None:
    log = EventLog(capacity=3)
    log.extend([GpuEvent(kind=EventKind.XID, time=float(i), code=i) for i in range(5)])
    events, dropped = log.since(0)
    assert [c for c, _ in events] == [3, 4, 5]
    assert dropped
    events, dropped = log.since(3)
    assert [c for c, _ in events] == [4, 5]
    assert not dropped


def test_without_a_driver_the_agent_still_serves_an_empty_gpu_list(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    config = AgentConfig(port=0, token=TOKEN, interval_s=0.2)
    with RunningAgent(config, FakeNvml(init_error=F.NVML_ERROR_DRIVER_NOT_LOADED)) as running:
        status, body, _ = _get(running.url + "/api/v1/sample", TOKEN)
    assert status == 200
    assert json.loads(body)["gpus"] == []
    assert any("no local GPUs" in r.getMessage() and "driver" in r.getMessage() for r in caplog.records)


def test_the_agent_modules_import_nothing_from_qt() -> None:
    code = (
        "import sys, console.agent.server, console.cli.agent\n"
        "import console.sources.nvml.source, console.sources.agent, console.cli.main\n"
        "console.cli.main.build_parser()\n"
        "qt = ('PySide6', 'shiboken6', 'pyqtgraph', 'widgets')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in qt)\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- TLS ----------------------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "agent.crt", tmp_path / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    config = AgentConfig(port=0, token=TOKEN, tls_cert=str(cert), tls_key=str(key))
    with RunningAgent(config, FakeNvml()) as running:
        assert running.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(cert))
        status, body, _ = _get(running.url + "/api/v1/sample", TOKEN, context=trusted)
        assert status == 200
        assert json.loads(body)["gpus"]
        with pytest.raises(urllib.error.URLError):  # the system trust store does not know this certificate
            _get(running.url + "/api/v1/sample", TOKEN, context=ssl.create_default_context())
        plain = running.url.replace("https://", "http://")
        with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
            _get(plain + "/api/v1/sample", TOKEN)

        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        ref = SecretRef(SecretKind.FILE, str(token_file))

        async def poll(**spec: Any) -> Any:
            source = AgentSource(_ctx(SourceKind.AGENT, url=running.url, token=ref, **spec))
            try:
                return await source.poll()
            except SourceError as exc:
                return exc
            finally:
                await source.aclose()

        unverified = asyncio.run(poll())
        assert isinstance(unverified, SourceError)
        assert unverified.failure is PollFailure.UNREACHABLE
        assert "TLS" in unverified.reason or "certificate" in unverified.reason
        assert asyncio.run(poll(ca_file=str(cert))).gpus
        assert asyncio.run(poll(verify_tls=False)).gpus  # turned off for this target by the inventory


# --- the client source --------------------------------------------------------------------------------------


def test_agent_source_reads_the_real_agent(agent: RunningAgent, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)

    async def go() -> tuple[Any, ...]:
        async with aiohttp.ClientSession() as http_session:
            spec = {"url": agent.url, "token": SecretRef(SecretKind.FILE, str(token_file))}
            ctx = _ctx(SourceKind.AGENT, **spec)
            source = AgentSource(SourceContext(ctx.node, ctx.site, ctx.spec, 3.0, http_session))
            first = await source.poll()
            agent.nvml.inject_event(0, F.nvmlEventTypeXidCriticalError, 48)
            deadline = time.monotonic() + 5
            events: list[GpuEvent] = []
            while not events and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                events += (await source.poll()).events
            again = await source.poll()
            wrong = AgentSource(_ctx(SourceKind.AGENT, url=agent.url, token=SecretRef(SecretKind.ENV, "NO_SUCH_VAR")))
            missing_token = await _failure(wrong)
            bad = tmp_path / "bad"
            bad.write_text("not-the-token-0123456789")
            refused = await _failure(
                AgentSource(_ctx(SourceKind.AGENT, url=agent.url, token=SecretRef(SecretKind.FILE, str(bad))))
            )
            return first, events, again, missing_token, refused

    first, events, again, missing_token, refused = asyncio.run(go())
    assert (first.node, first.site, first.source) == ("inventory-name", "inventory-site", "agent")
    assert first.gpus[0].uuid == "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
    assert [(e.kind, e.code) for e in events] == [(EventKind.XID, 48)]
    assert again.events == ()  # each event once
    assert missing_token.failure is PollFailure.AUTH_REFUSED
    assert refused.failure is PollFailure.AUTH_REFUSED


async def _failure(source: AgentSource) -> SourceError:
    try:
        with pytest.raises(SourceError) as info:
            await source.poll()
        return info.value
    finally:
        await source.aclose()


def test_agent_source_errors_unreachable_bad_json_schema_and_size() -> None:
    events_ok = {"epoch": "e1", "cursor": 0, "events": []}
    bodies: dict[str, Any] = {}

    async def sample(request: web.Request) -> web.Response:
        return web.Response(body=bodies["sample"], content_type="application/json")

    async def events(request: web.Request) -> web.Response:
        return web.json_response(events_ok)

    async def go() -> dict[str, SourceError]:
        app = web.Application()
        app.router.add_get("/api/v1/sample", sample)
        app.router.add_get("/api/v1/events", events)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        out = {}
        try:
            out["refused"] = await _failure(AgentSource(_ctx(SourceKind.AGENT, url=f"http://127.0.0.1:{free_port()}")))
            bodies["sample"] = b'{"schema": "gpu-console.sample/1", "node": "x", "time": 1.0, "gpus": [{"ind'
            out["truncated"] = await _failure(AgentSource(_ctx(SourceKind.AGENT, url=url)))
            doc = {
                "schema": "gpu-console.sample/1",
                "node": "x",
                "time": 1.0,
                "gpus": [{"index": 0, "uuid": 5}],
            }
            bodies["sample"] = json.dumps(doc).encode()
            out["schema"] = await _failure(AgentSource(_ctx(SourceKind.AGENT, url=url)))
            bodies["sample"] = b"[" * 5000 + b"]" * 5000
            out["big"] = await _failure(AgentSource(_ctx(SourceKind.AGENT, url=url), max_payload_bytes=4096))
        finally:
            await runner.cleanup()
        return out

    failures = asyncio.run(go())
    assert failures["refused"].failure is PollFailure.UNREACHABLE
    assert failures["truncated"].failure is PollFailure.BAD_PAYLOAD
    assert "invalid JSON" in failures["truncated"].reason
    assert failures["schema"].failure is PollFailure.BAD_PAYLOAD
    assert "gpus[0].uuid" in failures["schema"].reason
    assert failures["big"].failure is PollFailure.BAD_PAYLOAD
    assert "cap" in failures["big"].reason


# --- Prometheus ---------------------------------------------------------------------------------------------


def test_promtool_check_metrics_passes_on_the_agent_output(agent: RunningAgent) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian prometheus) is not installed")
    status, body, headers = _get(agent.url + "/metrics", TOKEN)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"DCGM_FI_DEV_GPU_TEMP" in body
    result = subprocess.run([promtool, "check", "metrics"], check=False, input=body, capture_output=True, timeout=30)
    report = result.stdout.decode() + result.stderr.decode()
    # Exit 1 is a parse error. Exit 3 is promtool's naming lint, which dcgm-exporter's own fixed names fail
    # too (camelCase `modelName`/`UUID` labels, counters without `_total`): accept only those findings.
    assert result.returncode in (0, 3), report
    assert "error while linting" not in report
    for line in filter(None, report.splitlines()):
        assert any(kind in line for kind in DCGM_EXPORTER_LINT), line


DCGM_EXPORTER_LINT = (
    "label names should be written in 'snake_case' not 'camelCase'",
    'counter metrics should have "_total" suffix',
    "metric name should not include type 'counter'",
)


def test_promtool_lint_of_the_real_dcgm_exporter_sample_has_the_same_kinds(fixtures_dir: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian prometheus) is not installed")
    body = (fixtures_dir / "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt").read_bytes()
    result = subprocess.run([promtool, "check", "metrics"], check=False, input=body, capture_output=True, timeout=30)
    lines = [line for line in (result.stdout + result.stderr).decode().splitlines() if line]
    assert result.returncode == 3
    assert lines
    assert all(any(kind in line for kind in DCGM_EXPORTER_LINT) for line in lines)


@pytest.mark.slow
def test_real_prometheus_scrapes_the_agent_with_the_bearer_token(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus (Debian package) is not installed")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with RunningAgent(AgentConfig(port=0, token=TOKEN, interval_s=0.5), FakeNvml()) as running:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: gpu-agent\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
            f"    authorization:\n      type: Bearer\n      credentials_file: {token_file}\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{running.server.port}']\n"
        )
        port = free_port()
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            up, temps = _wait_for_prometheus(port, deadline=time.monotonic() + 30)
        finally:
            process.terminate()
            try:
                _, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
        assert up == "1", stderr.decode()[-2000:]
        [series] = temps
        assert series["metric"]["UUID"] == "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
        assert float(series["value"][1]) == 59.0


def _wait_for_prometheus(port: int, deadline: float) -> tuple[str | None, list[dict[str, Any]]]:
    up: str | None = None
    temps: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            up_doc = _query(port, 'up{job="gpu-agent"}')
            temps = _query(port, "DCGM_FI_DEV_GPU_TEMP")
        except (OSError, ValueError):
            continue  # not listening yet
        up = up_doc[0]["value"][1] if up_doc else None
        if up == "1" and temps:
            break
    return up, temps


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=2) as response:
        result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
        return result


# --- issue 18: secrets in logs, lock-out by wrong tokens ----------------------------------------------------------


def test_an_oversized_header_is_logged_without_the_presented_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = AgentConfig(port=0, token=TOKEN, rate_per_s=1000.0, rate_burst=1000)
    with RunningAgent(config, FakeNvml([FakeGpu()])) as running:
        for header in ("Authorization", "X-Forwarded-Authorization"):
            with socket.create_connection(("127.0.0.1", running.server.port), timeout=5) as raw:
                bearer = f"Bearer {TOKEN}" + "A" * 20000
                raw.sendall(f"GET /api/v1/sample HTTP/1.1\r\nHost: x\r\n{header}: {bearer}\r\n\r\n".encode())
                assert raw.recv(200).split(b" ")[1] in (b"400", b"431")
        assert _get(running.url + "/api/v1/sample", TOKEN)[0] == 200
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert "Error handling request" in logged  # the refusal itself is still logged
    for prefix in (TOKEN, TOKEN[:12], TOKEN[:6]):
        assert prefix not in logged
    assert "Traceback" not in logged


def test_a_burst_of_wrong_tokens_does_not_lock_out_the_right_one() -> None:
    config = AgentConfig(port=0, token=TOKEN, rate_per_s=0.5, rate_burst=3)
    with RunningAgent(config, FakeNvml()) as running:
        guesses = [_get(running.url + "/api/v1/sample", f"guess-{n}")[0] for n in range(5)]
        assert guesses == [401, 401, 401, 429, 429]  # guessing is limited
        assert _get(running.url + "/api/v1/sample", TOKEN)[0] == 200  # the right token still gets in
