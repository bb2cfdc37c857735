"""Correlation: one incident per fault. A cause's incident becomes the parent of its symptoms' incidents, and
the same cause on several GPUs or nodes becomes one group incident over them (``correlation_groups``).

The engine hands every batch of changes to ``Correlator.process`` as the last step of ``observe`` and ``tick``;
it returns them with ``parent_id`` set (the lifecycle knows nothing of parents, so every later change of a child
is patched too), an UPDATED change for an existing incident it re-parents, and the changes of group incidents.
The rules are data (``resources/rules/correlation.toml``, ``correlation_rules``):

* Within a node or a GPU, a ``[[causes]]`` rule lists causes best first and the symptoms they explain. A new
  incident's parent is the best cause open on its node (earlier rule, then earlier cause, then one on its own
  GPU, then the earliest), when the new incident opened within the rule's window of it; a new cause adopts the
  incidents it explains that opened shortly before it (``before_s``) or, with ``adopt_open``, all that are open.
  A better cause takes a symptom from a worse one; a group's member is never taken, but a node's better cause
  takes its worse cause's place in a group over several nodes.
* A parentless incident is offered to the ``[[groups]]``: GPU incidents to the groups of one node, node
  incidents (a node's cause, or a node's group) to the groups of a rack, cooling loop, power feed or NVLink domain.

Cheap on the hot path: an empty batch returns at once, and a change of a known incident costs one dict lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from console.config.fleet import Fleet
from console.incidents.correlation_groups import Entry, GroupBook
from console.incidents.correlation_rules import CorrelationRules
from console.incidents.model import ChangeKind, Incident, IncidentChange, Outcome, Status

PRUNE_EVERY_S = 60.0

Score = tuple[int, int, int, float]


class Correlator:
    __slots__ = ("_by_node", "_effects", "_entries", "_groups", "_last_prune", "_pending", "_ranks", "_rules")

    def __init__(self, rules: CorrelationRules, fleet: Fleet) -> None:
        self._rules = rules
        self._entries: dict[str, Entry] = {}
        self._by_node: dict[str, list[Entry]] = {}
        self._ranks: dict[tuple[str, str], tuple[int | None, ...]] = {}
        self._pending: list[IncidentChange] = []  # group changes caused by an operator's step, sent with the next batch
        self._effects: list[tuple[Entry, float | None]] = []  # groups whose child resolved or escalated
        self._last_prune = 0.0
        topology = {node.name: node.topology for node in fleet.nodes}
        self._groups = GroupBook(
            rules,
            topology,
            entries=self._entries,
            by_node=self._by_node,
            set_parent=self._set_parent,
            place=self._place,
        )

    @property
    def rules(self) -> CorrelationRules:
        return self._rules

    # --- the engine's batches --------------------------------------------------------------------------------

    def process(self, changes: list[IncidentChange], t: float) -> list[IncidentChange]:
        """``changes`` with parents set, followed (each) by the changes correlating them caused."""
        if not changes and not self._pending and not self._effects:
            if t - self._last_prune >= PRUNE_EVERY_S:
                self._prune(t)
            return changes
        out, self._pending = self._pending, []
        self._flush_effects(out, t)
        entries = self._entries
        for change in changes:
            entry = entries.get(change.incident.id)
            if change.kind is ChangeKind.OPENED and entry is None:
                self._opened(change, out)
            elif entry is None:
                out.append(change)  # not seen opening (e.g. before a restart): passed on as it is
            else:
                out.append(self._follow(entry, change))
                self._flush_effects(out, t)
        if t - self._last_prune >= PRUNE_EVERY_S:
            self._prune(t)
        return _coalesced(out) if len(out) > len(changes) else out

    def annotate(self, change: IncidentChange) -> IncidentChange:
        """An operator's step on an engine incident: its parent set; what it does to groups goes out next batch."""
        entry = self._entries.get(change.incident.id)
        if entry is None:
            return change
        change = self._follow(entry, change)
        self._flush_effects(self._pending, change.time)
        return change

    def _flush_effects(self, out: list[IncidentChange], now: float) -> None:
        while self._effects:
            parent, t = self._effects.pop()
            self._groups.child_changed(parent, now if t is None else t, out)

    def resume(self, incidents: Iterable[Incident]) -> None:
        """The open incidents of an earlier run (from the database), engine and group ones: their parents and open
        groups carry on. A group none of whose children carried on resolves with the next batch."""
        resumed = [i for i in incidents if i.status is not Status.RESOLVED and i.id not in self._entries]
        for incident in resumed:
            entry = Entry(incident, incident.context.node, incident.context.gpu_uuid, self._ranks_of(incident))
            self._entries[incident.id] = entry
            if self._groups.restore(entry) or entry.gpu is not None or incident.scope is None:
                self._by_node.setdefault(entry.node, []).append(entry)
        for incident in resumed:
            entry = self._entries[incident.id]
            parent = self._entries.get(incident.parent_id or "")
            if parent is not None and parent is not entry:
                group = parent.group
                member = group is not None and group.rule.matches(incident.rule, incident.code)
                self._attach(entry, parent, member=member)
        for incident in resumed:
            entry = self._entries[incident.id]
            if entry.group is not None and not any(c.open for c in entry.children.values()):
                self._effects.append((entry, None))  # resolved at the next batch's time

    # --- an operator's steps on group incidents -----------------------------------------------------------------

    def owns(self, incident_id: str) -> bool:
        entry = self._entries.get(incident_id)
        return entry is not None and entry.group is not None and entry.open

    def acknowledge(self, incident_id: str, note: str, now: float) -> IncidentChange:
        entry = self._group_entry(incident_id)
        entry.incident = dataclasses.replace(entry.incident, status=Status.ACKNOWLEDGED, acknowledged_at=now)
        return IncidentChange(ChangeKind.ACKNOWLEDGED, entry.incident, now, note)

    def resolve(self, incident_id: str, note: str, outcome: Outcome, now: float) -> IncidentChange:
        entry = self._group_entry(incident_id)
        entry.incident = dataclasses.replace(
            entry.incident, status=Status.RESOLVED, resolved_at=now, resolution_note=note, outcome=outcome
        )
        self._groups.closed(entry, now)
        if entry.parent is not None:
            self._groups.child_changed(entry.parent, now, self._pending)
        return IncidentChange(ChangeKind.RESOLVED, entry.incident, now, note)

    def open_incidents(self, engine_open: Iterable[Incident]) -> list[Incident]:
        """The engine's open incidents with their parents, and the open groups."""
        found = [self._with_parent(incident) for incident in engine_open]
        found += [i for i in self._groups.open_groups() if i.status is not Status.RESOLVED]
        return sorted(found, key=lambda i: (-i.severity, i.opened_at, i.id))

    def _group_entry(self, incident_id: str) -> Entry:
        entry = self._entries.get(incident_id)
        if entry is None or entry.group is None or not entry.open:
            raise KeyError(f"no open incident with id {incident_id!r}")
        return entry

    def _with_parent(self, incident: Incident) -> Incident:
        entry = self._entries.get(incident.id)
        parent_id = entry.parent.id if entry is not None and entry.parent is not None else None
        return incident if incident.parent_id == parent_id else dataclasses.replace(incident, parent_id=parent_id)

    # --- following an incident --------------------------------------------------------------------------------

    def _follow(self, entry: Entry, change: IncidentChange) -> IncidentChange:
        """A later change of a known incident, with its parent patched in. A resolution or escalation of a group's
        child is noted in ``_effects``: the caller sends the change first, then ``_flush_effects``."""
        incident = change.incident
        parent_id = entry.parent.id if entry.parent is not None else None
        if incident.parent_id != parent_id:
            incident = dataclasses.replace(incident, parent_id=parent_id)
            change = dataclasses.replace(change, incident=incident)
        escalated = incident.severity > entry.incident.severity
        entry.incident = incident
        if change.kind is ChangeKind.RESOLVED:
            entry.open = False
            entry.resolved_t = change.time
        elif not escalated:
            return change
        parent = entry.parent
        if parent is not None and parent.group is not None:
            self._effects.append((parent, change.time))
        return change

    def _opened(self, change: IncidentChange, out: list[IncidentChange]) -> None:
        incident = change.incident
        entry = Entry(incident, incident.context.node, incident.context.gpu_uuid, self._ranks_of(incident))
        self._entries[incident.id] = entry
        self._by_node.setdefault(entry.node, []).append(entry)
        parent = self._best_parent(entry)
        if parent is not None:
            group = parent.group
            # a GPU incident of a rule a node's group collects joins it as a member (it counts in "N GPUs")
            member = group is not None and entry.gpu is not None and group.rule.matches(incident.rule, incident.code)
            self._attach(entry, parent, member=member)
            change = dataclasses.replace(change, incident=entry.incident)
        out.append(change)
        if parent is not None and parent.group is not None:
            self._groups.child_changed(parent, change.time, out)
        self._adopt(entry, change.time, out)
        if entry.parent is None:
            self._groups.offer(entry, change.time, out)

    def _place(self, entry: Entry, t: float, out: list[IncidentChange]) -> None:
        """A new group entry of one node (its OPENED already out): find its cause, adopt, join a wider group."""
        parent = self._best_parent(entry)
        if parent is not None:
            self._set_parent(entry, parent, t, out, False)
        self._adopt(entry, t, out)
        if entry.parent is None:
            self._groups.offer(entry, t, out)

    # --- parents ----------------------------------------------------------------------------------------------

    def _ranks_of(self, incident: Incident) -> tuple[int | None, ...]:
        key = (incident.rule, incident.code)
        ranks = self._ranks.get(key)
        if ranks is None:
            ranks = self._ranks[key] = tuple(rule.rank(*key) for rule in self._rules.causes)
        return ranks

    def _score(self, cause: Entry, child: Entry) -> Score | None:
        """How good a parent ``cause`` is for ``child`` (lower is better), or None when it explains nothing."""
        for index, rule in enumerate(self._rules.causes):
            rank_cause = cause.ranks[index] if cause.ranks else None
            if rank_cause is None or rank_cause >= len(rule.causes):
                continue
            rank_child = child.ranks[index] if child.ranks else None
            if rank_child is None or rank_child <= rank_cause:
                continue
            if rule.within == "gpu" and (cause.gpu is None or cause.gpu != child.gpu):
                continue
            delay = child.opened_at - cause.opened_at
            if delay >= 0:
                fits = delay <= rule.after_s or (rule.while_open and cause.open)
            else:
                fits = -delay <= rule.before_s or (rule.adopt_open and child.open and cause.open)
            if fits:
                return (index, rank_cause, 0 if cause.gpu in (None, child.gpu) else 1, cause.opened_at)
        return None

    def _best_parent(self, entry: Entry) -> Entry | None:
        best: Entry | None = None
        best_score: Score | None = None
        for cause in self._by_node.get(entry.node, ()):
            if cause is entry:
                continue
            score = self._score(cause, entry)
            if score is not None and (best_score is None or score < best_score) and entry not in cause.ancestors():
                best, best_score = cause, score
        return best

    def _adopt(self, cause: Entry, t: float, out: list[IncidentChange]) -> None:
        """``cause`` just appeared: take the incidents on its node it explains better than their parents do."""
        ancestors = cause.ancestors()
        for entry in list(self._by_node.get(cause.node, ())):
            if entry is cause or not entry.open or entry in ancestors:
                continue
            score = self._score(cause, entry)
            if score is None:
                continue
            parent = entry.parent
            if parent is None:
                self._set_parent(entry, cause, t, out, False)
            elif entry.member:
                group = parent.group
                if (
                    group is not None
                    and group.key != "node"
                    and cause.parent is None
                    and cause.gpu is None
                    and group.rule.matches(cause.incident.rule, cause.incident.code)
                ):
                    # A node's better cause takes its worse cause's place in the group over several nodes.
                    self._groups.join(group, cause, t, out)
                    self._set_parent(entry, cause, t, out, False)
                    ancestors = cause.ancestors()
            else:
                current = self._score(parent, entry)
                if current is None or score < current:
                    self._set_parent(entry, cause, t, out, False)

    def _attach(self, entry: Entry, parent: Entry | None, *, member: bool) -> None:
        old = entry.parent
        if old is not None:
            old.children.pop(entry.id, None)
        entry.parent = parent
        entry.member = member and parent is not None
        if parent is not None:
            parent.children[entry.id] = entry
        entry.incident = dataclasses.replace(entry.incident, parent_id=parent.id if parent is not None else None)

    def _set_parent(
        self, entry: Entry, parent: Entry | None, t: float, out: list[IncidentChange], member: bool
    ) -> None:
        old = entry.parent
        self._attach(entry, parent, member=member)
        note = f"caused by {parent.incident.title}" if parent is not None else "no longer grouped"
        out.append(IncidentChange(ChangeKind.UPDATED, entry.incident, t, note))
        if old is not None and old.group is not None:
            self._groups.child_changed(old, t, out)
        if parent is not None and parent.group is not None and not member:
            self._groups.child_changed(parent, t, out)  # an adopted child counts in the group's severity

    # --- memory -----------------------------------------------------------------------------------------------

    def _prune(self, t: float) -> None:
        """Forget incidents resolved longer ago than any window looks back, unless they still have open children."""
        self._last_prune = t
        cutoff = t - self._rules.keep_s
        gone = [
            e
            for e in self._entries.values()
            if not e.open
            and e.resolved_t is not None
            and e.resolved_t < cutoff
            and not any(c.open for c in e.children.values())
        ]
        if gone:
            for entry in gone:
                del self._entries[entry.id]
            dead = {id(e) for e in gone}
            for node in list(self._by_node):
                kept = [e for e in self._by_node[node] if id(e) not in dead]
                if kept:
                    self._by_node[node] = kept
                else:
                    del self._by_node[node]
        self._groups.prune(t - max((g.window_s for g in self._rules.groups), default=0.0))


def _coalesced(changes: list[IncidentChange]) -> list[IncidentChange]:
    """One batch's changes without a group's UPDATED changes that a later one of the same group supersedes (a
    group that grew by eight GPUs in one sample says so once). Everything else and the order stay as they are."""
    last: dict[str, int] = {}
    count = 0
    for i, change in enumerate(changes):
        if change.kind is ChangeKind.UPDATED and change.incident.scope is not None:  # a group's own change
            last[change.incident.id] = i
            count += 1
    if len(last) == count:
        return changes
    return [
        c
        for i, c in enumerate(changes)
        if c.kind is not ChangeKind.UPDATED or c.incident.scope is None or last[c.incident.id] == i
    ]
