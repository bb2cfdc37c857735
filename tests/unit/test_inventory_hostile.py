"""Issue 18 items 4 and 5 (inventory): a value of the wrong type anywhere joins the list of problems under its key
path (never a crash), absurd numbers get a clear message, and an inventory too big to poll is refused."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from console.config.inventory import (
    MAX_INVENTORY_BYTES,
    MAX_NODES,
    InventoryError,
    fleet_from_document,
    parse_inventory,
)

BASE = """
[[sites]]
name = "iad"
provider = "aws"
region = "us-east-1"
interval_s = 5
timeout_s = 3

[[nodes]]
name = "n1"
site = "iad"
tags = ["a"]
rack = "r1"
interval_s = 5
[[nodes.sources]]
kind = "agent"
url = "https://n1:9400"
token_env = "TOKEN"
[[nodes.sources]]
kind = "redfish"
url = "https://bmc1"
user = "root"
password_env = "PW"
[[nodes.sources]]
kind = "ssh"
host = "n1"
port = 22
key_file = "~/.ssh/id"
[nodes.sources.options]
x = "y"

[[rule_overrides]]
scope = "provider:aws"
rule = "thermal_margin"
key = "warn_c"
value = 5

[[notify]]
kind = "webhook"
name = "hook"
url = "https://hooks.example/x"
sites = ["iad"]
providers = ["aws"]
min_severity = "major"
timeout_s = 3
"""
WRONG_VALUES: tuple[Any, ...] = (["aws"], {"a": ["b"]}, 7, 1.5, True, math.nan, math.inf, -3)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    if path:
        yield path


def _shown(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _with(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


def _problems(document: dict[str, Any]) -> list[str]:
    try:
        fleet_from_document(document)
    except InventoryError as exc:
        return exc.problems
    return []


def test_the_base_inventory_is_valid() -> None:
    assert len(parse_inventory(BASE).nodes) == 1


@pytest.mark.parametrize("wrong", WRONG_VALUES, ids=repr)
def test_a_wrong_value_anywhere_is_a_problem_with_its_key_path(wrong: Any) -> None:
    document = tomllib.loads(BASE)
    for path in _leaves(document):
        problems = _problems(_with(document, path, wrong))
        # Accepted (a number where a number goes), or a problem naming the key or the table or array holding it.
        assert not problems or any(problem.startswith(_shown(path[:-1]) or _shown(path)) for problem in problems), (
            path,
            problems,
        )


def test_a_list_for_a_provider_is_reported_not_a_crash() -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(BASE.replace('provider = "aws"', 'provider = ["aws"]'))
    assert "sites[0].provider: expected a string, got array" in caught.value.problems


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("timeout_s = inf", "sites[0].timeout_s: must be a finite number of seconds, not inf"),
        ("timeout_s = nan", "sites[0].timeout_s: must be a finite number of seconds, not nan"),
        ("timeout_s = -3", "sites[0].timeout_s: must be > 0 seconds, not -3"),
        ("timeout_s = 0", "sites[0].timeout_s: must be > 0 seconds, not 0"),
        ("timeout_s = 1e9", "sites[0].timeout_s: must be at most 86400 seconds (1 day), not 1e+09"),
    ],
)
def test_absurd_seconds_get_a_clear_message(setting: str, message: str) -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(BASE.replace("timeout_s = 3\n", setting + "\n", 1))
    assert message in caught.value.problems


def test_an_inventory_with_too_many_nodes_is_refused_with_the_limit() -> None:
    node = '[[nodes]]\nname = "n{i}"\nsite = "iad"\n[[nodes.sources]]\nkind = "demo"\n'
    text = BASE + "".join(node.format(i=i) for i in range(2, MAX_NODES + 2))
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text)
    assert f"nodes: {MAX_NODES + 1} nodes, at most {MAX_NODES:,} are supported" in caught.value.problems


def test_an_inventory_file_too_big_is_refused_before_parsing() -> None:
    text = BASE + "#" * MAX_INVENTORY_BYTES
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text)
    assert caught.value.problems[0].startswith("file: ")
    assert f"at most {MAX_INVENTORY_BYTES:,} bytes" in caught.value.problems[0]
