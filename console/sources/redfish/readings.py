"""Turn fetched Redfish resources into one ``ChassisSample``.

Each cached leaf has a kind (what schema it follows); ``chassis_from_leaves`` reads every leaf into a
``_Findings`` accumulator and then picks, per field, the most trustworthy reading: the newer model
(ThermalSubsystem, PowerSubsystem, EnvironmentMetrics) before the legacy Thermal/Power resources, both before
loose Sensors, and the first chassis before later ones. Wrong-typed values raise
``SourceError(BAD_PAYLOAD)`` naming the URL and key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from console.samples.schema import ChassisSample, Health
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
_ORDER = {Health.OK: 0, Health.WARNING: 1, Health.CRITICAL: 2}


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
    return max(healths, key=_ORDER.__getitem__, default=None)


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
class _Findings:
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


def _read_chassis(doc: Mapping[str, Any], url: str, out: _Findings) -> None:
    out.health.extend(_healths(doc, url, rollup=True))


def _read_thermal_metrics(doc: Mapping[str, Any], url: str, out: _Findings, order: int) -> None:
    summary = _object(doc, "TemperatureSummaryCelsius", url)
    out.add(INLET, (0, _NEW, order), _excerpt(summary, "Intake", url))
    out.add(INLET, (1, _NEW, order), _excerpt(summary, "Ambient", url))
    out.add(EXHAUST, (0, _NEW, order), _excerpt(summary, "Exhaust", url))
    for i, reading in enumerate(_objects(doc, "TemperatureReadingsCelsius", url)):
        key = f"TemperatureReadingsCelsius[{i}]"
        name = _text(reading, "DeviceName", url)
        value = _number(reading.get("Reading"), url, f"{key}.Reading")
        out.add_temperature(name, _text(reading, "PhysicalContext", url), (_NEW, order), value)


def _read_fan(doc: Mapping[str, Any], url: str, out: _Findings, order: int) -> None:
    if not _present(doc, url):
        return
    speed = _object(doc, "SpeedPercent", url)
    rpm = _number(speed.get("SpeedRPM"), url, "SpeedPercent.SpeedRPM")
    if rpm is not None:
        out.fans.setdefault((_NEW, order), []).append(rpm)


def _read_connector(doc: Mapping[str, Any], url: str, out: _Findings, rank: Rank) -> None:
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


def _read_leak_detector(doc: Mapping[str, Any], url: str, out: _Findings) -> None:
    state = _text(doc, "DetectorState", url)
    if state is not None:
        out.leak_states.append(state)


def _read_leak_detection(doc: Mapping[str, Any], url: str, out: _Findings) -> None:
    for i, group in enumerate(_objects(doc, "LeakDetectorGroups", url)):
        for j, detector in enumerate(_objects(group, "Detectors", f"{url} LeakDetectorGroups[{i}]")):
            state = _text(detector, "DetectorState", f"{url} LeakDetectorGroups[{i}].Detectors[{j}]")
            if state is not None:
                out.leak_states.append(state)


def _read_environment(doc: Mapping[str, Any], url: str, out: _Findings, order: int) -> None:
    out.add("power_w", (_NEW, order), _excerpt(doc, "PowerWatts", url))
    out.add(INLET, (1, _NEW, order), _excerpt(doc, "AmbientTemperatureCelsius", url))
    for i, fan in enumerate(_objects(doc, "FanSpeedsPercent", url)):
        rpm = _number(fan.get("SpeedRPM"), url, f"FanSpeedsPercent[{i}].SpeedRPM")
        if rpm is not None:
            out.fans.setdefault((_NEW + 1, order), []).append(rpm)


def _read_legacy_thermal(doc: Mapping[str, Any], url: str, out: _Findings, order: int) -> None:
    for i, temp in enumerate(_objects(doc, "Temperatures", url)):
        key = f"Temperatures[{i}]"
        if not _present(temp, url, "Status"):
            continue
        value = _number(temp.get("ReadingCelsius"), url, f"{key}.ReadingCelsius")
        out.add_temperature(_text(temp, "Name", url), _text(temp, "PhysicalContext", url), (_LEGACY, order), value)
    for i, fan in enumerate(_objects(doc, "Fans", url)):
        key = f"Fans[{i}]"
        if not _present(fan, url):
            continue
        units = _text(fan, "ReadingUnits", url)
        rpm = _number(fan.get("ReadingRPM"), url, f"{key}.ReadingRPM")  # Thermal v1_0 spelled it this way
        if rpm is None and units in (None, "RPM"):
            rpm = _number(fan.get("Reading"), url, f"{key}.Reading")
        if rpm is not None:
            out.fans.setdefault((_LEGACY, order), []).append(rpm)
            minimum = _number(fan.get("LowerThresholdCritical"), url, f"{key}.LowerThresholdCritical")
            if minimum is not None:
                out.fan_minimums.append(((_LEGACY, order), minimum))


def _read_legacy_power(doc: Mapping[str, Any], url: str, out: _Findings, order: int) -> None:
    for i, control in enumerate(_objects(doc, "PowerControl", url)):
        consumed = _number(control.get("PowerConsumedWatts"), url, f"PowerControl[{i}].PowerConsumedWatts")
        if consumed is not None:
            out.add("power_w", (_LEGACY, order), consumed)
            break  # later entries are sub-domains (CPU, memory) of the first on BMCs that list several
    for i, psu in enumerate(_objects(doc, "PowerSupplies", url)):
        out.psu_health.extend(_healths(psu, url))
        watts = _number(psu.get("PowerInputWatts"), url, f"PowerSupplies[{i}].PowerInputWatts")
        if watts is not None and order == 0:
            out.psu_input_w.append(watts)


def _read_psu_metrics(doc: Mapping[str, Any], url: str, out: _Findings, order: int) -> None:
    watts = _excerpt(doc, "InputPowerWatts", url)
    if watts is not None and order == 0:
        out.psu_input_w.append(watts)


_FLOW_TYPES = frozenset({"LiquidFlow", "LiquidFlowLPM"})
_FAN_UNITS = frozenset({"{rev}/min", "RPM"})


def _read_sensor(doc: Mapping[str, Any], url: str, out: _Findings, order: int) -> None:
    if not _present(doc, url):
        return
    reading_type = _text(doc, "ReadingType", url)
    units = _text(doc, "ReadingUnits", url)
    name = _text(doc, "Name", url) or _text(doc, "Id", url)
    context = _text(doc, "PhysicalContext", url)
    value = _number(doc.get("Reading"), url, "Reading")
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
    """Whether a Sensor feeds any chassis field (most BMC sensors are voltages, currents, CPU temps)."""
    findings = _Findings()
    _read_sensor(doc, url, findings, 0)
    return bool(findings.scalars or findings.fans)


def _conditions(doc: Mapping[str, Any], url: str, out: _Findings) -> None:
    status = doc.get("Status")
    if not isinstance(status, dict):
        return
    for i, condition in enumerate(_objects(status, "Conditions", url)):
        message_id = _text(condition, "MessageId", f"{url} Status.Conditions[{i}]")
        # CDUs list every subsystem with Severity OK as a condition; an operator needs only the problems
        if message_id and condition.get("Severity") != "OK" and message_id not in out.conditions:
            out.conditions.append(message_id)


def _read(leaf: Leaf, doc: Mapping[str, Any], url: str, out: _Findings) -> None:
    kind, order = leaf.kind, leaf.chassis_order
    _conditions(doc, url, out)
    if kind is LeafKind.CHASSIS or kind is LeafKind.COOLING_UNIT:
        _read_chassis(doc, url, out)
    elif kind is LeafKind.THERMAL_METRICS:
        _read_thermal_metrics(doc, url, out, order)
    elif kind is LeafKind.FAN:
        _read_fan(doc, url, out, order)
    elif kind is LeafKind.COOLANT_CONNECTOR:
        _read_connector(doc, url, out, (0, order))
    elif kind is LeafKind.CDU_SECONDARY_CONNECTOR:
        _read_connector(doc, url, out, (1, order))
    elif kind is LeafKind.CDU_PRIMARY_CONNECTOR:
        _read_connector(doc, url, out, (2, order))
    elif kind is LeafKind.PUMP:
        out.pump_health.extend(_healths(doc, url))
    elif kind is LeafKind.LEAK_DETECTOR:
        _read_leak_detector(doc, url, out)
    elif kind is LeafKind.LEAK_DETECTION:
        _read_leak_detection(doc, url, out)
    elif kind is LeafKind.POWER_SUPPLY:
        out.psu_health.extend(_healths(doc, url))
    elif kind is LeafKind.PSU_METRICS:
        _read_psu_metrics(doc, url, out, order)
    elif kind is LeafKind.ENVIRONMENT:
        _read_environment(doc, url, out, order)
    elif kind is LeafKind.LEGACY_THERMAL:
        _read_legacy_thermal(doc, url, out, order)
    elif kind is LeafKind.LEGACY_POWER:
        _read_legacy_power(doc, url, out, order)
    elif kind is LeafKind.SENSOR:
        _read_sensor(doc, url, out, order)


# -- choosing ------------------------------------------------------------------------------------------------


def _coolant(findings: _Findings) -> tuple[float | None, float | None, float | None, float | None]:
    """Supply, return, flow, rated flow from the most direct loops (cold plates, then a CDU's rack side).

    Among several loops of one rank the hottest supply and return are shown, and flow and rated flow come as a
    pair from the loop with the least flow relative to its rating: the loop an operator must look at first.
    """
    supply = ret = flow = rated = None
    ranks = sorted({loop.rank[0] for loop in findings.loops})
    for rank in ranks:
        group = [loop for loop in findings.loops if loop.rank[0] == rank]
        supplies = [loop.supply for loop in group if loop.supply is not None]
        returns = [loop.ret for loop in group if loop.ret is not None]
        if supply is None and supplies:
            supply = max(supplies)
        if ret is None and returns:
            ret = max(returns)
        if flow is None and rated is None:
            paired = [loop for loop in group if loop.flow is not None and loop.rated]
            if paired:
                starved = min(paired, key=lambda loop: (loop.flow or 0.0) / (loop.rated or 1.0))
                flow, rated = starved.flow, starved.rated
            else:
                flows = [loop.flow for loop in group if loop.flow is not None]
                rateds = [loop.rated for loop in group if loop.rated is not None]
                flow = min(flows) if flows else None
                rated = min(rateds) if rateds else None
    if supply is None:
        supply = findings.best(COOLANT_SUPPLY)
    if ret is None:
        ret = findings.best(COOLANT_RETURN)
    if flow is None:
        flow = findings.best("coolant_flow_lpm")
    return supply, ret, flow, rated


def chassis_from_leaves(fetched: Sequence[tuple[Leaf, Mapping[str, Any], str]]) -> ChassisSample:
    """The chassis sample from ``(leaf, document, url)`` triples."""
    findings = _Findings()
    for leaf, doc, url in fetched:
        _read(leaf, doc, url, findings)
    supply, ret, flow, rated = _coolant(findings)
    fans = findings.fans[min(findings.fans)] if findings.fans else None
    fan_rank = min(findings.fans) if findings.fans else None
    minimums = [value for rank, value in findings.fan_minimums if rank == fan_rank]
    power = findings.best("power_w")
    if power is None and findings.psu_input_w:
        power = sum(findings.psu_input_w)
    leak_states = [state for state in findings.leak_states if state != "Absent"]
    return ChassisSample(
        inlet_c=findings.best(INLET),
        exhaust_c=findings.best(EXHAUST),
        coolant_supply_c=supply,
        coolant_return_c=ret,
        coolant_flow_lpm=flow,
        coolant_flow_rated_lpm=rated,
        leak_detected=any(state != "OK" for state in leak_states) if leak_states else None,
        fans_rpm=tuple(fans) if fans else None,
        fans_min_rpm=max(minimums) if minimums else None,
        power_w=power,
        health=worst(findings.health),
        pump_health=worst(findings.pump_health),
        psu_health=worst(findings.psu_health),
        conditions=tuple(findings.conditions),
    )
