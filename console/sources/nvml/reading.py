"""Reading one GPU's sample per poll: the getters, the batched field values, and the units of the schema.

NVML reports power in mW and energy in mJ, memory in bytes; the schema wants W, J and MiB, so conversion happens
here, at the source boundary. ECC, row remapping, PCIe replays and NVLink counters come from one batched
``nvmlDeviceGetFieldValues`` per GPU: NVLink counters are the per-link field summed over the device's links, with
the all-links total field as the fallback. PCIe throughput (each call blocks ~20 ms while the driver samples the
bus) and NVLink link state are read every ``SLOW_READ_S`` and repeated in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from console.samples.schema import (
    RECOVERY_ACTION_CODES,
    GpuSample,
    ProcessWorkload,
    RecoveryAction,
    throttle_reasons_from_mask,
)
from console.sources.nvml.device import ERROR_FUNCTION_NOT_FOUND, DeviceCalls, NvmlDevice, error_code

TEMPERATURE_GPU = 0
CLOCK_SM = 1
CLOCK_MEM = 2
PSTATE_UNKNOWN = 32
MIB = 1024 * 1024
PCIE_UTIL_TX_BYTES = 0  # nvmlPcieUtilCounter_t
PCIE_UTIL_RX_BYTES = 1
SLOW_READ_S = 30.0

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
# What a GPU without NVLink does not support (discovery flags them).
NVLINK_SCHEMA_FIELDS = (*NVLINK_FIELDS, "nvlink_links_up", "nvlink_links_down")


class GpuReader:
    """Reads live GPUs for one NVML session. Raises ``GpuLost`` (from ``device``) when a GPU falls off the bus.

    ``xid_last`` gives the last Xid seen for a device; ``note_recovery`` hears the recovery action each read
    finds (the source turns a change into an event)."""

    __slots__ = ("_calls", "_driver_version", "_note_recovery", "_use_deprecated_temperature", "_xid_last")

    def __init__(
        self,
        calls: DeviceCalls,
        driver_version: str | None,
        *,
        xid_last: Callable[[NvmlDevice], int | None],
        note_recovery: Callable[[NvmlDevice, RecoveryAction | None], None],
    ) -> None:
        self._calls = calls
        self._driver_version = driver_version
        self._xid_last = xid_last
        self._note_recovery = note_recovery
        self._use_deprecated_temperature = False

    def read(self, dev: NvmlDevice) -> GpuSample:
        nvml = self._calls.nvml
        call = self._calls.call
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
        self._read_slowly(dev)
        processes = call(dev, "workload", nvml.nvmlDeviceGetComputeRunningProcesses)
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
            nvlink_links_up=dev.nvlink_links_up,
            nvlink_links_down=dev.nvlink_links_down,
            pcie_tx_mib_s=dev.pcie_tx_mib_s,
            pcie_rx_mib_s=dev.pcie_rx_mib_s,
            xid_last=self._xid_last(dev),
            recovery_action=recovery,
            mig_mode=bool(mig[0]) if mig is not None else None,
            unsupported=tuple(sorted(dev.unsupported)),
            workload=self._workload(processes) if processes is not None else None,
        )

    def _read_slowly(self, dev: NvmlDevice) -> None:
        """PCIe throughput and NVLink link state, at most every SLOW_READ_S (kept on the device between)."""
        now = time.monotonic()
        if dev.slow_read_at is not None and now - dev.slow_read_at < SLOW_READ_S:
            return
        dev.slow_read_at = now
        nvml = self._calls.nvml
        call = self._calls.call
        tx_kb = call(dev, "pcie_tx_mib_s", nvml.nvmlDeviceGetPcieThroughput, PCIE_UTIL_TX_BYTES)
        rx_kb = call(dev, "pcie_rx_mib_s", nvml.nvmlDeviceGetPcieThroughput, PCIE_UTIL_RX_BYTES)
        dev.pcie_tx_mib_s = tx_kb / 1024.0 if tx_kb is not None else None  # NVML counts KB/s
        dev.pcie_rx_mib_s = rx_kb / 1024.0 if rx_kb is not None else None
        if not dev.nvlink_count:
            return
        states = [call(dev, "nvlink_links_up", nvml.nvmlDeviceGetNvLinkState, link) for link in range(dev.nvlink_count)]
        known = [state for state in states if state is not None]
        up = sum(1 for state in known if state)
        dev.nvlink_links_up = up if known else None
        dev.nvlink_links_down = len(known) - up if known else None
        if "nvlink_links_up" in dev.unsupported:
            dev.unsupported.add("nvlink_links_down")

    def _workload(self, processes: Any) -> tuple[ProcessWorkload, ...]:
        """Compute processes (host PIDs; ``usedGpuMemory`` is bytes, None where the driver cannot say)."""
        name_of = self._calls.nvml.nvmlSystemGetProcessName
        entries = []
        for process in processes:
            pid = int(process.pid)
            name = self._calls.optional(name_of, pid)
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            used = getattr(process, "usedGpuMemory", None)
            entries.append(ProcessWorkload(pid, name or None, used / MIB if used is not None else None))
        return tuple(entries)

    def _temperature(self, dev: NvmlDevice) -> Any:
        """``nvmlDeviceGetTemperatureV``, or the deprecated call where the driver lacks the new one."""
        nvml = self._calls.nvml
        if not self._use_deprecated_temperature and "temperature_c" not in dev.unsupported:
            try:
                return nvml.nvmlDeviceGetTemperatureV(dev.handle, TEMPERATURE_GPU)
            except nvml.NVMLError as exc:
                if error_code(exc) != ERROR_FUNCTION_NOT_FOUND:
                    self._calls.note_failure(dev, "temperature_c", exc)
                    return None
                self._use_deprecated_temperature = True
        return self._calls.call(dev, "temperature_c", nvml.nvmlDeviceGetTemperature, TEMPERATURE_GPU)

    def _read_fields(self, dev: NvmlDevice) -> dict[str, Any]:
        """The batched field values, keyed by schema field name; unsupported ones flagged on the device."""
        wanted = [(fid, 0) for fid, name in SCALAR_FIELDS.items() if name not in dev.unsupported]
        nvlink_names = [name for name in NVLINK_FIELDS if name not in dev.unsupported]
        for name in nvlink_names:
            per_link, totals = NVLINK_FIELDS[name]
            wanted += [(per_link, link) for link in range(dev.nvlink_count)]
            wanted += [(fid, 0) for fid in totals]
        values = self._calls.field_values(dev, wanted)
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


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _bool(value: Any) -> bool | None:
    return bool(value) if value is not None else None
