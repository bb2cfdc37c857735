"""The dcgm-exporter source: scrape a Prometheus text endpoint and map DCGM series to the normalized sample.

Works against NVIDIA's dcgm-exporter (any release: ``Hostname`` or ``hostname``, ``UUID`` or ``uuid``, old or
2026-renamed field names), our own node agent's ``/metrics`` and ``gpu-console simulate``.

Identity comes from labels (UUID first; ``gpu`` is the index). A MIG instance's series (``GPU_I_ID``) never
overwrite the parent GPU's own series: they only fill fields the parent does not report (framebuffer values
add up across instances) and set ``mig_mode``. DCGM blank sentinels and NaN/Inf become ``None``; a
NOT_SUPPORTED sentinel also lists the field in ``GpuSample.unsupported``.

Xid: the ``DCGM_FI_DEV_XID_ERRORS`` gauge holds the last Xid (``err_code``/``err_msg`` labels); an event is
emitted when it changes to a non-zero value (on the first poll: when it is non-zero). The optional
``DCGM_EXP_XID_ERRORS_COUNT{xid="N"}`` counts Xids in a sliding window; a rise emits an event too. The state
between polls lives in an ``XidMemory`` that ``DcgmSource`` keeps per node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from console.exposition import ExpositionError, ExpositionParser, Labels, Sample
from console.schema import EventKind, GpuEvent, GpuSample, NodeSample
from console.sources import dcgm_names as names
from console.sources.base import PollFailure, SourceContext, SourceError

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

SOURCE_NAME = "dcgm"
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024
_PLAIN_LIMIT = names.SMALLEST_BLANK  # values below this (and finite) skip the sentinel checks
_GPU_FIELDS = frozenset(GpuSample.__dataclass_fields__)
# Series timestamps further from the console's clock than this are a wrong clock, not data to chart.
MAX_FUTURE_SKEW_S = 300.0
MAX_SAMPLE_AGE_S = 3600.0


@dataclass(slots=True)
class XidMemory:
    """What the previous poll of one node said about Xids (mutable: ``parse_dcgm_payload`` updates it)."""

    last_xid: dict[str, int] = field(default_factory=dict)  # GPU UUID -> the gauge's value
    counts: dict[str, dict[int, float]] = field(default_factory=dict)  # GPU UUID -> Xid -> window count


@dataclass(slots=True)
class _Gpu:
    """Everything read about one GPU while walking the payload."""

    uuid: str
    index: int | None
    identity: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)  # from the GPU's own series
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # MIG GPU_I_ID -> values
    mig_profiles: dict[str, str] = field(default_factory=dict)
    unsupported: set[str] = field(default_factory=set)
    xid: tuple[int, str] | None = None  # (last Xid, err_msg)
    xid_from_instance: bool = False
    xid_counts: dict[int, float] = field(default_factory=dict)


def _lower_labels(labels: Labels) -> dict[str, str]:
    return {key.lower(): value for key, value in labels.items()}


def _parse_index(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 6:
        return None
    return int(text)


class _PayloadMapper:
    """Walks parsed samples once and groups them per GPU."""

    def __init__(self) -> None:
        self.gpus: dict[str, _Gpu] = {}
        # The same UUID under a second ``gpu`` index (an exporter or firmware bug): kept apart, never mixed in.
        self.duplicates: list[_Gpu] = []
        self._duplicate_keys: dict[tuple[str, int], _Gpu] = {}
        self.latest_ms: int | None = None
        # Labels dicts are shared between samples with the same label text: resolve each one once per payload.
        self._targets: dict[int, tuple[_Gpu, dict[str, Any], bool] | None] = {}

    def _resolve(self, labels: Labels) -> tuple[_Gpu, dict[str, Any], bool] | None:
        lower = _lower_labels(labels)
        uuid = lower.get("uuid")
        if not uuid:
            return None  # not a GPU series (NVSwitch, CPU, exporter internals)
        gpu = self.gpus.get(uuid)
        index = _parse_index(lower.get("gpu"))
        if gpu is None:
            gpu = _Gpu(uuid=uuid, index=index, identity={})
            self.gpus[uuid] = gpu
        elif index is not None and gpu.index is not None and index != gpu.index:
            duplicate = self._duplicate_keys.get((uuid, index))
            if duplicate is None:
                duplicate = self._duplicate_keys[(uuid, index)] = _Gpu(uuid=uuid, index=index, identity={})
                self.duplicates.append(duplicate)
            gpu = duplicate
        identity = gpu.identity
        for key, label in (
            ("name", "modelname"),
            ("pci_bus_id", "pci_bus_id"),
            ("driver_version", names.DRIVER_VERSION_LABEL.lower()),
            ("vbios_version", names.VBIOS_LABEL.lower()),
        ):
            if key not in identity and lower.get(label):
                identity[key] = lower[label]
        if "serial" not in identity:
            for label in names.SERIAL_LABELS:
                if lower.get(label.lower()):
                    identity["serial"] = lower[label.lower()]
                    break
        if gpu.index is None:
            gpu.index = index
        instance = lower.get("gpu_i_id")
        if instance:
            gpu.mig_profiles.setdefault(instance, lower.get("gpu_i_profile", ""))
            return gpu, gpu.instances.setdefault(instance, {}), True
        return gpu, gpu.values, False

    def add(self, samples: list[Sample]) -> None:
        lookup = names.FIELD_BY_NAME
        targets = self._targets
        for name, labels, value, timestamp in samples:
            entry = lookup.get(name)
            if entry is None and name not in names.XID_GAUGE_NAMES and name != names.XID_COUNT_NAME:
                continue
            key = id(labels)
            if key in targets:
                target = targets[key]
            else:
                target = targets[key] = self._resolve(labels)
            if target is None:
                continue
            gpu, values, is_instance = target
            if timestamp is not None and (self.latest_ms is None or timestamp > self.latest_ms):
                self.latest_ms = timestamp
            if entry is None:
                self._add_xid(gpu, name, labels, value, is_instance)
                continue
            field_name, convert = entry
            if not (-1e300 < value < _PLAIN_LIMIT):
                kind = names.blank_kind(value)
                if kind is not None:
                    if kind == "not_supported" and not is_instance:
                        gpu.unsupported.add(field_name)
                    continue
            values[field_name] = convert(value)

    def _add_xid(self, gpu: _Gpu, name: str, labels: Labels, value: float, is_instance: bool) -> None:
        if not (-1e300 < value < _PLAIN_LIMIT) and names.blank_kind(value) is not None:
            return
        if name == names.XID_COUNT_NAME:
            code = _parse_index(_lower_labels(labels).get("xid"))
            if code is not None:
                gpu.xid_counts[code] = gpu.xid_counts.get(code, 0.0) + value
            return
        # The GPU's own gauge wins over an instance's; among equals, a non-zero Xid wins over "No Error".
        if gpu.xid is not None and is_instance and not gpu.xid_from_instance:
            return
        code = int(value)
        if gpu.xid is not None and code == 0 and gpu.xid[0] != 0 and is_instance == gpu.xid_from_instance:
            return
        message = _lower_labels(labels).get("err_msg", "")
        gpu.xid = (code, message)
        gpu.xid_from_instance = is_instance


def _combine(gpu: _Gpu) -> dict[str, Any]:
    """The GPU's own values, completed by its MIG instances, with the intermediate fields resolved."""
    values = dict(gpu.values)
    if gpu.instances:
        sums: dict[str, float] = {}
        for instance in sorted(gpu.instances, key=lambda i: (len(i), i)):
            for key, value in gpu.instances[instance].items():
                if key in names.ADDITIVE_FIELDS:
                    sums[key] = sums.get(key, 0.0) + value
                elif key not in values:
                    values[key] = value
        for key, total in sums.items():
            values.setdefault(key, total)
        values["mig_mode"] = True
    free = values.pop(names.FB_FREE, None)
    reserved = values.pop(names.FB_RESERVED, None)
    total = values.pop(names.FB_TOTAL, None)
    used = values.get("memory_used_mib")
    if total is not None:
        values["memory_total_mib"] = total
    elif used is not None and free is not None:
        values["memory_total_mib"] = used + free + (reserved or 0.0)
    requested_limit = values.pop(names.POWER_REQUESTED_LIMIT, None)
    if values.get("power_limit_w") is None and requested_limit is not None:
        values["power_limit_w"] = requested_limit
    flit = values.pop(names.NVLINK_CRC_FLIT, None)
    data = values.pop(names.NVLINK_CRC_DATA, None)
    if flit is not None or data is not None:
        values["nvlink_crc_errors"] = (flit or 0) + (data or 0)
    # dcgm-exporter reports 0 for the memory temperature of GDDR boards that have no sensor (real L4 capture).
    if values.get("memory_temperature_c") == 0:
        del values["memory_temperature_c"]
        gpu.unsupported.add("memory_temperature_c")
    return values


