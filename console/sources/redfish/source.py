"""Redfish BMC source (kind ``redfish``): chassis power and air/liquid cooling into ``ChassisSample``.

The resource tree is discovered once (service root -> Chassis members -> Thermal/Power, ThermalSubsystem,
PowerSubsystem, EnvironmentMetrics, Sensors, LeakDetectors; ThermalEquipment -> CDUs), the leaf URLs are
cached, and each later poll GETs only those leaves, concurrently and bounded. A cached leaf that answers 404
triggers a new discovery, and so does age (``rediscover_s``), so a hot-plugged PSU or a re-flashed BMC is
picked up.

Options (inventory ``options`` table): ``auth`` = ``auto`` (a Redfish session where offered, else basic; the
default), ``session`` or ``basic``; ``max_concurrency`` (default 6: BMCs are small computers);
``rediscover_s`` (default 600); ``max_bytes`` (per-resource cap, default 4 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from console.samples.results import PollFailure, SourceError
from console.samples.schema import NodeSample
from console.sources.base import HttpSession, Source, SourceContext
from console.sources.redfish.choosing import BmcReading, read_bmc, unexplained
from console.sources.redfish.http import (
    DEFAULT_MAX_BYTES,
    SERVICE_ROOT,
    AuthMode,
    Credentials,
    RedfishClient,
    ResourceMissing,
    bad_payload,
    odata_path,
    split_base_url,
)
from console.sources.redfish.readings import (
    PRUNE_ORDER,
    STATE_KINDS,
    Leaf,
    LeafKind,
    gpu_of_sensor,
    sensor_is_relevant,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Fetched = tuple[Leaf, Mapping[str, Any], str]
# An unhealthy chassis whose polled components name no culprit walks the tree again, at most this often.
UNEXPLAINED_REDISCOVER_S = 60.0

MAX_CHASSIS = 32
MAX_SENSORS_PER_CHASSIS = 512
_COOLING_UNIT_COLLECTIONS = ("CDUs", "HeatExchangers", "ImmersionUnits", "RPUs")


@dataclass(frozen=True, slots=True)
class Discovery:
    leaves: tuple[Leaf, ...]
    first: BmcReading  # what the discovery fetches already said: the first poll needs no second round
    fetched: tuple[Fetched, ...]  # the kept leaves' documents behind ``first``
    at: float  # time.monotonic()


def prune(fetched: Sequence[Fetched]) -> tuple[list[Fetched], BmcReading]:
    """Drop optional leaves that change nothing in the sample (most Sensors repeat an excerpt elsewhere)."""
    kept = list(fetched)
    full = read_bmc(kept)

    def same(reading: BmcReading) -> bool:
        return reading.chassis == full.chassis and reading.gpus == full.gpus

    for kind in PRUNE_ORDER:
        for entry in [e for e in kept if e[0].kind is kind]:
            trial = [e for e in kept if e is not entry]
            if same(read_bmc(trial)):
                kept = trial
    return kept, full


class _Walker:
    """One discovery: follows links with bounded concurrency, collecting leaves and their documents."""

    def __init__(self, client: RedfishClient, limit: asyncio.Semaphore) -> None:
        self._client = client
        self._limit = limit
        self.fetched: dict[str, Fetched] = {}

    async def get(self, path: str) -> dict[str, Any] | None:
        """A linked resource, or None when the link points nowhere (404): a BMC's tree may be incomplete."""
        async with self._limit:
            try:
                return await self._client.get_json(path)
            except ResourceMissing as exc:
                log.debug("skipping missing Redfish resource %s", exc.url)
                return None

    def add(self, leaf: Leaf, doc: Mapping[str, Any]) -> None:
        self.fetched.setdefault(leaf.path, (leaf, doc, self._client.url_for(leaf.path)))

    def link(self, doc: Mapping[str, Any], key: str) -> str | None:
        value = doc.get(key)
        if value is None:
            return None
        url = self._client.url_for(str(doc.get("@odata.id", "")))
        if not isinstance(value, dict):
            raise bad_payload(url, f"{key}: expected a link object, got {type(value).__name__}")
        return odata_path(value.get("@odata.id"), url, f"{key}.@odata.id")

    async def members(self, path: str | None) -> list[str]:
        if path is None:
            return []
        doc = await self.get(path)
        if doc is None:
            return []
        url = self._client.url_for(path)
        members = doc.get("Members", [])
        if not isinstance(members, list):
            raise bad_payload(url, f"Members: expected a list, got {type(members).__name__}")
        paths = []
        for i, member in enumerate(members):
            if not isinstance(member, dict):
                raise bad_payload(url, f"Members[{i}]: expected a link object")
            paths.append(odata_path(member.get("@odata.id"), url, f"Members[{i}].@odata.id"))
        return paths

    async def leaf(self, path: str | None, kind: LeafKind, order: int) -> dict[str, Any] | None:
        if path is None or path in self.fetched:
            return None
        doc = await self.get(path)
        if doc is not None:
            self.add(Leaf(path, kind, order), doc)
        return doc

    async def leaves(self, collection: str | None, kind: LeafKind, order: int) -> None:
        await _gather(self.leaf(path, kind, order) for path in await self.members(collection))

    async def leak_detection(self, path: str | None, order: int) -> None:
        doc = await self.leaf(path, LeafKind.LEAK_DETECTION, order)
        if doc is not None:
            await self.leaves(self.link(doc, "LeakDetectors"), LeafKind.LEAK_DETECTOR, order)

    async def chassis(self, path: str, order: int) -> None:
        doc = await self.leaf(path, LeafKind.CHASSIS, order)
        if doc is None:
            return
        link = self.link
        await _gather(
            [
                self.leaf(link(doc, "Thermal"), LeafKind.LEGACY_THERMAL, order),
                self.leaf(link(doc, "Power"), LeafKind.LEGACY_POWER, order),
                self.leaf(link(doc, "EnvironmentMetrics"), LeafKind.ENVIRONMENT, order),
                self.thermal_subsystem(link(doc, "ThermalSubsystem"), order),
                self.power_subsystem(link(doc, "PowerSubsystem"), order),
                self.leaves(link(doc, "LeakDetectors"), LeafKind.LEAK_DETECTOR, order),
                self.sensors(link(doc, "Sensors"), order),
            ]
        )

    async def thermal_subsystem(self, path: str | None, order: int) -> None:
        doc = await self.get(path) if path else None
        if doc is None:
            return
        link = self.link
        await _gather(
            [
                self.leaf(link(doc, "ThermalMetrics"), LeafKind.THERMAL_METRICS, order),
                self.leaves(link(doc, "Fans"), LeafKind.FAN, order),
                self.leaves(link(doc, "Pumps"), LeafKind.PUMP, order),
                self.leaves(link(doc, "CoolantConnectors"), LeafKind.COOLANT_CONNECTOR, order),
                self.leak_detection(link(doc, "LeakDetection"), order),
            ]
        )

    async def power_subsystem(self, path: str | None, order: int) -> None:
        doc = await self.get(path) if path else None
        if doc is None:
            return

        async def supply(psu_path: str) -> None:
            psu = await self.leaf(psu_path, LeafKind.POWER_SUPPLY, order)
            if psu is not None:
                await self.leaf(self.link(psu, "Metrics"), LeafKind.PSU_METRICS, order)

        await _gather(supply(p) for p in await self.members(self.link(doc, "PowerSupplies")))

    async def sensors(self, collection: str | None, order: int) -> None:
        paths = (await self.members(collection))[:MAX_SENSORS_PER_CHASSIS]

        async def one(path: str) -> None:
            doc = await self.get(path)
            if doc is None:
                return
            url = self._client.url_for(path)
            try:
                relevant = sensor_is_relevant(doc, url)
            except SourceError as exc:  # one odd sensor among hundreds must not fail the node
                log.info("ignoring Redfish sensor %s", exc.reason)
                return
            if relevant:
                self.add(Leaf(path, LeafKind.SENSOR, order), doc)
                processor = gpu_of_sensor(doc, url)
                if processor is not None:  # an HMC's GPU sensor: the GPU's UUID is on its Processor
                    await self.leaf(processor, LeafKind.PROCESSOR, order)

        await _gather(one(p) for p in paths)

    async def cooling_units(self, path: str | None, order: int) -> None:
        doc = await self.get(path) if path else None
        if doc is None:
            return
        units = [p for key in _COOLING_UNIT_COLLECTIONS for p in await self.members(self.link(doc, key))]

        async def unit(unit_path: str, unit_order: int) -> None:
            unit_doc = await self.leaf(unit_path, LeafKind.COOLING_UNIT, unit_order)
            if unit_doc is None:
                return
            link = self.link
            await _gather(
                [
                    self.leaves(
                        link(unit_doc, "SecondaryCoolantConnectors"),
                        LeafKind.CDU_SECONDARY_CONNECTOR,
                        unit_order,
                    ),
                    self.leaves(link(unit_doc, "PrimaryCoolantConnectors"), LeafKind.CDU_PRIMARY_CONNECTOR, unit_order),
                    self.leaves(link(unit_doc, "Pumps"), LeafKind.PUMP, unit_order),
                    self.leak_detection(link(unit_doc, "LeakDetection"), unit_order),
                ]
            )

        await _gather(unit(p, order + i) for i, p in enumerate(units))


