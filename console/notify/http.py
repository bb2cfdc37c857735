"""One HTTP request to a receiver, with its TLS settings, its credentials read at use, a hard timeout, and every
failure turned into ``DeliveryError``: one sentence naming the receiver and what went wrong, never a secret."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from console.config.fleet import Receiver
from console.config.secrets import SecretError, resolve_secret
from console.sources.base import basic_auth_header, tls_setting

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a silence or alert list; more is a misbehaving peer
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class DeliveryError(Exception):
    """A request to a receiver failed; the message is one sentence for the operator."""

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable  # no answer at all (refused, timed out): another peer may do


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


def _snippet(body: bytes) -> str:
    text = _CONTROL.sub(" ", body[:300].decode("utf-8", "replace")).strip()
    return f": {text[:200]}" if text else ""


def auth_headers(receiver: Receiver) -> dict[str, str]:
    """The receiver's credentials, read now (a rotated secret is picked up without a restart)."""
    try:
        if receiver.token is not None:
            return {"Authorization": f"Bearer {resolve_secret(receiver.token)}"}
        if receiver.user is not None and receiver.password is not None:
            return {"Authorization": basic_auth_header(receiver.user, resolve_secret(receiver.password))}
    except SecretError as exc:
        raise DeliveryError(f"{receiver.label}: cannot read its credentials: {exc}") from None
    return {}


def _tls(receiver: Receiver) -> ssl.SSLContext | bool:
    try:
        return tls_setting(receiver.verify_tls, receiver.ca_file)
    except ValueError as exc:
        raise DeliveryError(f"{receiver.label}: {exc}") from None


async def request(
    session: aiohttp.ClientSession,
    receiver: Receiver,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    ok: tuple[int, ...] = (200,),
) -> Answer:
    """``method url`` within ``receiver.timeout_s``; an answer outside ``ok`` raises DeliveryError with its status."""
    sent_headers = {**auth_headers(receiver), **(headers or {})}
    if body is not None:
        sent_headers.setdefault("Content-Type", "application/json")
    timeout = aiohttp.ClientTimeout(total=receiver.timeout_s)
    who = receiver.label
    try:
        async with session.request(
            method,
            url,
            data=body,
            params=params,
            headers=sent_headers,
            ssl=_tls(receiver),
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            data = await response.content.read(MAX_ANSWER_BYTES + 1)
            status = response.status
    except TimeoutError:
        raise DeliveryError(f"{who} did not answer within {receiver.timeout_s:g} s", unreachable=True) from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise DeliveryError(
            f"{who}: TLS certificate not trusted ({exc.certificate_error}); set ca_file, or verify_tls = false",
            unreachable=True,
        ) from None
    except aiohttp.ClientConnectorError as exc:
        reason = (exc.os_error.strerror or str(exc.os_error)) if exc.os_error else str(exc)
        raise DeliveryError(f"{who} cannot be reached: {reason}", unreachable=True) from None
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        raise DeliveryError(f"{who}: the request failed: {type(exc).__name__}: {exc}", unreachable=True) from None
    if len(data) > MAX_ANSWER_BYTES:
        raise DeliveryError(f"{who} answered with more than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB", status=status)
    if status in (401, 403):
        raise DeliveryError(f"{who} refused the credentials (HTTP {status})", status=status)
    if status not in ok:
        raise DeliveryError(f"{who} refused the request: HTTP {status}{_snippet(data)}", status=status)
    return Answer(status, data)


def json_answer(answer: Answer, receiver: Receiver) -> Any:
    try:
        return json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        raise DeliveryError(f"{receiver.label} answered with something that is not JSON") from None