def _xid_events(gpu: _Gpu, index: int, when: float, memory: XidMemory) -> list[GpuEvent]:
    events: list[GpuEvent] = []
    emitted: set[int] = set()
    if gpu.xid is not None:
        code, message = gpu.xid
        previous = memory.last_xid.get(gpu.uuid)
        if code not in (0, previous):
            events.append(GpuEvent(EventKind.XID, when, gpu.uuid, index, code, message))
            emitted.add(code)
        memory.last_xid[gpu.uuid] = code
    before = memory.counts.get(gpu.uuid, {})
    for code, count in sorted(gpu.xid_counts.items()):
        rise = count - before.get(code, 0.0)
        if rise > 0 and code not in emitted:
            text = f"Xid {code}: {rise:g} more in the exporter's counting window"
            events.append(GpuEvent(EventKind.XID, when, gpu.uuid, index, code, text))
    if gpu.xid_counts or gpu.uuid in memory.counts:
        memory.counts[gpu.uuid] = dict(gpu.xid_counts)
    return events


def _keep_lowest_index(mapper: _PayloadMapper) -> None:
    """One UUID reported under two GPU indexes: the lowest index's series win, whatever the payload's order."""
    for duplicate in mapper.duplicates:
        current = mapper.gpus[duplicate.uuid]
        # both carry an index: a duplicate is only ever made from a series with a "gpu" label
        if (duplicate.index or 0) < (current.index or 0):
            mapper.gpus[duplicate.uuid] = duplicate
        log.debug("GPU UUID %s reported under GPU indexes %s and %s", duplicate.uuid, current.index, duplicate.index)


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
    try:
        exposition = (parser or ExpositionParser()).parse(text)
    except ExpositionError as exc:
        raise SourceError(PollFailure.BAD_PAYLOAD, f"not Prometheus text exposition: {exc}") from None
    return map_dcgm_samples(exposition.samples, node, site, now, previous, source=source)


