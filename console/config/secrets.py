"""Resolve secret references (environment variable, file, system keyring) at the moment of use.

Secrets are never stored in the inventory, the database, logs or exports: only the reference is. Errors name the
reference, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from console.config.fleet import SecretKind, SecretRef


class SecretError(LookupError):
    """A secret reference that cannot be resolved; the message names the reference and what is wrong."""


def resolve_secret(ref: SecretRef) -> str:
    if ref.kind is SecretKind.ENV:
        value = os.environ.get(ref.name)
        if not value:
            raise SecretError(f"environment variable {ref.name} is not set")
        return value
    if ref.kind is SecretKind.FILE:
        path = Path(ref.name).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
        if not value:
            raise SecretError(f"secret file {path} is empty")
        return value
    try:
        import keyring
        import keyring.errors
    except ImportError:  # pragma: no cover - keyring is a core dependency
        raise SecretError("the keyring package is not installed") from None
    try:
        value = keyring.get_password(ref.service, ref.name)
    except keyring.errors.KeyringError as exc:
        raise SecretError(f"system keyring unavailable for {ref.describe()}: {exc}") from None
    if value is None:
        raise SecretError(f"no secret stored in the system keyring for {ref.describe()}")
    return value
