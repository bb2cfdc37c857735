"""Parse cost of a dcgm-exporter payload: our parser (+ DCGM mapping) against prometheus_client's parser.

Prints, for the real L4 capture and for a rendered 8-GPU H100 node, the median microseconds per payload and per
GPU, and how many times faster we are. "warm" is the steady state of a source (its parser keeps the label cache
between polls); "cold" is a fresh parser per payload; "template" is a node's usual next payload (same series in
the same order, new values), which skips the parse and maps straight to the sample (console/sources/dcgm/template.py):
"next collection" changes the series a collection moves (temperatures, power, energy, utilisation), "every value
new" all of them.

    .venv/bin/python scripts/bench/bench_parse.py [--rounds 9] [--calls 200]
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from console.sources.dcgm.mapping import XidMemory  # noqa: E402
from console.sources.dcgm.render import render_dcgm_exposition  # noqa: E402
from console.sources.dcgm.source import parse_dcgm_payload, parse_with_template  # noqa: E402
from console.sources.dcgm.template import PayloadTemplate  # noqa: E402
from console.sources.exposition import ExpositionParser, parse_exposition  # noqa: E402
from tests.helpers.builders import h100_dcgm_sample  # noqa: E402

L4_FIXTURE = ROOT / "tests" / "fixtures" / "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt"


def median_us(candidates: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Median CPU microseconds per call of each candidate, measured in interleaved rounds.

    CPU time (not wall time) and interleaving keep the ratios honest on a machine shared with other work.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for func, _calls in candidates.values():
        func()  # warm-up (and, for a reused parser, fill its caches)
    for _ in range(rounds):
        for name, (func, calls) in candidates.items():
            start = time.process_time()
            for _ in range(calls):
                func()
            samples[name].append((time.process_time() - start) / calls)
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


# What a dcgm-exporter's next collection changes (the rest, from clocks and limits to ECC and PCIe counters, mostly
# repeats): the simulator's payloads at 1 s change about a tenth of their lines.
MOVING = ("GPU_TEMP", "MEMORY_TEMP", "POWER_USAGE", "TOTAL_ENERGY_CONSUMPTION", "GPU_UTIL", "MEM_COPY_UTIL")
VALUE = re.compile(r"(?m)^(DCGM_FI_(?:DEV|PROF)_([A-Z_]+)\{[^\n]*) (\S+)$")


def next_collection(text: str, step: float, every_value: bool = False) -> str:
    """The payload after a collection: the moving series (or, with ``every_value``, all but the Xid ones) changed."""

    def bump(match: re.Match[str]) -> str:
        metric = match.group(2)
        if "XID" in metric or not (every_value or metric in MOVING):
            return match.group(0)
        return f"{match.group(1)} {float(match.group(3)) + step:g}"

    return VALUE.sub(bump, text)


def alternating(template: PayloadTemplate, texts: list[str], memory: XidMemory) -> Callable[[], object]:
    """A node's successive payloads, each through the fast path (checked once here: a miss would time nothing)."""
    for text in texts * 2:
        assert template.sample(text, 0.0, memory, node="n", site="s", source="dcgm") is not None, "fast path missed"
    turn = itertools.cycle(texts)
    return lambda: template.sample(next(turn), 0.0, memory, node="n", site="s", source="dcgm")


def bench(label: str, text: str, gpus: int, rounds: int, calls: int) -> None:
    parser = ExpositionParser()
    memory = XidMemory()
    _, template = parse_with_template(text, "n", "s", 0.0, memory)
    assert template is not None, "the payload has a simple shape: the fast path must apply"
    collected = [text, next_collection(text, 1.0)]
    all_new = [text, next_collection(text, 1.0, every_value=True)]
    changed = sum(a != b for a, b in zip(collected[0].split("\n"), collected[1].split("\n"), strict=True))
    lines = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    results = median_us(
        {
            "prometheus_client parser": (
                lambda: [s for f in text_string_to_metric_families(text) for s in f.samples],
                max(1, calls // 20),
            ),
            "our parser, warm cache": (lambda: parser.parse(text), calls),
            "our parser, cold cache": (lambda: parse_exposition(text), calls),
            "our parser + DCGM mapping (warm)": (
                lambda: parse_dcgm_payload(text, "n", "s", 0.0, memory, parser=parser),
                calls,
            ),
            "next collection (template)": (alternating(template, collected, memory), calls),
            "every value new (template)": (alternating(template, all_new, memory), calls),
        },
        rounds,
    )
    reference = results["prometheus_client parser"]
    print(f"\n{label}: {len(text) / 1024:.1f} KiB, {lines} samples, {gpus} GPU(s); a collection changes {changed}")
    print(f"  {'':34} {'us/payload':>11} {'us/GPU':>9} {'x faster':>9}")
    for name, value in results.items():
        print(f"  {name:34} {value:11.1f} {value / gpus:9.1f} {reference / value:9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; CPU time, median of {args.rounds} interleaved rounds")
    bench("Real L4 capture (dcgm-exporter 4.x)", L4_FIXTURE.read_text(), 1, args.rounds, args.calls)
    rendered = render_dcgm_exposition([h100_dcgm_sample()])
    bench("Rendered 8x H100 node (all fields)", rendered, 8, args.rounds, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
