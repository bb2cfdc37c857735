"""Memory at fleet scale: the history rings and fleet state for N GPUs holding one hour of 1 Hz history.

Fills every ring completely (so the figure is the steady state, not a warm-up) and prints the ring bytes and the
process RSS before and after.

    .venv/bin/python scripts/bench/bench_memory.py [--gpus 10000] [--seconds 3600]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.history.rings import FleetHistory
from console.live.fleet_state import FleetState
from console.samples.results import PollResult
from console.samples.schema import ChassisSample, GpuSample, NodeSample


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument(
        "--budget-mib", type=float, default=256, help="ring memory budget as the app sets it (0: none, 1 h per GPU)"
    )
    args = parser.parse_args()
    nodes = args.gpus // 8
    spec = (SourceSpec(SourceKind.DCGM, url="http://127.0.0.1:1/metrics"),)
    fleet = Fleet((Site("s", "p"),), tuple(Node(f"n{i:05d}", "s", spec) for i in range(nodes)))
    before = rss_mib()
    budget = int(args.budget_mib * 2**20) if args.budget_mib > 0 else None
    history = FleetHistory(capacity=args.seconds, budget_bytes=budget, expected_gpus=args.gpus)
    state = FleetState(fleet)
    start = time.perf_counter()
    t0 = time.time() - args.seconds
    chassis = ChassisSample(inlet_c=24.0, fans_rpm=(9000.0,) * 8, power_w=6000.0)
    templates = [
        tuple(GpuSample(g, f"GPU-{n:05d}-{g}", power_w=600.0, temperature_c=60.0) for g in range(8))
        for n in range(nodes)
    ]
    for second in range(args.seconds):
        for n in range(nodes):
            history.record(NodeSample(f"n{n:05d}", "s", "bench", t0 + second, templates[n], chassis))
    for n in range(nodes):
        sample = NodeSample(f"n{n:05d}", "s", "bench", t0, templates[n], chassis)
        state.apply_result(PollResult(f"n{n:05d}", "s", t0, 0.01, sample))
    fill_s = time.perf_counter() - start
    after = rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"history: {args.gpus:,} GPUs x {args.seconds:,} s at 1 Hz")
    if budget is not None:
        print(
            f"  budget {args.budget_mib:g} MiB: {history.capacity:,} rows per ring ({history.capacity / 60:.1f} min in "
            "memory; the charts take the rest of the window from the per-minute rollup)"
        )
    print(f"  ring buffers: {history.nbytes / 2**20:,.0f} MiB ({history.nbytes / args.gpus / 1024:.0f} KiB per GPU)")
    print(f"  process RSS: {before:,.0f} MiB before, {after:,.0f} MiB after, peak {peak:,.0f} MiB")
    per_node_us = fill_s / (args.seconds * nodes) * 1e6
    print(f"  record cost: {per_node_us:.1f} us per node sample ({per_node_us / 8:.1f} us per GPU)")


if __name__ == "__main__":
    main()