def map_dcgm_samples(
    samples: list[Sample],
    node: str,
    site: str,
    now: float,
    previous: XidMemory | None = None,
    *,
    source: str = SOURCE_NAME,
) -> NodeSample:
    """Map parsed DCGM series (from a scrape, or straight from a Prometheus query) to a ``NodeSample``.

    Samples sharing one label set should share one labels dict (the parser does that): it is resolved to its GPU
    once. Raises ``SourceError(BAD_PAYLOAD)`` when no series names a GPU.
    """
    mapper = _PayloadMapper()
    mapper.add(samples)
    if not mapper.gpus:
        what = f"{len(samples)} series" if samples else "no series at all"
        raise SourceError(PollFailure.BAD_PAYLOAD, f"no GPU series (no series with a UUID label; {what})")
    _keep_lowest_index(mapper)
    sample_time = mapper.latest_ms / 1000.0 if mapper.latest_ms is not None else now
    memory = previous if previous is not None else XidMemory()
    taken = {gpu.index for gpu in mapper.gpus.values() if gpu.index is not None}
    next_free = 0
    gpus: list[GpuSample] = []
    events: list[GpuEvent] = []
    for gpu in mapper.gpus.values():
        if gpu.index is None:  # no usable "gpu" label: number it after the ones that have one
            while next_free in taken:
                next_free += 1
            gpu.index = next_free
            taken.add(next_free)
        values = _combine(gpu)
        if gpu.xid is not None:
            values["xid_last"] = gpu.xid[0]
        kwargs = {key: value for key, value in values.items() if key in _GPU_FIELDS}
        kwargs.update(gpu.identity)
        unsupported = tuple(
            sorted(name for name in gpu.unsupported if name in _GPU_FIELDS and kwargs.get(name) is None)
        )
        gpus.append(GpuSample(index=gpu.index, uuid=gpu.uuid, unsupported=unsupported, **kwargs))
        events.extend(_xid_events(gpu, gpu.index, sample_time, memory))
    gpus.sort(key=lambda g: g.index)
    return NodeSample(node=node, site=site, source=source, time=sample_time, gpus=tuple(gpus), events=tuple(events))


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
        self._memory = XidMemory()
        self._own_session: aiohttp.ClientSession | None = None
        # dcgm-exporter refreshes every 30 s by default, so most 1 Hz scrapes return the same bytes: remember the
        # last payload and its sample and skip parsing a repeat (the comparison is a C-level memcmp).
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
        headers = {"Accept-Encoding": "gzip", "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
        timeout = aiohttp.ClientTimeout(total=self._ctx.timeout_s)
        try:
            async with session.get(
                self._url, headers=headers, ssl=self._ssl, timeout=timeout, auth=auth, allow_redirects=True
            ) as response:
                if response.status in (401, 403):
                    raise SourceError(PollFailure.AUTH_REFUSED, f"HTTP {response.status} {response.reason or ''}")
                if response.status != 200:
                    raise SourceError(PollFailure.UNREACHABLE, f"HTTP {response.status} {response.reason or ''}")
                declared = response.content_length
                if declared is not None and declared > self._max_bytes and not response.headers.get("Content-Encoding"):
                    raise SourceError(PollFailure.BAD_PAYLOAD, self._oversize())
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
            # Same values as last poll: no new events; keep the exporter's stamp if it gave one, else now.
            repeat = dataclasses.replace(last, time=last.time if self._last_stamped else now, events=())
            check_clock(repeat.time, now)
            return repeat
        sample = parse_dcgm_payload(
            text,
            self._ctx.node.name,
            self._ctx.site.name,
            now,
            self._memory,
            parser=self._parser,
        )
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
