"""HTTP side of the Redfish source: URLs under a BMC base (optional path prefix), auth, capped JSON reads.

A BMC behind a proxy (NVIDIA's HMC at ``https://bmc/hmc``) answers with ``@odata.id`` values that lack the
prefix, so every link is turned back into a URL here, never by string concatenation elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import yarl

from console.config.fleet import SecretRef
from console.samples.results import PollFailure, SourceError
from console.sources.base import http_failure, read_capped, resolve_secret_for_poll, tls_setting

log = logging.getLogger(__name__)

SERVICE_ROOT = "/redfish/v1/"
DEFAULT_SESSIONS_PATH = "/redfish/v1/SessionService/Sessions"
DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # a Sensors collection with hundreds of members stays far below this
_SAFE_PATH_CHARS = "/%:@!$&'()*+,;=-._~"


class AuthMode(StrEnum):
    AUTO = "auto"  # a Redfish session where the service offers one, else HTTP basic
    SESSION = "session"
    BASIC = "basic"


class ResourceMissing(Exception):
    """HTTP 404 for a resource: the tree changed (a cached leaf vanished) or a link points nowhere."""

    def __init__(self, url: str) -> None:
        super().__init__(f"{url}: not found (HTTP 404)")
        self.url = url


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: SecretRef | None


def bad_payload(url: str, what: str) -> SourceError:
    return SourceError(PollFailure.BAD_PAYLOAD, f"{url}: {what}")


def split_base_url(base_url: str) -> tuple[str, str]:
    """``https://bmc:8443/hmc/`` -> (``https://bmc:8443``, ``/hmc``); a trailing ``/redfish/v1`` goes."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"redfish url must be http(s)://host[:port][/prefix], got {base_url!r}")
    prefix = parts.path.rstrip("/")
    for tail in ("/redfish/v1", "/redfish"):
        if prefix.endswith(tail):
            prefix = prefix[: -len(tail)]
            break
    return f"{parts.scheme}://{parts.netloc}", prefix


def odata_path(value: Any, url: str, key: str) -> str:
    """The service path of an ``@odata.id`` (fragment dropped; absolute URLs keep only their path)."""
    if not isinstance(value, str) or not value:
        raise bad_payload(url, f"{key}: expected an @odata.id string, got {type(value).__name__}")
    if value.startswith(("http://", "https://")):
        value = urlsplit(value).path
    path = value.split("#", 1)[0]
    if not path.startswith("/"):
        raise bad_payload(url, f"{key}: @odata.id {value!r} is not a path")
    return path


