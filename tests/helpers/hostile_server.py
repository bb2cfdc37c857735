"""A misbehaving dcgm-exporter on 127.0.0.1 (aiohttp.web, ephemeral port, its own loop in a thread).

One path per misbehaviour, so one server serves a whole fleet of bad nodes:

- ``/good/{node}``: a realistic 8-GPU H100 payload (``render_dcgm_exposition`` of ``realistic_sample``)
- ``/hang``: accepts the request and never answers
- ``/status/{code}``: answers with that HTTP status (500, 503, ...)
- ``/trickle``: a valid payload, one byte per 100 ms
- ``/huge``: 200 MB streamed without a length (``huge_bytes_sent`` counts what actually left)
- ``/huge-declared``: a Content-Length of 200 MB up front
- ``/malformed``: exposition text whose line 3 is broken; ``/truncated``: the text cut mid-label;
  ``/truncated-body``: the connection closes before the declared length arrived
- ``/nan``: NaN and +Inf values; ``/duplicate``: one UUID twice; ``/missing``: a GPU that comes and goes
- ``/backwards``: counters (energy, ECC, PCIe replays) that fall on every poll
- ``/labels``: label values with quotes, newlines, backslashes and HTML
- ``/future`` and ``/past``: series timestamps years away from now
- ``/churn``: a new GPU UUID on every poll (a node that would grow per-GPU state without bound)

``refused_url()`` is a port nothing listens on. ``hits`` counts requests per path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.samples.schema import GpuSample, NodeSample, ThrottleReason
from console.sources.dcgm.render import render_dcgm_exposition
from tests.helpers.builders import free_port

_T = TypeVar("_T")

HUGE_BYTES = 200 * 1024 * 1024
HTML_MODEL = "<b>bold</b><img src=x>"  # the example; the serial carries a <script>
# A model name with every character the exposition format escapes, and a few it does not.
ODD_MODEL = 'H100 "SXM"\nline two \\ back\\slash'
YEARS_S = 5 * 365 * 86400.0


def realistic_gpu(index: int, *, node: str = "node", uuid: str | None = None, **changes: Any) -> GpuSample:
    """An H100 SXM under load, the values dcgm-exporter reports for one."""
    gpu = GpuSample(
        index=index,
        uuid=uuid or f"GPU-{node}-{index:02d}-5b0e7a4c-1f3d-4e8a-9c2b",
        name="NVIDIA H100 80GB HBM3",
        serial=f"165422{index:07d}",
        pci_bus_id=f"00000000:{0x18 + index * 0x10:02X}:00.0",
        driver_version="590.48.01",
        vbios_version="96.00.99.00.01",
        utilization_pct=87.0 + index,
        memory_used_mib=61234.0,
        memory_total_mib=81559.0,
        power_w=612.5 + index,
        power_limit_w=700.0,
        energy_j=4742776.0 + index * 1000.0,
        temperature_c=61.0 + index,
        memory_temperature_c=68.0,
        sm_clock_mhz=1980.0,
        memory_clock_mhz=2619.0,
        throttle_reasons=(ThrottleReason.SW_POWER_CAP,),
        ecc_sbe_volatile=0,
        ecc_dbe_volatile=0,
        ecc_sbe_aggregate=3,
        ecc_dbe_aggregate=0,
        pcie_replays=0,
        nvlink_crc_errors=0,
        xid_last=0,
    )
    return dataclasses.replace(gpu, **changes) if changes else gpu


def realistic_sample(node: str, gpus: int = 8, **changes: Any) -> NodeSample:
    return NodeSample(
        node=node,
        site="hostile",
        source="dcgm",
        time=time.time(),
        gpus=tuple(realistic_gpu(i, node=node, **changes) for i in range(gpus)),
    )


def render(sample: NodeSample, *, timestamps: bool = False) -> str:
    return render_dcgm_exposition([sample], timestamps=timestamps)


class HostileServer:
    """Start with ``start()`` (or as a context manager), stop with ``close()``; safe from any thread."""

    def __init__(self) -> None:
        self.loop_thread = LoopThread("hostile-server")
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.huge_bytes_sent = 0
        self._polls: Counter[str] = Counter()

    # -- lifecycle ----

    def start(self) -> HostileServer:
        self.loop_thread.start()
        self.loop_thread.call(self._start())
        return self

    def close(self) -> None:
        if self._runner is not None:
            self.loop_thread.call(self._close())
        self.loop_thread.stop()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application()
        routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
            "/good/{node}": self._good,
            "/hang": self._hang,
            "/status/{code}": self._status,
            "/trickle": self._trickle,
            "/huge": self._huge,
            "/huge-declared": self._huge_declared,
            "/malformed": self._malformed,
            "/truncated": self._truncated,
            "/truncated-body": self._truncated_body,
            "/nan": self._nan,
            "/duplicate": self._duplicate,
            "/missing": self._missing,
            "/backwards": self._backwards,
            "/labels": self._labels,
            "/future": self._future,
            "/past": self._past,
            "/churn": self._churn,
        }
        for path, handler in routes.items():
            app.router.add_get(path, self._counted(path, handler))
        # shutdown_timeout: hanging handlers are released by ``_closing``; nothing needs 60 s to finish
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        assert self._closing is not None and self._runner is not None
        self._closing.set()
        await self._runner.cleanup()
        self._runner = None

    def _counted(
        self, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            self.hits[path] += 1
            return await handler(request)

        return wrapped

    def _poll_number(self, path: str) -> int:
        """How many times this path was asked before (0 on the first request)."""
        number = self._polls[path]
        self._polls[path] += 1
        return number

    # -- handlers ----

    @staticmethod
    def _text(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/plain")

    async def _good(self, request: web.Request) -> web.StreamResponse:
        return self._text(render(realistic_sample(request.match_info["node"])))

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        assert self._closing is not None
        await self._closing.wait()
        return web.Response(status=503)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        # ?reason=... sets the status line's reason phrase: text a node controls and the console displays
        return web.Response(status=code, reason=request.query.get("reason"), text="upstream exporter failed\n")

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        assert self._closing is not None
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for byte in render(realistic_sample("trickle", gpus=1)).encode():
            if self._closing.is_set():
                break
            await response.write(bytes([byte]))
            await asyncio.sleep(0.1)
        return response

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        # one valid comment line repeated: a parser given all of it would accept it, so only the cap stops it
        chunk = (b"# padding padding padding padding padding padding padding padding padding\n" * 1024)[: 64 * 1024]
        sent = 0
        try:
            while sent < HUGE_BYTES:
                await response.write(chunk)
                sent += len(chunk)
                self.huge_bytes_sent += len(chunk)
        except (ConnectionError, RuntimeError):  # the client hung up at its cap: what we want
            pass
        return response

    async def _huge_declared(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain", "Content-Length": str(HUGE_BYTES)})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, RuntimeError):  # the client refused the declared length
            await response.write(b"# HELP x y\n" * 1024)
        return response

    async def _malformed(self, request: web.Request) -> web.StreamResponse:
        good = render(realistic_sample("malformed", gpus=1)).split("\n")
        # line 3 is a sample whose value is not a number
        lines = [*good[:2], 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-x"} hot', *good[2:]]
        return self._text("\n".join(lines))

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        text = render(realistic_sample("truncated", gpus=2))
        cut = text.index('UUID="', len(text) // 2) + 10  # inside a label value
        return self._text(text[:cut])

    async def _truncated_body(self, request: web.Request) -> web.StreamResponse:
        body = render(realistic_sample("truncated-body", gpus=2)).encode()
        response = web.StreamResponse(headers={"Content-Type": "text/plain", "Content-Length": str(len(body))})
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        # drop the connection with half the promised bytes delivered
        if request.transport is not None:
            request.transport.close()
        return response

    async def _nan(self, request: web.Request) -> web.StreamResponse:
        text = render(realistic_sample("nan", gpus=2))
        replaced = {"DCGM_FI_DEV_GPU_TEMP{": "NaN", "DCGM_FI_DEV_POWER_USAGE{": "+Inf", "DCGM_FI_DEV_GPU_UTIL{": "-Inf"}
        lines = []
        for line in text.split("\n"):
            value = next((v for prefix, v in replaced.items() if line.startswith(prefix)), None)
            lines.append(line if value is None else f"{line.rsplit(' ', 1)[0]} {value}")
        return self._text("\n".join(lines))

    async def _duplicate(self, request: web.Request) -> web.StreamResponse:
        # GPU 1 reports GPU 0's UUID (a firmware bug seen in the field): two series sets, one UUID
        sample = realistic_sample("duplicate", gpus=3)
        gpus = list(sample.gpus)
        gpus[1] = dataclasses.replace(gpus[1], uuid=gpus[0].uuid, temperature_c=90.0, power_w=100.0)
        return self._text(render(dataclasses.replace(sample, gpus=tuple(gpus))))

    async def _missing(self, request: web.Request) -> web.StreamResponse:
        number = self._poll_number("/missing")
        sample = realistic_sample("missing", gpus=4)
        if number % 2 == 1:  # GPU 2 vanishes on every other poll
            sample = dataclasses.replace(sample, gpus=tuple(g for g in sample.gpus if g.index != 2))
        return self._text(render(sample))

    async def _backwards(self, request: web.Request) -> web.StreamResponse:
        number = self._poll_number("/backwards")
        fall = 1000 - number  # every counter falls on every poll
        sample = realistic_sample(
            "backwards",
            gpus=2,
            energy_j=1_000_000.0 * fall,
            ecc_sbe_volatile=fall,
            ecc_dbe_volatile=fall,
            ecc_sbe_aggregate=fall,
            pcie_replays=fall,
            nvlink_crc_errors=fall,
        )
        return self._text(render(sample))

    async def _labels(self, request: web.Request) -> web.StreamResponse:
        sample = realistic_sample("labels", gpus=2)
        gpus = (
            dataclasses.replace(sample.gpus[0], name=HTML_MODEL, serial="<script>alert(1)</script>"),
            dataclasses.replace(sample.gpus[1], name=ODD_MODEL),
        )
        return self._text(render(dataclasses.replace(sample, gpus=gpus)))

    async def _future(self, request: web.Request) -> web.StreamResponse:
        sample = dataclasses.replace(realistic_sample("future", gpus=2), time=time.time() + YEARS_S)
        return self._text(render(sample, timestamps=True))

    async def _past(self, request: web.Request) -> web.StreamResponse:
        sample = dataclasses.replace(realistic_sample("past", gpus=2), time=time.time() - YEARS_S)
        return self._text(render(sample, timestamps=True))

    async def _churn(self, request: web.Request) -> web.StreamResponse:
        number = self._poll_number("/churn")
        sample = realistic_sample("churn", gpus=1, uuid=f"GPU-churn-{number:08d}")
        return self._text(render(sample))


def hostile_fleet(server: HostileServer, nodes: int = 100, hanging: int = 30) -> Fleet:
    """``nodes`` dcgm nodes on this server, ``hanging`` of them (spread evenly) pointing at ``/hang``."""

    def node(i: int) -> Node:
        hangs = i * hanging // nodes != (i + 1) * hanging // nodes  # exactly ``hanging`` nodes, spread evenly
        path = "/hang" if hangs else f"/good/node-{i:03d}"
        return Node(f"node-{i:03d}", "lab", (SourceSpec(SourceKind.DCGM, url=server.url(path)),))

    return Fleet(
        sites=(Site("lab", "onprem", interval_s=1.0, timeout_s=3.0),),
        nodes=tuple(node(i) for i in range(nodes)),
        origin="hostile GUI fleet",
    )


def refused_url() -> str:
    """A loopback URL whose port was just free: connecting to it is refused."""
    return f"http://127.0.0.1:{free_port()}/metrics"


class LoopThread:
    """An asyncio loop in a daemon thread; ``call`` runs a coroutine on it and returns its result."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self._name}: loop did not start")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def call(self, coro: Coroutine[Any, Any, _T], timeout_s: float = 30.0) -> _T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._thread = None
