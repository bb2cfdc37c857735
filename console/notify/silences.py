"""Silences: Alertmanager's and the console's own (local), matched against an incident's alert labels.

A silence mutes an incident when every matcher matches its labels (``console.notify.alerts.incident_labels``), as
Alertmanager decides: ``=``, ``!=``, ``=~``, ``!~`` with anchored regular expressions, a missing label reading as
"". A local silence has one matcher (``node``, ``rack`` or ``site``). A silenced incident is still detected,
stored and shown; only telling people about it stops (``SilenceMark`` says by which silence).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

LOCAL_MATCHERS = ("node", "rack", "site")


class SilenceSource(StrEnum):
    ALERTMANAGER = "alertmanager"
    LOCAL = "local"


class SilenceState(StrEnum):
    ACTIVE = "active"
    PENDING = "pending"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.is_regex:
            try:
                hit = re.fullmatch(self.value, actual) is not None
            except re.error:  # Alertmanager refuses such a silence; one read from elsewhere matches nothing
                return False
        else:
            hit = actual == self.value
        return hit if self.is_equal else not hit

    def text(self) -> str:
        operator = ("=~" if self.is_equal else "!~") if self.is_regex else ("=" if self.is_equal else "!=")
        return f'{self.name}{operator}"{self.value}"'

    def to_alertmanager(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "is_regex": self.is_regex, "is_equal": self.is_equal}


@dataclass(frozen=True, slots=True)
class SilenceMark:
    """Which silence covers an incident: what ``incidents list --json`` gives as ``silenced_by``."""

    silence_id: str
    comment: str
    ends_at: float
    created_by: str
    source: SilenceSource

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.silence_id,
            "comment": self.comment,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "source": str(self.source),
        }


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    source: SilenceSource
    expired: bool = False  # expired by hand (Alertmanager says so; a local one has ends_at moved to then)

    def state(self, now: float) -> SilenceState:
        if self.expired or now >= self.ends_at:
            return SilenceState.EXPIRED
        return SilenceState.PENDING if now < self.starts_at else SilenceState.ACTIVE

    def active(self, now: float) -> bool:
        return self.state(now) is SilenceState.ACTIVE

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.matchers) and all(matcher.matches(labels) for matcher in self.matchers)

    def mark(self) -> SilenceMark:
        return SilenceMark(self.id, self.comment, self.ends_at, self.created_by, self.source)

    def describe(self) -> str:
        return ", ".join(matcher.text() for matcher in self.matchers)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": str(self.source),
            "state": str(self.state(now)),
            "matchers": [matcher.to_json() for matcher in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
        }


def first_match(silences: tuple[Silence, ...], labels: Mapping[str, str], now: float) -> Silence | None:
    for silence in silences:
        if silence.active(now) and silence.matches(labels):
            return silence
    return None


def parse_time(text: Any) -> float:
    """An RFC 3339 time from Alertmanager (``2026-05-01T12:00:00.123Z``) as epoch seconds."""
    if not isinstance(text, str):
        raise ValueError(f"expected an RFC 3339 time, got {type(text).__name__}")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def silence_from_alertmanager(document: Mapping[str, Any]) -> Silence:
    """One entry of ``GET /api/v2/silences``; ValueError (with what is wrong) for one that is not a silence."""
    try:
        matchers = tuple(
            Matcher(
                name=str(item["name"]),
                value=str(item["value"]),
                is_regex=bool(item.get("isRegex", False)),
                is_equal=bool(item.get("isEqual", True)),
            )
            for item in document["matchers"]
        )
        status = document.get("status") or {}
        return Silence(
            id=str(document["id"]),
            matchers=matchers,
            starts_at=parse_time(document["startsAt"]),
            ends_at=parse_time(document["endsAt"]),
            created_by=str(document.get("createdBy", "")),
            comment=str(document.get("comment", "")),
            source=SilenceSource.ALERTMANAGER,
            expired=status.get("state") == SilenceState.EXPIRED,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an Alertmanager silence (missing or wrong {exc})") from None
