"""A thin stand-in for pynvml (the NVIDIA driver cannot run here): the functions the NVML source calls, the
error classes, and the real constant values of nvidia-ml-py 13.615.71.

Values are those of a real H100 SXM (reference section 2.6/6). Tests inject failures per function name with
``FakeGpu.fail`` and per field id with ``FakeGpu.field_errors``, and count calls to prove that an unsupported
getter is not called again.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# --- return codes (pynvml NVML_ERROR_*) ---------------------------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_TEMPERATURE_THRESHOLD_MEM_MAX = 2
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_INT = 5

NVML_FI_DEV_ECC_SBE_VOL_TOTAL = 3
NVML_FI_DEV_ECC_DBE_VOL_TOTAL = 4
NVML_FI_DEV_ECC_SBE_AGG_TOTAL = 5
NVML_FI_DEV_ECC_DBE_AGG_TOTAL = 6
NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL = 38
NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL = 45
NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL = 52
NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL = 59
NVML_FI_DEV_MEMORY_TEMP = 82
NVML_FI_DEV_NVLINK_LINK_COUNT = 91
NVML_FI_DEV_PCIE_REPLAY_COUNTER = 94
NVML_FI_DEV_REMAPPED_COR = 142
NVML_FI_DEV_REMAPPED_UNC = 143
NVML_FI_DEV_REMAPPED_PENDING = 144
NVML_FI_DEV_REMAPPED_FAILURE = 145
NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY = 161
NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY = 162
NVML_FI_DEV_NVLINK_ERROR_DL_CRC = 163
NVML_FI_DEV_GET_GPU_RECOVERY_ACTION = 230

nvmlEventTypeSingleBitEccError = 0x0001
nvmlEventTypeDoubleBitEccError = 0x0002
nvmlEventTypePState = 0x0004
nvmlEventTypeXidCriticalError = 0x0008
nvmlEventTypeDramRetirementFailure = 0x0800
nvmlEventTypeGpuUnavailableError = 0x4000
nvmlEventTypeGpuRecoveryAction = 0x8000


class NVMLError(Exception):
    """Like pynvml: ``NVMLError(code)`` builds the subclass for that code; ``.value`` is the code."""

    _classes: dict[int, type[NVMLError]] = {}  # filled once below, as pynvml does
    value: int

    def __new__(cls, value: int = NVML_ERROR_UNKNOWN) -> NVMLError:
        target = NVMLError._classes.get(value, cls) if cls is NVMLError else cls
        obj = Exception.__new__(target)
        obj.value = value
        return obj

    def __init__(self, value: int = NVML_ERROR_UNKNOWN) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


def _error_class(name: str, code: int) -> type[NVMLError]:
    def new(cls: type[NVMLError], *_: Any) -> NVMLError:
        obj = Exception.__new__(cls)
        obj.value = code
        return obj

    cls = type(name, (NVMLError,), {"__new__": new})
    NVMLError._classes[code] = cls
    return cls


NVMLError_Uninitialized = _error_class("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_NotSupported = _error_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_DriverNotLoaded = _error_class("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_Timeout = _error_class("NVMLError_Timeout", NVML_ERROR_TIMEOUT)
NVMLError_LibraryNotFound = _error_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_LibRmVersionMismatch = _error_class("NVMLError_LibRmVersionMismatch", NVML_ERROR_LIB_RM_VERSION_MISMATCH)
NVMLError_Unknown = _error_class("NVMLError_Unknown", NVML_ERROR_UNKNOWN)


@dataclass
class FakeGpu:
    """One H100 SXM 80GB, values in NVML's own units (mW, mJ, bytes)."""

    uuid: str = "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
    name: str = "NVIDIA H100 80GB HBM3"
    serial: str = "1650823051426"
    vbios: str = "96.00.99.00.01"
    bus_id: str = "00000000:53:00.0"
    utilization: int = 100
    memory_total: int = 81559 * 1024 * 1024
    memory_used: int = 40960 * 1024 * 1024
    power_mw: int = 631950
    enforced_limit_mw: int = 700000
    default_limit_mw: int = 700000
    energy_mj: int = 123456789
    temperature: int = 59
    margin: int = 26
    thresholds: dict[int, int] = field(default_factory=lambda: {0: 92, 1: 89, 2: 95})
    fan: int | None = None  # SXM: no fan (NOT_SUPPORTED)
    sm_clock: int = 1980
    mem_clock: int = 2619
    pstate: int = 0
    clocks_event_reasons: int = 0x004 | 0x020  # SwPowerCap + SwThermalSlowdown
    pcie_gen: int = 5
    pcie_gen_max: int = 5
    pcie_width: int = 8  # trained below the maximum
    pcie_width_max: int = 16
    mig: tuple[int, int] = (0, 0)
    supported_events: int = 0x8FFF | 0x4000 | 0x8000
    fields: dict[tuple[int, int], tuple[int, float | int]] = field(default_factory=dict)
    field_errors: dict[int, int] = field(default_factory=dict)  # field id -> nvmlReturn for that entry
    fail: dict[str, int] = field(default_factory=dict)  # function name -> error code raised
    nvlinks: int = 18
    nvlinks_down: frozenset[int] = frozenset()  # links that report NVML_FEATURE_DISABLED
    pcie_kb_s: tuple[int, int] = (12_800, 3_200)  # (TX, RX) in KB/s
    processes: list[tuple[int, str, int | None]] = field(default_factory=list)  # (pid, name, used bytes)

    def __post_init__(self) -> None:
        defaults: dict[tuple[int, int], tuple[int, float | int]] = {
            (NVML_FI_DEV_MEMORY_TEMP, 0): (NVML_VALUE_TYPE_UNSIGNED_INT, 55),
            (NVML_FI_DEV_ECC_SBE_VOL_TOTAL, 0): (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 3),
            (NVML_FI_DEV_ECC_DBE_VOL_TOTAL, 0): (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 0),
            (NVML_FI_DEV_ECC_SBE_AGG_TOTAL, 0): (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 17),
            (NVML_FI_DEV_ECC_DBE_AGG_TOTAL, 0): (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 1),
            (NVML_FI_DEV_REMAPPED_COR, 0): (NVML_VALUE_TYPE_UNSIGNED_INT, 2),
            (NVML_FI_DEV_REMAPPED_UNC, 0): (NVML_VALUE_TYPE_UNSIGNED_INT, 1),
            (NVML_FI_DEV_REMAPPED_PENDING, 0): (NVML_VALUE_TYPE_UNSIGNED_INT, 1),
            (NVML_FI_DEV_REMAPPED_FAILURE, 0): (NVML_VALUE_TYPE_UNSIGNED_INT, 0),
            (NVML_FI_DEV_PCIE_REPLAY_COUNTER, 0): (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 9),
            (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, 0): (NVML_VALUE_TYPE_UNSIGNED_INT, 0),
            (NVML_FI_DEV_NVLINK_LINK_COUNT, 0): (NVML_VALUE_TYPE_UNSIGNED_INT, self.nvlinks),
        }
        for link in range(self.nvlinks):
            defaults[(NVML_FI_DEV_NVLINK_ERROR_DL_CRC, link)] = (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, link % 3)
            defaults[(NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY, link)] = (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 1)
            defaults[(NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY, link)] = (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, 0)
        for fid in (
            NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
            NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
            NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
            NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
        ):
            defaults[(fid, 0)] = (
                NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
                1000,
            )  # distinguishable from per-link sums
        defaults.update(self.fields)
        self.fields = defaults


