"""Validating TOML-shaped tables: typed reads that collect every problem, each led by its key path.

The inventory reports all its problems at once (``nodes[2].sources[0].url: must start with http://``), so each
read here notes what is wrong in ``Problems`` and returns ``None`` (or the default) instead of raising. A key that
would hold a secret in plain text (``password``, ``token``) is refused wherever it appears, with the reference
keys to use instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LITERAL_SECRETS: Mapping[str, str] = {
    "password": "password_env, password_file or password_keyring",
    "token": "token_env, token_file or token_keyring",
}


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {str: "string", int: "integer", float: "float", list: "array", dict: "table"}
    return names.get(type(value), "date/time")


def check_keys(table: Mapping[str, Any], path: str, allowed: Sequence[str], problems: Problems) -> None:
    for key in table:
        if key in allowed:
            continue
        if key in LITERAL_SECRETS:
            problems.add(
                join_path(path, key),
                f"secrets are not allowed in the inventory: use a reference ({LITERAL_SECRETS[key]})",
            )
        else:
            problems.add(join_path(path, key), f"unknown key (expected one of: {', '.join(allowed)})")


def read_tables(table: Mapping[str, Any], key: str, path: str, problems: Problems) -> list[Mapping[str, Any]]:
    """An array of tables; items that are not tables are reported and skipped."""
    value = table.get(key, [])
    where = join_path(path, key)
    if not isinstance(value, list):
        problems.add(where, f"expected an array of tables ([[{key}]]), got {type_name(value)}")
        return []
    tables: list[Mapping[str, Any]] = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            tables.append(item)
        else:
            problems.add(f"{where}[{i}]", f"expected a table, got {type_name(item)}")
    return tables


def read_string(
    table: Mapping[str, Any], key: str, path: str, problems: Problems, *, required: bool = False
) -> str | None:
    where = join_path(path, key)
    if key not in table:
        if required:
            problems.add(where, "required")
        return None
    value = table[key]
    if not isinstance(value, str):
        problems.add(where, f"expected a string, got {type_name(value)}")
        return None
    if not value.strip():
        problems.add(where, "must not be empty")
        return None
    if value != value.strip():
        problems.add(where, "must not start or end with whitespace")
        return None
    return value


MAX_SECONDS = 86_400.0  # the longest interval or timeout anywhere in the inventory: one day


def seconds_problem(value: float, *, most: float = MAX_SECONDS) -> str | None:
    """What is wrong with a number of seconds (None if nothing): finite, > 0 and at most ``most``."""
    if not math.isfinite(value):
        return f"must be a finite number of seconds, not {value}"
    if value <= 0:
        return f"must be > 0 seconds, not {value:g}"
    if value > most:
        return f"must be at most {most:g} seconds ({most / 86400:g} day), not {value:g}"
    return None


def read_positive_seconds(table: Mapping[str, Any], key: str, path: str, problems: Problems) -> float | None:
    if key not in table:
        return None
    value = table[key]
    where = join_path(path, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(where, f"expected a number of seconds, got {type_name(value)}")
        return None
    problem = seconds_problem(float(value))
    if problem is not None:
        problems.add(where, problem)
        return None
    return float(value)


def read_boolean(table: Mapping[str, Any], key: str, path: str, problems: Problems, default: bool) -> bool:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, bool):
        problems.add(join_path(path, key), f"expected true or false, got {type_name(value)}")
        return default
    return value


def read_local_path(table: Mapping[str, Any], key: str, path: str, problems: Problems) -> str | None:
    value = read_string(table, key, path, problems)
    # A relative path would depend on the directory the console happens to be started from.
    if value is not None and not (value.startswith("~") or Path(value).is_absolute()):
        problems.add(join_path(path, key), "must be an absolute path or start with ~")
        return None
    return value
