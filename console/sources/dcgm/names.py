"""DCGM metric names, old and 2026-renamed, mapped to ``GpuSample`` fields with their unit conversions.

dcgm-exporter names each series after the DCGM field it reads (``etc/default-counters.csv``). DCGM's 2026
naming standard renamed many fields (``DCGM_FI_DEV_GPU_TEMP`` -> ``DCGM_FI_DEV_GPU_TEMP_CELSIUS``) and keeps
the old names as deprecated aliases with the same numeric ids; released exporters still emit the old names.
So the table is keyed on every name an exporter may emit, and rendering uses the old (released) spelling.

Units are converted here, at the source boundary: energy mJ -> J, ratios (0..1) -> %, Hz -> MHz, bytes/s ->
MiB/s. Framebuffer values are already MiB and power already W. A few names feed private intermediate fields
(``_fb_free``...) that ``console.sources.dcgm.source`` combines: memory total = used + free + reserved, CRC
errors = FLIT + data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from console.samples.schema import RECOVERY_ACTION_CODES, RecoveryAction, ThrottleReason, throttle_reasons_from_mask

Converter = Callable[[float], Any]
MIB = 1024.0 * 1024.0

# Exporter-level metrics and labels that are not plain per-GPU values.
XID_GAUGE_NAMES = frozenset({"DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_XID_ERROR"})
XID_COUNT_NAME = "DCGM_EXP_XID_ERRORS_COUNT"
DRIVER_VERSION_LABEL = "DCGM_FI_DRIVER_VERSION"
SERIAL_LABELS = ("DCGM_FI_DEV_SERIAL", "DCGM_FI_DEV_BOARD_SERIAL")
VBIOS_LABEL = "DCGM_FI_DEV_VBIOS_VERSION"

# Intermediate fields, combined into schema fields after all series of a GPU were read.
FB_FREE = "_fb_free"
FB_RESERVED = "_fb_reserved"
FB_TOTAL = "_fb_total"
POWER_REQUESTED_LIMIT = "_power_requested_limit_w"
NVLINK_CRC_FLIT = "_nvlink_crc_flit"
NVLINK_CRC_DATA = "_nvlink_crc_data"
# Per-instance values that add up to the GPU's when only MIG instances report them.
ADDITIVE_FIELDS = frozenset({"memory_used_mib", FB_FREE, FB_RESERVED, FB_TOTAL})


# Builtins, not wrappers: a node payload converts ~300 values, and a Python-level call per value showed up.
# (Sentinels, NaN and Inf are filtered out before any converter runs, so int() never sees them.)
_number: Converter = float
_integer: Converter = int
_flag: Converter = bool


def _percent_from_ratio(value: float) -> float:
    return value * 100.0


def _mib_s_from_bytes_s(value: float) -> float:
    return value / MIB


def _joules_from_millijoules(value: float) -> float:
    return value / 1000.0


def _mhz_from_hz(value: float) -> float:
    return value / 1e6


def _throttle_reasons(value: float) -> tuple[ThrottleReason, ...]:
    return throttle_reasons_from_mask(int(value))


def _recovery_action(value: float) -> RecoveryAction | None:
    return RECOVERY_ACTION_CODES.get(int(value))


def _pstate(value: float) -> int | None:
    state = int(value)
    return state if 0 <= state <= 15 else None  # 32 = unknown


@dataclass(frozen=True, slots=True)
class DcgmMetric:
    """One value dcgm-exporter can emit: its released name, the 2026 name, and where it lands."""

    name: str  # the name released exporters emit (and what ``render`` writes)
    field: str  # GpuSample field, or an intermediate ``_name`` above
    convert: Converter  # exporter value -> schema unit
    kind: str  # Prometheus type: gauge or counter
    help: str
    renamed: str | None = None  # the 2026 DCGM name; same value and unit unless ``renamed_convert`` says otherwise
    renamed_convert: Converter | None = None


# The profiling ("DCP") metrics: ratios of time a unit was busy, and traffic in bytes/s (dcgm-exporter's
# default counters carry GR_ENGINE, TENSOR, DRAM and PCIe; SM_ACTIVE and NVLink are commonly added).
PROFILING_METRICS: tuple[DcgmMetric, ...] = (
    DcgmMetric(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "graphics_active_pct",
        _percent_from_ratio,
        "gauge",
        "Ratio of time the graphics engine is active.",
    ),
    DcgmMetric(
        "DCGM_FI_PROF_SM_ACTIVE",
        "sm_active_pct",
        _percent_from_ratio,
        "gauge",
        "The ratio of cycles an SM has at least 1 warp assigned.",
    ),
    DcgmMetric(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "tensor_active_pct",
        _percent_from_ratio,
        "gauge",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
    ),
    DcgmMetric(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "dram_active_pct",
        _percent_from_ratio,
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
    DcgmMetric(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "pcie_tx_mib_s",
        _mib_s_from_bytes_s,
        "gauge",
        "PCIe data transmitted, headers and payload (in bytes per second).",
    ),
    DcgmMetric(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "pcie_rx_mib_s",
        _mib_s_from_bytes_s,
        "gauge",
        "PCIe data received, headers and payload (in bytes per second).",
    ),
    DcgmMetric(
        "DCGM_FI_PROF_NVLINK_TX_BYTES",
        "nvlink_tx_mib_s",
        _mib_s_from_bytes_s,
        "gauge",
        "The rate of data transmitted over NVLink, not including protocol headers, in bytes per second.",
    ),
    DcgmMetric(
        "DCGM_FI_PROF_NVLINK_RX_BYTES",
        "nvlink_rx_mib_s",
        _mib_s_from_bytes_s,
        "gauge",
        "The rate of data received over NVLink, not including protocol headers, in bytes per second.",
    ),
)

METRICS: tuple[DcgmMetric, ...] = (
    DcgmMetric("DCGM_FI_DEV_SM_CLOCK", "sm_clock_mhz", _number, "gauge", "SM clock frequency (in MHz)."),
    DcgmMetric("DCGM_FI_DEV_MEM_CLOCK", "memory_clock_mhz", _number, "gauge", "Memory clock frequency (in MHz)."),
    DcgmMetric(
        "DCGM_FI_DEV_MEMORY_TEMP",
        "memory_temperature_c",
        _number,
        "gauge",
        "Memory temperature (in C).",
        "DCGM_FI_DEV_MEMORY_TEMP_CELSIUS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_GPU_TEMP",
        "temperature_c",
        _number,
        "gauge",
        "GPU temperature (in C).",
        "DCGM_FI_DEV_GPU_TEMP_CELSIUS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_GPU_TEMP_LIMIT",
        "thermal_margin_c",
        _number,
        "gauge",
        "Thermal margin: distance to the nearest slowdown threshold (in C).",
        "DCGM_FI_DEV_GPU_TEMP_MARGIN_CELSIUS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_SLOWDOWN_TEMP",
        "slowdown_temp_c",
        _number,
        "gauge",
        "Slowdown temperature threshold (in C).",
        "DCGM_FI_DEV_GPU_TEMP_SLOWDOWN_CELSIUS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_SHUTDOWN_TEMP",
        "shutdown_temp_c",
        _number,
        "gauge",
        "Shutdown temperature threshold (in C).",
        "DCGM_FI_DEV_GPU_TEMP_SHUTDOWN_CELSIUS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_MEM_MAX_OP_TEMP",
        "memory_max_temp_c",
        _number,
        "gauge",
        "Maximum operating temperature of the memory (in C).",
        "DCGM_FI_DEV_MEMORY_MAX_OP_TEMP_CELSIUS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_POWER_USAGE",
        "power_w",
        _number,
        "gauge",
        "Power draw (in W).",
        "DCGM_FI_DEV_BOARD_POWER_WATTS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_ENFORCED_POWER_LIMIT",
        "power_limit_w",
        _number,
        "gauge",
        "Power limit the driver enforces after all limiters (in W).",
        "DCGM_FI_DEV_BOARD_POWER_LIMIT_ENFORCED_WATTS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_POWER_MGMT_LIMIT",
        POWER_REQUESTED_LIMIT,
        _number,
        "gauge",
        "Power management limit (in W).",
        "DCGM_FI_DEV_BOARD_POWER_LIMIT_REQUESTED_WATTS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_POWER_MGMT_LIMIT_DEF",
        "power_default_limit_w",
        _number,
        "gauge",
        "Default power management limit (in W).",
        "DCGM_FI_DEV_BOARD_POWER_LIMIT_DEFAULT_WATTS",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "energy_j",
        _joules_from_millijoules,
        "counter",
        "Total energy consumption since boot (in mJ).",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "pcie_replays",
        _integer,
        "counter",
        "Total number of PCIe retries.",
        "DCGM_FI_DEV_PCIE_REPLAY_TOTAL",
    ),
    DcgmMetric("DCGM_FI_DEV_PCIE_LINK_GEN", "pcie_link_gen", _integer, "gauge", "PCIe current link generation."),
    DcgmMetric(
        "DCGM_FI_DEV_PCIE_MAX_LINK_GEN",
        "pcie_link_gen_max",
        _integer,
        "gauge",
        "PCIe maximum link generation.",
    ),
    DcgmMetric("DCGM_FI_DEV_PCIE_LINK_WIDTH", "pcie_link_width", _integer, "gauge", "PCIe current link width."),
    DcgmMetric(
        "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH",
        "pcie_link_width_max",
        _integer,
        "gauge",
        "PCIe maximum link width.",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_GPU_UTIL",
        "utilization_pct",
        _number,
        "gauge",
        "GPU utilization (in %).",
        "DCGM_FI_DEV_GPU_UTIL_RATIO",
        _percent_from_ratio,
    ),
    DcgmMetric("DCGM_FI_DEV_FB_USED", "memory_used_mib", _number, "gauge", "Framebuffer memory used (in MiB)."),
    DcgmMetric("DCGM_FI_DEV_FB_FREE", FB_FREE, _number, "gauge", "Framebuffer memory free (in MiB)."),
    DcgmMetric("DCGM_FI_DEV_FB_RESERVED", FB_RESERVED, _number, "gauge", "Framebuffer memory reserved (in MiB)."),
    DcgmMetric("DCGM_FI_DEV_FB_TOTAL", FB_TOTAL, _number, "gauge", "Total framebuffer memory (in MiB)."),
    DcgmMetric("DCGM_FI_DEV_FAN_SPEED", "fan_pct", _number, "gauge", "Fan speed (in %)."),
    DcgmMetric(
        "DCGM_FI_DEV_PSTATE",
        "pstate",
        _pstate,
        "gauge",
        "Performance state (P-State), 0 is fastest.",
        "DCGM_FI_DEV_GPU_PSTATE",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        "throttle_reasons",
        _throttle_reasons,
        "gauge",
        "Current clock event (throttle) reasons, a bitmask.",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "ecc_sbe_volatile",
        _integer,
        "counter",
        "Total single-bit volatile ECC errors.",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "ecc_dbe_volatile",
        _integer,
        "counter",
        "Total double-bit volatile ECC errors.",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "ecc_sbe_aggregate",
        _integer,
        "counter",
        "Total single-bit persistent ECC errors.",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "ecc_dbe_aggregate",
        _integer,
        "counter",
        "Total double-bit persistent ECC errors.",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "remapped_rows_correctable",
        _integer,
        "counter",
        "Number of remapped rows for correctable errors.",
        "DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "remapped_rows_uncorrectable",
        _integer,
        "counter",
        "Number of remapped rows for uncorrectable errors.",
        "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "remapped_rows_failure",
        _flag,
        "gauge",
        "Whether remapping of rows has failed.",
        "DCGM_FI_DEV_ROW_REMAP_FAILED",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
        "remapped_rows_pending",
        _flag,
        "gauge",
        "Whether remapping of rows is pending.",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        NVLINK_CRC_FLIT,
        _integer,
        "counter",
        "Total number of NVLink flow-control CRC errors.",
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_TOTAL",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        NVLINK_CRC_DATA,
        _integer,
        "counter",
        "Total number of NVLink data CRC errors.",
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_TOTAL",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
        "nvlink_replay_errors",
        _integer,
        "counter",
        "Total number of NVLink retries.",
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_TOTAL",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        "nvlink_recovery_errors",
        _integer,
        "counter",
        "Total number of NVLink recovery errors.",
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_TOTAL",
    ),
    DcgmMetric(
        "DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION",
        "recovery_action",
        _recovery_action,
        "gauge",
        "The driver's required recovery action (0 none, 1 GPU reset, 2 node reboot, 4 drain and reset).",
        "DCGM_FI_DEV_GPU_RECOVERY_ACTION",
    ),
    DcgmMetric("DCGM_FI_DEV_MIG_MODE", "mig_mode", _flag, "gauge", "MIG mode (1 enabled)."),
    *PROFILING_METRICS,
)

# Names that are not aliases of one of the above but carry the same value in another unit or spelling.
_EXTRA_NAMES: Mapping[str, tuple[str, Converter]] = {
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": (
        "throttle_reasons",
        _throttle_reasons,
    ),  # deprecated spelling of 112
    "DCGM_FI_DEV_SM_CLOCK_HERTZ": ("sm_clock_mhz", _mhz_from_hz),
    "DCGM_FI_DEV_MEMORY_CLOCK_HERTZ": ("memory_clock_mhz", _mhz_from_hz),
    "DCGM_FI_DEV_FAN_SPEED_RATIO": ("fan_pct", _percent_from_ratio),
}


def _build_lookup() -> dict[str, tuple[str, Converter]]:
    lookup: dict[str, tuple[str, Converter]] = {}
    for metric in METRICS:
        lookup[metric.name] = (metric.field, metric.convert)
        if metric.renamed:
            lookup[metric.renamed] = (metric.field, metric.renamed_convert or metric.convert)
    lookup.update(_EXTRA_NAMES)
    return lookup


# Every metric name an exporter may emit -> (GpuSample or intermediate field, converter to the schema's unit).
FIELD_BY_NAME: Mapping[str, tuple[str, Converter]] = _build_lookup()
# The released name for each schema/intermediate field: what ``render_dcgm_exposition`` writes.
METRIC_BY_FIELD: Mapping[str, DcgmMetric] = {metric.field: metric for metric in METRICS}

# DCGM "blank" sentinels (dcgm_structs.h): the exporter prints them as values when a field has no data.
INT32_BLANK = 0x7FFFFFF0
INT64_BLANK = 0x7FFFFFFFFFFFFFF0
FP64_BLANK = 140737488355328.0
BLANK_NOT_SUPPORTED_OFFSET = 2  # BLANK + 1 not found, + 2 not supported, + 3 not permissioned
# Real counters (energy in mJ) do pass 2**31, so only the sentinels' own 16-value windows count as blank.
SMALLEST_BLANK = float(INT32_BLANK)


def blank_kind(value: float) -> str | None:
    """``None`` for real data; "not_supported" or "blank" for a DCGM sentinel; "blank" for NaN and +-Inf.

    Call it only for values outside the fast path's plain range (below ``SMALLEST_BLANK`` and finite).
    """
    if math.isnan(value) or math.isinf(value):
        return "blank"
    if INT32_BLANK <= value < INT32_BLANK + 16 and value.is_integer():
        return "not_supported" if value == INT32_BLANK + BLANK_NOT_SUPPORTED_OFFSET else "blank"
    if FP64_BLANK <= value < FP64_BLANK + 16:
        return "not_supported" if value == FP64_BLANK + BLANK_NOT_SUPPORTED_OFFSET else "blank"
    if value >= 9.2e18:
        # The int64 sentinels: a float cannot tell the four apart, and no real value gets this far.
        # NOT_SUPPORTED is the one exporters show in practice (dcgm-exporter's README example ends in ...794).
        return "not_supported"
    return None


__all__ = [
    "ADDITIVE_FIELDS",
    "DRIVER_VERSION_LABEL",
    "FIELD_BY_NAME",
    "METRICS",
    "METRIC_BY_FIELD",
    "PROFILING_METRICS",
    "XID_COUNT_NAME",
    "XID_GAUGE_NAMES",
    "DcgmMetric",
    "blank_kind",
]
