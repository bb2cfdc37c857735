"""The node agent's HTTP server (aiohttp.web): this machine's NVML sample for Prometheus and for the console.

Routes:
    GET /metrics               dcgm-exporter names (``console.sources.dcgm.render``), for Prometheus
    GET /api/v1/sample         the normalized sample (``console.samples.schema.sample_to_json``)
    GET /api/v1/events?since=N Xid and other events after cursor N; ``epoch`` changes when the agent restarts
    GET /healthz               liveness, no data, no token needed

The source is sampled in the background every interval, so a scrape never waits on the driver and many
scrapers cost one NVML poll. Security: bearer token compared in constant time, 401 without detail, no
listening on a non-loopback address without a token, optional TLS, small request limits and a per-client rate
limit (429).
This module imports nothing from Qt: the agent runs on GPU nodes that have only the core dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import ssl
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from console.samples.codec import event_to_json, sample_to_json
from console.samples.results import SourceError
from console.samples.schema import GpuEvent, NodeSample
from console.sources.base import Source

log = logging.getLogger(__name__)

API_SAMPLE = "/api/v1/sample"
API_EVENTS = "/api/v1/events"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIN_TOKEN_LENGTH = 16
MAX_TRACKED_CLIENTS = 4096

MetricsRenderer = Callable[[Sequence[NodeSample]], str]


class AgentConfigError(ValueError):
    """A configuration the agent refuses to start with; the message says what to change."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    host: str = "127.0.0.1"
    port: int = 9400
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    interval_s: float = 1.0
    rate_per_s: float = 10.0  # sustained requests per second per client address
    rate_burst: int = 20
    max_request_line: int = 4096
    max_header_bytes: int = 4096  # per header field
    max_headers: int = 32
    event_buffer: int = 1000

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


