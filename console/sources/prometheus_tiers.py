"""What a site read asks Prometheus for, and how often: the read path that scales with what is shown.

Prometheus' cost is per series it touches (about 10 us each on Prometheus 2.42, scripts/bench/
bench_prometheus_scale.py), the console's per series and per label it decodes. So a refresh asks for little:

- **hot** fields, every refresh, every GPU: what the fleet view shows and every health signal an incident rule
  reads. Each series comes back with only the labels that map it to a GPU (host, GPU index or UUID, MIG
  instance; the Xid labels on the Xid series), not the 19 a Kubernetes dcgm-exporter series carries.
- **identity** (UUID, model, driver, serial, PCI address, MIG profile, pod and job labels), **static** fields
  (limits, link maxima, framebuffer total) and **detail** fields (clocks, fan, profiling, traffic) every
  ``SLOW_EVERY_S``, held in between; the detail fields of watched hosts (an operator looking at them, an open
  incident) at every refresh.

The answers are turned back into the samples a scrape of the same node gives (its GPU's full identity labels on
each series), so ``map_dcgm_samples`` maps a node read through Prometheus exactly as it maps a scrape. A GPU the
identity does not know yet (a new node, a replaced GPU) makes the read ask for the identity again at once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from console.sources.dcgm import names
from console.sources.dcgm.render import escape_label_value
from console.sources.exposition import Sample
from console.sources.prometheus_queries import HOST_LABELS, METRIC_GROUPS, host_of
from console.sources.prometheus_results import vector_rows
from console.sources.workload_labels import WORKLOAD_LABELS

SLOW_EVERY_S = 15.0

# Hot fields that are 0 on a healthy GPU (counters, flags, reasons): once every GPU reporting them is known (from a
# read asking for all their series), a refresh asks only for the non-zero ones; the others are 0 as scraped.
SPARSE_FIELDS = frozenset(
    {
        "throttle_reasons",
        "ecc_sbe_volatile",
        "ecc_dbe_volatile",
        "remapped_rows_uncorrectable",
        "remapped_rows_failure",
        "remapped_rows_pending",
        names.NVLINK_CRC_FLIT,
        names.NVLINK_CRC_DATA,
        "nvlink_replay_errors",
        "nvlink_recovery_errors",
        "recovery_action",
        "pcie_replays",
        "xid_last",
    }
)
# Every field the fleet view shows or an incident rule reads (resources/rules/default.toml and the detectors:
# Xid, ECC, row remapping, NVLink, PCIe replays and link state, throttle reasons, thermal and HBM margins,
# the energy counter, recovery action): the sparse ones and the gauges every GPU reports.
HOT_FIELDS = SPARSE_FIELDS | frozenset(
    {
        "temperature_c",
        "power_w",
        "utilization_pct",
        "memory_used_mib",
        "memory_temperature_c",
        "thermal_margin_c",
        "energy_j",
        "pcie_link_gen",
        "pcie_link_width",
        "xid_count",
    }
)
# Limits and maxima a GPU keeps until someone changes its configuration: read with its identity.
STATIC_FIELDS = frozenset(
    {
        "slowdown_temp_c",
        "shutdown_temp_c",
        "memory_max_temp_c",
        "power_limit_w",
        names.POWER_REQUESTED_LIMIT,
        "power_default_limit_w",
        "pcie_link_gen_max",
        "pcie_link_width_max",
        names.FB_FREE,
        names.FB_RESERVED,
        names.FB_TOTAL,
        "mig_mode",
    }
)
DETAIL_FIELDS = frozenset(METRIC_GROUPS) - HOT_FIELDS - STATIC_FIELDS

GPU_KEY_LABELS = ("gpu", "UUID", "uuid")
INSTANCE_LABEL = "GPU_I_ID"
# The labels of a GPU's identity: what the DCGM mapping reads from a scraped series besides its name and value.
IDENTITY_LABELS = (
    *HOST_LABELS,
    *GPU_KEY_LABELS,
    INSTANCE_LABEL,
    "GPU_I_PROFILE",
    "pci_bus_id",
    "modelName",
    "modelname",
    names.DRIVER_VERSION_LABEL,
    *names.SERIAL_LABELS,
    names.VBIOS_LABEL,
    *WORKLOAD_LABELS,
)
# Extra labels the Xid series need: the gauge's message, the counter's code.
XID_LABELS = ("err_code", "err_msg", "xid")
# The identity is read from these fields' series: every GPU and MIG instance reports at least one of them.
IDENTITY_FIELDS = ("temperature_c", "memory_used_mib")
_FB_TOTAL_NAME = METRIC_GROUPS[names.FB_TOTAL][0]
_XID_NAMES = frozenset(METRIC_GROUPS["xid_last"]) | frozenset(METRIC_GROUPS["xid_count"])
_FB_USED_NAMES = frozenset(METRIC_GROUPS["memory_used_mib"])

GpuKey = tuple[str, str, str]  # host, GPU index (or UUID where series have no index), MIG instance ("" for none)


def _names(fields: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(name for f in fields for name in METRIC_GROUPS[f]))


_DETAIL_NAMES = frozenset(_names(DETAIL_FIELDS))


def _regex(metric_names: Iterable[str]) -> str:
    return "|".join(metric_names)  # metric names never contain regex metacharacters


def _selector(metric_names: Iterable[str], matchers: str) -> str:
    return f'{{__name__=~"{_regex(metric_names)}"{matchers}}}'


def host_regex(hosts: Iterable[str]) -> str:
    """A PromQL (RE2) regex matching exactly these host names, quoted for a label matcher."""
    escaped = ("".join(f"\\{c}" if c in r"\.+*?()|[]{}^$" else c for c in host) for host in sorted(hosts))
    return escape_label_value("|".join(escaped))


def key_of(labels: Mapping[str, str]) -> GpuKey | None:
    host = host_of(labels)
    gpu = labels.get("gpu") or labels.get("UUID") or labels.get("uuid")
    if host is None or not gpu:
        return None
    return host, gpu, labels.get(INSTANCE_LABEL, "")


@dataclass(frozen=True, slots=True)
class Query:
    kind: str  # "anchor", "identity", "hot", "slow", "watched"
    promql: str
    name: str = ""  # the one metric a hot query asks for (its series then come without __name__)
    field: str = ""  # the schema field a hot query feeds


@dataclass(slots=True)
class SiteTiers:
    """The state of one site's tiered reads: its GPUs' identity, the held slow fields, who is watched."""

    matchers: str = ""
    identity: dict[GpuKey, dict[str, str]] = field(default_factory=dict)
    identity_at: float = -math.inf  # time.time() of the identity and slow fields held
    # The slow fields as scraped series (built once per slow read, with the identity labels of that read)
    held_static: dict[GpuKey, list[Sample]] = field(default_factory=dict)
    held_detail: dict[GpuKey, list[Sample]] = field(default_factory=dict)
    watched: frozenset[str] = frozenset()
    host_labels: tuple[str, ...] = HOST_LABELS  # the host labels the site's series use (all three until known)
    key_labels: tuple[str, ...] = GPU_KEY_LABELS
    anchor: tuple[str, ...] = METRIC_GROUPS["temperature_c"]
    present: dict[str, frozenset[str]] = field(default_factory=dict)  # hot field -> its names the site has
    unmapped: frozenset[GpuKey] = frozenset()  # series no identity maps to a GPU (asked already)
    # Per GPU, its sparse fields at 0, as scraped series: what a refresh that asked only for non-zero ones adds
    zeros: dict[GpuKey, list[Sample]] = field(default_factory=dict)
    _with_xid: dict[tuple[GpuKey, tuple[tuple[str, str], ...]], dict[str, str]] = field(default_factory=dict)

    def plan(self, now: float) -> list[Query]:
        """The queries of one refresh (the identity and slow fields when they are due)."""
        by = self._by()
        m = self.matchers
        queries = [Query("anchor", self._anchor_query())]
        slow_due = now - self.identity_at >= SLOW_EVERY_S
        for f in sorted(HOT_FIELDS):
            labels = ", ".join((*by, *(XID_LABELS if f in ("xid_last", "xid_count") else ())))
            present = self.present.get(f, ())
            if len(present) == 1 and not slow_due:
                # The site's one spelling of this field: asked by name, its series need no __name__ (a third of
                # the bytes). The slow reads ask by group again, so a renamed metric is found within SLOW_EVERY_S.
                (name,) = present
                only = " != 0" if f in SPARSE_FIELDS else ""
                queries.append(Query("hot", f'max by ({labels}) ({{__name__="{name}"{m}}}{only})', name, f))
            else:
                queries.append(Query("hot", f"max by (__name__, {labels}) ({_selector(_names((f,)), m)})", field=f))
        if slow_due:
            queries.append(Query("identity", self.identity_query()))
            queries.append(Query("slow", self.slow_query()))
        elif self.watched:
            queries.append(Query("watched", self._watched_query(by)))
        return queries

    def _by(self) -> tuple[str, ...]:
        return (*self.host_labels, *self.key_labels, INSTANCE_LABEL)

    def slow_query(self) -> str:
        selector = _selector(_names(STATIC_FIELDS | DETAIL_FIELDS), self.matchers)
        return f"max by (__name__, {', '.join(self._by())}) ({selector})"

    def identity_query(self) -> str:
        selector = _selector(_names(IDENTITY_FIELDS), self.matchers)
        return f"group by ({', '.join(IDENTITY_LABELS)}) ({selector})"

    def _anchor_query(self) -> str:
        # Each host's newest scrape time (query results carry the evaluation time; timestamp() the sample's own).
        # One metric a GPU always has is enough: every sample of one scrape has the same time.
        either = " or ".join(f'timestamp({{__name__="{name}"{self.matchers}}})' for name in self.anchor)
        return f"max by ({', '.join(HOST_LABELS)}) ({either})"

    def _watched_query(self, by: Sequence[str]) -> str:
        regex = host_regex(self.watched)
        detail = _names(DETAIL_FIELDS)
        either = " or ".join(_selector(detail, f'{self.matchers}, {label}=~"{regex}"') for label in self.host_labels)
        return f"max by (__name__, {', '.join(by)}) ({either})"

    # -- answers ----

    def learn_identity(self, result: list[dict[str, Any]], where: str, now: float) -> None:
        identity: dict[GpuKey, dict[str, str]] = {}
        for labels, _value in vector_rows(result, where, named=False):
            key = key_of(labels)
            if key is not None:
                identity[key] = labels
        self.identity = identity
        self.identity_at = now
        self._with_xid.clear()
        self.present, self.zeros = {}, {}  # built on these labels: the next read asks for every series again
        rows = list(identity.values())
        self.host_labels = _labels_every_row_has(rows, HOST_LABELS)
        self.key_labels = _labels_every_row_has(rows, GPU_KEY_LABELS)

    def hold_slow(self, result: list[dict[str, Any]], hot_used: Mapping[GpuKey, float], where: str) -> None:
        """The slow fields until the next slow read; a framebuffer's free memory becomes its total (free moves
        with the used memory read at every refresh: a held free beside a new used would misstate the total)."""
        held: dict[GpuKey, list[tuple[str, float]]] = defaultdict(list)
        detail: dict[GpuKey, list[tuple[str, float]]] = defaultdict(list)
        free: dict[GpuKey, float] = {}
        reserved: dict[GpuKey, float] = {}
        totals: set[GpuKey] = set()
        fb_free, fb_reserved = set(METRIC_GROUPS[names.FB_FREE]), set(METRIC_GROUPS[names.FB_RESERVED])
        for labels, value in vector_rows(result, where):
            key = key_of(labels)
            if key is None:
                continue
            name = labels["__name__"]
            if name in fb_free:
                free[key] = value
            elif name in fb_reserved:
                reserved[key] = value
            elif name in _DETAIL_NAMES:
                detail[key].append((name, value))
            else:
                totals.update((key,) if name == _FB_TOTAL_NAME else ())
                held[key].append((name, value))
        for key, value in free.items():
            used = hot_used.get(key)
            if key in totals or used is None or not math.isfinite(value) or value < 0:
                held[key].append((METRIC_GROUPS[names.FB_FREE][0], value))
                continue
            held[key].append((_FB_TOTAL_NAME, used + value + max(0.0, reserved.get(key, 0.0))))
        self.held_static, self.held_detail = self._as_samples(held), self._as_samples(detail)

    def _as_samples(self, values: Mapping[GpuKey, list[tuple[str, float]]]) -> dict[GpuKey, list[Sample]]:
        out: dict[GpuKey, list[Sample]] = {}
        for key, pairs in values.items():
            known = self.identity.get(key)
            if known is not None:
                out[key] = [(name, known, value, None) for name, value in pairs]
        return out

    def hot_series(self, answers: Iterable[tuple[Query, list[dict[str, Any]]]], where: str) -> HotRead:
        """The hot answers as scraped series (each with its GPU's identity labels), per host."""
        read = HotRead()
        learned = dict(self.present)
        zeros: dict[GpuKey, list[Sample]] | None = None
        for query, result in answers:
            seen: set[str] = set()
            rows = vector_rows(result, where, named=not query.name)
            self._hot_rows(read, query.name, rows, seen)
            if not query.name:
                learned[query.field] = frozenset(seen)
                if query.field in SPARSE_FIELDS:
                    zeros = zeros if zeros is not None else defaultdict(list)
                    self._note_zeros(zeros, rows)
            elif query.field in SPARSE_FIELDS:
                read.sparse_names.add(query.name)
                read.nonzero.update((key_of(labels), query.name) for labels, _value in rows)
        self.present = learned
        if zeros is not None:
            self.zeros = {**self.zeros, **zeros}
        self._fill_zeros(read)
        return read

    def _note_zeros(self, zeros: dict[GpuKey, list[Sample]], rows: list[tuple[dict[str, str], float]]) -> None:
        for labels, _value in rows:
            key = key_of(labels)
            known = self.identity.get(key) if key is not None else None
            if key is not None and known is not None:
                zeros[key].append((labels["__name__"], known, 0.0, None))

    def _fill_zeros(self, read: HotRead) -> None:
        """The sparse fields a refresh asked only the non-zero series of: every other GPU reporting them is 0."""
        asked, nonzero, zeros, series = read.sparse_names, read.nonzero, self.zeros, read.series
        if not asked:
            return
        for key in read.keys:
            for sample in zeros.get(key, ()):
                if sample[0] in asked and (key, sample[0]) not in nonzero:
                    series[key[0]].append(sample)

    def _hot_rows(self, read: HotRead, name: str, rows: Iterable[tuple[dict[str, str], float]], seen: set[str]) -> None:
        identity, with_xid = self.identity, self._with_xid
        series, keys, used, unknown = read.series, read.keys, read.used, read.unknown
        host_labels = self.host_labels
        for labels, value in rows:
            host = labels.get(host_labels[0]) if len(host_labels) == 1 else host_of(labels)
            gpu = labels.get("gpu") or labels.get("UUID") or labels.get("uuid")
            if host is None or not gpu:
                continue
            key = (host, gpu, labels.get(INSTANCE_LABEL, ""))
            known = identity.get(key)
            if known is None:
                unknown.add(key)
                continue
            metric = name or labels["__name__"]
            if not name:
                seen.add(metric)
            if metric in _XID_NAMES and (value != 0 or metric == names.XID_COUNT_NAME):
                # The gauge's message and the counter's code are labels (Xid 0, "No Error", needs neither).
                extra = tuple((label, labels[label]) for label in XID_LABELS if label in labels)
                merged = with_xid.get((key, extra))
                if merged is None:
                    merged = with_xid[(key, extra)] = {**known, **dict(extra)}
                known = merged
            elif metric in _FB_USED_NAMES:
                used[key] = value
            series[host].append((metric, known, value, None))
            keys.add(key)

    def add_held(self, read: HotRead, watched: list[dict[str, Any]] | None, where: str) -> dict[str, list[Sample]]:
        """Every GPU of the hot read completed by its held static fields, and its detail fields: this read's for
        watched hosts (when ``watched`` is given), else the held ones."""
        fresh: dict[GpuKey, list[tuple[str, float]]] = defaultdict(list)
        for labels, value in vector_rows(watched or [], where):
            key = key_of(labels)
            if key is not None:
                fresh[key].append((labels["__name__"], value))
        now_read = self._as_samples(fresh)
        series = read.series
        static, detail = self.held_static, self.held_detail
        watching = watched is not None
        for key in read.keys:
            out = series[key[0]]
            out.extend(static.get(key, ()))
            if watching and key[0] in self.watched:
                out.extend(now_read.get(key, ()))
            else:
                out.extend(detail.get(key, ()))
        return series

    def forget_identity(self) -> None:
        self.identity_at = -math.inf
        self._with_xid.clear()


@dataclass(slots=True)
class HotRead:
    series: dict[str, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    keys: set[GpuKey] = field(default_factory=set)
    used: dict[GpuKey, float] = field(default_factory=dict)  # each GPU's memory used, for its held total
    unknown: set[GpuKey] = field(default_factory=set)  # GPUs the identity does not know yet
    nonzero: set[tuple[GpuKey | None, str]] = field(default_factory=set)  # sparse series this read returned
    sparse_names: set[str] = field(default_factory=set)  # sparse metrics this read asked only the non-zero of


def _labels_every_row_has(rows: Sequence[Mapping[str, str]], labels: Sequence[str]) -> tuple[str, ...]:
    """The labels up to the first one every row carries (``host_of`` picks that one), or all of them."""
    for i, label in enumerate(labels):
        if rows and all(row.get(label) for row in rows):
            return tuple(labels[: i + 1])
    return tuple(labels)


__all__ = ["DETAIL_FIELDS", "HOT_FIELDS", "SLOW_EVERY_S", "STATIC_FIELDS", "Sample", "SiteTiers", "key_of"]
