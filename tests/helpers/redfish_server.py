"""A small Redfish mockup server on 127.0.0.1 for tests (aiohttp.web).

It serves a DMTF mockup directory the way DMTF's Redfish-Mockup-Server does (``/redfish/v1/<path>`` ->
``<path>/index.json``) plus explicit ``routes`` (service path -> file or JSON object, for captures that are not laid
out as a tree), behind an optional path prefix (``/hmc``), with optional HTTP basic auth or Redfish sessions, a log
of every request, and knobs to change a value, break a resource or remove it between polls.

``sushy-static`` (sushy-tools) serves plain mockup trees too, and one test uses it; it has no prefix, no auth, no
sessions and no request log, which the other tests need.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

SESSIONS = "/redfish/v1/SessionService/Sessions"
Route = Path | Mapping[str, Any]


class RedfishMockServer:
    def __init__(
        self,
        mockup_dir: Path | None = None,
        *,
        routes: Mapping[str, Route] | None = None,
        prefix: str = "",
        auth: str | None = None,  # None, "basic" or "session"
        user: str = "monitor",
        password: str = "s3cret",
    ) -> None:
        self._mockup_dir = mockup_dir.resolve() if mockup_dir else None
        self._routes = {_normalize(path): route for path, route in (routes or {}).items()}
        self._overrides: dict[str, bytes | None] = {}
        self._prefix = prefix.rstrip("/")
        self._auth = auth
        self._user, self._password = user, password
        self._tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, service path without the prefix)
        self.deleted_sessions: list[str] = []
        self.delay_s = 0.0  # added to every answer: a slow BMC
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{self._prefix}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RedfishMockServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- knobs -------------------------------------------------------------------------------------------------

    def document(self, path: str) -> dict[str, Any]:
        """The JSON the server currently serves at ``path`` (after earlier changes)."""
        body = self._body(_normalize(path))
        if body is None:
            raise KeyError(path)
        return json.loads(body)

    def set_value(self, path: str, keys: Sequence[str | int], value: Any) -> None:
        """Change one value inside a resource, e.g. ``set_value(p, ["DetectorState"], "Critical")``."""
        doc = self.document(path)
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
        self._overrides[_normalize(path)] = json.dumps(doc).encode()

    def set_raw(self, path: str, body: bytes) -> None:
        self._overrides[_normalize(path)] = body

    def remove(self, path: str) -> None:
        self._overrides[_normalize(path)] = None

    def expire_sessions(self) -> None:
        self._tokens.clear()

    def gets(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET"]

    # -- serving -----------------------------------------------------------------------------------------------

    def _body(self, path: str) -> bytes | None:
        if path in self._overrides:
            return self._overrides[path]
        route = self._routes.get(path)
        if isinstance(route, Path):
            return route.read_bytes()
        if route is not None:
            return json.dumps(route).encode()
        if self._mockup_dir is None or not path.startswith("/redfish/v1"):
            return None
        file = (self._mockup_dir / path.removeprefix("/redfish/v1").strip("/") / "index.json").resolve()
        if not file.is_relative_to(self._mockup_dir) or not file.is_file():
            return None
        return file.read_bytes()

    def _authorized(self, request: web.Request, path: str) -> bool:
        if self._auth is None or path in ("/redfish", "/redfish/v1"):  # the service root needs no auth
            return True
        if self._auth == "session":
            return request.headers.get("X-Auth-Token") in self._tokens
        expected = base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.path
        if self._prefix:
            if not raw.startswith(self._prefix + "/"):
                return web.Response(status=404, text="outside the prefix")
            raw = raw[len(self._prefix) :]
        path = _normalize(raw)
        self.requests.append((request.method, path))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.method == "POST" and path == SESSIONS and self._auth == "session":
            return await self._login(request)
        if request.method == "DELETE" and path.startswith(SESSIONS + "/"):
            self.deleted_sessions.append(path)
            self._tokens.discard(request.headers.get("X-Auth-Token", ""))
            return web.Response(status=204)
        if request.method != "GET":
            return web.Response(status=405)
        if not self._authorized(request, path):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="bmc"'})
        body = self._body(path)
        if body is None:
            return web.Response(status=404, text=f"{path} not found")
        return web.Response(body=body, content_type="application/json")

    async def _login(self, request: web.Request) -> web.Response:
        try:
            creds = await request.json()
        except json.JSONDecodeError:
            return web.Response(status=400)
        if creds.get("UserName") != self._user or creds.get("Password") != self._password:
            return web.Response(status=401)
        token = secrets.token_hex(8)
        self._tokens.add(token)
        location = f"{SESSIONS}/{token}"  # without the prefix, like an HMC behind a proxy
        return web.json_response(
            {"@odata.id": location, "Id": token},
            status=201,
            headers={"X-Auth-Token": token, "Location": location},
        )


def _normalize(path: str) -> str:
    path = path.split("#", 1)[0].rstrip("/")
    return path or "/"


class ThreadedRedfishServer:
    """Runs a ``RedfishMockServer`` on its own loop in a thread, for tests that are not async (poller, probe)."""

    def __init__(self, server: RedfishMockServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="redfish-mock-server", daemon=True)

    def __enter__(self) -> RedfishMockServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
