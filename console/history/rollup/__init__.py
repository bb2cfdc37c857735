"""History that survives restarts: a per-minute rollup (count, min, mean, max) of every chart metric in SQLite.

The file is its own database beside the incident store, so history writes never wait on incident writes; it is
opened, recovered, read and written through console.db like the incident store's. The parts:

- ``schema``: the tables (one row per entity and minute, a float32 blob of stats), ``RollupError``, the file name;
- ``minutes``: the minute's sums in numpy, a drained batch at a time (the writer's CPU cost lives here);
- ``writes``: the writer thread's side: open minutes written when over, late samples merged, retention;
- ``store``: ``RollupStore``, what the app holds (``observe`` never blocks, never raises);
- ``reader``: ``RollupReader``, what the charts read (every error a ``RollupError``).
"""

from console.history.rollup.minutes import CHASSIS, merge_stats
from console.history.rollup.reader import RollupReader, RollupSeries
from console.history.rollup.schema import ROLLUP_VERSION, RollupError, UnknownMetric, history_path_for
from console.history.rollup.store import (
    BATCH_WINDOW_S,
    DEFAULT_RETENTION_H,
    FLUSH_GRACE_S,
    MAX_QUEUED_SAMPLES,
    PRUNE_EVERY_S,
    RollupStore,
)
from console.history.rollup.writes import MAX_CLOCK_AHEAD_S

__all__ = [
    "BATCH_WINDOW_S",
    "CHASSIS",
    "DEFAULT_RETENTION_H",
    "FLUSH_GRACE_S",
    "MAX_CLOCK_AHEAD_S",
    "MAX_QUEUED_SAMPLES",
    "PRUNE_EVERY_S",
    "ROLLUP_VERSION",
    "RollupError",
    "RollupReader",
    "RollupSeries",
    "RollupStore",
    "UnknownMetric",
    "history_path_for",
    "merge_stats",
]
