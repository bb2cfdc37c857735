#!/usr/bin/env python3
"""Check the NVML source and the node agent on a real NVIDIA machine (only the core dependencies needed).

    python scripts/dev/gpu_check.py [--polls 50]

Prints: the sample JSON of one poll, the fields each GPU reported unsupported, which NVML events could be
registered, the median / p95 cost of one poll in ms, then starts the agent on 127.0.0.1 and prints the size
and first lines of /metrics and /api/v1/sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from console.agent.server import AgentConfig, AgentServer, local_nvml_source
from console.samples.codec import sample_to_json
from console.samples.schema import NodeSample
from console.sources.nvml.source import NvmlSource


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def check_source(polls: int) -> NvmlSource:
    source = local_nvml_source()
    assert isinstance(source, NvmlSource)
    started = time.perf_counter()
    first = await source.poll()
    first_ms = (time.perf_counter() - started) * 1000
    costs: list[float] = []
    sample: NodeSample = first
    for _ in range(polls):
        started = time.perf_counter()
        sample = await source.poll()
        costs.append((time.perf_counter() - started) * 1000)
    print("== one NVML sample (schema JSON) ==")
    print(json.dumps(sample_to_json(sample), indent=2))
    if not sample.gpus:
        print(f"no local GPUs: {source.unavailable_reason}")
    print("== unsupported fields per GPU ==")
    for gpu in sample.gpus:
        print(f"GPU {gpu.index} {gpu.name} {gpu.uuid}: {', '.join(gpu.unsupported) or '(none)'}")
    print("== NVML event registration (uuid: mask) ==")
    for uuid, mask in source.events_registered.items():
        print(f"{uuid}: 0x{mask:04x}")
    print("== poll cost ==")
    print(f"first poll (nvmlInit + discovery): {first_ms:.1f} ms")
    if costs:
        print(
            f"{len(costs)} polls, {len(sample.gpus)} GPU(s): median {statistics.median(costs):.2f} ms, "
            f"p95 {_percentile(costs, 0.95):.2f} ms, max {max(costs):.2f} ms"
        )
    await source.aclose()
    return source


async def check_agent() -> None:
    import aiohttp

    token = secrets.token_urlsafe(24)
    server = AgentServer(AgentConfig(port=0, token=token, interval_s=1.0), local_nvml_source())
    await server.start()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            for path, lines in (("/metrics", 25), ("/api/v1/sample", 1)):
                started = time.perf_counter()
                async with session.get(server.url + path, headers=headers) as response:
                    body = await response.read()
                elapsed = (time.perf_counter() - started) * 1000
                print(f"== agent GET {path}: HTTP {response.status}, {len(body)} bytes, {elapsed:.1f} ms ==")
                text = body.decode(errors="replace")
                if path.endswith("sample"):
                    text = text[:600]
                print("\n".join(text.splitlines()[:lines]))
            async with session.get(server.url + "/api/v1/sample") as response:
                print(f"== without the token: HTTP {response.status} ==")
    finally:
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=50, help="timed polls after the first (default 50)")
    parser.add_argument("--no-agent", action="store_true", help="skip the agent part")
    args = parser.parse_args()
    asyncio.run(check_source(args.polls))
    if not args.no_agent:
        asyncio.run(check_agent())
    return 0


if __name__ == "__main__":
    sys.exit(main())
