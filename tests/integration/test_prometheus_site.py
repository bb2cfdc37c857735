"""A site read through Debian's real Prometheus scraping `gpu-console simulate` (kind ``prometheus``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_simulate import RunningSimulator, get, running_simulator

from console.config.fleet import Node, Site, SourceKind, SourceSpec
from console.samples.results import PollFailure, SourceError
from console.sources import make_source
from console.sources.base import SourceContext
from console.sources.dcgm.source import parse_dcgm_payload
from console.sources.prometheus import PrometheusSiteReader
from console.sources.prometheus_tiers import SiteTiers
from tests.helpers.builders import free_port

NODES = 4
pytestmark = pytest.mark.slow


@dataclass(frozen=True, slots=True)
class Site_:
    simulator: RunningSimulator
    prometheus_url: str
    nodes: tuple[str, ...]


def _wait_until_scraped(url: str, nodes: int, deadline: float) -> None:
    """All targets up and every node's GPU temperature in Prometheus, or fail at the deadline."""
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query=count(DCGM_FI_DEV_GPU_TEMP)", timeout=2) as r:
                result = json.loads(r.read())["data"]["result"]
            if result and int(result[0]["value"][1]) == nodes * 8:
                return
            last = str(result)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    pytest.fail(f"Prometheus did not scrape all {nodes} simulated nodes in time (last: {last})")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site_]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus (Debian package) is not installed")
    work = tmp_path_factory.mktemp("prometheus")
    with running_simulator("--nodes", str(NODES), "--faults", "none", "--duration", "300") as simulator:
        targets = work / "targets.json"
        targets.write_bytes(get(f"{simulator.url}/prometheus/targets"))
        config = work / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: simulated\n"
            f"    file_sd_configs:\n      - files: ['{targets}']\n"
        )
        port = free_port()
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_scraped(url, NODES, deadline=time.monotonic() + 30)
            time.sleep(3.5)  # a few more scrapes: range queries need several points
            names = tuple(row["node"] for row in json.loads(get(f"{simulator.url}/targets")))
            yield Site_(simulator, url, names)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            assert process.stderr is not None
            process.stderr.close()


async def _read(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        return await PrometheusSiteReader(url, http, site="sim").read_site()


def test_every_node_appears_with_its_gpus_and_the_simulators_values(site: Site_) -> None:
    samples = asyncio.run(_read(site.prometheus_url))
    assert set(samples) == set(site.nodes)
    for name in site.nodes:
        sample = samples[name]
        direct = parse_dcgm_payload(get(f"{site.simulator.url}/nodes/{name}/metrics").decode(), name, "sim", 0.0)
        assert sample.source == "prometheus"
        assert [g.uuid for g in sample.gpus] == [g.uuid for g in direct.gpus]
        for via, served in zip(sample.gpus, direct.gpus, strict=True):
            assert via.name == served.name and via.serial == served.serial and via.pci_bus_id == served.pci_bus_id
            assert via.memory_total_mib == served.memory_total_mib
            assert via.power_limit_w == served.power_limit_w == 700.0
            # one or two seconds apart: temperatures lag power with a 25 s time constant
            assert via.temperature_c is not None and served.temperature_c is not None
            assert abs(via.temperature_c - served.temperature_c) <= 3.0
            assert via.energy_j is not None and served.energy_j is not None
            assert 0.0 <= served.energy_j - via.energy_j <= 5 * 710.0  # a counter a few seconds behind


def test_per_node_sources_share_one_read_per_interval(site: Site_) -> None:
    async def scenario() -> tuple[int, list[int]]:
        async with aiohttp.ClientSession() as http:
            spec = SourceSpec(SourceKind.PROMETHEUS, url=site.prometheus_url)
            fleet_site = Site("sim", "prom", interval_s=5.0, timeout_s=5.0)
            sources = [
                make_source(SourceContext(Node(n, "sim", (spec,)), fleet_site, spec, 5.0, http)) for n in site.nodes
            ]
            samples = await asyncio.gather(*(s.poll() for s in sources))
            reader = sources[0].reader  # type: ignore[attr-defined]
            for s in sources:
                await s.aclose()
            return reader.queries, [len(s.gpus) for s in samples]

    queries, gpus = asyncio.run(scenario())
    assert gpus == [8] * NODES
    # one read's queries for the whole site (scrape times, hot fields, identity, slow fields), not per node
    assert queries == len(SiteTiers().plan(time.time()))


def test_range_query_backfills_a_series_and_evidence(site: Site_) -> None:
    async def scenario() -> tuple[dict[str, Any], list[Any]]:
        async with aiohttp.ClientSession() as http:
            reader = PrometheusSiteReader(site.prometheus_url, http, site="sim")
            now = time.time()
            series = await reader.backfill(site.nodes[0], "power_w", now - 4.0, now, 1.0)
            evidence = await reader.node_history(site.nodes[0], now - 4.0, now, 1.0)
            return series, evidence

    series, evidence = asyncio.run(scenario())
    assert len(series) == 8
    for column in series.values():
        finite = [y for y in column.y.tolist() if y == y]
        assert len(finite) >= 3
        assert all(60.0 <= y <= 710.0 for y in finite)
        assert list(column.t) == sorted(column.t)
    assert len(evidence) >= 3
    assert all(len(sample.gpus) == 8 and sample.node == site.nodes[0] for sample in evidence)


def test_a_node_prometheus_does_not_know_fails_with_a_reason(site: Site_) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            spec = SourceSpec(SourceKind.PROMETHEUS, url=site.prometheus_url)
            ctx = SourceContext(Node("ghost-001", "sim", (spec,)), Site("sim", "p"), spec, 5.0, http)
            await make_source(ctx).poll()

    with pytest.raises(SourceError) as caught:
        asyncio.run(scenario())
    assert caught.value.failure is PollFailure.UNREACHABLE
    assert "ghost-001" in caught.value.reason


def test_a_wrong_url_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceError) as caught:
        asyncio.run(_read(url))
    assert caught.value.failure is PollFailure.UNREACHABLE
    assert "cannot connect" in caught.value.reason


@pytest.mark.parametrize(
    ("status", "body", "failure", "words"),
    [
        (503, b"service unavailable", PollFailure.UNREACHABLE, "HTTP 503"),
        (400, b'{"status":"error","errorType":"bad_data","error":"parse error"}', PollFailure.BAD_PAYLOAD, "parse"),
        (200, b'{"status":"error","errorType":"timeout","error":"query timed out"}', PollFailure.BAD_PAYLOAD, "timed"),
        (200, b"<html>not an API</html>", PollFailure.BAD_PAYLOAD, "not JSON"),
        (200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}', PollFailure.BAD_PAYLOAD, "vector"),
        (
            200,
            b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}',
            PollFailure.BAD_PAYLOAD,
            "name",
        ),
        (401, b"", PollFailure.AUTH_REFUSED, "401"),
    ],
)
def test_bad_answers_become_source_errors(status: int, body: bytes, failure: PollFailure, words: str) -> None:
    async def scenario() -> SourceError:
        async def handler(_request: web.Request) -> web.Response:
            # close after answering: no idle keep-alive socket outlives the test's event loop
            return web.Response(status=status, body=body, headers={"Connection": "close"})

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        server = web.TCPSite(runner, "127.0.0.1", 0)
        await server.start()
        port = runner.addresses[0][1]
        try:
            await _read(f"http://127.0.0.1:{port}")
        except SourceError as exc:
            return exc
        finally:
            await runner.cleanup()
        raise AssertionError("no SourceError")

    error = asyncio.run(scenario())
    assert error.failure is failure
    assert words in error.reason
