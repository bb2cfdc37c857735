"""The HTTP helpers every HTTP source shares (console.sources.base): whole bodies, caps, one failure vocabulary."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from console.samples.results import PollFailure, SourceError
from console.sources.base import read_capped
from console.sources.prometheus import PrometheusSiteReader

HOSTS = 1000
GPUS = 8


def _big_vector() -> bytes:
    """A site of 1,000 8-GPU nodes answering one metric: ~2.5 MB, far more than one TCP read delivers."""
    result = [
        {
            "metric": {
                "__name__": "DCGM_FI_DEV_GPU_TEMP",
                "Hostname": f"node-{host:04d}",
                "UUID": f"GPU-{host:04d}-{gpu}",
                "gpu": str(gpu),
                "modelName": "NVIDIA H100 80GB HBM3 " + "x" * 200,
            },
            "value": [1.0, "41"],
        }
        for host in range(HOSTS)
        for gpu in range(GPUS)
    ]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


async def _serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_a_prometheus_answer_of_megabytes_is_read_whole() -> None:
    big = _big_vector()
    empty = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()

    async def query(request: web.Request) -> web.Response:
        body = big if re.search(r'[|"]DCGM_FI_DEV_GPU_TEMP[|"]', request.query.get("query", "")) else empty
        return web.Response(body=body, content_type="application/json")

    async def main() -> int:
        runner, url = await _serve(query)
        try:
            async with aiohttp.ClientSession() as http:
                samples = await PrometheusSiteReader(url, http, site="big").read_site()
        finally:
            await runner.cleanup()
        assert all(len(sample.gpus) == GPUS for sample in samples.values())
        assert samples["node-0999"].gpus[7].temperature_c == 41.0
        return len(samples)

    assert asyncio.run(main()) == HOSTS


def test_a_streamed_body_is_cut_at_the_cap_and_a_declared_one_refused_unread() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 4096)
        await response.write_eof()
        return response

    async def main() -> list[tuple[PollFailure, str]]:
        runner, url = await _serve(chunked)
        seen: list[int | None] = []

        def too_big(declared: int | None) -> str:
            seen.append(declared)
            return f"over the cap (declared {declared})"

        out = []
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/stream") as response:
                    try:
                        await read_capped(response, 10_000, too_big)
                    except SourceError as exc:
                        out.append((exc.failure, exc.reason))
                async with http.get(url + "/stream") as response:
                    whole = await read_capped(response, 1 << 20, too_big)
                    assert len(whole) == 64 * 4096
        finally:
            await runner.cleanup()
        assert seen == [None]
        return out

    assert asyncio.run(main()) == [(PollFailure.BAD_PAYLOAD, "over the cap (declared None)")]
