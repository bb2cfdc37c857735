"""Reading a site's GPU nodes and their physical topology from NetBox's REST API.

NetBox is where most operators already keep racks, power feeds and BMC addresses; typing them a second time into
the inventory would drift. This module reads ``/api/dcim/sites/``, ``racks/``, ``devices/`` and ``power-feeds/``
(paginated, following ``next``), and turns each device of one role into a node: its rack, its power feed where
NetBox has one on the rack, its cooling loop and NVLink domain from custom fields, and its sources made from URL
templates. A device whose template needs a field NetBox leaves empty is reported and skipped, never written with
a broken URL.

It speaks NetBox 4.x JSON: relations as nested brief objects, choice fields as ``{"value", "label"}``,
``primary_ip`` / ``oob_ip`` as IP address objects whose ``address`` carries a prefix length.
"""

from __future__ import annotations

import json
import string
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from console.config.fleet import Node, SecretRef, SourceKind, SourceSpec, Topology

PAGE_LIMIT = 1000  # NetBox's MAX_PAGE_SIZE default: fewest round trips without asking for an uncapped page
MAX_PAGES = 1000  # a server whose `next` never ends must not keep the import running forever
MAX_BODY_BYTES = 64 * 1024 * 1024
TIMEOUT_S = 30.0
DEFAULT_ROLE = "gpu-node"
# Custom fields that carry what NetBox before 4.7 has no model for (operations practice: cooling as custom fields).
COOLING_LOOP_FIELD = "cooling_loop"
NVLINK_DOMAIN_FIELD = "nvlink_domain"
TEMPLATE_FIELDS = ("name", "primary_ip", "oob_ip")


class NetBoxError(Exception):
    """The import cannot go on; the message says what NetBox answered and what to check."""


@dataclass(frozen=True, slots=True)
class SourceTemplate:
    """A source to make for every device, its URL filled from the device (``{name}``, ``{primary_ip}``,
    ``{oob_ip}``, ``{cf.FIELD}``)."""

    kind: SourceKind
    url: str
    user: str | None = None
    password: SecretRef | None = None


@dataclass(frozen=True, slots=True)
class SkippedDevice:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class NetBoxImport:
    site: str
    nodes: tuple[Node, ...]
    skipped: tuple[SkippedDevice, ...]
    racks: int
    power_feeds: int


def check_template(url: str) -> None:
    """Refuse a template whose fields this importer cannot fill, before anything is fetched."""
    for _text, field, _spec, _conv in string.Formatter().parse(url):
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS and not (field.startswith("cf.") and len(field) > 3):
            known = ", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS)
            raise NetBoxError(f"template {url!r}: unknown field {{{field}}} (use {known} or {{cf.FIELD}})")


def fill_template(url: str, values: Mapping[str, str | None]) -> str:
    """The template with the device's values, or ``ValueError`` naming the first empty field."""
    out = []
    for text, field, _spec, _conv in string.Formatter().parse(url):
        out.append(text)
        if field is None:
            continue
        value = values.get(field)
        if value is None or value == "":
            raise ValueError(f"{{{field}}} is empty in NetBox")
        out.append(value)
    return "".join(out)


def _address(ip: Any) -> str | None:
    """``{"address": "10.0.3.17/24"}`` -> ``10.0.3.17``; IPv6 in brackets so it fits in a URL."""
    if not isinstance(ip, Mapping) or not isinstance(ip.get("address"), str):
        return None
    host = ip["address"].split("/", 1)[0]
    return f"[{host}]" if ":" in host else host


def _text(value: Any) -> str | None:
    if isinstance(value, Mapping):  # a choice field or a nested object
        value = value.get("value", value.get("name"))
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _name_of(obj: Any) -> str | None:
    return _text(obj.get("name")) if isinstance(obj, Mapping) else None


def _id_of(obj: Any) -> int | None:
    value = obj.get("id") if isinstance(obj, Mapping) else None
    return value if isinstance(value, int) else None


