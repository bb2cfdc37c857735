"""The rollup writer thread's side: the open minutes' sums, written once each minute is over, and retention.

Sums are kept in memory per minute (bounded by fleet size) and a minute is written once it is over, plus a grace
for late nodes; a late sample for a written minute is merged into the stored row (``merge_stats``). Minutes older
than the retention are deleted on a schedule and SQLite reuses their pages, so the file stops growing. Everything
here runs on the file's one console.db.Writer thread, so none of this state needs a lock.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence

from console.db import Writer
from console.history.rollup.minutes import Minute
from console.samples.schema import NodeSample

MAX_CLOCK_AHEAD_S = 300.0  # a node whose clock runs further ahead than this would write rows retention never reaches

_UPSERT = (
    "INSERT INTO minutes (entity, minute, stats) VALUES (?, ?, ?) "
    "ON CONFLICT (entity, minute) DO UPDATE SET stats = merge_stats(stats, excluded.stats)"
)


class MinuteWrites:
    """The ``console.db.Handler`` of the history file: accumulates drained batches, writes and prunes minutes."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        retention_s: float,
        clock: Callable[[], float],
        prune_every_s: float,
        grace_s: float,
        on_dropped: Callable[[int], None],
    ) -> None:
        self._retention_s = retention_s
        self._clock = clock
        self._prune_every_s = prune_every_s
        self._grace_s = grace_s
        self._on_dropped = on_dropped
        self._ids: dict[tuple[str, str], int] = {
            (node, gpu): entity for entity, node, gpu in conn.execute("SELECT id, node, gpu FROM entities")
        }
        self._open_minutes: dict[int, Minute] = {}
        self._rows_hint = (0, 0)  # the last written minute's GPU and chassis rows: a new one starts that big
        self._spare: Minute | None = None  # a written minute, emptied, for the next minute to reuse
        self._latest = 0.0
        self._last_prune = -math.inf

    def write(self, writer: Writer[NodeSample], batch: Sequence[NodeSample]) -> None:
        try:
            self._add(writer, batch)
        except Exception as exc:  # a bug must not kill the only writer
            writer.report(f"{len(batch)} samples", exc)

    def maintain(self, writer: Writer[NodeSample], *, flushing: bool) -> None:
        self._write_due(writer, everything=flushing)
        self._prune_if_due(writer)

    def _add(self, writer: Writer[NodeSample], samples: Sequence[NodeSample]) -> None:
        """Sort a drained batch by minute, and split it where a node comes twice, then accumulate each part."""
        now = self._clock()
        oldest, newest = now - self._retention_s, now + MAX_CLOCK_AHEAD_S
        parts: dict[tuple[int, int], list[NodeSample]] = {}
        held: dict[tuple[int, str], int] = {}  # (minute, node) -> how many of its samples this batch holds
        dropped = 0
        for sample in samples:
            t = sample.time
            if not oldest <= t <= newest:
                dropped += 1  # outside the kept span (a node with a wrong clock): it would never be pruned
                continue
            minute = int(t // 60)
            seen = held.get((minute, sample.node), 0)
            held[(minute, sample.node)] = seen + 1
            part = parts.get((minute, seen))
            if part is None:
                part = parts[(minute, seen)] = []
            part.append(sample)
            self._latest = max(self._latest, t)
        if dropped:
            self._on_dropped(dropped)
        for (minute, _), part in parts.items():
            acc = self._open_minutes.get(minute)
            if acc is None:
                acc = self._spare if self._spare is not None else Minute(*self._rows_hint)
                self._open_minutes[minute], self._spare = acc, None
            try:
                acc.add(part)
            except Exception:  # a malformed sample (a source's bug) must cost only itself, not its whole batch
                for sample in part:
                    try:
                        acc.add([sample])
                    except Exception as exc:
                        writer.report(f"a sample of node {sample.node}", exc)

    def _write_due(self, writer: Writer[NodeSample], *, everything: bool) -> None:
        now = max(self._latest, self._clock())
        due = [m for m in self._open_minutes if everything or (m + 1) * 60 + self._grace_s <= now]
        for minute in sorted(due):
            self._write_minute(writer, minute, self._open_minutes.pop(minute))

    def _write_minute(self, writer: Writer[NodeSample], minute: int, acc: Minute) -> None:
        rows = acc.rows()
        self._rows_hint = (len(acc.gpus.keys), len(acc.chassis.keys))
        if acc.reset():
            self._spare = acc
        added: dict[tuple[str, str], int] = {}
        try:
            with writer.transaction() as conn:
                params = []
                for node, gpu, blob in rows:
                    key = (node, gpu)
                    entity = self._ids.get(key) or added.get(key)
                    if entity is None:
                        cursor = conn.execute("INSERT INTO entities (node, gpu) VALUES (?, ?)", key)
                        entity = added[key] = int(cursor.lastrowid or 0)
                    params.append((entity, minute, blob))
                conn.executemany(_UPSERT, params)
        except Exception as exc:
            writer.report(f"minute {minute} ({len(rows)} rows)", exc)
            return
        self._ids.update(added)  # only once committed: a rolled-back entity id would point at nothing

    def _prune_if_due(self, writer: Writer[NodeSample]) -> None:
        now = self._clock()
        if now - self._last_prune < self._prune_every_s:
            return
        self._last_prune = now
        cutoff = math.floor((now - self._retention_s) / 60)
        with writer.transaction() as conn:
            # One range delete per entity: the key is (entity, minute), so each is a seek, not a table scan.
            conn.executemany(
                "DELETE FROM minutes WHERE entity = ? AND minute < ?", [(e, cutoff) for e in self._ids.values()]
            )
