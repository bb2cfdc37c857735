"""A loopback server that answers like NetBox 4.x's REST API for the few dcim endpoints the importer reads.

It serves what a real NetBox serialises: page envelopes with ``count``/``next``/``previous``/``results``, relations
as nested brief objects, choice fields as ``{"value", "label"}``, IP addresses with their prefix length, custom
fields, and 403 with NetBox's ``detail`` for a missing or wrong token. Pages are capped at ``page_size`` whatever
``limit`` asks, so the importer has to follow ``next``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def _brief(kind: str, obj_id: int, name: str, slug: str | None = None) -> dict[str, Any]:
    brief: dict[str, Any] = {
        "id": obj_id,
        "url": f"http://netbox.example/api/dcim/{kind}/{obj_id}/",
        "display": name,
        "name": name,
    }
    if slug is not None:
        brief["slug"] = slug
    return brief


def _ip(obj_id: int, address: str) -> dict[str, Any]:
    family = 6 if ":" in address else 4
    return {
        "id": obj_id,
        "url": f"http://netbox.example/api/ipam/ip-addresses/{obj_id}/",
        "display": address,
        "family": {"value": family, "label": f"IPv{family}"},
        "address": address,
    }


@dataclass
class NetBoxData:
    sites: list[dict[str, Any]] = field(default_factory=list)
    racks: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    power_feeds: list[dict[str, Any]] = field(default_factory=list)
    has_power_feeds: bool = True


def gpu_site() -> NetBoxData:
    """Site ORD1 with two racks on two cooling loops, a primary and a redundant feed on R01, one feed on R02, five
    GPU nodes (one without a BMC address), and a switch that is not a GPU node."""
    site = {**_brief("sites", 7, "ORD1", "ord1"), "status": {"value": "active", "label": "Active"}}
    site_ref = _brief("sites", 7, "ORD1", "ord1")
    racks = [
        {**_brief("racks", 11, "R01"), "site": site_ref, "custom_fields": {"cooling_loop": "loop-a"}},
        {**_brief("racks", 12, "R02"), "site": site_ref, "custom_fields": {"cooling_loop": "loop-b"}},
    ]
    panel = {"power_panel": _brief("power-panels", 31, "Panel A"), "_site_id": 7}
    feeds = [
        {**_brief("power-feeds", 21, "PDU-A1-redundant"), "rack": _brief("racks", 11, "R01"),
         "type": {"value": "redundant", "label": "Redundant"}, **panel},
        {**_brief("power-feeds", 22, "PDU-A1"), "rack": _brief("racks", 11, "R01"),
         "type": {"value": "primary", "label": "Primary"}, **panel},
        {**_brief("power-feeds", 23, "PDU-B1"), "rack": _brief("racks", 12, "R02"),
         "type": {"value": "primary", "label": "Primary"}, **panel},
    ]  # fmt: skip
    gpu_role = _brief("roles", 3, "GPU node", "gpu-node")
    devices = []
    for number in range(1, 6):
        rack = racks[0] if number <= 3 else racks[1]
        devices.append(
            {
                **_brief("devices", 100 + number, f"gpu-{number:03d}"),
                "role": gpu_role,
                "site": site_ref,
                "rack": _brief("racks", rack["id"], rack["name"]),
                "position": float(number * 4),
                "status": {"value": "active", "label": "Active"},
                "primary_ip": _ip(200 + number, f"10.0.3.{16 + number}/24"),
                "oob_ip": None if number == 5 else _ip(300 + number, f"10.0.4.{16 + number}/24"),
                "custom_fields": {"nvlink_domain": "nvl72-a" if number <= 3 else None, "exporter_port": 9400},
            }
        )
    devices.append(
        {
            **_brief("devices", 199, "leaf-1"),
            "role": _brief("roles", 4, "Leaf switch", "leaf-switch"),
            "site": site_ref,
            "rack": _brief("racks", 11, "R01"),
            "status": {"value": "active", "label": "Active"},
            "primary_ip": _ip(299, "10.0.0.2/31"),
            "oob_ip": None,
            "custom_fields": {},
        }
    )
    return NetBoxData(sites=[site], racks=racks, devices=devices, power_feeds=feeds)


class NetBoxServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data: NetBoxData, page_size: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data = data
        self.page_size = page_size
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _matches(obj: dict[str, Any], key: str, value: str) -> bool:
    if key == "site_id":  # a power feed's site is its panel's, which the brief panel object does not carry
        return str(obj.get("_site_id", (obj.get("site") or {}).get("id"))) == value
    if key == "role":
        return (obj.get("role") or {}).get("slug") == value
    if key in ("slug", "name"):
        return obj.get(key) == value
    return True


class _Handler(BaseHTTPRequestHandler):
    server: NetBoxServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("API-Version", "4.6")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        auth = self.headers.get("Authorization", "")
        if not auth:
            self._send(403, {"detail": "Authentication credentials were not provided."})
            return
        if auth != f"Token {TOKEN}":
            self._send(403, {"detail": "Invalid token"})
            return
        parts = urllib.parse.urlsplit(self.path)
        tables = {
            "/api/dcim/sites/": self.server.data.sites,
            "/api/dcim/racks/": self.server.data.racks,
            "/api/dcim/devices/": self.server.data.devices,
        }
        if self.server.data.has_power_feeds:
            tables["/api/dcim/power-feeds/"] = self.server.data.power_feeds
        if parts.path not in tables:
            self._send(404, {"detail": "Not found."})
            return
        query = dict(urllib.parse.parse_qsl(parts.query))
        offset = int(query.pop("offset", "0"))
        limit = min(int(query.pop("limit", "50")), self.server.page_size)
        rows = [r for r in tables[parts.path] if all(_matches(r, k, v) for k, v in query.items())]
        page = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows[offset : offset + limit]]
        after = offset + limit
        base = f"http://netbox.internal:8000{parts.path}"
        next_link = f"{base}?{urllib.parse.urlencode({**query, 'limit': limit, 'offset': after})}"
        self._send(
            200,
            {
                "count": len(rows),
                "next": next_link if after < len(rows) else None,
                "previous": None,
                "results": page,
            },
        )


@contextlib.contextmanager
def running_netbox(data: NetBoxData | None = None, page_size: int = 2) -> Iterator[NetBoxServer]:
    server = NetBoxServer(data or gpu_site(), page_size)
    thread = threading.Thread(target=server.serve_forever, name="netbox-stand-in", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
