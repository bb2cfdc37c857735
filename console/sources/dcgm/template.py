"""The fast path for a node's next payload: the same series in the same order, only the values changed.

An exporter writes the same lines every time (same metric names, same label sets, same order); only the numbers
after the last space change, and from one collection to the next most of them repeat too (clocks, limits, ECC
and PCIe counters). After a full parse, ``PayloadTemplate.build`` remembers where each value goes (which GPU, which
field, which converter) and keeps the payload's lines. The next payload is compared with the last one line by line
(a C-level memcmp each); only the lines that differ are checked (a sample line, the same head, a value Go would
take, no Xid) and read. The values are then converted and routed without parsing labels or resolving GPUs again.
Anything different (a new GPU, a changed label, an Xid, a timestamp, a malformed value) makes ``sample`` return
``None`` and the caller parses in full, so both paths always give the same ``NodeSample``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress, filterfalse
from operator import call, itemgetter, ne
from typing import Any

from console.samples.schema import GpuSample, NodeSample, gpu_sample_from_fields
from console.sources.dcgm import names
from console.sources.dcgm.mapping import (
    PLAIN_LIMIT,
    GpuReading,
    Route,
    RoutedMapping,
    XidMemory,
    node_sample_from,
    resolve_derived,
)
from console.sources.exposition import Sample

_LEADING_SPACE = frozenset(" \t\r\f\v")


def _is_comment(line: str) -> bool:
    return not line or line[0] == "#"


@dataclass(slots=True)
class _LastPayload:
    """The node's last payload that had the template's shape: its lines, and the value of each sample line."""

    lines: list[str]
    values: list[float]


@dataclass(frozen=True, slots=True)
class PayloadTemplate:
    """One node's payload shape (its last matching payload's lines) and where each value goes."""

    sample_at_line: list[int]  # per line: the sample it holds, or -1 for a comment or blank line
    readings: list[GpuReading]  # the GPUs, with their identity and Xid state
    routed: list[bool]  # per sample: whether its value goes into a GPU's dict
    pinned: frozenset[int]  # samples whose value must not change: the Xid series (the full path has their logic)
    # One plan per values dict a payload fills (a GPU's own, or a MIG instance's): its fields and converters, in
    # tuples rather than a tuple per sample (300 more objects per node for the garbage collector to scan).
    slot_plans: list[_SlotPlan]
    by_slot: Callable[[list[float]], Sequence[float]]  # routed values, ordered by slot
    # Without MIG instances, a payload with no sentinel, NaN or Inf maps straight to GpuSamples: one plan per GPU in
    # the sample's order, with what the pinned lines fix (identity, index, last Xid). None: take the readings path.
    plain_gpus: tuple[_PlainGpu, ...] | None
    # The last matching payload, updated by ``sample``: it stands for the shape (heads, comments, line count), and a
    # node's next payload mostly repeats its lines, so only the changed ones need a look.
    last: _LastPayload

    @classmethod
    def build(
        cls, text: str, samples: list[Sample], routes: list[Route | None], mapping: RoutedMapping
    ) -> PayloadTemplate | None:
        """The template of a payload that was just parsed and mapped in full, or ``None`` when it has no simple
        shape (timestamps, odd spacing, duplicate GPUs): such a node always takes the full path."""
        if mapping.has_duplicates:
            return None
        mapper_gpus = mapping.readings
        lines = text.split("\n")
        is_sample = [not _is_comment(line) for line in lines]
        sample_lines = list(compress(lines, is_sample))
        if len(sample_lines) != len(samples) or len(routes) != len(samples):
            return None  # lines the parser skipped (blank with spaces, indented): not a shape worth a template
        tokens: list[str] = []
        for line, (_name, _labels, _value, timestamp) in zip(sample_lines, samples, strict=True):
            head, space, token = line.rpartition(" ")
            if timestamp is not None or not space or not head or line[0] in _LEADING_SPACE:
                return None
            if head[-1] in _LEADING_SPACE:
                return None
            tokens.append(token)
        try:
            values = list(map(float, tokens))
        except ValueError:
            return None
        slot_of: dict[int, int] = {}
        slots: list[tuple[int, str | None]] = []  # (reading, MIG instance or None)
        for position, gpu in enumerate(mapper_gpus):
            slot_of[id(gpu.values)] = len(slots)
            slots.append((position, None))
            for instance, gpu_values in gpu.instances.items():
                slot_of[id(gpu_values)] = len(slots)
                slots.append((position, instance))
        compact: list[tuple[int, str, names.Converter]] = []  # (slot, field, converter) per routed sample
        routed: list[bool] = []
        pinned: set[int] = set()
        for index, route in enumerate(routes):
            if route is None:
                routed.append(False)
            elif isinstance(route, str):  # XID_ROUTE
                routed.append(False)
                pinned.add(index)
            else:
                gpu, gpu_values, _is_instance, field_name, convert = route
                if id(gpu_values) not in slot_of:
                    return None  # defensive: every route's dict belongs to one of the mapping's readings
                routed.append(True)
                compact.append((slot_of[id(gpu_values)], field_name, convert))
        sample_numbers = iter(range(len(sample_lines)))
        slot_plans, by_slot = _slot_plans(slots, compact)
        return cls(
            slot_plans=slot_plans,
            by_slot=by_slot,
            plain_gpus=_plain_gpus(mapper_gpus, slot_plans),
            sample_at_line=[next(sample_numbers) if flag else -1 for flag in is_sample],
            readings=mapper_gpus,
            routed=routed,
            pinned=frozenset(pinned),
            last=_LastPayload(lines, values),
        )

    def sample(
        self, text: str, now: float, memory: XidMemory, *, node: str, site: str, source: str
    ) -> NodeSample | None:
        """The payload's ``NodeSample`` if it has this template's shape, else ``None`` (parse it in full)."""
        lines = text.split("\n")
        last = self.last
        if len(lines) != len(last.lines):
            return None
        changed = list(compress(range(len(lines)), map(ne, lines, last.lines)))  # memcmp per line, in C
        values = self._values_of_changed_lines(lines, changed)
        if values is None:
            return None
        routed = list(compress(values, self.routed))
        ordered = self.by_slot(routed)
        # Values past the plain range are few (energy counters, sentinels, NaN, Inf): only those need a look.
        unusual = filterfalse(PLAIN_LIMIT.__gt__, routed)
        plain = (not routed or min(routed) > -1e300) and all(names.blank_kind(value) is None for value in unusual)
        last.lines, last.values = lines, values
        if plain and self.plain_gpus is not None:
            # The pinned lines hold every Xid series as the full parse saw it, and that parse left ``memory``
            # agreeing with them: there is no Xid event to emit.
            gpus = tuple(gpu.sample(ordered) for gpu in self.plain_gpus)
            return NodeSample(node=node, site=site, source=source, time=now, gpus=gpus)
        readings = [_fresh(gpu) for gpu in self.readings]
        for plan in self.slot_plans:
            values_of_plan = ordered[plan.start : plan.end]
            if plain:  # no sentinel, NaN or Inf anywhere (the usual case): one C-level pass per dict
                filled = dict(zip(plan.fields, map(call, plan.converters, values_of_plan), strict=True))
            else:
                filled = plan.fill_one_by_one(values_of_plan, readings[plan.reading].unsupported)
            reading = readings[plan.reading]
            if plan.instance is None:
                reading.values = filled
            else:
                reading.instances[plan.instance] = filled
        return node_sample_from(readings, now, memory, node=node, site=site, source=source)

    def _values_of_changed_lines(self, lines: list[str], changed: list[int]) -> list[float] | None:
        """The last values with the changed lines' values read; None when a comment, a head or an Xid changed,
        or a value is not one the full parser takes."""
        values = self.last.values.copy()
        last_lines = self.last.lines
        for line_number in changed:
            index = self.sample_at_line[line_number]
            if index < 0 or index in self.pinned:
                return None  # a comment, or an Xid series: the full path has the logic for those
            head, _space, token = lines[line_number].rpartition(" ")
            if head != last_lines[line_number].rpartition(" ")[0]:
                return None
            # Python's float() also takes "1_000" and non-ASCII digits; Go's ParseFloat does not.
            if "_" in token or not token.isascii():
                return None
            try:
                values[index] = float(token)
            except ValueError:
                return None  # the full parser names the bad line
        return values


@dataclass(frozen=True, slots=True)
class _SlotPlan:
    """One values dict's share of the routed values, once they are ordered by slot: ``[start:end]``."""

    reading: int
    instance: str | None
    start: int
    end: int
    fields: tuple[str, ...]
    converters: tuple[names.Converter, ...]

    def fill_one_by_one(self, values: Sequence[float], unsupported: set[str]) -> dict[str, object]:
        """The dict for values that include DCGM sentinels, NaN or Inf (skipped; NOT_SUPPORTED noted on the GPU)."""
        filled: dict[str, object] = {}
        for field_name, convert, value in zip(self.fields, self.converters, values, strict=True):
            if not (-1e300 < value < PLAIN_LIMIT):
                kind = names.blank_kind(value)
                if kind is not None:
                    if kind == "not_supported" and self.instance is None:
                        unsupported.add(field_name)
                    continue
            filled[field_name] = convert(value)
        return filled


