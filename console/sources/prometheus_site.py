"""The site reader behind the ``prometheus`` source: one object per Prometheus server and site that reads every
node of the site at once (see ``console.sources.prometheus`` for the model, ``prometheus_tiers`` for what one
refresh asks for)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from console.config.fleet import SecretRef
from console.samples.results import SourceError
from console.samples.schema import NodeSample
from console.samples.series import Series
from console.sources.base import (
    basic_auth_header,
    http_failure,
    read_capped,
    resolve_secret_for_poll,
)
from console.sources.dcgm import names
from console.sources.dcgm.mapping import XidMemory, map_dcgm_samples
from console.sources.exposition import Sample
from console.sources.prometheus_queries import (
    METRIC_GROUPS,
    fit_step,
    host_of,
    instant_query,
    node_query,
    site_matchers,
)
from console.sources.prometheus_results import api_data, matrix_rows, result_of, vector_rows
from console.sources.prometheus_tiers import Query, SiteTiers

log = logging.getLogger(__name__)

SOURCE_NAME = "prometheus"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_CONCURRENCY = 8
# Backfill: the first read and the first after a gap bring the minutes before them, at dcgm-exporter's usual
# scrape interval (a finer step would only repeat points), so charts and evidence start full.
BACKFILL_S = 10 * 60.0
BACKFILL_GAP_S = 60.0
BACKFILL_STEP_S = 15.0
BACKFILL_WAIT_S = 3.0


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"prometheus url must be http(s)://host[:port][/prefix], got {url!r}")


class _LabelSets:
    """One labels dict per distinct label set (without ``__name__``), as the exposition parser hands them out:
    the DCGM mapping resolves each dict to its GPU once, not once per series."""

    def __init__(self) -> None:
        self._known: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

    def sample(self, labels: Mapping[str, str], value: float) -> Sample:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))
        shared = self._known.get(key)
        if shared is None:
            shared = self._known[key] = dict(key)
        return (labels["__name__"], shared, value, None)


@dataclass(slots=True)
class SiteRead:
    """One read of the whole site: the time it was taken and a sample per node."""

    at: float  # time.monotonic() when the read finished
    samples: dict[str, NodeSample]
    serial: int  # grows with each read: lets a source tell a new read from one it already returned
    # The minutes before this read, from range queries, oldest first: after the first read and after a gap
    # (charts and incident evidence start full instead of empty). Empty on every other read.
    earlier: dict[str, tuple[NodeSample, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class _NodeState:
    memory: XidMemory = field(default_factory=XidMemory)
    exporter_time: float = math.nan  # the newest sample time Prometheus had for this node at the last read
    sample: NodeSample | None = None  # what that read gave: returned again (the same object) while it is the newest


class PrometheusSiteReader:
    """Reads all nodes of one Prometheus-compatible server. Safe to share between the nodes of a site."""

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        site: str = "",
        timeout_s: float = 10.0,
        ttl_s: float = 0.0,
        ssl: bool | Any = True,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_bytes: int = DEFAULT_MAX_BYTES,
        headers: Mapping[str, str] | None = None,
        user: str | None = None,
        password: SecretRef | None = None,
        token: SecretRef | None = None,
        selector: str = "",
    ) -> None:
        check_url(url)
        self._headers = dict(headers or {})
        self._user = user
        self._password = password
        self._token = token
        self.url = url.rstrip("/")
        self.site = site
        self.selector = selector
        self._matchers = site_matchers(selector)
        # Driven by the poller (one read per interval for the whole site): nodes then only look at the latest
        # outcome, never start a read. Undriven (a probe, a test), a node's poll starts a shared read on demand.
        self.driven = False
        self.failure: SourceError | None = None  # the latest driven read's failure; None after a good read
        self._last_good_wall: float | None = None  # time.time() when the last good driven read started
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.ttl_s = ttl_s
        self._ssl = ssl
        self._limit = asyncio.Semaphore(concurrency)
        self._backfill_limit = asyncio.Semaphore(concurrency)  # a backfill beside a live read never slows it
        self._max_bytes = max_bytes
        self._nodes: dict[str, _NodeState] = {}
        self._tiers = SiteTiers(matchers=self._matchers)
        self._last: SiteRead | None = None
        self._reading: asyncio.Task[SiteRead] | None = None
        self._serial = 0
        self.queries = 0  # HTTP requests made (tests and benchmarks check the sharing)

    # -- HTTP ----

    async def _api(self, path: str, params: Mapping[str, str], limit: asyncio.Semaphore | None = None) -> Any:
        """GET an API endpoint and return ``data``; every failure is a ``SourceError`` with a reason."""
        url = f"{self.url}{path}"
        self.queries += 1
        headers = {**self._headers, **await self._credentials()}
        async with limit or self._limit:
            try:
                request = self._http.get(url, params=params, headers=headers, timeout=self._timeout, ssl=self._ssl)
                async with request as response:
                    body = await read_capped(response, self._max_bytes, lambda _size: self._oversize(url))
                    status, reason = response.status, response.reason or ""
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise http_failure(exc, url, self._timeout.total) from None
        return api_data(url, status, reason, body)

    async def _credentials(self) -> dict[str, str]:
        """Basic auth or a bearer token, read at each use (a rotated secret is picked up without a restart)."""
        if self._token is not None:
            return {"Authorization": f"Bearer {await resolve_secret_for_poll(self._token, 'token')}"}
        if self._user is not None and self._password is not None:
            secret = await resolve_secret_for_poll(self._password, "password")
            return {"Authorization": basic_auth_header(self._user, secret)}
        return {}

    def _oversize(self, url: str) -> str:
        return f"{url}: answer larger than {self._max_bytes} B"

    async def _query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = await self._api("/api/v1/query", params)
        return result_of(data, "vector", f"{self.url}/api/v1/query")

    async def _query_range(
        self, promql: str, since: float, until: float, step: float, *, backfill: bool = False
    ) -> list[dict[str, Any]]:
        params = {"query": promql, "start": f"{since:.3f}", "end": f"{until:.3f}", "step": f"{step:g}"}
        data = await self._api("/api/v1/query_range", params, self._backfill_limit if backfill else None)
        return result_of(data, "matrix", f"{self.url}/api/v1/query_range")

    # -- live values ----

    async def read_site(self) -> dict[str, NodeSample]:
        """A sample per node from the newest values (one query per metric); at most one read in flight."""
        return (await self.site_read()).samples

    async def site_read(self, max_age_s: float | None = None) -> SiteRead:
        """The last read while younger than ``max_age_s`` (default: the reader's TTL), else a new one.

        Callers that time out stop waiting; the read itself carries on (shielded) for the others.
        """
        max_age = self.ttl_s if max_age_s is None else max_age_s
        last = self._last
        if last is not None and time.monotonic() - last.at < max_age:
            return last
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_and_publish())
        return await asyncio.shield(self._reading)

    async def _read(self) -> SiteRead:
        started = time.time()
        tiers = self._tiers
        plan = tiers.plan(started)
        answers: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        hot_answers: list[tuple[Query, list[dict[str, Any]]]] = []
        for query, result in zip(plan, await _all_or_first_error(*(self._query(q.promql) for q in plan)), strict=True):
            answers[query.kind].append(result)
            if query.kind == "hot":
                hot_answers.append((query, result))
        where = f"{self.url}/api/v1/query"
        if answers["identity"]:
            tiers.learn_identity(answers["identity"][0], where, started)
        hot = tiers.hot_series(hot_answers, where)
        if answers["slow"]:
            tiers.hold_slow(answers["slow"][0], hot.used, where)
        elif hot.unknown - tiers.unmapped:
            # A GPU the identity does not know (a new node, a replaced GPU): a full read now, not at the next slow
            # read, so it is never shown without its model, limits, workload or zero counters.
            tiers.forget_identity()
            return await self._read()
        tiers.unmapped = frozenset(hot.unknown)  # asked about once; again at the next slow read
        series = tiers.add_held(hot, answers["watched"][0] if answers["watched"] else None, where)
        newest: dict[str, float] = {}
        for labels, value in vector_rows(answers["anchor"][0], where, named=False):
            host = host_of(labels)
            if host is not None:
                newest[host] = max(newest.get(host, 0.0), value)
        samples: dict[str, NodeSample] = {}
        for host, node_series in series.items():
            state = self._nodes.setdefault(host, _NodeState())
            exporter_time = newest.get(host) or started
            if state.sample is not None and exporter_time == state.exporter_time:
                samples[host] = state.sample  # nothing scraped since the last read: a repeat, never a new point
                continue
            try:
                sample = map_dcgm_samples(node_series, host, self.site, exporter_time, state.memory, source=SOURCE_NAME)
            except SourceError:
                continue  # series without a GPU UUID (e.g. NVSwitch) for this host: not a GPU node
            state.exporter_time, state.sample = exporter_time, sample
            samples[host] = sample
        for gone in set(self._nodes) - set(series):
            del self._nodes[gone]  # bounded: hosts that left the site release their state
        self._serial += 1
        return SiteRead(at=time.monotonic(), samples=samples, serial=self._serial)

    async def _read_and_publish(self) -> SiteRead:
        read = self._last = await self._read()
        return read

    def watch(self, hosts: Iterable[str]) -> None:
        """Hosts whose detail fields (clocks, profiling, traffic) are read at every refresh, not every
        ``SLOW_EVERY_S``: the nodes an operator is looking at and those with open incidents."""
        self._tiers.watched = frozenset(hosts)

    # -- driven by the poller: one collector for the site ----

    @property
    def last_read(self) -> SiteRead | None:
        return self._last

    @property
    def collector_name(self) -> str:
        """The name the site's collector has in results and incidents (it is no node of the inventory)."""
        return f"prometheus@{self.site}" if self.site else f"prometheus {self.url}"

    @property
    def collector_label(self) -> str:
        return f"{SOURCE_NAME} {self.url}"

    async def collect(self, timeout_s: float) -> SiteRead:
        """One read of the whole site for the poller; a failure is kept for every node and raised. ``timeout_s``
        bounds each request: a big site's read may take longer than a node's poll timeout and still be good.
        The first read, and the first after a gap, carry the minutes before them (``SiteRead.earlier``)."""
        self.driven = True
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        started = time.time()
        previous = self._last_good_wall
        backfill: asyncio.Task[dict[str, tuple[NodeSample, ...]]] | None = None
        if previous is None or started - previous > BACKFILL_GAP_S:
            since = started - BACKFILL_S if previous is None else max(previous, started - BACKFILL_S)
            backfill = asyncio.ensure_future(self._earlier(since, started))  # beside the read, not after it
        try:
            read = await self._read()
        except SourceError as exc:
            self.failure = exc
            if backfill is not None:
                backfill.cancel()
                await asyncio.gather(backfill, return_exceptions=True)
            raise
        except BaseException:
            if backfill is not None:
                backfill.cancel()
            raise
        self.failure = None
        self._last_good_wall = started
        if backfill is not None:
            read.earlier = await self._wait_for_backfill(backfill, time.time() - started)
        self._last = read  # published with its backfill: a node polled in between would miss the minutes before
        return read

    async def _wait_for_backfill(
        self, backfill: asyncio.Task[dict[str, tuple[NodeSample, ...]]], read_s: float
    ) -> dict[str, tuple[NodeSample, ...]]:
        """At most as long again as the read took (BACKFILL_WAIT_S at least): the live values never wait long."""
        try:
            return await asyncio.wait_for(backfill, max(BACKFILL_WAIT_S, read_s))
        except TimeoutError:
            log.warning("%s: backfill took longer than the read itself; charts start empty", self.collector_name)
            return {}

    async def _earlier(self, since: float, until: float) -> dict[str, tuple[NodeSample, ...]]:
        """The site's samples in ``[since, until)`` by range queries; a failure only costs the backfill."""
        try:
            history = await self.site_history(since, until - BACKFILL_STEP_S / 2, BACKFILL_STEP_S)
        except SourceError as exc:
            log.warning("%s: no backfill of the minutes before this read: %s", self.collector_name, exc.reason)
            return {}
        return {host: tuple(samples) for host, samples in history.items() if samples}

    def cancel_reads(self) -> None:
        """Shutting down: an on-demand read still running must end with its loop, not be destroyed pending."""
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()

    # -- history ----

    async def backfill(self, node: str, metric: str, since: float, until: float, step: float) -> dict[str, Series]:
        """One GPU metric of one node over ``[since, until]``: a ``Series(t, y)`` per GPU UUID.

        ``metric`` is a ``GpuSample`` field with a DCGM counterpart (``temperature_c``, ``power_w``, ...) or
        ``throttle_mask``; values are in the schema's units, NaN where Prometheus has no point.
        """
        field_name = "throttle_reasons" if metric == "throttle_mask" else metric
        group = METRIC_GROUPS.get(field_name)
        if group is None or field_name.startswith("_") or field_name in ("xid_count",):
            raise ValueError(f"no DCGM metric feeds {metric!r}")
        step = fit_step(since, until, step)
        result = await self._query_range(node_query(group, node, self._matchers), since, until, step)
        where = f"{self.url}/api/v1/query_range"
        grid = np.arange(since, until + step / 2, step)
        out: dict[str, dict[float, float]] = defaultdict(dict)
        for labels, points in matrix_rows(result, where):
            uuid = labels.get("UUID") or labels.get("uuid")
            if not uuid or labels.get("GPU_I_ID"):
                continue
            convert = _numeric_converter(labels["__name__"], metric)
            column = out[uuid]
            for when, value in points:
                column[when] = convert(value)
        series: dict[str, Series] = {}
        for uuid, column in out.items():
            times = np.array(sorted(set(column) | set(grid.round(3).tolist())), dtype=np.float64)
            values = np.array([column.get(x, math.nan) for x in times.tolist()], dtype=np.float32)
            series[uuid] = Series(times, values)
        return series

    async def node_history(self, node: str, since: float, until: float, step: float) -> list[NodeSample]:
        """Every DCGM metric of one node at each step in ``[since, until]``: incident evidence after the fact."""
        queries = [node_query(group, node, self._matchers) for group in METRIC_GROUPS.values()]
        return (await self._history(queries, since, until, step, only=node)).get(node, [])

    async def site_history(self, since: float, until: float, step: float) -> dict[str, list[NodeSample]]:
        """Every node of the site at each step in ``[since, until]`` (one range query per metric group)."""
        queries = [instant_query(group, self._matchers) for group in METRIC_GROUPS.values()]
        return await self._history(queries, since, until, step, backfill=True)

    async def _history(
        self,
        queries: list[str],
        since: float,
        until: float,
        step: float,
        *,
        only: str | None = None,
        backfill: bool = False,
    ) -> dict[str, list[NodeSample]]:
        step = fit_step(since, until, step)
        results = await _all_or_first_error(
            *(self._query_range(query, since, until, step, backfill=backfill) for query in queries)
        )
        where = f"{self.url}/api/v1/query_range"
        by_host: dict[str, dict[float, list[Sample]]] = defaultdict(lambda: defaultdict(list))
        label_sets = _LabelSets()
        for result in results:
            for labels, points in matrix_rows(result, where):
                host = only if only is not None else host_of(labels)
                if host is None:
                    continue
                for t, value in points:
                    by_host[host][t].append(label_sets.sample(labels, value))
        history: dict[str, list[NodeSample]] = {}
        for host, by_time in by_host.items():
            memory = XidMemory()
            samples = history[host] = []
            for t in sorted(by_time):
                try:
                    samples.append(map_dcgm_samples(by_time[t], host, self.site, t, memory, source=SOURCE_NAME))
                except SourceError:
                    continue
        return history


async def _all_or_first_error(*queries: Coroutine[Any, Any, list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Every query's result; on the first failure the others are cancelled (a refused read sends no more
    requests, and nothing is left running to be destroyed pending) and that failure is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(query) for query in queries]
    except BaseExceptionGroup as failures:
        first = failures.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]


def _numeric_converter(name: str, metric: str) -> Any:
    if metric == "throttle_mask":
        return float
    entry = names.FIELD_BY_NAME.get(name)
    if entry is None:
        return float
    convert = entry[1]
    return lambda value: float(convert(value)) if math.isfinite(value) else math.nan
