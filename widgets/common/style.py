"""Colours and formatting shared by the views: one place for the status palette."""

from __future__ import annotations

import html

from PySide6.QtGui import QColor

from console.incidents.model import Incident, Severity
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


def incident_tooltip(incident: Incident) -> str:
    return plain_tooltip(f"{incident.title}\n{incident.detail}\nAction: {incident.recommended_action}")
