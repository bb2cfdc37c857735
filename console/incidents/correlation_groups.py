"""Group incidents: the same cause on several GPUs of one node, or on several nodes sharing a rack, cooling loop,
power feed or NVLink domain, as ONE incident over them.

``console.incidents.correlation`` decides parents within a node; this module opens, grows and resolves the groups
(``GroupBook``), and holds the ``Entry`` both use: what the correlator remembers of one incident (its latest
snapshot, its parent and children). A group opens when ``min_members`` distinct GPUs (or nodes) have a parentless
incident of one of its member rules within ``window_s``, takes later members while it is open, and resolves when
its last child has resolved. Its id hashes what every console sees alike: site, scope, scope name, group rule and
the onset rounded down to ``group_id_window_s`` (plus an ordinal when that id was already taken).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from console.config.fleet import Topology
from console.incidents.correlation_rules import NODE_KEY, CorrelationRules, GroupRule
from console.incidents.model import (
    ChangeKind,
    Incident,
    IncidentChange,
    IncidentContext,
    Outcome,
    Scope,
    Status,
)

_SCOPE_LABELS = {
    "node": "node",
    "rack": "rack",
    "cooling_loop": "cooling loop",
    "power_feed": "power feed",
    "nvlink_domain": "NVLink domain",
}
_DETAIL_MEMBERS = 12  # members named in a group's detail; more are counted


def group_id(
    site: str, scope: str, scope_name: str, rule: str, *, code: str = "", onset: float, ordinal: int = 0
) -> str:
    """A group incident's id: the same on every console that sees the same group (onset already rounded)."""
    text = f"group\x1f{site}\x1f{scope}\x1f{scope_name}\x1f{rule}\x1f{code}\x1f{onset:.0f}\x1f{ordinal}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(slots=True, eq=False)
class Entry:
    """One incident as the correlator knows it: the latest snapshot (with its parent set) and its place in the tree."""

    incident: Incident
    node: str
    gpu: str | None
    ranks: tuple[int | None, ...]  # its rank in each cause rule (console.incidents.correlation_rules.CauseRule.rank)
    open: bool = True
    resolved_t: float | None = None
    parent: Entry | None = None
    member: bool = False  # its parent is a group it is a member of (a cause cannot take it away)
    children: dict[str, Entry] = field(default_factory=dict)
    group: Group | None = None  # set on a group's own entry

    @property
    def id(self) -> str:
        return self.incident.id

    @property
    def opened_at(self) -> float:
        return self.incident.opened_at

    def ancestors(self) -> list[Entry]:
        found: list[Entry] = []
        parent = self.parent
        while parent is not None and len(found) < 16:
            found.append(parent)
            parent = parent.parent
        return found


@dataclass(slots=True, eq=False)
class Group:
    rule: GroupRule
    key: str  # "node" or a topology key
    value: str  # the node's name, or the rack's, loop's ... name
    entry: Entry


