"""What is sent: an incident as an Alertmanager alert (labels, annotations, times) and as a webhook document.

Alertmanager: labels are identity, annotations are data (operations.md 2.1). Each root incident has the labels
``alertname`` (the rule), ``severity``, ``site``, ``provider``, ``node``, ``gpu`` (its UUID, when it has one),
``rack`` (when known) and ``incident_id``; annotations ``summary`` (the title), ``description`` (the detail)
and ``recommended_action``. An open one is re-sent every minute with ``endsAt`` four intervals ahead, as
Prometheus does, so it never ends on its own (the interval is the notifier's ``resend_s``); a resolved one is sent
with ``endsAt`` = its resolution time, so it ends at once, and re-sent for 15 minutes (Alertmanager keeps no
durable alert state). A change of severity changes the labels: the old alert ends and the new one fires.

Webhook: one JSON document per change (``WEBHOOK_SCHEMA``), signed with HMAC-SHA256 when a secret is set; the
headers, the body and how to check the signature are in ``console.notify.to_webhook``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from console.incidents.model import Incident, Scope

RESEND_S = 60.0  # Prometheus' --rules.alert.resend-delay
HOLD_INTERVALS = 4  # endsAt of an open alert: four re-send intervals ahead
RESOLVED_KEEP_S = 15 * 60.0  # how long a resolution (and a missed webhook document) stays worth sending
WEBHOOK_SCHEMA = "gpu-console.notify/1"
SIGNATURE_HEADER = "X-GPU-Console-Signature"
TIMESTAMP_HEADER = "X-GPU-Console-Timestamp"
EVENT_HEADER = "X-GPU-Console-Event"
DELIVERY_HEADER = "X-GPU-Console-Delivery"


class Event(StrEnum):
    """What happened to a root incident, as a webhook document names it."""

    OPENED = "opened"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    GROUPED = "grouped"  # it became a symptom of another incident, which speaks for it from now on
    TEST = "test"  # Send test in the inventory editor: no incident (console.notify.trial)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rack_of(incident: Incident, racks: Mapping[str, str]) -> str | None:
    """The rack: a rack incident's own scope name, else the rack the inventory gives its node (None if unknown)."""
    if incident.scope is Scope.RACK and incident.scope_name:
        return incident.scope_name
    return racks.get(incident.context.node)


def incident_labels(incident: Incident, rack: str | None) -> dict[str, str]:
    ctx = incident.context
    labels = {
        "alertname": incident.rule,
        "severity": incident.severity.label,
        "site": ctx.site,
        "provider": ctx.provider,
        "node": ctx.node,
        "gpu": ctx.gpu_uuid or "",
        "rack": rack or "",
        "incident_id": incident.id,
    }
    return {name: value for name, value in labels.items() if value}  # Alertmanager drops empty labels itself


def alert_document(incident: Incident, labels: Mapping[str, str], ends_at: float) -> dict[str, Any]:
    annotations = {
        "summary": incident.title,
        "description": incident.detail,
        "recommended_action": incident.recommended_action,
    }
    return {
        "labels": dict(labels),
        "annotations": {name: text for name, text in annotations.items() if text},
        "startsAt": rfc3339(incident.opened_at),
        "endsAt": rfc3339(ends_at),
    }


def _maybe_time(epoch: float | None) -> str | None:
    return None if epoch is None else rfc3339(epoch)


def webhook_document(event: Event, incident: Incident, rack: str | None, at: float, **extra: Any) -> dict[str, Any]:
    """The body of one webhook delivery; ``id`` is unique per document and kept across retries (for dedup)."""
    ctx = incident.context
    return {
        "schema": WEBHOOK_SCHEMA,
        "id": str(uuid.uuid4()),
        "event": str(event),
        "time": rfc3339(at),
        "incident": {
            "id": incident.id,
            "parent_id": incident.parent_id,
            "rule": incident.rule,
            "code": incident.code,
            "kind": incident.kind,
            "severity": incident.severity.label,
            "status": str(incident.status),
            "title": incident.title,
            "detail": incident.detail,
            "recommended_action": incident.recommended_action,
            "site": ctx.site,
            "provider": ctx.provider,
            "node": ctx.node,
            "gpu_uuid": ctx.gpu_uuid,
            "gpu_index": ctx.gpu_index,
            "gpu_model": ctx.gpu_model,
            "rack": rack,
            "scope": str(incident.effective_scope),
            "scope_name": incident.effective_scope_name,
            "nodes": list(incident.member_nodes),
            "count": incident.count,
            "opened_at": rfc3339(incident.opened_at),
            "last_seen_at": rfc3339(incident.last_seen_at),
            "resolved_at": _maybe_time(incident.resolved_at),
            "outcome": None if incident.outcome is None else str(incident.outcome),
        },
        **extra,
    }


def encode(document: Any) -> bytes:
    # ASCII escapes: node text may hold control characters; the receiver gets them escaped, never raw.
    return json.dumps(document, separators=(",", ":"), sort_keys=False).encode("ascii")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>``: the timestamp is signed too, so a captured
    delivery cannot be replayed later under a fresh one."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (the tests use it): constant-time comparison of the signature header."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)
