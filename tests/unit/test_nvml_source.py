"""The NVML source against a thin fake of pynvml: values, unit conversions and every error path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from console.config.fleet import Node, Site, SourceKind, SourceSpec
from console.samples.codec import sample_from_json, sample_to_json
from console.samples.results import PollFailure, SourceError
from console.samples.schema import EventKind, NodeSample, RecoveryAction, ThrottleReason
from console.sources.base import SourceContext
from console.sources.nvml.source import NvmlSource
from tests.helpers import fake_pynvml as F
from tests.helpers.fake_pynvml import FakeGpu, FakeNvml

_T = TypeVar("_T")


def _ctx() -> SourceContext:
    spec = SourceSpec(kind=SourceKind.NVML)
    return SourceContext(
        node=Node(name="gpu-node-1", site="lab", sources=(spec,)),
        site=Site(name="lab", provider="onprem"),
        spec=spec,
        timeout_s=3.0,
    )


def _run(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return asyncio.run(factory())


def _poll(fake: FakeNvml, polls: int = 1, **kwargs: Any) -> tuple[list[NodeSample], NvmlSource]:
    source = NvmlSource(_ctx(), nvml=fake, **{"event_timeout_ms": 50, **kwargs})

    async def go() -> list[NodeSample]:
        try:
            return [await source.poll() for _ in range(polls)]
        finally:
            await source.aclose()

    return _run(go), source


def test_values_are_read_and_converted_to_schema_units() -> None:
    fake = FakeNvml([FakeGpu()])
    [sample], _ = _poll(fake)
    assert (sample.node, sample.site, sample.source) == ("gpu-node-1", "lab", "nvml")
    [gpu] = sample.gpus
    assert gpu.uuid == "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
    assert (gpu.name, gpu.serial, gpu.vbios_version) == (
        "NVIDIA H100 80GB HBM3",
        "1650823051426",
        "96.00.99.00.01",
    )
    assert (gpu.pci_bus_id, gpu.driver_version) == ("00000000:53:00.0", "590.48.01")
    assert gpu.power_w == pytest.approx(631.95)  # mW -> W
    assert (gpu.power_limit_w, gpu.power_default_limit_w) == (700.0, 700.0)
    assert gpu.energy_j == pytest.approx(123456.789)  # mJ -> J
    assert gpu.memory_total_mib == pytest.approx(81559.0)  # bytes -> MiB
    assert gpu.memory_used_mib == pytest.approx(40960.0)
    assert (gpu.temperature_c, gpu.memory_temperature_c, gpu.thermal_margin_c) == (59.0, 55.0, 26.0)
    assert (gpu.slowdown_temp_c, gpu.shutdown_temp_c, gpu.memory_max_temp_c) == (89.0, 92.0, 95.0)
    assert (gpu.sm_clock_mhz, gpu.memory_clock_mhz, gpu.pstate, gpu.utilization_pct) == (
        1980.0,
        2619.0,
        0,
        100.0,
    )
    assert gpu.throttle_reasons == (ThrottleReason.SW_POWER_CAP, ThrottleReason.SW_THERMAL_SLOWDOWN)
    assert (gpu.ecc_sbe_volatile, gpu.ecc_dbe_volatile, gpu.ecc_sbe_aggregate, gpu.ecc_dbe_aggregate) == (
        3,
        0,
        17,
        1,
    )
    assert (gpu.remapped_rows_correctable, gpu.remapped_rows_uncorrectable) == (2, 1)
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (True, False)
    assert gpu.pcie_replays == 9
    assert (gpu.pcie_link_gen, gpu.pcie_link_gen_max, gpu.pcie_link_width, gpu.pcie_link_width_max) == (
        5,
        5,
        8,
        16,
    )
    # per-link counters summed over 18 links (not the all-links fallback, which the fake sets to 1000)
    assert gpu.nvlink_crc_errors == sum(link % 3 for link in range(18))
    assert (gpu.nvlink_replay_errors, gpu.nvlink_recovery_errors) == (18, 0)
    assert gpu.recovery_action is RecoveryAction.NONE
    assert gpu.mig_mode is False
    assert gpu.fan_pct is None
    assert gpu.unsupported == ("fan_pct",)  # SXM: no fan, flagged as a capability
    assert not gpu.lost
    assert sample_from_json(sample_to_json(sample)) == sample


def test_not_supported_gives_none_plus_flag_and_is_not_called_again() -> None:
    gpu = FakeGpu(
        fail={
            "nvmlDeviceGetMarginTemperature": F.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetUtilizationRates": 3,
        },
        field_errors={F.NVML_FI_DEV_MEMORY_TEMP: F.NVML_ERROR_NOT_SUPPORTED},
        thresholds={0: 101, 1: 96},  # GeForce-like: no memory max threshold
    )
    fake = FakeNvml([gpu])
    samples, _ = _poll(fake, polls=3)
    for sample in samples:
        [g] = sample.gpus
        assert g.thermal_margin_c is None
        assert g.utilization_pct is None
        assert g.memory_temperature_c is None
        assert g.memory_max_temp_c is None
        assert g.slowdown_temp_c == 96.0
        assert {"thermal_margin_c", "utilization_pct", "memory_temperature_c", "memory_max_temp_c"} <= set(
            g.unsupported
        )
        assert g.power_w == pytest.approx(631.95)  # the rest of the device still reports
    assert fake.calls["nvmlDeviceGetMarginTemperature"] == 1
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 1
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 3


def test_a_transient_error_is_none_this_poll_but_not_a_capability() -> None:
    fake = FakeNvml([FakeGpu(fail={"nvmlDeviceGetPowerUsage": F.NVML_ERROR_UNKNOWN})])
    source = NvmlSource(_ctx(), nvml=fake, event_timeout_ms=50)

    async def go() -> tuple[NodeSample, NodeSample]:
        try:
            first = await source.poll()
            fake.gpus[0].fail.clear()
            return first, await source.poll()
        finally:
            await source.aclose()

    first, second = _run(go)
    assert first.gpus[0].power_w is None
    assert "power_w" not in first.gpus[0].unsupported
    assert second.gpus[0].power_w == pytest.approx(631.95)


def test_nvlink_falls_back_to_all_links_totals_and_no_nvlink_is_flagged() -> None:
    per_link_dead = {F.NVML_FI_DEV_NVLINK_ERROR_DL_CRC: 3, F.NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY: 3}
    pcie_card = FakeGpu(uuid="GPU-pcie", nvlinks=0)
    fake = FakeNvml([FakeGpu(field_errors=per_link_dead), pcie_card])
    [sample], _ = _poll(fake)
    sxm, pcie = sample.gpus
    assert sxm.nvlink_crc_errors == 2000
    assert sxm.nvlink_replay_errors == 1000
    assert pcie.nvlink_crc_errors is None
    assert {"nvlink_crc_errors", "nvlink_replay_errors", "nvlink_recovery_errors"} <= set(pcie.unsupported)


def test_temperature_falls_back_to_the_deprecated_call_on_function_not_found() -> None:
    fake = FakeNvml([FakeGpu(temperature=41)])
    fake.missing_functions.add("nvmlDeviceGetTemperatureV")
    samples, _ = _poll(fake, polls=2)
    assert [s.gpus[0].temperature_c for s in samples] == [41.0, 41.0]
    assert fake.calls["nvmlDeviceGetTemperatureV"] == 1  # learned once, then the old call only
    assert fake.calls["nvmlDeviceGetTemperature"] == 2
    assert "temperature_c" not in samples[0].gpus[0].unsupported


def test_gpu_is_lost_marks_the_gpu_lost_and_emits_one_gpu_lost_event() -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-second", bus_id="00000000:64:00.0")])
    source = NvmlSource(_ctx(), nvml=fake, event_timeout_ms=50)

    async def go() -> list[NodeSample]:
        try:
            samples = [await source.poll()]
            fake.gpus[1].fail["nvmlDeviceGetPowerUsage"] = F.NVML_ERROR_GPU_IS_LOST
            samples += [await source.poll(), await source.poll()]
            return samples
        finally:
            await source.aclose()

    healthy, lost, after = _run(go)
    assert not any(g.lost for g in healthy.gpus)
    assert [g.lost for g in lost.gpus] == [False, True]
    gone = lost.gpus[1]
    assert (gone.uuid, gone.pci_bus_id, gone.power_w) == ("GPU-second", "00000000:64:00.0", None)
    [event] = lost.events
    assert (event.kind, event.gpu_uuid, event.code) == (EventKind.GPU_LOST, "GPU-second", 79)
    assert after.gpus[1].lost
    assert after.events == ()
    assert after.gpus[0].power_w == pytest.approx(631.95)


def test_gpu_is_lost_in_a_field_value_entry() -> None:
    fake = FakeNvml([FakeGpu(field_errors={F.NVML_FI_DEV_PCIE_REPLAY_COUNTER: F.NVML_ERROR_GPU_IS_LOST})])
    [sample], _ = _poll(fake)
    assert sample.gpus[0].lost
    assert [e.kind for e in sample.events] == [EventKind.GPU_LOST]


@pytest.mark.parametrize(
    ("code", "words"),
    [(F.NVML_ERROR_LIBRARY_NOT_FOUND, "library"), (F.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded")],
)
def test_no_library_or_driver_means_no_local_gpus(code: int, words: str) -> None:
    fake = FakeNvml(init_error=code)
    samples, source = _poll(fake, polls=2)
    assert [s.gpus for s in samples] == [(), ()]
    assert source.unavailable_reason is not None
    assert words in source.unavailable_reason
    assert fake.calls["nvmlInit"] == 1  # not retried on every poll


def test_other_init_failures_are_a_clear_source_error() -> None:
    fake = FakeNvml(init_error=F.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(SourceError) as info:
        _poll(fake)
    assert info.value.failure is PollFailure.UNREACHABLE
    assert "Insufficient Permissions" in info.value.reason


def test_a_failing_discovery_is_a_clear_error_and_init_is_undone() -> None:
    fake = FakeNvml([FakeGpu()])

    def broken_count() -> int:
        raise F.NVMLError(F.NVML_ERROR_UNKNOWN)

    fake.nvmlDeviceGetCount = broken_count  # type: ignore[method-assign]
    with pytest.raises(SourceError) as info:
        _poll(fake)
    assert info.value.failure is PollFailure.UNREACHABLE
    assert "discovery failed: Unknown Error" in info.value.reason
    assert fake.initialized == 0


def test_init_happens_once_and_shutdown_on_close() -> None:
    fake = FakeNvml()
    _poll(fake, polls=3)
    assert fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlShutdown"] == 1
    assert fake.event_sets_open == 0


def test_the_event_thread_delivers_an_xid_and_stops_when_the_source_closes() -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-second")])
    source = NvmlSource(_ctx(), nvml=fake, event_timeout_ms=100)

    async def go() -> tuple[NodeSample, NodeSample, float]:
        await source.poll()
        fake.inject_event(1, F.nvmlEventTypeXidCriticalError, 79)
        fake.inject_event(0, F.nvmlEventTypeGpuRecoveryAction, 4)
        deadline = time.monotonic() + 5
        sample = await source.poll()
        while len(sample.events) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            more = await source.poll()
            sample = NodeSample(**{**_fields(more), "events": sample.events + more.events})
        drained = await source.poll()
        started = time.monotonic()
        await source.aclose()
        return sample, drained, time.monotonic() - started

    sample, drained, close_s = _run(go)
    assert sample.gpus[1].xid_last == 79  # the last Xid, as DCGM_FI_DEV_XID_ERRORS reports it
    assert sample.gpus[0].xid_last == 0  # watched, none seen
    xid = next(e for e in sample.events if e.kind is EventKind.XID)
    assert (xid.code, xid.gpu_uuid, xid.gpu_index) == (79, "GPU-second", 1)
    recovery = next(e for e in sample.events if e.kind is EventKind.RECOVERY_ACTION)
    assert (recovery.code, recovery.gpu_uuid) == (4, "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6")
    assert drained.events == ()  # each event is attached once
    assert close_s < 2.0
    assert fake.event_sets_open == 0
    assert fake.registered[0] & F.nvmlEventTypeXidCriticalError


def test_recovery_action_change_becomes_an_event_when_the_driver_cannot_deliver_it() -> None:
    fake = FakeNvml([FakeGpu(supported_events=F.nvmlEventTypeXidCriticalError)])
    source = NvmlSource(_ctx(), nvml=fake, event_timeout_ms=50)

    async def go() -> tuple[NodeSample, NodeSample]:
        try:
            await source.poll()
            fake.gpus[0].fields[(F.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, 0)] = (
                F.NVML_VALUE_TYPE_UNSIGNED_INT,
                4,
            )
            return await source.poll(), await source.poll()
        finally:
            await source.aclose()

    changed, steady = _run(go)
    assert changed.gpus[0].recovery_action is RecoveryAction.DRAIN_AND_RESET
    [event] = changed.events
    assert (event.kind, event.code) == (EventKind.RECOVERY_ACTION, 4)
    assert steady.events == ()


def test_a_hung_driver_call_never_leads_to_two_in_flight() -> None:
    import threading

    release = threading.Event()
    fake = FakeNvml()
    original = fake.nvmlDeviceGetPowerUsage

    def hung(h: int) -> int:
        release.wait(5)
        return original(h)

    fake.nvmlDeviceGetPowerUsage = hung  # type: ignore[method-assign]
    source = NvmlSource(_ctx(), nvml=fake, event_timeout_ms=50)

    async def go() -> PollFailure:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(source.poll(), 0.2)
        try:
            with pytest.raises(SourceError) as info:
                await source.poll()
            return info.value.failure
        finally:
            release.set()
            await asyncio.sleep(0.1)
            await source.aclose()

    assert _run(go) is PollFailure.BUSY


def _fields(sample: NodeSample) -> dict[str, Any]:
    return {name: getattr(sample, name) for name in ("node", "site", "source", "time", "gpus", "chassis", "events")}
