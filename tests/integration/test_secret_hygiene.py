"""Secrets stay references (issue 7, item 5): a Redfish BMC with a password from an environment variable and an
agent with a token file are polled with wrong secrets (auth refused, incidents opened) and then right ones; no
secret value reaches the database file, the log, an export, the probe's output, a repr or the dumped inventory.
Also: node text is shown as plain text in the window, CSV exports defuse formulas, TLS verification is on by
default and a target with it off says so in the fleet panel."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import QLabel

from console.agent.server import AgentConfig, AgentServer
from console.cli.main import build_parser, run_command
from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.config.inventory import dump_inventory, parse_inventory
from console.incidents.engine import IncidentEngine
from console.incidents.model import Outcome
from console.incidents.rules import load_rules
from console.live.fleet_state import FleetState
from console.live.monitor import FleetMonitor, MonitorUpdate
from console.samples.schema import NodeSample
from console.store import IncidentStore
from tests.helpers.hostile_server import HostileServer, LoopThread, realistic_sample
from tests.helpers.redfish_server import RedfishMockServer

LIQUID = Path(__file__).resolve().parents[1] / "fixtures" / "redfish" / "dmtf_mockups" / "mockups"
LIQUID = LIQUID / "public-liquid-cooled-server"
PASSWORD = "pw-Zq8v1Lx2c9RkT4"
WRONG_PASSWORD = "pw-wrong-7Hk3mBn5V"
TOKEN = "tok-Q4w9e8r7t6y5u4i3o2"
WRONG_TOKEN = "tok-wrong-A1s2d3f4g5h6j7"
SECRETS = (PASSWORD, WRONG_PASSWORD, TOKEN, WRONG_TOKEN)
PASSWORD_ENV = "GPU_CONSOLE_TEST_BMC_PASSWORD"
FORMULA = "=cmd|' /C calc'!A0"
HTML_TEXT = "<b>bold</b><img src=x>"


class StaticSource:
    """What the agent samples: a fixed 8-GPU node (the NVIDIA driver cannot run here)."""

    async def poll(self) -> NodeSample:
        return dataclasses.replace(realistic_sample("agent-host"), time=time.time())

    async def aclose(self) -> None:
        return None


def _secret_free(where: str, data: str | bytes) -> None:
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    for secret in SECRETS:
        # The whole secret, and any part of it long enough to matter: a truncated header quoted in a traceback
        # (issue 18) carries a prefix, a wrapped line a suffix.
        for part in (secret, secret[:10], secret[-8:]):
            assert part.encode() not in raw, f"a secret or part of one ({part[:6]}...) appears in {where}"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # includes any traceback text


@dataclass
class Polled:
    fleet: Fleet
    db_dir: Path
    db_path: Path
    redfish_url: str
    agent_url: str
    token_file: Path
    errors_with_wrong_secrets: dict[str, str] = field(default_factory=dict)
    state: FleetState | None = None
    log_lines: list[str] = field(default_factory=list)


def _inventory(redfish_url: str, agent_url: str, token_file: Path) -> str:
    return f"""
[[sites]]
name = "lab"
provider = "onprem"
interval_s = 0.25
timeout_s = 2.0

[[nodes]]
name = "bmc-1"
site = "lab"
  [[nodes.sources]]
  kind = "redfish"
  url = "{redfish_url}"
  user = "monitor"
  password_env = "{PASSWORD_ENV}"

[[nodes]]
name = "agent-1"
site = "lab"
  [[nodes.sources]]
  kind = "agent"
  url = "{agent_url}"
  token_file = "{token_file}"

[[nodes]]
name = "insecure-1"
site = "lab"
  [[nodes.sources]]
  kind = "dcgm"
  url = "https://127.0.0.1:9/metrics"
  verify_tls = false