class NetBoxClient:
    """GETs against one NetBox, with its token; every answer checked before use."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float = TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise NetBoxError(f"{base_url!r} is not an http(s) URL of a NetBox")
        self.base = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            # v2 tokens (NetBox 4.5+) are "nbt_<key>.<token>" and go as Bearer; older ones as "Token".
            scheme = "Bearer" if self._token.startswith("nbt_") else "Token"
            headers["Authorization"] = f"{scheme} {self._token}"
        return headers

    def get(self, url: str) -> Any:
        request = urllib.request.Request(url, headers=self._headers())
        where = urllib.parse.urlsplit(url).path
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body = response.read(MAX_BODY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            if exc.code in (401, 403):
                raise NetBoxError(
                    f"NetBox refused the token ({exc.code} on {where}: {detail}); check --token-env and that "
                    "the token may read dcim"
                ) from None
            raise NetBoxError(f"NetBox answered {exc.code} on {where}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NetBoxError(f"cannot reach NetBox at {self.base}: {reason}") from None
        if len(body) > MAX_BODY_BYTES:
            raise NetBoxError(f"NetBox's answer on {where} is over {MAX_BODY_BYTES // 2**20} MiB")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise NetBoxError(f"NetBox's answer on {where} is not JSON (is {self.base} a NetBox?)") from None

    def list(self, endpoint: str, **filters: str | int) -> Iterator[Mapping[str, Any]]:
        """Every object of ``endpoint`` matching ``filters``, page after page."""
        query = urllib.parse.urlencode({**filters, "limit": PAGE_LIMIT})
        url: str | None = f"{self.base}/api/{endpoint}/?{query}"
        for _ in range(MAX_PAGES):
            if url is None:
                return
            page = self.get(url)
            if not isinstance(page, Mapping) or not isinstance(page.get("results"), list):
                raise NetBoxError(f"NetBox's answer on /api/{endpoint}/ has no results list (is this NetBox 3.x+?)")
            for item in page["results"]:
                if isinstance(item, Mapping):
                    yield item
            url = self._next(page.get("next"))
        raise NetBoxError(f"/api/{endpoint}/ still had more pages after {MAX_PAGES}")

    def _next(self, link: Any) -> str | None:
        if not link:
            return None
        if not isinstance(link, str):
            raise NetBoxError("NetBox's `next` link is not a URL")
        # NetBox builds `next` from the Host it was asked for; behind a proxy that may be another origin, so keep
        # the path and query and ask the server this import was pointed at.
        parts = urllib.parse.urlsplit(link)
        return f"{self.base}{parts.path[len(urllib.parse.urlsplit(self.base).path) :]}?{parts.query}"


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(exc.read(64 * 1024))
    except (ValueError, OSError):
        return exc.reason if isinstance(exc.reason, str) else "no detail"
    if isinstance(data, Mapping) and isinstance(data.get("detail"), str):
        return data["detail"][:200]
    return "no detail"


def find_site(client: NetBoxClient, site: str) -> Mapping[str, Any]:
    """The site by slug, else by name."""
    for key in ("slug", "name"):
        found = list(client.list("dcim/sites", **{key: site}))
        if found:
            return found[0]
    raise NetBoxError(f"NetBox has no site with slug or name {site!r}")


def _feeds_by_rack(client: NetBoxClient, site_id: int) -> tuple[dict[int, str], int]:
    """One feed name per rack (the primary one where a rack has a primary and a redundant feed), and how many
    feeds the site has."""
    feeds: dict[int, list[tuple[bool, str]]] = {}
    total = 0
    try:
        for feed in client.list("dcim/power-feeds", site_id=site_id):
            total += 1
            rack, name = _id_of(feed.get("rack")), _text(feed.get("name"))
            if rack is not None and name is not None:
                feeds.setdefault(rack, []).append((_text(feed.get("type")) != "primary", name))
    except NetBoxError as exc:
        if " 404 " not in f" {exc} ":  # a NetBox without the power plugin's endpoint: no feeds, not an error
            raise
    return {rack: sorted(names)[0][1] for rack, names in feeds.items()}, total


def _custom(obj: Mapping[str, Any], name: str) -> str | None:
    fields = obj.get("custom_fields")
    return _text(fields.get(name)) if isinstance(fields, Mapping) else None


def _values(device: Mapping[str, Any]) -> dict[str, str | None]:
    values: dict[str, str | None] = {
        "name": _name_of(device),
        "primary_ip": _address(device.get("primary_ip")),
        "oob_ip": _address(device.get("oob_ip")),
    }
    fields = device.get("custom_fields")
    if isinstance(fields, Mapping):
        for key, value in fields.items():
            values[f"cf.{key}"] = _text(value)
    return values


def _sources(templates: tuple[SourceTemplate, ...], values: Mapping[str, str | None]) -> tuple[SourceSpec, ...]:
    specs = []
    for template in templates:
        try:
            url = fill_template(template.url, values)
        except ValueError as exc:
            raise ValueError(f"{template.kind} template: {exc}") from None
        specs.append(SourceSpec(template.kind, url=url, user=template.user, password=template.password))
    return tuple(specs)


def import_site(
    client: NetBoxClient, site: str, inventory_site: str, templates: tuple[SourceTemplate, ...], role: str
) -> NetBoxImport:
    """Every device of ``role`` at ``site`` as a node of ``inventory_site``; what could not be made, skipped."""
    for template in templates:
        check_template(template.url)
    found = find_site(client, site)
    site_id = _id_of(found)
    if site_id is None:
        raise NetBoxError(f"NetBox's site {site!r} has no id")
    racks = {
        rack_id: rack for rack in client.list("dcim/racks", site_id=site_id) if (rack_id := _id_of(rack)) is not None
    }
    feeds, feed_count = _feeds_by_rack(client, site_id)
    nodes: list[Node] = []
    skipped: list[SkippedDevice] = []
    seen: set[str] = set()
    for device in client.list("dcim/devices", site_id=site_id, role=role):
        name = _name_of(device)
        if name is None:
            skipped.append(SkippedDevice(f"device id {_id_of(device)}", "it has no name in NetBox"))
            continue
        if name in seen:
            skipped.append(SkippedDevice(name, "another device of the site has the same name"))
            continue
        try:
            sources = _sources(templates, _values(device))
        except ValueError as exc:
            skipped.append(SkippedDevice(name, str(exc)))
            continue
        seen.add(name)
        rack_id = _id_of(device.get("rack"))
        rack = racks.get(rack_id) if rack_id is not None else None
        topology = Topology(
            rack=_name_of(device.get("rack")),
            power_feed=feeds.get(rack_id) if rack_id is not None else None,
            cooling_loop=_custom(device, COOLING_LOOP_FIELD) or (_custom(rack, COOLING_LOOP_FIELD) if rack else None),
            nvlink_domain=_custom(device, NVLINK_DOMAIN_FIELD),
        )
        nodes.append(Node(name=name, site=inventory_site, sources=sources, topology=topology))
    return NetBoxImport(inventory_site, tuple(nodes), tuple(skipped), len(racks), feed_count)
