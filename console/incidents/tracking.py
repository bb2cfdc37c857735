"""Condition tracking: when a finding becomes a condition, when the condition opens, and when it has cleared.

Per (node, GPU, rule, code) a ``Track`` is pending from the first finding until ``for_s`` has passed, then carries
its open incident. A value inside the hysteresis band of the mildest threshold keeps an existing condition alive
at its severity; a condition not seen for ``clear_s`` resolves. Events (Xid, counter increases) are seen at one
instant and clear after ``clear_s`` of silence. ``console.incidents.lifecycle`` says what each step emits.
"""

from __future__ import annotations

from console.incidents.coverage import known
from console.incidents.detectors import Finding
from console.incidents.lifecycle import IncidentLifecycle
from console.incidents.model import Severity
from console.incidents.rule import Rule
from console.incidents.state import Batch, NodeState, Track, TrackKey


class ConditionTracker:
    __slots__ = ("_lifecycle",)

    def __init__(self, lifecycle: IncidentLifecycle) -> None:
        self._lifecycle = lifecycle

    def finding(self, batch: Batch, rule: Rule, finding: Finding, event: bool) -> None:
        """A detector's finding: classify its value (or take the rule's severity) and ``hit`` its track."""
        ns = batch.ns
        assert ns is not None
        key = (finding.gpu_uuid, rule.id, finding.code)
        severity = finding.severity
        if severity is None:
            if rule.thresholds:
                if finding.value is None:
                    return
                severity = rule.level(finding.value)
                if severity is None:
                    track = ns.tracks.get(key)
                    if track is None or not rule.holds(finding.value):
                        return
                    severity = track.severity
            else:
                severity = rule.severity
        self.hit(batch, rule, key, severity, finding.value, detail=finding.detail, event=event)

    def hit(
        self,
        batch: Batch,
        rule: Rule,
        key: TrackKey,
        severity: Severity,
        value: float | None,
        *,
        detail: str = "",
        event: bool = False,
        action: str = "",
        mnemonic: str = "",
    ) -> None:
        """The condition ``key`` holds at ``batch.t`` with ``severity``: start, advance or refresh its track."""
        ns, t = batch.ns, batch.t
        assert ns is not None
        batch.touched.add(key)
        track = ns.tracks.get(key)
        if track is None:
            track = ns.tracks[key] = Track(rule, key, pending_since=t, last_active=t, severity=severity)
            track.action, track.mnemonic, track.onset_source = action, mnemonic, batch.source_t
        elif track.unknown_since is not None:
            self._lifecycle.known_again(track, t, batch)
            track.last_emit = 0.0  # seen as soon as its data returned: report last_seen_at now
        was_active = track.active
        if track.resumed:  # carried over from before a restart: seeing it now continues it, it does not recur
            track.resumed, was_active = False, True
            track.mnemonic = track.mnemonic or mnemonic
        track.active = not event  # an event is seen at one instant; its incident clears after clear_s of silence
        track.last_active = t
        track.value = value
        if detail:
            track.detail = detail
        if value is not None:
            worse = track.peak is None or (value < track.peak if rule.direction == "below" else value > track.peak)
            if worse:
                track.peak = value
        if track.incident is None:
            track.severity = max(track.severity, severity)
            if t - track.pending_since >= rule.for_s:
                self._lifecycle.open(ns, track, t, batch)
            return
        self._lifecycle.seen(
            ns, track, severity, t, batch, recurred=event or not was_active, event=event, new_detail=bool(detail)
        )

    def hold(self, ns: NodeState, t: float, batch: Batch) -> None:
        """A repeated sample: what the last new sample found still holds at ``t``, as if it were seen again.

        Sample conditions stay active and their clocks run: a pending one opens once ``for_s`` has passed, an open
        one reports ``last_seen_at`` as often as a new sample would, and ``clear_s`` counts from the last repeat."""
        result_ids = ns.plan.result_ids
        touched = batch.touched
        lifecycle = self._lifecycle
        for key, track in list(ns.tracks.items()):
            if not track.active or key in touched or track.rule.id in result_ids:
                continue
            touched.add(key)
            track.last_active = t
            if track.incident is None:
                if t - track.pending_since >= track.rule.for_s:
                    lifecycle.open(ns, track, t, batch)
            else:
                lifecycle.still_seen(track, t, batch)

    def settle_untouched(self, ns: NodeState, t: float, batch: Batch, new_sample: bool) -> None:
        """Conditions not seen in this result are inactive; resolve those clear for ``clear_s``.

        Without a new sample (a failed poll, or a repeat) only result conditions are known to be absent; after a
        failed poll the sample conditions are unknown. In a new sample, an open condition whose inputs are missing
        (its collector is down, or the value is None) is unknown too: it neither clears nor counts as seen."""
        touched = batch.touched
        result_ids = ns.plan.result_ids
        sample = batch.sample
        lifecycle = self._lifecycle
        for key, track in list(ns.tracks.items()):
            if key in touched:
                continue
            rule = track.rule
            if rule.id in result_ids:
                if sample is None and track.incident is not None and rule.kind == "collector_down":
                    continue  # the whole node is down: nothing new about that one collector
            elif not new_sample:
                if sample is None and track.incident is not None and track.unknown_since is None:
                    lifecycle.unknown(ns, track, t, batch)
                continue  # no new data about this condition
            elif track.incident is not None:
                assert sample is not None
                if not known(rule, sample, key[0]):
                    if track.unknown_since is None:
                        lifecycle.unknown(ns, track, t, batch)
                    continue
                if track.unknown_since is not None:
                    lifecycle.known_again(track, t, batch)
            track.active = False
            if track.incident is None:
                del ns.tracks[key]  # a pending condition that went away: its for_s starts over next time
            elif t - max(track.last_active, track.known_again) >= rule.clear_s:
                lifecycle.auto_resolve(ns, key, track, t, batch)

    def settle_tick(self, ns: NodeState, now: float, batch: Batch) -> None:
        """The clock alone: open result conditions whose ``for_s`` has passed, resolve what was clear ``clear_s``
        (never one whose condition is unknown now)."""
        result_ids = ns.plan.result_ids
        for key, track in list(ns.tracks.items()):
            if track.incident is None:
                if track.active and track.rule.id in result_ids and now - track.pending_since >= track.rule.for_s:
                    self._lifecycle.open(ns, track, now, batch)
            elif (
                not track.active
                and track.unknown_since is None
                and now - max(track.last_active, track.known_again) >= track.rule.clear_s
            ):
                self._lifecycle.auto_resolve(ns, key, track, now, batch)
