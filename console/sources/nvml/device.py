"""One local GPU as the NVML source knows it: discovery, its static facts, and calls that remember what it lacks.

Values degrade per field, not per device: a getter that answers NOT_SUPPORTED (or FUNCTION_NOT_FOUND, or
NO_PERMISSION) gives ``None`` and is remembered on the device, so it is never called again; any other error gives
``None`` for this poll only. ``GpuIsLost`` from any call raises ``GpuLost`` for the source to mark the GPU lost.
Thresholds and maxima are static per device and read once, at discovery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from console.samples.schema import RecoveryAction

log = logging.getLogger(__name__)

# Return codes (identical in nvml.h and pynvml); matched by value so that any NVMLError subclass tree works.
SUCCESS = 0
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_DRIVER_NOT_LOADED = 9
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_FUNCTION_NOT_FOUND = 13
ERROR_GPU_IS_LOST = 15
ERROR_LIB_RM_VERSION_MISMATCH = 18

# Permanent per-device answers: stop asking.
CAPABILITY_ERRORS = frozenset({ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND, ERROR_NO_PERMISSION})

THRESHOLD_SHUTDOWN = 0
THRESHOLD_SLOWDOWN = 1
THRESHOLD_MEM_MAX = 2

FI_NVLINK_LINK_COUNT = 91  # pynvml NVML_FI_DEV_NVLINK_LINK_COUNT
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


class GpuLost(Exception):
    """Raised inside a device read when NVML says the GPU fell off the bus."""


def error_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


@dataclass(slots=True)
class NvmlDevice:
    """What the source knows about one GPU between polls (mutable, owned by the poll thread)."""

    index: int
    handle: Any
    uuid: str
    name: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    vbios_version: str | None = None
    slowdown_temp_c: float | None = None
    shutdown_temp_c: float | None = None
    memory_max_temp_c: float | None = None
    power_default_limit_w: float | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width_max: int | None = None
    nvlink_count: int = 0
    unsupported: set[str] = field(default_factory=set)
    dead_fields: set[tuple[int, int]] = field(default_factory=set)  # (field id, scope) answered NOT_SUPPORTED
    lost: bool = False
    last_recovery: RecoveryAction | None = None
    # Read every SLOW_READ_S only (console.sources.nvml.reading): kept between those reads.
    slow_read_at: float | None = None  # time.monotonic() of the last slow read
    pcie_tx_mib_s: float | None = None
    pcie_rx_mib_s: float | None = None
    nvlink_links_up: int | None = None
    nvlink_links_down: int | None = None


class DeviceCalls:
    """NVML calls on one device that degrade per field. ``nvml`` is pynvml or a module like it (tests: a fake)."""

    __slots__ = ("nvml",)

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def optional(self, func: Callable[..., Any], *args: Any) -> Any:
        """A call whose failure only means "not reported" (identity strings and the like)."""
        try:
            return func(*args)
        except self.nvml.NVMLError as exc:
            if error_code(exc) == ERROR_GPU_IS_LOST:
                raise GpuLost from None
            return None

    def call(self, dev: NvmlDevice, name: str, func: Callable[..., Any], *args: Any) -> Any:
        """One getter for schema field ``name``; NOT_SUPPORTED makes it ``None`` now and skipped later."""
        if name in dev.unsupported:
            return None
        try:
            return func(dev.handle, *args)
        except self.nvml.NVMLError as exc:
            self.note_failure(dev, name, exc)
            return None

    def note_failure(self, dev: NvmlDevice, name: str, exc: BaseException) -> None:
        code = error_code(exc)
        if code == ERROR_GPU_IS_LOST:
            raise GpuLost from None
        if code in CAPABILITY_ERRORS:
            dev.unsupported.add(name)
            log.debug("GPU %d: %s unsupported (%s)", dev.index, name, exc)
        else:
            log.debug("GPU %d: %s failed this poll: %s", dev.index, name, exc)

    def field_values(self, dev: NvmlDevice, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], float]:
        """One batched ``nvmlDeviceGetFieldValues``; each entry's own return code is checked."""
        request = [key for key in wanted if key not in dev.dead_fields]
        if not request:
            return {}
        try:
            values = self.nvml.nvmlDeviceGetFieldValues(dev.handle, request)
        except self.nvml.NVMLError as exc:
            code = error_code(exc)
            if code == ERROR_GPU_IS_LOST:
                raise GpuLost from None
            if code in CAPABILITY_ERRORS:
                dev.dead_fields.update(request)
            return {}
        out: dict[tuple[int, int], float] = {}
        for key, entry in zip(request, values, strict=False):
            ret = int(entry.nvmlReturn)
            if ret == SUCCESS:
                member = _VALUE_MEMBERS[entry.valueType] if 0 <= entry.valueType < len(_VALUE_MEMBERS) else None
                if member is not None:
                    out[key] = getattr(entry.value, member)
            elif ret == ERROR_GPU_IS_LOST:
                raise GpuLost
            elif ret in CAPABILITY_ERRORS:
                dev.dead_fields.add(key)
        return out