def _slot_plans(
    slots: list[tuple[int, str | None]], routes: list[tuple[int, str, names.Converter]]
) -> tuple[list[_SlotPlan], Callable[[list[float]], Sequence[float]]]:
    """Plans per slot, and a getter that orders routed values by slot (payload order within a slot, so a field
    given twice keeps its last value, as on the full path)."""
    order = sorted(range(len(routes)), key=lambda i: routes[i][0])
    plans: list[_SlotPlan] = []
    start = 0
    for slot, (reading, instance) in enumerate(slots):
        mine = [i for i in order if routes[i][0] == slot]
        plans.append(
            _SlotPlan(
                reading=reading,
                instance=instance,
                start=start,
                end=start + len(mine),
                fields=tuple(routes[i][1] for i in mine),
                converters=tuple(routes[i][2] for i in mine),
            )
        )
        start += len(mine)
    if len(order) >= 2:
        return plans, itemgetter(*order)
    return plans, lambda values: [values[i] for i in order]


@dataclass(frozen=True, slots=True)
class _PlainGpu:
    """One GPU without MIG instances: its plan, and the fields its template fixes."""

    plan: _SlotPlan
    fixed: dict[str, Any]  # index, uuid, identity labels, last Xid

    def sample(self, ordered: Sequence[float]) -> GpuSample:
        plan = self.plan
        values = dict(zip(plan.fields, map(call, plan.converters, ordered[plan.start : plan.end]), strict=True))
        unsupported: set[str] = set()
        resolve_derived(values, unsupported)
        values.update(self.fixed)
        if unsupported:
            values["unsupported"] = tuple(sorted(unsupported))
        return gpu_sample_from_fields(values)


