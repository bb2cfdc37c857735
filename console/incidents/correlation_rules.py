"""Correlation rules as data: which incident is the cause of which, and which causes several GPUs or nodes share.

Loaded from TOML (``resources/rules/correlation.toml``) and validated up front like the incident rules: every
problem is reported at once, each naming the file, the entry and the key; unknown keys are errors. With
``rule_ids`` the loader also checks that every rule a correlation names exists (a typo would silently disable a
correlation otherwise). ``console.incidents.correlation`` applies the rules; this module only says what they are.
"""

from __future__ import annotations

import dataclasses
import functools
import string
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import resources
from console.config.fleet import TOPOLOGY_KEYS
from console.incidents.rules import RuleSet

DEFAULT_CORRELATION_PATH = Path(resources.__file__).resolve().parent / "rules" / "correlation.toml"

NODE_KEY = "node"  # a group "by node": members are GPU incidents of one node
GROUP_BY_KEYS = (NODE_KEY, *TOPOLOGY_KEYS)
WITHIN = ("gpu", "node")
ANY = "*"
TITLE_FIELDS = frozenset({"count", "name", "scope", "site", "rules"})

_TOP_KEYS = frozenset({"settings", "causes", "groups"})
_SETTINGS_KEYS = frozenset({"xid_burst_gap_s", "group_id_window_s"})
_CAUSE_KEYS = frozenset({"id", "within", "causes", "symptoms", "before_s", "after_s", "while_open", "adopt_open"})
_GROUP_KEYS = frozenset({"id", "by", "members", "min_members", "window_s", "category", "title", "action"})


class CorrelationError(ValueError):
    """Correlation rules that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class CauseRule:
    """Causes (best first) and the symptoms they explain, on one GPU or one node."""

    id: str
    within: str  # "gpu" | "node"
    causes: tuple[str, ...]  # rule ids or "rule:code", best first
    symptoms: tuple[str, ...]  # rule ids or "rule:code"; "*" = any other incident
    before_s: float = 0.0
    after_s: float = 0.0
    while_open: bool = False
    adopt_open: bool = False

    def rank(self, rule: str, code: str) -> int | None:
        """0.. for a cause (its place in ``causes``), ``len(causes)`` for a symptom, None when it is neither."""
        for i, ref in enumerate(self.causes):
            if ref in (rule, f"{rule}:{code}"):
                return i
        if ANY in self.symptoms or rule in self.symptoms or f"{rule}:{code}" in self.symptoms:
            return len(self.causes)
        return None


@dataclass(frozen=True, slots=True)
class GroupRule:
    """The same cause on several GPUs of a node (``by = ("node",)``) or on several nodes sharing a topology part."""

    id: str
    by: tuple[str, ...]
    members: tuple[str, ...]
    min_members: int = 2
    window_s: float = 120.0
    category: str = ""
    title: str = ""
    action: str = ""

    @property
    def per_node(self) -> bool:
        return self.by == (NODE_KEY,)

    def matches(self, rule: str, code: str) -> bool:
        return rule in self.members or f"{rule}:{code}" in self.members


@dataclass(frozen=True, slots=True)
class CorrelationRules:
    causes: tuple[CauseRule, ...] = ()
    groups: tuple[GroupRule, ...] = ()
    xid_burst_gap_s: float = 180.0
    group_id_window_s: float = 600.0
    origin: str = ""

    @property
    def keep_s(self) -> float:
        """How long a resolved incident stays known: the widest window any rule looks back over."""
        windows = (
            [r.before_s for r in self.causes] + [r.after_s for r in self.causes] + [g.window_s for g in self.groups]
        )
        return max(windows, default=0.0) + 600.0

    def apply_to(self, rules: RuleSet) -> RuleSet:
        """``rules`` with the Xid rule's clear_s set to the burst gap (site and provider overrides still apply)."""
        changed = tuple(
            dataclasses.replace(rule, clear_s=self.xid_burst_gap_s) if rule.kind == "xid" else rule
            for rule in rules.rules
        )
        if changed == rules.rules:
            return rules
        return dataclasses.replace(rules, rules=changed, _cache={})

    def referenced_rules(self) -> set[str]:
        refs = {ref for rule in self.causes for ref in (*rule.causes, *rule.symptoms)}
        refs |= {ref for group in self.groups for ref in group.members}
        return {ref.split(":", 1)[0] for ref in refs if ref != ANY}


