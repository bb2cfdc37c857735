"""The dcgm-exporter source: scrape a Prometheus text endpoint and map DCGM series to the normalized sample.

Works against NVIDIA's dcgm-exporter (any release: ``Hostname`` or ``hostname``, ``UUID`` or ``uuid``, old or
2026-renamed field names), our own node agent's ``/metrics`` and ``gpu-console simulate``. The mapping rules
(identity, MIG, sentinels, Xids) are in ``console.sources.dcgm_mapping``; a node's repeat payloads take the
fast path in ``console.sources.dcgm_template``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from console.exposition import Exposition, ExpositionError, ExpositionParser
from console.schema import NodeSample
from console.sources.base import PollFailure, SourceContext, SourceError
from console.sources.dcgm_mapping import SOURCE_NAME, Route, XidMemory, map_and_route, map_dcgm_samples
from console.sources.dcgm_template import PayloadTemplate

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024
_HEADERS = {"Accept-Encoding": "gzip", "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
# Series timestamps further from the console's clock than this are a wrong clock, not data to chart.
MAX_FUTURE_SKEW_S = 300.0
MAX_SAMPLE_AGE_S = 3600.0


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400 * 365:
        return f"{seconds / (86400 * 365.25):.1f} years"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds:.0f} s"


def check_clock(sample_time: float, now: float) -> None:
    """Series stamped far from our clock cannot be charted or aged honestly: refuse them with the skew."""
    ahead = sample_time - now
    if ahead > MAX_FUTURE_SKEW_S:
        raise SourceError(
            PollFailure.BAD_PAYLOAD,
            f"series timestamps are {_span(ahead)} ahead of this console's clock (is the node's clock wrong?)",
        )
    if -ahead > MAX_SAMPLE_AGE_S:
        raise SourceError(
            PollFailure.BAD_PAYLOAD,
            f"series timestamps are {_span(-ahead)} old (stale exporter, or the node's clock is wrong)",
        )


def parse_dcgm_payload(
    text: str,
    node: str,
    site: str,
    now: float,
    previous: XidMemory | None = None,
    *,
    parser: ExpositionParser | None = None,
    source: str = SOURCE_NAME,
) -> NodeSample:
    """Map one dcgm-exporter payload to a ``NodeSample``; raises ``SourceError(BAD_PAYLOAD, reason)``.

    ``previous`` carries Xid state between polls, updated in place (without it every non-zero Xid is new).
    ``parser`` keeps its label cache between polls; ``now`` is used unless the series carry timestamps.
    """
    return map_dcgm_samples(_parse(text, parser).samples, node, site, now, previous, source=source)


def _parse(text: str, parser: ExpositionParser | None) -> Exposition:
    try:
        return (parser or ExpositionParser()).parse(text)
    except ExpositionError as exc:
        raise SourceError(PollFailure.BAD_PAYLOAD, f"not Prometheus text exposition: {exc}") from None


def parse_with_template(
    text: str,
    node: str,
    site: str,
    now: float,
    previous: XidMemory | None = None,
    *,
    parser: ExpositionParser | None = None,
    source: str = SOURCE_NAME,
) -> tuple[NodeSample, PayloadTemplate | None]:
    """``parse_dcgm_payload``, plus the payload's template for the node's next payloads (``None``: no template)."""
    exposition = _parse(text, parser)
    routes: list[Route | None] = []
    mapping = map_and_route(exposition.samples, now, previous, node=node, site=site, source=source, routes=routes)
    return mapping.sample, PayloadTemplate.build(text, exposition.samples, routes, mapping)


def _ssl_setting(verify_tls: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    if not verify_tls:
        return False
    if ca_file:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA file {ca_file!r}: {exc}") from exc
    return True


class DcgmSource:
    """Scrapes one dcgm-exporter endpoint with the poller's shared aiohttp session."""

    def __init__(self, ctx: SourceContext, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if not ctx.spec.url:
            raise ValueError("a dcgm source needs a url (e.g. http://host:9400/metrics)")
        self._ctx = ctx
        self._url = ctx.spec.url
        self._max_bytes = max_payload_bytes
        self._ssl = _ssl_setting(ctx.spec.verify_tls, ctx.spec.ca_file)
        self._parser = ExpositionParser()
        self._template: PayloadTemplate | None = None  # the last payload's shape: the next one is likely the same
        self._memory = XidMemory()
        self._own_session: aiohttp.ClientSession | None = None
        self._timeout: aiohttp.ClientTimeout | None = None
        # dcgm-exporter collects every 30 s by default, so most 1 Hz scrapes return the same bytes: remember the
        # last payload and its sample and skip a repeat (the comparison is a C-level memcmp).
        self._last_text: str | None = None
        self._last_sample: NodeSample | None = None
        self._last_stamped = False  # the series carried the exporter's own timestamps

    async def _session(self) -> aiohttp.ClientSession:
        if self._ctx.http is not None:
            return self._ctx.http
        if self._own_session is None:  # e.g. `probe`, which polls once without a poller
            import aiohttp

            self._own_session = aiohttp.ClientSession()
        return self._own_session

    async def _auth(self) -> Any:
        spec = self._ctx.spec
        if not spec.user or spec.password is None:
            return None
        import aiohttp

        from console.secrets import SecretError, resolve_secret

        try:
            # keyring may block: keep it off the event loop
            password = await asyncio.to_thread(resolve_secret, spec.password)
        except SecretError as exc:
            raise SourceError(PollFailure.AUTH_REFUSED, f"cannot read the password: {exc}") from None
        return aiohttp.BasicAuth(spec.user, password)

    async def fetch(self) -> str:
        """GET the payload (gzip accepted), capped at ``max_payload_bytes`` after decompression."""
        import aiohttp

        session = await self._session()
        auth = await self._auth()
        if self._timeout is None:
            self._timeout = aiohttp.ClientTimeout(total=self._ctx.timeout_s)
        try:
            async with session.get(
                self._url, headers=_HEADERS, ssl=self._ssl, timeout=self._timeout, auth=auth, allow_redirects=True
            ) as response:
                if response.status in (401, 403):
                    raise SourceError(PollFailure.AUTH_REFUSED, f"HTTP {response.status} {response.reason or ''}")
                if response.status != 200:
                    raise SourceError(PollFailure.UNREACHABLE, f"HTTP {response.status} {response.reason or ''}")
                declared = response.content_length
                plain = not response.headers.get("Content-Encoding")
                if declared is not None and declared > self._max_bytes and plain:
                    raise SourceError(PollFailure.BAD_PAYLOAD, self._oversize())
                if declared is not None and plain:
                    # The size is known and within the cap: one read, not a loop of chunks (a fifth of a poll's
                    # CPU at 1,000 nodes a second).
                    body: bytes | bytearray = await response.read()
                else:  # chunked or compressed: count as it arrives, so a bomb stops at the cap
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise SourceError(PollFailure.BAD_PAYLOAD, self._oversize())
        except SourceError:
            raise
        except TimeoutError:
            raise SourceError(PollFailure.TIMEOUT, f"no answer within {self._ctx.timeout_s:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise SourceError(PollFailure.UNREACHABLE, f"TLS certificate rejected: {exc.certificate_error}") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, socket.gaierror):
                raise SourceError(PollFailure.UNREACHABLE, f"cannot resolve {exc.host}: {exc.os_error}") from None
            raise SourceError(PollFailure.UNREACHABLE, f"cannot connect: {exc.os_error}") from None
        except aiohttp.ServerDisconnectedError:
            raise SourceError(PollFailure.UNREACHABLE, "the server closed the connection") from None
        except aiohttp.ClientPayloadError as exc:
            raise SourceError(PollFailure.BAD_PAYLOAD, f"truncated or corrupt response body: {exc}") from None
        except aiohttp.ClientResponseError as exc:
            raise SourceError(PollFailure.UNREACHABLE, f"bad HTTP response: {exc.message}") from None
        except aiohttp.InvalidURL:
            raise SourceError(PollFailure.UNREACHABLE, f"invalid URL {self._url!r}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SourceError(PollFailure.UNREACHABLE, f"{type(exc).__name__}: {exc}") from None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(PollFailure.BAD_PAYLOAD, f"payload is not UTF-8 (byte {exc.start})") from None

    def _oversize(self) -> str:
        limit = self._max_bytes
        size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit / 2**10:g} KiB"
        return f"payload larger than the {size} cap; refused"

    async def poll(self) -> NodeSample:
        text = await self.fetch()
        now = time.time()
        last = self._last_sample
        if last is not None and text == self._last_text:
            # The exporter has not collected since: the very same sample object, which tells the poller that
            # this poll brought nothing new (``PollResult.fresh``): no values to chart again, no Xid twice.
            if self._last_stamped:
                check_clock(last.time, now)
            return last
        node, site = self._ctx.node.name, self._ctx.site.name
        sample = None
        if self._template is not None:
            sample = self._template.sample(text, now, self._memory, node=node, site=site, source=SOURCE_NAME)
        if sample is None:
            sample, self._template = parse_with_template(text, node, site, now, self._memory, parser=self._parser)
            if self._template is not None:
                # The parser's caches (a tuple and a labels dict per series) only speed up full parses, which are
                # rare once a template exists; at 1,000 nodes they were 300,000 objects for every full garbage
                # collection to scan.
                self._parser = ExpositionParser()
        check_clock(sample.time, now)  # live scrapes only: parse_dcgm_payload also reads old captures
        self._last_text, self._last_sample, self._last_stamped = text, sample, sample.time != now
        return sample

    async def aclose(self) -> None:
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None


def make_source(ctx: SourceContext) -> DcgmSource:
    return DcgmSource(ctx)


__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DcgmSource",
    "XidMemory",
    "make_source",
    "map_dcgm_samples",
    "parse_dcgm_payload",
]
