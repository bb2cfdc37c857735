"""``nvidia-smi --query-gpu`` without the driver library: the field list, the command line and the CSV parser.

Used by the agentless SSH source. The fields are those of reference section 4.2 that map onto
``GpuSample``; the parser reads ``--format=csv,noheader,nounits`` output (one line per GPU, ``", "`` between
columns) and turns it into ``GpuSample`` values in the schema's units (nvidia-smi already speaks W, MiB, MHz,
degC and %).

Not reported by ``--query-gpu`` and therefore left ``None`` (not flagged unsupported, the device may well
support them): energy, absolute temperature thresholds, PCIe replays, NVLink counters and the last Xid.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from console.samples.schema import (
    RECOVERY_ACTION_CODES,
    GpuSample,
    ProcessWorkload,
    RecoveryAction,
    throttle_reasons_from_mask,
)


class ValueKind(StrEnum):
    TEXT = "text"
    FLOAT = "float"
    INT = "int"
    PSTATE = "pstate"  # "P0".."P15"
    HEX_MASK = "hex_mask"  # clock-event reasons, "0x0000000000000001"
    BOOL = "bool"  # Enabled/Disabled, Yes/No, Active/Not Active, Pending
    RECOVERY = "recovery"  # gpu_recovery_action: "None", "Drain and Reset", ...


@dataclass(frozen=True, slots=True)
class QueryField:
    """One ``--query-gpu`` property and the ``GpuSample`` field it fills."""

    name: str
    target: str
    kind: ValueKind
    required: bool = False  # a GPU row without it is malformed (identity)


QUERY_FIELDS: tuple[QueryField, ...] = (
    QueryField("index", "index", ValueKind.INT, required=True),
    QueryField("uuid", "uuid", ValueKind.TEXT, required=True),
    QueryField("name", "name", ValueKind.TEXT),
    QueryField("serial", "serial", ValueKind.TEXT),
    QueryField("pci.bus_id", "pci_bus_id", ValueKind.TEXT),
    QueryField("driver_version", "driver_version", ValueKind.TEXT),
    QueryField("vbios_version", "vbios_version", ValueKind.TEXT),
    QueryField("utilization.gpu", "utilization_pct", ValueKind.FLOAT),
    QueryField("memory.used", "memory_used_mib", ValueKind.FLOAT),
    QueryField("memory.total", "memory_total_mib", ValueKind.FLOAT),
    # power.draw is the 1 s average on Ampere+ (like NVML's PowerUsage), the value the other sources report
    QueryField("power.draw", "power_w", ValueKind.FLOAT),
    QueryField("enforced.power.limit", "power_limit_w", ValueKind.FLOAT),
    QueryField("power.default_limit", "power_default_limit_w", ValueKind.FLOAT),
    QueryField("temperature.gpu", "temperature_c", ValueKind.FLOAT),
    QueryField("temperature.memory", "memory_temperature_c", ValueKind.FLOAT),
    QueryField("temperature.gpu.tlimit", "thermal_margin_c", ValueKind.FLOAT),
    QueryField("fan.speed", "fan_pct", ValueKind.FLOAT),
    QueryField("clocks.current.sm", "sm_clock_mhz", ValueKind.FLOAT),
    QueryField("clocks.current.memory", "memory_clock_mhz", ValueKind.FLOAT),
    QueryField("pstate", "pstate", ValueKind.PSTATE),
    QueryField("clocks_event_reasons.active", "throttle_reasons", ValueKind.HEX_MASK),
    QueryField("ecc.errors.corrected.volatile.total", "ecc_sbe_volatile", ValueKind.INT),
    QueryField("ecc.errors.uncorrected.volatile.total", "ecc_dbe_volatile", ValueKind.INT),
    QueryField("ecc.errors.corrected.aggregate.total", "ecc_sbe_aggregate", ValueKind.INT),
    QueryField("ecc.errors.uncorrected.aggregate.total", "ecc_dbe_aggregate", ValueKind.INT),
    QueryField("remapped_rows.correctable", "remapped_rows_correctable", ValueKind.INT),
    QueryField("remapped_rows.uncorrectable", "remapped_rows_uncorrectable", ValueKind.INT),
    QueryField("remapped_rows.pending", "remapped_rows_pending", ValueKind.BOOL),
    QueryField("remapped_rows.failure", "remapped_rows_failure", ValueKind.BOOL),
    QueryField("pcie.link.gen.current", "pcie_link_gen", ValueKind.INT),
    QueryField("pcie.link.gen.max", "pcie_link_gen_max", ValueKind.INT),
    QueryField("pcie.link.width.current", "pcie_link_width", ValueKind.INT),
    QueryField("pcie.link.width.max", "pcie_link_width_max", ValueKind.INT),
    QueryField("gpu_recovery_action", "recovery_action", ValueKind.RECOVERY),
    QueryField("mig.mode.current", "mig_mode", ValueKind.BOOL),
)

# Values nvidia-smi prints where the device does not have the feature: null plus a capability flag.
_UNSUPPORTED_TEXT = frozenset(
    {"n/a", "[n/a]", "not supported", "[not supported]", "[requested functionality has been deprecated]"}
)
# Any other bracketed text ("[Unknown Error]", "[GPU requires reset]", "[Insufficient Permissions]") is a
# failure to read the value this time: null, but not a claim that the device lacks the feature.
_BOOL_TEXT: Mapping[str, bool] = {
    "enabled": True,
    "disabled": False,
    "yes": True,
    "no": False,
    "active": True,
    "not active": False,
    "pending": True,
    "true": True,
    "false": False,
}
# nvidia-smi and the kernel's Xid 154 line spell actions in words ("Drain and Reset", "GPU Reset Required").
_RECOVERY_TEXT: Mapping[str, RecoveryAction] = {
    "none": RecoveryAction.NONE,
    "reset": RecoveryAction.GPU_RESET,
    "gpureset": RecoveryAction.GPU_RESET,
    "gpuresetrequired": RecoveryAction.GPU_RESET,
    "reboot": RecoveryAction.NODE_REBOOT,
    "nodereboot": RecoveryAction.NODE_REBOOT,
    "noderebootrequired": RecoveryAction.NODE_REBOOT,
    "drainp2p": RecoveryAction.DRAIN_P2P,
    "drainandreset": RecoveryAction.DRAIN_AND_RESET,
    "recoverimexdomain": RecoveryAction.RECOVER_IMEX_DOMAIN,
    "busreset": RecoveryAction.BUS_RESET,
    "systemreboot": RecoveryAction.SYSTEM_REBOOT,
}
_RECOVERY_CODE = re.compile(r"^0x([0-9a-f]+)\b")
# ``nounits`` should have removed these; tolerate them so a plain ``--format=csv,noheader`` also parses.
_NUMBER_WITH_UNIT = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(?:W|%|MiB|MHz|C|us|ms)?$")
_PSTATE = re.compile(r"^P(\d{1,2})$")
_DEVICE_HANDLE_NOTICE = re.compile(r"^Unable to determine the device handle for GPU", re.IGNORECASE)
_INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')


class NvidiaSmiParseError(ValueError):
    """Output that is not what the query asked for; the message names the line and column."""

    def __init__(self, message: str, line: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class QueryResult:
    gpus: tuple[GpuSample, ...]
    # "Unable to determine the device handle for GPU...": a GPU the driver cannot reach (often off the bus)
    device_notices: tuple[str, ...] = ()


def query_arguments(fields: Sequence[QueryField] = QUERY_FIELDS) -> list[str]:
    """The arguments after ``nvidia-smi`` for one poll."""
    return [f"--query-gpu={','.join(f.name for f in fields)}", "--format=csv,noheader,nounits"]


def invalid_query_fields(output: str) -> tuple[str, ...]:
    """Fields an older nvidia-smi rejected (``Field "x" is not a valid field to query.``)."""
    return tuple(_INVALID_FIELD.findall(output))


def device_notices(output: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in output.splitlines() if _DEVICE_HANDLE_NOTICE.match(line.strip()))


def parse_query_output(text: str, fields: Sequence[QueryField] = QUERY_FIELDS) -> QueryResult:
    """Parse ``--format=csv,noheader,nounits`` output for ``fields``; raises ``NvidiaSmiParseError``."""
    gpus: list[GpuSample] = []
    notices: list[str] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if _DEVICE_HANDLE_NOTICE.match(stripped):
            notices.append(stripped)
            continue
        gpus.append(parse_query_line(stripped, fields, line_no))
    seen: set[str] = set()
    for gpu in gpus:
        if gpu.uuid in seen:
            raise NvidiaSmiParseError(f"GPU {gpu.uuid} appears twice in the output")
        seen.add(gpu.uuid)
    return QueryResult(gpus=tuple(gpus), device_notices=tuple(notices))


def parse_query_line(line: str, fields: Sequence[QueryField], line_no: int = 1) -> GpuSample:
    """One GPU's row. Column count and the type of every value are checked; the error names both."""
    values = next(csv.reader([line], skipinitialspace=True))
    if len(values) != len(fields):
        raise NvidiaSmiParseError(
            f"line {line_no}: expected {len(fields)} columns, got {len(values)}: {_shorten(line)!r}", line_no
        )
    kwargs: dict[str, Any] = {}
    unsupported: list[str] = []
    for field, raw in zip(fields, values, strict=True):
        value = raw.strip()
        lowered = value.lower()
        if lowered in _UNSUPPORTED_TEXT or not value or (value.startswith("[") and value.endswith("]")):
            if field.required:
                raise NvidiaSmiParseError(
                    f"line {line_no}, column {field.name}: required value missing ({value!r})",
                    line_no,
                    field.name,
                )
            if lowered in _UNSUPPORTED_TEXT:
                unsupported.append(field.target)
            continue
        try:
            kwargs[field.target] = _convert(field.kind, value)
        except ValueError as exc:
            raise NvidiaSmiParseError(
                f"line {line_no}, column {field.name}: {exc}, got {_shorten(value)!r}", line_no, field.name
            ) from None
    kwargs["unsupported"] = tuple(unsupported)
    return GpuSample(**kwargs)


