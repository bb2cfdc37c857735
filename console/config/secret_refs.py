"""How an inventory names a secret: only as a reference, never the secret itself.

A reference is ``<prefix>_env`` (an environment variable), ``<prefix>_file`` (an absolute path) or
``<prefix>_keyring`` (a name in the system keyring, or a ``{ service, name }`` table for another service), for
the prefixes ``token`` (agent, Alertmanager), ``password`` (Redfish, Alertmanager) and ``secret`` (a webhook's
HMAC key). ``console.config.secrets`` resolves them at use time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from console.config.fleet import SecretKind, SecretRef
from console.config.validation import LITERAL_SECRETS, Problems, check_keys, read_local_path, read_string

DEFAULT_KEYRING_SERVICE = SecretRef(SecretKind.ENV, "").service
SECRET_SUFFIXES: Mapping[str, SecretKind] = {
    "_env": SecretKind.ENV,
    "_file": SecretKind.FILE,
    "_keyring": SecretKind.KEYRING,
}
TOKEN_KEYS = tuple(f"token{suffix}" for suffix in SECRET_SUFFIXES)
PASSWORD_KEYS = tuple(f"password{suffix}" for suffix in SECRET_SUFFIXES)
HMAC_SECRET_KEYS = tuple(f"secret{suffix}" for suffix in SECRET_SUFFIXES)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_secret_ref(table: Mapping[str, Any], prefix: str, path: str, problems: Problems) -> SecretRef | None:
    given = [f"{prefix}{suffix}" for suffix in SECRET_SUFFIXES if f"{prefix}{suffix}" in table]
    if len(given) > 1:
        problems.add(path, f"give only one of {', '.join(given)}")
        return None
    if not given:
        return None
    key = given[0]
    kind = SECRET_SUFFIXES[key.removeprefix(prefix)]
    where = f"{path}.{key}"
    if kind is SecretKind.KEYRING and isinstance(table[key], dict):
        return _keyring_table(table[key], where, problems)
    if kind is SecretKind.FILE:
        file_name = read_local_path(table, key, path, problems)
        return None if file_name is None else SecretRef(kind, file_name)
    name = read_string(table, key, path, problems)
    if name is None:
        return None
    if kind is SecretKind.ENV and not _ENV_NAME.fullmatch(name):
        problems.add(where, f'"{name}" is not an environment variable name (letters, digits and _)')
        return None
    return SecretRef(kind, name)


def _keyring_table(table: Mapping[str, Any], where: str, problems: Problems) -> SecretRef | None:
    before = len(problems.items)
    check_keys(table, where, ("service", "name"), problems)
    service = read_string(table, "service", where, problems, required=True)
    name = read_string(table, "name", where, problems, required=True)
    if len(problems.items) > before or service is None or name is None:
        return None
    return SecretRef(SecretKind.KEYRING, name, service)


def secret_ref_to_document(prefix: str, ref: SecretRef) -> dict[str, Any]:
    key = f"{prefix}_{ref.kind}"
    if ref.kind is SecretKind.KEYRING and ref.service != DEFAULT_KEYRING_SERVICE:
        return {key: {"service": ref.service, "name": ref.name}}
    return {key: ref.name}


def check_credentials(table: Mapping[str, Any], path: str, user: str | None, problems: Problems) -> None:
    """Basic auth (a user with a password reference) or a token reference, each whole, never both."""
    has_password = any(key in table for key in (*PASSWORD_KEYS, "password"))  # a literal one is refused already
    if user is not None and not has_password:
        problems.add(path, f'user "{user}" needs a password reference ({LITERAL_SECRETS["password"]})')
    if has_password and "user" not in table:
        problems.add(f"{path}.user", "required when a password is given")
    if any(key in table for key in TOKEN_KEYS) and (has_password or "user" in table):
        problems.add(path, "give either basic auth (user and a password reference) or a token reference, not both")
