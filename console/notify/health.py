"""Per-receiver status (last success, last error, queued, sent, dropped) and the retry backoff both kinds share.

``Health`` is written on the notifier's loop only; ``status()`` copies it into a frozen ``ReceiverStatus`` that
any thread may read (the GUI's status area, ``poll``'s summary). Transitions are logged, not repetitions.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from console.config.fleet import Receiver

log = logging.getLogger("console.notify")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True, slots=True)
class ReceiverStatus:
    name: str
    kind: str
    url: str
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    queued: int  # waiting to be sent (documents for a webhook, alerts for an Alertmanager)
    sent: int  # documents or alert batches delivered
    dropped: int  # left unsent: no longer relevant, or pushed out of a full queue
    failing: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "queued": self.queued,
            "sent": self.sent,
            "dropped": self.dropped,
            "failing": self.failing,
        }


class Health:
    def __init__(self, receiver: Receiver, *, backoff_max_s: float = BACKOFF_MAX_S) -> None:
        self.receiver = receiver
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.sent = 0
        self.dropped = 0
        self.failing = False
        self._backoff_max_s = backoff_max_s
        self._next_backoff_s = BACKOFF_FIRST_S

    def succeeded(self, now: float, count: int = 1) -> None:
        if self.failing:
            log.info("receiver %s is answering again", self.receiver.label)
        self.failing = False
        self.last_success_at = now
        self.sent += count
        self._next_backoff_s = BACKOFF_FIRST_S

    def failed(self, message: str, now: float) -> float:
        """Record a failure; returns how long to wait before the next try (exponential, with jitter)."""
        if not self.failing or message != self.last_error:
            log.warning("receiver %s: %s", self.receiver.label, message)
        self.failing = True
        self.last_error = message
        self.last_error_at = now
        wait = self._next_backoff_s
        self._next_backoff_s = min(self._next_backoff_s * 2, self._backoff_max_s)
        return min(wait, self._backoff_max_s) * random.uniform(0.8, 1.0)

    def status(self, queued: int) -> ReceiverStatus:
        receiver = self.receiver
        return ReceiverStatus(
            name=receiver.label,
            kind=str(receiver.kind),
            url=receiver.url,
            last_success_at=self.last_success_at,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            queued=queued,
            sent=self.sent,
            dropped=self.dropped,
            failing=self.failing,
        )