def _convert(kind: ValueKind, value: str) -> Any:
    if kind is ValueKind.TEXT:
        return value
    if kind is ValueKind.FLOAT or kind is ValueKind.INT:
        match = _NUMBER_WITH_UNIT.match(value)
        if match is None:
            raise ValueError("expected a number")
        number = match.group(1)
        if kind is ValueKind.FLOAT:
            return float(number)
        if "." in number:
            raise ValueError("expected a whole number")
        return int(number)
    if kind is ValueKind.PSTATE:
        match = _PSTATE.match(value)
        if match is None:
            raise ValueError("expected a performance state P0..P15")
        return int(match.group(1))
    if kind is ValueKind.HEX_MASK:
        try:
            return throttle_reasons_from_mask(int(value, 16))
        except ValueError:
            raise ValueError("expected a hexadecimal bitmask") from None
    if kind is ValueKind.BOOL:
        try:
            return _BOOL_TEXT[value.lower()]
        except KeyError:
            raise ValueError("expected Enabled/Disabled, Yes/No or Active/Not Active") from None
    return _recovery_action(value)


def _recovery_action(value: str) -> RecoveryAction:
    lowered = value.lower()
    code = _RECOVERY_CODE.match(lowered)  # "0x4 (Drain and Reset)" as in the kernel's Xid 154 line
    if code is not None:
        action = RECOVERY_ACTION_CODES.get(int(code.group(1), 16))
        if action is not None:
            return action
    key = re.sub(r"[^a-z0-9]", "", lowered.split("(")[-1] if "(" in lowered else lowered)
    if key in _RECOVERY_TEXT:
        return _RECOVERY_TEXT[key]
    raise ValueError("unknown GPU recovery action")