def validate_config(config: AgentConfig) -> None:
    if not is_loopback(config.host) and not config.token:
        raise AgentConfigError(
            f"refusing to listen on {config.host} without a token: pass --token-file, or listen on 127.0.0.1"
        )
    if config.token is not None and len(config.token) < MIN_TOKEN_LENGTH:
        raise AgentConfigError(f"the token is too short: use at least {MIN_TOKEN_LENGTH} characters")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise AgentConfigError("TLS needs both --tls-cert and --tls-key")
    if not (math.isfinite(config.interval_s) and config.interval_s > 0):
        raise AgentConfigError("--interval must be a positive number of seconds")
    if not 0 <= config.port <= 65535:
        raise AgentConfigError("the port must be between 0 and 65535")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AgentConfigError(f"--listen expects HOST:PORT (e.g. 127.0.0.1:9400), got {text!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise AgentConfigError(f"--listen: unbalanced brackets in {text!r}")
        host = host[1:-1]
    elif ":" in host:
        raise AgentConfigError(f"--listen: write an IPv6 address in brackets, e.g. [::1]:9400, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise AgentConfigError(f"--listen: {port_text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise AgentConfigError(f"--listen: port {port} is out of range")
    return host, port


class EventLog:
    """A bounded buffer of events, each with a cursor that only grows; ``since`` tells when some dropped."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[tuple[int, GpuEvent]] = deque(maxlen=capacity)
        self._last = 0
        self.epoch = secrets.token_hex(8)  # a restarted agent starts cursors again: clients must notice

    @property
    def cursor(self) -> int:
        return self._last

    def extend(self, events: Sequence[GpuEvent]) -> None:
        for event in events:
            self._last += 1
            self._items.append((self._last, event))

    def since(self, cursor: int) -> tuple[list[tuple[int, GpuEvent]], bool]:
        oldest = self._items[0][0] if self._items else self._last + 1
        dropped = cursor + 1 < oldest and cursor < self._last
        return [(c, e) for c, e in self._items if c > cursor], dropped


class RateLimiter:
    """A token bucket per client address; the table of clients is bounded (least recently seen dropped)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """0 when the request may go ahead, else seconds until it could."""
        now = self._clock()
        tokens, seen = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - seen) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


def _default_renderer() -> MetricsRenderer:
    from console.sources.dcgm.render import render_dcgm_exposition

    renderer: MetricsRenderer = render_dcgm_exposition
    return renderer


class AgentServer:
    """Samples ``source`` every interval and serves the routes above. ``start()`` / ``stop()`` on one loop."""

    def __init__(self, config: AgentConfig, source: Source, *, render_metrics: MetricsRenderer | None = None) -> None:
        validate_config(config)
        self.config = config
        self._source = source
        self._render = render_metrics
        self._latest: NodeSample | None = None
        self._metrics_cache: tuple[NodeSample, bytes] | None = None
        self._events = EventLog(config.event_buffer)
        self._limiter = RateLimiter(config.rate_per_s, config.rate_burst)
        self._token = config.token.encode() if config.token else None
        self._sampler: asyncio.Task[None] | None = None
        self._stopping = False
        self._runner: web.AppRunner | None = None
        self._failing: str | None = None
        self.port: int = config.port

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{'https' if self.config.tls else 'http'}://{host}:{self.port}"

    # -- lifecycle ----

    async def start(self) -> None:
        if self._render is None:
            self._render = _default_renderer()
        ssl_context = self._ssl_context()
        await self._sample_once()  # the first answer is real data, never "no sample yet"
        app = web.Application(middlewares=[self._guard], client_max_size=1024)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get(API_SAMPLE, self._sample)
        app.router.add_get(API_EVENTS, self._events_route)
        app.router.add_get("/healthz", self._healthz)
        app.on_response_prepare.append(_hide_server_banner)
        _withhold_request_details()
        self._runner = web.AppRunner(
            app,
            access_log=None,
            max_line_size=self.config.max_request_line,
            max_field_size=self.config.max_header_bytes,
            max_headers=self.config.max_headers,
            keepalive_timeout=75.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        self._sampler = asyncio.create_task(self._sample_forever(), name="agent-sampler")
        log.info("agent listening on %s (token %s)", self.url, "required" if self._token else "not required")

    async def stop(self) -> None:
        self._stopping = True
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._source.aclose()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(self.config.tls_cert), str(self.config.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise AgentConfigError(f"cannot load the TLS certificate or key: {exc}") from None
        return context

    # -- sampling ----

    async def _sample_forever(self) -> None:
        interval = self.config.interval_s
        next_at = time.monotonic() + interval
        # The flag as well as the cancel: Python 3.11's wait_for can swallow a cancellation that lands just as
        # the poll finishes, and the sampler must still stop.
        while not self._stopping:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())  # skip ticks missed by a slow driver
            await self._sample_once()

    async def _sample_once(self) -> None:
        try:
            sample = await asyncio.wait_for(self._source.poll(), timeout=max(5.0, 2 * self.config.interval_s))
        except SourceError as exc:
            self._note_failure(f"{exc.failure}: {exc.reason}")
            return
        except TimeoutError:
            self._note_failure("the GPU driver did not answer in time")
            return
        except Exception as exc:  # a bug in a source must not stop the sampler: keep serving the last sample
            log.exception("sampling crashed")
            self._note_failure(f"internal error: {exc}")
            return
        if self._failing is not None:
            log.info("sampling recovered")
            self._failing = None
        if not sample.gpus and self._latest is None:
            reason = getattr(self._source, "unavailable_reason", None)
            log.warning("no local GPUs%s: serving an empty GPU list", f" ({reason})" if reason else "")
        self._latest = sample
        self._events.extend(sample.events)

    def _note_failure(self, reason: str) -> None:
        if self._failing != reason:
            log.warning("sampling failed: %s", reason)
        self._failing = reason

    # -- middleware and routes ----

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        allowed = self._token is None or request.path == "/healthz" or self._authorized(request)
        # Wrong tokens spend a bucket of their own: a burst of guesses from an address (a misconfigured scraper
        # beside the console on a NAT) must not lock the right token out of that address.
        client = f"{request.remote or 'unknown'} {'allowed' if allowed else 'refused'}"
        wait = self._limiter.retry_after(client)
        if wait > 0:
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(math.ceil(wait))})
        if request.body_exists:
            return web.Response(status=413, text="Request Entity Too Large")
        if not allowed:
            return web.Response(status=401, text="Unauthorized", headers={"WWW-Authenticate": "Bearer"})
        response: web.StreamResponse = await handler(request)
        return response

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token)

    async def _metrics(self, request: web.Request) -> web.Response:
        sample = self._latest
        samples = [sample] if sample is not None else []
        cached = self._metrics_cache
        if cached is not None and sample is not None and cached[0] is sample:
            body = cached[1]
        else:
            assert self._render is not None
            body = self._render(samples).encode()
            if sample is not None:
                self._metrics_cache = (sample, body)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _sample(self, request: web.Request) -> web.Response:
        if self._latest is None:
            return web.json_response({"error": "no sample yet"}, status=503)
        return web.json_response(sample_to_json(self._latest), dumps=_dumps)

    async def _events_route(self, request: web.Request) -> web.Response:
        text = request.query.get("since", "0")
        if not text.isdigit() or len(text) > 18:
            return web.json_response({"error": "since: expected a non-negative integer cursor"}, status=400)
        events, dropped = self._events.since(int(text))
        body = {
            "epoch": self._events.epoch,
            "cursor": self._events.cursor,
            "dropped": dropped,
            "events": [{"cursor": c, **event_to_json(e)} for c, e in events],
        }
        return web.json_response(body, dumps=_dumps)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if self._failing is None else "degraded"})


