"""Evidence: the samples around an incident, bounded in memory and in points per incident.

Per node the engine keeps references to recent samples (no copies: the poller's samples are immutable), at full
rate (at most one per ``min_spacing_s``) for the newest ``full_rate_s`` and one per ``older_every_s`` back to
``before_s``. When an incident opens, those samples become its "before" evidence, filtered to the affected GPU plus
the chassis; the engine then keeps recording with the same thinning for ``after_s``.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections import deque
from dataclasses import dataclass, field

from console.incidents.model import EvidencePoint, Incident
from console.incidents.rules import EvidenceSettings
from console.schema import ChassisSample, GpuEvent, GpuSample, NodeSample, ThrottleReason, sample_to_json


def evidence_json(sample: NodeSample, gpu_uuid: str | None) -> str:
    """The sample as schema JSON, reduced to one GPU (and its events) plus the chassis for GPU incidents."""
    if gpu_uuid is not None:
        sample = dataclasses.replace(
            sample,
            gpus=tuple(g for g in sample.gpus if g.uuid == gpu_uuid),
            events=tuple(e for e in sample.events if e.gpu_uuid in (gpu_uuid, None)),
        )
    return json.dumps(sample_to_json(sample), separators=(",", ":"))


_GPU_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(GpuSample))
_CHASSIS_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ChassisSample))
_gpu_values = operator.attrgetter(*_GPU_FIELD_NAMES)
_chassis_values = operator.attrgetter(*_CHASSIS_FIELD_NAMES)
_GPU_ENUMS = tuple(_GPU_FIELD_NAMES.index(name) for name in ("throttle_reasons", "recovery_action"))
_CHASSIS_ENUMS = tuple(_CHASSIS_FIELD_NAMES.index(name) for name in ("health", "pump_health", "psu_health"))
_REASON_TEXT: dict[tuple[ThrottleReason, ...], tuple[str, ...]] = {}

# A kept sample is a tuple of plain values (str, float, int, None, tuples of those): CPython's collector stops
# tracking such tuples, so five minutes of samples for 1,000 nodes add nothing to garbage-collection pauses,
# which they did (0.8 s full collections) when the buffer held the samples' dataclass objects.
_Kept = tuple[float, str, float, tuple[object, ...], tuple[tuple[object, ...], ...], tuple[GpuEvent, ...]]


def _plain_gpu(gpu: GpuSample) -> tuple[object, ...]:
    values = list(_gpu_values(gpu))
    reasons = gpu.throttle_reasons
    text = _REASON_TEXT.get(reasons)
    if text is None:
        text = _REASON_TEXT[reasons] = tuple(str(r) for r in reasons)
    values[_GPU_ENUMS[0]] = text
    action = gpu.recovery_action
    values[_GPU_ENUMS[1]] = None if action is None else action.value
    return tuple(values)


def _plain_chassis(chassis: ChassisSample) -> tuple[object, ...]:
    values = list(_chassis_values(chassis))
    for i in _CHASSIS_ENUMS:
        health = values[i]
        values[i] = None if health is None else str(health)
    return tuple(values)


def _restore(node: str, site: str, kept: _Kept) -> NodeSample:
    _, source, time, chassis, gpus, events = kept
    return NodeSample(
        node=node,
        site=site,
        source=source,
        time=time,
        gpus=tuple(GpuSample(*values) for values in gpus),  # type: ignore[arg-type]
        chassis=ChassisSample(*chassis),  # type: ignore[arg-type]
        events=events,
    )


class SampleBuffer:
    """One node's recent samples, thinned with age so memory per node stays bounded."""

    __slots__ = ("_older", "_recent", "settings")

    def __init__(self, settings: EvidenceSettings) -> None:
        self.settings = settings
        self._recent: deque[_Kept] = deque()
        self._older: deque[_Kept] = deque()

    def add(self, t: float, sample: NodeSample) -> None:
        s = self.settings
        recent = self._recent
        if recent and t - recent[-1][0] < s.min_spacing_s:
            return
        gpus = tuple(_plain_gpu(gpu) for gpu in sample.gpus)
        recent.append((t, sample.source, sample.time, _plain_chassis(sample.chassis), gpus, sample.events))
        cutoff = t - s.full_rate_s
        older = self._older
        while recent and recent[0][0] < cutoff:
            moved = recent.popleft()
            if not older or moved[0] - older[-1][0] >= s.older_every_s:
                older.append(moved)
        oldest = t - s.before_s
        while older and older[0][0] < oldest:
            older.popleft()

    def samples(self, node: str, site: str) -> list[tuple[float, NodeSample]]:
        return [(kept[0], _restore(node, site, kept)) for kept in (*self._older, *self._recent)]

    def __len__(self) -> int:
        return len(self._older) + len(self._recent)


@dataclass(slots=True)
class Recording:
    """Evidence still being recorded after an incident opened; points leave in batches (EVIDENCE changes)."""

    incident: Incident
    gpu_uuid: str | None
    started: float
    until: float
    last_point_t: float
    batch: list[EvidencePoint] = field(default_factory=list)
    batch_started: float = 0.0

    def offer(self, t: float, sample: NodeSample, settings: EvidenceSettings) -> None:
        spacing = settings.min_spacing_s if t - self.started <= settings.full_rate_s else settings.older_every_s
        if t - self.last_point_t < spacing or t > self.until:
            return
        if not self.batch:
            self.batch_started = t
        self.batch.append(EvidencePoint(self.incident.id, t, evidence_json(sample, self.gpu_uuid)))
        self.last_point_t = t

    def due(self, now: float, settings: EvidenceSettings) -> bool:
        return bool(self.batch) and (now - self.batch_started >= settings.batch_s or now >= self.until)

    def take(self) -> tuple[EvidencePoint, ...]:
        points, self.batch = tuple(self.batch), []
        return points
