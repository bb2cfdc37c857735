"""The fleet model: sites, nodes and where each node's telemetry comes from.

These frozen dataclasses are what the inventory (TOML) parses into and what the poller and sources consume.
Secrets are never stored here, only references to where they live (see ``console.config.secrets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class SourceKind(StrEnum):
    DEMO = "demo"
    NVML = "nvml"
    DCGM = "dcgm"
    AGENT = "agent"
    SSH = "ssh"
    REDFISH = "redfish"
    PROMETHEUS = "prometheus"


class SecretKind(StrEnum):
    ENV = "env"
    FILE = "file"
    KEYRING = "keyring"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives: an environment variable, a file, or the system keyring (``service``/``name``)."""

    kind: SecretKind
    name: str  # variable name, file path, or keyring user name
    service: str = "gpu-ops-console"

    def describe(self) -> str:
        if self.kind is SecretKind.KEYRING:
            return f"keyring:{self.service}/{self.name}"
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One way to read a node. Which fields matter depends on ``kind``:

    - demo: ``options`` (profile, seed) only
    - nvml: nothing (this machine)
    - dcgm / agent / prometheus: ``url``; agent also ``token``; prometheus also basic auth (``user`` +
      ``password``) or a bearer ``token``, and extra ``headers`` (a tenant's ``X-Scope-OrgID``: not secrets)
    - ssh: ``host``, ``port``, ``user``, ``key_file``, ``known_hosts``
    - redfish: ``url`` (BMC base, may carry a path prefix), ``user``, ``password``
    ``verify_tls`` applies to every HTTPS kind and is on unless the inventory turns it off for this target.
    """

    kind: SourceKind
    url: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    token: SecretRef | None = None
    password: SecretRef | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def target(self) -> str:
        """A short human description of the endpoint, never containing a secret."""
        if self.kind is SourceKind.SSH:
            user = f"{self.user}@" if self.user else ""
            return f"ssh://{user}{self.host}:{self.port or 22}"
        return self.url or str(self.kind)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    provider: str
    region: str = ""
    interval_s: float = 1.0
    timeout_s: float = 3.0
    demo: bool = False
    # PromQL label matchers added to every query of the site's Prometheus, e.g. '{job="dcgm", cluster="ord1"}'
    selector: str = ""


@dataclass(frozen=True, slots=True)
class Topology:
    """Where a node sits physically: what it shares with its neighbours (a fault of one rack, cooling loop, power
    feed or NVLink domain shows on every node in it). Each is a name, or None when not known."""

    rack: str | None = None
    cooling_loop: str | None = None
    power_feed: str | None = None
    nvlink_domain: str | None = None

    def items(self) -> tuple[tuple[str, str], ...]:
        """The known parts as (key, name), in the inventory's order."""
        pairs = (
            ("rack", self.rack),
            ("cooling_loop", self.cooling_loop),
            ("power_feed", self.power_feed),
            ("nvlink_domain", self.nvlink_domain),
        )
        return tuple((key, value) for key, value in pairs if value is not None)


TOPOLOGY_KEYS = ("rack", "cooling_loop", "power_feed", "nvlink_domain")


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    site: str
    sources: tuple[SourceSpec, ...]
    tags: tuple[str, ...] = ()
    interval_s: float | None = None  # None: the site's default
    timeout_s: float | None = None
    topology: Topology = Topology()


class ReceiverKind(StrEnum):
    ALERTMANAGER = "alertmanager"
    WEBHOOK = "webhook"


# console.incidents.model.Severity's names, lowest first (the config layer sits below incidents).
SEVERITY_NAMES = ("info", "warning", "major", "critical")


@dataclass(frozen=True, slots=True)
class Receiver:
    """Who is told about incidents (``[[notify]]``): an Alertmanager (API v2) or a webhook.

    Secrets are references only: basic auth (``user`` + ``password``) or a bearer ``token`` for an Alertmanager,
    an HMAC ``secret`` for a webhook. The filters are empty (everything) unless the inventory sets them.
    """

    kind: ReceiverKind
    url: str
    name: str = ""
    user: str | None = None
    password: SecretRef | None = None
    token: SecretRef | None = None
    secret: SecretRef | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    timeout_s: float = 10.0
    min_severity: str | None = None  # one of SEVERITY_NAMES
    sites: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The receiver's name in status lines and errors: its own name, else its URL (which holds no secret)."""
        return self.name or self.url


@dataclass(frozen=True, slots=True)
class Fleet:
    sites: tuple[Site, ...]
    nodes: tuple[Node, ...]
    is_demo: bool = False
    origin: str = ""  # file path, or "built-in demo fleet"
    # (scope, rule, key, value); scope is "site:NAME" or "provider:NAME"; applied by the incident engine
    rule_overrides: tuple[tuple[str, str, str, float], ...] = field(default=())
    receivers: tuple[Receiver, ...] = ()  # [[notify]] blocks: where incidents are sent

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(name)

    def interval_s(self, node: Node) -> float:
        return node.interval_s if node.interval_s is not None else self.site(node.site).interval_s

    def timeout_s(self, node: Node) -> float:
        return node.timeout_s if node.timeout_s is not None else self.site(node.site).timeout_s

    def provider_of(self, node_name: str) -> str:
        for node in self.nodes:
            if node.name == node_name:
                return self.site(node.site).provider
        return ""
