"""The per-minute history rollup: disk bytes per GPU-day, the cost of a minute's flush, and chart read latency.

Writes 24 h of minutes for a small fleet (one sample per node per minute: a row's size does not depend on how
many samples a minute held), then times one minute of a 10,000-GPU fleet, then reads 24 h back the way the
charts do. Finally it measures the live cost the whole app pays (issue 5: 1,000 nodes x 8 GPUs every second): CPU
per sample through ``observe`` and the writer thread at a paced 1,000 samples/s, and the most samples/s it takes.

    .venv/bin/python scripts/bench/bench_rollup.py [--nodes 64] [--big-gpus 10000] [--observe-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from console.history.rollup import RollupStore
from console.samples.schema import ChassisSample, GpuSample, NodeSample


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


def writer_cpu_s(rollup: RollupStore) -> float:
    """CPU seconds the writer thread has used so far (Linux: per-thread CPU clock)."""
    thread = next(t for t in threading.enumerate() if t.name == "history-rollup-writer" and t.is_alive())
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def settle(rollup: RollupStore) -> float:
    """Wait until the writer has gone idle (its CPU clock stops moving); its CPU seconds then."""
    before = writer_cpu_s(rollup)
    while True:
        time.sleep(0.4)
        now = writer_cpu_s(rollup)
        if now - before < 1e-3:
            return now
        before = now


def live_cost(folder: Path, nodes: int, seconds: int, rate: float) -> None:
    """CPU per 8-GPU sample through observe + the writer's accumulation, at a paced rate and flat out."""
    minute = (time.time() // 60) * 60
    clock_now = [minute + 30]
    # distinct sample objects (a repeated object is skipped by design), all inside one minute so no write happens
    # while the pace runs; the minute's write is measured on its own afterwards
    samples = [node_sample(n, minute + 1 + s * 0.5, gpus=8) for s in range(seconds) for n in range(nodes)]
    rollup = RollupStore.open(folder / "live.sqlite3", clock=lambda: clock_now[0], grace_s=1e9)
    try:
        # A node's first sample of a minute adds its rows; at one sample a second that is 1 in 60, so add them
        # before timing (a 5 s run would otherwise count it 1 in 5).
        for n in range(nodes):
            rollup.observe(node_sample(n, minute, gpus=8))
        settle(rollup)
        observe_cpu = 0.0
        writer_before = writer_cpu_s(rollup)
        began = time.perf_counter()
        chunk = max(1, int(rate / 100))  # the poller hands results over in dribs, not one burst per second
        for i in range(0, len(samples), chunk):
            t0 = time.thread_time()
            for sample in samples[i : i + chunk]:
                rollup.observe(sample)
            observe_cpu += time.thread_time() - t0
            delay = began + (i + chunk) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        writer_after = settle(rollup)
        per_sample_us = (writer_after - writer_before + observe_cpu) / len(samples) * 1e6
        print(
            f"live: {len(samples):,} samples of {nodes:,} nodes x 8 GPUs at {rate:,.0f}/s: "
            f"{per_sample_us:.1f} us CPU per sample (observe {observe_cpu / len(samples) * 1e6:.1f} us + writer "
            f"{(writer_after - writer_before) / len(samples) * 1e6:.1f} us) = {per_sample_us * rate / 1e4:.1f} % "
            "of a core"
        )
        t0 = time.perf_counter()
        rollup.flush(120)
        print(f"  then writing that minute ({nodes * 9:,} rows): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    finally:
        rollup.close()
    flat = RollupStore.open(folder / "flat.sqlite3", clock=lambda: clock_now[0], grace_s=1e9)
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        for sample in samples:
            flat.observe(sample)
        flat.flush(120)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print(
            f"  flat out: {len(samples) / wall:,.0f} samples/s through observe -> writer -> SQLite "
            f"({cpu / len(samples) * 1e6:.1f} us CPU per sample, the minute's write included)"
        )
    finally:
        flat.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-rollup-") as folder:
        run(Path(folder))


def run(folder: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--big-gpus", type=int, default=10_000)
    parser.add_argument("--live-nodes", type=int, default=1_000)
    parser.add_argument("--live-seconds", type=int, default=5)
    parser.add_argument("--observe-only", action="store_true", help="only the live observe -> writer cost")
    args = parser.parse_args()
    if args.observe_only:
        live_cost(folder, args.live_nodes, args.live_seconds, float(args.live_nodes))
        return
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
    live_cost(folder, args.live_nodes, args.live_seconds, float(args.live_nodes))


if __name__ == "__main__":
    main()
