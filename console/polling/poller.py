"""The poller: every node on its own schedule, off the GUI thread, never two requests in flight per node.

One thread runs one asyncio loop; each node is one task that polls all of the node's sources concurrently, merges
what they return into one ``NodeSample``, hands a frozen ``PollResult`` to ``on_result`` and sleeps until its next
tick. A hard timeout bounds every poll; failures back off exponentially with jitter. Errors become data (a result
carrying the failure), never exceptions across threads.

A source may be served by a shared collector (a site read through Prometheus): the poller runs that collector as
one task of its own, one read per interval for all its nodes, and hands on the collector's own result (its
failure, its duration) under the collector's name; the nodes' polls then only read its latest outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from console.config.fleet import Fleet, Node, SourceSpec
from console.samples.results import PollFailure, PollResult, SourceError, SourceFailure
from console.samples.schema import NodeSample, merge_samples
from console.sources.base import Source, SourceContext

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
FIRST_POLL_COST_S = (
    0.003  # CPU seconds of a large node's first poll, whole app (scripts/bench/bench_poll.py --settle 0)
)
MAX_START_RAMP_S = 10.0
# A shared collector's read (a whole site through Prometheus) may take far longer than one node's poll timeout and
# still be good: it is bounded by this instead, and its interval stretches to what it takes.
COLLECTOR_READ_LIMIT_S = 120.0


class SharedCollector(Protocol):
    """One read that serves many nodes (a site's Prometheus). The poller runs it once per interval whatever the
    nodes do; the nodes' sources only look at its latest outcome (``driven``: set before any node polls)."""

    driven: bool

    @property
    def collector_name(self) -> str: ...

    @property
    def collector_label(self) -> str: ...

    async def collect(self, timeout_s: float) -> object: ...


@dataclass(frozen=True, slots=True)
class CollectorState:
    """The latest read of a shared collector: what ``poll``'s summary and the GUI's source status show."""

    name: str
    site: str
    reads: int
    failed_reads: int
    last_duration_s: float
    period_s: float  # the real refresh period: the interval, or the read's duration when that is longer
    error: str = ""


@dataclass(slots=True)
class PollerStats:
    polls: int = 0
    ok_polls: int = 0
    failed_polls: int = 0
    repeated_polls: int = 0  # answered with the same measurement as before (PollResult.fresh False)
    on_time_polls: int = 0
    latencies_s: list[float] = field(default_factory=list)
    collectors: dict[str, CollectorState] = field(default_factory=dict)


class _LastSamples:
    """What each of a node's sources returned last time, to tell a repeated measurement from a new one.

    A source answers a repeat with the very sample object it returned before (``DcgmSource`` does when the
    exporter serves the same bytes). When every source repeats, the poll is not fresh and carries the previous
    merged sample object; when only some repeat, their events are dropped so nothing is reported twice.
    """

    __slots__ = ("last", "merged")

    def __init__(self, count: int) -> None:
        self.last: list[NodeSample | None] = [None] * count
        self.merged: NodeSample | None = None

    def merge(self, outcomes: list[NodeSample | SourceFailure], *, complete: bool) -> tuple[NodeSample | None, bool]:
        samples: list[NodeSample] = []
        repeats = 0
        for position, outcome in enumerate(outcomes):
            if isinstance(outcome, SourceFailure):
                continue  # a source that answers again with its old sample after a failure is still repeating
            if outcome is self.last[position]:
                repeats += 1
                samples.append(dataclasses.replace(outcome, events=()) if outcome.events else outcome)
            else:
                self.last[position] = outcome
                samples.append(outcome)
        if complete and samples and repeats == len(samples):
            if self.merged is None:  # back after a failed poll with the measurement from before it: not news
                self.merged = merge_samples(samples)
            return self.merged, False
        self.merged = merge_samples(samples) if samples else None
        return self.merged, True


SourceMaker = Callable[[SourceContext], Source]
ResultSink = Callable[[PollResult], None]


def backoff_delay(interval_s: float, consecutive_failures: int, rng: random.Random) -> float:
    """Delay before the next poll of a failing node: interval doubled per failure, capped, with +-20 % jitter."""
    if consecutive_failures <= 0:
        return interval_s
    delay = min(interval_s * 2 ** min(consecutive_failures, 16), max(MAX_BACKOFF_S, interval_s))
    return delay * rng.uniform(0.8, 1.2)


def start_ramp_s(node_count: int) -> float:
    """How long a fleet's first polls take to spread over at least: ``FIRST_POLL_COST_S`` per node, at most
    ``MAX_START_RAMP_S``. A node's first poll costs a few times a later one (its payload is parsed in full and every
    view meets its GPUs for the first time): a thousand of them in one second put the whole app seconds behind."""
    return min(MAX_START_RAMP_S, node_count * FIRST_POLL_COST_S)


def first_poll_fractions(node_count: int, rng: random.Random) -> list[float]:
    """Where in its start stretch each node's first poll falls: evenly spread, jittered, in random order (a uniform
    draw per node clusters some of them)."""
    fractions = [(i + rng.random()) / node_count for i in range(node_count)]
    rng.shuffle(fractions)
    return fractions


class Poller:
    """Owns the polling thread. ``start()``, then ``stop()`` from any thread; results arrive via ``on_result``."""

    def __init__(
        self,
        fleet: Fleet,
        make_source: SourceMaker,
        on_result: ResultSink,
        *,
        http_connection_limit: int | None = None,
        seed: int | None = None,
    ) -> None:
        self._fleet = fleet
        self._make_source = make_source
        self._on_result = on_result
        # One kept-alive connection per node: a smaller pool makes nodes queue for a socket and churn connections.
        self._http_limit = http_connection_limit or max(256, 2 * len(fleet.nodes))
        self._rng = random.Random(seed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self.stats = PollerStats()
        self._stats_lock = threading.Lock()
        self._collector_tasks: dict[int, asyncio.Task[None]] = {}

    # -- lifecycle ----

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("poller already started")
        self._thread = threading.Thread(target=self._run, name="gpu-console-poller", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every node task to finish, close sources and join the thread."""
        if self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("poller thread did not stop within %.1f s", timeout_s)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop ----

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception:  # a bug in the poller itself: log it, never take the app down silently
            log.exception("poller loop crashed")
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        http = await self._open_http()
        self._ready.set()
        try:
            nodes = self._fleet.nodes
            ramp_s = start_ramp_s(len(nodes))
            fractions = first_poll_fractions(len(nodes), self._rng)
            tasks = [
                asyncio.create_task(self._poll_node(node, http, fraction, ramp_s), name=node.name)
                for node, fraction in zip(nodes, fractions, strict=True)
            ]
            await self._stopping.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            collectors = list(self._collector_tasks.values())
            for task in collectors:
                task.cancel()
            await asyncio.gather(*collectors, return_exceptions=True)
        finally:
            if http is not None:
                await http.close()

    async def _open_http(self) -> aiohttp.ClientSession | None:
        """One aiohttp session for all nodes (a shared httpx client cannot keep up with hundreds of nodes)."""
        try:
            import aiohttp
        except ImportError:  # pragma: no cover - aiohttp is a core dependency
            return None
        connector = aiohttp.TCPConnector(limit=self._http_limit, limit_per_host=0, ttl_dns_cache=300)
        return aiohttp.ClientSession(connector=connector, raise_for_status=False)

    async def _poll_node(
        self, node: Node, http: aiohttp.ClientSession | None, first_fraction: float, ramp_s: float
    ) -> None:
        site = self._fleet.site(node.site)
        interval = self._fleet.interval_s(node)
        timeout = self._fleet.timeout_s(node)
        sources: list[tuple[SourceSpec, Source | None, str]] = []
        for spec in node.sources:
            ctx = SourceContext(node=node, site=site, spec=spec, timeout_s=timeout, http=http)
            try:
                sources.append((spec, self._make_source(ctx), ""))
            except Exception as exc:  # a broken spec fails that node's polls with a reason, not the poller
                sources.append((spec, None, f"cannot create source: {exc}"))
        for _spec, source, _ in sources:
            collector = getattr(source, "shared_collector", None)
            if collector is not None and id(collector) not in self._collector_tasks:
                collector.driven = True  # before this node's first poll: no node ever starts a read of its own
                self._collector_tasks[id(collector)] = asyncio.create_task(
                    self._run_collector(collector, node.site, interval, timeout), name=collector.collector_name
                )
        # First polls spread over the node's interval, or over the fleet's start ramp when that is longer.
        next_due = time.monotonic() + first_fraction * max(interval, ramp_s)
        seen = _LastSamples(len(sources))
        failures_in_row = 0
        stopping = self._stopping
        try:
            # Checked as well as cancelled: Python 3.11's wait_for can swallow a cancellation that lands just as
            # a poll completes, which would leave this task (and the poller thread) running.
            while stopping is None or not stopping.is_set():
                await asyncio.sleep(max(0.0, next_due - time.monotonic()))
                started_mono = time.monotonic()
                late = started_mono - next_due
                result = await self._poll_once(node, sources, timeout, late, seen)
                failures_in_row = 0 if result.sample is not None else failures_in_row + 1
                self._record(result, interval)
                try:
                    self._on_result(result)
                except Exception:
                    log.exception("result handler failed for node %s", node.name)
                if failures_in_row:
                    next_due = time.monotonic() + backoff_delay(interval, failures_in_row - 1, self._rng)
                else:
                    next_due += interval
                    if next_due < time.monotonic():  # fell behind: skip missed ticks rather than burst
                        missed = int((time.monotonic() - next_due) // interval) + 1
                        next_due += missed * interval
        finally:
            for _spec, source, _ in sources:
                if source is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(source.aclose(), 2.0)

    async def _run_collector(self, collector: SharedCollector, site: str, interval: float, timeout: float) -> None:
        """One read per interval for every node behind the collector, never two at once: a read longer than the
        interval stretches it (reported as a slow collector with its duration); a failure backs off and is one
        result, for the collector, never one per node."""
        limit = max(timeout, COLLECTOR_READ_LIMIT_S)
        failures_in_row = reads = failed = 0
        stopping = self._stopping
        while stopping is None or not stopping.is_set():
            started = time.time()
            t0 = time.monotonic()
            failure = await self._collect_once(collector, site, interval, limit, started=started, t0=t0)
            duration = time.monotonic() - t0
            reads += 1
            failed += failure is not None
            failures_in_row = 0 if failure is None else failures_in_row + 1
            with self._stats_lock:
                self.stats.collectors[collector.collector_name] = CollectorState(
                    collector.collector_name,
                    site,
                    reads,
                    failed,
                    duration,
                    max(interval, duration),
                    failure.reason if failure else "",
                )
            self._collector_result(collector, site, started, duration, failure)
            if failure is None:
                await asyncio.sleep(max(0.0, interval - duration))
                continue
            # Backing off: no request, but the failure is said again each interval (the collector is down, not
            # silent: a silent one would look stale).
            resume = time.monotonic() + backoff_delay(interval, failures_in_row - 1, self._rng)
            while (left := resume - time.monotonic()) > 0:
                await asyncio.sleep(min(left, interval))
                if time.monotonic() < resume:
                    self._collector_result(collector, site, time.time(), 0.0, failure)

    async def _collect_once(
        self, collector: SharedCollector, site: str, interval: float, limit: float, *, started: float, t0: float
    ) -> SourceFailure | None:
        """One read, bounded by ``limit``; while it runs past an interval the collector reports itself still
        reading (how long so far) each interval, so it is slow, never silent."""
        label = collector.collector_label
        read = asyncio.ensure_future(asyncio.wait_for(collector.collect(limit), limit))
        try:
            while not read.done():
                done, _ = await asyncio.wait({read}, timeout=interval)
                if not done:
                    self._collector_result(collector, site, started, time.monotonic() - t0, None)
            read.result()
        except SourceError as exc:
            return SourceFailure(label, exc.failure, exc.reason)
        except TimeoutError:
            return SourceFailure(label, PollFailure.TIMEOUT, f"the site's read took over {limit:g} s")
        except asyncio.CancelledError:
            read.cancel()
            with contextlib.suppress(BaseException):
                await read
            raise
        except Exception as exc:  # a collector bug must not end the site's polling
            log.exception("shared collector %s raised", collector.collector_name)
            return SourceFailure(label, PollFailure.INTERNAL, f"{type(exc).__name__}: {exc}")
        return None

    def _collector_result(
        self, collector: SharedCollector, site: str, started: float, latency: float, failure: SourceFailure | None
    ) -> None:
        """The collector's own result (it is no node of the inventory): its failure is one collector_down, its
        duration beyond the interval one collector_slow. Never fresh: there is nothing in it to chart."""
        name = collector.collector_name
        result = PollResult(
            node=name,
            site=site,
            started=started,
            latency_s=latency,
            sample=NodeSample(name, site, collector.collector_label.split(" ", 1)[0], started),
            failures=(failure,) if failure is not None else (),
            fresh=False,
        )
        try:
            self._on_result(result)
        except Exception:
            log.exception("result handler failed for collector %s", name)

    async def _poll_once(
        self,
        node: Node,
        sources: list[tuple[SourceSpec, Source | None, str]],
        timeout: float,
        late: float,
        seen: _LastSamples,
    ) -> PollResult:
        started = time.time()
        t0 = time.monotonic()
        if len(sources) == 1:  # the common case: no gather, no extra task per poll
            outcomes: list[NodeSample | SourceFailure] = [await self._poll_source(node, *sources[0], timeout)]
        else:
            outcomes = await asyncio.gather(*(self._poll_source(node, *entry, timeout) for entry in sources))
        failures = tuple(o for o in outcomes if isinstance(o, SourceFailure))
        sample, fresh = seen.merge(outcomes, complete=not failures)
        earlier = tuple(old for _spec, source, _broken in sources for old in _take_earlier(source))
        return PollResult(
            node=node.name,
            site=node.site,
            started=started,
            latency_s=time.monotonic() - t0,
            sample=sample,
            failures=failures,
            late_s=max(0.0, late),
            fresh=fresh,
            earlier=earlier,
        )

    @staticmethod
    async def _poll_source(
        node: Node, spec: SourceSpec, source: Source | None, broken: str, timeout: float
    ) -> NodeSample | SourceFailure:
        label = f"{spec.kind} {spec.target()}"
        if source is None:
            return SourceFailure(label, PollFailure.INTERNAL, broken)
        try:
            async with asyncio.timeout(timeout):
                return await source.poll()
        except SourceError as exc:
            return SourceFailure(label, exc.failure, exc.reason)
        except TimeoutError:
            return SourceFailure(label, PollFailure.TIMEOUT, f"no answer within {timeout:g} s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a source bug must not kill the node's task
            log.exception("source %s of node %s raised", label, node.name)
            return SourceFailure(label, PollFailure.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _record(self, result: PollResult, interval: float) -> None:
        with self._stats_lock:
            stats = self.stats
            stats.polls += 1
            if result.sample is not None:
                stats.ok_polls += 1
                if not result.fresh:
                    stats.repeated_polls += 1
            else:
                stats.failed_polls += 1
            if result.late_s <= interval * 0.5:
                stats.on_time_polls += 1
            if len(stats.latencies_s) >= 10_000:  # bounded: keep the newest half
                del stats.latencies_s[:5_000]
            stats.latencies_s.append(result.latency_s)


def _take_earlier(source: Source | None) -> tuple[NodeSample, ...]:
    """What a backfilling source (``take_earlier``) read from before its latest sample; most sources have none."""
    take = getattr(source, "take_earlier", None)
    return take() if take is not None else ()