_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class FakeNvml:
    """Module-like object: pass it as ``NvmlSource(ctx, nvml=FakeNvml(...))``."""

    # Let ``fake.NVMLError_NotSupported`` etc. resolve like the module's attributes.
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Timeout = NVMLError_Timeout
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.driver_version = "590.48.01"
        self.calls: Counter[str] = Counter()
        self.missing_functions: set[str] = set()  # raise FUNCTION_NOT_FOUND, like an older driver library
        self.initialized = 0
        self._events: queue.Queue[SimpleNamespace] = queue.Queue()
        self._lock = threading.Lock()
        self.event_sets_open = 0
        self.registered: dict[int, int] = {}

    # -- helpers ---------------------------------------------------------------------------------------------

    def _gpu(self, handle: int, func: str) -> FakeGpu:
        with self._lock:
            self.calls[func] += 1
        if func in self.missing_functions:
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        gpu = self.gpus[handle - 0x1000]
        if func in gpu.fail:
            raise NVMLError(gpu.fail[func])
        return gpu

    def inject_event(self, index: int, event_type: int, data: int) -> None:
        self._events.put(SimpleNamespace(device=0x1000 + index, eventType=event_type, eventData=data))

    # -- lifecycle -------------------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return 0x1000 + index

    # -- identity --------------------------------------------------------------------------------------------

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self._gpu(h, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._gpu(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetSerial(self, h: int) -> str:
        return self._gpu(h, "nvmlDeviceGetSerial").serial

    def nvmlDeviceGetVbiosVersion(self, h: int) -> str:
        return self._gpu(h, "nvmlDeviceGetVbiosVersion").vbios

    def nvmlDeviceGetPciInfo_v3(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self._gpu(h, "nvmlDeviceGetPciInfo_v3").bus_id)

    # -- telemetry -------------------------------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._gpu(h, "nvmlDeviceGetUtilizationRates").utilization, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        gpu = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetEnforcedPowerLimit").enforced_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetPowerManagementDefaultLimit").default_limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetTotalEnergyConsumption").energy_mj

    def nvmlDeviceGetTemperatureV(self, h: int, sensor: int) -> int:
        return self._gpu(h, "nvmlDeviceGetTemperatureV").temperature

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return self._gpu(h, "nvmlDeviceGetTemperature").temperature

    def nvmlDeviceGetMarginTemperature(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetMarginTemperature").margin

    def nvmlDeviceGetTemperatureThreshold(self, h: int, threshold: int) -> int:
        gpu = self._gpu(h, "nvmlDeviceGetTemperatureThreshold")
        if threshold not in gpu.thresholds:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.thresholds[threshold]

    def nvmlDeviceGetFanSpeed(self, h: int) -> int:
        gpu = self._gpu(h, "nvmlDeviceGetFanSpeed")
        if gpu.fan is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.fan

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        gpu = self._gpu(h, "nvmlDeviceGetClockInfo")
        return gpu.sm_clock if clock == NVML_CLOCK_SM else gpu.mem_clock

    def nvmlDeviceGetPerformanceState(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetPerformanceState").pstate

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrentClocksEventReasons").clocks_event_reasons

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrPcieLinkGeneration").pcie_gen

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrPcieLinkWidth").pcie_width

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetMaxPcieLinkGeneration").pcie_gen_max

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetMaxPcieLinkWidth").pcie_width_max

    def nvmlDeviceGetPcieThroughput(self, h: int, counter: int) -> int:
        return self._gpu(h, "nvmlDeviceGetPcieThroughput").pcie_kb_s[counter]  # 0 = TX, 1 = RX

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        gpu = self._gpu(h, "nvmlDeviceGetNvLinkState")
        if link >= gpu.nvlinks:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return 0 if link in gpu.nvlinks_down else 1

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        gpu = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, _name, used in gpu.processes]

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        names = {pid: name for gpu in self.gpus for pid, name, _used in gpu.processes}
        if pid not in names:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return names[pid]

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        return list(self._gpu(h, "nvmlDeviceGetMigMode").mig)

    def nvmlDeviceGetFieldValues(self, h: int, field_ids: list[Any]) -> list[SimpleNamespace]:
        gpu = self._gpu(h, "nvmlDeviceGetFieldValues")
        out = []
        for entry in field_ids:
            fid, scope = entry if isinstance(entry, tuple) else (entry, 0)
            ret = gpu.field_errors.get(fid, NVML_SUCCESS)
            value_type, value = gpu.fields.get((fid, scope), (NVML_VALUE_TYPE_UNSIGNED_INT, 0))
            if (fid, scope) not in gpu.fields and ret == NVML_SUCCESS:
                ret = NVML_ERROR_NOT_SUPPORTED
            union = SimpleNamespace(**dict.fromkeys(_VALUE_MEMBER.values(), 0))
            setattr(union, _VALUE_MEMBER[value_type], value)
            out.append(
                SimpleNamespace(
                    fieldId=fid,
                    scopeId=scope,
                    timestamp=0,
                    latencyUsec=5,
                    valueType=value_type,
                    nvmlReturn=ret,
                    value=union,
                )
            )
        return out

    # -- events ----------------------------------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> str:
        with self._lock:
            self.event_sets_open += 1
        return "event-set"

    def nvmlEventSetFree(self, event_set: str) -> None:
        with self._lock:
            self.event_sets_open -= 1

    def nvmlDeviceGetSupportedEventTypes(self, h: int) -> int:
        return self._gpu(h, "nvmlDeviceGetSupportedEventTypes").supported_events

    def nvmlDeviceRegisterEvents(self, h: int, mask: int, event_set: str) -> None:
        self._gpu(h, "nvmlDeviceRegisterEvents")
        self.registered[h - 0x1000] = mask

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> SimpleNamespace:
        self.calls["nvmlEventSetWait_v2"] += 1
        try:
            return self._events.get(timeout=timeout_ms / 1000.0)
        except queue.Empty:
            raise NVMLError(NVML_ERROR_TIMEOUT) from None
