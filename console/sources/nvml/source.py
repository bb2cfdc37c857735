"""The NVML source: this machine's GPUs through nvidia-ml-py (module ``pynvml``).

Every blocking NVML call of a poll runs through one ``BlockingCallGuard`` (a hung driver call never leads to
two in flight). Values degrade per field (``console.sources.nvml.device``): a call that reports NOT_SUPPORTED
gives ``None``, is remembered as unsupported for that device and is not called again; ``reading`` turns each GPU
into a sample. Xid and other critical events arrive on their own thread (``console.sources.nvml.events``) and are
attached to the next sample. ``GpuIsLost`` on any call marks that GPU lost and emits a GPU_LOST event once. A
machine without the library or driver simply has no local GPUs. This module holds the session: initialisation
(retried after a pause), discovery, the event queue, and shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from console.samples.results import PollFailure, SourceError
from console.samples.schema import EventKind, GpuEvent, GpuSample, NodeSample, RecoveryAction
from console.sources.base import BlockingCallGuard, SourceContext
from console.sources.nvml.device import (
    ERROR_DRIVER_NOT_LOADED,
    ERROR_LIB_RM_VERSION_MISMATCH,
    ERROR_LIBRARY_NOT_FOUND,
    DeviceCalls,
    GpuLost,
    NvmlDevice,
    discover_device,
    error_code,
)
from console.sources.nvml.events import EventWatcher
from console.sources.nvml.reading import NVLINK_SCHEMA_FIELDS, GpuReader

log = logging.getLogger(__name__)

NO_GPU_ERRORS = {
    ERROR_DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded",
    ERROR_LIBRARY_NOT_FOUND: "the NVML library (libnvidia-ml.so.1) was not found",
    ERROR_LIB_RM_VERSION_MISMATCH: "NVML and kernel driver versions differ (upgraded without a reboot?)",
}

EVENT_QUEUE_LIMIT = 1000
INIT_RETRY_S = 60.0


def load_pynvml() -> Any:
    import pynvml

    return pynvml


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
        self._devices: list[NvmlDevice] = []
        self._reader: GpuReader | None = None
        self._events: deque[GpuEvent] = deque(maxlen=EVENT_QUEUE_LIMIT)
        self._events_lock = threading.Lock()
        self._last_xid: dict[str, int] = {}
        self._watcher: EventWatcher | None = None
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

    def _xid_last(self, dev: NvmlDevice) -> int | None:
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
            reason = NO_GPU_ERRORS.get(error_code(exc) or -1)
            if reason is None:
                raise SourceError(PollFailure.UNREACHABLE, f"NVML initialisation failed: {exc}") from None
            return self._no_gpus(reason)
        calls = DeviceCalls(nvml)
        try:
            self._driver_version = nvml.nvmlSystemGetDriverVersion()
            count = nvml.nvmlDeviceGetCount()
            found = (discover_device(calls, index, self._mark_lost, NVLINK_SCHEMA_FIELDS) for index in range(count))
            devices = [dev for dev in found if dev is not None]
        except nvml.NVMLError as exc:
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()
            raise SourceError(PollFailure.UNREACHABLE, f"NVML device discovery failed: {exc}") from None
        self._initialized = True
        self.unavailable_reason = None
        self._devices = devices
        self._reader = GpuReader(
            calls, self._driver_version, xid_last=self._xid_last, note_recovery=self._note_recovery
        )
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

    def _mark_lost(self, dev: NvmlDevice) -> None:
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

    def _read_device(self, dev: NvmlDevice) -> GpuSample:
        reader = self._reader
        if not dev.lost and reader is not None:
            try:
                return reader.read(dev)
            except GpuLost:
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

    def _note_recovery(self, dev: NvmlDevice, action: RecoveryAction | None) -> None:
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


def make_source(ctx: SourceContext) -> NvmlSource:
    return NvmlSource(ctx)


__all__ = ["NO_GPU_ERRORS", "NvmlSource", "load_pynvml", "make_source"]
