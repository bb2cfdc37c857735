"""The dcgm-exporter source: scrape a Prometheus text endpoint and map DCGM series to the normalized sample.

Works against NVIDIA's dcgm-exporter (any release: ``Hostname`` or ``hostname``, ``UUID`` or ``uuid``, old or
2026-renamed field names), our own node agent's ``/metrics`` and ``gpu-console simulate``. The mapping rules
(identity, MIG, sentinels, Xids) are in ``console.sources.dcgm.mapping``; a node's repeat payloads take the
fast path in ``console.sources.dcgm.template``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from console.samples.results import PollFailure, SourceError
from console.samples.schema import NodeSample
from console.sources.base import (
    HttpSession,
    SourceContext,
    http_failure,
    read_capped,
    resolve_secret_for_poll,
    tls_setting,
)
from console.sources.dcgm.mapping import SOURCE_NAME, Route, XidMemory, map_and_route, map_dcgm_samples
from console.sources.dcgm.template import PayloadTemplate
from console.sources.exposition import Exposition, ExpositionError, ExpositionParser

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
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


class DcgmSource:
    """Scrapes one dcgm-exporter endpoint with the poller's shared aiohttp session."""

    def __init__(self, ctx: SourceContext, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if not ctx.spec.url:
            raise ValueError("a dcgm source needs a url (e.g. http://host:9400/metrics)")
        self._ctx = ctx
        self._url = ctx.spec.url
        self._max_bytes = max_payload_bytes
        self._ssl = tls_setting(ctx.spec.verify_tls, ctx.spec.ca_file)
        self._parser = ExpositionParser()
        self._template: PayloadTemplate | None = None  # the last payload's shape: the next one is likely the same
        self._memory = XidMemory()
        self._http = HttpSession(ctx.http)
        self._timeout: aiohttp.ClientTimeout | None = None
        # dcgm-exporter collects every 30 s by default, so most 1 Hz scrapes return the same bytes: remember the
        # last payload and its sample and skip a repeat (the comparison is a C-level memcmp).
        self._last_text: str | None = None
        self._last_sample: NodeSample | None = None
        self._last_stamped = False  # the series carried the exporter's own timestamps

    async def _auth(self) -> Any:
        spec = self._ctx.spec
        if not spec.user or spec.password is None:
            return None
        import aiohttp

        password = await resolve_secret_for_poll(spec.password, "cannot read the password")
        return aiohttp.BasicAuth(spec.user, password)

    async def fetch(self) -> str:
        """GET the payload (gzip accepted), capped at ``max_payload_bytes`` after decompression."""
        import aiohttp

        session = self._http.get()
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
                body = await read_capped(response, self._max_bytes, self._oversize)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise http_failure(exc, "", self._ctx.timeout_s) from None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(PollFailure.BAD_PAYLOAD, f"payload is not UTF-8 (byte {exc.start})") from None

    def _oversize(self, _declared: int | None = None) -> str:
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
        await self._http.aclose()


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
