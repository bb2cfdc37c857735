"""The dcgm-exporter source: mapping real and reference-built payloads, rendering, and scraping over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from console.config.fleet import Node, Site, SourceKind, SourceSpec
from console.samples.results import PollFailure, SourceError
from console.samples.schema import EventKind, GpuSample, NodeSample, RecoveryAction, ThrottleReason
from console.sources import make_source
from console.sources.base import SourceContext
from console.sources.dcgm.mapping import XidMemory
from console.sources.dcgm.render import render_dcgm_exposition
from console.sources.dcgm.source import DcgmSource, parse_dcgm_payload
from tests.helpers.builders import free_port, h100_dcgm_sample

# The L4 capture is from cncf/k8s-ai-conformance (Apache-2.0); see tests/fixtures/SOURCES.md.
L4_FIXTURE = "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt"
L4_UUID = "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"
H100_UUID = "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
# The label set of the real AWS p5 line quoted in reference section 3.1.
H100_LABELS = (
    f'gpu="0",UUID="{H100_UUID}",pci_bus_id="00000000:53:00.0",device="nvidia0",'
    'modelName="NVIDIA H100 80GB HBM3",Hostname="ip-100-64-171-120.ec2.internal",'
    'DCGM_FI_DRIVER_VERSION="580.105.08"'
)


def _payload(lines: Mapping[str, float | str], labels: str = H100_LABELS) -> str:
    return "".join(f"{name}{{{labels}}} {value}\n" for name, value in lines.items())


def _parse(text: str, memory: XidMemory | None = None) -> NodeSample:
    return parse_dcgm_payload(text, "p5-017", "aws-use1", 1000.0, memory)


# --- mapping ---------------------------------------------------------------------------------------------------


def test_real_l4_payload_maps_to_the_right_values(fixtures_dir: Path) -> None:
    sample = _parse((fixtures_dir / L4_FIXTURE).read_text())
    assert (sample.node, sample.site, sample.source, sample.time) == ("p5-017", "aws-use1", "dcgm", 1000.0)
    (gpu,) = sample.gpus
    assert (gpu.index, gpu.uuid, gpu.name) == (0, L4_UUID, "NVIDIA L4")
    assert (gpu.pci_bus_id, gpu.driver_version) == ("00000000:31:00.0", "580.105.08")
    assert (gpu.sm_clock_mhz, gpu.memory_clock_mhz, gpu.temperature_c) == (210.0, 405.0, 31.0)
    assert gpu.power_w == pytest.approx(16.365)
    assert gpu.energy_j == pytest.approx(4742.776)  # 4742776 mJ
    assert (gpu.utilization_pct, gpu.memory_used_mib) == (0.0, 0.0)
    assert gpu.memory_total_mib == 22563 + 0 + 470  # free + used + reserved
    assert (gpu.pcie_replays, gpu.remapped_rows_correctable, gpu.remapped_rows_uncorrectable) == (0, 0, 0)
    assert gpu.remapped_rows_failure is False
    # GDDR6 has no memory sensor: the exporter says 0, which must not read as 0 degC
    assert gpu.memory_temperature_c is None
    assert "memory_temperature_c" in gpu.unsupported
    assert gpu.fan_pct is None and gpu.xid_last is None and sample.events == ()


OLD_NAMES = {
    "DCGM_FI_DEV_GPU_TEMP": 59,
    "DCGM_FI_DEV_POWER_USAGE": 631.95,
    "DCGM_FI_DEV_GPU_UTIL": 87,
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 9,
    "DCGM_FI_DEV_XID_ERRORS": 0,
    "DCGM_FI_DEV_MEMORY_TEMP": 55,
    "DCGM_FI_DEV_GPU_TEMP_LIMIT": 26,
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": 700,
    "DCGM_FI_DEV_POWER_MGMT_LIMIT_DEF": 700,
    "DCGM_FI_DEV_SLOWDOWN_TEMP": 87,
    "DCGM_FI_DEV_SHUTDOWN_TEMP": 92,
    "DCGM_FI_DEV_MEM_MAX_OP_TEMP": 95,
    "DCGM_FI_DEV_PSTATE": 0,
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 0x60,
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 2,
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 1,
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": 5,
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL": 2,
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL": 1,
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL": 0,
    "DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION": 4,
}
NEW_NAMES = {
    "DCGM_FI_DEV_GPU_TEMP_CELSIUS": 59,
    "DCGM_FI_DEV_BOARD_POWER_WATTS": 631.95,
    "DCGM_FI_DEV_GPU_UTIL_RATIO": 0.87,
    "DCGM_FI_DEV_PCIE_REPLAY_TOTAL": 9,
    "DCGM_FI_DEV_XID_ERROR": 0,
    "DCGM_FI_DEV_MEMORY_TEMP_CELSIUS": 55,
    "DCGM_FI_DEV_GPU_TEMP_MARGIN_CELSIUS": 26,
    "DCGM_FI_DEV_BOARD_POWER_LIMIT_ENFORCED_WATTS": 700,
    "DCGM_FI_DEV_BOARD_POWER_LIMIT_DEFAULT_WATTS": 700,
    "DCGM_FI_DEV_GPU_TEMP_SLOWDOWN_CELSIUS": 87,
    "DCGM_FI_DEV_GPU_TEMP_SHUTDOWN_CELSIUS": 92,
    "DCGM_FI_DEV_MEMORY_MAX_OP_TEMP_CELSIUS": 95,
    "DCGM_FI_DEV_GPU_PSTATE": 0,
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": 0x60,
    "DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL": 2,
    "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL": 1,
    "DCGM_FI_DEV_ROW_REMAP_FAILED": 0,
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_TOTAL": 5,
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_TOTAL": 2,
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_TOTAL": 1,
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_TOTAL": 0,
    "DCGM_FI_DEV_GPU_RECOVERY_ACTION": 4,
}


def test_old_and_2026_renamed_names_give_the_same_sample() -> None:
    old = _parse(_payload(OLD_NAMES)).gpus[0]
    new = _parse(_payload(NEW_NAMES)).gpus[0]
    assert old == new
    assert (old.temperature_c, old.power_w, old.utilization_pct) == (59.0, 631.95, pytest.approx(87.0))
    assert (old.thermal_margin_c, old.power_limit_w, old.power_default_limit_w) == (26.0, 700.0, 700.0)
    assert (old.slowdown_temp_c, old.shutdown_temp_c, old.memory_max_temp_c) == (87.0, 92.0, 95.0)
    assert old.throttle_reasons == (ThrottleReason.SW_THERMAL_SLOWDOWN, ThrottleReason.HW_THERMAL_SLOWDOWN)
    assert (old.remapped_rows_correctable, old.remapped_rows_uncorrectable, old.remapped_rows_failure) == (
        2,
        1,
        False,
    )
    assert (old.nvlink_crc_errors, old.nvlink_replay_errors, old.nvlink_recovery_errors) == (7, 1, 0)
    assert (old.pstate, old.pcie_replays, old.xid_last) == (0, 9, 0)
    assert old.recovery_action is RecoveryAction.DRAIN_AND_RESET


def test_lowercase_hostname_and_uuid_labels_are_accepted() -> None:
    labels = H100_LABELS.replace("UUID=", "uuid=").replace("Hostname=", "hostname=")
    gpu = _parse(_payload({"DCGM_FI_DEV_GPU_TEMP": 44}, labels)).gpus[0]
    assert (gpu.uuid, gpu.index, gpu.name, gpu.temperature_c) == (H100_UUID, 0, "NVIDIA H100 80GB HBM3", 44.0)


def test_blank_sentinels_nan_and_inf_become_none() -> None:
    gpu = _parse(
        _payload(
            {
                "DCGM_FI_DEV_MEMORY_TEMP": 9223372036854775794,  # int64 NOT_SUPPORTED, as in the exporter README
                "DCGM_FI_DEV_FAN_SPEED": 2147483634,  # int32 NOT_SUPPORTED
                "DCGM_FI_DEV_GPU_TEMP_LIMIT": 2147483632,  # int32 BLANK
                "DCGM_FI_DEV_POWER_USAGE": 140737488355328.0,  # fp64 BLANK
                "DCGM_FI_DEV_GPU_UTIL": "NaN",
                "DCGM_FI_DEV_SM_CLOCK": "+Inf",
                "DCGM_FI_DEV_GPU_TEMP": 41,
                # a real counter may pass 2**31 and must survive: 2.2e9 mJ is 37 minutes at 1 kW
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 2_200_000_000,
            }
        )
    ).gpus[0]
    assert gpu.memory_temperature_c is None and gpu.fan_pct is None and gpu.thermal_margin_c is None
    assert gpu.power_w is None and gpu.utilization_pct is None and gpu.sm_clock_mhz is None
    assert gpu.temperature_c == 41.0
    assert gpu.energy_j == 2_200_000.0
    assert set(gpu.unsupported) == {"memory_temperature_c", "fan_pct"}


def test_mig_instances_never_overwrite_the_parent_gpu() -> None:
    mig = [H100_LABELS + f',GPU_I_PROFILE="3g.40gb",GPU_I_ID="{i}"' for i in (1, 2)]
    text = (
        _payload({"DCGM_FI_DEV_GPU_TEMP": 59, "DCGM_FI_DEV_POWER_USAGE": 433.78})
        + _payload({"DCGM_FI_DEV_GPU_TEMP": 10, "DCGM_FI_DEV_FB_USED": 1000, "DCGM_FI_DEV_FB_FREE": 39000}, mig[0])
        + _payload({"DCGM_FI_DEV_POWER_USAGE": 1, "DCGM_FI_DEV_FB_USED": 500, "DCGM_FI_DEV_FB_FREE": 39500}, mig[1])
    )
    (gpu,) = _parse(text).gpus
    assert gpu.uuid == H100_UUID and gpu.mig_mode is True
    assert (gpu.temperature_c, gpu.power_w) == (59.0, 433.78)  # the parent's own series win
    assert (gpu.memory_used_mib, gpu.memory_total_mib) == (1500.0, 80000.0)  # instances add up
    assert gpu.utilization_pct is None  # not reported for MIG


def test_exporter_timestamps_become_the_sample_time() -> None:
    text = f"DCGM_FI_DEV_GPU_TEMP{{{H100_LABELS}}} 44 1760000000500\n"
    assert _parse(text).time == 1_760_000_000.5


def _xid_payload(code: int, message: str, counts: dict[int, int] | None = None) -> str:
    text = f'DCGM_FI_DEV_XID_ERRORS{{{H100_LABELS},err_code="{code}",err_msg="{message}"}} {code}\n'
    for xid, count in (counts or {}).items():
        text += f'DCGM_EXP_XID_ERRORS_COUNT{{{H100_LABELS},xid="{xid}"}} {count}\n'
    return text


def test_xid_gauge_emits_an_event_when_it_changes() -> None:
    memory = XidMemory()
    first = _parse(_xid_payload(0, "No Error"), memory)
    assert first.gpus[0].xid_last == 0 and first.events == ()  # the first poll reports only a non-zero Xid
    fallen = _parse(_xid_payload(79, "GPU has fallen off the bus"), memory)
    (event,) = fallen.events
    assert (event.kind, event.code, event.message) == (EventKind.XID, 79, "GPU has fallen off the bus")
    assert (event.gpu_uuid, event.gpu_index, fallen.gpus[0].xid_last) == (H100_UUID, 0, 79)
    assert _parse(_xid_payload(79, "GPU has fallen off the bus"), memory).events == ()  # unchanged: no repeat
    assert _parse(_xid_payload(0, "No Error"), memory).events == ()  # a reset is not an Xid


def test_first_poll_with_a_nonzero_xid_emits_it() -> None:
    (event,) = _parse(_xid_payload(48, "DBE")).events
    assert (event.code, event.message) == (48, "DBE")


def test_xid_count_emits_an_event_when_a_count_rises() -> None:
    memory = XidMemory()
    _parse(_xid_payload(13, "Graphics Engine Exception", {13: 1}), memory)
    again = _parse(_xid_payload(13, "Graphics Engine Exception", {13: 3, 31: 0}), memory)
    (event,) = again.events  # the gauge repeats 13, but the window count says two more happened
    assert (event.code, event.gpu_uuid) == (13, H100_UUID)
    assert _parse(_xid_payload(13, "Graphics Engine Exception", {13: 3}), memory).events == ()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-1"} 41\nDCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-1"', "line 2"),
        ("<html><body>Service Unavailable</body></html>\n", "line 1"),
        ('go_goroutines 12\nprocess_cpu_seconds_total{job="x"} 3\n', "no GPU series"),
        ("", "no GPU series"),
    ],
)
def test_bad_payloads_are_bad_payload_errors_with_a_reason(text: str, words: str) -> None:
    with pytest.raises(SourceError) as caught:
        _parse(text)
    assert caught.value.failure is PollFailure.BAD_PAYLOAD
    assert words in caught.value.reason


# --- rendering ---------------------------------------------------------------------------------------------------


def test_render_then_parse_gives_back_every_value() -> None:
    original = h100_dcgm_sample()
    text = render_dcgm_exposition([original])
    parsed = parse_dcgm_payload(text, original.node, original.site, original.time)
    assert len(parsed.gpus) == 8
    for mine, theirs in zip(original.gpus, parsed.gpus, strict=True):
        for f in dataclasses.fields(GpuSample):
            assert getattr(theirs, f.name) == pytest.approx(getattr(mine, f.name)), f.name
    assert 'Hostname="p5-017"' in text and 'modelName="NVIDIA H100 80GB HBM3"' in text
    lowercase = render_dcgm_exposition([original], hostname_label="hostname", timestamps=True)
    again = parse_dcgm_payload(lowercase, "x", "y", 0.0)
    assert 'hostname="p5-017"' in lowercase and again.time == original.time
    assert again.gpus == parsed.gpus


# promtool's lint rules that dcgm-exporter's own names break (the real L4 capture gets exactly these):
# camelCase labels (modelName, UUID), counters without "_total", "COUNTER" in a name.
_EXPORTER_LINT = ("label names should be written in 'snake_case'", 'should have "_total" suffix', "type 'counter'")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_rendered_payload(fixtures_dir: Path) -> None:
    def check(text: str) -> list[str]:
        done = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode in (0, 3), done.stdout + done.stderr  # 1 = not parseable
        return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]

    real = check((fixtures_dir / L4_FIXTURE).read_text())
    ours = check(render_dcgm_exposition([h100_dcgm_sample(), h100_dcgm_sample("p5-018", 2)]))
    assert real and ours
    unexpected = [line for line in ours if not any(rule in line for rule in _EXPORTER_LINT)]
    assert unexpected == []


# --- HTTP --------------------------------------------------------------------------------------------------------


def _ctx(url: str, http: aiohttp.ClientSession | None, timeout_s: float = 5.0, **spec: object) -> SourceContext:
    source = SourceSpec(kind=SourceKind.DCGM, url=url, **spec)  # type: ignore[arg-type]
    return SourceContext(
        node=Node(name="p5-017", site="aws-use1", sources=(source,)),
        site=Site(name="aws-use1", provider="aws"),
        spec=source,
        timeout_s=timeout_s,
        http=http,
    )


@contextlib.asynccontextmanager
async def _server(fixture_text: str) -> AsyncIterator[str]:
    release = asyncio.Event()

    async def plain(_: web.Request) -> web.Response:
        return web.Response(text=fixture_text, content_type="text/plain")

    async def gzipped(request: web.Request) -> web.Response:
        assert "gzip" in request.headers.get("Accept-Encoding", "")
        body = gzip.compress(fixture_text.encode())
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        line = f"DCGM_FI_DEV_GPU_TEMP{{{H100_LABELS}}} 41\n".encode()
        for _ in range(2000):  # ~0.5 MB, over the 64 KiB cap the test sets
            await response.write(line)
        return response

    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "5000"})
        await response.prepare(request)
        await response.write(fixture_text.encode()[:500])
        request.transport.close()  # type: ignore[union-attr]
        return response

    async def malformed(_: web.Request) -> web.Response:
        return web.Response(text=fixture_text.replace("} 405", "} four-oh-five"))

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="")

    app = web.Application()
    app.add_routes(
        [
            web.get("/metrics", plain),
            web.get("/gzip", gzipped),
            web.get("/status/{code}", status),
            web.get("/huge", huge),
            web.get("/truncated", truncated),
            web.get("/malformed", malformed),
            web.get("/hang", hang),
        ]
    )
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        await runner.cleanup()


def _run(fixtures_dir: Path, body: Callable[[str, aiohttp.ClientSession], Awaitable[None]]) -> None:
    async def main() -> None:
        async with _server((fixtures_dir / L4_FIXTURE).read_text()) as base, aiohttp.ClientSession() as http:
            await body(base, http)

    asyncio.run(main())


def test_polls_plain_and_gzip_payloads_through_the_registry(fixtures_dir: Path) -> None:
    async def body(base: str, http: aiohttp.ClientSession) -> None:
        for path in ("/metrics", "/gzip"):
            source = make_source(_ctx(base + path, http))
            sample = await source.poll()
            await source.aclose()
            assert (sample.node, sample.gpus[0].uuid, sample.gpus[0].temperature_c) == ("p5-017", L4_UUID, 31.0)

    _run(fixtures_dir, body)


@pytest.mark.parametrize(
    ("path", "failure", "words"),
    [
        ("/status/401", PollFailure.AUTH_REFUSED, "HTTP 401"),
        ("/status/403", PollFailure.AUTH_REFUSED, "HTTP 403"),
        ("/status/503", PollFailure.UNREACHABLE, "HTTP 503"),
        ("/status/404", PollFailure.UNREACHABLE, "HTTP 404"),
        ("/huge", PollFailure.BAD_PAYLOAD, "larger than the 64 KiB cap"),
        ("/truncated", PollFailure.BAD_PAYLOAD, "truncated"),
        ("/malformed", PollFailure.BAD_PAYLOAD, "line 6"),
    ],
)
def test_http_failures_become_source_errors(fixtures_dir: Path, path: str, failure: PollFailure, words: str) -> None:
    async def body(base: str, http: aiohttp.ClientSession) -> None:
        source = DcgmSource(_ctx(base + path, http), max_payload_bytes=64 * 1024)
        with pytest.raises(SourceError) as caught:
            await source.poll()
        assert caught.value.failure is failure
        assert words in caught.value.reason

    _run(fixtures_dir, body)


def test_refused_port_is_unreachable() -> None:
    port = free_port()  # closed again before the poll: nothing listens there

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(SourceError) as caught:
                await DcgmSource(_ctx(f"http://127.0.0.1:{port}/metrics", http)).poll()
            assert caught.value.failure is PollFailure.UNREACHABLE
            assert "cannot connect" in caught.value.reason

    asyncio.run(main())


def test_a_connection_reset_is_unreachable() -> None:
    async def reset(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        writer.transport.abort()

    async def main() -> None:
        server = await asyncio.start_server(reset, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(SourceError) as caught:
                    await DcgmSource(_ctx(f"http://127.0.0.1:{port}/metrics", http)).poll()
                assert caught.value.failure is PollFailure.UNREACHABLE
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_a_server_that_never_answers_times_out(fixtures_dir: Path) -> None:
    async def body(base: str, http: aiohttp.ClientSession) -> None:
        slow_limit = DcgmSource(_ctx(base + "/hang", http, timeout_s=30.0))
        with pytest.raises(TimeoutError):  # the poller's own bound (asyncio.wait_for) stops the wait
            await asyncio.wait_for(slow_limit.poll(), 0.3)
        own_limit = DcgmSource(_ctx(base + "/hang", http, timeout_s=0.3))
        with pytest.raises(SourceError) as caught:
            await own_limit.poll()
        assert caught.value.failure is PollFailure.TIMEOUT

    _run(fixtures_dir, body)


def test_a_source_without_a_session_opens_and_closes_its_own(fixtures_dir: Path) -> None:
    async def body(base: str, _http: aiohttp.ClientSession) -> None:
        source = DcgmSource(_ctx(base + "/metrics", None))
        assert (await source.poll()).gpus[0].uuid == L4_UUID
        await source.aclose()

    _run(fixtures_dir, body)


def test_a_missing_ca_file_is_reported_when_the_source_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CA file"):
        DcgmSource(_ctx("https://127.0.0.1:1/metrics", None, ca_file=str(tmp_path / "missing.pem")))


def test_a_repeated_payload_returns_the_very_same_sample_so_the_poller_can_tell_it_is_not_new() -> None:
    """dcgm-exporter collects every 30 s by default: most 1 Hz scrapes repeat the same bytes."""
    payloads = [_xid_payload(79, "GPU has fallen off the bus")] * 2 + [_xid_payload(48, "DBE")]

    async def main() -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(text=payloads.pop(0), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as http:
                source = make_source(_ctx(f"http://127.0.0.1:{port}/metrics", http))
                first = await source.poll()
                await asyncio.sleep(0.05)
                repeat = await source.poll()
                changed = await source.poll()
                await source.aclose()
        finally:
            await runner.cleanup()
        assert [e.code for e in first.events] == [79]
        assert repeat is first, "a repeat is the same object: PollResult.fresh is False and nothing is re-evaluated"
        assert [e.code for e in changed.events] == [48] and changed.gpus[0].xid_last == 48

    asyncio.run(main())