async def _gather(coroutines: Any) -> None:
    """Run concurrently; the first error cancels the rest (no half-finished discovery lingers)."""
    async with asyncio.TaskGroup() as group:
        for coroutine in coroutines:
            group.create_task(coroutine)


async def _unwrap(call: Callable[[], Awaitable[_T]]) -> _T:
    """TaskGroup wraps errors in an ExceptionGroup; callers want the first SourceError as is."""
    try:
        return await call()
    except ExceptionGroup as group:
        first = _first_leaf_error(group)
        raise first from None


def _first_leaf_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_leaf_error(exc)
        return exc
    return group


async def discover(client: RedfishClient, max_concurrency: int) -> Discovery:
    limit = asyncio.Semaphore(max_concurrency)
    walker = _Walker(client, limit)
    root = await walker.get(SERVICE_ROOT)
    if root is None:
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{client.url_for(SERVICE_ROOT)}: no Redfish service root (404)")
    links = root.get("Links")
    if isinstance(links, dict) and walker.link(links, "Sessions"):
        client.set_sessions_path(walker.link(links, "Sessions") or "")
    chassis = (await walker.members(walker.link(root, "Chassis")))[:MAX_CHASSIS]

    async def walk() -> None:
        await _gather(
            [
                *(walker.chassis(path, order) for order, path in enumerate(chassis)),
                walker.cooling_units(walker.link(root, "ThermalEquipment"), len(chassis)),
            ]
        )

    await _unwrap(walk)
    if not walker.fetched:
        raise SourceError(
            PollFailure.BAD_PAYLOAD,
            f"{client.url_for(SERVICE_ROOT)}: the service lists no Chassis and no CDUs",
        )
    kept, first = prune(list(walker.fetched.values()))
    log.info(
        "Redfish %s%s: %d leaves to poll (of %d discovered)",
        client.origin,
        client.prefix,
        len(kept),
        len(walker.fetched),
    )
    return Discovery(
        leaves=tuple(leaf for leaf, _doc, _url in kept), first=first, fetched=tuple(kept), at=time.monotonic()
    )