class RedfishClient:
    """GETs JSON resources of one BMC through the shared aiohttp session; every failure is a SourceError."""

    def __init__(
        self,
        base_url: str,
        *,
        http: aiohttp.ClientSession,
        timeout_s: float,
        credentials: Credentials | None,
        auth_mode: AuthMode = AuthMode.AUTO,
        verify_tls: bool = True,
        ca_file: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.origin, self.prefix = split_base_url(base_url)
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._credentials = credentials
        self._auth_mode = auth_mode
        self._ssl = tls_setting(verify_tls, ca_file)
        self._max_bytes = max_bytes
        self._token: str | None = None
        self._session_url: str | None = None
        self._sessions_path = DEFAULT_SESSIONS_PATH
        self._use_basic = auth_mode is AuthMode.BASIC
        self._login_lock = asyncio.Lock()

    # -- URLs ------------------------------------------------------------------------------------------------

    def url_for(self, path: str) -> str:
        """The request URL of a service path, keeping the base URL's prefix exactly once."""
        if self.prefix and not path.startswith(self.prefix + "/redfish"):
            path = self.prefix + path
        return self.origin + quote(path, safe=_SAFE_PATH_CHARS)

    def set_sessions_path(self, path: str) -> None:
        """Where the service root says sessions are created (``Links.Sessions``)."""
        self._sessions_path = path

    # -- requests --------------------------------------------------------------------------------------------

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET one resource. Raises ``ResourceMissing`` on 404 and ``SourceError`` on everything else."""
        url = self.url_for(path)
        await self._ensure_login()
        token_used = self._token
        status, body = await self._request("GET", url)
        if status == 401 and token_used is not None:
            # the session expired or the BMC restarted: log in again once, then give up
            await self._login(stale_token=token_used)
            status, body = await self._request("GET", url)
        if status in (401, 403):
            raise SourceError(PollFailure.AUTH_REFUSED, f"{url}: HTTP {status} ({self._auth_description()})")
        if status == 404:
            raise ResourceMissing(url)
        if status >= 300:
            raise SourceError(PollFailure.UNREACHABLE, f"{url}: HTTP {status}")
        return _decode_object(url, body)

    async def aclose(self) -> None:
        """End the Redfish session (BMCs allow only a few at once); best effort, never raises."""
        session_url, token = self._session_url, self._token
        self._session_url = self._token = None
        if session_url is None or token is None:
            return
        try:
            async with self._http.delete(
                yarl.URL(session_url, encoded=True),
                headers={"X-Auth-Token": token},
                ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=2.0),
            ):
                pass
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("could not delete Redfish session %s: %s", session_url, exc)

    # -- auth ------------------------------------------------------------------------------------------------

    def _auth_description(self) -> str:
        if self._credentials is None:
            return "no credentials configured"
        method = "basic auth" if self._use_basic else "session"
        return f"BMC refused user {self._credentials.user!r} ({method})"

    async def _ensure_login(self) -> None:
        if self._credentials is None or self._use_basic or self._token is not None:
            return
        await self._login(stale_token=None)

    async def _login(self, *, stale_token: str | None) -> None:
        async with self._login_lock:  # concurrent leaf fetches must not open one session each
            if self._token is not None and self._token != stale_token:
                return  # another fetch logged in (again) while this one waited
            assert self._credentials is not None
            url = self.url_for(self._sessions_path)
            payload = {"UserName": self._credentials.user, "Password": await self._password()}
            try:
                async with self._http.post(
                    yarl.URL(url, encoded=True), json=payload, ssl=self._ssl, timeout=self._timeout
                ) as resp:
                    await resp.read()
                    status, token, location = (
                        resp.status,
                        resp.headers.get("X-Auth-Token"),
                        resp.headers.get("Location"),
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise http_failure(exc, url, self._timeout.total) from None
            if status in (404, 405, 501) and self._auth_mode is AuthMode.AUTO:
                log.info("%s offers no Redfish sessions (HTTP %s); using basic auth", self.origin, status)
                self._use_basic = True
                return
            if status in (400, 401, 403):
                raise SourceError(
                    PollFailure.AUTH_REFUSED,
                    f"{url}: session login refused for {self._credentials.user!r} (HTTP {status})",
                )
            if status >= 300:
                raise SourceError(PollFailure.UNREACHABLE, f"{url}: session login failed (HTTP {status})")
            if not token:
                raise bad_payload(url, "session login answered without an X-Auth-Token header")
            self._token = token
            self._session_url = self.url_for(odata_path(location, url, "Location")) if location else None

    async def _password(self) -> str:
        assert self._credentials is not None
        if self._credentials.password is None:
            raise SourceError(PollFailure.AUTH_REFUSED, f"no password reference for user {self._credentials.user!r}")
        return await resolve_secret_for_poll(self._credentials.password, f"password of {self._credentials.user!r}")

    async def _request(self, method: str, url: str) -> tuple[int, bytes | bytearray]:
        headers = {"Accept": "application/json", "OData-Version": "4.0"}
        if self._credentials is not None:
            if self._token is not None:
                headers["X-Auth-Token"] = self._token
            elif self._use_basic:
                pair = f"{self._credentials.user}:{await self._password()}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        try:
            async with self._http.request(
                method,
                yarl.URL(url, encoded=True),
                headers=headers,
                ssl=self._ssl,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status >= 300:
                    return resp.status, b""
                return resp.status, await read_capped(resp, self._max_bytes, lambda size: self._oversize(url, size))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise http_failure(exc, url, self._timeout.total) from None

    def _oversize(self, url: str, declared: int | None) -> str:
        if declared is not None:
            return f"{url}: response of {declared} bytes exceeds the {self._max_bytes}-byte cap"
        return f"{url}: response exceeds the {self._max_bytes}-byte cap"


def _decode_object(url: str, body: bytes | bytearray) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise bad_payload(url, "response is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise bad_payload(url, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise bad_payload(url, f"expected a JSON object, got {type(doc).__name__}")
    return doc