def _plain_gpus(readings: list[GpuReading], plans: list[_SlotPlan]) -> tuple[_PlainGpu, ...] | None:
    if len(plans) != len(readings) or any(gpu.instances or gpu.index is None for gpu in readings):
        return None
    gpus = []
    for plan in plans:
        gpu = readings[plan.reading]
        fixed: dict[str, Any] = {**gpu.identity, "index": gpu.index, "uuid": gpu.uuid}
        fixed["workload"] = tuple(gpu.workload) if gpu.workload is not None else None
        if gpu.xid is not None:
            fixed["xid_last"] = gpu.xid[0]
        gpus.append((gpu.index, _PlainGpu(plan, fixed)))
    return tuple(gpu for _index, gpu in sorted(gpus, key=itemgetter(0)))  # stable: as node_sample_from orders


def _fresh(gpu: GpuReading) -> GpuReading:
    """A reading with the template GPU's identity and Xid state (pinned lines guarantee those did not change)."""
    return GpuReading(
        uuid=gpu.uuid,
        index=gpu.index,
        identity=gpu.identity,
        instances={instance: {} for instance in gpu.instances},
        mig_profiles=gpu.mig_profiles,
        xid=gpu.xid,
        xid_from_instance=gpu.xid_from_instance,
        xid_counts=dict(gpu.xid_counts),
        workload=gpu.workload,  # labels are part of the lines' heads, which the template pins
    )


__all__ = ["PayloadTemplate"]
