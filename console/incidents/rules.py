"""Incident rules as data: loaded from TOML, validated up front, overridable per site or provider.

A rule names a detector (``kind``), the signal it reads, thresholds per severity, how long a condition must hold
before it fires (``for_s``), the hysteresis that keeps it from flapping, and how long it must stay clear before the
incident resolves itself (``clear_s``). Every problem in a rules file is reported at once, each naming the file,
the rule and the key, because an operator editing thresholds at 3 a.m. should fix them in one pass.

Each rule is checked against the detector registry (``console.incidents.detectors.DETECTORS``); the ``Rule``
value itself lives in ``console.incidents.rule``, which the detectors import without importing this loader.
"""

from __future__ import annotations

import dataclasses
import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import resources
from console.incidents.detectors import DETECTORS, SignalKind
from console.incidents.model import Severity
from console.incidents.rule import Direction, Rule

DEFAULT_RULES_PATH = Path(resources.__file__).resolve().parent / "rules" / "default.toml"

TITLE_FIELDS = frozenset(
    {"node", "site", "gpu_index", "gpu_uuid", "code", "value", "severity", "mnemonic", "detail", "signal"}
)
_RULE_KEYS = frozenset(
    {
        "id",
        "kind",
        "category",
        "signal",
        "unit",
        "direction",
        "thresholds",
        "severity",
        "for_s",
        "hysteresis",
        "clear_s",
        "title",
        "action",
        "params",
        "enabled",
        "description",
    }
)
_EVIDENCE_KEYS = frozenset({"before_s", "full_rate_s", "older_every_s", "after_s", "batch_s", "min_spacing_s"})
_ENGINE_KEYS = frozenset({"update_every_s"})
OVERRIDE_COMMON_KEYS = frozenset({"for_s", "hysteresis", "clear_s", "enabled", "severity"})