class RedfishSource:
    """One BMC. ``poll`` returns a ``NodeSample`` whose ``chassis`` carries the BMC's readings (no GPUs)."""

    def __init__(self, ctx: SourceContext) -> None:
        spec = ctx.spec
        if not spec.url:
            raise ValueError("a redfish source needs url (the BMC base URL)")
        self._ctx = ctx
        try:
            self._auth_mode = AuthMode(spec.option("auth", AuthMode.AUTO) or AuthMode.AUTO)
            self._max_concurrency = max(1, int(spec.option("max_concurrency", "6") or 6))
            self._rediscover_s = float(spec.option("rediscover_s", "600") or 600)
            self._max_bytes = int(spec.option("max_bytes", str(DEFAULT_MAX_BYTES)) or DEFAULT_MAX_BYTES)
        except ValueError as exc:
            raise ValueError(f"redfish options: {exc}") from None
        split_base_url(spec.url)  # a malformed URL fails here, when the inventory is loaded, not at every poll
        self._http = HttpSession(ctx.http)
        self._client_instance: RedfishClient | None = None
        self._discovery: Discovery | None = None
        self._discovering: asyncio.Task[Discovery] | None = None
        self._present: frozenset[str] = frozenset()  # components seen in place: one gone later is a condition

    @property
    def _client(self) -> RedfishClient:
        if self._client_instance is None:
            spec = self._ctx.spec
            self._client_instance = RedfishClient(
                spec.url or "",
                http=self._http.get(),
                timeout_s=self._ctx.timeout_s,
                credentials=Credentials(spec.user, spec.password) if spec.user else None,
                auth_mode=self._auth_mode,
                verify_tls=spec.verify_tls,
                ca_file=spec.ca_file,
                max_bytes=self._max_bytes,
            )
        return self._client_instance

    async def poll(self) -> NodeSample:
        discovery = self._discovery
        if discovery is None or time.monotonic() - discovery.at > self._rediscover_s:
            reading = await self._first_reading()
        else:
            try:
                reading = await self._fetch_leaves(discovery.leaves)
            except ResourceMissing as exc:
                log.info("Redfish leaf %s vanished; discovering the tree again", exc.url)
                reading = await self._first_reading()
            else:
                if self._walk_again_for(reading, discovery):
                    log.info(
                        "Redfish %s: unhealthy with no component named; discovering the tree again", self._ctx.spec.url
                    )
                    reading = await self._first_reading()
        self._present |= reading.present
        ctx = self._ctx
        return NodeSample(
            node=ctx.node.name,
            site=ctx.site.name,
            source="redfish",
            time=time.time(),
            gpus=reading.gpus,
            chassis=reading.chassis,
        )

    @staticmethod
    def _walk_again_for(reading: BmcReading, discovery: Discovery) -> bool:
        """An unhealthy chassis that no polled component explains, unlike at the last walk: a sensor that was fine
        then (so not polled) may have turned. A rollup the walk could not explain either (a DIMM counted in the
        chassis's) waits for the next regular walk instead of costing the BMC a walk a minute."""
        if not unexplained(reading.chassis) or time.monotonic() - discovery.at <= UNEXPLAINED_REDISCOVER_S:
            return False
        first = discovery.first.chassis
        return not unexplained(first) or first.health != reading.chassis.health

    async def _first_reading(self) -> BmcReading:
        discovery = await self._rediscover()
        if not self._present:
            return discovery.first
        # a component that vanished from the tree between walks is still missed where it was in place before
        return read_bmc(discovery.fetched, self._present)

    async def _rediscover(self) -> Discovery:
        # A slow BMC may need longer than one poll's timeout to walk: the walk runs as its own task, shielded
        # from the poller's cancellation, and the next poll waits for the same walk instead of starting over.
        if self._discovering is None:
            self._discovering = asyncio.create_task(discover(self._client, self._max_concurrency))
        task = self._discovering
        try:
            discovery = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # finished just as this poll timed out: keep the result for the next poll
                self._discovering = None
                if not task.cancelled() and task.exception() is None:
                    self._discovery = task.result()
            raise
        except BaseException:
            self._discovering = None
            raise
        self._discovering = None
        self._discovery = discovery
        return discovery

    async def _fetch_leaves(self, leaves: Sequence[Leaf]) -> BmcReading:
        limit = asyncio.Semaphore(self._max_concurrency)

        async def fetch(leaf: Leaf) -> Fetched:
            async with limit:
                return leaf, await self._client.get_json(leaf.path), self._client.url_for(leaf.path)

        results = await asyncio.gather(*(fetch(leaf) for leaf in leaves), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        missing = [e for e in errors if isinstance(e, ResourceMissing)]
        if missing:
            raise missing[0]
        if errors:
            raise errors[0]
        return read_bmc([r for r in results if not isinstance(r, BaseException)], self._present)

    @property
    def cached_leaves(self) -> tuple[Leaf, ...]:
        """The leaves each poll fetches (empty before the first discovery); for tests and ``probe``."""
        return self._discovery.leaves if self._discovery else ()

    async def aclose(self) -> None:
        task, self._discovering = self._discovering, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._client_instance is not None:
            await self._client_instance.aclose()
        await self._http.aclose()


def make_source(ctx: SourceContext) -> Source:
    return RedfishSource(ctx)


__all__ = ["STATE_KINDS", "Discovery", "RedfishSource", "discover", "make_source", "prune"]
