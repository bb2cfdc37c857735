"""One demo node over time: its GPUs, jobs and cooling (``physics``) under its share of the faults (``faults``).

``NodeSimulation.sample(now)`` steps the node from its previous call to ``now``: the faults active then become
flags for the physics, Xids due since the last step hit their GPUs, and every GPU and the chassis advance by the
time that passed (at most an hour; a first call steps one second).

Repeatability: hardware identity depends only on the node name; load, noise and faults depend on the seed. The
same seed, anchor and sequence of ``now`` values give identical samples.
"""

from __future__ import annotations

import random

from console.config.fleet import SourceSpec
from console.demo.faults import DemoPlan, NodeFaults, ScheduledFault
from console.demo.fleet import Cooling, GpuModel
from console.demo.options import DemoOptions
from console.demo.physics import (
    ALL_GPUS,
    GPUS_PER_NODE,
    PROFILES,
    TAU_GPU_S,
    TAU_HBM_S,
    Job,
    JobTimeline,
    NodeCooling,
    SimulatedGpu,
    lag_factor,
    node_power_w,
    utilization,
)
from console.samples.schema import GpuSample, NodeSample

SOURCE_NAME = "demo"


class NodeSimulation:
    """One demo node. ``sample(now)`` steps the state from the previous call to ``now`` (epoch seconds)."""

    def __init__(self, node: str, site: str, model: GpuModel, cooling: Cooling, plan: DemoPlan) -> None:
        self.node = node
        self.site = site
        self.model = model
        self.cooling = cooling
        self.plan = plan
        self.profile = PROFILES[model]
        identity = random.Random(f"identity/{node}")  # hardware does not change with the seed
        history = random.Random(f"{plan.seed}/{node}/history")
        self._gpus = [SimulatedGpu(i, identity, history) for i in range(GPUS_PER_NODE)]
        self._noise = random.Random(f"{plan.seed}/{node}/noise")
        self._jobs = JobTimeline(f"{plan.seed}/{node}/jobs")
        self._cooling = NodeCooling(cooling, self.profile, identity)
        self._faults = NodeFaults(node, plan)
        self._last_now: float | None = None

    @classmethod
    def for_spec(cls, node: str, site: str, spec: SourceSpec, default_anchor: float) -> NodeSimulation:
        options = DemoOptions.parse(spec, node, default_anchor)
        return cls(node, site, options.model, options.cooling, options.plan)

    def faults_at(self, now: float) -> tuple[ScheduledFault, ...]:
        """This node's faults active at ``now``."""
        return self._faults.faults_at(now)

    def unreachable(self, now: float) -> bool:
        return self._faults.unreachable(now)

    def sample(self, now: float) -> NodeSample:
        elapsed = now - self.plan.anchor
        dt = 1.0 if self._last_now is None else min(max(now - self._last_now, 0.0), 3600.0)
        previous = elapsed - 1.0 if self._last_now is None else self._last_now - self.plan.anchor
        self._last_now = now if self._last_now is None else max(now, self._last_now)

        faults = self._faults.active(now)
        events = self._faults.xid_events(self._gpus, previous, elapsed, now)

        job = self._jobs.at(elapsed)
        if faults.coolant_flow_drop:
            # Scripted so the demo always shows the whole chain: the coolant fault hits a node at full load.
            job = Job(elapsed - 60.0, elapsed - 50.0, elapsed + 1.0, 1.05, ALL_GPUS, 0.8, 1e9, 0.0)

        rng = self._noise
        reference = self._cooling.step(elapsed, dt, faults.coolant_flow_drop, rng)
        alphas = (lag_factor(dt, TAU_GPU_S), lag_factor(dt, TAU_HBM_S))

        gpus: list[GpuSample] = []
        gpu_power_w = 0.0
        util_sum = 0.0
        for gpu in self._gpus:
            if gpu.index in faults.lost:
                gpu.lost = True
                gpu.xid_last = 79
                gpus.append(gpu.lost_sample(self.profile))
                continue
            if gpu.lost:
                gpu.lost = False
                gpu.reset_after_return()
            util = utilization(job, elapsed, gpu.index, rng)
            sample = gpu.step(
                self.profile,
                util=util,
                job=job,
                dt=dt,
                brake=faults.power_brake,
                ref_c=reference.ref_c,
                offsets=reference.offsets,
                slopes=reference.slopes,
                alphas=alphas,
                crc_burst=gpu.index in faults.crc_burst,
                remap_pending=gpu.index in faults.remap_pending,
                rng=rng,
            )
            gpus.append(sample)
            gpu_power_w += sample.power_w or 0.0
            util_sum += util

        node_power = node_power_w(gpu_power_w, util_sum)
        chassis = self._cooling.chassis(reference.inlet_c, node_power, dt, rng)
        return NodeSample(
            node=self.node,
            site=self.site,
            source=SOURCE_NAME,
            time=float(now),
            gpus=tuple(gpus),
            chassis=chassis,
            events=tuple(events),
        )
