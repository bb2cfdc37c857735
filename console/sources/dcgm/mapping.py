"""Mapping DCGM series to the normalized sample: identity, units, MIG, sentinels and Xids.

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

import logging
from dataclasses import dataclass, field
from typing import Any, Final

from console.samples.results import PollFailure, SourceError
from console.samples.schema import (
    GPU_FIELD_NAMES,
    EventKind,
    GpuEvent,
    GpuSample,
    MigInstance,
    NodeSample,
    Workload,
    gpu_sample_from_fields,
)
from console.sources.dcgm import names
from console.sources.exposition import Labels, Sample
from console.sources.workload_labels import carries_workload_labels, workload_from_labels

log = logging.getLogger(__name__)

SOURCE_NAME = "dcgm"
PLAIN_LIMIT = names.SMALLEST_BLANK  # values below this (and finite) skip the sentinel checks
_GPU_FIELDS = frozenset(GPU_FIELD_NAMES)
XID_ROUTE: Final = "xid"
# Where one sample went: its GPU, the values dict it filled (the GPU's own or a MIG instance's), whether that is an
# instance, the field and its converter; ``XID_ROUTE`` for an Xid series; ``None`` for a series that is not read.
Route = tuple["GpuReading", dict[str, Any], bool, str, names.Converter] | str


@dataclass(slots=True)
class XidMemory:
    """What the previous poll of one node said about Xids (mutable: ``parse_dcgm_payload`` updates it)."""

    last_xid: dict[str, int] = field(default_factory=dict)  # GPU UUID -> the gauge's value
    counts: dict[str, dict[int, float]] = field(default_factory=dict)  # GPU UUID -> Xid -> window count


@dataclass(slots=True)
class GpuReading:
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
    # Pods and jobs its series' labels name, in order (a dict as an ordered set); None: no label says.
    workload: dict[Workload, None] | None = None


def _lower_labels(labels: Labels) -> dict[str, str]:
    return {key.lower(): value for key, value in labels.items()}


def _parse_index(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 6:
        return None
    return int(text)


class PayloadMapper:
    """Walks parsed samples once and groups them per GPU."""

    def __init__(self) -> None:
        self.gpus: dict[str, GpuReading] = {}
        # The same UUID under a second ``gpu`` index (an exporter or firmware bug): kept apart, never mixed in.
        self.duplicates: list[GpuReading] = []
        self._duplicate_keys: dict[tuple[str, int], GpuReading] = {}
        self.latest_ms: int | None = None
        self.attributes_workload = False  # some GPU series carries a pod or job label (even an empty one)
        # Labels dicts are shared between samples with the same label text: resolve each one once per payload.
        self._targets: dict[int, tuple[GpuReading, dict[str, Any], bool] | None] = {}

    def _resolve(self, labels: Labels) -> tuple[GpuReading, dict[str, Any], bool] | None:
        lower = _lower_labels(labels)
        uuid = lower.get("uuid")
        if not uuid:
            return None  # not a GPU series (NVSwitch, CPU, exporter internals)
        gpu = self.gpus.get(uuid)
        index = _parse_index(lower.get("gpu"))
        if gpu is None:
            gpu = GpuReading(uuid=uuid, index=index, identity={})
            self.gpus[uuid] = gpu
        elif index is not None and gpu.index is not None and index != gpu.index:
            duplicate = self._duplicate_keys.get((uuid, index))
            if duplicate is None:
                duplicate = self._duplicate_keys[(uuid, index)] = GpuReading(uuid=uuid, index=index, identity={})
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
        if carries_workload_labels(lower):
            self.attributes_workload = True
            if gpu.workload is None:
                gpu.workload = {}
            gpu.workload.update(dict.fromkeys(workload_from_labels(lower)))
        instance = lower.get("gpu_i_id")
        if instance:
            gpu.mig_profiles.setdefault(instance, lower.get("gpu_i_profile", ""))
            return gpu, gpu.instances.setdefault(instance, {}), True
        return gpu, gpu.values, False

    def add(self, samples: list[Sample], routes: list[Route | None] | None = None) -> None:
        """Group ``samples`` per GPU; with ``routes``, also note where each sample went (for a ``PayloadTemplate``)."""
        lookup = names.FIELD_BY_NAME
        targets = self._targets
        for name, labels, value, timestamp in samples:
            entry = lookup.get(name)
            if entry is None and name not in names.XID_GAUGE_NAMES and name != names.XID_COUNT_NAME:
                if routes is not None:
                    routes.append(None)
                continue
            key = id(labels)
            if key in targets:
                target = targets[key]
            else:
                target = targets[key] = self._resolve(labels)
            if target is None:
                if routes is not None:
                    routes.append(None)
                continue
            gpu, values, is_instance = target
            if timestamp is not None and (self.latest_ms is None or timestamp > self.latest_ms):
                self.latest_ms = timestamp
            if entry is None:
                if routes is not None:
                    routes.append(XID_ROUTE)
                self._add_xid(gpu, name, labels, value, is_instance)
                continue
            field_name, convert = entry
            if routes is not None:
                routes.append((gpu, values, is_instance, field_name, convert))
            if not (-1e300 < value < PLAIN_LIMIT):
                kind = names.blank_kind(value)
                if kind is not None:
                    if kind == "not_supported" and not is_instance:
                        gpu.unsupported.add(field_name)
                    continue
            values[field_name] = convert(value)

    def _add_xid(self, gpu: GpuReading, name: str, labels: Labels, value: float, is_instance: bool) -> None:
        if not (-1e300 < value < PLAIN_LIMIT) and names.blank_kind(value) is not None:
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


def _combine(gpu: GpuReading) -> dict[str, Any]:
    """The GPU's own values, completed by its MIG instances, with the intermediate fields resolved, and each
    instance's own utilization and memory kept under it."""
    values = dict(gpu.values)
    if gpu.instances:
        sums: dict[str, float] = {}
        instances: list[MigInstance] = []
        for instance in sorted(gpu.instances, key=lambda i: (len(i), i)):
            own = gpu.instances[instance]
            for key, value in own.items():
                if key in names.ADDITIVE_FIELDS:
                    sums[key] = sums.get(key, 0.0) + value
                elif key not in values and key not in _PER_INSTANCE:
                    values[key] = value
            instances.append(_mig_instance(instance, gpu.mig_profiles.get(instance), own))
        for key, total in sums.items():
            values.setdefault(key, total)
        values["mig_mode"] = True
        values["mig_instances"] = tuple(instances)
    resolve_derived(values, gpu.unsupported)
    return values


