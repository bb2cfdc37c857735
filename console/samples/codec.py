"""The sample schema as JSON: what the agent serves and incidents keep as evidence, checked field by field on the
way in."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from console.samples.schema import (
    EMPTY_CHASSIS,
    GPU_FIELD_NAMES,
    MAX_GPUS_PER_NODE,
    RECOVERY_ACTION_CODES,
    SLOWDOWN_REASONS,
    THROTTLE_REASON_BITS,
    ChassisPart,
    ChassisSample,
    ComponentCondition,
    ComponentKind,
    EventKind,
    GpuEvent,
    GpuSample,
    Health,
    JobWorkload,
    MigInstance,
    NodeSample,
    PodWorkload,
    ProcessWorkload,
    RecoveryAction,
    SchemaError,
    ThrottleReason,
    Workload,
    gpu_sample_from_fields,
    merge_samples,
    throttle_mask,
    throttle_reasons_from_mask,
)

SCHEMA_ID = "gpu-console.sample/1"

_CHASSIS_FIELDS = tuple(f.name for f in dataclasses.fields(ChassisSample))
_MIG_FIELDS = tuple(f.name for f in dataclasses.fields(MigInstance))
_MIG_TYPES: Mapping[str, tuple[type, ...]] = {"instance_id": (str,), "profile": (str,)}


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def gpu_to_json(gpu: GpuSample) -> dict[str, Any]:
    out = {name: _finite_or_none(getattr(gpu, name)) for name in GPU_FIELD_NAMES}
    out["throttle_reasons"] = [str(r) for r in gpu.throttle_reasons]
    out["recovery_action"] = str(gpu.recovery_action) if gpu.recovery_action is not None else None
    out["unsupported"] = list(gpu.unsupported)
    out["mig_instances"] = [mig_to_json(instance) for instance in gpu.mig_instances]
    out["workload"] = workload_to_json(gpu.workload)
    return out


def mig_to_json(instance: MigInstance) -> dict[str, Any]:
    return {name: _finite_or_none(getattr(instance, name)) for name in _MIG_FIELDS}


def workload_entry_to_json(entry: Workload) -> dict[str, Any]:
    if isinstance(entry, PodWorkload):
        return {"kind": "pod", "namespace": entry.namespace, "pod": entry.pod, "container": entry.container}
    if isinstance(entry, JobWorkload):
        return {"kind": "job", "id": entry.id}
    return {"kind": "process", "pid": entry.pid, "name": entry.name, "used_memory_mib": entry.used_memory_mib}


def workload_to_json(workload: tuple[Workload, ...] | None) -> list[dict[str, Any]] | None:
    return None if workload is None else [workload_entry_to_json(entry) for entry in workload]


_WORKLOAD_KEYS: Mapping[str, frozenset[str]] = {
    "pod": frozenset({"kind", "namespace", "pod", "container"}),
    "job": frozenset({"kind", "id"}),
    "process": frozenset({"kind", "pid", "name", "used_memory_mib"}),
}


def workload_entry_from_json(data: Any, path: str) -> Workload:
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _WORKLOAD_KEYS:
        raise SchemaError(f"{path}.kind: expected pod, job or process, got {kind!r}")
    unknown = set(data) - _WORKLOAD_KEYS[kind]
    if unknown:
        raise SchemaError(f"{path}: unknown keys {sorted(unknown)}")
    if kind == "pod":
        return PodWorkload(
            namespace=_check(f"{path}.namespace", data.get("namespace"), (str,)),
            pod=_check(f"{path}.pod", data.get("pod"), (str,), False),
            container=_check(f"{path}.container", data.get("container"), (str,)),
        )
    if kind == "job":
        return JobWorkload(id=_check(f"{path}.id", data.get("id"), (str,), False))
    memory = _check(f"{path}.used_memory_mib", data.get("used_memory_mib"), _NUMBER)
    return ProcessWorkload(
        pid=_check(f"{path}.pid", data.get("pid"), (int,), False),
        name=_check(f"{path}.name", data.get("name"), (str,)),
        used_memory_mib=float(memory) if memory is not None else None,
    )


def workload_from_json(data: Any, path: str) -> tuple[Workload, ...] | None:
    if data is None:
        return None
    if not isinstance(data, list):
        raise SchemaError(f"{path}: expected a list or null")
    return tuple(workload_entry_from_json(entry, f"{path}[{i}]") for i, entry in enumerate(data))


def chassis_to_json(chassis: ChassisSample) -> dict[str, Any]:
    out = {name: _finite_or_none(getattr(chassis, name)) for name in _CHASSIS_FIELDS}
    out["fans_rpm"] = list(chassis.fans_rpm) if chassis.fans_rpm is not None else None
    out["conditions"] = list(chassis.conditions)
    for name in ("health", "pump_health", "psu_health"):
        value = getattr(chassis, name)
        out[name] = str(value) if value is not None else None
    out["components"] = [
        {"name": c.name, "kind": str(c.kind), "health": str(c.health), "text": c.text, "chassis": c.chassis}
        for c in chassis.components
    ]
    out["parts"] = [{"name": part.name, "readings": chassis_to_json(part.readings)} for part in chassis.parts]
    return out


def event_to_json(event: GpuEvent) -> dict[str, Any]:
    return {
        "kind": str(event.kind),
        "time": event.time,
        "gpu_uuid": event.gpu_uuid,
        "gpu_index": event.gpu_index,
        "code": event.code,
        "message": event.message,
    }


def sample_to_json(sample: NodeSample) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "node": sample.node,
        "site": sample.site,
        "source": sample.source,
        "time": sample.time,
        "gpus": [gpu_to_json(g) for g in sample.gpus],
        "chassis": chassis_to_json(sample.chassis),
        "events": [event_to_json(e) for e in sample.events],
    }


_NUMBER = (int, float)


def _check(path: str, value: Any, kinds: tuple[type, ...], optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise SchemaError(f"{path}: expected {'/'.join(k.__name__ for k in kinds)}, got bool")
    if not isinstance(value, kinds):
        raise SchemaError(f"{path}: expected {'/'.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_GPU_TYPES: Mapping[str, tuple[type, ...]] = {
    "index": (int,),
    "uuid": (str,),
    "name": (str,),
    "serial": (str,),
    "pci_bus_id": (str,),
    "driver_version": (str,),
    "vbios_version": (str,),
    "pstate": (int,),
    "ecc_sbe_volatile": (int,),
    "ecc_dbe_volatile": (int,),
    "ecc_sbe_aggregate": (int,),
    "ecc_dbe_aggregate": (int,),
    "remapped_rows_correctable": (int,),
    "remapped_rows_uncorrectable": (int,),
    "remapped_rows_pending": (bool,),
    "remapped_rows_failure": (bool,),
    "pcie_replays": (int,),
    "pcie_link_gen": (int,),
    "pcie_link_gen_max": (int,),
    "pcie_link_width": (int,),
    "pcie_link_width_max": (int,),
    "nvlink_crc_errors": (int,),
    "nvlink_replay_errors": (int,),
    "nvlink_recovery_errors": (int,),
    "nvlink_links_up": (int,),
    "nvlink_links_down": (int,),
    "xid_last": (int,),
    "mig_mode": (bool,),
    "lost": (bool,),
}


def _enum(path: str, value: Any, enum: type[StrEnum]) -> Any:
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        raise SchemaError(f"{path}: unknown value {value!r}") from None


def gpu_from_json(data: Any, path: str) -> GpuSample:
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object")
    unknown = set(data) - set(GPU_FIELD_NAMES)
    if unknown:
        raise SchemaError(f"{path}: unknown keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name in GPU_FIELD_NAMES:
        if name not in data:
            continue
        value = data[name]
        key = f"{path}.{name}"
        if name == "throttle_reasons":
            if not isinstance(value, list):
                raise SchemaError(f"{key}: expected a list")
            kwargs[name] = tuple(_enum(f"{key}[{i}]", v, ThrottleReason) for i, v in enumerate(value))
        elif name == "recovery_action":
            kwargs[name] = _enum(key, value, RecoveryAction)
        elif name == "unsupported":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SchemaError(f"{key}: expected a list of field names")
            kwargs[name] = tuple(value)
        elif name == "mig_instances":
            if not isinstance(value, list):
                raise SchemaError(f"{key}: expected a list")
            kwargs[name] = tuple(_mig_from_json(item, f"{key}[{i}]") for i, item in enumerate(value))
        elif name == "workload":
            kwargs[name] = workload_from_json(value, key)
        else:
            kinds = _GPU_TYPES.get(name, _NUMBER)
            kwargs[name] = _check(key, value, kinds, optional=name not in ("index", "uuid", "lost"))
    for required in ("index", "uuid"):
        if required not in kwargs:
            raise SchemaError(f"{path}.{required}: missing")
    if "lost" in kwargs and kwargs["lost"] is None:
        kwargs["lost"] = False
    return GpuSample(**kwargs)


def _mig_from_json(data: Any, path: str) -> MigInstance:
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object")
    unknown = set(data) - set(_MIG_FIELDS)
    if unknown:
        raise SchemaError(f"{path}: unknown keys {sorted(unknown)}")
    kwargs = {
        name: _check(f"{path}.{name}", value, _MIG_TYPES.get(name, _NUMBER), optional=name != "instance_id")
        for name, value in data.items()
    }
    if "instance_id" not in kwargs:
        raise SchemaError(f"{path}.instance_id: missing")
    return MigInstance(**kwargs)


def chassis_from_json(data: Any, path: str) -> ChassisSample:
    if data is None:
        return EMPTY_CHASSIS
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object")
    unknown = set(data) - set(_CHASSIS_FIELDS)
    if unknown:
        raise SchemaError(f"{path}: unknown keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{path}.{name}"
        if name in ("health", "pump_health", "psu_health"):
            kwargs[name] = _enum(key, value, Health)
        elif name == "leak_detected":
            kwargs[name] = _check(key, value, (bool,))
        elif name == "fans_rpm":
            if value is None:
                kwargs[name] = None
            elif not isinstance(value, list):
                raise SchemaError(f"{key}: expected a list")
            else:
                kwargs[name] = tuple(_check(f"{key}[{i}]", v, _NUMBER, False) for i, v in enumerate(value))
        elif name == "conditions":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SchemaError(f"{key}: expected a list of strings")
            kwargs[name] = tuple(value)
        elif name == "components":
            kwargs[name] = tuple(_component_from_json(v, f"{key}[{i}]") for i, v in enumerate(_list(key, value)))
        elif name == "parts":
            kwargs[name] = tuple(_part_from_json(v, f"{key}[{i}]") for i, v in enumerate(_list(key, value)))
        else:
            kwargs[name] = _check(key, value, _NUMBER)
    return ChassisSample(**kwargs)


def _list(path: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise SchemaError(f"{path}: expected a list")
    return value


def _component_from_json(data: Any, path: str) -> ComponentCondition:
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object")
    health = _enum(f"{path}.health", data.get("health"), Health)
    kind = _enum(f"{path}.kind", data.get("kind"), ComponentKind)
    if health is None or kind is None:
        raise SchemaError(f"{path}: needs kind and health")
    return ComponentCondition(
        name=_check(f"{path}.name", data.get("name"), (str,), False),
        kind=kind,
        health=health,
        text=_check(f"{path}.text", data.get("text", ""), (str,), False),
        chassis=_check(f"{path}.chassis", data.get("chassis", ""), (str,), False),
    )


def _part_from_json(data: Any, path: str) -> ChassisPart:
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object")
    readings = chassis_from_json(data.get("readings"), f"{path}.readings")
    if readings.parts:
        raise SchemaError(f"{path}.readings.parts: a chassis part holds no parts of its own")
    return ChassisPart(name=_check(f"{path}.name", data.get("name"), (str,), False), readings=readings)


def event_from_json(data: Any, path: str) -> GpuEvent:
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected an object")
    kind = _enum(f"{path}.kind", data.get("kind"), EventKind)
    if kind is None:
        raise SchemaError(f"{path}.kind: missing")
    return GpuEvent(
        kind=kind,
        time=float(_check(f"{path}.time", data.get("time"), _NUMBER, False)),
        gpu_uuid=_check(f"{path}.gpu_uuid", data.get("gpu_uuid"), (str,)),
        gpu_index=_check(f"{path}.gpu_index", data.get("gpu_index"), (int,)),
        code=_check(f"{path}.code", data.get("code"), (int,)),
        message=_check(f"{path}.message", data.get("message", ""), (str,), False),
    )


def sample_from_json(data: Any) -> NodeSample:
    """Validate and convert a JSON document; raises ``SchemaError`` naming the first bad key path."""
    if not isinstance(data, dict):
        raise SchemaError("sample: expected a JSON object")
    if data.get("schema") != SCHEMA_ID:
        raise SchemaError(f"schema: expected {SCHEMA_ID!r}, got {data.get('schema')!r}")
    gpus = data.get("gpus", [])
    if not isinstance(gpus, list):
        raise SchemaError("gpus: expected a list")
    events = data.get("events", [])
    if not isinstance(events, list):
        raise SchemaError("events: expected a list")
    time_value = _check("time", data.get("time"), _NUMBER, False)
    if time_value is None:
        raise SchemaError("time: must be a finite number")
    return NodeSample(
        node=_check("node", data.get("node"), (str,), False),
        site=_check("site", data.get("site", ""), (str,), False),
        source=_check("source", data.get("source", ""), (str,), False),
        time=float(time_value),
        gpus=tuple(gpu_from_json(g, f"gpus[{i}]") for i, g in enumerate(gpus)),
        chassis=chassis_from_json(data.get("chassis"), "chassis"),
        events=tuple(event_from_json(e, f"events[{i}]") for i, e in enumerate(events)),
    )


__all__ = [
    "EMPTY_CHASSIS",
    "GPU_FIELD_NAMES",
    "MAX_GPUS_PER_NODE",
    "RECOVERY_ACTION_CODES",
    "SCHEMA_ID",
    "SLOWDOWN_REASONS",
    "THROTTLE_REASON_BITS",
    "ChassisSample",
    "EventKind",
    "GpuEvent",
    "GpuSample",
    "Health",
    "NodeSample",
    "RecoveryAction",
    "SchemaError",
    "ThrottleReason",
    "gpu_sample_from_fields",
    "merge_samples",
    "sample_from_json",
    "sample_to_json",
    "throttle_mask",
    "throttle_reasons_from_mask",
    "workload_from_json",
    "workload_to_json",
]
