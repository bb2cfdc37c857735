"""Screenshots of the real windows on the demo fleet, for the README and for looking at the UI as an operator.

Runs the app for --seconds (the scripted faults start within the first minute), selects the node with the
worst open incident, and saves the main window (charts), the fleet map and the incident log as PNG files. The demo
has no past, so for the incident log's picture a short past is written for the incident shown (earlier fixes on
its GPU, one that came back and one that held, and one at another provider): what a ledger a few weeks old shows.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/dev/screenshots.py --out resources/screenshots
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from console.demo.fleet import build_demo_fleet
from console.incidents.model import ChangeKind, Incident, IncidentChange, Outcome, Status
from console.store import IncidentStore
from widgets.app import build_app

DAY = 86400.0


def write_past(store: IncidentStore, incident: Incident) -> None:
    """Earlier incidents of the same rule and code on the incident's GPU, fixed twice, and one elsewhere."""

    def past(name: str, days_ago: float, action: str | None, **context: str) -> list[IncidentChange]:
        at = incident.opened_at - days_ago * DAY
        ctx = dataclasses.replace(incident.context, **context)
        old = dataclasses.replace(incident, id=f"past-{name}", context=ctx, opened_at=at, last_seen_at=at)
        old = dataclasses.replace(old, parent_id=None)
        changes = [IncidentChange(ChangeKind.OPENED, old, at)]
        if action is not None:
            done = dataclasses.replace(
                old, status=Status.RESOLVED, resolved_at=at + 1800, outcome=Outcome.FIXED, resolution_note=action
            )
            step = IncidentChange(ChangeKind.RESOLVED, done, at + 1800, action, operator="alice", action=action)
            changes.append(step)
        return changes

    store.submit(
        past("reset", 12, "gpu_reset")
        + past("came-back", 11.5, "node_reboot")
        + past("elsewhere", 20, "firmware_update", provider="othercloud", site="othercloud-fra")
    )
    store.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("resources/screenshots"))
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    db = Path(tempfile.mkdtemp(prefix="gpu-console-shots-")) / "incidents.sqlite3"
    app = build_app(build_demo_fleet(seed=args.seed, anchor=time.time() - 10), db, seed=args.seed)
    window = app.window
    window.resize(1600, 1000)
    window.show()
    app.start()

    def shoot() -> None:
        window._on_refresh_timer_timeout()
        # The most telling picture: a cooling fault (shaded slowdown, coolant curves), else the worst incident.
        telling = ("coolant_flow_low", "hw_thermal_slowdown")
        worst = max(
            window.state.open_incidents.values(),
            key=lambda i: (i.rule in telling, i.severity, -i.opened_at),
            default=None,
        )
        if worst is not None and worst.context.node in window.state.nodes:
            window.fleet_panel.reveal(worst.context.node, None)
            window.select_node(worst.context.node)
        window.charts.redraw()
        qt_app.processEvents()
        window.grab().save(str(args.out / "main-window.png"))
        window.center_tabs.setCurrentWidget(window.fleet_map)
        window.fleet_map.refresh()
        qt_app.processEvents()
        window.grab().save(str(args.out / "fleet-map.png"))
        window.actions_by_name["incident_log"].trigger()
        log_window = app.extra_windows[0]["incident_log"]
        QTimer.singleShot(3000, lambda: finish(log_window))

    def finish(log_window) -> None:  # type: ignore[no-untyped-def]
        gpu_incidents = [i for i in log_window.model.incidents() if i.context.gpu_uuid and i.parent_id is None]
        shown = max(gpu_incidents, key=lambda i: (i.rule == "xid", i.severity), default=None)
        if shown is not None:
            # The app's own store is read-only (its monitoring worker writes the file): a second writer, briefly.
            with IncidentStore.open(app.db_path) as writer:
                write_past(writer, shown)
            log_window.apply_filters()
            QTimer.singleShot(2000, lambda: select(log_window, shown.id))
        else:
            select(log_window, None)

    def select(log_window, incident_id: str | None) -> None:  # type: ignore[no-untyped-def]
        row = 0 if incident_id is None else log_window.model.row_of(incident_id)
        if row is not None and log_window.model.rowCount():
            log_window.select_row(row)
        QTimer.singleShot(2500, lambda: (log_window.grab().save(str(args.out / "incident-log.png")), qt_app.quit()))

    QTimer.singleShot(int(args.seconds * 1000), shoot)
    qt_app.exec()
    app.shutdown()
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
