"""The action catalog and the escalation ladders: resources/remediation/actions.toml and ladders.toml.

Both files are validated whole: every problem is reported at once, with the file and key, and an unknown key is
a problem (a typo must not silently drop a setting).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import resources

REMEDIATION_DIR = Path(resources.__file__).resolve().parent / "remediation"
ACTIONS_PATH = REMEDIATION_DIR / "actions.toml"
LADDERS_PATH = REMEDIATION_DIR / "ladders.toml"
_SETTINGS_KEYS = {"verify_window_h", "hardware_buckets", "suspect_after_days"}
_ACTION_KEYS = {"label", "buckets", "rules"}
_LADDER_KEYS = {"match", "steps"}


class CatalogError(ValueError):
    """A remediation file that cannot be used; ``problems`` lists every reason, each naming file and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    label: str
    buckets: tuple[str, ...]
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LadderStep:
    action: str
    tries: int  # attempts of this action on one GPU that did not hold before the next step is due


@dataclass(frozen=True, slots=True)
class Ladder:
    match: str  # "xid:79" or a rule id
    steps: tuple[LadderStep, ...]


@dataclass(frozen=True, slots=True)
class RemediationCatalog:
    actions: Mapping[str, Action]  # in the file's order
    ladders: Mapping[str, Ladder]
    verify_window_h: float = 72.0
    hardware_buckets: frozenset[str] = frozenset()
    suspect_after_days: int = 2

    def label(self, action: str) -> str:
        found = self.actions.get(action)
        return found.label if found is not None else action

    def ladder_for(self, rule: str, code: str) -> Ladder | None:
        by_code = self.ladders.get(f"{rule}:{code}") if code else None
        return by_code or self.ladders.get(rule)

    def action_for(self, rule: str, buckets: tuple[str, ...]) -> str | None:
        """The catalog's action: the first serving the code's buckets (immediate first), else the rule's own."""
        for bucket in buckets:
            for action in self.actions.values():
                if bucket and bucket in action.buckets:
                    return action.id
        for action in self.actions.values():
            if rule in action.rules:
                return action.id
        return None


def _read(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
    return {}


def _strings(problems: list[str], where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"{where}: expected a list of strings")
        return ()
    return tuple(value)


def _unknown(problems: list[str], where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    problems.extend(f"{where}.{key}: unknown key" for key in sorted(set(table) - allowed))


def _settings(problems: list[str], path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    table = data.get("settings", {})
    if not isinstance(table, dict):
        problems.append(f"{path}: settings: expected a table")
        return {}
    _unknown(problems, f"{path}: settings", table, _SETTINGS_KEYS)
    out: dict[str, Any] = {}
    window = table.get("verify_window_h", 72.0)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 < window < 1e6:
        problems.append(f"{path}: settings.verify_window_h: must be a number of hours above 0")
    else:
        out["verify_window_h"] = float(window)
    days = table.get("suspect_after_days", 2)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        problems.append(f"{path}: settings.suspect_after_days: must be a whole number of days, at least 1")
    else:
        out["suspect_after_days"] = days
    out["hardware_buckets"] = frozenset(
        _strings(problems, f"{path}: settings.hardware_buckets", table.get("hardware_buckets", []))
    )
    return out


def _actions(problems: list[str], path: Path, data: Mapping[str, Any]) -> dict[str, Action]:
    table = data.get("actions")
    if not isinstance(table, dict) or not table:
        problems.append(f"{path}: actions: expected a table of actions ([actions.ID])")
        return {}
    actions: dict[str, Action] = {}
    for action_id, raw in table.items():
        where = f"{path}: actions.{action_id}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a table")
            continue
        _unknown(problems, where, raw, _ACTION_KEYS)
        label = raw.get("label")
        if not isinstance(label, str) or not label.strip():
            problems.append(f"{where}.label: must be a non-empty string")
            label = action_id
        buckets = _strings(problems, f"{where}.buckets", raw.get("buckets", []))
        rules = _strings(problems, f"{where}.rules", raw.get("rules", []))
        actions[action_id] = Action(action_id, label, buckets, rules)
    if "other" not in actions:
        problems.append(f"{path}: actions.other: required (the action of a fix the catalog does not name)")
    return actions


def _ladders(
    problems: list[str], path: Path, data: Mapping[str, Any], actions: Mapping[str, Action]
) -> dict[str, Ladder]:
    _unknown(problems, str(path), data, {"ladders"})
    raw_ladders = data.get("ladders", [])
    if not isinstance(raw_ladders, list):
        problems.append(f"{path}: ladders: expected an array of tables ([[ladders]])")
        return {}
    ladders: dict[str, Ladder] = {}
    for i, raw in enumerate(raw_ladders):
        where = f"{path}: ladders[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a table")
            continue
        _unknown(problems, where, raw, _LADDER_KEYS)
        match = raw.get("match")
        if not isinstance(match, str) or not match.strip():
            problems.append(f"{where}.match: must be a rule id or rule:code")
            continue
        if match in ladders:
            problems.append(f"{where}.match: {match!r} has a ladder already")
        steps: list[LadderStep] = []
        raw_steps = raw.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            problems.append(f"{where}.steps: expected a non-empty list of [action, tries]")
            raw_steps = []
        for j, step in enumerate(raw_steps):
            ok = isinstance(step, list) and len(step) == 2 and isinstance(step[0], str)
            ok = ok and isinstance(step[1], int) and not isinstance(step[1], bool) and step[1] >= 1
            if not ok:
                problems.append(f"{where}.steps[{j}]: expected [action, tries] with tries a whole number >= 1")
                continue
            if step[0] not in actions:
                problems.append(f"{where}.steps[{j}]: unknown action {step[0]!r} (not in {ACTIONS_PATH.name})")
                continue
            steps.append(LadderStep(step[0], step[1]))
        ladders[match] = Ladder(match, tuple(steps))
    return ladders


def load_catalog(actions_path: Path | None = None, ladders_path: Path | None = None) -> RemediationCatalog:
    """Read and validate both files; raise CatalogError listing every problem."""
    actions_path = actions_path or ACTIONS_PATH
    ladders_path = ladders_path or LADDERS_PATH
    problems: list[str] = []
    data = _read(actions_path, problems)
    if data:
        _unknown(problems, str(actions_path), data, {"settings", "actions"})
    settings = _settings(problems, actions_path, data) if data else {}
    actions = _actions(problems, actions_path, data) if data else {}
    ladder_data = _read(ladders_path, problems)
    ladders = _ladders(problems, ladders_path, ladder_data, actions) if ladder_data else {}
    if problems:
        raise CatalogError(problems)
    return RemediationCatalog(actions=actions, ladders=ladders, **settings)
