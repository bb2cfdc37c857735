"""A synthetic incident log of any size, written straight into the schema (benchmarks and paging tests).

Rows go in with raw ``executemany`` in large batches through the real schema (every index and the FTS trigger
included), so the figures measure the database the console really uses.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.db import Database
from console.incidents.model import Outcome, Scope, Severity
from console.store.schema import INCIDENT_COLUMNS, SCHEMA, nodes_json

SITES: tuple[tuple[str, str], ...] = (
    ("us-east-hyperscaler", "hyperscaler"),
    ("eu-gpu-cloud", "gpucloud"),
    ("onprem-dgx-pod", "onprem"),
)
RULES: tuple[tuple[str, str, str, Severity, str], ...] = (
    ("xid", "79", "xid", Severity.CRITICAL, "GPU has fallen off the bus"),
    ("xid", "48", "xid", Severity.MAJOR, "double bit ECC error"),
    ("xid", "63", "remap", Severity.WARNING, "row remapping pending"),
    ("thermal_margin", "", "thermal", Severity.WARNING, "thermal margin below threshold"),
    ("hw_slowdown", "hw_thermal_slowdown", "thermal", Severity.MAJOR, "sustained HW thermal slowdown"),
    ("power_brake", "hw_power_brake_slowdown", "power", Severity.MAJOR, "power brake slowdown"),
    ("nvlink_crc", "", "nvlink", Severity.WARNING, "NVLink CRC error burst"),
    ("node_unreachable", "", "node", Severity.MAJOR, "node stopped answering"),
    ("coolant_flow", "", "cooling", Severity.CRITICAL, "coolant flow below rated"),
    ("pcie_replay", "", "pcie", Severity.INFO, "PCIe replay rate high"),
)
MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA H200")
DRIVERS = ("550.127.05", "570.86.15", "590.48.01")
NODES_PER_SITE = 32
GPUS_PER_NODE = 8
NODES_PER_LOOP = 8  # one cooling loop serves this many neighbouring nodes
SYMPTOM_KINDS = frozenset({"thermal", "power"})  # what a cooling fault shows up as on the GPUs it cools
SYMPTOM_SHARE = 0.5  # of such rows, how many follow a recent cooling fault at their site and become its symptoms
CAUSE_REACH = 400  # rows: how long after a cooling fault a slowdown at the same site is still counted its symptom


@dataclass(frozen=True, slots=True)
class BuildFigures:
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def synthetic_rows(
    count: int, *, seed: int = 1, start: float = 1.7e9, correlated: bool = False
) -> Iterator[tuple[Any, ...]]:
    """Rows in INCIDENT_COLUMNS order, opened in time order (some share a timestamp, to test tie-breaks).

    ``correlated`` (schema 2): every coolant-flow incident is a root of cooling-loop scope over its loop's nodes,
    and about half of the thermal and power slowdowns that follow one at the same site are its symptoms (some
    15% of all rows). It draws from a random stream of its own, so the rest of each row is the same either way.
    Without it every incident is a root (as a log from before correlation).
    """
    rng = random.Random(seed)
    random_float = rng.random
    correlate = random.Random(seed * 7919 + 13).random
    causes: dict[int, tuple[int, str]] = {}  # site number -> (row number, id) of its latest cooling fault
    outcomes = [str(outcome) for outcome in Outcome]
    notes = ("reseated and reset", "drained and replaced", "reset, no change")
    places: dict[tuple[int, int, int], tuple[Any, ...]] = {}
    opened = start
    for n in range(count):
        if random_float() > 0.05:  # 5% share the previous timestamp
            opened += 0.5 + 59.5 * random_float()
        key = (int(random_float() * len(SITES)), int(random_float() * NODES_PER_SITE), int(random_float() * 8))
        place = places.get(key)
        if place is None:
            place = places[key] = _place(*key, seed=seed)
        site, provider, node, gpu_uuid, gpu_index, model, serial, pci = place
        rule, code, kind, severity, words = RULES[int(random_float() * len(RULES))]
        draw = random_float()
        status = "open" if draw < 0.02 else "acknowledged" if draw < 0.03 else "resolved"
        resolved = status == "resolved"
        incident_id = f"inc-{seed}-{n:08d}"
        parent_id = scope = None
        scope_name, members = "", ""
        if correlated and rule == "coolant_flow":
            loop = key[1] // NODES_PER_LOOP
            scope, scope_name = str(Scope.COOLING_LOOP), f"{site}-loop{loop}"
            members = nodes_json(
                [f"{site}-node{loop * NODES_PER_LOOP + k:02d}" for k in range(NODES_PER_LOOP) if correlate() < 0.5]
            )
            causes[key[0]] = (n, incident_id)
        elif correlated and kind in SYMPTOM_KINDS:
            cause = causes.get(key[0])
            if cause is not None and n - cause[0] <= CAUSE_REACH and correlate() < SYMPTOM_SHARE:
                parent_id = cause[1]
        yield (
            incident_id,
            rule,
            code,
            kind,
            int(severity),
            status,
            f"{words} on {node} GPU {gpu_index}",
            f"{rule} {code} detected by the {kind} rule; see evidence",
            site,
            provider,
            node,
            gpu_uuid,
            gpu_index,
            model,
            serial,
            DRIVERS[int(draw * 1000) % len(DRIVERS)],
            "96.00.99.00.01",
            pci,
            opened,
            opened + 600 * random_float(),
            opened + 900 if resolved else None,
            1 + int(50 * random_float()),
            None,
            "check cooling" if kind == "cooling" else "drain node and reset GPU",
            None,
            notes[n % len(notes)] if resolved else "",
            outcomes[n % len(outcomes)] if resolved else None,
            parent_id,
            scope,
            scope_name,
            members or "[]",
            None,  # workload: a log from before attribution could not tell
        )


def _place(site_number: int, node_number: int, gpu_index: int, *, seed: int) -> tuple[Any, ...]:
    site, provider = SITES[site_number]
    node = f"{site}-node{node_number:02d}"
    return (
        site,
        provider,
        node,
        f"GPU-{seed:04d}{site_number:02d}{node_number:02d}-{gpu_index:04d}-0000-000000000000",
        gpu_index,
        MODELS[node_number % len(MODELS)],
        f"SN{site_number}{node_number:05d}{gpu_index}",
        f"0000:{gpu_index * 16 + 0x18:02x}:00.0",
    )


def build(path: Path, count: int, *, seed: int = 1, batch: int = 10_000, correlated: bool = False) -> BuildFigures:
    """Create the database at ``path`` (new or empty) with ``count`` synthetic incidents, as a bulk load;
    ``correlated`` groups some of them under causes (``synthetic_rows``).

    Not crash-safe while it runs (no journal): it is for benchmarks and tests, never for an operator's log.

    The incident indexes and FTS triggers are dropped during the load and rebuilt after it (sorting once is far
    cheaper than nine random index inserts per row); the schema that results is exactly the migrated one.
    """
    db = Database.open(Path(path), SCHEMA)
    conn = db.write_connection
    # A scratch database: no journal while loading (one huge WAL transaction would write everything twice).
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while bulk loading
    columns = ", ".join(INCIDENT_COLUMNS)
    insert = f"INSERT INTO incidents ({columns}) VALUES ({', '.join('?' * len(INCIDENT_COLUMNS))})"
    rows = synthetic_rows(count, seed=seed, correlated=correlated)
    began = time.perf_counter()
    try:
        if conn.execute("SELECT count(*) FROM incidents").fetchone()[0]:
            raise ValueError(f"{path} already holds incidents; build() loads an empty database")
        conn.execute("BEGIN IMMEDIATE")
        deferred = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'incidents' "
            "AND type IN ('index', 'trigger') AND sql IS NOT NULL"
        ).fetchall()
        for kind, name, _ in deferred:
            conn.execute(f"DROP {kind.upper()} [{name}]")
        while True:
            chunk = [row for _, row in zip(range(batch), rows, strict=False)]
            if not chunk:
                break
            conn.executemany(insert, chunk)
        for _, _, sql in deferred:
            conn.execute(sql)
        conn.execute("INSERT INTO incidents_fts(incidents_fts) VALUES ('rebuild')")
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - began
        conn.execute("ANALYZE")
        conn.execute(
            "PRAGMA journal_mode = WAL"
        )  # statistics for the planner, as a long-lived log accumulates via PRAGMA optimize
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        db.close(write=False)  # the loader closes its connection itself, without PRAGMA optimize: ANALYZE just ran
        conn.close()
    return BuildFigures(rows=count, seconds=elapsed)
