"""The demo source: a ``NodeSimulation`` polled at wall-clock time, behind the same ``Source`` protocol as the
real sources (``console.sources`` registers ``make_source``).

The simulation lives in ``console.demo.simulation`` (one node over time), ``physics`` (GPUs, jobs, cooling) and
``faults`` (the scripted fault schedule); ``options`` reads a demo ``SourceSpec``. During an "unreachable" fault
the source never answers, so the poller's real timeout path runs.
"""

from __future__ import annotations

import asyncio
import time

from console.demo.simulation import NodeSimulation
from console.samples.results import PollFailure, SourceError
from console.samples.schema import NodeSample
from console.sources.base import SourceContext


class DemoSource:
    """Polls a ``NodeSimulation`` at wall-clock time; during an "unreachable" fault it never answers."""

    def __init__(self, ctx: SourceContext, simulation: NodeSimulation) -> None:
        self._ctx = ctx
        self.simulation = simulation

    async def poll(self) -> NodeSample:
        now = time.time()
        if self.simulation.unreachable(now):
            # Outlast the poller's hard timeout so the real timeout path runs, as with a hung host.
            await asyncio.sleep(self._ctx.timeout_s + 5.0)
            raise SourceError(PollFailure.TIMEOUT, "demo node stopped answering (scripted fault)")
        return self.simulation.sample(now)

    async def aclose(self) -> None:
        return None


def make_source(ctx: SourceContext) -> DemoSource:
    # Without an anchor option, the schedule counts from when this source is created (the fleet's start).
    simulation = NodeSimulation.for_spec(ctx.node.name, ctx.site.name, ctx.spec, default_anchor=time.time())
    return DemoSource(ctx, simulation)


__all__ = ["DemoSource", "make_source"]
