"""The PromQL the ``prometheus`` source sends: one instant (or range) query per group of metric names feeding one
schema field, aggregated to the labels a GPU's identity and mapping need, scoped by the site's selector."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from console.sources.dcgm import names
from console.sources.dcgm.render import escape_label_value
from console.sources.workload_labels import WORKLOAD_LABELS

HOST_LABELS = ("Hostname", "hostname", "instance")
# Labels a GPU's identity and mapping need (the parser lowercases names, so both spellings are kept).
KEEP_LABELS = (
    "__name__",
    *HOST_LABELS,
    "UUID",
    "uuid",
    "gpu",
    "pci_bus_id",
    "modelName",
    "modelname",
    names.DRIVER_VERSION_LABEL,
    *names.SERIAL_LABELS,
    names.VBIOS_LABEL,
    "GPU_I_ID",
    "GPU_I_PROFILE",
    "err_code",
    "err_msg",
    "xid",
    *WORKLOAD_LABELS,  # pods and HPC jobs: kept as the GPU's workload, never as identity (the mapping's business)
)


def _metric_groups() -> dict[str, tuple[str, ...]]:
    """Schema (or intermediate) field -> every exporter name that feeds it, plus the Xid gauge and counter."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, (field_name, _convert) in names.FIELD_BY_NAME.items():
        groups[field_name].append(name)
    groups["xid_last"] = sorted(names.XID_GAUGE_NAMES)
    groups["xid_count"] = [names.XID_COUNT_NAME]
    return {key: tuple(sorted(value)) for key, value in groups.items()}


METRIC_GROUPS: Mapping[str, tuple[str, ...]] = _metric_groups()
_ALL_NAMES = tuple(sorted({name for group in METRIC_GROUPS.values() for name in group}))


def _selector(metric_names: Iterable[str], matchers: str = "") -> str:
    regex = "|".join(metric_names)  # metric names never contain regex metacharacters
    return f'{{__name__=~"{regex}"{matchers}}}'


def site_matchers(selector: str) -> str:
    """The inventory's ``selector = '{job="dcgm"}'`` as matchers to append inside a query's braces."""
    inner = selector.strip().removeprefix("{").removesuffix("}").strip().strip(",")
    return f", {inner}" if inner else ""


def instant_query(metric_names: Iterable[str], matchers: str = "") -> str:
    return f"max by ({', '.join(KEEP_LABELS)}) ({_selector(metric_names, matchers)})"


def scrape_time_query(matchers: str = "") -> str:
    """Each host's newest scrape time: query results carry the evaluation time, ``timestamp()`` the sample's own."""
    # One timestamp() per metric joined with ``or``: timestamp() drops the name, and over a regex selector the
    # series of two metrics would collide ("vector cannot contain metrics with the same labelset"). Every sample
    # of one scrape has the same time, so whichever metric a node has tells it.
    either = " or ".join(f"timestamp({_selector((name,), matchers)})" for name in _ALL_NAMES)
    return f"max by ({', '.join(HOST_LABELS)}) ({either})"


def node_query(metric_names: Sequence[str], node: str, matchers: str = "") -> str:
    """The metrics of one node, whichever host label carries its name."""
    value = escape_label_value(node)
    either = " or ".join(_selector(metric_names, f'{matchers}, {label}="{value}"') for label in HOST_LABELS)
    return f"max by ({', '.join(KEEP_LABELS)}) ({either})"


def host_of(labels: Mapping[str, str]) -> str | None:
    for label in HOST_LABELS:
        value = labels.get(label)
        if value:
            return value
    return None


MAX_POINTS_PER_SERIES = 11_000  # Prometheus refuses range queries of more points per series than this


def fit_step(since: float, until: float, step: float) -> float:
    """A range query's step: at least ``step``, and coarse enough for Prometheus' point limit per series."""
    if not (math.isfinite(since) and math.isfinite(until) and until > since):
        raise ValueError(f"need since < until, got {since} .. {until}")
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be > 0, got {step}")
    return max(step, (until - since) / (MAX_POINTS_PER_SERIES - 1))
