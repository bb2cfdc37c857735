"""Importing GPU nodes and their topology from a server that answers like NetBox 4.x, on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.config.fleet import SecretKind, SecretRef, SourceKind, Topology
from console.config.inventory import load_inventory
from console.config.netbox import NetBoxClient, NetBoxError, SourceTemplate, import_site
from tests.helpers.netbox_server import TOKEN, running_netbox

DCGM = SourceTemplate(SourceKind.DCGM, "http://{primary_ip}:{cf.exporter_port}/metrics")
REDFISH = SourceTemplate(
    SourceKind.REDFISH, "https://{oob_ip}", user="monitor", password=SecretRef(SecretKind.ENV, "BMC_PASSWORD")
)


def test_every_gpu_node_comes_with_its_rack_feed_loop_domain_and_sources() -> None:
    with running_netbox(page_size=2) as netbox:
        result = import_site(NetBoxClient(netbox.url, TOKEN), "ord1", "coreweave-ord1", (DCGM, REDFISH), "gpu-node")
        device_pages = [r for r in netbox.requests if r.startswith("/api/dcim/devices/")]
    names = [node.name for node in result.nodes]
    assert names == ["gpu-001", "gpu-002", "gpu-003", "gpu-004"]  # the switch is not a GPU node
    assert len(device_pages) == 3  # 6 devices, 2 per page: every `next` followed, on the server it was pointed at
    first = result.nodes[0]
    assert first.site == "coreweave-ord1"
    assert first.topology == Topology(rack="R01", cooling_loop="loop-a", power_feed="PDU-A1", nvlink_domain="nvl72-a")
    assert result.nodes[3].topology == Topology(rack="R02", cooling_loop="loop-b", power_feed="PDU-B1")
    dcgm, redfish = first.sources
    assert dcgm.kind is SourceKind.DCGM and dcgm.url == "http://10.0.3.17:9400/metrics"  # no "/24" in the URL
    assert redfish.url == "https://10.0.4.17" and redfish.user == "monitor"
    assert redfish.password == SecretRef(SecretKind.ENV, "BMC_PASSWORD")
    assert result.racks == 2 and result.power_feeds == 3


def test_a_device_with_an_empty_template_field_is_reported_and_skipped() -> None:
    with running_netbox() as netbox:
        result = import_site(NetBoxClient(netbox.url, TOKEN), "ORD1", "ord1", (DCGM, REDFISH), "gpu-node")
    assert [s.name for s in result.skipped] == ["gpu-005"]
    assert "{oob_ip} is empty in NetBox" in result.skipped[0].reason
    assert all("None" not in spec.url for node in result.nodes for spec in node.sources if spec.url)


def test_without_a_bmc_template_the_node_without_a_bmc_is_kept() -> None:
    with running_netbox() as netbox:
        result = import_site(NetBoxClient(netbox.url, TOKEN), "ord1", "ord1", (DCGM,), "gpu-node")
    assert len(result.nodes) == 5 and not result.skipped


def test_a_netbox_without_power_feeds_gives_nodes_without_a_feed() -> None:
    with running_netbox() as netbox:
        netbox.data.has_power_feeds = False
        result = import_site(NetBoxClient(netbox.url, TOKEN), "ord1", "ord1", (DCGM,), "gpu-node")
    assert result.nodes and all(node.topology.power_feed is None for node in result.nodes)
    assert result.nodes[0].topology.rack == "R01"


def test_a_bad_token_is_a_clear_error_that_names_the_answer() -> None:
    with running_netbox() as netbox, pytest.raises(NetBoxError) as caught:
        import_site(NetBoxClient(netbox.url, "wrong"), "ord1", "ord1", (DCGM,), "gpu-node")
    assert "refused the token (403" in str(caught.value) and "Invalid token" in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_an_unknown_site_and_an_unknown_template_field_are_named() -> None:
    with running_netbox() as netbox:
        client = NetBoxClient(netbox.url, TOKEN)
        with pytest.raises(NetBoxError, match=r"no site with slug or name 'sjc9'"):
            import_site(client, "sjc9", "sjc9", (DCGM,), "gpu-node")
        with pytest.raises(NetBoxError, match=r"unknown field \{hostname\}"):
            import_site(client, "ord1", "ord1", (SourceTemplate(SourceKind.DCGM, "http://{hostname}:9400"),), "x")


def test_nothing_listening_is_a_clear_error() -> None:
    with running_netbox() as netbox:
        url = netbox.url
    with pytest.raises(NetBoxError, match=r"cannot reach NetBox at http://127\.0\.0\.1"):
        import_site(NetBoxClient(url, TOKEN, timeout_s=2), "ord1", "ord1", (DCGM,), "gpu-node")


# --- the command: write a new inventory, or merge into one ---------------------------------------------------


def _import(netbox_url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "widgets.launcher", "inventory", "import-netbox", netbox_url, "--site", "ord1",
        "--provider", "coreweave", "--token-env", "NETBOX_TOKEN", "--dcgm", "http://{primary_ip}:9400/metrics",
        "--redfish", "https://{oob_ip}", "--redfish-user", "monitor", "--redfish-password-env", "BMC_PASSWORD",
        "-o", str(out), *extra,
    ]  # fmt: skip
    env = {**os.environ, "NETBOX_TOKEN": TOKEN}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_the_command_writes_an_inventory_that_loads_with_its_topology(tmp_path: Path) -> None:
    out = tmp_path / "fleet.toml"
    with running_netbox() as netbox:
        done = _import(netbox.url, out)
    assert done.returncode == 0, done.stderr
    assert "skipped gpu-005: redfish template: {oob_ip} is empty in NetBox" in done.stderr
    assert "4 nodes added, 0 kept, 1 skipped" in done.stderr
    fleet = load_inventory(out)
    assert [s.name for s in fleet.sites] == ["ord1"] and fleet.sites[0].provider == "coreweave"
    node = fleet.nodes[0]
    assert node.topology == Topology(rack="R01", cooling_loop="loop-a", power_feed="PDU-A1", nvlink_domain="nvl72-a")
    assert [spec.kind for spec in node.sources] == [SourceKind.DCGM, SourceKind.REDFISH]


def test_merging_keeps_what_the_operator_set_and_adds_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "fleet.toml"
    out.write_text(
        '[[sites]]\nname = "ord1"\nprovider = "coreweave"\ninterval_s = 5.0\n\n'
        '[[nodes]]\nname = "gpu-002"\nsite = "ord1"\ninterval_s = 2.0\n'
        '  [[nodes.sources]]\n  kind = "agent"\n  url = "https://gpu-002:9400"\n',
        encoding="utf-8",
    )
    with running_netbox() as netbox:
        done = _import(netbox.url, out)
    assert done.returncode == 0, done.stderr
    assert "3 nodes added, 1 kept" in done.stderr
    fleet = load_inventory(out)
    kept = next(node for node in fleet.nodes if node.name == "gpu-002")
    assert kept.interval_s == 2.0 and [s.kind for s in kept.sources] == [SourceKind.AGENT]  # its own settings
    assert kept.topology.rack == "R01"  # and NetBox's topology, which it lacked
    assert fleet.sites[0].interval_s == 5.0 and len(fleet.nodes) == 4


def test_a_refused_token_leaves_the_inventory_untouched(tmp_path: Path) -> None:
    out = tmp_path / "fleet.toml"
    out.write_text('[[sites]]\nname = "ord1"\nprovider = "coreweave"\n', encoding="utf-8")
    before = out.read_bytes()
    with running_netbox() as netbox:
        command = [sys.executable, "-m", "widgets.launcher", "inventory", "import-netbox", netbox.url, "--site", "ord1"]
        command += ["--provider", "coreweave", "--dcgm", "http://{primary_ip}:9400/metrics", "-o", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "refused the token (403" in done.stderr and "Traceback" not in done.stderr
    assert out.read_bytes() == before
