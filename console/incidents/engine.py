"""The incident engine: poll results in, lifecycle changes out.

Called from one thread at a time (the app serialises calls). ``observe`` runs on every poll result and must stay
cheap: per GPU it runs the level detectors and allocates nothing while the GPU is healthy. ``tick`` (about once a
second) finds stale nodes, promotes node conditions that need no new sample, resolves what stayed clear long
enough and flushes evidence batches.

A result that repeats the previous sample (``PollResult.fresh`` False: the exporter served the same bytes) takes a
light path: liveness and result rules only, while the conditions of that sample are held as still true.

One incident per (node, GPU UUID or none, rule, code) at a time. The engine is a coordinator of four parts, each
readable alone: ``detection`` (running the detectors), ``tracking`` (for_s, hysteresis, clear_s), ``lifecycle``
(open, escalate, resolve, acknowledge and the changes they emit) and ``recorder`` (evidence), over the per-node
state in ``state``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from console.config.fleet import Fleet
from console.incidents.correlation import Correlator
from console.incidents.correlation_rules import CorrelationRules, default_correlation_rules
from console.incidents.detection import DetectorRunner
from console.incidents.evidence import SampleBuffer
from console.incidents.lifecycle import IncidentLifecycle, incident_id
from console.incidents.model import Incident, IncidentChange, Outcome
from console.incidents.plan import RulePlan, plan_rules
from console.incidents.recorder import EvidenceRecorder
from console.incidents.resume import resume_incidents
from console.incidents.rules import RuleSet
from console.incidents.state import Batch, NodeState
from console.incidents.tracking import ConditionTracker
from console.incidents.xid import XidCatalog, load_xid_catalog
from console.samples.results import PollResult

__all__ = ["IncidentEngine", "incident_id"]


class IncidentEngine:
    def __init__(
        self,
        rules: RuleSet,
        fleet: Fleet,
        *,
        clock: Callable[[], float] = time.time,
        xid_catalog: XidCatalog | None = None,
        correlation: CorrelationRules | None = None,
    ) -> None:
        correlation = correlation if correlation is not None else default_correlation_rules()
        rules = correlation.apply_to(rules)  # the Xid burst gap is correlation data
        self._rules = rules
        self._correlator = Correlator(correlation, fleet)  # last step of observe and tick: parents and groups
        self._fleet = fleet
        self._clock = clock
        catalog = xid_catalog if xid_catalog is not None else load_xid_catalog()
        self._started = clock()
        self._recorder = EvidenceRecorder(rules.evidence)
        self._lifecycle = IncidentLifecycle(self._recorder, rules.update_every_s)
        self._tracker = ConditionTracker(self._lifecycle)
        self._detectors = DetectorRunner(self._tracker, self._lifecycle, catalog)
        self._plans: dict[tuple[str, str], RulePlan] = {}
        self._nodes: dict[str, NodeState] = {}
        sites = self._sites = {site.name: site for site in fleet.sites}
        for node in fleet.nodes:
            site = sites.get(node.site)
            provider = site.provider if site else ""
            interval = node.interval_s if node.interval_s is not None else (site.interval_s if site else 1.0)
            self._nodes[node.name] = self._new_node(node.name, node.site, provider, interval)

    # --- public API ---------------------------------------------------------------------------------------

    def observe(self, result: PollResult) -> list[IncidentChange]:
        ns = self._nodes.get(result.node)
        if ns is None:
            # not in the inventory (a site's shared collector, prometheus@SITE): judged at its site's interval
            site = self._sites.get(result.site)
            provider, interval = (site.provider, site.interval_s) if site is not None else ("", 1.0)
            ns = self._nodes[result.node] = self._new_node(result.node, result.site, provider, interval)
        t = result.started + result.latency_s
        sample = result.sample
        # A sample time before the poll began is the source's own stamp (the console stamps at or after it).
        source_t = sample.time if sample is not None and sample.time < result.started else None
        batch = Batch(ns, t, sample, result.failures, source_t)
        ns.last_result_t = t
        ns.last_result_ok = sample is not None
        if sample is not None and not result.failures:
            ns.last_complete_t = t
        if ns.plan.result:
            self._detectors.result(ns, result, t, batch)
        if sample is None:
            new = False
        elif not result.fresh and sample is ns.last_sample:
            # The source served the very measurement it served last time: the node is alive and the conditions
            # of that measurement still hold. Nothing new to evaluate, buffer or record.
            new = False
            if ns.tracks:
                self._tracker.hold(ns, t, batch)
        else:
            new = True
            for earlier in result.earlier:  # backfilled: evidence of what opens now starts before it
                ns.buffer.add(earlier.time, earlier)
            ns.buffer.add(t, sample)
            if result.ok:
                self._detectors.enumeration(ns, sample)
            self._detectors.sample(ns, ns.plan, sample, t, batch)
            ns.last_sample = sample
        if ns.tracks:
            self._tracker.settle_untouched(ns, t, batch, new)
        if ns.recordings:
            self._recorder.record(ns, t, sample if new else None, batch)
        return self._correlator.process(batch.changes, t)

    def tick(self, now: float) -> list[IncidentChange]:
        batch = Batch(None, now, None)
        for ns in self._nodes.values():
            batch.ns = ns
            stale = ns.plan.stale
            if stale is not None and ns.last_result_ok:
                batch.sample = ns.last_sample
                since = ns.last_result_t if ns.last_result_t is not None else self._started
                self._detectors.silence(ns, stale, now, since, batch)
            if ns.tracks:
                batch.sample = ns.last_sample
                self._tracker.settle_tick(ns, now, batch)
            if ns.recordings:
                self._recorder.flush(ns, now, batch)
        return self._correlator.process(batch.changes, now)

    def resume(self, incidents: Iterable[Incident], *, resolved: Iterable[Incident] = ()) -> list[IncidentChange]:
        """Carry on the open and acknowledged incidents of an earlier run (from the database), before the first
        result: each keeps its id, is updated as its condition is seen, and clears ``clear_s`` after start (or
        after its data returns) when the condition no longer shows. ``resolved``: recent resolved incidents,
        whose ids a recurrence must not take again. Returns the changes for incidents that cannot be resumed
        (their rule is disabled now, or a duplicate): they are resolved as auto-cleared. Incidents of no detection
        rule (correlation groups) are left alone."""
        incidents = list(incidents)
        self._correlator.resume(incidents)  # parents and open groups carry on
        return resume_incidents(
            self.node_state,
            self._rules,
            self._lifecycle,
            incidents,
            resolved=resolved,
            now=self._started,
            fleet_nodes=frozenset(node.name for node in self._fleet.nodes),
        )

    def node_state(self, name: str, site: str, provider: str) -> NodeState:
        """The engine's state of node ``name``, created for a node outside the fleet (an incident resumed from
        the database for a node since removed)."""
        ns = self._nodes.get(name)
        if ns is None:
            ns = self._nodes[name] = self._new_node(name, site, provider, 1.0)
        return ns

    def acknowledge(self, incident_id: str, note: str, now: float) -> IncidentChange:
        if self._correlator.owns(incident_id):
            return self._correlator.acknowledge(incident_id, note, now)
        return self._correlator.annotate(self._lifecycle.acknowledge(incident_id, note, now))

    def resolve(self, incident_id: str, note: str, outcome: Outcome, now: float) -> IncidentChange:
        if self._correlator.owns(incident_id):
            return self._correlator.resolve(incident_id, note, outcome, now)
        return self._correlator.annotate(self._lifecycle.resolve(incident_id, note, outcome, now))

    def open_incidents(self) -> list[Incident]:
        return self._correlator.open_incidents(self._lifecycle.open_incidents())

    def buffered_samples(self, node: str) -> int:
        """How many samples the engine holds for ``node`` (for memory accounting and tests)."""
        ns = self._nodes.get(node)
        return len(ns.buffer) if ns else 0

    def _new_node(self, name: str, site: str, provider: str, interval_s: float) -> NodeState:
        key = (site, provider)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = plan_rules(self._rules.for_scope(site, provider))
        return NodeState(name, site, provider, interval_s, plan, SampleBuffer(self._rules.evidence))
