"""Parse cost of a dcgm-exporter payload: our parser (+ DCGM mapping) against prometheus_client's parser.

Prints, for the real L4 capture and for a rendered 8-GPU H100 node, the median microseconds per payload and per
GPU, and how many times faster we are. "warm" is the steady state of a source (its parser keeps the label cache
between polls); "cold" is a fresh parser per payload; "template" is a node's usual next payload (same series in
the same order, new values), which skips the parse and maps straight to the sample (console/sources/dcgm_template).

    .venv/bin/python scripts/bench_parse.py [--rounds 9] [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from console.exposition import ExpositionParser, parse_exposition  # noqa: E402
from console.schema import GpuSample, NodeSample, RecoveryAction, ThrottleReason  # noqa: E402
from console.sources.dcgm import XidMemory, parse_dcgm_payload, parse_with_template  # noqa: E402
from console.sources.dcgm_render import render_dcgm_exposition  # noqa: E402

L4_FIXTURE = ROOT / "tests" / "fixtures" / "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt"


def h100_node(gpus: int = 8) -> NodeSample:
    """A loaded HGX H100 node with every field that has a DCGM name (values from the real captures)."""
    return NodeSample(
        node="p5-017",
        site="aws-use1",
        source="dcgm",
        time=time.time(),
        gpus=tuple(
            GpuSample(
                index=i,
                uuid=f"GPU-22dbdd79-f55a-92a8-aa39-3221{i:08x}",
                name="NVIDIA H100 80GB HBM3",
                serial=f"165232300{i:04d}",
                pci_bus_id=f"00000000:{0x53 + i:02X}:00.0",
                driver_version="590.48.01",
                vbios_version="96.00.99.00.01",
                utilization_pct=100.0,
                memory_used_mib=74213.0,
                memory_total_mib=81559.0,
                power_w=631.95 + i,
                power_limit_w=700.0,
                power_default_limit_w=700.0,
                energy_j=123456789.123,
                temperature_c=59.0,
                memory_temperature_c=55.0,
                thermal_margin_c=26.0,
                slowdown_temp_c=87.0,
                shutdown_temp_c=92.0,
                memory_max_temp_c=95.0,
                sm_clock_mhz=1980.0,
                memory_clock_mhz=2619.0,
                pstate=0,
                throttle_reasons=(ThrottleReason.SW_POWER_CAP,),
                ecc_sbe_volatile=0,
                ecc_dbe_volatile=0,
                ecc_sbe_aggregate=0,
                ecc_dbe_aggregate=0,
                remapped_rows_correctable=0,
                remapped_rows_uncorrectable=0,
                remapped_rows_pending=False,
                remapped_rows_failure=False,
                pcie_replays=9,
                pcie_link_gen=5,
                pcie_link_gen_max=5,
                pcie_link_width=16,
                pcie_link_width_max=16,
                nvlink_crc_errors=0,
                nvlink_replay_errors=0,
                nvlink_recovery_errors=0,
                xid_last=0,
                recovery_action=RecoveryAction.NONE,
                mig_mode=False,
            )
            for i in range(gpus)
        ),
    )


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


def bench(label: str, text: str, gpus: int, rounds: int, calls: int) -> None:
    parser = ExpositionParser()
    memory = XidMemory()
    _, template = parse_with_template(text, "n", "s", 0.0, memory)
    assert template is not None, "the payload has a simple shape: the fast path must apply"
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
            "same shape, new values (template)": (
                lambda: template.sample(text, 0.0, memory, node="n", site="s", source="dcgm"),
                calls,
            ),
        },
        rounds,
    )
    reference = results["prometheus_client parser"]
    print(f"\n{label}: {len(text) / 1024:.1f} KiB, {lines} samples, {gpus} GPU(s)")
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
    rendered = render_dcgm_exposition([h100_node()])
    bench("Rendered 8x H100 node (all fields)", rendered, 8, args.rounds, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
