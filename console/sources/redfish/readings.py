"""Read fetched Redfish resources, each leaf into a ``Findings`` accumulator.

Each cached leaf has a kind (what schema it follows); ``choosing.read_bmc`` reads every leaf into a
``Findings`` accumulator and then picks, per field, the most trustworthy reading: the newer model
(ThermalSubsystem, PowerSubsystem, EnvironmentMetrics) before the legacy Thermal/Power resources, both before
loose Sensors, and the first chassis before later ones. Wrong-typed values raise
``SourceError(BAD_PAYLOAD)`` naming the URL and key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from console.samples.schema import (
    ComponentKind,
    Health,
)
from console.sources.redfish.http import bad_payload


class LeafKind(StrEnum):
    CHASSIS = "chassis"
    COOLING_UNIT = "cooling_unit"  # a CDU, heat exchanger, immersion unit or RPU
    THERMAL_METRICS = "thermal_metrics"
    FAN = "fan"
    COOLANT_CONNECTOR = "coolant_connector"  # a server's cold-plate loop (ThermalSubsystem)
    CDU_SECONDARY_CONNECTOR = "cdu_secondary_connector"  # the rack loop a CDU feeds
    CDU_PRIMARY_CONNECTOR = "cdu_primary_connector"  # the facility loop feeding a CDU
    PUMP = "pump"
    LEAK_DETECTOR = "leak_detector"
    LEAK_DETECTION = "leak_detection"  # detector-state excerpts, for trees that do not link each detector
    POWER_SUPPLY = "power_supply"
    PSU_METRICS = "psu_metrics"
    ENVIRONMENT = "environment"
    LEGACY_THERMAL = "legacy_thermal"
    LEGACY_POWER = "legacy_power"
    SENSOR = "sensor"
    PROCESSOR = "processor"  # a GPU an HGX HMC's sensors name in RelatedItem (for its UUID and health)


# Leaves whose every instance matters (worst-of health, each fan, each loop, each leak detector). The others
# only fill fields, and discovery drops them when they add nothing the rest do not already say.
STATE_KINDS = frozenset(
    {
        LeafKind.CHASSIS,
        LeafKind.COOLING_UNIT,
        LeafKind.FAN,
        LeafKind.COOLANT_CONNECTOR,
        LeafKind.CDU_SECONDARY_CONNECTOR,
        LeafKind.CDU_PRIMARY_CONNECTOR,
        LeafKind.PUMP,
        LeafKind.LEAK_DETECTOR,
        LeafKind.POWER_SUPPLY,
        LeafKind.PROCESSOR,
    }
)
# The order in which discovery tries to drop optional leaves: least trusted first.
PRUNE_ORDER = (
    LeafKind.SENSOR,
    LeafKind.LEAK_DETECTION,
    LeafKind.PSU_METRICS,
    LeafKind.LEGACY_POWER,
    LeafKind.LEGACY_THERMAL,
    LeafKind.ENVIRONMENT,
    LeafKind.THERMAL_METRICS,
)


@dataclass(frozen=True, slots=True)
class Leaf:
    path: str  # service path from @odata.id (no BMC prefix)
    kind: LeafKind
    chassis_order: int  # 0 for the first chassis; later chassis and CDUs rank lower


# -- sensor names --------------------------------------------------------------------------------------------

INLET, EXHAUST, COOLANT_SUPPLY, COOLANT_RETURN = "inlet", "exhaust", "coolant_supply", "coolant_return"
_LIQUID_WORDS = (
    "coolant",
    "liquid",
    "water",
    "loop",
    "cdu",
    "cold plate",
    "coldplate",
    "primary",
    "secondary",
)
# Physical contexts where an "inlet"/"outlet" temperature is the chassis air, not a component's own inlet.
_AIR_CONTEXTS = frozenset(
    {"Intake", "Exhaust", "Room", "SystemBoard", "Chassis", "Front", "Back", "Upper", "Lower", "Rack", "Fan"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _words(name: str) -> str:
    return " " + _CAMEL.sub(" ", name).replace("_", " ").replace("-", " ").lower() + " "


def classify_temperature(name: str | None, context: str | None) -> tuple[str, int] | None:
    """Which chassis field a free-form temperature sensor feeds, and how direct a match it is (0 best).

    ``Inlet Temp``, ``System Board Inlet``, ``Front Panel Intake`` -> inlet (0); ``Ambient`` -> inlet (1);
    ``Exhaust``/``Outlet`` -> exhaust; coolant/loop/CDU supply and return -> coolant fields. Component sensors
    (``CPU1 Temp``, ``PS1 Inlet`` on a power supply) map to nothing.
    """
    text = _words(name or "")
    if " delta " in text or " diff" in text or " dew " in text:
        return None
    if context == "LiquidInlet":
        return COOLANT_SUPPLY, 0
    if context == "LiquidOutlet":
        return COOLANT_RETURN, 0
    if any(word in text for word in _LIQUID_WORDS):
        if " supply " in text or " inlet " in text:
            return COOLANT_SUPPLY, 1
        if " return " in text or " outlet " in text:
            return COOLANT_RETURN, 1
        return None
    if context == "Intake":
        return INLET, 0
    if context == "Exhaust":
        return EXHAUST, 0
    if context is not None and context not in _AIR_CONTEXTS:
        return None
    if " inlet " in text or " intake " in text:
        return INLET, 0
    if " exhaust " in text or " outlet " in text:
        return EXHAUST, 0
    if " ambient " in text or context == "Room":
        return INLET, 1
    return None


# -- typed access ------------------------------------------------------------------------------------------


def _number(value: Any, url: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_payload(url, f"{key}: expected a number, got {type(value).__name__}")
    return float(value)


def _excerpt(doc: Mapping[str, Any], key: str, url: str) -> float | None:
    """A ``SensorExcerpt`` ``{"Reading": x, "DataSourceUri": ...}``; a bare number is accepted too."""
    value = doc.get(key)
    if isinstance(value, dict):
        return _number(value.get("Reading"), url, f"{key}.Reading")
    return _number(value, url, key)


def _object(doc: Mapping[str, Any], key: str, url: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_payload(url, f"{key}: expected an object, got {type(value).__name__}")
    return value


def _objects(doc: Mapping[str, Any], key: str, url: str) -> list[Mapping[str, Any]]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_payload(url, f"{key}: expected a list, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad_payload(url, f"{key}[{i}]: expected an object, got {type(item).__name__}")
    return value


def _text(doc: Mapping[str, Any], key: str, url: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_payload(url, f"{key}: expected a string, got {type(value).__name__}")
    return value


_HEALTH = {"OK": Health.OK, "Warning": Health.WARNING, "Critical": Health.CRITICAL}
HEALTH_ORDER = {Health.OK: 0, Health.WARNING: 1, Health.CRITICAL: 2}


def _present(doc: Mapping[str, Any], url: str, key: str = "Status") -> bool:
    """False for a slot the BMC lists but that holds nothing (State Absent)."""
    return _text(_object(doc, key, url), "State", url) != "Absent"


def _healths(doc: Mapping[str, Any], url: str, *, rollup: bool = False) -> list[Health]:
    status = _object(doc, "Status", url)
    if _text(status, "State", url) == "Absent":
        return []
    keys = ("Health", "HealthRollup") if rollup else ("Health",)
    found = []
    for key in keys:
        value = _text(status, key, url)
        if value in _HEALTH:
            found.append(_HEALTH[value])
    return found


def worst(healths: Iterable[Health]) -> Health | None:
    return max(healths, key=HEALTH_ORDER.__getitem__, default=None)


# -- components --------------------------------------------------------------------------------------------

_GONE_STATES = {"Absent": "absent", "UnavailableOffline": "offline"}
_REDFISH_HEALTH_TEXT = {Health.WARNING: "Warning", Health.CRITICAL: "Critical"}
_UNIT_TEXT = {"Cel": "C", "{rev}/min": "RPM", "RPM": "RPM", "%": "%", "Percent": "%", "L/min": "L/min"}


def reading_text(value: float | None, units: str | None) -> str:
    if value is None:
        return ""
    unit = _UNIT_TEXT.get(units or "", units or "")
    return f"{value:g} {unit}".strip()


def _component_name(doc: Mapping[str, Any], url: str, fallback: str) -> str:
    for key in ("Name", "FanName", "MemberId", "Id"):
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    return fallback


# -- accumulation ------------------------------------------------------------------------------------------

Rank = tuple[int, ...]


@dataclass(slots=True)
class _Loop:
    rank: Rank
    supply: float | None
    ret: float | None
    flow: float | None
    rated: float | None


@dataclass(slots=True)
class Findings:
    scalars: dict[str, list[tuple[Rank, float]]] = field(default_factory=dict)
    loops: list[_Loop] = field(default_factory=list)
    fans: dict[Rank, list[float]] = field(default_factory=dict)
    fan_minimums: list[tuple[Rank, float]] = field(default_factory=list)
    psu_input_w: list[float] = field(default_factory=list)
    health: list[Health] = field(default_factory=list)
    pump_health: list[Health] = field(default_factory=list)
    psu_health: list[Health] = field(default_factory=list)
    leak_states: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    components: dict[tuple[ComponentKind, str], tuple[Health, str]] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)  # components seen in place (their leaf path and name)
    was_present: frozenset[str] = frozenset()
    chassis_name: str | None = None
    gpu_readings: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)
    processors: dict[str, tuple[str, int | None, str | None]] = field(default_factory=dict)

    def component(
        self,
        doc: Mapping[str, Any],
        url: str,
        kind: ComponentKind,
        *,
        path: str,
        fallback: str,
        reading: str = "",
        also: Health | None = None,
    ) -> None:
        """Note one component: unhealthy (Warning/Critical), gone where it was in place, or fine."""
        name = _component_name(doc, url, fallback)
        status = _object(doc, "Status", url)
        state = _text(status, "State", url)
        key = f"{path}#{name}"
        health = worst([*_healths(doc, url), *([also] if also else [])])
        words: list[str] = []
        if state in _GONE_STATES:
            if state == "Absent" and key not in self.was_present:
                return  # an empty slot, as it always was
            health = worst([health or Health.WARNING, Health.WARNING])
            words.append(_GONE_STATES[state] + (" (was present)" if key in self.was_present else ""))
        else:
            self.present.add(key)
        if health is None or health is Health.OK:
            return
        text = ", ".join([_REDFISH_HEALTH_TEXT[health], *words, *([reading] if reading else [])])
        previous = self.components.get((kind, name))
        if previous is None or HEALTH_ORDER[previous[0]] < HEALTH_ORDER[health]:
            self.components[(kind, name)] = (health, f"{name}: {text}")

    def add(self, name: str, rank: Rank, value: float | None) -> None:
        if value is not None:
            self.scalars.setdefault(name, []).append((rank, value))

    def add_temperature(self, name: str | None, context: str | None, rank: Rank, value: float | None) -> None:
        target = classify_temperature(name, context)
        if target is not None and value is not None:
            field_name, name_rank = target
            self.add(field_name, (name_rank, *rank), value)

    def best(self, name: str) -> float | None:
        candidates = self.scalars.get(name)
        return min(candidates, key=lambda c: c[0])[1] if candidates else None


# Trust order of the kinds that can fill the same field (lower first).
_NEW, _LEGACY, _SENSOR = 0, 1, 2


def _read_chassis(doc: Mapping[str, Any], url: str, out: Findings, kind: ComponentKind, path: str) -> None:
    out.health.extend(_healths(doc, url, rollup=True))
    out.chassis_name = out.chassis_name or _component_name(doc, url, path.rsplit("/", 1)[-1])
    out.component(doc, url, kind, path=path, fallback=path.rsplit("/", 1)[-1])


def _read_thermal_metrics(doc: Mapping[str, Any], url: str, out: Findings, order: int) -> None:
    summary = _object(doc, "TemperatureSummaryCelsius", url)
    out.add(INLET, (0, _NEW, order), _excerpt(summary, "Intake", url))
    out.add(INLET, (1, _NEW, order), _excerpt(summary, "Ambient", url))
    out.add(EXHAUST, (0, _NEW, order), _excerpt(summary, "Exhaust", url))
    for i, reading in enumerate(_objects(doc, "TemperatureReadingsCelsius", url)):
        key = f"TemperatureReadingsCelsius[{i}]"
        name = _text(reading, "DeviceName", url)
        value = _number(reading.get("Reading"), url, f"{key}.Reading")
        out.add_temperature(name, _text(reading, "PhysicalContext", url), (_NEW, order), value)


def _read_fan(doc: Mapping[str, Any], url: str, out: Findings, order: int, path: str) -> None:
    speed = _object(doc, "SpeedPercent", url)
    rpm = _number(speed.get("SpeedRPM"), url, "SpeedPercent.SpeedRPM")
    percent = _number(speed.get("Reading"), url, "SpeedPercent.Reading")
    reading = reading_text(rpm, "RPM") if rpm is not None else reading_text(percent, "%")
    out.component(doc, url, ComponentKind.FAN, path=path, fallback="fan", reading=reading)
    if not _present(doc, url):
        return
    if rpm is not None:
        out.fans.setdefault((_NEW, order), []).append(rpm)


def _read_connector(doc: Mapping[str, Any], url: str, out: Findings, rank: Rank) -> None:
    if not _present(doc, url):
        return
    out.loops.append(
        _Loop(
            rank=rank,
            supply=_excerpt(doc, "SupplyTemperatureCelsius", url),
            ret=_excerpt(doc, "ReturnTemperatureCelsius", url),
            flow=_excerpt(doc, "FlowLitersPerMinute", url),
            rated=_number(doc.get("RatedFlowLitersPerMinute"), url, "RatedFlowLitersPerMinute"),
        )
    )


def _read_leak_detector(doc: Mapping[str, Any], url: str, out: Findings, path: str) -> None:
    state = _text(doc, "DetectorState", url)
    if state is not None:
        out.leak_states.append(state)
    detector = _HEALTH.get(state or "")
    reading = f"detector {state}" if detector is not None and detector is not Health.OK else ""
    out.component(
        doc, url, ComponentKind.LEAK_DETECTOR, path=path, fallback="leak detector", reading=reading, also=detector
    )


def _read_leak_detection(doc: Mapping[str, Any], url: str, out: Findings) -> None:
    for i, group in enumerate(_objects(doc, "LeakDetectorGroups", url)):
        for j, detector in enumerate(_objects(group, "Detectors", f"{url} LeakDetectorGroups[{i}]")):
            state = _text(detector, "DetectorState", f"{url} LeakDetectorGroups[{i}].Detectors[{j}]")
            if state is not None:
                out.leak_states.append(state)


def _read_environment(doc: Mapping[str, Any], url: str, out: Findings, order: int) -> None:
    out.add("power_w", (_NEW, order), _excerpt(doc, "PowerWatts", url))
    out.add(INLET, (1, _NEW, order), _excerpt(doc, "AmbientTemperatureCelsius", url))
    for i, fan in enumerate(_objects(doc, "FanSpeedsPercent", url)):
        rpm = _number(fan.get("SpeedRPM"), url, f"FanSpeedsPercent[{i}].SpeedRPM")
        if rpm is not None:
            out.fans.setdefault((_NEW + 1, order), []).append(rpm)


def _read_legacy_thermal(doc: Mapping[str, Any], url: str, out: Findings, order: int) -> None:
    for i, temp in enumerate(_objects(doc, "Temperatures", url)):
        key = f"Temperatures[{i}]"
        value = _number(temp.get("ReadingCelsius"), url, f"{key}.ReadingCelsius")
        out.component(temp, url, ComponentKind.SENSOR, path=url, fallback=key, reading=reading_text(value, "Cel"))
        if not _present(temp, url, "Status"):
            continue
        out.add_temperature(_text(temp, "Name", url), _text(temp, "PhysicalContext", url), (_LEGACY, order), value)
    for i, fan in enumerate(_objects(doc, "Fans", url)):
        key = f"Fans[{i}]"
        units = _text(fan, "ReadingUnits", url)
        rpm = _number(fan.get("ReadingRPM"), url, f"{key}.ReadingRPM")  # Thermal v1_0 spelled it this way
        if rpm is None and units in (None, "RPM"):
            rpm = _number(fan.get("Reading"), url, f"{key}.Reading")
        shown = (
            reading_text(rpm, "RPM")
            if rpm is not None
            else reading_text(_number(fan.get("Reading"), url, f"{key}.Reading"), units)
        )
        out.component(fan, url, ComponentKind.FAN, path=url, fallback=key, reading=shown)
        if not _present(fan, url):
            continue
        if rpm is not None:
            out.fans.setdefault((_LEGACY, order), []).append(rpm)
            minimum = _number(fan.get("LowerThresholdCritical"), url, f"{key}.LowerThresholdCritical")
            if minimum is not None:
                out.fan_minimums.append(((_LEGACY, order), minimum))


def _read_legacy_power(doc: Mapping[str, Any], url: str, out: Findings, order: int) -> None:
    for i, control in enumerate(_objects(doc, "PowerControl", url)):
        consumed = _number(control.get("PowerConsumedWatts"), url, f"PowerControl[{i}].PowerConsumedWatts")
        if consumed is not None:
            out.add("power_w", (_LEGACY, order), consumed)
            break  # later entries are sub-domains (CPU, memory) of the first on BMCs that list several
    for i, psu in enumerate(_objects(doc, "PowerSupplies", url)):
        out.psu_health.extend(_healths(psu, url))
        out.component(psu, url, ComponentKind.POWER_SUPPLY, path=url, fallback=f"PowerSupplies[{i}]")
        watts = _number(psu.get("PowerInputWatts"), url, f"PowerSupplies[{i}].PowerInputWatts")
        if watts is not None and order == 0:
            out.psu_input_w.append(watts)


def _read_psu_metrics(doc: Mapping[str, Any], url: str, out: Findings, order: int) -> None:
    watts = _excerpt(doc, "InputPowerWatts", url)
    if watts is not None and order == 0:
        out.psu_input_w.append(watts)


_FLOW_TYPES = frozenset({"LiquidFlow", "LiquidFlowLPM"})
_FAN_UNITS = frozenset({"{rev}/min", "RPM"})


def gpu_of_sensor(doc: Mapping[str, Any], url: str) -> str | None:
    """The Processor a GPU sensor belongs to (an HGX HMC's ``RelatedItem``), or None for other sensors."""
    if _text(doc, "PhysicalContext", url) != "GPU":
        return None
    for item in _objects(doc, "RelatedItem", url):
        target = item.get("@odata.id")
        if isinstance(target, str) and "/Processors/" in target:
            return target.split("#", 1)[0].rstrip("/")
    return None


def _read_gpu_sensor(doc: Mapping[str, Any], url: str, out: Findings, processor: str) -> None:
    value = _number(doc.get("Reading"), url, "Reading")
    if value is None:
        return
    reading_type = _text(doc, "ReadingType", url)
    units = _text(doc, "ReadingUnits", url)
    name = _text(doc, "Id", url) or _text(doc, "Name", url) or url
    memory = " dram " in _words(name) or " hbm " in _words(name)
    if reading_type == "Temperature" and units in (None, "Cel"):
        target = "memory_temperature_c" if memory else "temperature_c"
    elif reading_type == "Power" and units in (None, "W") and not memory:
        target = "power_w"
    else:
        return
    out.gpu_readings.setdefault(processor, {}).setdefault(target, []).append((name, value))


def _read_processor(doc: Mapping[str, Any], url: str, out: Findings, path: str) -> None:
    out.component(doc, url, ComponentKind.GPU, path=path, fallback=path.rsplit("/", 1)[-1])
    uuid = _text(doc, "UUID", url)
    if not uuid:
        return
    ident = _text(doc, "Id", url) or path.rsplit("/", 1)[-1]
    number = re.search(r"(\d+)$", ident)
    index = int(number.group(1)) - 1 if number and ident.upper().startswith("GPU_SXM") else None
    if number and index is None:
        index = int(number.group(1))
    # nvidia-smi and DCGM spell a GPU's UUID "GPU-<uuid>"; an HMC gives the bare UUID
    out.processors[path] = (uuid if uuid.startswith("GPU-") else f"GPU-{uuid}", index, _text(doc, "Model", url))


def _read_sensor(doc: Mapping[str, Any], url: str, out: Findings, order: int, path: str = "") -> None:
    reading_type = _text(doc, "ReadingType", url)
    units = _text(doc, "ReadingUnits", url)
    name = _text(doc, "Name", url) or _text(doc, "Id", url)
    context = _text(doc, "PhysicalContext", url)
    value = _number(doc.get("Reading"), url, "Reading")
    out.component(
        doc, url, ComponentKind.SENSOR, path=path or url, fallback="sensor", reading=reading_text(value, units)
    )
    if not _present(doc, url):
        return
    processor = gpu_of_sensor(doc, url)
    if processor is not None:
        _read_gpu_sensor(doc, url, out, processor)
        return
    rank = (_SENSOR, order)
    if reading_type == "Temperature" or units in ("Cel", "[degF]"):
        if value is not None and units == "[degF]":
            value = (value - 32.0) * 5.0 / 9.0
        out.add_temperature(name, context, rank, value)
    elif reading_type in _FLOW_TYPES or units == "L/min":
        if units in (None, "L/min"):
            text = _words(name or "")
            # a CDU's rack-side (secondary) loop is the one the GPU nodes sit on
            loop_rank = 2 if " primary " in text else 0 if " secondary " in text else 1
            out.add("coolant_flow_lpm", (loop_rank, *rank), value)
    elif reading_type == "Power" and units in (None, "W", "kW"):
        text = _words(name or "")
        whole_node = context == "Chassis" or (
            context is None and re.search(r" (total|system|chassis|node) ", text) is not None
        )
        if whole_node and value is not None:
            out.add("power_w", rank, value * 1000.0 if units == "kW" else value)
    elif value is not None and units in _FAN_UNITS:
        out.fans.setdefault(rank, []).append(value)
        lower = _object(_object(doc, "Thresholds", url), "LowerCritical", url)
        minimum = _number(lower.get("Reading"), url, "Thresholds.LowerCritical.Reading")
        if minimum is not None:
            out.fan_minimums.append((rank, minimum))


def sensor_is_relevant(doc: Mapping[str, Any], url: str) -> bool:
    """Whether a Sensor feeds any chassis or GPU field or is unhealthy now (most BMC sensors are voltages,
    currents, CPU temps)."""
    findings = Findings()
    _read_sensor(doc, url, findings, 0)
    return bool(findings.scalars or findings.fans or findings.components or findings.gpu_readings)


def _conditions(doc: Mapping[str, Any], url: str, out: Findings) -> None:
    status = doc.get("Status")
    if not isinstance(status, dict):
        return
    for i, condition in enumerate(_objects(status, "Conditions", url)):
        message_id = _text(condition, "MessageId", f"{url} Status.Conditions[{i}]")
        # CDUs list every subsystem with Severity OK as a condition; an operator needs only the problems
        if message_id and condition.get("Severity") != "OK" and message_id not in out.conditions:
            out.conditions.append(message_id)


def read_leaf(leaf: Leaf, doc: Mapping[str, Any], url: str, out: Findings) -> None:
    kind, order = leaf.kind, leaf.chassis_order
    _conditions(doc, url, out)
    if kind is LeafKind.CHASSIS:
        _read_chassis(doc, url, out, ComponentKind.CHASSIS, leaf.path)
    elif kind is LeafKind.COOLING_UNIT:
        _read_chassis(doc, url, out, ComponentKind.COOLING_UNIT, leaf.path)
    elif kind is LeafKind.THERMAL_METRICS:
        _read_thermal_metrics(doc, url, out, order)
    elif kind is LeafKind.FAN:
        _read_fan(doc, url, out, order, leaf.path)
    elif kind is LeafKind.COOLANT_CONNECTOR:
        _read_connector(doc, url, out, (0, order))
    elif kind is LeafKind.CDU_SECONDARY_CONNECTOR:
        _read_connector(doc, url, out, (1, order))
    elif kind is LeafKind.CDU_PRIMARY_CONNECTOR:
        _read_connector(doc, url, out, (2, order))
    elif kind is LeafKind.PUMP:
        out.pump_health.extend(_healths(doc, url))
        speed = reading_text(_excerpt(doc, "PumpSpeedPercent", url), "%")
        out.component(doc, url, ComponentKind.PUMP, path=leaf.path, fallback="pump", reading=speed)
    elif kind is LeafKind.LEAK_DETECTOR:
        _read_leak_detector(doc, url, out, leaf.path)
    elif kind is LeafKind.LEAK_DETECTION:
        _read_leak_detection(doc, url, out)
    elif kind is LeafKind.POWER_SUPPLY:
        out.psu_health.extend(_healths(doc, url))
        out.component(doc, url, ComponentKind.POWER_SUPPLY, path=leaf.path, fallback="power supply")
    elif kind is LeafKind.PSU_METRICS:
        _read_psu_metrics(doc, url, out, order)
    elif kind is LeafKind.ENVIRONMENT:
        _read_environment(doc, url, out, order)
    elif kind is LeafKind.LEGACY_THERMAL:
        _read_legacy_thermal(doc, url, out, order)
    elif kind is LeafKind.LEGACY_POWER:
        _read_legacy_power(doc, url, out, order)
    elif kind is LeafKind.SENSOR:
        _read_sensor(doc, url, out, order, leaf.path)
    elif kind is LeafKind.PROCESSOR:
        _read_processor(doc, url, out, leaf.path)
