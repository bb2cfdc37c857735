"""The tiered read of a Prometheus site (issue 17) against Debian's real Prometheus scraping a real exporter: a
refresh asks for little (hot fields with few labels, counters only where non-zero, slow fields held), yet every
GPU it returns is the GPU a direct scrape of the same payload gives; a counter that moves is seen at the next
refresh, a watched node's detail fields at every refresh, and a node that joins comes with its identity."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from console.samples.schema import NodeSample, ThrottleReason
from console.sources.dcgm.render import render_dcgm_exposition
from console.sources.dcgm.source import parse_dcgm_payload
from console.sources.prometheus import PrometheusSiteReader
from tests.helpers.builders import ExporterStandIn
from tests.helpers.hostile_server import realistic_sample
from tests.helpers.prometheus_server import available, prometheus_over

pytestmark = pytest.mark.skipif(not available(), reason="prometheus (Debian package) is not installed")

NODES = ("tier-a", "tier-b")


def payload(nodes: tuple[str, ...] = NODES, **changes: Any) -> str:
    """Each node's 8 GPUs as dcgm-exporter serves them, each GPU running a pod; ``changes`` per "node/index"."""
    samples = []
    for node in nodes:
        sample = realistic_sample(node)
        gpus = tuple(dataclasses.replace(g, **changes.get(f"{node}/{g.index}", {})) for g in sample.gpus)
        samples.append(dataclasses.replace(sample, gpus=gpus))
    lines = []
    for line in render_dcgm_exposition(samples).splitlines():
        if line.startswith("#"):
            lines.append(line)
            continue
        node = line.split('Hostname="', 1)[1].split('"', 1)[0]
        index = line.split('gpu="', 1)[1].split('"', 1)[0]
        lines.append(line.replace(f'gpu="{index}",', f'gpu="{index}",pod="train-{node}-{index}",namespace="ml",', 1))
    return "\n".join(lines) + "\n"


def per_node(text: str, node: str) -> str:
    return "\n".join(line for line in text.splitlines() if f'Hostname="{node}"' in line or line.startswith("#"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExporterStandIn, str]]:
    with ExporterStandIn(payload()) as exporter:
        work = tmp_path_factory.mktemp("tiers")
        with prometheus_over(work, [f"127.0.0.1:{exporter.port}"], gpus=8 * len(NODES)) as url:
            yield exporter, url


def scraped_after(url: str, since: float, within_s: float = 10.0) -> None:
    """Wait until Prometheus has a scrape of the exporter newer than ``since``."""
    import json
    import urllib.parse
    import urllib.request

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        query = urllib.parse.urlencode({"query": "min(timestamp(DCGM_FI_DEV_GPU_TEMP))"})
        with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=2) as answer:
            result = json.loads(answer.read())["data"]["result"]
        if result and float(result[0]["value"][1]) > since:
            return
        time.sleep(0.2)
    raise AssertionError(f"no scrape after {since} within {within_s} s")


def comparable(sample: NodeSample) -> list[dict[str, Any]]:
    return [dataclasses.asdict(gpu) for gpu in sample.gpus]


def differences(via: NodeSample, direct: NodeSample) -> list[str]:
    """Each field where a GPU read through Prometheus differs from the same GPU scraped: [] when none does."""
    out = [f"GPUs {len(via.gpus)} != {len(direct.gpus)}"] if len(via.gpus) != len(direct.gpus) else []
    for a, b in zip(comparable(via), comparable(direct), strict=False):
        out.extend(f"GPU {b['index']} {key}: {a[key]!r} != {value!r}" for key, value in b.items() if a[key] != value)
    return out


async def reads(url: str, steps: list[Any], watch: tuple[str, ...] = ()) -> list[dict[str, NodeSample]]:
    """A read, then for each step: the step (change the exporter and wait for a scrape), then another read."""
    out = []
    async with aiohttp.ClientSession() as http:
        reader = PrometheusSiteReader(url, http, site="tiers")
        reader.watch(watch)
        out.append(await reader.read_site())
        for step in steps:
            await asyncio.to_thread(step)
            out.append(await reader.read_site())
    return out


def change_to(exporter: ExporterStandIn, url: str, text: str) -> Any:
    def step() -> None:
        exporter.payload = text
        scraped_after(url, time.time() + 0.1)

    return step


