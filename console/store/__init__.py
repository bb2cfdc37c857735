"""The incident store: SQLite (WAL) with one writer thread, review queries, export, merge and rates."""

from console.store.store import IncidentStore, default_db_path
from console.store.types import (
    DamagedRow,
    IncidentFilter,
    IncidentPage,
    MergeResult,
    PageCursor,
    PastIncident,
    RateRow,
    RepairResult,
    SeenBefore,
    SeenGroup,
    StoreError,
    StoreRecovered,
    TimelineEntry,
)

__all__ = [
    "DamagedRow",
    "IncidentFilter",
    "IncidentPage",
    "IncidentStore",
    "MergeResult",
    "PageCursor",
    "PastIncident",
    "RateRow",
    "RepairResult",
    "SeenBefore",
    "SeenGroup",
    "StoreError",
    "StoreRecovered",
    "TimelineEntry",
    "default_db_path",
]
