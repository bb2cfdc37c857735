"""Write normalized samples as dcgm-exporter would: HELP/TYPE lines, its metric names and its label set.

The node agent's ``/metrics`` and ``gpu-console simulate`` serve this, so an existing Prometheus and Grafana
can scrape our nodes unchanged. Labels follow dcgm-exporter's template order: ``gpu``, ``UUID``,
``pci_bus_id``, ``device``, ``modelName``, ``Hostname`` (``hostname`` since the 2026 exporter), then
label-type fields (``DCGM_FI_DRIVER_VERSION``, and the serial and VBIOS when known).

Every schema field with a DCGM name is written in the exporter's unit (energy in mJ); ``None`` is omitted.
Two schema fields have no one-to-one DCGM field: memory total is written as ``FB_TOTAL`` plus ``FB_FREE``
(= total - used), and the NVLink CRC total (FLIT + data) under the FLIT name. ``parse_dcgm_payload`` reads
all of it back to the same values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from console.samples.schema import RECOVERY_ACTION_CODES, EventKind, GpuSample, NodeSample, throttle_mask
from console.sources.dcgm import names

_RECOVERY_CODE = {action: code for code, action in RECOVERY_ACTION_CODES.items()}
_XID_NAME = "DCGM_FI_DEV_XID_ERRORS"
_XID_HELP = "Value of the last XID error encountered."


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _memory_free(gpu: GpuSample) -> float | None:
    if gpu.memory_total_mib is None or gpu.memory_used_mib is None:
        return None
    return max(0.0, gpu.memory_total_mib - gpu.memory_used_mib)


def _energy_mj(gpu: GpuSample) -> float | None:
    # round: J * 1000 must not print 4742776.000000001 for a counter the exporter reports in whole mJ
    return None if gpu.energy_j is None else round(gpu.energy_j * 1000.0, 3)


def _throttle(gpu: GpuSample) -> int | None:
    return None if "throttle_reasons" in gpu.unsupported else throttle_mask(gpu.throttle_reasons)


def _recovery(gpu: GpuSample) -> int | None:
    return None if gpu.recovery_action is None else _RECOVERY_CODE[gpu.recovery_action]


def _ratio_of(field: str) -> Callable[[GpuSample], float | None]:
    def ratio(gpu: GpuSample) -> float | None:
        value: float | None = getattr(gpu, field)
        return None if value is None else round(value / 100.0, 6)

    return ratio


def _bytes_s_of(field: str) -> Callable[[GpuSample], float | None]:
    def rate(gpu: GpuSample) -> float | None:
        value: float | None = getattr(gpu, field)
        return None if value is None else round(value * names.MIB)

    return rate


# Fields whose exporter value is not simply ``getattr(gpu, field)``; ``None`` means "not written".
_SPECIAL: dict[str, Callable[[GpuSample], float | int | bool | None]] = {
    names.FB_FREE: _memory_free,
    names.FB_TOTAL: lambda gpu: gpu.memory_total_mib,
    names.FB_RESERVED: lambda gpu: None,
    names.POWER_REQUESTED_LIMIT: lambda gpu: None,
    names.NVLINK_CRC_FLIT: lambda gpu: gpu.nvlink_crc_errors,
    names.NVLINK_CRC_DATA: lambda gpu: None,
    "energy_j": _energy_mj,
    "throttle_reasons": _throttle,
    "recovery_action": _recovery,
    **{m.field: _ratio_of(m.field) for m in names.PROFILING_METRICS if m.field.endswith("_pct")},
    **{m.field: _bytes_s_of(m.field) for m in names.PROFILING_METRICS if m.field.endswith("_mib_s")},
}


def _labels(gpu: GpuSample, node: str, hostname_label: str) -> str:
    pairs: list[tuple[str, str | None]] = [
        ("gpu", str(gpu.index)),
        ("UUID", gpu.uuid),
        ("pci_bus_id", gpu.pci_bus_id),
        ("device", f"nvidia{gpu.index}"),
        ("modelName", gpu.name),
        (hostname_label, node),
        (names.DRIVER_VERSION_LABEL, gpu.driver_version),
        (names.SERIAL_LABELS[0], gpu.serial),
        (names.VBIOS_LABEL, gpu.vbios_version),
    ]
    return ",".join(f'{key}="{escape_label_value(value)}"' for key, value in pairs if value)


def _xid_message(sample: NodeSample, gpu: GpuSample) -> str:
    for event in reversed(sample.events):
        if event.kind is EventKind.XID and event.gpu_uuid == gpu.uuid and event.code == gpu.xid_last:
            return event.message
    return "No Error" if gpu.xid_last == 0 else ""


def _family(name: str, kind: str, help_text: str, lines: Iterable[str]) -> list[str]:
    body = list(lines)
    if not body:
        return []
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *body]


def render_dcgm_exposition(
    samples: Sequence[NodeSample], *, hostname_label: str = "Hostname", timestamps: bool = False
) -> str:
    """The text a dcgm-exporter on these nodes would serve (one family per metric, all nodes' GPUs in it).

    ``hostname_label`` is "Hostname" (released exporters) or "hostname" (2026). With ``timestamps`` every
    series carries the sample's time, which ``parse_dcgm_payload`` then uses as the sample time.
    """
    rows: list[tuple[NodeSample, GpuSample, str, str]] = []
    for sample in samples:
        suffix = f" {math.floor(sample.time * 1000)}" if timestamps else ""
        for gpu in sample.gpus:
            rows.append((sample, gpu, _labels(gpu, sample.node, hostname_label), suffix))
    out: list[str] = []
    for metric in names.METRICS:
        special = _SPECIAL.get(metric.field)
        series = []
        for _sample, gpu, labels, suffix in rows:
            value = special(gpu) if special is not None else getattr(gpu, metric.field)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            series.append(f"{metric.name}{{{labels}}} {format_value(value)}{suffix}")
        out.extend(_family(metric.name, metric.kind, metric.help, series))
    xid_series = []
    for sample, gpu, labels, suffix in rows:
        if gpu.xid_last is None:
            continue
        message = escape_label_value(_xid_message(sample, gpu))
        xid_labels = f'{labels},err_code="{gpu.xid_last}",err_msg="{message}"'
        xid_series.append(f"{_XID_NAME}{{{xid_labels}}} {gpu.xid_last}{suffix}")
    out.extend(_family(_XID_NAME, "gauge", _XID_HELP, xid_series))
    return "\n".join(out) + "\n" if out else ""


__all__ = ["escape_label_value", "format_value", "render_dcgm_exposition"]