class _NoRequestDetails(logging.Filter):
    """aiohttp logs a refused request (a header over the limit, a malformed line) with its traceback, and the
    exception's text quotes the offending bytes: part of a presented bearer token. Keep the fact, drop the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        exc = record.exc_info[1]
        record.msg = (
            f"{record.getMessage()}: {type(exc).__name__} (its details are left out of the log: they may quote "
            "request headers, credentials among them)"
        )
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


_REQUEST_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")


def _withhold_request_details() -> None:
    for name in _REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _NoRequestDetails) for existing in logger.filters):
            logger.addFilter(_NoRequestDetails())


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


async def _hide_server_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "gpu-console-agent"


def local_nvml_source(nvml: Any = None, *, timeout_s: float = 5.0) -> Source:
    """The NVML source for this machine, named after its host name."""
    import socket

    from console.config.fleet import Node, Site, SourceKind, SourceSpec
    from console.sources.base import SourceContext
    from console.sources.nvml.source import NvmlSource

    spec = SourceSpec(kind=SourceKind.NVML)
    node = Node(name=socket.gethostname(), site="local", sources=(spec,))
    ctx = SourceContext(node=node, site=Site(name="local", provider="local"), spec=spec, timeout_s=timeout_s)
    return NvmlSource(ctx, nvml=nvml)


async def run_agent(config: AgentConfig, *, nvml: Any = None) -> int:
    """Serve until SIGINT/SIGTERM; the exit code of ``gpu-console agent``."""
    import signal

    server = AgentServer(config, local_nvml_source(nvml))
    try:
        await server.start()
    except AgentConfigError as exc:
        await server.stop()
        print(f"gpu-console agent: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        await server.stop()
        print(
            f"gpu-console agent: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("agent stopping")
        await server.stop()
    return 0


def read_token_file(path: str) -> str:
    from console.config.fleet import SecretKind, SecretRef
    from console.config.secrets import SecretError, resolve_secret

    try:
        token = resolve_secret(SecretRef(SecretKind.FILE, path))
    except SecretError as exc:
        raise AgentConfigError(f"--token-file: {exc}") from None
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & 0o077:
            log.warning("token file %s is readable by other users; chmod 600 it", path)
    return token


__all__ = [
    "API_EVENTS",
    "API_SAMPLE",
    "AgentConfig",
    "AgentConfigError",
    "AgentServer",
    "EventLog",
    "RateLimiter",
    "is_loopback",
    "local_nvml_source",
    "parse_listen",
    "read_token_file",
    "run_agent",
    "validate_config",
]
