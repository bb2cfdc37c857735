"""Benchmark the incident engine: a fleet of N nodes x 8 GPUs at 1 Hz, all built-in rules.

Prints the cost of ``observe`` per GPU (median and p99 per result / 8), of ``tick`` over the fleet, and the memory
the per-node evidence buffers hold at steady state. Target (issue 5: ~1 ms of CPU per node result for the whole
app): observe <= 120 us per 8-GPU result, recording evidence for an open incident <= ~10 us per sample.

Also split out: results of nodes recording evidence for an open incident (``--faulty 0.1`` gives many: one
overheating GPU on 10 % of the nodes, its incident opens after ~40 s), results that repeat the previous sample
(``--fresh-every 30``: each node's exporter refreshes every 30 s, as dcgm-exporter does by default, and the other
polls answer ``fresh=False`` with the previous sample object), and the cost of one incident's evidence text.
The output lines are the same from one version of the engine to the next, to compare before/after figures.

    .venv/bin/python scripts/bench/bench_incident_engine.py [--nodes 1000] [--seconds 120] [--faulty 0.01]
        [--fresh-every 1] [--gc-freeze]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from console.incidents import evidence
from console.incidents.engine import IncidentEngine
from console.incidents.evidence import SampleBuffer
from console.incidents.model import ChangeKind
from console.incidents.rules import load_rules
from console.samples.results import PollResult
from console.samples.schema import NodeSample
from tests.helpers.traces import SITE, T0, healthy_chassis, healthy_gpu, make_fleet


def sample(node: int, step: int, rng: random.Random, hot_gpu: int | None) -> NodeSample:
    """The incident tests' healthy H100 node (loaded 300 s, idle 100 s); ``hot_gpu`` runs 25 C hotter after 30 s."""
    name = f"node-{node:04d}"
    energy = 1e6 + step * 630.0
    gpus = [healthy_gpu(i, step, energy, rng, name) for i in range(8)]
    if hot_gpu is not None and step > 30:
        hot = gpus[hot_gpu]
        gpus[hot_gpu] = dataclasses.replace(
            hot, temperature_c=(hot.temperature_c or 0.0) + 25.0, thermal_margin_c=(hot.thermal_margin_c or 0.0) - 25.0
        )
    chassis = healthy_chassis(step, sum(g.power_w or 0.0 for g in gpus), rng)
    return NodeSample(name, SITE, "bench", T0 + step, tuple(gpus), chassis)


def evidence_text_cost(s: NodeSample) -> None:
    """One incident's evidence text per recorded sample: the reference encoding, and the shared pieces."""

    def cost(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=2000, repeat=5)) / 2000 * 1e6

    uuid, other = s.gpus[3].uuid, s.gpus[4].uuid
    reference = cost(lambda: evidence.evidence_json(s, uuid))
    line = f"evidence text per incident per sample: evidence_json {reference:.1f} us"
    shared: Any = getattr(evidence, "SampleJson", None)  # absent before the shared encoding
    if shared is not None:
        first = cost(lambda: shared(s).text(uuid))
        warm = shared(s)
        warm.text(uuid)
        same_gpu = cost(lambda: warm.text(uuid))
        two_gpus = cost(lambda: (pieces := shared(s)).text(uuid) + pieces.text(other))
        line += (
            f"; shared pieces: first incident on the node {first:.1f} us, another on the same GPU {same_gpu:.1f} us, "
            f"on another GPU {two_gpus - first:.1f} us"
        )
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--faulty", type=float, default=0.01, help="fraction of nodes with one overheating GPU")
    parser.add_argument("--fresh-every", type=int, default=1, help="a node's sample is new every N polls")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after warm-up, as an app may")
    args = parser.parse_args()
    rng = random.Random(1)
    fleet = make_fleet(nodes=[(f"node-{n:04d}", SITE) for n in range(args.nodes)])
    engine = IncidentEngine(load_rules(), fleet, clock=lambda: T0)
    hot = {n: 3 for n in range(args.nodes) if rng.random() < args.faulty}
    observe_us: list[float] = []
    recording_us: list[float] = []  # results of nodes with an open incident (evidence being recorded)
    quiet_us: list[float] = []  # results of the other nodes
    repeat_us: list[float] = []  # results repeating the previous sample (--fresh-every > 1)
    tick_ms: list[float] = []
    opened = evidence_points = 0
    open_since: dict[str, float] = {}
    last: dict[int, NodeSample] = {}
    perf = time.perf_counter
    for step in range(args.seconds):
        if args.gc_freeze and step == 5:
            gc.collect()
            gc.freeze()
        for n in range(args.nodes):
            new = n not in last or (step + n) % args.fresh_every == 0
            s = last[n] = sample(n, step, rng, hot.get(n)) if new else last[n]
            t = T0 + step
            result = PollResult(s.node, s.site, t - 0.05, 0.05, s, fresh=new)
            start = perf()
            changes = engine.observe(result)
            elapsed = (perf() - start) * 1e6
            observe_us.append(elapsed)
            if not new:
                repeat_us.append(elapsed)
            elif s.node in open_since and t - open_since[s.node] <= 300.0:  # after_s: still recording
                recording_us.append(elapsed)
            else:
                quiet_us.append(elapsed)
            for change in changes:
                if change.kind is ChangeKind.OPENED:
                    opened += 1
                    open_since.setdefault(s.node, change.time)
                evidence_points += len(change.evidence)
        start = perf()
        engine.tick(T0 + step + 0.5)
        tick_ms.append((perf() - start) * 1e3)
    observe_us.sort()
    per_gpu = [v / 8 for v in observe_us]
    print(f"fleet: {args.nodes} nodes x 8 GPUs, {args.seconds} s at 1 Hz, {len(hot)} nodes with a hot GPU")
    print(
        f"observe per GPU: median {statistics.median(per_gpu):.1f} us, p99 {per_gpu[int(len(per_gpu) * 0.99)]:.1f} us"
    )
    print(
        f"observe per node result: median {statistics.median(observe_us):.0f} us, "
        f"p99 {observe_us[int(len(observe_us) * 0.99)]:.0f} us, max {observe_us[-1] / 1e3:.0f} ms"
    )
    print(f"one second of the fleet: {sum(observe_us) / args.seconds / 1e3:.0f} ms of observe")
    for label, values in (
        ("new samples, node recording evidence", recording_us),
        ("new samples, no open incident", quiet_us),
        ("repeated samples (fresh=False)", repeat_us),
    ):
        if values:
            values.sort()
            print(
                f"  {label}: median {statistics.median(values):.0f} us, "
                f"p99 {values[int(len(values) * 0.99)]:.0f} us ({len(values)} results)"
            )
    print(f"tick over the fleet: median {statistics.median(tick_ms):.2f} ms, max {max(tick_ms):.2f} ms")
    print(f"incidents opened: {opened}, evidence points emitted: {evidence_points}")
    evidence_text_cost(sample(0, 50, rng, 3))
    buffer = SampleBuffer(load_rules().evidence)
    # A full collection before each reading empties CPython's free lists (spare tuples, floats: process-wide, a few
    # hundred KiB at most), which would otherwise count towards this one node's buffer depending on what ran before.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(400):  # more than five minutes: the buffer reaches its bound
        buffer.add(T0 + i, sample(0, i, rng, None))
    gc.collect()
    held_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"evidence buffer at steady state: {len(buffer)} samples per node, ~{held_bytes / 2**20:.2f} MiB per node "
        f"(~{held_bytes * args.nodes / 2**20:.0f} MiB for {args.nodes} nodes)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