[[rule_overrides]]
scope = "site:lab"
rule = "node_unreachable"
key = "for_s"
value = 0.5
"""


def _poll_for(fleet: Fleet, store: IncidentStore, engine: IncidentEngine, state: FleetState, seconds: float) -> None:
    updates: list[MonitorUpdate] = []
    monitor = FleetMonitor(fleet, engine=engine, store=store, on_update=updates.append, seed=3)
    monitor.start()
    try:
        time.sleep(seconds)
    finally:
        monitor.stop()
    for update in updates:  # applied on this thread, as the GUI does through its bridge
        if update.result is not None:
            state.apply_result(update.result)
        state.apply_changes(update.changes)
    for incident in [i for i in engine.open_incidents() if i.rule == "node_unreachable"][:1]:
        store.submit([engine.resolve(incident.id, FORMULA, Outcome.FIXED, time.time())])


@pytest.fixture(scope="module")
def polled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Polled]:
    tmp = tmp_path_factory.mktemp("secrets")
    token_file = tmp / "agent.token"
    token_file.write_text(WRONG_TOKEN + "\n")
    token_file.chmod(0o600)
    collect = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    os.environ[PASSWORD_ENV] = WRONG_PASSWORD
    loop = LoopThread("secret-servers")
    loop.start()
    redfish = RedfishMockServer(LIQUID, auth="session", user="monitor", password=PASSWORD)
    config = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, interval_s=0.2, rate_per_s=1000.0, rate_burst=1000)
    agent = AgentServer(config, StaticSource())
    try:
        redfish_url = loop.call(redfish.start())
        loop.call(agent.start())
        fleet = parse_inventory(_inventory(redfish_url, agent.url, token_file), "fleet.toml")
        db_path = tmp / "db" / "incidents.sqlite3"
        db_path.parent.mkdir()
        run = Polled(fleet, db_path.parent, db_path, redfish_url, agent.url, token_file)
        store = IncidentStore.open(db_path)
        engine = IncidentEngine(load_rules(overrides=fleet.rule_overrides), fleet)
        state = FleetState(fleet)
        _poll_for(fleet, store, engine, state, 2.5)
        run.errors_with_wrong_secrets = {name: node.last_error for name, node in state.nodes.items()}
        os.environ[PASSWORD_ENV] = PASSWORD  # the operator fixes both secrets; references are read at each use
        token_file.write_text(TOKEN + "\n")
        _poll_for(fleet, store, engine, state, 2.5)
        store.close()
        run.state = state
        run.log_lines = collect.lines
        yield run
    finally:
        root.removeHandler(collect)
        root.setLevel(old_level)
        os.environ.pop(PASSWORD_ENV, None)
        loop.call(agent.stop())
        loop.call(redfish.close())
        loop.stop()


def test_wrong_secrets_are_refused_and_right_ones_are_picked_up_without_a_restart(polled: Polled) -> None:
    errors = polled.errors_with_wrong_secrets
    assert "auth_refused" in errors["bmc-1"], errors["bmc-1"]
    assert "auth_refused" in errors["agent-1"] and "refused the token" in errors["agent-1"], errors["agent-1"]
    assert polled.state is not None
    bmc, agent = polled.state.nodes["bmc-1"], polled.state.nodes["agent-1"]
    assert bmc.reachable and bmc.sample is not None and bmc.sample.chassis.inlet_c is not None, bmc.last_error
    assert agent.reachable and len(agent.gpus) == 8, agent.last_error


def test_no_secret_in_the_database_files(polled: Polled) -> None:
    files = sorted(polled.db_dir.iterdir())
    assert polled.db_path in files
    import sqlite3

    with sqlite3.connect(polled.db_path) as db:
        rules = {row[0] for row in db.execute("SELECT rule FROM incidents")}
        evidence = db.execute("SELECT count(*) FROM evidence").fetchone()[0]
    assert "node_unreachable" in rules, "the auth failures must have produced incidents to check"
    assert evidence >= 0
    for path in files:  # the database, and its WAL and shared-memory files if any are left
        _secret_free(path.name, path.read_bytes())


def test_no_secret_in_the_log_even_at_debug(polled: Polled) -> None:
    assert len(polled.log_lines) > 3, "the run logged something to check"
    _secret_free("the log", "\n".join(polled.log_lines))


def test_no_secret_in_incident_exports(polled: Polled, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("--csv", "--json"):
        args = build_parser().parse_args(["incidents", "export", "--db", str(polled.db_path), fmt])
        assert run_command(args) == 0
        out = capsys.readouterr().out
        assert "bmc-1" in out or "agent-1" in out
        _secret_free(f"incidents export {fmt}", out)


def test_csv_export_defuses_a_formula_and_json_keeps_the_text(
    polled: Polled, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["incidents", "export", "--db", str(polled.db_path), "--csv"])
    assert run_command(args) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    notes = [row["resolution_note"] for row in rows if row["resolution_note"]]
    assert notes and all(note == "'" + FORMULA for note in notes), notes
    args = build_parser().parse_args(["incidents", "export", "--db", str(polled.db_path), "--json"])
    assert run_command(args) == 0
    documents = json.loads(capsys.readouterr().out)
    assert {d["resolution_note"] for d in documents if d["resolution_note"]} == {FORMULA}


def test_no_secret_in_probe_output(polled: Polled, capsys: pytest.CaptureFixture[str]) -> None:
    runs = (
        (
            ["probe", "redfish", polled.redfish_url, "--user", "monitor", "--password-env", PASSWORD_ENV],
            WRONG_PASSWORD,
            3,
        ),
        (["probe", "redfish", polled.redfish_url, "--user", "monitor", "--password-env", PASSWORD_ENV], PASSWORD, 0),
        (["probe", "agent", polled.agent_url, "--token-file", str(polled.token_file)], None, 0),
        (["probe", "agent", polled.agent_url, "--token-file", str(polled.token_file), "--json"], None, 0),
    )
    try:
        for argv, password, expected in runs:
            if password is not None:
                os.environ[PASSWORD_ENV] = password
            assert run_command(build_parser().parse_args(argv)) == expected, argv
            captured = capsys.readouterr()
            _secret_free(f"probe output of {argv[1:3]}", captured.out + captured.err)
    finally:
        os.environ.pop(PASSWORD_ENV, None)


def test_no_secret_in_reprs_or_the_dumped_inventory(polled: Polled) -> None:
    fleet = polled.fleet
    _secret_free("repr(fleet)", repr(fleet))
    for node in fleet.nodes:
        for spec in node.sources:
            _secret_free("repr(spec)", repr(spec) + spec.target())
    dumped = dump_inventory(fleet)
    _secret_free("dump_inventory", dumped)
    assert PASSWORD_ENV in dumped and str(polled.token_file) in dumped  # references, not values
    assert parse_inventory(dumped, fleet.origin) == fleet


# --- TLS -----------------------------------------------------------------------------------------------------


def test_tls_verification_is_on_unless_a_target_turns_it_off(polled: Polled) -> None:
    specs = {node.name: node.sources[0] for node in polled.fleet.nodes}
    assert specs["bmc-1"].verify_tls and specs["agent-1"].verify_tls
    assert not specs["insecure-1"].verify_tls
    text = """
