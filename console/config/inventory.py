"""The fleet inventory: a TOML file of sites, nodes and their sources, parsed into ``console.config.fleet``.

Validation collects every problem before giving up, each prefixed with its key path
(``nodes[2].sources[0].url: must start with http:// or https://``), so an operator fixes a file in one pass.
Secrets appear only as references (``password_env``, ``token_file``, ``password_keyring``, ...); a literal
``password``/``token`` is refused. ``dump_inventory`` writes the same shape back (tomllib cannot write).

The document form (``fleet_to_document`` / ``fleet_from_document``) is the plain dict tomllib returns; the GUI
editor edits that form and validates it here, so its errors carry the same key paths as the file's.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from console.config.fleet import Fleet, Node, SecretKind, SecretRef, Site, SourceKind, SourceSpec

APP_NAME = "gpu-ops-console"
DEFAULT_KEYRING_SERVICE = SecretRef(SecretKind.ENV, "").service
DEFAULT_INTERVAL_S = Site("", "").interval_s
DEFAULT_TIMEOUT_S = Site("", "").timeout_s

_TOP_KEYS = ("sites", "nodes", "rule_overrides")
_SITE_KEYS = ("name", "provider", "region", "interval_s", "timeout_s", "demo")
_NODE_KEYS = ("name", "site", "tags", "interval_s", "timeout_s", "sources")
_RULE_KEYS = ("scope", "rule", "key", "value")
_HTTP_KEYS = ("url", "verify_tls", "ca_file")
_SECRET_SUFFIXES: Mapping[str, SecretKind] = {
    "_env": SecretKind.ENV,
    "_file": SecretKind.FILE,
    "_keyring": SecretKind.KEYRING,
}
_TOKEN_KEYS = tuple(f"token{suffix}" for suffix in _SECRET_SUFFIXES)
_PASSWORD_KEYS = tuple(f"password{suffix}" for suffix in _SECRET_SUFFIXES)

# The keys each kind takes besides ``kind`` and ``options``; a key of another kind gets a pointed message.
SOURCE_KEYS: Mapping[SourceKind, tuple[str, ...]] = {
    SourceKind.DEMO: (),
    SourceKind.NVML: (),
    SourceKind.DCGM: _HTTP_KEYS,
    SourceKind.PROMETHEUS: _HTTP_KEYS,
    SourceKind.AGENT: (*_HTTP_KEYS, *_TOKEN_KEYS),
    SourceKind.REDFISH: (*_HTTP_KEYS, "user", *_PASSWORD_KEYS),
    SourceKind.SSH: ("host", "port", "user", "key_file", "known_hosts"),
}
_ALL_SOURCE_KEYS = frozenset(key for keys in SOURCE_KEYS.values() for key in keys)
_LITERAL_SECRETS: Mapping[str, str] = {
    "password": "password_env, password_file or password_keyring",
    "token": "token_env, token_file or token_keyring",
}
_WHITESPACE = re.compile(r"\s")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOML_POSITION = re.compile(r"^(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$", re.DOTALL)
_TOML_END = re.compile(r"^(?P<message>.*) \(at end of document\)$", re.DOTALL)


class InventoryError(ValueError):
    """An inventory that cannot be used; ``problems`` holds every problem found, each led by its key path."""

    def __init__(self, origin: str, problems: Sequence[str]) -> None:
        self.origin = origin
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{origin or 'inventory'}: {count} problem{'s' if count != 1 else ''}:\n{lines}")


def default_inventory_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME)) / "fleet.toml"


# --- reading ------


def load_inventory(path: str | Path) -> Fleet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(str(path), ["file: does not exist"]) from None
    except UnicodeDecodeError as exc:
        raise InventoryError(str(path), [f"file: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except OSError as exc:
        raise InventoryError(str(path), [f"file: cannot be read ({exc.strerror or exc})"]) from None
    return parse_inventory(text, str(path))


def parse_inventory(text: str, origin: str = "<string>") -> Fleet:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(origin, [_describe_toml_error(exc, text)]) from None
    return fleet_from_document(document, origin)


def _describe_toml_error(exc: tomllib.TOMLDecodeError, text: str) -> str:
    # Python 3.11's TOMLDecodeError has no lineno/colno attributes; the position is only in the message.
    message = str(exc)
    match = _TOML_POSITION.match(message)
    if match:
        return f"line {match['line']}, column {match['column']}: TOML syntax error: {match['message']}"
    match = _TOML_END.match(message)
    if match:
        last_line = text.count("\n") + 1
        return f"line {last_line} (end of file): TOML syntax error: {match['message']}"
    return f"TOML syntax error: {message}"


def fleet_from_document(document: Mapping[str, Any], origin: str = "<string>") -> Fleet:
    """Validate a TOML-shaped document; raises ``InventoryError`` listing every problem."""
    problems = _Problems()
    _check_keys(document, "", _TOP_KEYS, problems)
    site_tables = _tables(document, "sites", "", problems)
    node_tables = _tables(document, "nodes", "", problems)
    rule_tables = _tables(document, "rule_overrides", "", problems)

    sites = [_parse_site(table, f"sites[{i}]", problems) for i, table in enumerate(site_tables)]
    site_names = _unique_names(site_tables, "sites", "site", problems)
    nodes = [_parse_node(table, f"nodes[{i}]", site_names, problems) for i, table in enumerate(node_tables)]
    _unique_names(node_tables, "nodes", "node", problems)
    providers = {table.get("provider") for table in site_tables}
    overrides = [
        _parse_rule_override(table, f"rule_overrides[{i}]", site_names, providers, problems)
        for i, table in enumerate(rule_tables)
    ]
    if problems.items:
        raise InventoryError(origin, problems.items)
    return Fleet(
        sites=tuple(site for site in sites if site is not None),
        nodes=tuple(node for node in nodes if node is not None),
        origin=origin,
        rule_overrides=tuple(rule for rule in overrides if rule is not None),
    )


def source_from_document(table: Mapping[str, Any], path: str = "source") -> SourceSpec:
    """One ``[[nodes.sources]]`` table alone (the editor tests a source without the rest of the fleet)."""
    problems = _Problems()
    spec = _parse_source(table, path, problems)
    if problems.items or spec is None:
        raise InventoryError(path, problems.items or [f"{path}: invalid"])
    return spec


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {str: "string", int: "integer", float: "float", list: "array", dict: "table"}
    return names.get(type(value), "date/time")


def _check_keys(table: Mapping[str, Any], path: str, allowed: Sequence[str], problems: _Problems) -> None:
    for key in table:
        if key in allowed:
            continue
        if key in _LITERAL_SECRETS:
            problems.add(
                _join(path, key),
                f"secrets are not allowed in the inventory: use a reference ({_LITERAL_SECRETS[key]})",
            )
        else:
            problems.add(_join(path, key), f"unknown key (expected one of: {', '.join(allowed)})")


def _tables(table: Mapping[str, Any], key: str, path: str, problems: _Problems) -> list[Mapping[str, Any]]:
    """An array of tables; items that are not tables are reported and skipped."""
    value = table.get(key, [])
    where = _join(path, key)
    if not isinstance(value, list):
        problems.add(where, f"expected an array of tables ([[{key}]]), got {_type_name(value)}")
        return []
    tables: list[Mapping[str, Any]] = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            tables.append(item)
        else:
            problems.add(f"{where}[{i}]", f"expected a table, got {_type_name(item)}")
    return tables


def _string(
    table: Mapping[str, Any], key: str, path: str, problems: _Problems, *, required: bool = False
) -> str | None:
    where = _join(path, key)
    if key not in table:
        if required:
            problems.add(where, "required")
        return None
    value = table[key]
    if not isinstance(value, str):
        problems.add(where, f"expected a string, got {_type_name(value)}")
        return None
    if not value.strip():
        problems.add(where, "must not be empty")
        return None
    if value != value.strip():
        problems.add(where, "must not start or end with whitespace")
        return None
    return value


def _positive_seconds(table: Mapping[str, Any], key: str, path: str, problems: _Problems) -> float | None:
    if key not in table:
        return None
    value = table[key]
    where = _join(path, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(where, f"expected a number of seconds, got {_type_name(value)}")
        return None
    if not math.isfinite(value) or value <= 0:
        problems.add(where, "must be > 0")
        return None
    return float(value)


def _boolean(table: Mapping[str, Any], key: str, path: str, problems: _Problems, default: bool) -> bool:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, bool):
        problems.add(_join(path, key), f"expected true or false, got {_type_name(value)}")
        return default
    return value


def _local_path(table: Mapping[str, Any], key: str, path: str, problems: _Problems) -> str | None:
    value = _string(table, key, path, problems)
    # A relative path would depend on the directory the console happens to be started from.
    if value is not None and not (value.startswith("~") or Path(value).is_absolute()):
        problems.add(_join(path, key), "must be an absolute path or start with ~")
        return None
    return value


def _unique_names(tables: Sequence[Mapping[str, Any]], section: str, what: str, problems: _Problems) -> frozenset[str]:
    first_at: dict[str, int] = {}
    for i, table in enumerate(tables):
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            continue
        if name in first_at:
            problems.add(
                f"{section}[{i}].name",
                f'duplicate {what} name "{name}" (first at {section}[{first_at[name]}])',
            )
        else:
            first_at[name] = i
    return frozenset(first_at)


def _parse_site(table: Mapping[str, Any], path: str, problems: _Problems) -> Site | None:
    before = len(problems.items)
    _check_keys(table, path, _SITE_KEYS, problems)
    name = _string(table, "name", path, problems, required=True)
    provider = _string(table, "provider", path, problems, required=True)
    region = _string(table, "region", path, problems) or ""
    interval = _positive_seconds(table, "interval_s", path, problems)
    timeout = _positive_seconds(table, "timeout_s", path, problems)
    demo = _boolean(table, "demo", path, problems, default=False)
    if len(problems.items) > before or name is None or provider is None:
        return None
    return Site(
        name=name,
        provider=provider,
        region=region,
        interval_s=DEFAULT_INTERVAL_S if interval is None else interval,
        timeout_s=DEFAULT_TIMEOUT_S if timeout is None else timeout,
        demo=demo,
    )


def _parse_node(table: Mapping[str, Any], path: str, site_names: frozenset[str], problems: _Problems) -> Node | None:
    before = len(problems.items)
    _check_keys(table, path, _NODE_KEYS, problems)
    name = _string(table, "name", path, problems, required=True)
    site = _string(table, "site", path, problems, required=True)
    if site is not None and site not in site_names:
        problems.add(f"{path}.site", f'unknown site "{site}"')
    tags = _tags(table, path, problems)
    interval = _positive_seconds(table, "interval_s", path, problems)
    timeout = _positive_seconds(table, "timeout_s", path, problems)
    source_tables = _tables(table, "sources", path, problems)
    if "sources" in table and isinstance(table["sources"], list) and not table["sources"]:
        problems.add(f"{path}.sources", "at least one source is required")
    elif "sources" not in table:
        problems.add(f"{path}.sources", "at least one source is required ([[nodes.sources]])")
    sources = [_parse_source(t, f"{path}.sources[{i}]", problems) for i, t in enumerate(source_tables)]
    if len(problems.items) > before or name is None or site is None:
        return None
    return Node(
        name=name,
        site=site,
        sources=tuple(s for s in sources if s is not None),
        tags=tags,
        interval_s=interval,
        timeout_s=timeout,
    )


def _tags(table: Mapping[str, Any], path: str, problems: _Problems) -> tuple[str, ...]:
    value = table.get("tags", [])
    if not isinstance(value, list):
        problems.add(f"{path}.tags", f"expected an array of strings, got {_type_name(value)}")
        return ()
    tags: list[str] = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not tag.strip():
            problems.add(f"{path}.tags[{i}]", "expected a non-empty string")
        else:
            tags.append(tag)
    return tuple(tags)


def _parse_source(table: Mapping[str, Any], path: str, problems: _Problems) -> SourceSpec | None:
    before = len(problems.items)
    kind_text = _string(table, "kind", path, problems, required=True)
    if kind_text is None:
        return None
    try:
        kind = SourceKind(kind_text)
    except ValueError:
        problems.add(f"{path}.kind", f'unknown kind "{kind_text}" (expected one of: {", ".join(SourceKind)})')
        return None
    allowed = SOURCE_KEYS[kind]
    for key in table:
        if key in ("kind", "options") or key in allowed:
            continue
        if key in _ALL_SOURCE_KEYS:
            takes = ", ".join(allowed) or "nothing else"
            problems.add(f"{path}.{key}", f"not a {kind} setting ({kind} takes: {takes})")
        else:
            _check_keys({key: None}, path, ("kind", "options", *allowed), problems)
    url = _url(table, path, problems, required=True) if "url" in allowed else None
    host = _string(table, "host", path, problems, required=kind is SourceKind.SSH)
    port = _port(table, path, problems)
    user = _string(table, "user", path, problems)
    token = _secret_ref(table, "token", path, problems)
    password = _secret_ref(table, "password", path, problems)
    if kind is SourceKind.REDFISH:
        has_password = any(key in table for key in (*_PASSWORD_KEYS, "password"))
        if user is not None and not has_password:
            problems.add(path, f'user "{user}" needs a password reference ({_LITERAL_SECRETS["password"]})')
        if has_password and "user" not in table:
            problems.add(f"{path}.user", "required when a password is given")
    spec = SourceSpec(
        kind=kind,
        url=url,
        host=host,
        port=port,
        user=user,
        key_file=_local_path(table, "key_file", path, problems),
        known_hosts=_local_path(table, "known_hosts", path, problems),
        token=token,
        password=password,
        verify_tls=_boolean(table, "verify_tls", path, problems, default=True),
        ca_file=_local_path(table, "ca_file", path, problems),
        options=_options(table, path, problems),
    )
    return None if len(problems.items) > before else spec


def _url(table: Mapping[str, Any], path: str, problems: _Problems, *, required: bool) -> str | None:
    value = _string(table, "url", path, problems, required=required)
    if value is None:
        return None
    where = f"{path}.url"
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not value.lower().startswith(("http://", "https://")):
        problems.add(where, "must start with http:// or https://")
        return None
    if _WHITESPACE.search(value):
        problems.add(where, "must not contain whitespace")
        return None
    if parts.username is not None or parts.password is not None:
        problems.add(where, "must not contain a user name or password: use user and a password reference")
        return None
    try:
        parts.port  # noqa: B018 - evaluating it validates the port
    except ValueError:
        problems.add(where, "has an invalid port")
        return None
    if not parts.hostname:
        problems.add(where, "has no host name")
        return None
    return value


def _port(table: Mapping[str, Any], path: str, problems: _Problems) -> int | None:
    if "port" not in table:
        return None
    value = table["port"]
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(f"{path}.port", f"expected an integer, got {_type_name(value)}")
        return None
    if not 1 <= value <= 65535:
        problems.add(f"{path}.port", "must be between 1 and 65535")
        return None
    return value


def _secret_ref(table: Mapping[str, Any], prefix: str, path: str, problems: _Problems) -> SecretRef | None:
    given = [f"{prefix}{suffix}" for suffix in _SECRET_SUFFIXES if f"{prefix}{suffix}" in table]
    if len(given) > 1:
        problems.add(path, f"give only one of {', '.join(given)}")
        return None
    if not given:
        return None
    key = given[0]
    kind = _SECRET_SUFFIXES[key.removeprefix(prefix)]
    where = f"{path}.{key}"
    if kind is SecretKind.KEYRING and isinstance(table[key], dict):
        return _keyring_table(table[key], where, problems)
    if kind is SecretKind.FILE:
        file_name = _local_path(table, key, path, problems)
        return None if file_name is None else SecretRef(kind, file_name)
    name = _string(table, key, path, problems)
    if name is None:
        return None
    if kind is SecretKind.ENV and not _ENV_NAME.fullmatch(name):
        problems.add(where, f'"{name}" is not an environment variable name (letters, digits and _)')
        return None
    return SecretRef(kind, name)


def _keyring_table(table: Mapping[str, Any], where: str, problems: _Problems) -> SecretRef | None:
    before = len(problems.items)
    _check_keys(table, where, ("service", "name"), problems)
    service = _string(table, "service", where, problems, required=True)
    name = _string(table, "name", where, problems, required=True)
    if len(problems.items) > before or service is None or name is None:
        return None
    return SecretRef(SecretKind.KEYRING, name, service)


def _options(table: Mapping[str, Any], path: str, problems: _Problems) -> tuple[tuple[str, str], ...]:
    value = table.get("options", {})
    if not isinstance(value, dict):
        problems.add(f"{path}.options", f"expected a table of strings, got {_type_name(value)}")
        return ()
    options: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(item, str):
            problems.add(f"{path}.options.{key}", f"expected a string, got {_type_name(item)}")
        else:
            options.append((key, item))
    return tuple(options)


def _parse_rule_override(
    table: Mapping[str, Any],
    path: str,
    site_names: frozenset[str],
    providers: set[Any],
    problems: _Problems,
) -> tuple[str, str, str, float] | None:
    before = len(problems.items)
    _check_keys(table, path, _RULE_KEYS, problems)
    scope = _string(table, "scope", path, problems, required=True)
    rule = _string(table, "rule", path, problems, required=True)
    key = _string(table, "key", path, problems, required=True)
    value = table.get("value")
    if "value" not in table:
        problems.add(f"{path}.value", "required")
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.add(f"{path}.value", f"expected a finite number, got {_type_name(value)}")
    if scope is not None:
        _check_scope(scope, f"{path}.scope", site_names, providers, problems)
    if len(problems.items) > before or scope is None or rule is None or key is None:
        return None
    assert isinstance(value, int | float)  # checked above; tells the type checker
    return (scope, rule, key, float(value))


def _check_scope(scope: str, where: str, site_names: frozenset[str], providers: set[Any], problems: _Problems) -> None:
    kind, sep, name = scope.partition(":")
    if not sep or kind not in ("site", "provider") or not name:
        problems.add(where, 'must be "site:NAME" or "provider:NAME"')
    elif kind == "site" and name not in site_names:
        problems.add(where, f'unknown site "{name}"')
    elif kind == "provider" and name not in providers:
        # An override for a provider no site uses would silently do nothing: almost always a typo.
        problems.add(where, f'no site has provider "{name}"')


# --- writing ------


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
    return document


def site_to_document(site: Site) -> dict[str, Any]:
    table: dict[str, Any] = {"name": site.name, "provider": site.provider}
    if site.region:
        table["region"] = site.region
    table["interval_s"] = site.interval_s
    table["timeout_s"] = site.timeout_s
    if site.demo:
        table["demo"] = True
    return table


def node_to_document(node: Node) -> dict[str, Any]:
    table: dict[str, Any] = {"name": node.name, "site": node.site}
    if node.tags:
        table["tags"] = list(node.tags)
    if node.interval_s is not None:
        table["interval_s"] = node.interval_s
    if node.timeout_s is not None:
        table["timeout_s"] = node.timeout_s
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
            table.update(_secret_ref_to_document(prefix, ref))
    if not spec.verify_tls:
        table["verify_tls"] = False
    if spec.ca_file is not None:
        table["ca_file"] = spec.ca_file
    if spec.options:
        table["options"] = dict(spec.options)
    return table


def _secret_ref_to_document(prefix: str, ref: SecretRef) -> dict[str, Any]:
    key = f"{prefix}_{ref.kind}"
    if ref.kind is SecretKind.KEYRING and ref.service != DEFAULT_KEYRING_SERVICE:
        return {key: {"service": ref.service, "name": ref.name}}
    return {key: ref.name}


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


__all__ = [
    "InventoryError",
    "default_inventory_path",
    "dump_document",
    "dump_inventory",
    "fleet_from_document",
    "fleet_to_document",
    "load_inventory",
    "parse_inventory",
    "source_from_document",
]
