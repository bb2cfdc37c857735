"""Builders shared by more than one test file (and by the bench scripts): a loopback port, a loopback server
base and a stand-in exporter on it, an incident, a fully populated H100 node."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Self

from aiohttp import web

from console.incidents.model import Incident, IncidentContext, Severity, Status
from console.samples.schema import GpuSample, NodeSample, RecoveryAction, ThrottleReason


def free_port() -> int:
    """A loopback port that was just free (bound, then closed): nothing listens there, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LoopbackServer:
    """A real aiohttp server on 127.0.0.1 in a thread and loop of its own, for the life of a ``with`` block.

    A subclass gives its routes in ``build_app``; ``serving`` may hold something for the server's whole life (an
    upstream client session)."""

    thread_name = "loopback-server"

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._started.wait(10), f"{self.thread_name} did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def build_app(self) -> web.Application:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        yield

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        async with self.serving():
            runner = web.AppRunner(self.build_app(), shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._stop = asyncio.Event()
            self._started.set()
            await self._stop.wait()
            await runner.cleanup()


class ExporterStandIn(LoopbackServer):
    """A real HTTP server in its own thread: a dcgm-exporter payload, and the ways a target goes wrong."""

    thread_name = "exporter-stand-in"

    def __init__(self, payload: str) -> None:
        self.payload = payload
        super().__init__()

    def url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def build_app(self) -> web.Application:
        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(text=self.payload, content_type="text/plain")

        async def needs_auth(_request: web.Request) -> web.Response:
            return web.Response(status=401, text="Unauthorized", headers={"WWW-Authenticate": "Basic"})

        async def garbage(_request: web.Request) -> web.Response:
            return web.Response(text="<html><body>It works!</body></html>", content_type="text/html")

        async def silent(_request: web.Request) -> web.Response:
            await asyncio.sleep(30)  # never answers within any probe timeout
            return web.Response(text="late")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/auth", needs_auth)
        app.router.add_get("/garbage", garbage)
        app.router.add_get("/silent", silent)
        return app


def make_incident(
    incident_id: str,
    opened_at: float,
    *,
    site: str = "iad-hyperscaler",
    provider: str = "hyperscaler",
    node: str = "node01",
    gpu_index: int | None = 0,
    gpu_uuid: str | None = None,  # None: GPU-{node}-{gpu_index} (or no GPU when gpu_index is None)
    model: str | None = "NVIDIA H100 80GB HBM3",
    driver: str | None = "590.48.01",
    serial: str | None = "1650123456789",
    vbios: str | None = "96.00.99.00.01",
    pci_bus_id: str | None = "0000:18:00.0",
    rule: str = "xid",
    code: str = "79",
    kind: str = "xid",
    severity: Severity = Severity.CRITICAL,
    status: Status = Status.OPEN,
    title: str = "GPU fell off the bus (Xid 79)",
    detail: str = "Xid 79 reported by the driver",
    **changes: Any,
) -> Incident:
    """An Xid 79 on an H100 (first seen and last seen at ``opened_at``); ``changes`` replace any other field."""
    base = Incident(
        id=incident_id,
        rule=rule,
        code=code,
        kind=kind,
        severity=severity,
        status=status,
        title=title,
        detail=detail,
        context=IncidentContext(
            site=site,
            provider=provider,
            node=node,
            gpu_uuid=gpu_uuid or (None if gpu_index is None else f"GPU-{node}-{gpu_index}"),
            gpu_index=gpu_index,
            gpu_model=model,
            serial=serial,
            driver_version=driver,
            vbios_version=vbios,
            pci_bus_id=pci_bus_id,
        ),
        opened_at=opened_at,
        last_seen_at=opened_at,
        recommended_action="drain the node and reset the GPU",
    )
    return replace(base, **changes)


def h100_dcgm_sample(node: str = "p5-017", gpus: int = 8) -> NodeSample:
    """A loaded 8-GPU H100 SXM node with every field the schema has a DCGM name for."""
    return NodeSample(
        node=node,
        site="aws-use1",
        source="dcgm",
        time=1_760_000_000.0,
        gpus=tuple(
            GpuSample(
                index=i,
                uuid=f"GPU-22dbdd79-f55a-92a8-aa39-3221{i:08x}",
                name="NVIDIA H100 80GB HBM3",
                serial=f"165232300{i:04d}",
                pci_bus_id=f"00000000:{0x53 + i:02X}:00.0",
                driver_version="590.48.01",
                vbios_version="96.00.99.00.01",
                utilization_pct=100.0 - i,
                memory_used_mib=74213.0 + i,
                memory_total_mib=81559.0,
                power_w=631.95 + i,
                power_limit_w=700.0,
                power_default_limit_w=700.0,
                energy_j=123456789.123,
                temperature_c=59.0 + i,
                memory_temperature_c=55.0,
                thermal_margin_c=26.0 - i,
                slowdown_temp_c=87.0,
                shutdown_temp_c=92.0,
                memory_max_temp_c=95.0,
                sm_clock_mhz=1980.0,
                memory_clock_mhz=2619.0,
                pstate=0,
                throttle_reasons=(ThrottleReason.SW_POWER_CAP,) if i % 2 else (),
                ecc_sbe_volatile=i,
                ecc_dbe_volatile=0,
                ecc_sbe_aggregate=10 + i,
                ecc_dbe_aggregate=0,
                remapped_rows_correctable=0,
                remapped_rows_uncorrectable=0,
                remapped_rows_pending=False,
                remapped_rows_failure=False,
                pcie_replays=9,
                pcie_link_gen=5,
                pcie_link_gen_max=5,
                pcie_link_width=16,
                pcie_link_width_max=16,
                nvlink_crc_errors=3,
                nvlink_replay_errors=0,
                nvlink_recovery_errors=0,
                xid_last=79 if i == 3 else 0,
                recovery_action=RecoveryAction.NONE,
                mig_mode=False,
            )
            for i in range(gpus)
        ),
    )