[[sites]]
name = "s"
provider = "p"
[[nodes]]
name = "n"
site = "s"
  [[nodes.sources]]
  kind = "prometheus"
  url = "https://prom:9090"
  [[nodes.sources]]
  kind = "dcgm"
  url = "https://n:9400/metrics"
"""
    assert all(spec.verify_tls for spec in parse_inventory(text).nodes[0].sources)


# --- node text in the window is plain text -------------------------------------------------------------------


def test_node_text_is_shown_as_plain_text_and_tls_off_is_visible(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from widgets.app import build_app

    with HostileServer() as server:
        dcgm = SourceKind.DCGM
        fleet = Fleet(
            sites=(Site("lab", "onprem", interval_s=0.25, timeout_s=1.0),),
            nodes=(
                Node("html-gpu", "lab", (SourceSpec(dcgm, url=server.url("/labels")),)),
                Node("html-error", "lab", (SourceSpec(dcgm, url=server.url(f"/status/503?reason={HTML_TEXT}")),)),
                Node("no-verify", "lab", (SourceSpec(dcgm, url=server.url("/good/x"), verify_tls=False),)),
            ),
            origin="test",
            rule_overrides=(("site:lab", "node_unreachable", "for_s", 0.3),),
        )
        app = build_app(fleet, tmp_path / "i.sqlite3", seed=1)
        qtbot.addWidget(app.window)
        app.start()
        try:
            window = app.window
            qtbot.waitUntil(lambda: len(window.state.nodes["html-gpu"].gpus) == 2, timeout=10_000)
            qtbot.waitUntil(lambda: window.incidents.model.rowCount() >= 1, timeout=10_000)
            window._on_refresh_timer_timeout()
            gpu = next(g for g in window.state.nodes["html-gpu"].gpus.values() if HTML_TEXT in (g.sample.name or ""))
            window.select_gpu("html-gpu", gpu.uuid)
            _assert_plain_text_views(window)
        finally:
            app.shutdown()


def _assert_plain_text_views(window) -> None:  # type: ignore[no-untyped-def]
    model = window.fleet_panel.model
    display = Qt.ItemDataRole.DisplayRole
    texts: list[str] = []
    tips: list[str] = []
    stack = [QModelIndex()]  # every row, collapsed nodes' GPU rows included
    while stack:
        parent = stack.pop()
        for row in range(model.rowCount(parent)):
            for column in range(model.columnCount(parent)):
                child = model.index(row, column, parent)
                texts.append(str(child.data(display) or ""))
                tips.append(str(child.data(Qt.ItemDataRole.ToolTipRole) or ""))
            stack.append(model.index(row, 0, parent))
    # the model name and the HTTP reason arrive verbatim, as text a delegate paints literally
    assert any(t.startswith("GPU ") and HTML_TEXT in t for t in texts), texts
    assert any(HTML_TEXT in t for t in texts if "503" in t), "the last error with the node's reason phrase"
    # tooltips are rich text only as escaped text: the markup shows, nothing renders
    node_tips = [t for t in tips if "&lt;b&gt;bold&lt;/b&gt;" in t]
    assert node_tips, tips
    assert not any(HTML_TEXT in t for t in tips), "a tooltip carries raw node HTML that Qt would render"
    assert any("TLS verification off" in t for t in texts), "a node with verify_tls = false says so"
    incidents = window.incidents.model
    for row in range(incidents.rowCount()):
        tip = incidents.data(incidents.index(row, 5), Qt.ItemDataRole.ToolTipRole)
        assert HTML_TEXT not in tip
    assert any(
        "&lt;img src=x&gt;" in incidents.data(incidents.index(r, 5), Qt.ItemDataRole.ToolTipRole)
        for r in range(incidents.rowCount())
    )
    shown = [label for label in window.findChildren(QLabel) if "<b>bold</b>" in label.text()]
    assert shown, "the chart title shows the selected GPU's model name"
    for label in shown:
        assert label.textFormat() == Qt.TextFormat.PlainText, label.objectName() or label.text()