# An instance's share of time busy is its own: one instance's ratio is not the GPU's.
_PER_INSTANCE = frozenset(m.field for m in names.PROFILING_METRICS if m.field.endswith("_pct"))


def _mig_instance(instance: str, profile: str | None, own: dict[str, Any]) -> MigInstance:
    used = own.get("memory_used_mib")
    total = own.get(names.FB_TOTAL)
    free = own.get(names.FB_FREE)
    if total is None and used is not None and free is not None:
        total = used + free + own.get(names.FB_RESERVED, 0.0)
    busy = own.get("graphics_active_pct", own.get("utilization_pct"))
    return MigInstance(instance, profile or None, busy, used, total)


def resolve_derived(values: dict[str, Any], unsupported: set[str]) -> None:
    """Turn the intermediate fields into sample fields, in place (framebuffer total, requested power limit, NVLink
    CRC sum), and drop a GDDR board's placeholder memory temperature into ``unsupported``."""
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
        unsupported.add("memory_temperature_c")


def _xid_events(gpu: GpuReading, index: int, when: float, memory: XidMemory) -> list[GpuEvent]:
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


def _keep_lowest_index(mapper: PayloadMapper) -> None:
    """One UUID reported under two GPU indexes: the lowest index's series win, whatever the payload's order."""
    for duplicate in mapper.duplicates:
        current = mapper.gpus[duplicate.uuid]
        # both carry an index: a duplicate is only ever made from a series with a "gpu" label
        if (duplicate.index or 0) < (current.index or 0):
            mapper.gpus[duplicate.uuid] = duplicate
        log.debug("GPU UUID %s reported under GPU indexes %s and %s", duplicate.uuid, current.index, duplicate.index)


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
    return map_and_route(samples, now, previous, node=node, site=site, source=source).sample


@dataclass(frozen=True, slots=True)
class RoutedMapping:
    sample: NodeSample
    readings: list[GpuReading]  # the GPUs the sample was built from, in the sample's order of discovery
    has_duplicates: bool  # one UUID under two indexes: only the full mapping settles which one wins


def map_and_route(
    samples: list[Sample],
    now: float,
    previous: XidMemory | None,
    *,
    node: str,
    site: str,
    source: str,
    routes: list[Route | None] | None = None,
) -> RoutedMapping:
    """``map_dcgm_samples``, also filling ``routes`` (one entry per sample) and returning the GPU readings."""
    mapper = PayloadMapper()
    mapper.add(samples, routes)
    if not mapper.gpus:
        what = f"{len(samples)} series" if samples else "no series at all"
        raise SourceError(PollFailure.BAD_PAYLOAD, f"no GPU series (no series with a UUID label; {what})")
    _keep_lowest_index(mapper)
    if mapper.attributes_workload:  # the exporter attributes GPUs: one without a label runs nothing
        for gpu in mapper.gpus.values():
            if gpu.workload is None:
                gpu.workload = {}
    sample_time = mapper.latest_ms / 1000.0 if mapper.latest_ms is not None else now
    readings = list(mapper.gpus.values())
    sample = node_sample_from(readings, sample_time, previous, node=node, site=site, source=source)
    return RoutedMapping(sample, readings, bool(mapper.duplicates))


def node_sample_from(
    readings: list[GpuReading], sample_time: float, previous: XidMemory | None, *, node: str, site: str, source: str
) -> NodeSample:
    """The ``NodeSample`` for one payload's GPU readings (numbers GPUs without an index; emits new Xids)."""
    memory = previous if previous is not None else XidMemory()
    taken = {gpu.index for gpu in readings if gpu.index is not None}
    next_free = 0
    gpus: list[GpuSample] = []
    events: list[GpuEvent] = []
    for gpu in readings:
        if gpu.index is None:  # no usable "gpu" label: number it after the ones that have one
            while next_free in taken:
                next_free += 1
            gpu.index = next_free
            taken.add(next_free)
        values = _combine(gpu)
        if gpu.xid is not None:
            values["xid_last"] = gpu.xid[0]
        values.update(gpu.identity)
        values["unsupported"] = tuple(
            sorted(name for name in gpu.unsupported if name in _GPU_FIELDS and values.get(name) is None)
        )
        values["index"] = gpu.index
        values["uuid"] = gpu.uuid
        values["workload"] = tuple(gpu.workload) if gpu.workload is not None else None
        gpus.append(gpu_sample_from_fields(values))  # intermediate keys left in ``values`` are not fields: ignored
        events.extend(_xid_events(gpu, gpu.index, sample_time, memory))
    gpus.sort(key=lambda g: g.index)
    return NodeSample(node=node, site=site, source=source, time=sample_time, gpus=tuple(gpus), events=tuple(events))
