"""The NVML source: this machine's GPUs through nvidia-ml-py (module ``pynvml``).

Every blocking NVML call of a poll runs through one ``BlockingCallGuard`` (a hung driver call never leads to
two in flight). Values degrade per field: a call that reports NOT_SUPPORTED gives ``None``, is remembered as
unsupported for that device and is not called again. Xid and other critical events arrive on their own thread
(``console.sources.nvml.events``) and are attached to the next sample. ``GpuIsLost`` on any call marks that
GPU lost and emits a GPU_LOST event once. A machine without the library or driver simply has no local GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from console.samples.results import PollFailure, SourceError
from console.samples.schema import (
    RECOVERY_ACTION_CODES,
    EventKind,
    GpuEvent,
    GpuSample,
    NodeSample,
    RecoveryAction,
    throttle_reasons_from_mask,
)
from console.sources.base import BlockingCallGuard, SourceContext
from console.sources.nvml.events import EventWatcher

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

NO_GPU_ERRORS = {
    ERROR_DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded",
    ERROR_LIBRARY_NOT_FOUND: "the NVML library (libnvidia-ml.so.1) was not found",
    ERROR_LIB_RM_VERSION_MISMATCH: "NVML and kernel driver versions differ (upgraded without a reboot?)",
}
# Permanent per-device answers: stop asking.
_CAPABILITY_ERRORS = frozenset({ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND, ERROR_NO_PERMISSION})

TEMPERATURE_GPU = 0
THRESHOLD_SHUTDOWN = 0
THRESHOLD_SLOWDOWN = 1
THRESHOLD_MEM_MAX = 2
CLOCK_SM = 1
CLOCK_MEM = 2
PSTATE_UNKNOWN = 32

# Field ids (pynvml NVML_FI_DEV_*)
FI_ECC_SBE_VOL_TOTAL = 3
FI_ECC_DBE_VOL_TOTAL = 4
FI_ECC_SBE_AGG_TOTAL = 5
FI_ECC_DBE_AGG_TOTAL = 6
FI_NVLINK_CRC_FLIT_TOTAL = 38
FI_NVLINK_CRC_DATA_TOTAL = 45
FI_NVLINK_REPLAY_TOTAL = 52
FI_NVLINK_RECOVERY_TOTAL = 59
FI_MEMORY_TEMP = 82
FI_NVLINK_LINK_COUNT = 91
FI_PCIE_REPLAY_COUNTER = 94
FI_REMAPPED_COR = 142
FI_REMAPPED_UNC = 143
FI_REMAPPED_PENDING = 144
FI_REMAPPED_FAILURE = 145
FI_NVLINK_ERROR_DL_REPLAY = 161  # per link: scopeId = link id
FI_NVLINK_ERROR_DL_RECOVERY = 162
FI_NVLINK_ERROR_DL_CRC = 163
FI_GPU_RECOVERY_ACTION = 230

# Scalar fields read in one batch per poll: field id -> schema field name.
SCALAR_FIELDS: dict[int, str] = {
    FI_MEMORY_TEMP: "memory_temperature_c",
    FI_ECC_SBE_VOL_TOTAL: "ecc_sbe_volatile",
    FI_ECC_DBE_VOL_TOTAL: "ecc_dbe_volatile",
    FI_ECC_SBE_AGG_TOTAL: "ecc_sbe_aggregate",
    FI_ECC_DBE_AGG_TOTAL: "ecc_dbe_aggregate",
    FI_REMAPPED_COR: "remapped_rows_correctable",
    FI_REMAPPED_UNC: "remapped_rows_uncorrectable",
    FI_REMAPPED_PENDING: "remapped_rows_pending",
    FI_REMAPPED_FAILURE: "remapped_rows_failure",
    FI_PCIE_REPLAY_COUNTER: "pcie_replays",
    FI_GPU_RECOVERY_ACTION: "recovery_action",
}
# NVLink counters: per-link field summed over links; the all-links total field is the fallback.
NVLINK_FIELDS: dict[str, tuple[int, tuple[int, ...]]] = {
    "nvlink_crc_errors": (FI_NVLINK_ERROR_DL_CRC, (FI_NVLINK_CRC_FLIT_TOTAL, FI_NVLINK_CRC_DATA_TOTAL)),
    "nvlink_replay_errors": (FI_NVLINK_ERROR_DL_REPLAY, (FI_NVLINK_REPLAY_TOTAL,)),
    "nvlink_recovery_errors": (FI_NVLINK_ERROR_DL_RECOVERY, (FI_NVLINK_RECOVERY_TOTAL,)),
}
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")

EVENT_QUEUE_LIMIT = 1000
INIT_RETRY_S = 60.0
MIB = 1024 * 1024


class _GpuLost(Exception):
    """Raised inside a device read when NVML says the GPU fell off the bus."""


def _error_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def load_pynvml() -> Any:
    import pynvml

    return pynvml


@dataclass(slots=True)
class _Device:
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


class NvmlSource:
    """Reads every local GPU once per ``poll``. ``nvml`` injects a pynvml-like module (tests use a fake)."""

    def __init__(self, ctx: SourceContext, *, nvml: Any = None, event_timeout_ms: int = 500) -> None:
        self._ctx = ctx
        self._nvml = nvml
        self._event_timeout_ms = event_timeout_ms
        self._guard = BlockingCallGuard()
        self._initialized = False
        self._init_failed_at: float | None = None
        self._driver_version: str | None = None
        self._devices: list[_Device] = []
        self._events: deque[GpuEvent] = deque(maxlen=EVENT_QUEUE_LIMIT)
        self._events_lock = threading.Lock()
        self._last_xid: dict[str, int] = {}
        self._watcher: EventWatcher | None = None
        self._use_deprecated_temperature = False
        self._closed = False
        self.unavailable_reason: str | None = None  # why there are no local GPUs, for `probe` and the agent log

    @property
    def events_registered(self) -> dict[str, int]:
        """GPU uuid -> NVML event mask registered for it (empty before the first poll or without events)."""
        return self._watcher.registered if self._watcher is not None else {}

    # -- Source protocol -------------------------------------------------------------------------------------

    async def poll(self) -> NodeSample:
        if self._closed:
            raise SourceError(PollFailure.INTERNAL, "the NVML source is closed")
        return await self._guard.run(self.read_sample)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            import asyncio

            await asyncio.to_thread(self._watcher.stop)
        if self._initialized:
            try:
                await self._guard.run(self._shutdown)
            except SourceError:
                log.warning("NVML shutdown skipped: a driver call is still outstanding")

    # -- blocking work (runs in the guard's thread) ----------------------------------------------------------

    def read_sample(self) -> NodeSample:
        started = time.time()
        if not self._initialized and not self._initialize():
            return self._sample(started, ())
        gpus = tuple(self._read_device(dev) for dev in self._devices)
        return self._sample(started, gpus)

    def _sample(self, started: float, gpus: tuple[GpuSample, ...]) -> NodeSample:
        with self._events_lock:
            events = tuple(self._events)
            self._events.clear()
        return NodeSample(
            node=self._ctx.node.name,
            site=self._ctx.site.name,
            source="nvml",
            time=started,
            gpus=gpus,
            events=events,
        )

    def _queue_event(self, event: GpuEvent) -> None:
        with self._events_lock:
            self._events.append(event)
            if event.kind is EventKind.XID and event.gpu_uuid is not None and event.code is not None:
                self._last_xid[event.gpu_uuid] = event.code

    def _xid_last(self, dev: _Device) -> int | None:
        """The last Xid seen since this source started watching (0: none yet), like DCGM's XID_ERRORS."""
        with self._events_lock:
            if dev.uuid in self._last_xid:
                return self._last_xid[dev.uuid]
        watcher = self._watcher
        return 0 if watcher is not None and watcher.delivers_xid_events(dev.uuid) else None

    def _initialize(self) -> bool:
        if self._init_failed_at is not None and time.monotonic() - self._init_failed_at < INIT_RETRY_S:
            return False
        try:
            if self._nvml is None:
                self._nvml = load_pynvml()
        except ImportError:
            return self._no_gpus("nvidia-ml-py (module pynvml) is not installed")
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            reason = NO_GPU_ERRORS.get(_error_code(exc) or -1)
            if reason is None:
                raise SourceError(PollFailure.UNREACHABLE, f"NVML initialisation failed: {exc}") from None
            return self._no_gpus(reason)
        try:
            self._driver_version = nvml.nvmlSystemGetDriverVersion()
            count = nvml.nvmlDeviceGetCount()
            devices = [dev for dev in (self._discover(index) for index in range(count)) if dev is not None]
        except nvml.NVMLError as exc:
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()
            raise SourceError(PollFailure.UNREACHABLE, f"NVML device discovery failed: {exc}") from None
        self._initialized = True
        self.unavailable_reason = None
        self._devices = devices
        log.info("NVML: %d GPU(s), driver %s", count, self._driver_version)
        if self._devices:
            self._watcher = EventWatcher(
                nvml,
                [(dev.handle, dev.uuid, dev.index) for dev in self._devices],
                self._queue_event,
                timeout_ms=self._event_timeout_ms,
            )
            self._watcher.start()
        return True

    def _no_gpus(self, reason: str) -> bool:
        if self.unavailable_reason != reason:
            log.warning("no local GPUs: %s", reason)
        self.unavailable_reason = reason
        self._init_failed_at = time.monotonic()
        return False

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.debug("nvmlShutdown: %s", exc)
        self._initialized = False

    def _optional(self, func: Callable[..., Any], *args: Any) -> Any:
        """A call whose failure only means "not reported" (identity strings and the like)."""
        try:
            return func(*args)
        except self._nvml.NVMLError as exc:
            if _error_code(exc) == ERROR_GPU_IS_LOST:
                raise _GpuLost from None
            return None

    def _discover(self, index: int) -> _Device | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            if _error_code(exc) == ERROR_GPU_IS_LOST:
                dev = _Device(index=index, handle=None, uuid=f"GPU-unknown-index-{index}")
                self._mark_lost(dev)
                return dev
            log.warning("GPU %d skipped: %s", index, exc)  # e.g. NO_PERMISSION for a GPU outside our cgroup
            return None
        try:
            uuid = nvml.nvmlDeviceGetUUID(handle)
        except nvml.NVMLError as exc:
            uuid = f"GPU-unknown-index-{index}"
            if _error_code(exc) == ERROR_GPU_IS_LOST:
                dev = _Device(index=index, handle=handle, uuid=uuid)
                self._mark_lost(dev)
                return dev
        dev = _Device(index=index, handle=handle, uuid=uuid)
        try:
            dev.name = self._optional(nvml.nvmlDeviceGetName, handle)
            dev.serial = self._optional(nvml.nvmlDeviceGetSerial, handle)
            dev.vbios_version = self._optional(nvml.nvmlDeviceGetVbiosVersion, handle)
            pci = self._optional(nvml.nvmlDeviceGetPciInfo_v3, handle)
            dev.pci_bus_id = getattr(pci, "busId", None) if pci is not None else None
            # Thresholds and maxima are static per device: read once at discovery.
            dev.slowdown_temp_c = self._call(
                dev, "slowdown_temp_c", nvml.nvmlDeviceGetTemperatureThreshold, THRESHOLD_SLOWDOWN
            )
            dev.shutdown_temp_c = self._call(
                dev, "shutdown_temp_c", nvml.nvmlDeviceGetTemperatureThreshold, THRESHOLD_SHUTDOWN
            )
            dev.memory_max_temp_c = self._call(
                dev, "memory_max_temp_c", nvml.nvmlDeviceGetTemperatureThreshold, THRESHOLD_MEM_MAX
            )
            default_mw = self._call(dev, "power_default_limit_w", nvml.nvmlDeviceGetPowerManagementDefaultLimit)
            dev.power_default_limit_w = default_mw / 1000.0 if default_mw is not None else None
            dev.pcie_link_gen_max = self._call(dev, "pcie_link_gen_max", nvml.nvmlDeviceGetMaxPcieLinkGeneration)
            dev.pcie_link_width_max = self._call(dev, "pcie_link_width_max", nvml.nvmlDeviceGetMaxPcieLinkWidth)
            links = self._field_values(dev, [(FI_NVLINK_LINK_COUNT, 0)]).get((FI_NVLINK_LINK_COUNT, 0))
            dev.nvlink_count = int(links) if links else 0
            if not dev.nvlink_count:
                dev.unsupported.update(NVLINK_FIELDS)
        except _GpuLost:
            self._mark_lost(dev)
        return dev

    def _mark_lost(self, dev: _Device) -> None:
        if dev.lost:
            return
        dev.lost = True
        log.error("GPU %d (%s) is lost: it fell off the bus", dev.index, dev.uuid)
        self._queue_event(
            GpuEvent(
                kind=EventKind.GPU_LOST,
                time=time.time(),
                gpu_uuid=dev.uuid,
                gpu_index=dev.index,
                code=79,
                message="GPU has fallen off the bus (NVML reported GpuIsLost)",
            )
        )

    def _call(self, dev: _Device, name: str, func: Callable[..., Any], *args: Any) -> Any:
        """One getter for schema field ``name``; NOT_SUPPORTED makes it ``None`` now and skipped later."""
        if name in dev.unsupported:
            return None
        try:
            return func(dev.handle, *args)
        except self._nvml.NVMLError as exc:
            self._note_failure(dev, name, exc)
            return None

    def _note_failure(self, dev: _Device, name: str, exc: BaseException) -> None:
        code = _error_code(exc)
        if code == ERROR_GPU_IS_LOST:
            raise _GpuLost from None
        if code in _CAPABILITY_ERRORS:
            dev.unsupported.add(name)
            log.debug("GPU %d: %s unsupported (%s)", dev.index, name, exc)
        else:
            log.debug("GPU %d: %s failed this poll: %s", dev.index, name, exc)

    def _field_values(self, dev: _Device, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], float]:
        """One batched ``nvmlDeviceGetFieldValues``; each entry's own return code is checked."""
        request = [key for key in wanted if key not in dev.dead_fields]
        if not request:
            return {}
        try:
            values = self._nvml.nvmlDeviceGetFieldValues(dev.handle, request)
        except self._nvml.NVMLError as exc:
            code = _error_code(exc)
            if code == ERROR_GPU_IS_LOST:
                raise _GpuLost from None
            if code in _CAPABILITY_ERRORS:
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
                raise _GpuLost
            elif ret in _CAPABILITY_ERRORS:
                dev.dead_fields.add(key)
        return out

    def _temperature(self, dev: _Device) -> Any:
        """``nvmlDeviceGetTemperatureV``, or the deprecated call where the driver lacks the new one."""
        nvml = self._nvml
        if not self._use_deprecated_temperature and "temperature_c" not in dev.unsupported:
            try:
                return nvml.nvmlDeviceGetTemperatureV(dev.handle, TEMPERATURE_GPU)
            except nvml.NVMLError as exc:
                if _error_code(exc) != ERROR_FUNCTION_NOT_FOUND:
                    self._note_failure(dev, "temperature_c", exc)
                    return None
                self._use_deprecated_temperature = True
        return self._call(dev, "temperature_c", nvml.nvmlDeviceGetTemperature, TEMPERATURE_GPU)

    def _read_device(self, dev: _Device) -> GpuSample:
        if not dev.lost:
            try:
                return self._read_live(dev)
            except _GpuLost:
                self._mark_lost(dev)
        return GpuSample(
            index=dev.index,
            uuid=dev.uuid,
            name=dev.name,
            serial=dev.serial,
            pci_bus_id=dev.pci_bus_id,
            driver_version=self._driver_version,
            vbios_version=dev.vbios_version,
            lost=True,
            unsupported=tuple(sorted(dev.unsupported)),
        )

    def _read_live(self, dev: _Device) -> GpuSample:
        nvml = self._nvml
        call = self._call
        util = call(dev, "utilization_pct", nvml.nvmlDeviceGetUtilizationRates)
        memory = call(dev, "memory_used_mib", nvml.nvmlDeviceGetMemoryInfo)
        power_mw = call(dev, "power_w", nvml.nvmlDeviceGetPowerUsage)
        limit_mw = call(dev, "power_limit_w", nvml.nvmlDeviceGetEnforcedPowerLimit)
        energy_mj = call(dev, "energy_j", nvml.nvmlDeviceGetTotalEnergyConsumption)
        temperature = self._temperature(dev)
        margin = call(dev, "thermal_margin_c", nvml.nvmlDeviceGetMarginTemperature)
        fan = call(dev, "fan_pct", nvml.nvmlDeviceGetFanSpeed)
        sm_clock = call(dev, "sm_clock_mhz", nvml.nvmlDeviceGetClockInfo, CLOCK_SM)
        mem_clock = call(dev, "memory_clock_mhz", nvml.nvmlDeviceGetClockInfo, CLOCK_MEM)
        pstate = call(dev, "pstate", nvml.nvmlDeviceGetPerformanceState)
        reasons = call(dev, "throttle_reasons", nvml.nvmlDeviceGetCurrentClocksEventReasons)
        link_gen = call(dev, "pcie_link_gen", nvml.nvmlDeviceGetCurrPcieLinkGeneration)
        link_width = call(dev, "pcie_link_width", nvml.nvmlDeviceGetCurrPcieLinkWidth)
        mig = call(dev, "mig_mode", nvml.nvmlDeviceGetMigMode)
        fields = self._read_fields(dev)
        if "memory_used_mib" in dev.unsupported:
            dev.unsupported.add("memory_total_mib")
        recovery = fields.pop("recovery_action", None)
        self._note_recovery(dev, recovery)
        return GpuSample(
            index=dev.index,
            uuid=dev.uuid,
            name=dev.name,
            serial=dev.serial,
            pci_bus_id=dev.pci_bus_id,
            driver_version=self._driver_version,
            vbios_version=dev.vbios_version,
            utilization_pct=float(util.gpu) if util is not None else None,
            memory_used_mib=memory.used / MIB if memory is not None else None,
            memory_total_mib=memory.total / MIB if memory is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            power_default_limit_w=dev.power_default_limit_w,
            energy_j=energy_mj / 1000.0 if energy_mj is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            memory_temperature_c=fields.get("memory_temperature_c"),
            thermal_margin_c=float(margin) if margin is not None else None,
            slowdown_temp_c=_float(dev.slowdown_temp_c),
            shutdown_temp_c=_float(dev.shutdown_temp_c),
            memory_max_temp_c=_float(dev.memory_max_temp_c),
            fan_pct=float(fan) if fan is not None else None,
            sm_clock_mhz=float(sm_clock) if sm_clock is not None else None,
            memory_clock_mhz=float(mem_clock) if mem_clock is not None else None,
            pstate=int(pstate) if pstate is not None and pstate != PSTATE_UNKNOWN else None,
            throttle_reasons=throttle_reasons_from_mask(int(reasons)) if reasons is not None else (),
            ecc_sbe_volatile=_int(fields.get("ecc_sbe_volatile")),
            ecc_dbe_volatile=_int(fields.get("ecc_dbe_volatile")),
            ecc_sbe_aggregate=_int(fields.get("ecc_sbe_aggregate")),
            ecc_dbe_aggregate=_int(fields.get("ecc_dbe_aggregate")),
            remapped_rows_correctable=_int(fields.get("remapped_rows_correctable")),
            remapped_rows_uncorrectable=_int(fields.get("remapped_rows_uncorrectable")),
            remapped_rows_pending=_bool(fields.get("remapped_rows_pending")),
            remapped_rows_failure=_bool(fields.get("remapped_rows_failure")),
            pcie_replays=_int(fields.get("pcie_replays")),
            pcie_link_gen=_int(link_gen),
            pcie_link_gen_max=_int(dev.pcie_link_gen_max),
            pcie_link_width=_int(link_width),
            pcie_link_width_max=_int(dev.pcie_link_width_max),
            nvlink_crc_errors=_int(fields.get("nvlink_crc_errors")),
            nvlink_replay_errors=_int(fields.get("nvlink_replay_errors")),
            nvlink_recovery_errors=_int(fields.get("nvlink_recovery_errors")),
            xid_last=self._xid_last(dev),
            recovery_action=recovery,
            mig_mode=bool(mig[0]) if mig is not None else None,
            unsupported=tuple(sorted(dev.unsupported)),
        )

    def _read_fields(self, dev: _Device) -> dict[str, Any]:
        """The batched field values, keyed by schema field name; unsupported ones flagged on the device."""
        wanted = [(fid, 0) for fid, name in SCALAR_FIELDS.items() if name not in dev.unsupported]
        nvlink_names = [name for name in NVLINK_FIELDS if name not in dev.unsupported]
        for name in nvlink_names:
            per_link, totals = NVLINK_FIELDS[name]
            wanted += [(per_link, link) for link in range(dev.nvlink_count)]
            wanted += [(fid, 0) for fid in totals]
        values = self._field_values(dev, wanted)
        out: dict[str, Any] = {}
        for fid, name in SCALAR_FIELDS.items():
            if name in dev.unsupported:
                continue
            if (fid, 0) in values:
                out[name] = values[(fid, 0)]
            elif (fid, 0) in dev.dead_fields:
                dev.unsupported.add(name)
        if "memory_temperature_c" in out:
            out["memory_temperature_c"] = float(out["memory_temperature_c"])
        if "recovery_action" in out:
            out["recovery_action"] = RECOVERY_ACTION_CODES.get(int(out["recovery_action"]))
        for name in nvlink_names:
            per_link, totals = NVLINK_FIELDS[name]
            link_values = [values[(per_link, link)] for link in range(dev.nvlink_count) if (per_link, link) in values]
            total_values = [values[(fid, 0)] for fid in totals if (fid, 0) in values]
            if link_values:
                out[name] = sum(int(v) for v in link_values)
            elif total_values:
                out[name] = sum(int(v) for v in total_values)
            elif all((fid, 0) in dev.dead_fields for fid in totals) and all(
                (per_link, link) in dev.dead_fields for link in range(dev.nvlink_count)
            ):
                dev.unsupported.add(name)
        return out

    def _note_recovery(self, dev: _Device, action: RecoveryAction | None) -> None:
        """A change of the driver's required recovery action becomes an event (also without the event set)."""
        previous, dev.last_recovery = dev.last_recovery, action
        if action is None or action == previous or action is RecoveryAction.NONE:
            return
        watcher = self._watcher
        if watcher is not None and watcher.delivers_recovery_events(dev.uuid):
            return  # the event thread reports it, with the driver's own timing
        self._queue_event(
            GpuEvent(
                kind=EventKind.RECOVERY_ACTION,
                time=time.time(),
                gpu_uuid=dev.uuid,
                gpu_index=dev.index,
                code=list(RecoveryAction).index(action),
                message=f"driver requires recovery action: {action}",
            )
        )


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _bool(value: Any) -> bool | None:
    return bool(value) if value is not None else None


def make_source(ctx: SourceContext) -> NvmlSource:
    return NvmlSource(ctx)


__all__ = ["NO_GPU_ERRORS", "NvmlSource", "load_pynvml", "make_source"]
