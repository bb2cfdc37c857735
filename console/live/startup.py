"""Choosing what to watch and where to write, shared by the GUI and the headless ``poll``."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from console.config.fleet import Fleet

if TYPE_CHECKING:
    from console.history.rollup import RollupStore
    from console.incidents.engine import IncidentEngine
    from console.notify.notifier import Notifier

log = logging.getLogger(__name__)

# How a frozen build's binary is told to be the window's monitoring worker (console.live.worker_process); here, not
# there, so that the launcher can check for it without importing the whole pipeline on every command.
WORKER_ARGUMENT = "--monitor-worker"


def resolve_fleet(config: str | None, demo: bool, seed: int | None) -> Fleet:
    """``--demo`` or no inventory at all -> the built-in demo fleet; otherwise the inventory (errors propagate)."""
    from console.config.inventory import default_inventory_path, load_inventory
    from console.demo.fleet import build_demo_fleet

    if demo:
        return build_demo_fleet(seed=seed or 0)
    path = Path(config) if config else default_inventory_path()
    if config is None and not path.exists():
        log.info("no fleet inventory at %s: starting the built-in demo fleet", path)
        return build_demo_fleet(seed=seed or 0)
    return load_inventory(path)


def resolve_db_path(db: str | None) -> Path:
    from console.store import default_db_path

    return Path(db).expanduser() if db else default_db_path()


# Collect the youngest generation every 20,000 net allocations instead of 700. At 1,000 nodes a second each poll's
# samples live about a second: collected every few milliseconds they survived into the oldest generation, whose
# full collections (~0.3 s each, every few seconds) took a fifth of a core and froze the window
# (scripts/bench/bench_poll.py --app prints the collector's runs and time).
GC_THRESHOLDS = (20_000, 20, 100)


def tune_garbage_collector() -> None:
    """Collector thresholds for a process that polls many nodes (the window and the headless ``poll``)."""
    gc.set_threshold(*GC_THRESHOLDS)


def incident_engine_for(fleet: Fleet) -> IncidentEngine:
    """The built-in rules with the inventory's per-site and per-provider overrides."""
    from console.incidents.engine import IncidentEngine
    from console.incidents.rules import load_rules

    return IncidentEngine(load_rules(overrides=fleet.rule_overrides), fleet)


def open_chart_history(path: Path, retention_h: float, on_unavailable: Callable[[str], None]) -> RollupStore | None:
    """The per-minute chart history, or None (said through ``on_unavailable``): charts are a convenience, so a
    history file that cannot be opened never stops polling or incident recording."""
    from console.history.rollup import RollupError, RollupStore

    try:
        return RollupStore.open(path, retention_h=retention_h)
    except RollupError as exc:
        on_unavailable(f"chart history disabled: {exc}")
        return None


def open_notifier(
    fleet: Fleet, db_path: Path, on_problem: Callable[[str], None], *, always: bool = False
) -> Notifier | None:
    """The started notifier when there is someone to tell (``[[notify]]`` receivers) or silences to apply (a
    notification file beside the database, made by ``gpu-console silence add``), or ``always`` (the GUI, whose
    node menu makes silences); else None, no thread."""
    from console.notify.notifier import Notifier
    from console.notify.schema import notify_path_for

    path = notify_path_for(db_path)
    if not always and not fleet.receivers and not path.exists():
        return None
    notifier = Notifier.open(fleet, path, on_problem)
    notifier.start()
    return notifier