COMPUTE_APPS_FIELDS = ("gpu_uuid", "pid", "process_name", "used_memory")


def compute_apps_arguments() -> list[str]:
    """The arguments after ``nvidia-smi`` for the compute processes (host PIDs) of every GPU."""
    return [f"--query-compute-apps={','.join(COMPUTE_APPS_FIELDS)}", "--format=csv,noheader,nounits"]


def parse_compute_apps(text: str) -> dict[str, tuple[ProcessWorkload, ...]]:
    """GPU UUID -> its compute processes; raises ``NvidiaSmiParseError`` naming the line."""
    apps: dict[str, list[ProcessWorkload]] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.lower().startswith("no running"):  # "No running processes found"
            continue
        values = [value.strip() for value in next(csv.reader([stripped], skipinitialspace=True))]
        if len(values) != len(COMPUTE_APPS_FIELDS) or not values[1].isdigit():
            raise NvidiaSmiParseError(f"compute apps line {line_no}: expected uuid, pid, name, memory", line_no)
        uuid, pid, name, memory = values
        match = _NUMBER_WITH_UNIT.match(memory)
        used = float(match.group(1)) if match is not None else None  # "[N/A]" where the driver cannot say
        apps.setdefault(uuid, []).append(ProcessWorkload(int(pid), name or None, used))
    return {uuid: tuple(entries) for uuid, entries in apps.items()}


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "COMPUTE_APPS_FIELDS",
    "QUERY_FIELDS",
    "NvidiaSmiParseError",
    "QueryField",
    "QueryResult",
    "ValueKind",
    "compute_apps_arguments",
    "device_notices",
    "invalid_query_fields",
    "parse_compute_apps",
    "parse_query_line",
    "parse_query_output",
    "query_arguments",
]