class GroupBook:
    """The open groups and the recent candidates for new ones. ``place`` and ``set_parent`` come from the
    correlator (deciding a new entry's parent and re-parenting, with the UPDATED change that goes with it)."""

    __slots__ = ("_by_node", "_entries", "_open", "_recent", "_rules", "_topology", "place", "set_parent")

    def __init__(
        self,
        rules: CorrelationRules,
        topology: Mapping[str, Topology],
        *,
        entries: dict[str, Entry],
        by_node: dict[str, list[Entry]],
        set_parent: Callable[[Entry, Entry | None, float, list[IncidentChange], bool], None],
        place: Callable[[Entry, float, list[IncidentChange]], None],
    ) -> None:
        self._rules = rules
        self._topology = topology
        self._entries = entries
        self._by_node = by_node
        self._open: dict[tuple[str, str, str], Group] = {}
        self._recent: dict[tuple[str, str, str], list[Entry]] = {}
        self.set_parent = set_parent
        self.place = place

    def offer(self, entry: Entry, t: float, out: list[IncidentChange]) -> None:
        """A parentless entry: join an open group it belongs to, or open one with its peers."""
        rule, code = entry.incident.rule, entry.incident.code
        for group_rule in self._rules.groups:
            if not group_rule.matches(rule, code):
                continue
            if group_rule.per_node:
                if entry.gpu is not None and self._offer_node(group_rule, entry, t, out):
                    return
            elif entry.gpu is None and self._offer_topology(group_rule, entry, t, out):
                return

    def _offer_node(self, rule: GroupRule, entry: Entry, t: float, out: list[IncidentChange]) -> bool:
        group = self._open.get((rule.id, NODE_KEY, entry.node))
        if group is not None:
            self.join(group, entry, t, out)
            return True
        peers = [
            d
            for d in self._by_node.get(entry.node, ())
            if d is not entry
            and d.open
            and d.parent is None
            and d.gpu is not None
            and d.gpu != entry.gpu
            and abs(d.opened_at - entry.opened_at) <= rule.window_s
            and rule.matches(d.incident.rule, d.incident.code)
        ]
        if len({d.gpu for d in peers} | {entry.gpu}) < rule.min_members:
            return False
        self._create(rule, (NODE_KEY, entry.node), [*peers, entry], t, out)
        return True

    def _offer_topology(self, rule: GroupRule, entry: Entry, t: float, out: list[IncidentChange]) -> bool:
        topology = self._topology.get(entry.node)
        if topology is None:
            return False
        parts = [(key, value) for key in rule.by if (value := getattr(topology, key, None))]
        for key, value in parts:
            group = self._open.get((rule.id, key, value))
            if group is not None:
                self.join(group, entry, t, out)
                return True
        for key, value in parts:
            recent = self._recent.setdefault((rule.id, key, value), [])
            peers = [
                d
                for d in recent
                if d.open
                and d.parent is None
                and d.node != entry.node
                and entry.opened_at - d.opened_at <= rule.window_s
            ]
            recent.append(entry)
            if len({d.node for d in peers} | {entry.node}) >= rule.min_members:
                self._create(rule, (key, value), [*peers, entry], t, out)
                return True
        return False

    # --- a group's life -----------------------------------------------------------------------------------------

    def _create(
        self, rule: GroupRule, part: tuple[str, str], members: list[Entry], t: float, out: list[IncidentChange]
    ) -> None:
        key, value = part
        first = min(members, key=lambda e: (e.opened_at, e.id))
        context = first.incident.context
        window = self._rules.group_id_window_s
        onset = math.floor(first.opened_at / window) * window
        scope = Scope.NODE if key == NODE_KEY else Scope(key)
        ordinal = 0
        new_id = group_id(context.site, scope, value, rule.id, onset=onset)
        while new_id in self._entries:
            ordinal += 1
            new_id = group_id(context.site, scope, value, rule.id, onset=onset, ordinal=ordinal)
        models = {m.incident.context.gpu_model for m in members}
        drivers = {m.incident.context.driver_version for m in members}
        incident = Incident(
            id=new_id,
            rule=rule.id,
            code="",
            kind=rule.category,
            severity=max(m.incident.severity for m in members),
            status=Status.OPEN,
            title="",
            detail="",
            context=IncidentContext(
                site=context.site,
                provider=context.provider,
                node=first.node,
                gpu_model=models.pop() if len(models) == 1 else None,
                driver_version=drivers.pop() if len(drivers) == 1 else None,
            ),
            opened_at=first.opened_at,
            last_seen_at=t,
            recommended_action=rule.action,
            scope=scope,
            scope_name=value,
        )
        ranks = tuple(cause.rank(rule.id, "") for cause in self._rules.causes) if key == NODE_KEY else ()
        entry = Entry(incident, first.node, None, ranks)
        group = Group(rule, key, value, entry)
        entry.group = group
        self._entries[new_id] = entry
        self._open[(rule.id, key, value)] = group
        if key == NODE_KEY:
            self._by_node.setdefault(value, []).append(entry)
        entry.incident = self._described(group, members)  # the first change describes its members already
        out.append(IncidentChange(ChangeKind.OPENED, entry.incident, t, f"{len(members)} members"))
        for member in members:
            self.set_parent(member, entry, t, out, True)
        if key == NODE_KEY:
            self.place(entry, t, out)  # a node's group may have a cause, adopt symptoms, or join a wider group

    def join(self, group: Group, entry: Entry, t: float, out: list[IncidentChange]) -> None:
        self.set_parent(entry, group.entry, t, out, True)
        self._refresh(group, t, out, note=f"{entry.incident.rule} on {entry.node} joined")

    def child_changed(self, parent: Entry, t: float, out: list[IncidentChange]) -> None:
        """A child of ``parent`` changed (escalated, resolved or left): update or resolve its group."""
        group = parent.group
        if group is None or not parent.open:
            return
        if not any(child.open for child in parent.children.values()):
            self._resolve(group, t, out)
        else:
            self._refresh(group, t, out)

    def _refresh(self, group: Group, t: float, out: list[IncidentChange], note: str = "") -> None:
        entry = group.entry
        before = entry.incident
        after = self._described(group)
        if after.severity < before.severity:
            after = dataclasses.replace(after, severity=before.severity)  # a group's severity only escalates
        if (after.severity, after.title, after.detail, after.nodes) == (
            before.severity,
            before.title,
            before.detail,
            before.nodes,
        ):
            return
        entry.incident = dataclasses.replace(after, last_seen_at=max(before.last_seen_at, t))
        if after.severity > before.severity and not note:
            note = f"escalated to {after.severity.label}"
        out.append(IncidentChange(ChangeKind.UPDATED, entry.incident, t, note))
        if entry.parent is not None:
            self.child_changed(entry.parent, t, out)

    def _resolve(self, group: Group, t: float, out: list[IncidentChange]) -> None:
        entry = group.entry
        last_seen = max((c.incident.last_seen_at for c in entry.children.values()), default=t)
        entry.incident = dataclasses.replace(
            entry.incident,
            status=Status.RESOLVED,
            resolved_at=t,
            outcome=Outcome.AUTO_CLEARED,
            last_seen_at=max(entry.incident.last_seen_at, last_seen),
        )
        self.closed(entry, t)
        out.append(IncidentChange(ChangeKind.RESOLVED, entry.incident, t, "every member resolved"))
        if entry.parent is not None:
            self.child_changed(entry.parent, t, out)

    def closed(self, entry: Entry, t: float) -> None:
        """``entry`` (a group's) is resolved, by itself or by the operator: later members open a new group."""
        entry.open = False
        entry.resolved_t = t
        group = entry.group
        if group is not None and self._open.get((group.rule.id, group.key, group.value)) is group:
            del self._open[(group.rule.id, group.key, group.value)]

    def _described(self, group: Group, members: list[Entry] | None = None) -> Incident:
        entry = group.entry
        if members is None:
            members = [c for c in entry.children.values() if c.member]
        units = {c.gpu for c in members} if group.key == NODE_KEY else {c.node for c in members}
        rules = sorted({c.incident.rule for c in members})
        fields = {
            "count": len(units),
            "name": group.value,
            "scope": _SCOPE_LABELS.get(group.key, group.key),
            "site": entry.incident.context.site,
            "rules": ", ".join(rules),
        }
        try:
            title = group.rule.title.format_map(fields)
        except (ValueError, KeyError, IndexError):
            title = f"{group.rule.id} on {group.value}"
        shown = sorted(members, key=lambda c: (c.opened_at, c.id))
        lines = [_member_line(c) for c in shown[:_DETAIL_MEMBERS]]
        if len(shown) > _DETAIL_MEMBERS:
            lines.append(f"... and {len(shown) - _DETAIL_MEMBERS} more")
        severities = [c.incident.severity for c in (*entry.children.values(), *members)]
        return dataclasses.replace(
            entry.incident,
            title=title,
            detail="One fault shared by: " + "; ".join(lines),
            severity=max(severities, default=entry.incident.severity),
            nodes=tuple(sorted({c.node for c in members} | {entry.node})),
        )

    def prune(self, cutoff: float) -> None:
        """Forget candidates that opened before ``cutoff`` or are no longer parentless and open."""
        for key in list(self._recent):
            kept = [e for e in self._recent[key] if e.open and e.parent is None and e.opened_at >= cutoff]
            if kept:
                self._recent[key] = kept
            else:
                del self._recent[key]

    def restore(self, entry: Entry) -> bool:
        """A group's incident from an earlier run: open again under its rule, topology part and name. True for a
        group of one node's GPUs (it lives among that node's incidents)."""
        incident = entry.incident
        rule = next((g for g in self._rules.groups if g.id == incident.rule), None)
        if rule is None or incident.scope is None:
            return False
        key = NODE_KEY if incident.scope is Scope.NODE else str(incident.scope)
        group = Group(rule, key, incident.scope_name, entry)
        entry.group = group
        self._open.setdefault((rule.id, key, group.value), group)
        if key == NODE_KEY:
            entry.ranks = tuple(cause.rank(rule.id, "") for cause in self._rules.causes)
            entry.node = group.value
        return key == NODE_KEY

    def open_groups(self) -> list[Incident]:
        return [group.entry.incident for group in self._open.values()]


def _member_line(entry: Entry) -> str:
    incident = entry.incident
    where = entry.node if incident.context.gpu_index is None else f"{entry.node} GPU {incident.context.gpu_index}"
    return f"{incident.rule} on {where} ({incident.severity.label})"
