"""The capability map after one poll round: the demo fleet through the real CLI, and an inventory whose BMCs are
a real loopback Redfish server (our multi-chassis HGX mockup) and a dead port."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.builders import free_port
from tests.helpers.redfish_server import RedfishMockServer, ThreadedRedfishServer

SCRIPT = Path(sys.executable).with_name("gpu-console")
MULTI = Path(__file__).resolve().parents[1] / "fixtures" / "redfish" / "multi_chassis_hgx"


def _capabilities(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "capabilities", *args], capture_output=True, text=True, timeout=90, check=False)


def _fields(site: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {f"{f['scope']}:{f['field']}": f for f in site["fields"]}  # power_w is a GPU and a chassis field


def test_the_demo_fleet_map_says_what_each_site_reports_and_which_gpus_do_not_support_a_field() -> None:
    done = _capabilities("--demo", "--seed", "5", "--json")
    assert done.returncode == 0, done.stderr
    sites = {site["site"]: site for site in json.loads(done.stdout)["sites"]}
    assert len(sites) >= 3
    for site in sites.values():
        fields = _fields(site)
        assert fields["gpu:power_w"]["capability"] == "reported"
        assert fields["gpu:power_w"]["reported_by"] == fields["gpu:power_w"]["of"] > 0
        # SXM parts have no fan: every GPU says so, by model
        fan = fields["gpu:fan_pct"]
        assert fan["capability"] == "not supported"
        assert sum(fan["unsupported_models"].values()) == fan["of"] == len(fan["unsupported_by"])
        assert fields["gpu:throttle_reasons"]["capability"] == "reported"  # no reason now is a reading
    # the air-cooled demo sites have no coolant loop: never seen, not "collector failing"
    assert any(_fields(site)["chassis:coolant_flow_lpm"]["capability"] == "never seen" for site in sites.values())
    text = _capabilities("--demo", "--seed", "5")
    assert text.returncode == 0 and "not supported     by " in text.stdout and "GPUs: NVIDIA" in text.stdout


def test_bmc_fields_are_reported_never_seen_or_their_collector_failing_per_site(tmp_path: Path) -> None:
    dead = free_port()
    with ThreadedRedfishServer(RedfishMockServer(MULTI)) as server:
        inventory = tmp_path / "fleet.toml"
        inventory.write_text(
            f"""
[[sites]]
name = "hgx-site"
provider = "onprem"
timeout_s = 3.0

[[sites]]
name = "dark-site"
provider = "onprem"
timeout_s = 1.0

[[nodes]]
name = "hgx-01"
site = "hgx-site"
  [[nodes.sources]]
  kind = "redfish"
  url = "{server.url}"

[[nodes]]
name = "dark-01"
site = "dark-site"
  [[nodes.sources]]
  kind = "redfish"
  url = "http://127.0.0.1:{dead}"
""",
            encoding="utf-8",
        )
        done = _capabilities("--config", str(inventory), "--json", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    sites = {site["site"]: _fields(site) for site in json.loads(done.stdout)["sites"]}
    hgx, dark = sites["hgx-site"], sites["dark-site"]
    assert hgx["chassis:inlet_c"]["capability"] == "reported"
    assert hgx["chassis:coolant_flow_lpm"]["capability"] == "never seen"
    # the HMC's GPU sensors: temperature and power reported for both GPUs, clocks never seen
    assert (hgx["gpu:temperature_c"]["capability"], hgx["gpu:temperature_c"]["reported_by"]) == ("reported", 2)
    assert hgx["gpu:sm_clock_mhz"]["capability"] == "never seen"
    assert dark["chassis:inlet_c"]["capability"] == "collector failing"
    assert dark["chassis:inlet_c"]["failing"][0].startswith("redfish http://127.0.0.1:")
    assert dark["gpu:power_w"]["capability"] == "never seen"  # no in-band collector failing for the GPU fields
