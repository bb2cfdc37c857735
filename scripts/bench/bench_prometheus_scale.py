"""A whole site read through a real Prometheus at 1,250 / 5,000 / 10,000 GPUs: what one refresh costs.

    .venv/bin/python scripts/bench/bench_prometheus_scale.py [--gpus 1250 5000 10000] [--refreshes 5]
        [--code DIR]

For each size it writes dcgm-exporter history (8-GPU nodes, the 19 metrics and 19 labels of a Kubernetes
dcgm-exporter behind a ServiceMonitor) as OpenMetrics, turns it into TSDB blocks with Debian's
`promtool tsdb create-blocks-from openmetrics`, starts Debian's Prometheus 2.42 on those blocks (loopback, no
scraping) and reads the whole site with the console's `PrometheusSiteReader`, as the poller does once per
interval. Each refresh is timed with every value new (the reader's repeat memory is cleared first, as if every
node had been scraped since the last read): wall time, this process's CPU (the reader, its JSON decoding and
the DCGM mapping), Prometheus' CPU (/proc/PID/stat), bytes received, requests, and completeness (nodes, GPUs,
and GPUs with temperature, power, utilization and memory used). The first refresh (identity and static fields
read too) is printed apart from the steady ones.

Beside it, from the same run, the peer the issue named: the queries the reader sent before issue 17 (every
series with its identity labels, one query per metric group) fetched with a plain HTTP client and decoded with
`json.loads`, the floor for any Python client asking that much.

--code DIR reads the reader from another checkout (e.g. a worktree of an older commit) to compare read paths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GPUS_PER_NODE = 8
POINTS = 3  # scrapes per series in the blocks, 15 s apart: the newest is what an instant query returns
STEP_S = 15
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# One GPU's series as a Kubernetes dcgm-exporter (3.x default counters) exposes them: name, value.
METRICS = (
    ("DCGM_FI_DEV_SM_CLOCK", "1980"),
    ("DCGM_FI_DEV_MEM_CLOCK", "2619"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "51"),
    ("DCGM_FI_DEV_GPU_TEMP", "{temp}"),
    ("DCGM_FI_DEV_POWER_USAGE", "{power}"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "{energy}"),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "0"),
    ("DCGM_FI_DEV_GPU_UTIL", "{util}"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "31"),
    ("DCGM_FI_DEV_FB_FREE", "{free}"),
    ("DCGM_FI_DEV_FB_USED", "{used}"),
    ("DCGM_FI_DEV_XID_ERRORS", "0"),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "0"),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "0"),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "0"),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "0"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "0"),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "0"),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "700"),
)
# The labels every series carries: the exporter's own, the pod it maps the GPU to, and what the ServiceMonitor
# adds (the exporter pod's namespace, pod and container move to exported_*, as Prometheus does on a clash).
LABELS = (
    'gpu="{gpu}",UUID="GPU-{uuid}",pci_bus_id="00000000:{bus:02X}:00.0",device="nvidia{gpu}",'
    'modelName="NVIDIA H100 80GB HBM3",Hostname="{host}",DCGM_FI_DRIVER_VERSION="570.124.06",'
    'DCGM_FI_DEV_SERIAL="1654{serial:09d}",DCGM_FI_DEV_VBIOS_VERSION="96.00.99.00.01",'
    'namespace="team-{team}",pod="train-{team}-{job}-worker-{gpu}",container="trainer",'
    'exported_namespace="gpu-operator",exported_pod="nvidia-dcgm-exporter-{host}",exported_container="dcgm",'
    'instance="10.{a}.{b}.{c}:9400",job="nvidia-dcgm-exporter",service="nvidia-dcgm-exporter",'
    'endpoint="gpu-metrics"'
)
WHAT_THE_FLEET_VIEW_NEEDS = ("temperature_c", "power_w", "utilization_pct", "memory_used_mib")


def write_openmetrics(path: Path, gpus: int, newest: float) -> int:
    """``gpus`` GPUs of history ending at ``newest``; returns the number of samples."""
    nodes = gpus // GPUS_PER_NODE
    label_sets = []
    for n in range(nodes):
        host = f"gpu-node-{n:05d}"
        for g in range(GPUS_PER_NODE):
            label_sets.append(
                LABELS.format(
                    gpu=g,
                    uuid=f"{n:08x}-{g:04x}-4e8a-9c2b-5b0e7a4c1f3d",
                    bus=0x18 + 0x10 * g,
                    host=host,
                    serial=n * GPUS_PER_NODE + g,
                    team=n % 37,
                    job=n // 4,
                    a=n // 65536,
                    b=(n // 256) % 256,
                    c=n % 256,
                )
            )
    times = [newest - STEP_S * (POINTS - 1 - i) for i in range(POINTS)]
    count = 0
    with path.open("w") as out:
        for name, value in METRICS:
            out.write(f"# TYPE {name} gauge\n")
            lines = []
            for i, labels in enumerate(label_sets):
                for k, t in enumerate(times):
                    text = value.format(
                        temp=40 + (i + k) % 30,
                        power=300 + (i * 7 + k) % 400,
                        energy=10**9 + i * 1000 + k * 5000,
                        util=(i * 13 + k) % 101,
                        free=20000 + i % 1000,
                        used=60000 - i % 1000,
                    )
                    lines.append(f"{name}{{{labels}}} {text} {t:.3f}\n")
            out.writelines(lines)
            count += len(lines)
        out.write("# EOF\n")
    return count


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RunningPrometheus:
    process: subprocess.Popen[bytes]
    url: str

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def start_prometheus(work: Path) -> RunningPrometheus:
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = free_port()
    args = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={work / 'data'}",
        "--storage.tsdb.retention.time=3650d",
        "--query.lookback-delta=2h",  # the blocks' newest point stays the instant value however long set-up takes
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return RunningPrometheus(process, url)
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("Prometheus did not become ready in 120 s")


@dataclass
class Refresh:
    wall_s: float
    console_cpu_s: float
    prometheus_cpu_s: float
    bytes: int
    requests: int
    nodes: int
    gpus: int
    gpus_with_fleet_values: int


async def read_refreshes(prometheus: RunningPrometheus, count: int) -> list[Refresh]:
    url = prometheus.url
    import importlib

    import aiohttp

    from console.live.startup import tune_garbage_collector

    try:  # the reader's own module: prometheus_site since it was split out, prometheus in older checkouts
        module = importlib.import_module("console.sources.prometheus_site")
    except ImportError:
        module = importlib.import_module("console.sources.prometheus")

    tune_garbage_collector()  # the collector thresholds the window and the headless poll run with

    received = [0]
    read_capped = module.read_capped

    async def counted(*args: Any, **kwargs: Any) -> Any:  # every answer's body passes here, in any checkout
        body = await read_capped(*args, **kwargs)
        received[0] += len(body)
        return body

    module.read_capped = counted  # type: ignore[assignment]
    refreshes = []
    async with aiohttp.ClientSession() as http:
        reader = module.PrometheusSiteReader(url, http, site="bench", timeout_s=120.0)
        for _ in range(count):
            for state in reader._nodes.values():  # every node scraped since the last read: nothing is a repeat
                state.exporter_time = math.nan
            requests, received[0] = reader.queries, 0
            prometheus_before, cpu_before, wall_before = prometheus.cpu_s(), time.process_time(), time.perf_counter()
            samples = await reader.read_site()
            wall = time.perf_counter() - wall_before
            cpu = time.process_time() - cpu_before
            gpus = [gpu for sample in samples.values() for gpu in sample.gpus]
            complete = sum(1 for gpu in gpus if all(getattr(gpu, f) is not None for f in WHAT_THE_FLEET_VIEW_NEEDS))
            refreshes.append(
                Refresh(
                    wall_s=wall,
                    console_cpu_s=cpu,
                    prometheus_cpu_s=prometheus.cpu_s() - prometheus_before,
                    bytes=received[0],
                    requests=reader.queries - requests,
                    nodes=len(samples),
                    gpus=len(gpus),
                    gpus_with_fleet_values=complete,
                )
            )
    return refreshes


def todays_answers(prometheus: RunningPrometheus) -> tuple[float, float, float, int, int]:
    """The pre-issue-17 queries (full identity labels, one per metric group) with urllib + json.loads:
    wall, client CPU, Prometheus CPU, bytes, queries."""
    from console.sources.prometheus_queries import METRIC_GROUPS, instant_query, scrape_time_query

    url = prometheus.url
    queries = [scrape_time_query(), *(instant_query(group) for group in METRIC_GROUPS.values())]
    prometheus_before, cpu_before, wall_before = prometheus.cpu_s(), time.process_time(), time.perf_counter()
    size = 0
    for query in queries:
        with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}") as answer:
            body = answer.read()
        size += len(body)
        json.loads(body)
    wall = time.perf_counter() - wall_before
    return wall, time.process_time() - cpu_before, prometheus.cpu_s() - prometheus_before, size, len(queries)


def measure(gpus: int, refreshes: int, work: Path) -> dict[str, Any]:
    gpus -= gpus % GPUS_PER_NODE  # whole 8-GPU nodes: 1,250 asked is 1,248 measured
    started = time.perf_counter()
    text = work / "dcgm.om"
    samples = write_openmetrics(text, gpus, newest=time.time() - 30)
    (work / "data").mkdir()
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text), str(work / "data")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    text.unlink()
    prepared = time.perf_counter() - started
    prometheus = start_prometheus(work)
    try:
        todays_answers(prometheus)  # warm Prometheus' caches (postings, chunks) before anything is timed
        floor = todays_answers(prometheus)
        runs = asyncio.run(read_refreshes(prometheus, refreshes + 1))
    finally:
        prometheus.process.terminate()
        prometheus.process.wait(30)
    return {"gpus": gpus, "samples": samples, "prepared_s": prepared, "floor": floor, "runs": runs}


def show(result: dict[str, Any]) -> None:
    gpus = result["gpus"]
    runs: list[Refresh] = result["runs"]
    first, steady = runs[0], runs[1:]
    print(
        f"\n== {gpus:,} GPUs ({gpus // GPUS_PER_NODE:,} nodes, {result['samples']:,} samples in blocks, "
        f"prepared in {result['prepared_s']:.0f} s)"
    )

    def line(label: str, items: list[Refresh]) -> None:
        last = items[-1]
        print(
            f"  {label:<26} wall {median(r.wall_s for r in items):6.2f} s   console CPU "
            f"{median(r.console_cpu_s for r in items):5.2f} s   Prometheus CPU "
            f"{median(r.prometheus_cpu_s for r in items):5.2f} s   {median(r.bytes for r in items) / 1e6:6.1f} MB"
            f"   {last.requests:3d} requests   nodes {last.nodes}/{gpus // GPUS_PER_NODE}   GPUs {last.gpus}/{gpus}"
            f"   with fleet values {last.gpus_with_fleet_values}/{gpus}"
        )

    line("first refresh", [first])
    line(f"refresh (median of {len(steady)})", steady)
    wall, cpu, prom_cpu, size, queries = result["floor"]
    print(
        f"  {'peer: before-17 answers':<26} wall {wall:6.2f} s   json.loads CPU {cpu:5.2f} s   Prometheus CPU "
        f"{prom_cpu:5.2f} s   {size / 1e6:6.1f} MB   {queries:3d} requests (urllib + json.loads only)"
    )
    print("  targets at 10,000 GPUs:    wall < 2 s, console CPU < 1 s, Prometheus CPU < 2 s, all nodes and GPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, nargs="+", default=[1250, 5000, 10000])
    parser.add_argument("--refreshes", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose console/ is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt install prometheus)")
    import console

    print(
        f"console from {Path(console.__file__).parent}; Prometheus 2.42 (Debian) on 127.0.0.1, {os.cpu_count()} cores"
    )
    results = []
    for gpus in args.gpus:
        with tempfile.TemporaryDirectory(prefix="bench-prom-") as tmp:
            result = measure(gpus, args.refreshes, Path(tmp))
        show(result)
        results.append(result)
    if len(results) > 1:
        small, large = results[0], results[-1]
        factor = large["gpus"] / small["gpus"]

        def grow(key: str) -> float:
            return float(
                median(getattr(r, key) for r in large["runs"][1:])
                / max(1e-9, median(getattr(r, key) for r in small["runs"][1:]))
            )

        print(
            f"\ngrowth {small['gpus']:,} -> {large['gpus']:,} GPUs ({factor:.0f}x): wall {grow('wall_s'):.1f}x, "
            f"console CPU {grow('console_cpu_s'):.1f}x, Prometheus CPU {grow('prometheus_cpu_s'):.1f}x, "
            f"bytes {grow('bytes'):.1f}x"
        )


if __name__ == "__main__":
    main()
