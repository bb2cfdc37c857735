"""The inventory's ``[[notify]]`` blocks: who is told about incidents, parsed and written back.

Two kinds, each with optional ``name``, ``min_severity``, ``sites`` and ``providers`` filters, ``verify_tls``,
``ca_file`` and ``timeout_s``:

* ``alertmanager``: ``url`` (the Alertmanager's base URL), and either basic auth (``user`` with a ``password_*``
  reference) or a bearer token reference (``token_*``);
* ``webhook``: ``url`` (POSTed one JSON document per change), and an optional HMAC key reference (``secret_*``).

Validated like the rest of the inventory (``console.config.validation``): every problem at once, each led by its
key path (``notify[1].url: must start with http:// or https://``), unknown keys are errors and a literal
``password``, ``token`` or ``secret`` is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from console.config.fleet import SEVERITY_NAMES, Receiver, ReceiverKind
from console.config.secret_refs import (
    HMAC_SECRET_KEYS,
    PASSWORD_KEYS,
    TOKEN_KEYS,
    check_credentials,
    read_secret_ref,
    secret_ref_to_document,
)
from console.config.validation import (
    Problems,
    check_keys,
    read_boolean,
    read_local_path,
    read_positive_seconds,
    read_string,
    type_name,
)

UrlReader = Callable[[Mapping[str, Any], str, Problems], str | None]

DEFAULT_TIMEOUT_S = Receiver(ReceiverKind.WEBHOOK, "").timeout_s
_COMMON_KEYS = ("kind", "name", "url", "verify_tls", "ca_file", "timeout_s", "min_severity", "sites", "providers")
RECEIVER_KEYS: Mapping[ReceiverKind, tuple[str, ...]] = {
    ReceiverKind.ALERTMANAGER: (*_COMMON_KEYS, "user", *PASSWORD_KEYS, *TOKEN_KEYS),
    ReceiverKind.WEBHOOK: (*_COMMON_KEYS, *HMAC_SECRET_KEYS),
}
_ALL_KEYS = frozenset(key for keys in RECEIVER_KEYS.values() for key in keys)
_LITERAL_HMAC = "secret_env, secret_file or secret_keyring"


def parse_receivers(
    tables: Sequence[Mapping[str, Any]],
    site_names: Collection[str],
    providers: Collection[Any],
    problems: Problems,
    read_url: UrlReader,
) -> tuple[Receiver, ...]:
    """Every ``[[notify]]`` table; problems are added to ``problems`` (the caller raises once for the file)."""
    receivers: list[Receiver] = []
    first_at: dict[str, int] = {}
    for i, table in enumerate(tables):
        path = f"notify[{i}]"
        receiver = _parse_receiver(
            table, path, site_names=site_names, providers=providers, problems=problems, read_url=read_url
        )
        if receiver is None:
            continue
        label = receiver.label
        if label in first_at:
            what = "name" if receiver.name else "url"
            problems.add(f"{path}.{what}", f'duplicate receiver "{label}" (first at notify[{first_at[label]}])')
            continue
        first_at[label] = i
        receivers.append(receiver)
    return tuple(receivers)


def _parse_receiver(
    table: Mapping[str, Any],
    path: str,
    *,
    site_names: Collection[str],
    providers: Collection[Any],
    problems: Problems,
    read_url: UrlReader,
) -> Receiver | None:
    before = len(problems.items)
    kind_text = read_string(table, "kind", path, problems, required=True)
    if kind_text is None:
        return None
    try:
        kind = ReceiverKind(kind_text)
    except ValueError:
        problems.add(f"{path}.kind", f'unknown kind "{kind_text}" (expected one of: {", ".join(ReceiverKind)})')
        return None
    _check_receiver_keys(table, path, kind, problems)
    url = read_url(table, path, problems)
    user = read_string(table, "user", path, problems)
    password = read_secret_ref(table, "password", path, problems)
    token = read_secret_ref(table, "token", path, problems)
    secret = read_secret_ref(table, "secret", path, problems)
    if kind is ReceiverKind.ALERTMANAGER:
        check_credentials(table, path, user, problems)
    min_severity = read_string(table, "min_severity", path, problems)
    if min_severity is not None and min_severity not in SEVERITY_NAMES:
        problems.add(f"{path}.min_severity", f'unknown severity "{min_severity}" ({", ".join(SEVERITY_NAMES)})')
    sites = _names(table, "sites", path, problems, known=site_names, what="site")
    provider_names = _names(table, "providers", path, problems, known=providers, what="provider")
    timeout = read_positive_seconds(table, "timeout_s", path, problems)
    receiver = Receiver(
        kind=kind,
        url=url or "",
        name=read_string(table, "name", path, problems) or "",
        user=user,
        password=password,
        token=token,
        secret=secret,
        verify_tls=read_boolean(table, "verify_tls", path, problems, default=True),
        ca_file=read_local_path(table, "ca_file", path, problems),
        timeout_s=DEFAULT_TIMEOUT_S if timeout is None else timeout,
        min_severity=min_severity,
        sites=sites,
        providers=provider_names,
    )
    return None if len(problems.items) > before or url is None else receiver


def _check_receiver_keys(table: Mapping[str, Any], path: str, kind: ReceiverKind, problems: Problems) -> None:
    allowed = RECEIVER_KEYS[kind]
    for key in table:
        if key in allowed:
            continue
        if key == "secret":
            problems.add(
                f"{path}.secret", f"secrets are not allowed in the inventory: use a reference ({_LITERAL_HMAC})"
            )
        elif key in _ALL_KEYS:
            problems.add(f"{path}.{key}", f"not a {kind} setting ({kind} takes: {', '.join(allowed)})")
        else:
            check_keys({key: None}, path, allowed, problems)


def _names(
    table: Mapping[str, Any], key: str, path: str, problems: Problems, *, known: Collection[Any], what: str
) -> tuple[str, ...]:
    value = table.get(key, [])
    where = f"{path}.{key}"
    if not isinstance(value, list):
        problems.add(where, f"expected an array of strings, got {type_name(value)}")
        return ()
    names: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.add(f"{where}[{i}]", "expected a non-empty string")
        elif item not in known:
            # A filter naming nothing in the fleet would silently send nothing: almost always a typo.
            problems.add(f"{where}[{i}]", f'unknown {what} "{item}"')
        else:
            names.append(item)
    return tuple(names)


def receiver_to_document(receiver: Receiver) -> dict[str, Any]:
    """The ``[[notify]]`` table ``parse_receivers`` reads back to an equal ``Receiver`` (references only)."""
    table: dict[str, Any] = {"kind": str(receiver.kind)}
    if receiver.name:
        table["name"] = receiver.name
    table["url"] = receiver.url
    if receiver.user is not None:
        table["user"] = receiver.user
    for prefix, ref in (("password", receiver.password), ("token", receiver.token), ("secret", receiver.secret)):
        if ref is not None:
            table.update(secret_ref_to_document(prefix, ref))
    if not receiver.verify_tls:
        table["verify_tls"] = False
    if receiver.ca_file is not None:
        table["ca_file"] = receiver.ca_file
    if receiver.timeout_s != DEFAULT_TIMEOUT_S:
        table["timeout_s"] = receiver.timeout_s
    if receiver.min_severity is not None:
        table["min_severity"] = receiver.min_severity
    if receiver.sites:
        table["sites"] = list(receiver.sites)
    if receiver.providers:
        table["providers"] = list(receiver.providers)
    return table
