"""The per-minute history rollup: disk bytes per GPU-day, the cost of a minute's flush, and chart read latency.

Writes 24 h of minutes for a small fleet (one sample per node per minute: a row's size does not depend on how
many samples a minute held), then times one minute of a 10,000-GPU fleet, then reads 24 h back the way the
charts do.

    .venv/bin/python scripts/bench_rollup.py [--nodes 64] [--big-gpus 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console.rollup import RollupStore
from console.schema import ChassisSample, GpuSample, NodeSample


def node_sample(node: int, t: float, gpus: int = 8) -> NodeSample:
    wobble = (t // 60) % 17
    return NodeSample(
        f"n{node:05d}",
        "s",
        "bench",
        t,
        tuple(
            GpuSample(
                g,
                f"GPU-{node:05d}-{g}",
                utilization_pct=50.0 + wobble,
                power_w=500.0 + wobble,
                power_limit_w=700.0,
                temperature_c=60.0 + g,
                memory_temperature_c=70.0,
                thermal_margin_c=20.0,
                sm_clock_mhz=1980.0,
                memory_used_mib=40_000.0,
            )
            for g in range(gpus)
        ),
        ChassisSample(inlet_c=24.0, exhaust_c=40.0, fans_rpm=(9000.0,) * 8, power_w=6000.0),
    )


def on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--big-gpus", type=int, default=10_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-rollup-"))
    now = (time.time() // 60) * 60
    start = now - 1440 * 60
    clock_now = [start]
    rollup = RollupStore.open(folder / "day.sqlite3", clock=lambda: clock_now[0])
    began = time.perf_counter()
    for minute in range(1440):
        clock_now[0] = start + minute * 60
        for n in range(args.nodes):
            rollup.observe(node_sample(n, start + minute * 60 + 1))
        if minute % 60 == 59:
            rollup.flush(60)
    rollup.flush(60, checkpoint=True)
    fill_s = time.perf_counter() - began
    gpus = args.nodes * 8
    size = on_disk(rollup.path)
    print(f"rollup: {gpus} GPUs ({args.nodes} nodes) x 24 h of minutes, {rollup.reader.row_count():,} rows")
    print(f"  disk: {size / 2**20:.1f} MiB = {size / gpus / 1024:.0f} KiB per GPU-day (chassis rows included)")
    print(f"  -> {size / gpus * args.big_gpus / 2**30:.2f} GiB for {args.big_gpus:,} GPUs at 24 h retention")
    print(f"  fill: {fill_s / (1440 * args.nodes) * 1e6:.0f} us per node sample (observe + flush, wall)")

    read = rollup.reader
    one: list[float] = []
    node: list[float] = []
    for i in range(100):
        n = i % args.nodes
        t0 = time.perf_counter()
        read.series(f"n{n:05d}", f"GPU-{n:05d}-0", "power_w", now - 86400, now + 60)
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for g in range(8):
            read.block(f"n{n:05d}", f"GPU-{n:05d}-{g}", now - 86400, now + 60)
        read.block(f"n{n:05d}", None, now - 86400, now + 60)
        node.append(time.perf_counter() - t0)
    median_ms, worst_ms = statistics.median(one) * 1e3, max(one) * 1e3
    print(f"  read 24 h of one metric of one GPU: median {median_ms:.2f} ms, max {worst_ms:.2f} ms")
    print(
        f"  read 24 h of a whole node (8 GPUs + chassis, every metric): median {statistics.median(node) * 1e3:.1f} ms"
    )
    rollup.close()

    big_nodes = args.big_gpus // 8
    clock_now[0] = now
    big = RollupStore.open(folder / "big.sqlite3", clock=lambda: clock_now[0], grace_s=1e9)
    for minute in range(3):
        t0 = time.perf_counter()
        for n in range(big_nodes):
            big.observe(node_sample(n, now + minute * 60 + 1))
        big.flush(120)
        took = time.perf_counter() - t0
        print(
            f"  minute {minute} at {args.big_gpus:,} GPUs: {took * 1e3:.0f} ms to accumulate {big_nodes:,} node "
            f"samples and write {big_nodes * 9:,} rows ({took / big_nodes * 1e6:.0f} us per node sample)"
        )
    big.close()


if __name__ == "__main__":
    main()