def test_every_refresh_gives_the_gpus_a_direct_scrape_of_the_same_payload_gives(
    site: tuple[ExporterStandIn, str],
) -> None:
    exporter, url = site
    text = payload()
    exporter.payload = text
    scraped_after(url, time.time())
    # the first read asks for everything; the second asks only for hot fields and non-zero counters
    first, second = asyncio.run(reads(url, [change_to(exporter, url, text)]))
    for node in NODES:
        direct = parse_dcgm_payload(per_node(text, node), node, "tiers", 0.0)
        assert differences(first[node], direct) == []
        assert differences(second[node], direct) == []
        assert second[node].time > first[node].time  # a new scrape, not a repeat
        gpu = second[node].gpus[3]
        assert gpu.workload is not None and {w.pod for w in gpu.workload} == {f"train-{node}-3"}
        assert gpu.memory_total_mib == 81559.0 and gpu.power_limit_w == 700.0  # held from the first read


def test_a_counter_that_moves_and_an_xid_are_seen_at_the_next_refresh(
    site: tuple[ExporterStandIn, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, url = site
    monkeypatch.setattr("console.sources.prometheus_tiers.SLOW_EVERY_S", 3600.0)  # never a second full read
    exporter.payload = payload()
    scraped_after(url, time.time())
    faulty = payload(
        **{
            "tier-b/3": {"ecc_dbe_volatile": 2, "throttle_reasons": (ThrottleReason.HW_SLOWDOWN,)},
            "tier-a/5": {"xid_last": 79},
        }
    )
    before, after = asyncio.run(reads(url, [change_to(exporter, url, faulty)]))
    assert [g.ecc_dbe_volatile for g in before["tier-b"].gpus] == [0] * 8
    assert [g.ecc_dbe_volatile for g in after["tier-b"].gpus] == [0, 0, 0, 2, 0, 0, 0, 0]
    assert after["tier-b"].gpus[3].throttle_reasons == (ThrottleReason.HW_SLOWDOWN,)
    assert after["tier-b"].gpus[2].throttle_reasons == (ThrottleReason.SW_POWER_CAP,)
    assert [(e.gpu_index, e.code) for e in after["tier-a"].events] == [(5, 79)]
    assert after["tier-a"].gpus[5].xid_last == 79 and after["tier-a"].gpus[4].xid_last == 0
    direct = parse_dcgm_payload(per_node(faulty, "tier-b"), "tier-b", "tiers", 0.0)
    assert differences(after["tier-b"], direct) == []


def test_detail_fields_are_fresh_for_watched_nodes_and_held_for_the_others(
    site: tuple[ExporterStandIn, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, url = site
    monkeypatch.setattr("console.sources.prometheus_tiers.SLOW_EVERY_S", 3600.0)
    exporter.payload = payload()
    scraped_after(url, time.time())
    slower = payload(**{f"{node}/{i}": {"sm_clock_mhz": 1410.0} for node in NODES for i in range(8)})
    before, after = asyncio.run(reads(url, [change_to(exporter, url, slower)], watch=("tier-a",)))
    assert {g.sm_clock_mhz for g in before["tier-a"].gpus} == {1980.0}
    assert {g.sm_clock_mhz for g in after["tier-a"].gpus} == {1410.0}  # watched: read at every refresh
    assert {g.sm_clock_mhz for g in after["tier-b"].gpus} == {1980.0}  # held until the next slow read
    assert {g.temperature_c for g in after["tier-b"].gpus} == {g.temperature_c for g in before["tier-b"].gpus}


def test_a_node_that_joins_between_full_reads_comes_with_its_identity_and_limits(
    site: tuple[ExporterStandIn, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exporter, url = site
    monkeypatch.setattr("console.sources.prometheus_tiers.SLOW_EVERY_S", 3600.0)
    exporter.payload = payload()
    scraped_after(url, time.time())
    grown = payload((*NODES, "tier-c"))
    try:
        before, after = asyncio.run(reads(url, [change_to(exporter, url, grown)]))
    finally:
        exporter.payload = payload()
    assert "tier-c" not in before
    joined = after["tier-c"]
    direct = parse_dcgm_payload(per_node(grown, "tier-c"), "tier-c", "tiers", 0.0)
    assert differences(joined, direct) == []
    assert joined.gpus[0].name == "NVIDIA H100 80GB HBM3" and joined.gpus[0].power_limit_w == 700.0