class RuleError(ValueError):
    """Rules that cannot be used; ``problems`` holds one line per problem, each naming file, rule and key."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class EvidenceSettings:
    before_s: float = 300.0  # samples kept per node, and attached to an incident when it opens
    full_rate_s: float = 60.0  # newest samples kept at full rate; older ones thinned to one per older_every_s
    older_every_s: float = 15.0
    after_s: float = 300.0  # keep recording this long after an incident opens
    batch_s: float = 10.0  # EVIDENCE changes are emitted at most this often per incident
    min_spacing_s: float = 1.0  # never more than one point per this many seconds


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    evidence: EvidenceSettings = EvidenceSettings()
    update_every_s: float = 10.0  # an UPDATED change for last_seen/peak alone at most this often per incident
    overrides: tuple[tuple[str, str, str, float], ...] = ()
    origin: str = ""
    _cache: dict[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict, compare=False, repr=False)

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def for_scope(self, site: str, provider: str) -> tuple[Rule, ...]:
        """The rules as they apply at one site: defaults, then provider overrides, then site overrides."""
        key = (site, provider)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        changes: dict[str, dict[str, float]] = {}
        for scope in (f"provider:{provider}", f"site:{site}"):
            for o_scope, rule_id, name, value in self.overrides:
                if o_scope == scope:
                    changes.setdefault(rule_id, {})[name] = value
        resolved = tuple(_apply(rule, changes[rule.id]) if rule.id in changes else rule for rule in self.rules)
        self._cache[key] = resolved
        return resolved


def _apply(rule: Rule, changes: Mapping[str, float]) -> Rule:
    updates: dict[str, Any] = {}
    thresholds = dict(rule.thresholds)
    params = dict(rule.params)
    for name, value in changes.items():
        if name in ("for_s", "hysteresis", "clear_s"):
            updates[name] = float(value)
        elif name == "enabled":
            updates[name] = bool(value)
        elif name == "severity":
            updates[name] = Severity(int(value))
        elif name.upper() in Severity.__members__:
            thresholds[Severity[name.upper()]] = float(value)
        else:
            params[name] = float(value)
    updates["thresholds"] = _sorted_thresholds(thresholds)
    updates["params"] = params
    return dataclasses.replace(rule, **updates)


def _sorted_thresholds(thresholds: Mapping[Severity, float]) -> tuple[tuple[Severity, float], ...]:
    return tuple(sorted(thresholds.items(), key=lambda item: -item[0]))


# --- loading --------------------------------------------------------------------------------------------------


def _number(problems: list[str], where: str, value: Any, *, minimum: float | None = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where}: expected a number, got {type(value).__name__}")
        return 0.0
    if minimum is not None and value < minimum:
        problems.append(f"{where}: must be >= {minimum:g}, got {value}")
    return float(value)


def _parse_rule(problems: list[str], where: str, data: Any, ids: set[str]) -> Rule | None:
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a table")
        return None
    rule_id = data.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        problems.append(f"{where}.id: missing or not a string")
        return None
    where = f"{where} ({rule_id})"
    before = len(problems)
    if rule_id in ids:
        problems.append(f"{where}.id: duplicate rule id")
    ids.add(rule_id)
    for key in sorted(set(data) - _RULE_KEYS):
        problems.append(f"{where}.{key}: unknown key")
    kind = data.get("kind")
    detector = DETECTORS.get(kind) if isinstance(kind, str) else None
    if detector is None:
        problems.append(f"{where}.kind: unknown detector {kind!r} (known: {', '.join(sorted(DETECTORS))})")
    texts: dict[str, str] = {}
    for key in ("category", "signal", "unit", "title", "action"):
        value = data.get(key, "")
        if not isinstance(value, str):
            problems.append(f"{where}.{key}: expected a string")
            value = ""
        texts[key] = value
    for key in ("category", "title"):
        if not texts[key]:
            problems.append(f"{where}.{key}: missing")
    for _, name, _, _ in string.Formatter().parse(texts["title"]) if texts["title"] else ():
        if name is not None and name.split(".")[0].split("[")[0] not in TITLE_FIELDS:
            problems.append(f"{where}.title: unknown placeholder {{{name}}} (known: {', '.join(sorted(TITLE_FIELDS))})")
    direction = None
    if "direction" in data:
        try:
            direction = Direction(data["direction"])
        except ValueError:
            problems.append(f"{where}.direction: expected 'above' or 'below', got {data['direction']!r}")
    thresholds: dict[Severity, float] = {}
    raw_thresholds = data.get("thresholds", {})
    if not isinstance(raw_thresholds, dict):
        problems.append(f"{where}.thresholds: expected a table of severity = number")
        raw_thresholds = {}
    for name, value in raw_thresholds.items():
        if name.upper() not in Severity.__members__:
            problems.append(f"{where}.thresholds.{name}: unknown severity (info, warning, major, critical)")
            continue
        thresholds[Severity[name.upper()]] = _number(problems, f"{where}.thresholds.{name}", value, minimum=None)
    severity = Severity.WARNING
    if "severity" in data:
        try:
            severity = Severity.parse(str(data["severity"]))
        except ValueError as exc:
            problems.append(f"{where}.severity: {exc}")
    params: dict[str, float] = {}
    raw_params = data.get("params", {})
    if not isinstance(raw_params, dict):
        problems.append(f"{where}.params: expected a table")
        raw_params = {}
    for name, value in raw_params.items():
        params[name] = _number(problems, f"{where}.params.{name}", value, minimum=None)
    timing = {
        key: _number(problems, f"{where}.{key}", data.get(key, default))
        for key, default in (("for_s", 0.0), ("hysteresis", 0.0), ("clear_s", 60.0))
    }
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{where}.enabled: expected true or false")
    if detector is not None:
        if detector.thresholds and not thresholds:
            problems.append(f"{where}.thresholds: detector {kind!r} needs at least one threshold")
        if detector.thresholds and direction is None:
            problems.append(f"{where}.direction: detector {kind!r} needs 'above' or 'below'")
        if detector.thresholds and direction is not None and thresholds:
            ordered = _sorted_thresholds(thresholds)
            values = [thr for _, thr in ordered]
            monotone = values == sorted(values, reverse=direction is Direction.ABOVE)
            if not monotone:
                problems.append(f"{where}.thresholds: worse severities must have {direction.value}-er thresholds")
        for name in sorted(detector.params - set(params)):
            problems.append(f"{where}.params.{name}: missing (detector {kind!r} needs it)")
        problem = detector.check_signal(texts["signal"])
        if problem:
            problems.append(f"{where}.signal: {problem}")
        if detector.signal is SignalKind.NONE and texts["signal"]:
            pass  # informative only
    if len(problems) > before:
        return None
    return Rule(
        id=rule_id,
        kind=str(kind),
        category=texts["category"],
        signal=texts["signal"],
        unit=texts["unit"],
        direction=direction,
        thresholds=_sorted_thresholds(thresholds),
        severity=severity,
        for_s=timing["for_s"],
        hysteresis=timing["hysteresis"],
        clear_s=timing["clear_s"],
        title=texts["title"],
        action=texts["action"],
        params=params,
        enabled=bool(enabled),
    )


def _check_overrides(
    problems: list[str], rules: Iterable[Rule], overrides: Iterable[tuple[str, str, str, float]]
) -> None:
    by_id = {rule.id: rule for rule in rules}
    for i, override in enumerate(overrides):
        try:
            scope, rule_id, key, value = override
        except (TypeError, ValueError):
            problems.append(f"rule_overrides[{i}]: expected (scope, rule, key, value), got {override!r}")
            continue
        where = f"rule_overrides[{i}] ({scope}, {rule_id}, {key})"
        if not isinstance(scope, str) or not scope.startswith(("site:", "provider:")) or scope[-1] == ":":
            problems.append(f"{where}: scope must be 'site:NAME' or 'provider:NAME', got {scope!r}")
        rule = by_id.get(rule_id)
        if rule is None:
            problems.append(f"{where}: unknown rule {rule_id!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where}: value must be a number, got {value!r}")
            continue
        severity_key = key.upper() in Severity.__members__
        if key in OVERRIDE_COMMON_KEYS or key in rule.params or (severity_key and rule.thresholds):
            if key in ("for_s", "hysteresis", "clear_s") and value < 0:
                problems.append(f"{where}: must be >= 0, got {value}")
            if key == "severity" and int(value) not in {s.value for s in Severity}:
                problems.append(f"{where}: severity must be 1 (info) to 4 (critical), got {value}")
            continue
        known = sorted(
            OVERRIDE_COMMON_KEYS | set(rule.params) | ({s.label for s in Severity} if rule.thresholds else set())
        )
        problems.append(f"{where}: unknown key {key!r} for this rule (known: {', '.join(known)})")


def load_rules(path: Path | None = None, overrides: Iterable[tuple[str, str, str, float]] = ()) -> RuleSet:
    """Read a rules file (default: resources/rules/default.toml) and validate it with the fleet's overrides.

    Raises ``RuleError`` listing every problem, each prefixed with the file, rule and key.
    """
    path = path or DEFAULT_RULES_PATH
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise RuleError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleError([f"{path}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    for key in sorted(set(data) - {"rules", "evidence", "engine"}):
        problems.append(f"{path}: {key}: unknown top-level key")
    evidence_values: dict[str, float] = {}
    engine_values: dict[str, float] = {}
    for section, allowed, target in (
        ("evidence", _EVIDENCE_KEYS, evidence_values),
        ("engine", _ENGINE_KEYS, engine_values),
    ):
        table = data.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{path}: {section}: expected a table")
            continue
        for key, value in table.items():
            if key not in allowed:
                problems.append(f"{path}: {section}.{key}: unknown key")
            else:
                target[key] = _number(problems, f"{path}: {section}.{key}", value)
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.append(f"{path}: rules: expected a non-empty array of tables ([[rules]])")
        raw_rules = []
    ids: set[str] = set()
    rules = [
        rule
        for i, raw in enumerate(raw_rules)
        if (rule := _parse_rule(problems, f"{path}: rules[{i}]", raw, ids)) is not None
    ]
    overrides = tuple(overrides)
    _check_overrides(problems, rules, overrides)
    if problems:
        raise RuleError(problems)
    return RuleSet(
        rules=tuple(rules),
        evidence=EvidenceSettings(**evidence_values),
        update_every_s=engine_values.get("update_every_s", 10.0),
        overrides=overrides,
        origin=str(path),
    )
