"""NVML critical events (Xid, double-bit ECC, row-remap failure, recovery action) on their own thread.

``nvmlEventSetWait_v2`` blocks, so it waits with a short timeout (~500 ms) and checks a stop flag between
waits: closing the source stops the thread cooperatively within one timeout.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from console.samples.schema import EventKind, GpuEvent

log = logging.getLogger(__name__)

EVENT_SINGLE_BIT_ECC = 0x0001
EVENT_DOUBLE_BIT_ECC = 0x0002
EVENT_XID_CRITICAL = 0x0008
EVENT_DRAM_RETIREMENT_FAILURE = 0x0800
EVENT_GPU_UNAVAILABLE = 0x4000
EVENT_GPU_RECOVERY_ACTION = 0x8000

# Event bit -> schema event. Single-bit ECC is left to the counters: it is frequent and benign.
EVENT_KINDS: dict[int, EventKind] = {
    EVENT_XID_CRITICAL: EventKind.XID,
    EVENT_DOUBLE_BIT_ECC: EventKind.ECC_DBE,
    EVENT_DRAM_RETIREMENT_FAILURE: EventKind.ROW_REMAP_FAILURE,
    EVENT_GPU_UNAVAILABLE: EventKind.GPU_LOST,
    EVENT_GPU_RECOVERY_ACTION: EventKind.RECOVERY_ACTION,
}
WANTED_EVENTS = sum(EVENT_KINDS)

ERROR_NOT_SUPPORTED = 3
ERROR_TIMEOUT = 10
ERROR_FUNCTION_NOT_FOUND = 13
UNKNOWN_XID = 999  # NVML's code for an Xid it cannot name

EventSink = Callable[[GpuEvent], None]


def handle_key(handle: Any) -> int | None:
    """A comparable identity for a device handle (ctypes pointers from NVML compare by address)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(handle)


class EventWatcher:
    """Owns one NVML event set and the thread that waits on it."""

    def __init__(
        self, nvml: Any, devices: Sequence[tuple[Any, str, int]], sink: EventSink, *, timeout_ms: int = 500
    ) -> None:
        self._nvml = nvml
        self._devices = list(devices)  # (handle, uuid, index)
        self._by_handle = {handle_key(h): (uuid, index) for h, uuid, index in devices}
        self._sink = sink
        self._timeout_ms = timeout_ms
        self._stop = threading.Event()
        self._registered: dict[str, int] = {}  # uuid -> registered event mask
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-events", daemon=True)

    def start(self) -> None:
        self._thread.start()
        # Registration is quick; waiting for it lets the poll thread know which events the set will deliver.
        self._ready.wait(5.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("NVML event thread did not stop within %.1f s", timeout_s)

    @property
    def registered(self) -> dict[str, int]:
        return dict(self._registered)

    def delivers_xid_events(self, uuid: str) -> bool:
        return bool(self._registered.get(uuid, 0) & EVENT_XID_CRITICAL)

    def delivers_recovery_events(self, uuid: str) -> bool:
        return bool(self._registered.get(uuid, 0) & EVENT_GPU_RECOVERY_ACTION)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        nvml = self._nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("NVML events unavailable: %s", exc)
            self._ready.set()
            return
        try:
            self._register(event_set)
            self._ready.set()
            if self._registered:
                self._wait_loop(event_set)
            else:
                log.info("NVML: no device supports critical-event registration; relying on polled counters")
        finally:
            self._ready.set()
            try:
                nvml.nvmlEventSetFree(event_set)
            except nvml.NVMLError as exc:
                log.debug("nvmlEventSetFree: %s", exc)

    def _register(self, event_set: Any) -> None:
        nvml = self._nvml
        for handle, uuid, index in self._devices:
            try:
                mask = int(nvml.nvmlDeviceGetSupportedEventTypes(handle)) & WANTED_EVENTS
                if mask:
                    nvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
                    self._registered[uuid] = mask
            except nvml.NVMLError as exc:
                # NOT_SUPPORTED leaves the set usable for the other GPUs.
                log.info("GPU %d: NVML event registration failed: %s", index, exc)

    def _wait_loop(self, event_set: Any) -> None:
        nvml = self._nvml
        failures = 0
        while not self._stop.is_set():
            try:
                data = nvml.nvmlEventSetWait_v2(event_set, self._timeout_ms)
            except nvml.NVMLError as exc:
                if getattr(exc, "value", None) == ERROR_TIMEOUT:
                    failures = 0
                    continue
                failures += 1
                if failures == 1:
                    log.warning("NVML event wait failed: %s", exc)
                # A broken set must not spin a core; back off and keep the stop flag responsive.
                self._stop.wait(min(5.0, 0.2 * failures))
                continue
            failures = 0
            self._deliver(data)

    def _deliver(self, data: Any) -> None:
        event_type = int(data.eventType)
        uuid, index = self._by_handle.get(handle_key(data.device), (None, None))
        for bit, kind in EVENT_KINDS.items():
            if not event_type & bit:
                continue
            code = int(data.eventData) if kind in (EventKind.XID, EventKind.RECOVERY_ACTION) else None
            if kind is EventKind.GPU_LOST:
                code = 79
            self._sink(
                GpuEvent(
                    kind=kind,
                    time=time.time(),
                    gpu_uuid=uuid,
                    gpu_index=index,
                    code=code,
                    message=_describe(kind, code),
                )
            )


def _describe(kind: EventKind, code: int | None) -> str:
    if kind is EventKind.XID:
        return "Xid (unknown code)" if code == UNKNOWN_XID else f"Xid {code}"
    if kind is EventKind.RECOVERY_ACTION:
        return f"driver recovery action changed (code {code})"
    return {
        EventKind.ECC_DBE: "double-bit ECC error",
        EventKind.ROW_REMAP_FAILURE: "row remapping failed",
        EventKind.GPU_LOST: "GPU unavailable",
    }.get(kind, str(kind))
