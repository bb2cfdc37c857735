"""Prometheus as a first-class backbone (issue 16, item 2): a real Prometheus behind basic auth (its web config)
over an exporter that carries pod and job labels. The site source reads it with a password reference, the
workload reaches the sample and the Xid incident; ``gpu-console probe prometheus`` prints every node or one, and
says "authentication refused" (exit 3) for a wrong or missing password; extra headers and their refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from test_workload import JOB, NODE, SITE, TRAINING, _changes, _exporter_text

from console.config.fleet import Node, SecretKind, SecretRef, Site, SourceKind, SourceSpec
from console.config.inventory import InventoryError, dump_inventory, parse_inventory
from console.incidents.model import ChangeKind
from console.samples.results import PollFailure, SourceError
from console.sources import make_source
from console.sources.base import SourceContext
from tests.helpers.builders import ExporterStandIn
from tests.helpers.prometheus_server import PASSWORD as BASIC_AUTH_PASSWORD
from tests.helpers.prometheus_server import USER as BASIC_AUTH_USER
from tests.helpers.prometheus_server import available, prometheus_over

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="prometheus (Debian package) is not installed"),
]
SCRIPT = Path(sys.executable).with_name("gpu-console")
PASSWORD_ENV = "GPU_CONSOLE_TEST_PROM_PASSWORD"
SCRAPED_SINCE: list[float] = []  # time.monotonic() when the module's Prometheus had scraped the exporter


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus-auth")
    with (
        ExporterStandIn(_exporter_text(xid=79)) as exporter,
        prometheus_over(work, [f"127.0.0.1:{exporter.port}"], basic_auth=True, gpus=8) as url,
    ):
        SCRAPED_SINCE.append(time.monotonic())
        yield url


def _spec(url: str, **fields: object) -> SourceSpec:
    return SourceSpec(SourceKind.PROMETHEUS, url=url, **fields)  # type: ignore[arg-type]


async def _poll(spec: SourceSpec) -> object:
    node = Node(NODE, SITE, (spec,))
    async with aiohttp.ClientSession() as http:
        source = make_source(SourceContext(node, Site(SITE, "onprem"), spec, timeout_s=5.0, http=http))
        try:
            return await source.poll()
        finally:
            await source.aclose()


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [str(SCRIPT), "probe", "prometheus", *args, "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_site_source_reads_with_a_password_reference_and_keeps_the_workload(
    guarded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, BASIC_AUTH_PASSWORD)
    spec = _spec(guarded, user=BASIC_AUTH_USER, password=SecretRef(SecretKind.ENV, PASSWORD_ENV))
    sample = asyncio.run(_poll(spec))
    gpus = {gpu.index: gpu for gpu in sample.gpus}  # type: ignore[attr-defined]
    assert len(gpus) == 8
    assert gpus[0].workload == (TRAINING,) and gpus[1].workload == (JOB,)
    (xid,) = [c for c in _changes([sample]) if c.kind is ChangeKind.OPENED and c.incident.rule == "xid"]  # type: ignore[list-item]
    assert xid.incident.workload == (TRAINING,)

    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(SourceError) as refused:
        asyncio.run(_poll(spec))
    assert refused.value.failure is PollFailure.AUTH_REFUSED
    assert "HTTP 401" in refused.value.reason and "wrong" not in refused.value.reason


def test_probe_prints_every_node_or_one_and_refuses_bad_credentials(guarded: str) -> None:
    good = {PASSWORD_ENV: BASIC_AUTH_PASSWORD}
    every = probe(guarded, "--user", BASIC_AUTH_USER, "--password-env", PASSWORD_ENV, "--json", env=good)
    assert every.returncode == 0, every.stderr
    (sample,) = json.loads(every.stdout)
    assert sample["node"] == NODE and len(sample["gpus"]) == 8
    assert "ok: 1 nodes, 8 GPUs" in every.stderr

    one = probe(guarded, "--user", BASIC_AUTH_USER, "--password-env", PASSWORD_ENV, "--node", NODE, env=good)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"node {NODE}")
    absent = probe(guarded, "--user", BASIC_AUTH_USER, "--password-env", PASSWORD_ENV, "--node", "nope", env=good)
    assert absent.returncode == 2 and "no live DCGM series for 'nope'" in absent.stderr

    wrong = probe(guarded, "--user", BASIC_AUTH_USER, "--password-env", PASSWORD_ENV, env={PASSWORD_ENV: "nope"})
    assert wrong.returncode == 3 and "auth" in wrong.stderr and "HTTP 401" in wrong.stderr
    anonymous = probe(guarded)
    assert anonymous.returncode == 3, anonymous.stderr
    tenant = probe(
        guarded, "--user", BASIC_AUTH_USER, "--password-env", PASSWORD_ENV, "--header", "X-Scope-OrgID=t1", env=good
    )
    assert tenant.returncode == 0, tenant.stderr


def test_probe_refuses_options_that_do_not_fit_as_usage_errors(guarded: str) -> None:
    literal = probe(guarded, "--header", "Authorization=Bearer abc")
    assert literal.returncode == 1 and "carries a secret" in literal.stderr and "abc" not in literal.stderr
    half = probe(guarded, "--user", BASIC_AUTH_USER)
    assert half.returncode == 1 and "needs both --user and --password-env" in half.stderr
    both = probe(guarded, "--token-env", "T", "--user", "u", "--password-env", PASSWORD_ENV)
    assert both.returncode == 1 and "not both" in both.stderr


def test_the_inventory_takes_prometheus_credentials_and_headers_by_reference() -> None:
    base = '[[sites]]\nname = "ord1"\nprovider = "coreweave"\n[[nodes]]\nname = "n1"\nsite = "ord1"\n'
    fleet = parse_inventory(
        base
        + '  [[nodes.sources]]\n  kind = "prometheus"\n  url = "https://mimir.ops/prometheus"\n'
        + '  token_file = "/etc/gpu-console/mimir.token"\n  headers = { "X-Scope-OrgID" = "ord1" }\n'
    )
    (spec,) = fleet.nodes[0].sources
    assert spec.token == SecretRef(SecretKind.FILE, "/etc/gpu-console/mimir.token")
    assert spec.headers == (("X-Scope-OrgID", "ord1"),)
    assert parse_inventory(dump_inventory(fleet)).nodes == fleet.nodes

    with pytest.raises(InventoryError) as caught:
        parse_inventory(
            base
            + '  [[nodes.sources]]\n  kind = "prometheus"\n  url = "http://prom:9090"\n  user = "ops"\n'
            + '  token_env = "T"\n  headers = { Authorization = "Basic eHl6", "bad name" = "x", X-Ok = 3 }\n'
        )
    problems = caught.value.problems
    assert (
        'nodes[0].sources[0]: user "ops" needs a password reference (password_env, password_file or password_keyring)'
        in problems
    )
    assert any("give either basic auth" in p for p in problems)
    assert any(p.startswith("nodes[0].sources[0].headers.Authorization: carries a secret") for p in problems)
    assert "nodes[0].sources[0].headers.bad name: is not an HTTP header name" in problems
    assert "nodes[0].sources[0].headers.X-Ok: expected a string, got integer" in problems
    assert not any("eHl6" in p for p in problems)


def test_the_first_read_brings_the_minutes_before_it_to_charts_and_evidence(
    guarded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import queue

    from console.config.fleet import Fleet
    from console.history.rings import FleetHistory
    from console.incidents.engine import IncidentEngine
    from console.incidents.rules import load_rules
    from console.live.monitor import FleetMonitor, MonitorUpdate

    monkeypatch.setenv(PASSWORD_ENV, BASIC_AUTH_PASSWORD)
    # What is measured is the delivery, not the bound on waiting for it (this machine's CPUs are shared).
    monkeypatch.setattr("console.sources.prometheus_site.BACKFILL_WAIT_S", 30.0)
    time.sleep(max(0.0, SCRAPED_SINCE[0] + 16 - time.monotonic()))  # held for longer than one backfill step
    spec = _spec(guarded, user=BASIC_AUTH_USER, password=SecretRef(SecretKind.ENV, PASSWORD_ENV))
    fleet = Fleet(sites=(Site(SITE, "onprem", interval_s=0.5),), nodes=(Node(NODE, SITE, (spec,)),))
    updates: queue.Queue[MonitorUpdate] = queue.Queue()
    monitor = FleetMonitor(fleet, engine=IncidentEngine(load_rules(), fleet), store=None, on_update=updates.put)
    began = time.time()
    monitor.start()
    got: list[MonitorUpdate] = []
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                got.append(updates.get(timeout=0.1))
    finally:
        monitor.stop()
    results = [u.result for u in got if u.result is not None and u.result.node == NODE and u.result.sample]
    first, *later = results
    assert first.earlier, "the first read came without the minutes before it"
    times = [s.time for s in first.earlier]
    assert times == sorted(times) and times[-1] < first.sample.time and times[0] < began  # type: ignore[union-attr]
    assert all(len(s.gpus) == 8 and s.node == NODE for s in first.earlier)
    assert later and not any(r.earlier for r in later)  # once, not on every read

    history = FleetHistory()
    history.record_earlier(first.earlier)
    history.record(first.sample)  # type: ignore[arg-type]
    history.record_earlier(first.earlier)  # a second delivery adds nothing: the rings only grow forward
    assert len(history.nodes[NODE].times) == len(first.earlier) + 1

    (opened,) = [c for u in got for c in u.changes if c.kind is ChangeKind.OPENED and c.incident.rule == "xid"]
    assert any(point.time < began for point in opened.evidence)  # evidence from before the console ran
