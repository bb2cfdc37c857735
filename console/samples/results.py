"""What one poll of one node gives: a sample, or why there is none. Every layer above the sources reads these."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from console.samples.schema import NodeSample


class PollFailure(StrEnum):
    """Why a poll produced no sample. ``probe`` maps these to exit codes 2, 3 and 4."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    AUTH_REFUSED = "auth_refused"
    BAD_PAYLOAD = "bad_payload"
    BUSY = "busy"  # the previous request to this node is still running (never two in flight)
    # the node's data comes through a shared collector (a site's Prometheus) that has no answer now: the node is
    # unknown, not unreachable; the collector's own ``collector_down`` incident stands for every node behind it
    COLLECTOR = "collector"
    INTERNAL = "internal"


class SourceError(Exception):
    """A poll failed for a reason the operator should see, e.g. ``SourceError(UNREACHABLE, "connection refused")``."""

    def __init__(self, failure: PollFailure, reason: str) -> None:
        super().__init__(f"{failure}: {reason}")
        self.failure = failure
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SourceFailure:
    source: str  # the source's kind and target, never a secret
    failure: PollFailure
    reason: str


@dataclass(frozen=True, slots=True)
class PollResult:
    """The outcome of one poll of one node: a sample, failures, or (when some sources failed) both."""

    node: str
    site: str
    started: float  # epoch seconds
    latency_s: float
    sample: NodeSample | None
    failures: tuple[SourceFailure, ...] = ()
    late_s: float = 0.0  # how far behind its schedule this poll started
    # False when every source answered with the very measurement it gave last time (dcgm-exporter serves the same
    # bytes until its next collection, 30 s by default): ``sample`` is then the previous poll's sample object,
    # proof the node is alive but nothing new to evaluate, chart or roll up.
    fresh: bool = True
    # Measurements from before this poll, oldest first, filled in after the fact (a Prometheus-read site's first
    # read and its first after a gap): charts and incident evidence take them; detection does not.
    earlier: tuple[NodeSample, ...] = ()

    @property
    def ok(self) -> bool:
        return self.sample is not None and not self.failures

    @property
    def reason(self) -> str:
        return "; ".join(f"{f.source}: {f.failure}: {f.reason}" for f in self.failures)