NO_CORRELATION = CorrelationRules(xid_burst_gap_s=180.0, origin="none")


# --- loading --------------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{self.path}: {where}: {text}")

    def number(self, where: str, value: Any, *, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(where, f"expected a number, got {type(value).__name__}")
            return 0.0
        if value < minimum:
            self.problem(where, f"must be >= {minimum:g}, got {value}")
        return float(value)

    def flag(self, where: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.problem(where, "expected true or false")
            return False
        return value

    def text(self, where: str, value: Any) -> str:
        if not isinstance(value, str):
            self.problem(where, "expected a string")
            return ""
        return value

    def refs(self, where: str, value: Any, *, allow_any: bool = False, required: bool = True) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(where, "expected an array of rule ids")
            return ()
        if required and not value:
            self.problem(where, "must name at least one rule")
        for i, ref in enumerate(value):
            rule, sep, code = ref.partition(":")
            if ref == ANY and not allow_any:
                self.problem(f"{where}[{i}]", "'*' is allowed in symptoms only")
            elif ref != ANY and (not rule or (sep and not code)):
                self.problem(f"{where}[{i}]", f"expected 'rule' or 'rule:code', got {ref!r}")
        if len(set(value)) != len(value):
            self.problem(where, "names a rule twice")
        return tuple(value)

    def table(self, where: str, data: Any, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.problem(where, "expected a table")
            return {}
        for key in sorted(set(data) - allowed):
            self.problem(f"{where}.{key}", "unknown key")
        return data

    def entry_id(self, where: str, data: dict[str, Any], ids: set[str]) -> str | None:
        entry_id = data.get("id")
        if not isinstance(entry_id, str) or not entry_id:
            self.problem(f"{where}.id", "missing or not a string")
            return None
        if entry_id in ids:
            self.problem(f"{where}.id", f"duplicate id {entry_id!r}")
        ids.add(entry_id)
        return entry_id


def _cause(reader: _Reader, where: str, raw: Any, ids: set[str]) -> CauseRule | None:
    before = len(reader.problems)
    data = reader.table(where, raw, _CAUSE_KEYS)
    entry_id = reader.entry_id(where, data, ids) if data else None
    if entry_id is None:
        return None
    where = f"{where} ({entry_id})"
    within = data.get("within", "node")
    if within not in WITHIN:
        reader.problem(f"{where}.within", f"expected one of {', '.join(WITHIN)}, got {within!r}")
    causes = reader.refs(f"{where}.causes", data.get("causes"))
    symptoms = reader.refs(f"{where}.symptoms", data.get("symptoms", []), allow_any=True, required=False)
    for ref in sorted(set(causes) & set(symptoms)):
        reader.problem(f"{where}.symptoms", f"{ref!r} is also a cause (a later cause is already a child)")
    rule = CauseRule(
        id=entry_id,
        within=str(within),
        causes=causes,
        symptoms=symptoms,
        before_s=reader.number(f"{where}.before_s", data.get("before_s", 0.0)),
        after_s=reader.number(f"{where}.after_s", data.get("after_s", 0.0)),
        while_open=reader.flag(f"{where}.while_open", data.get("while_open", False)),
        adopt_open=reader.flag(f"{where}.adopt_open", data.get("adopt_open", False)),
    )
    if not (rule.after_s or rule.before_s or rule.while_open or rule.adopt_open):
        reader.problem(where, "needs a window: before_s, after_s, while_open or adopt_open")
    return rule if len(reader.problems) == before else None


def _group(reader: _Reader, where: str, raw: Any, ids: set[str]) -> GroupRule | None:
    before = len(reader.problems)
    data = reader.table(where, raw, _GROUP_KEYS)
    entry_id = reader.entry_id(where, data, ids) if data else None
    if entry_id is None:
        return None
    where = f"{where} ({entry_id})"
    by = data.get("by")
    if not isinstance(by, list) or not by or not all(isinstance(v, str) for v in by):
        reader.problem(f"{where}.by", f"expected a non-empty array of: {', '.join(GROUP_BY_KEYS)}")
        by = []
    for key in by:
        if key not in GROUP_BY_KEYS:
            reader.problem(f"{where}.by", f"unknown {key!r} (known: {', '.join(GROUP_BY_KEYS)})")
    if NODE_KEY in by and len(by) > 1:
        reader.problem(f"{where}.by", "'node' groups GPUs of one node and cannot be combined with topology keys")
    members = reader.refs(f"{where}.members", data.get("members"))
    count = data.get("min_members", 2)
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        reader.problem(f"{where}.min_members", f"expected an integer >= 2, got {count!r}")
        count = 2
    texts = {key: reader.text(f"{where}.{key}", data.get(key, "")) for key in ("category", "title", "action")}
    for key in ("category", "title"):
        if not texts[key]:
            reader.problem(f"{where}.{key}", "missing")
    for _, name, _, _ in string.Formatter().parse(texts["title"]) if texts["title"] else ():
        if name is not None and name not in TITLE_FIELDS:
            reader.problem(
                f"{where}.title", f"unknown placeholder {{{name}}} (known: {', '.join(sorted(TITLE_FIELDS))})"
            )
    rule = GroupRule(
        id=entry_id,
        by=tuple(by),
        members=members,
        min_members=count,
        window_s=reader.number(f"{where}.window_s", data.get("window_s", 120.0)),
        category=texts["category"],
        title=texts["title"],
        action=texts["action"],
    )
    return rule if len(reader.problems) == before else None


def _array(reader: _Reader, data: dict[str, Any], section: str) -> list[Any]:
    raw = data.get(section, [])
    if not isinstance(raw, list):
        reader.problem(section, f"expected an array of tables ([[{section}]])")
        return []
    return raw


def load_correlation_rules(path: Path | None = None, *, rule_ids: Iterable[str] | None = None) -> CorrelationRules:
    """Read and validate a correlation file (default: resources/rules/correlation.toml).

    ``rule_ids``: the incident rules that exist (e.g. ``{r.id for r in load_rules().rules}``); when given, a
    reference to any other rule (or group) is a problem. Raises ``CorrelationError`` listing every problem."""
    path = path or DEFAULT_CORRELATION_PATH
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise CorrelationError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise CorrelationError([f"{path}: not valid TOML: {exc}"]) from None
    reader = _Reader(path)
    for key in sorted(set(data) - _TOP_KEYS):
        reader.problem(key, "unknown top-level key")
    settings = reader.table("settings", data.get("settings", {}), _SETTINGS_KEYS)
    gap = reader.number("settings.xid_burst_gap_s", settings.get("xid_burst_gap_s", 180.0), minimum=1.0)
    id_window = reader.number("settings.group_id_window_s", settings.get("group_id_window_s", 600.0), minimum=1.0)
    ids: set[str] = set()
    causes = [
        rule
        for i, raw in enumerate(_array(reader, data, "causes"))
        if (rule := _cause(reader, f"causes[{i}]", raw, ids))
    ]
    groups = [
        group
        for i, raw in enumerate(_array(reader, data, "groups"))
        if (group := _group(reader, f"groups[{i}]", raw, ids))
    ]
    result = CorrelationRules(
        causes=tuple(causes),
        groups=tuple(groups),
        xid_burst_gap_s=gap,
        group_id_window_s=id_window,
        origin=str(path),
    )
    if rule_ids is not None:
        incident_rules = set(rule_ids)
        for group in groups:
            if group.id in incident_rules:
                reader.problem(f"groups ({group.id}).id", "is also an incident rule's id")
        for name in sorted(result.referenced_rules() - incident_rules - {g.id for g in groups}):
            reader.problem("rules", f"unknown rule {name!r} (neither an incident rule nor a group id)")
    if reader.problems:
        raise CorrelationError(reader.problems)
    return result


@functools.cache
def default_correlation_rules() -> CorrelationRules:
    """The built-in correlation rules, read once (the value is immutable)."""
    return load_correlation_rules()
