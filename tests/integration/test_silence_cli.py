"""Maintenance silences and Alertmanager from the command line, end to end: the real ``gpu-console`` script, a
real Alertmanager (Debian's ``prometheus-alertmanager``) on a loopback port, and a loopback dcgm-exporter.

``silence add`` makes an Alertmanager silence when the inventory has an ``alertmanager`` receiver; ``poll`` sends
the Xid it finds as an alert with the console's labels, which that silence suppresses; ``incidents list --json``
says the incident is silenced and by what; ``silence expire`` ends it. Without a receiver the silence is local,
kept beside the database and applied by the console and the list the same way."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from console.incidents.model import ChangeKind, IncidentChange
from console.samples.schema import NodeSample
from console.store import IncidentStore
from tests.helpers.alertmanager_server import Alertmanager, available
from tests.helpers.builders import ExporterStandIn, make_incident
from tests.helpers.hostile_server import realistic_gpu, render

pytestmark = pytest.mark.skipif(not available(), reason="needs Debian's prometheus-alertmanager (scripts/setup.sh)")

SCRIPT = Path(sys.executable).with_name("gpu-console")
NODE = "gpu-node"
UUID = realistic_gpu(0, node=NODE).uuid


def gpu_console(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


def exposition(xid: int) -> str:
    gpus = (realistic_gpu(0, node=NODE, xid_last=xid), realistic_gpu(1, node=NODE))
    return render(NodeSample(node=NODE, site="lab", source="dcgm", time=time.time(), gpus=gpus))


def inventory(path: Path, exporter_url: str, alertmanager_url: str | None) -> Path:
    notify = (
        f'\n[[notify]]\nkind = "alertmanager"\nname = "am"\nurl = "{alertmanager_url}"\n' if alertmanager_url else ""
    )
    path.write_text(
        f"""[[sites]]
name = "lab"
provider = "onprem"
interval_s = 0.25
timeout_s = 1.0

[[nodes]]
name = "{NODE}"
site = "lab"
rack = "r12"
  [[nodes.sources]]
  kind = "dcgm"
  url = "{exporter_url}"
{notify}""",
        encoding="utf-8",
    )
    return path


def test_a_silence_added_from_the_cli_mutes_the_alert_poll_sends_and_the_list_says_so(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite3"
    with Alertmanager(tmp_path / "am") as am, ExporterStandIn(exposition(0)) as exporter:
        config = inventory(tmp_path / "fleet.toml", exporter.url(), am.url)
        where = ("--config", str(config), "--db", str(db))
        added = gpu_console("silence", "add", "--node", NODE, "--hours", "2", "--comment", "PSU swap, OPS-7", *where)
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.split(":")[0]
        made = next(s for s in am.silences() if s["id"] == silence_id)
        assert made["comment"] == "PSU swap, OPS-7" and made["status"]["state"] == "active"
        assert [(m["name"], m["value"]) for m in made["matchers"]] == [("node", NODE)]

        timer = threading.Timer(1.5, lambda: setattr(exporter, "payload", exposition(79)))
        timer.start()
        polled = gpu_console("poll", *where, "--duration", "6")
        timer.cancel()
        assert polled.returncode == 0, polled.stderr
        summary = json.loads(polled.stdout.strip().splitlines()[-1])
        assert summary["incidents_opened"] >= 1
        [receiver] = summary["receivers"]
        assert receiver["name"] == "am" and receiver["last_success_at"] and receiver["last_error"] is None

        alerts = am.alerts(alertname="xid", node=NODE)
        assert alerts, "the Xid was not sent to Alertmanager"
        labels = alerts[0]["labels"]
        assert (labels["gpu"], labels["site"], labels["provider"], labels["rack"]) == (UUID, "lab", "onprem", "r12")
        assert alerts[0]["status"]["state"] == "suppressed" and alerts[0]["status"]["silencedBy"] == [silence_id]

        listed = json.loads(gpu_console("incidents", "list", "--db", str(db), "--json").stdout)
        xid = next(i for i in listed if i["rule"] == "xid")
        assert xid["silenced"] is True
        assert xid["silenced_by"]["id"] == silence_id and xid["silenced_by"]["comment"] == "PSU swap, OPS-7"

        shown = json.loads(gpu_console("silence", "list", "--json", *where).stdout)
        assert [s["id"] for s in shown] == [silence_id]
        expired = gpu_console("silence", "expire", silence_id, *where)
        assert expired.returncode == 0, expired.stderr
        assert next(s for s in am.silences() if s["id"] == silence_id)["status"]["state"] == "expired"
        again = json.loads(gpu_console("incidents", "list", "--db", str(db), "--json").stdout)
        assert next(i for i in again if i["id"] == xid["id"])["silenced"] is False


def test_without_an_alertmanager_a_silence_is_local_and_still_marks_incidents(tmp_path: Path) -> None:
    db = tmp_path / "incidents.sqlite3"
    config = inventory(tmp_path / "fleet.toml", "http://127.0.0.1:9/metrics", None)
    on_node = make_incident("on-node", time.time() - 60, node=NODE, site="lab", provider="onprem")
    elsewhere = make_incident("elsewhere", time.time() - 60, node="other-node", site="lab", provider="onprem")
    with IncidentStore.open(db) as store:
        store.submit([IncidentChange(ChangeKind.OPENED, i, i.opened_at) for i in (on_node, elsewhere)])
    where = ("--config", str(config), "--db", str(db))
    added = gpu_console("silence", "add", "--rack", "r12", "--hours", "1", "--comment", "re-cabling", *where)
    assert added.returncode == 0, added.stderr
    assert "(local)" in added.stdout
    listed = gpu_console("silence", "list", *where)
    assert 'rack="r12"' in listed.stdout and "re-cabling" in listed.stdout

    # The inventory (global --config) says which rack each node is in.
    listed_json = gpu_console("--config", str(config), "incidents", "list", "--db", str(db), "--json").stdout
    marks = {i["id"]: i for i in json.loads(listed_json)}
    assert marks["on-node"]["silenced"] is True and marks["on-node"]["silenced_by"]["comment"] == "re-cabling"
    assert marks["elsewhere"]["silenced"] is False and marks["elsewhere"]["silenced_by"] is None

    unknown = gpu_console("silence", "expire", "no-such-silence", *where)
    assert unknown.returncode == 1 and "no silence with id no-such-silence" in unknown.stderr
    bad = gpu_console("silence", "add", "--node", NODE, "--hours", "0", "--comment", "x", *where)
    assert bad.returncode == 1 and "--hours must be above 0" in bad.stderr
