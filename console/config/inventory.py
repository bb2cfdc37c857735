"""The fleet inventory: a TOML file of sites, nodes and their sources, parsed into ``console.config.fleet``.

Validation collects every problem before giving up, each prefixed with its key path
(``nodes[2].sources[0].url: must start with http:// or https://``), so an operator fixes a file in one pass
(``console.config.validation``). Secrets appear only as references (``password_env``, ``token_file``,
``password_keyring``, ...: ``console.config.secret_refs``); a literal ``password``/``token`` is refused.
``dump_inventory`` (``console.config.inventory_writer``, re-exported here) writes the same shape back.

The document form (``fleet_to_document`` / ``fleet_from_document``) is the plain dict tomllib returns; the GUI
editor edits that form and validates it here, so its errors carry the same key paths as the file's.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from console.config.fleet import TOPOLOGY_KEYS, Fleet, Node, Receiver, Site, SourceKind, SourceSpec, Topology
from console.config.inventory_writer import (
    dump_document,
    dump_inventory,
    fleet_to_document,
    node_to_document,
    site_to_document,
    source_to_document,
)
from console.config.receivers import parse_receivers
from console.config.secret_refs import (
    DEFAULT_KEYRING_SERVICE,
    PASSWORD_KEYS,
    TOKEN_KEYS,
    check_credentials,
    read_secret_ref,
)
from console.config.validation import (
    LITERAL_SECRETS,
    Problems,
    check_keys,
    read_boolean,
    read_local_path,
    read_positive_seconds,
    read_string,
    read_tables,
    type_name,
)

APP_NAME = "gpu-ops-console"
DEFAULT_INTERVAL_S = Site("", "").interval_s
DEFAULT_TIMEOUT_S = Site("", "").timeout_s

_TOP_KEYS = ("sites", "nodes", "rule_overrides", "notify")
# What one console polls: past these the poller's threads, queues and the window stall instead of polling.
MAX_INVENTORY_BYTES = 4 * 1024 * 1024
MAX_NODES = 10_000
MAX_SITES = 1_000
_SITE_KEYS = ("name", "provider", "region", "interval_s", "timeout_s", "demo", "selector")
_NODE_KEYS = ("name", "site", "tags", "interval_s", "timeout_s", "sources", *TOPOLOGY_KEYS)
_RULE_KEYS = ("scope", "rule", "key", "value")
_HTTP_KEYS = ("url", "verify_tls", "ca_file")

# The keys each kind takes besides ``kind`` and ``options``; a key of another kind gets a pointed message.
SOURCE_KEYS: Mapping[SourceKind, tuple[str, ...]] = {
    SourceKind.DEMO: (),
    SourceKind.NVML: (),
    SourceKind.DCGM: _HTTP_KEYS,
    SourceKind.PROMETHEUS: (*_HTTP_KEYS, "user", *PASSWORD_KEYS, *TOKEN_KEYS, "headers"),
    SourceKind.AGENT: (*_HTTP_KEYS, *TOKEN_KEYS),
    SourceKind.REDFISH: (*_HTTP_KEYS, "user", *PASSWORD_KEYS),
    SourceKind.SSH: ("host", "port", "user", "key_file", "known_hosts"),
}
_ALL_SOURCE_KEYS = frozenset(key for keys in SOURCE_KEYS.values() for key in keys)
_WHITESPACE = re.compile(r"\s")
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


def _too_big(size: int) -> str:
    return f"file: {size:,} bytes, an inventory may have at most {MAX_INVENTORY_BYTES:,} bytes"


def load_inventory(path: str | Path) -> Fleet:
    path = Path(path)
    try:
        if (size := path.stat().st_size) > MAX_INVENTORY_BYTES:  # never read a huge file into memory
            raise InventoryError(str(path), [_too_big(size)])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(str(path), ["file: does not exist"]) from None
    except UnicodeDecodeError as exc:
        raise InventoryError(str(path), [f"file: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except OSError as exc:
        raise InventoryError(str(path), [f"file: cannot be read ({exc.strerror or exc})"]) from None
    return parse_inventory(text, str(path))


def parse_inventory(text: str, origin: str = "<string>") -> Fleet:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_INVENTORY_BYTES:
        raise InventoryError(origin, [_too_big(size)])
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
    problems = Problems()
    check_keys(document, "", _TOP_KEYS, problems)
    site_tables = read_tables(document, "sites", "", problems)
    node_tables = read_tables(document, "nodes", "", problems)
    for section, tables, most in (("sites", site_tables, MAX_SITES), ("nodes", node_tables, MAX_NODES)):
        if len(tables) > most:
            # Refused outright: past this the poller's threads and the window's tables stall rather than poll.
            problems.add(section, f"{len(tables)} {section}, at most {most:,} are supported")
            raise InventoryError(origin, problems.items)
    rule_tables = read_tables(document, "rule_overrides", "", problems)
    notify_tables = read_tables(document, "notify", "", problems)

    sites = [_parse_site(table, f"sites[{i}]", problems) for i, table in enumerate(site_tables)]
    site_names = _unique_names(site_tables, "sites", "site", problems)
    nodes = [_parse_node(table, f"nodes[{i}]", site_names, problems) for i, table in enumerate(node_tables)]
    _unique_names(node_tables, "nodes", "node", problems)
    # Only strings: a provider given as an array or table is a problem reported by its site, not a set member.
    providers = {provider for table in site_tables if isinstance(provider := table.get("provider"), str)}
    overrides = [
        _parse_rule_override(table, f"rule_overrides[{i}]", site_names, providers, problems)
        for i, table in enumerate(rule_tables)
    ]
    receivers = parse_receivers(
        notify_tables, site_names, providers, problems, lambda t, p, pr: _url(t, p, pr, required=True)
    )
    if problems.items:
        raise InventoryError(origin, problems.items)
    return Fleet(
        sites=tuple(site for site in sites if site is not None),
        nodes=tuple(node for node in nodes if node is not None),
        origin=origin,
        rule_overrides=tuple(rule for rule in overrides if rule is not None),
        receivers=receivers,
    )


def source_from_document(table: Mapping[str, Any], path: str = "source") -> SourceSpec:
    """One ``[[nodes.sources]]`` table alone (the editor tests a source without the rest of the fleet)."""
    problems = Problems()
    spec = _parse_source(table, path, problems)
    if problems.items or spec is None:
        raise InventoryError(path, problems.items or [f"{path}: invalid"])
    return spec


def receiver_from_document(
    table: Mapping[str, Any], path: str, site_names: Collection[str], providers: Collection[Any]
) -> Receiver:
    """One ``[[notify]]`` table alone (the editor sends a test without the rest of the fleet being valid)."""
    problems = Problems()
    found = parse_receivers([table], site_names, providers, problems, lambda t, p, pr: _url(t, p, pr, required=True))
    if problems.items or not found:
        # parse_receivers names a lone table notify[0]; the editor shows the table's own place.
        located = [problem.replace("notify[0]", path, 1) for problem in problems.items]
        raise InventoryError(path, located or [f"{path}: invalid"])
    return found[0]


def _unique_names(tables: Sequence[Mapping[str, Any]], section: str, what: str, problems: Problems) -> frozenset[str]:
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


def _is_label_selector(text: str) -> bool:
    """``{label="value", ...}``: matchers only (no metric name), so the console can add its own ``__name__``."""
    inner = text.strip()
    return inner.startswith("{") and inner.endswith("}") and "__name__" not in inner and len(inner.strip("{} ")) > 0


def _parse_site(table: Mapping[str, Any], path: str, problems: Problems) -> Site | None:
    before = len(problems.items)
    check_keys(table, path, _SITE_KEYS, problems)
    name = read_string(table, "name", path, problems, required=True)
    provider = read_string(table, "provider", path, problems, required=True)
    region = read_string(table, "region", path, problems) or ""
    interval = read_positive_seconds(table, "interval_s", path, problems)
    timeout = read_positive_seconds(table, "timeout_s", path, problems)
    demo = read_boolean(table, "demo", path, problems, default=False)
    selector = read_string(table, "selector", path, problems) or ""
    if selector and not _is_label_selector(selector):
        example = "'{job=\"dcgm\"}'"
        problems.add(f"{path}.selector", f"must be PromQL label matchers in braces, e.g. {example}, got {selector!r}")
    if len(problems.items) > before or name is None or provider is None:
        return None
    return Site(
        name=name,
        provider=provider,
        region=region,
        interval_s=DEFAULT_INTERVAL_S if interval is None else interval,
        timeout_s=DEFAULT_TIMEOUT_S if timeout is None else timeout,
        demo=demo,
        selector=selector,
    )


def _parse_node(table: Mapping[str, Any], path: str, site_names: frozenset[str], problems: Problems) -> Node | None:
    before = len(problems.items)
    check_keys(table, path, _NODE_KEYS, problems)
    name = read_string(table, "name", path, problems, required=True)
    site = read_string(table, "site", path, problems, required=True)
    if site is not None and site not in site_names:
        problems.add(f"{path}.site", f'unknown site "{site}"')
    tags = _tags(table, path, problems)
    interval = read_positive_seconds(table, "interval_s", path, problems)
    timeout = read_positive_seconds(table, "timeout_s", path, problems)
    # Where the node sits (rack, cooling loop, power feed, NVLink domain): what a fault may share with neighbours.
    topology = Topology(**{key: read_string(table, key, path, problems) for key in TOPOLOGY_KEYS})
    source_tables = read_tables(table, "sources", path, problems)
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
        topology=topology,
    )


def _tags(table: Mapping[str, Any], path: str, problems: Problems) -> tuple[str, ...]:
    value = table.get("tags", [])
    if not isinstance(value, list):
        problems.add(f"{path}.tags", f"expected an array of strings, got {type_name(value)}")
        return ()
    tags: list[str] = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not tag.strip():
            problems.add(f"{path}.tags[{i}]", "expected a non-empty string")
        else:
            tags.append(tag)
    return tuple(tags)


def _parse_source(table: Mapping[str, Any], path: str, problems: Problems) -> SourceSpec | None:
    before = len(problems.items)
    kind_text = read_string(table, "kind", path, problems, required=True)
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
            check_keys({key: None}, path, ("kind", "options", *allowed), problems)
    url = _url(table, path, problems, required=True) if "url" in allowed else None
    host = read_string(table, "host", path, problems, required=kind is SourceKind.SSH)
    port = _port(table, path, problems)
    user = read_string(table, "user", path, problems)
    token = read_secret_ref(table, "token", path, problems)
    password = read_secret_ref(table, "password", path, problems)
    if kind in (SourceKind.REDFISH, SourceKind.PROMETHEUS):
        check_credentials(table, path, user, problems)
    spec = SourceSpec(
        kind=kind,
        url=url,
        host=host,
        port=port,
        user=user,
        key_file=read_local_path(table, "key_file", path, problems),
        known_hosts=read_local_path(table, "known_hosts", path, problems),
        token=token,
        password=password,
        verify_tls=read_boolean(table, "verify_tls", path, problems, default=True),
        ca_file=read_local_path(table, "ca_file", path, problems),
        options=_options(table, path, problems),
        headers=read_headers(table, path, problems),
    )
    return None if len(problems.items) > before else spec


def _url(table: Mapping[str, Any], path: str, problems: Problems, *, required: bool) -> str | None:
    value = read_string(table, "url", path, problems, required=required)
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


def _port(table: Mapping[str, Any], path: str, problems: Problems) -> int | None:
    if "port" not in table:
        return None
    value = table["port"]
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(f"{path}.port", f"expected an integer, got {type_name(value)}")
        return None
    if not 1 <= value <= 65535:
        problems.add(f"{path}.port", "must be between 1 and 65535")
        return None
    return value


def _options(table: Mapping[str, Any], path: str, problems: Problems) -> tuple[tuple[str, str], ...]:
    value = table.get("options", {})
    if not isinstance(value, dict):
        problems.add(f"{path}.options", f"expected a table of strings, got {type_name(value)}")
        return ()
    options: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(item, str):
            problems.add(f"{path}.options.{key}", f"expected a string, got {type_name(item)}")
        else:
            options.append((key, item))
    return tuple(options)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
# Headers that carry credentials: never literal in the inventory (user/password or token references do it).
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def read_headers(table: Mapping[str, Any], path: str, problems: Problems) -> tuple[tuple[str, str], ...]:
    value = table.get("headers", {})
    if not isinstance(value, dict):
        problems.add(f"{path}.headers", f"expected a table of strings, got {type_name(value)}")
        return ()
    headers: list[tuple[str, str]] = []
    for name, item in value.items():
        where = f"{path}.headers.{name}"
        if not _HEADER_NAME.fullmatch(name):
            problems.add(where, "is not an HTTP header name")
        elif name.lower() in _SECRET_HEADERS:
            problems.add(where, f"carries a secret: use {LITERAL_SECRETS['token']}, or user and a password reference")
        elif not isinstance(item, str):
            problems.add(where, f"expected a string, got {type_name(item)}")
        elif any(ch in item for ch in "\r\n\0"):
            problems.add(where, "must not contain line breaks")
        else:
            headers.append((name, item))
    return tuple(headers)


def _parse_rule_override(
    table: Mapping[str, Any],
    path: str,
    site_names: frozenset[str],
    providers: set[Any],
    problems: Problems,
) -> tuple[str, str, str, float] | None:
    before = len(problems.items)
    check_keys(table, path, _RULE_KEYS, problems)
    scope = read_string(table, "scope", path, problems, required=True)
    rule = read_string(table, "rule", path, problems, required=True)
    key = read_string(table, "key", path, problems, required=True)
    value = table.get("value")
    if "value" not in table:
        problems.add(f"{path}.value", "required")
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.add(f"{path}.value", f"expected a finite number, got {type_name(value)}")
    if scope is not None:
        _check_scope(scope, f"{path}.scope", site_names, providers, problems)
    if len(problems.items) > before or scope is None or rule is None or key is None:
        return None
    assert isinstance(value, int | float)  # checked above; tells the type checker
    return (scope, rule, key, float(value))


def _check_scope(scope: str, where: str, site_names: frozenset[str], providers: set[Any], problems: Problems) -> None:
    kind, sep, name = scope.partition(":")
    if not sep or kind not in ("site", "provider") or not name:
        problems.add(where, 'must be "site:NAME" or "provider:NAME"')
    elif kind == "site" and name not in site_names:
        problems.add(where, f'unknown site "{name}"')
    elif kind == "provider" and name not in providers:
        # An override for a provider no site uses would silently do nothing: almost always a typo.
        problems.add(where, f'no site has provider "{name}"')


__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_KEYRING_SERVICE",
    "DEFAULT_TIMEOUT_S",
    "MAX_INVENTORY_BYTES",
    "MAX_NODES",
    "MAX_SITES",
    "SOURCE_KEYS",
    "InventoryError",
    "default_inventory_path",
    "dump_document",
    "dump_inventory",
    "fleet_from_document",
    "fleet_to_document",
    "load_inventory",
    "node_to_document",
    "parse_inventory",
    "site_to_document",
    "source_from_document",
    "source_to_document",
]
