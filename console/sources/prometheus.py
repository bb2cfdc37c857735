"""Prometheus source (kind ``prometheus``): a whole site read through a Prometheus-compatible HTTP API.

GPU clouds already scrape dcgm-exporter into Prometheus (or Thanos, VictoriaMetrics, Mimir). Instead of polling
every node again, the console asks that server: one instant query (``/api/v1/query``) per DCGM metric for the
whole site, grouped by the ``Hostname``/``hostname`` label (``instance`` when neither exists) into one
``NodeSample`` per node, and range queries (``/api/v1/query_range``) to backfill charts after a start and to fill
incident evidence.

Each query aggregates with ``max by (__name__, <identity labels>)``: duplicate scrapes (two jobs, HA pairs)
collapse into one series, and the scrape's ``job`` label never reaches the wire (pod and ``hpc_job`` labels do:
they are the GPU's workload). The grouped series are
mapped by ``map_dcgm_samples``, the same mapping a scrape goes through, so a node read through Prometheus means
exactly what the same node scraped directly means (units, MIG, blanks, Xid events). A node whose target is down
has no live series (Prometheus marks them stale within a scrape) and its poll fails with the reason.

Each query carries the site's ``selector`` (inventory, e.g. ``{job="dcgm", cluster="ord1"}``), so sites sharing
one Prometheus read only their own series. One more query asks each host's newest scrape time (``timestamp()``):
samples carry the exporter's own time, and a host not scraped since the last read is returned as the very same
sample object, a repeat the poller never charts or evaluates twice.

Sharing: ``make_source`` is called once per node, but one ``PrometheusSiteReader`` per site and URL serves them all.
Under the poller the reader is the site's one collector (``shared_collector``): the poller reads it once per
interval, never two reads at once, stretching the interval when a read takes longer, and a failed read is one
``collector_down`` for ``prometheus@SITE``; the nodes' polls only look at the latest outcome (a node is unknown
while the collector is down, unreachable only when Prometheus has no live series for it). Outside the poller (a
probe, a test) a node's poll starts a shared read on demand, whose result lives for one interval. The readers are
kept per poller HTTP session (the only object the poller shares between sources), in a weak mapping, so they end
with the poller.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from typing import Any

import aiohttp

from console.samples.results import PollFailure, SourceError
from console.samples.schema import NodeSample
from console.sources.base import (
    HttpSession,
    SourceContext,
    tls_setting,
)
from console.sources.prometheus_queries import (
    METRIC_GROUPS,
    instant_query,
    node_query,
)
from console.sources.prometheus_site import (
    PrometheusSiteReader,
    SiteRead,
    check_url,
)

log = logging.getLogger(__name__)

# --- the per-node source ------------------------------------------------------------------------------------

_ReaderKey = tuple[Any, ...]
_READERS: weakref.WeakKeyDictionary[aiohttp.ClientSession, dict[_ReaderKey, PrometheusSiteReader]]
_READERS = weakref.WeakKeyDictionary()


def shared_reader(ctx: SourceContext, http: aiohttp.ClientSession) -> PrometheusSiteReader:
    """The site reader of ``ctx.spec.url`` for this HTTP session, created on first use."""
    spec = ctx.spec
    # Credentials and headers are part of the key: two tenants of one Mimir (X-Scope-OrgID) are two readers.
    key = (
        spec.url or "",
        spec.verify_tls,
        spec.ca_file,
        ctx.site.name,
        ctx.site.selector,
        spec.headers,
        spec.user,
        spec.password,
        spec.token,
    )
    readers = _READERS.setdefault(http, {})
    reader = readers.get(key)
    if reader is None:
        interval = ctx.node.interval_s if ctx.node.interval_s is not None else ctx.site.interval_s
        reader = readers[key] = PrometheusSiteReader(
            spec.url or "",
            http,
            site=ctx.site.name,
            timeout_s=ctx.timeout_s,
            # a little under one interval: every node's poll within an interval shares one read
            ttl_s=interval * 0.9,
            ssl=tls_setting(spec.verify_tls, spec.ca_file),
            headers=dict(spec.headers),
            user=spec.user,
            password=spec.password,
            token=spec.token,
            selector=ctx.site.selector,
        )
    return reader


class PrometheusSource:
    """One node of a site read through Prometheus; its series carry ``options.host`` (default: the node name)."""

    def __init__(self, ctx: SourceContext) -> None:
        if not ctx.spec.url:
            raise ValueError("a prometheus source needs url (the server's base URL, e.g. http://prometheus:9090)")
        check_url(ctx.spec.url)  # a malformed URL fails when the inventory is loaded, not at every poll
        self._ctx = ctx
        self.host = ctx.spec.option("host", ctx.node.name) or ctx.node.name
        self._http = HttpSession(ctx.http)
        self._reader: PrometheusSiteReader | None = None
        self._last_serial = 0
        self._last_read: NodeSample | None = None  # the reader's sample last returned, and what it became here
        self._last_out: NodeSample | None = None
        self._backfilled_serial = 0
        self._earlier: tuple[NodeSample, ...] = ()

    @property
    def shared_collector(self) -> PrometheusSiteReader:
        """The one reader of the site: the poller drives it once per interval for all the site's nodes."""
        return self.reader

    @property
    def reader(self) -> PrometheusSiteReader:
        if self._reader is None:
            # without the poller's session (a test): a session and reader of its own, closed in aclose()
            self._reader = shared_reader(self._ctx, self._http.get())
        return self._reader

    async def poll(self) -> NodeSample:
        reader = self.reader
        if reader.driven:
            return self._from_driven(reader)
        read = await reader.site_read()
        sample = read.samples.get(self.host)
        if sample is None:
            raise SourceError(
                PollFailure.UNREACHABLE,
                f"{self.reader.url} has no live DCGM series for {self.host!r} "
                f"(target down or stale, or its Hostname label differs: set options.host)",
            )
        if sample.node != self._ctx.node.name or sample.site != self._ctx.site.name:
            sample = dataclasses.replace(sample, node=self._ctx.node.name, site=self._ctx.site.name)
        if read.serial == self._last_serial:
            sample = _without_events(sample)  # the same read again: its events were already reported
        self._last_serial = read.serial
        return sample

    def _from_driven(self, reader: PrometheusSiteReader) -> NodeSample:
        """The node in the site's latest read; never a request of its own (the poller drives the reader)."""
        if reader.failure is not None:
            raise SourceError(PollFailure.COLLECTOR, f"the site's Prometheus is not answering: {reader.failure.reason}")
        read = reader.last_read
        if read is None:
            raise SourceError(PollFailure.COLLECTOR, f"waiting for the first read of {reader.url}")
        sample = read.samples.get(self.host)
        if sample is None:
            raise SourceError(
                PollFailure.UNREACHABLE,
                f"{reader.url} has no live DCGM series for {self.host!r} "
                f"(target down or stale, or its Hostname label differs: set options.host)",
            )
        if read.earlier and read.serial != self._backfilled_serial:
            self._backfilled_serial = read.serial
            self._earlier = tuple(self._as_node(old) for old in read.earlier.get(self.host, ()))
        if sample is self._last_read and self._last_out is not None:
            return self._last_out  # the same measurement: the very object, so the poller counts it a repeat
        out = self._as_node(sample)
        self._last_read, self._last_out = sample, out
        return out

    def _as_node(self, sample: NodeSample) -> NodeSample:
        if sample.node != self._ctx.node.name or sample.site != self._ctx.site.name:
            return dataclasses.replace(sample, node=self._ctx.node.name, site=self._ctx.site.name)
        return sample

    def take_earlier(self) -> tuple[NodeSample, ...]:
        """The samples backfilled before the one ``poll`` just returned (oldest first), once."""
        earlier, self._earlier = self._earlier, ()
        return earlier

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel_reads()
        await self._http.aclose()


def _without_events(sample: NodeSample) -> NodeSample:
    return dataclasses.replace(sample, events=()) if sample.events else sample


def make_source(ctx: SourceContext) -> PrometheusSource:
    return PrometheusSource(ctx)


__all__ = [
    "METRIC_GROUPS",
    "PrometheusSiteReader",
    "PrometheusSource",
    "SiteRead",
    "check_url",
    "instant_query",
    "make_source",
    "node_query",
    "shared_reader",
]
