"""Mean time to resolve and mean time between incidents, per provider and GPU model, beside the incident rate.

Counted over root incidents (a fault once, its symptoms left out) opened in the window. MTTR is the mean of
``resolved_at - opened_at`` over those resolved (by an operator or by clearing); MTBI is GPU-hours observed per
incident (the fleet-normalised gap: 8 GPUs watched for 100 h with 4 incidents is 200 GPU-hours between them).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReliabilityRow:
    provider: str
    gpu_model: str
    incidents: int
    gpu_hours: float
    per_1000_gpu_hours: float | None
    mttr_h: float | None
    mtbi_gpu_hours: float | None


def reliability(conn: sqlite3.Connection, since: float, until: float) -> list[ReliabilityRow]:
    counted = {
        (provider, model): (n, mttr)
        for provider, model, n, mttr in conn.execute(
            "SELECT provider, coalesce(gpu_model, ''), count(*), avg(resolved_at - opened_at) FROM incidents "
            "WHERE opened_at >= ? AND opened_at < ? AND parent_id IS NULL "
            "GROUP BY provider, coalesce(gpu_model, '')",
            (since, until),
        )
    }
    exposure = {
        (provider, model): seconds
        for provider, model, seconds in conn.execute(
            "SELECT provider, gpu_model, sum(gpu_seconds) FROM exposure "
            "WHERE hour >= CAST(? / 3600 AS INTEGER) AND hour * 3600 < ? GROUP BY provider, gpu_model",
            (since, until),
        )
    }
    rows = []
    for key in sorted(set(counted) | set(exposure)):
        n, mttr_s = counted.get(key, (0, None))
        hours = float(exposure.get(key) or 0.0) / 3600
        rows.append(
            ReliabilityRow(
                provider=key[0],
                gpu_model=key[1],
                incidents=int(n),
                gpu_hours=hours,
                per_1000_gpu_hours=n / hours * 1000 if hours > 0 else None,
                mttr_h=None if mttr_s is None else float(mttr_s) / 3600,
                mtbi_gpu_hours=hours / n if n and hours > 0 else None,
            )
        )
    return rows