def discover_device(
    calls: DeviceCalls, index: int, mark_lost: Callable[[NvmlDevice], None], nvlink_fields: Collection[str]
) -> NvmlDevice | None:
    """The GPU at ``index`` with its identity and static facts; None when it is not ours to read (e.g. outside
    our cgroup). A GPU lost during discovery is returned, marked lost. ``nvlink_fields``: the schema fields that
    a GPU without NVLink does not support."""
    nvml = calls.nvml
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        if error_code(exc) == ERROR_GPU_IS_LOST:
            dev = NvmlDevice(index=index, handle=None, uuid=f"GPU-unknown-index-{index}")
            mark_lost(dev)
            return dev
        log.warning("GPU %d skipped: %s", index, exc)  # e.g. NO_PERMISSION for a GPU outside our cgroup
        return None
    try:
        uuid = nvml.nvmlDeviceGetUUID(handle)
    except nvml.NVMLError as exc:
        uuid = f"GPU-unknown-index-{index}"
        if error_code(exc) == ERROR_GPU_IS_LOST:
            dev = NvmlDevice(index=index, handle=handle, uuid=uuid)
            mark_lost(dev)
            return dev
    dev = NvmlDevice(index=index, handle=handle, uuid=uuid)
    try:
        dev.name = calls.optional(nvml.nvmlDeviceGetName, handle)
        dev.serial = calls.optional(nvml.nvmlDeviceGetSerial, handle)
        dev.vbios_version = calls.optional(nvml.nvmlDeviceGetVbiosVersion, handle)
        pci = calls.optional(nvml.nvmlDeviceGetPciInfo_v3, handle)
        dev.pci_bus_id = getattr(pci, "busId", None) if pci is not None else None
        # Thresholds and maxima are static per device: read once at discovery.
        threshold = nvml.nvmlDeviceGetTemperatureThreshold
        dev.slowdown_temp_c = calls.call(dev, "slowdown_temp_c", threshold, THRESHOLD_SLOWDOWN)
        dev.shutdown_temp_c = calls.call(dev, "shutdown_temp_c", threshold, THRESHOLD_SHUTDOWN)
        dev.memory_max_temp_c = calls.call(dev, "memory_max_temp_c", threshold, THRESHOLD_MEM_MAX)
        default_mw = calls.call(dev, "power_default_limit_w", nvml.nvmlDeviceGetPowerManagementDefaultLimit)
        dev.power_default_limit_w = default_mw / 1000.0 if default_mw is not None else None
        dev.pcie_link_gen_max = calls.call(dev, "pcie_link_gen_max", nvml.nvmlDeviceGetMaxPcieLinkGeneration)
        dev.pcie_link_width_max = calls.call(dev, "pcie_link_width_max", nvml.nvmlDeviceGetMaxPcieLinkWidth)
        links = calls.field_values(dev, [(FI_NVLINK_LINK_COUNT, 0)]).get((FI_NVLINK_LINK_COUNT, 0))
        dev.nvlink_count = int(links) if links else 0
        if not dev.nvlink_count:
            dev.unsupported.update(nvlink_fields)
    except GpuLost:
        mark_lost(dev)
    return dev
