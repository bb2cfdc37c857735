"""Colours and formatting shared by the views: one place for the status palette."""

from __future__ import annotations

import html
import re
import time

from PySide6.QtGui import QColor

from console.incidents.model import Incident, Scope, Severity
from console.live.fleet_state import NodeStatus

STATUS_COLORS: dict[NodeStatus, str] = {
    NodeStatus.OK: "#2e7d32",
    NodeStatus.WARNING: "#e0a100",
    NodeStatus.CRITICAL: "#c62828",
    NodeStatus.STALE: "#8d8d8d",
    NodeStatus.UNREACHABLE: "#7b1fa2",
}

SEVERITY_COLORS: dict[Severity, str] = {
    Severity.INFO: "#1565c0",
    Severity.WARNING: "#e0a100",
    Severity.MAJOR: "#ef6c00",
    Severity.CRITICAL: "#c62828",
}

# Eight distinguishable curve colours, one per GPU index on a node.
GPU_COLORS: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
)


def status_color(status: NodeStatus) -> QColor:
    return QColor(STATUS_COLORS[status])


def severity_color(severity: Severity) -> QColor:
    return QColor(SEVERITY_COLORS[severity])


def severity_text_color(severity: Severity) -> str:
    """Text on a ``SEVERITY_COLORS`` background: dark on the light warning amber, white on the others."""
    return "#000000" if severity is Severity.WARNING else "#ffffff"


def gpu_color(index: int) -> str:
    return GPU_COLORS[index % len(GPU_COLORS)]


def fmt(value: float | int | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return f"{text} {unit}" if unit else text


def plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` literally: Qt renders a tooltip that merely looks like HTML as rich text,
    and node text (model names, errors, serials) is not ours to trust."""
    return "<p style='white-space:pre'>" + html.escape(text).replace("\n", "<br>") + "</p>"


# An epoch stamp (2001-2033) standing alone in text made by the engine ("held for 60 s since 1750000000"); a
# longer or shorter number (a serial, a count) or one inside a word or a version string is left as it is.
_EPOCH = re.compile(r"(?<![\w.:-])1[0-9]{9}(?:\.[0-9]+)?(?![\w:-])(?!\.[0-9])")
_SCOPE_WORDS = {
    Scope.RACK: "rack",
    Scope.COOLING_LOOP: "loop",
    Scope.POWER_FEED: "power feed",
    Scope.NVLINK_DOMAIN: "NVLink domain",
    Scope.SITE: "site",
}
NODES_LISTED = 3  # member nodes named in a cell before "+N more"


def hms(stamp: float) -> str:
    """A time of day as operators read it on a page: ``03:12:09 UTC``."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(stamp))


def readable_times(text: str) -> str:
    """``text`` with raw epoch numbers replaced by ``HH:MM:SS UTC`` (titles and details never show epochs)."""
    if "1" not in text:
        return text
    return _EPOCH.sub(lambda match: hms(float(match.group(0))), text)


def scope_text(incident: Incident) -> str:
    """What the incident covers: ``GPU 3``, ``node``, ``rack R01``, ``loop loop-a``, ``power feed pdu-2``."""
    scope = incident.effective_scope
    if scope is Scope.GPU:
        index = incident.context.gpu_index
        return "GPU" if index is None else f"GPU {index}"
    if scope is Scope.NODE:
        return "node"
    return f"{_SCOPE_WORDS[scope]} {incident.scope_name}".strip()


def nodes_text(incident: Incident) -> str:
    """The member nodes, the first few by name: ``node-a`` or ``4 nodes: a, b, c +1``."""
    nodes = incident.member_nodes
    if len(nodes) == 1:
        return nodes[0]
    named = ", ".join(nodes[:NODES_LISTED])
    more = f" +{len(nodes) - NODES_LISTED}" if len(nodes) > NODES_LISTED else ""
    return f"{len(nodes)} nodes: {named}{more}"


def incident_tooltip(incident: Incident) -> str:
    where = f"{scope_text(incident)} · {incident.context.site} · nodes: {', '.join(incident.member_nodes)}"
    return plain_tooltip(
        f"{readable_times(incident.title)}\n{where}\n{readable_times(incident.detail)}\n"
        f"Action: {incident.recommended_action}"
    )
