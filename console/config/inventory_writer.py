"""Writing an inventory: a ``Fleet`` as the TOML-shaped document, and that document as TOML text.

``tomllib`` cannot write, so this is a small writer for the inventory's shape (arrays of tables, scalars, arrays
and inline tables). ``console.config.inventory`` reads back what it writes to an equal ``Fleet``. Only references
to secrets exist in a ``Fleet``, so none can be written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from console.config.fleet import Fleet, Node, Site, SourceSpec
from console.config.receivers import receiver_to_document
from console.config.secret_refs import secret_ref_to_document


def fleet_to_document(fleet: Fleet) -> dict[str, Any]:
    """The TOML-shaped dict of a fleet (what ``tomllib`` would return for ``dump_inventory(fleet)``)."""
    document: dict[str, Any] = {
        "sites": [site_to_document(site) for site in fleet.sites],
        "nodes": [node_to_document(node) for node in fleet.nodes],
    }
    if fleet.rule_overrides:
        document["rule_overrides"] = [
            {"scope": scope, "rule": rule, "key": key, "value": value}
            for scope, rule, key, value in fleet.rule_overrides
        ]
    if fleet.receivers:
        document["notify"] = [receiver_to_document(receiver) for receiver in fleet.receivers]
    return document


def site_to_document(site: Site) -> dict[str, Any]:
    table: dict[str, Any] = {"name": site.name, "provider": site.provider}
    if site.region:
        table["region"] = site.region
    table["interval_s"] = site.interval_s
    table["timeout_s"] = site.timeout_s
    if site.demo:
        table["demo"] = True
    if site.selector:
        table["selector"] = site.selector
    return table


def node_to_document(node: Node) -> dict[str, Any]:
    table: dict[str, Any] = {"name": node.name, "site": node.site}
    if node.tags:
        table["tags"] = list(node.tags)
    if node.interval_s is not None:
        table["interval_s"] = node.interval_s
    if node.timeout_s is not None:
        table["timeout_s"] = node.timeout_s
    table.update(node.topology.items())
    table["sources"] = [source_to_document(spec) for spec in node.sources]
    return table


def source_to_document(spec: SourceSpec) -> dict[str, Any]:
    table: dict[str, Any] = {"kind": str(spec.kind)}
    for key in ("url", "host", "port", "user", "key_file", "known_hosts"):
        value = getattr(spec, key)
        if value is not None:
            table[key] = value
    for prefix, ref in (("token", spec.token), ("password", spec.password)):
        if ref is not None:
            table.update(secret_ref_to_document(prefix, ref))
    if not spec.verify_tls:
        table["verify_tls"] = False
    if spec.ca_file is not None:
        table["ca_file"] = spec.ca_file
    if spec.options:
        table["options"] = dict(spec.options)
    if spec.headers:
        table["headers"] = dict(spec.headers)
    return table


def dump_inventory(fleet: Fleet) -> str:
    """TOML that ``parse_inventory`` reads back to an equal ``Fleet`` (given the same origin).

    Only references to secrets exist in a ``Fleet``, so none can be written.
    """
    return dump_document(fleet_to_document(fleet))


def dump_document(document: Mapping[str, Any]) -> str:
    """A small TOML writer for the inventory's shape: arrays of tables, scalars, arrays and inline tables."""
    out = ["# GPU Ops Console fleet inventory. Secrets are references only (env variable, file, keyring)."]
    for key, value in document.items():
        if _is_table_array(value):
            for table in value:
                _write_table(out, (key,), table)
        else:
            out.insert(1, f"{_key(key)} = {_value(value)}")
    return "\n".join(out) + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _write_table(out: list[str], header: tuple[str, ...], table: Mapping[str, Any]) -> None:
    indent = "  " * (len(header) - 1)
    out.append("")
    out.append(f"{indent}[[{'.'.join(_key(part) for part in header)}]]")
    nested = [(key, value) for key, value in table.items() if _is_table_array(value)]
    for key, value in table.items():
        if not _is_table_array(value):
            out.append(f"{indent}{_key(key)} = {_value(value)}")
    for key, tables in nested:
        for item in tables:
            _write_table(out, (*header, key), item)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string_literal(key)


def _string_literal(text: str) -> str:
    def escape(ch: str) -> str:
        if ch in _ESCAPES:
            return _ESCAPES[ch]
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"\\u{ord(ch):04X}"
        return ch

    return '"' + "".join(escape(ch) for ch in text) + '"'


def _value(value: Any) -> str:
    formatters: list[tuple[type | tuple[type, ...], Callable[[Any], str]]] = [
        (bool, lambda v: "true" if v else "false"),
        (int, str),
        (float, _float_literal),
        (str, _string_literal),
        ((list, tuple), lambda v: "[" + ", ".join(_value(item) for item in v) + "]"),
        (
            dict,
            lambda v: "{ " + ", ".join(f"{_key(k)} = {_value(i)}" for k, i in v.items()) + " }" if v else "{}",
        ),
    ]
    for kinds, formatter in formatters:
        if isinstance(value, kinds):
            return formatter(value)
    raise TypeError(f"cannot write {type(value).__name__} to the inventory")


def _float_literal(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)
