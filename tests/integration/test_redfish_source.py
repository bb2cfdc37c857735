"""The Redfish BMC source against real HTTP servers on 127.0.0.1 serving DMTF mockups and vendor captures."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from console.config.fleet import Fleet, Node, SecretKind, SecretRef, Site, SourceKind, SourceSpec
from console.incidents.engine import IncidentEngine
from console.incidents.model import Severity
from console.incidents.rules import load_rules
from console.polling.poller import Poller
from console.samples.codec import sample_from_json, sample_to_json
from console.samples.results import PollFailure, PollResult, SourceError
from console.samples.schema import ChassisSample, GpuSample, Health, NodeSample, merge_samples
from console.sources.base import SourceContext
from console.sources.redfish import source as source_module
from console.sources.redfish.readings import classify_temperature
from console.sources.redfish.source import RedfishSource, make_source
from tests.helpers.builders import free_port
from tests.helpers.redfish_server import RedfishMockServer, ThreadedRedfishServer
from tests.helpers.traces import NODE, T0, build_trace, chassis_from, make_fleet, opened, run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "redfish"
MOCKUPS = FIXTURES / "dmtf_mockups" / "mockups"
LIQUID = MOCKUPS / "public-liquid-cooled-server"
CDU = MOCKUPS / "public-cooling-unit"
RACKMOUNT = MOCKUPS / "public-rackmount1"
CAPTURES = FIXTURES / "vendor_captures_telegraf_testdata"

SITE = Site("lab", "onprem")


def _spec(url: str, **kwargs: Any) -> SourceSpec:
    return SourceSpec(kind=SourceKind.REDFISH, url=url, **kwargs)


def _source(spec: SourceSpec, http: aiohttp.ClientSession | None, timeout_s: float = 3.0) -> RedfishSource:
    ctx = SourceContext(node=Node("gpu-01", "lab", (spec,)), site=SITE, spec=spec, timeout_s=timeout_s, http=http)
    source = make_source(ctx)
    assert isinstance(source, RedfishSource)
    return source


Scenario = Callable[[RedfishMockServer, aiohttp.ClientSession], Awaitable[None]]


def _serve(scenario: Scenario, mockup: Path | None = None, **server_kwargs: Any) -> None:
    async def main() -> None:
        async with RedfishMockServer(mockup, **server_kwargs) as server, aiohttp.ClientSession() as http:
            await scenario(server, http)

    asyncio.run(main())


async def _poll_once(spec: SourceSpec, http: aiohttp.ClientSession) -> ChassisSample:
    source = _source(spec, http)
    try:
        return (await source.poll()).chassis
    finally:
        await source.aclose()


async def _failure(spec: SourceSpec, http: aiohttp.ClientSession) -> SourceError:
    source = _source(spec, http)
    try:
        with pytest.raises(SourceError) as caught:
            await source.poll()
        return caught.value
    finally:
        await source.aclose()


# -- DMTF mockups ------------------------------------------------------------------------------------------------


def test_liquid_cooled_server_shows_air_cold_plates_fans_and_power() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        sample = await source.poll()
        await source.aclose()
        chassis = sample.chassis
        assert sample.gpus == ()
        assert sample.source == "redfish"
        assert (chassis.inlet_c, chassis.exhaust_c) == (24.8, 40.5)  # ThermalMetrics Intake / Exhaust
        assert chassis.fans_rpm == (2200.0, 2400.0)
        assert chassis.power_w == 374.0  # EnvironmentMetrics.PowerWatts, not a PSU's own input
        # two cold plates (14.8/38.2 C and 22.4/46.9 C): the hotter loop is what an operator must see
        assert (chassis.coolant_supply_c, chassis.coolant_return_c) == (22.4, 46.9)
        assert chassis.coolant_flow_rated_lpm == 30.0
        assert chassis.coolant_flow_lpm is None  # the mockup's connectors report no flow: unknown, not 0
        assert chassis.leak_detected is None  # no leak detectors in this chassis
        assert chassis.psu_health is Health.WARNING  # PSU Bay1
        assert chassis.pump_health is Health.OK
        # the chassis itself says OK; its warning PSU raises it and is named
        assert chassis.health is Health.WARNING
        assert "Power Supply Bay 1: Warning" in chassis.conditions
        assert [(c.name, c.kind) for c in chassis.components] == [("Power Supply Bay 1", "power_supply")]

    _serve(scenario, LIQUID)


def test_cooling_unit_reports_the_rack_loop_and_the_failed_pump() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        chassis = await _poll_once(_spec(server.url), http)
        assert chassis.coolant_supply_c == 30.0
        assert chassis.coolant_return_c == 48.0  # secondary (rack) loop; the facility loop returns at 40
        assert chassis.coolant_flow_lpm == 42.0
        assert chassis.coolant_flow_rated_lpm == 50.0
        assert chassis.leak_detected is False
        assert chassis.pump_health is Health.CRITICAL
        assert chassis.health is Health.CRITICAL  # CoolingUnit HealthRollup
        assert "Environmental.1.2.PumpFailed" in chassis.conditions
        # subsystem summaries with Severity OK are not problems
        assert "Environmental.1.2.FilterSubsystemHealth" not in chassis.conditions
        # the failed pump named, with its state and speed; the CDU is kept apart from the chassis it sits in
        assert "CDU Pump 2: Critical, offline, 0 %" in chassis.conditions
        assert [part.name for part in chassis.parts] == [
            "Example Chassis for a CDU",
            "Rack #4 Cooling Distribution Unit",
        ]
        assert chassis.parts[1].readings.pump_health is Health.CRITICAL

    _serve(scenario, CDU)


def test_a_critical_leak_detector_and_a_flow_drop_show_on_the_next_poll() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        first = (await source.poll()).chassis
        server.set_value("/redfish/v1/Chassis/CDU/LeakDetectors/Overflow", ["DetectorState"], "Critical")
        server.set_value(
            "/redfish/v1/ThermalEquipment/CDUs/1/SecondaryCoolantConnectors/1",
            ["FlowLitersPerMinute", "Reading"],
            12,
        )
        second = (await source.poll()).chassis
        await source.aclose()
        assert first.leak_detected is False
        assert second.leak_detected is True
        leaks = [c.text for c in second.components if c.kind == "leak_detector"]
        assert len(leaks) == 1 and "detector Critical" in leaks[0]
        assert (first.coolant_flow_lpm, second.coolant_flow_lpm) == (42.0, 12.0)

    _serve(scenario, CDU)


def test_second_poll_fetches_only_the_cached_leaves() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        first = await source.poll()
        discovery_gets = server.gets()
        server.requests.clear()
        second = await source.poll()
        await source.aclose()
        leaves = {leaf.path for leaf in source.cached_leaves}
        assert sorted(server.gets()) == sorted(leaves)
        assert "/redfish/v1" not in leaves and "/redfish/v1/Chassis/1U/Sensors" not in leaves
        # 41 sensors were read once during discovery and are never polled: each repeats an excerpt
        assert sum("/Sensors/" in path for path in discovery_gets) == 41
        assert not any("/Sensors/" in path for path in leaves)
        assert len(leaves) < len(discovery_gets) / 4
        assert second.chassis == first.chassis

    _serve(scenario, LIQUID)


def test_a_vanished_leaf_makes_the_source_discover_the_tree_again() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        await source.poll()
        server.remove("/redfish/v1/Chassis/1U/ThermalSubsystem/Fans/Bay2")
        server.requests.clear()
        sample = await source.poll()
        await source.aclose()
        assert "/redfish/v1" in server.gets()  # walked from the service root again
        assert sample.chassis.fans_rpm == (2200.0,)

    _serve(scenario, LIQUID)


def test_a_discovery_longer_than_the_poll_timeout_goes_on_across_polls() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        server.delay_s = 0.02  # 62 resources one at a time: about 1.3 s, far beyond one poll's 0.3 s
        source = _source(_spec(server.url, options=(("max_concurrency", "1"),)), http)
        timeouts = 0
        while True:
            try:
                sample = await asyncio.wait_for(source.poll(), 0.3)  # what the poller does
                break
            except TimeoutError:
                timeouts += 1
                assert timeouts < 20, "discovery never finished"
        await source.aclose()
        assert timeouts >= 2
        assert server.gets().count("/redfish/v1") == 1  # one walk, resumed by each poll, never restarted
        assert sample.chassis.power_w == 374.0

    _serve(scenario, LIQUID)


def test_a_bmc_with_only_sensors_is_read_by_sensor_names_and_polls_only_useful_ones() -> None:
    chassis_path = "/redfish/v1/Chassis/Board"

    def sensor(name: str, reading: float, units: str, reading_type: str, **extra: Any) -> dict[str, Any]:
        return {"Name": name, "Reading": reading, "ReadingUnits": units, "ReadingType": reading_type, **extra}

    sensors = {
        "InletTemp": sensor("System Board Inlet Temp", 23.5, "Cel", "Temperature"),
        "OutletTemp": sensor("Outlet Temp", 44.0, "Cel", "Temperature"),
        "CPU1Temp": sensor("CPU1 Temp", 61.0, "Cel", "Temperature", PhysicalContext="CPU"),
        "CoolantIn": sensor("Coolant Supply Temp", 18.0, "Cel", "Temperature"),
        "CoolantOut": sensor("Coolant Return Temp", 29.5, "Cel", "Temperature"),
        "CoolantFlow": sensor("Coolant Flow", 21.0, "L/min", "LiquidFlowLPM"),
        "Fan1": sensor("Fan 1", 9000, "{rev}/min", "Rotational", Thresholds={"LowerCritical": {"Reading": 1200}}),
        "Fan2": sensor("Fan 2", 9100, "{rev}/min", "Rotational", Thresholds={"LowerCritical": {"Reading": 1200}}),
        "TotalPower": sensor("Total Power", 2.1, "kW", "Power", PhysicalContext="Chassis"),
        "P12V": sensor("P12V", 12.1, "V", "Voltage"),
    }
    routes: dict[str, Any] = {
        "/redfish/v1": {"Chassis": {"@odata.id": "/redfish/v1/Chassis"}},
        "/redfish/v1/Chassis": {"Members": [{"@odata.id": chassis_path}]},
        chassis_path: {"Status": {"Health": "OK"}, "Sensors": {"@odata.id": f"{chassis_path}/Sensors"}},
        f"{chassis_path}/Sensors": {"Members": [{"@odata.id": f"{chassis_path}/Sensors/{key}"} for key in sensors]},
        **{f"{chassis_path}/Sensors/{key}": doc for key, doc in sensors.items()},
    }

    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        await source.poll()
        server.requests.clear()
        chassis = (await source.poll()).chassis
        await source.aclose()
        assert (chassis.inlet_c, chassis.exhaust_c) == (23.5, 44.0)
        assert (chassis.coolant_supply_c, chassis.coolant_return_c, chassis.coolant_flow_lpm) == (
            18.0,
            29.5,
            21.0,
        )
        assert chassis.fans_rpm == (9000.0, 9100.0)
        assert chassis.fans_min_rpm == 1200.0
        assert chassis.power_w == 2100.0
        polled = set(server.gets())
        assert f"{chassis_path}/Sensors/CPU1Temp" not in polled
        assert f"{chassis_path}/Sensors/P12V" not in polled
        assert f"{chassis_path}/Sensors/InletTemp" in polled

    _serve(scenario, routes=routes)


@pytest.mark.parametrize(
    ("name", "context", "expected"),
    [
        ("Inlet Temp", None, ("inlet", 0)),
        ("System Board Inlet Temp", "SystemBoard", ("inlet", 0)),
        ("Front Panel Intake Temperature", "Intake", ("inlet", 0)),
        ("01-Inlet Ambient", "Intake", ("inlet", 0)),
        ("Ambient Temp", None, ("inlet", 1)),
        ("Exhaust Temp", None, ("exhaust", 0)),
        ("SystemOutletTemp", None, ("exhaust", 0)),
        ("Coolant Supply Temp", None, ("coolant_supply", 1)),
        ("Loop A Return", None, ("coolant_return", 1)),
        ("Cold plate 3", "LiquidInlet", ("coolant_supply", 0)),
        ("CPU1 Temp", "CPU", None),
        ("PS1 Inlet Temp", "PowerSupply", None),
        ("Coolant Delta Temp", None, None),
    ],
)
def test_free_form_temperature_names_map_to_chassis_fields(
    name: str, context: str | None, expected: tuple[str, int] | None
) -> None:
    assert classify_temperature(name, context) == expected


# -- vendor captures (telegraf test data) -------------------------------------------------------------------------


def _root_and_chassis(chassis_id: str, chassis_doc: dict[str, Any] | Path) -> dict[str, Any]:
    """The captures hold only the leaf resources; this is the minimal tree above them."""
    path = f"/redfish/v1/Chassis/{chassis_id}"
    return {
        "/redfish/v1": {"Chassis": {"@odata.id": "/redfish/v1/Chassis"}},
        "/redfish/v1/Chassis": {"Members": [{"@odata.id": path}]},
        path: chassis_doc,
    }


def test_dell_idrac_legacy_thermal_and_power() -> None:
    base = "/redfish/v1/Chassis/System.Embedded.1"
    routes = {
        **_root_and_chassis(
            "System.Embedded.1",
            {
                "Status": {"Health": "OK"},
                "Thermal": {"@odata.id": f"{base}/Thermal"},
                "Power": {"@odata.id": f"{base}/Power"},
            },
        ),
        f"{base}/Thermal": CAPTURES / "dell" / "dell_thermal.json",
        f"{base}/Power": CAPTURES / "dell" / "dell_power.json",
    }

    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        chassis = await _poll_once(_spec(server.url), http)
        assert chassis.fans_rpm is not None and len(chassis.fans_rpm) == 16
        assert (min(chassis.fans_rpm), max(chassis.fans_rpm)) == (15120.0, 18000.0)
        assert chassis.fans_min_rpm == 600.0
        assert chassis.power_w == 429.0
        assert chassis.inlet_c is None  # the capture has only "CPU1 Temp", which is no inlet
        assert chassis.psu_health is Health.OK

    _serve(scenario, routes=routes)


def test_hpe_ilo_subsystems_and_legacy_resources() -> None:
    hp = CAPTURES / "hp"
    psu = "/redfish/v1/Chassis/1/PowerSubsystem/PowerSupplies/PowerSupply1"
    subsystems = {
        **_root_and_chassis("1", hp / "hp_chassis_subsys.json"),
        "/redfish/v1/Chassis/1/ThermalSubsystem": hp / "thermal_subsys" / "hp_thermal_subsys.json",
        "/redfish/v1/Chassis/1/ThermalSubsystem/ThermalMetrics": hp / "thermal_subsys" / "hp_thermal_metrics.json",
        "/redfish/v1/Chassis/1/ThermalSubsystem/Fans": hp / "thermal_subsys" / "hp_thermal_subsys_fans.json",
        "/redfish/v1/Chassis/1/ThermalSubsystem/Fans/0": hp / "thermal_subsys" / "hp_thermal_subsys_fans_0.json",
        "/redfish/v1/Chassis/1/PowerSubsystem": hp / "power_subsys" / "hp_power_subsys.json",
        "/redfish/v1/Chassis/1/PowerSubsystem/PowerSupplies": {"Members": [{"@odata.id": psu}]},
        psu: hp / "power_subsys" / "hp_power_subsys_psu_1.json",
        f"{psu}/Metrics": hp / "power_subsys" / "hp_power_subsys_metrics.json",
    }
    legacy = {
        **_root_and_chassis(
            "1",
            {
                "Thermal": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"},
                "Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"},
            },
        ),
        "/redfish/v1/Chassis/1/Thermal": hp / "hp_thermal.json",
        "/redfish/v1/Chassis/1/Power": hp / "hp_power.json",
    }

    async def new_model(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        chassis = await _poll_once(_spec(server.url), http)
        assert chassis.inlet_c == 19.0  # "01-Inlet Ambient", PhysicalContext Intake
        assert chassis.fans_rpm is None  # iLO reports fans in percent only: not passed off as RPM
        assert chassis.power_w == 937.4  # no chassis total: the PSUs' input power
        assert chassis.psu_health is Health.WARNING
        assert chassis.health is Health.WARNING  # raised by the named PSU
        assert "Power Supply Bay 1: Warning" in chassis.conditions

    async def legacy_model(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        chassis = await _poll_once(_spec(server.url), http)
        assert chassis.inlet_c == 19.0
        assert chassis.fans_rpm is None
        assert chassis.power_w == 221.0
        assert chassis.psu_health is Health.OK

    _serve(new_model, routes=subsystems)
    _serve(legacy_model, routes=legacy)


# -- auth, prefix, failures -----------------------------------------------------------------------------------------


def test_basic_auth_with_the_right_password_reads_and_a_wrong_one_is_auth_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BMC_GOOD", "s3cret")
    monkeypatch.setenv("BMC_BAD", "guess")

    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        good = _spec(
            server.url,
            user="monitor",
            password=SecretRef(SecretKind.ENV, "BMC_GOOD"),
            options=(("auth", "basic"),),
        )
        assert (await _poll_once(good, http)).power_w == 374.0
        bad = _spec(
            server.url,
            user="monitor",
            password=SecretRef(SecretKind.ENV, "BMC_BAD"),
            options=(("auth", "basic"),),
        )
        error = await _failure(bad, http)
        assert error.failure is PollFailure.AUTH_REFUSED
        assert "monitor" in error.reason and "guess" not in error.reason

    _serve(scenario, LIQUID, auth="basic")


def test_session_login_under_the_hmc_prefix_logs_in_again_after_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BMC_PASSWORD", "s3cret")

    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        assert server.url.endswith("/hmc")
        spec = _spec(server.url, user="monitor", password=SecretRef(SecretKind.ENV, "BMC_PASSWORD"))
        source = _source(spec, http)
        first = (await source.poll()).chassis
        server.expire_sessions()  # the BMC rebooted: every token is void
        second = (await source.poll()).chassis
        await source.aclose()
        logins = [r for r in server.requests if r == ("POST", "/redfish/v1/SessionService/Sessions")]
        assert len(logins) == 2
        assert first.inlet_c == second.inlet_c == 24.8
        assert first.coolant_flow_rated_lpm == 30.0
        # the Location header lacked the prefix; the DELETE still went through /hmc (the server saw it)
        assert len(server.deleted_sessions) == 1

    _serve(scenario, LIQUID, prefix="/hmc", auth="session")


def test_session_login_with_a_wrong_password_is_auth_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMC_PASSWORD", "wrong")

    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        spec = _spec(server.url, user="monitor", password=SecretRef(SecretKind.ENV, "BMC_PASSWORD"))
        error = await _failure(spec, http)
        assert error.failure is PollFailure.AUTH_REFUSED
        assert "session login refused" in error.reason

    _serve(scenario, CDU, auth="session")


def test_malformed_json_and_wrong_shapes_are_bad_payload_naming_url_and_key() -> None:
    metrics = "/redfish/v1/Chassis/1U/ThermalSubsystem/ThermalMetrics"
    fan = "/redfish/v1/Chassis/1U/ThermalSubsystem/Fans/Bay1"

    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        await source.poll()
        server.set_raw(metrics, b'{"TemperatureSummaryCelsius": {"Intake": ')
        with pytest.raises(SourceError) as broken:
            await source.poll()
        server.set_raw(metrics, (LIQUID / metrics.removeprefix("/redfish/v1/") / "index.json").read_bytes())
        server.set_value(fan, ["SpeedPercent", "SpeedRPM"], "fast")
        with pytest.raises(SourceError) as shaped:
            await source.poll()
        server.set_raw("/redfish/v1/Chassis", b'{"Members": {"@odata.id": "/redfish/v1/Chassis/1U"}}')
        fresh = _source(_spec(server.url), http)
        with pytest.raises(SourceError) as members:
            await fresh.poll()
        await source.aclose()
        await fresh.aclose()
        assert broken.value.failure is PollFailure.BAD_PAYLOAD
        assert metrics in broken.value.reason and "not JSON" in broken.value.reason
        assert shaped.value.failure is PollFailure.BAD_PAYLOAD
        assert fan in shaped.value.reason and "SpeedPercent.SpeedRPM" in shaped.value.reason
        assert members.value.failure is PollFailure.BAD_PAYLOAD
        assert "/redfish/v1/Chassis:" in members.value.reason and "Members" in members.value.reason

    _serve(scenario, LIQUID)


def test_a_response_over_the_size_cap_is_bad_payload() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        error = await _failure(_spec(server.url, options=(("max_bytes", "1500"),)), http)
        assert error.failure is PollFailure.BAD_PAYLOAD
        assert "1500-byte cap" in error.reason

    _serve(scenario, LIQUID)


def test_a_refused_connection_is_unreachable() -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            error = await _failure(_spec(f"http://127.0.0.1:{free_port()}"), http)
        assert error.failure is PollFailure.UNREACHABLE
        assert "cannot connect" in error.reason

    asyncio.run(main())


# -- sushy-static (sushy-tools) over HTTPS ----------------------------------------------------------------------


@pytest.fixture
def sushy_https(tmp_path: Path) -> Any:
    cert, key = tmp_path / "bmc.crt", tmp_path / "bmc.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    port = free_port()
    sushy = Path(sys.executable).parent / "sushy-static"
    process = subprocess.Popen(
        [
            str(sushy),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(RACKMOUNT),
            "-c",
            str(cert),
            "-k",
            str(key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("sushy-static did not start")
                time.sleep(0.05)
        yield f"https://127.0.0.1:{port}", cert
    finally:
        process.terminate()
        process.wait(10)


def test_sushy_static_over_https_verifies_the_certificate(sushy_https: tuple[str, Path]) -> None:
    url, cert = sushy_https

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            refused = await _failure(_spec(url), http)
            insecure = await _poll_once(_spec(url, verify_tls=False), http)
            pinned = await _poll_once(_spec(url, ca_file=str(cert)), http)
        assert refused.failure is PollFailure.UNREACHABLE
        assert "certificate" in refused.reason and "verify_tls" in refused.reason
        assert insecure == pinned
        assert (pinned.inlet_c, pinned.exhaust_c, pinned.power_w) == (24.8, 40.5, 374.0)
        assert pinned.fans_rpm == (2200.0, 2400.0, 1490.0, 1490.0)
        assert pinned.psu_health is Health.WARNING
        assert "Power.1.0.PowerSupplyPredictiveFailure" in pinned.conditions

    asyncio.run(main())


# -- inside the real poller ---------------------------------------------------------------------------------------


def test_the_poller_delivers_bmc_readings_and_a_dead_bmc_as_a_failure() -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"
    with ThreadedRedfishServer(RedfishMockServer(CDU)) as server:
        site = Site("lab", "onprem", interval_s=0.2, timeout_s=2.0)
        fleet = Fleet(
            sites=(site,),
            nodes=(Node("cdu-1", "lab", (_spec(server.url),)), Node("cdu-dead", "lab", (_spec(dead_url),))),
        )
        results: dict[str, PollResult] = {}
        arrived = threading.Event()

        def on_result(result: PollResult) -> None:
            results.setdefault(result.node, result)
            if len(results) == 2:
                arrived.set()

        poller = Poller(fleet, make_source, on_result, seed=1)
        poller.start()
        try:
            assert arrived.wait(10), f"only {sorted(results)} reported"
        finally:
            poller.stop()
    good, dead = results["cdu-1"], results["cdu-dead"]
    assert good.ok and good.sample is not None
    assert good.sample.chassis.coolant_flow_lpm == 42.0
    assert dead.sample is None
    assert dead.failures[0].failure is PollFailure.UNREACHABLE


# -- a multi-chassis BMC with an HGX baseboard (our own mockup: tests/fixtures/redfish/multi_chassis_hgx) ----------

MULTI = FIXTURES / "multi_chassis_hgx"
BLADE_PSU2 = "/redfish/v1/Chassis/Blade1/PowerSubsystem/PowerSupplies/2"


def _multi_chassis_sample() -> NodeSample:
    async def poll(server: RedfishMockServer, http: aiohttp.ClientSession) -> NodeSample:
        source = _source(_spec(server.url), http)
        try:
            return await source.poll()
        finally:
            await source.aclose()

    async def main() -> NodeSample:
        async with RedfishMockServer(MULTI) as server, aiohttp.ClientSession() as http:
            return await poll(server, http)

    return asyncio.run(main())


def test_a_critical_fan_and_a_warning_sensor_on_another_chassis_are_named_and_raise_the_health() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        await source.poll()
        server.requests.clear()
        sample = await source.poll()  # the cached leaves only
        await source.aclose()
        chassis = sample.chassis
        assert chassis.health is Health.CRITICAL  # Blade 1 says OK itself; its fan is Critical
        assert chassis.conditions == ("System Fan 2: Critical, 0 RPM", "Tray 2 P12V: Warning, 11.2 V")
        assert [(c.name, c.kind, c.health, c.chassis) for c in chassis.components] == [
            ("System Fan 2", "fan", Health.CRITICAL, "Blade 1"),
            ("Tray 2 P12V", "sensor", Health.WARNING, "Tray 2"),
        ]
        # every chassis kept, by name, with its own readings
        parts = {part.name: part.readings for part in chassis.parts}
        assert list(parts) == ["Blade 1", "Tray 2", "HGX_GPU_SXM_1", "HGX_GPU_SXM_2"]
        blade, tray = parts["Blade 1"], parts["Tray 2"]
        assert (blade.health, blade.inlet_c, blade.exhaust_c, blade.fans_rpm, blade.power_w) == (
            Health.CRITICAL,
            22.0,
            38.5,
            (8100.0, 0.0),
            1210.0,
        )
        assert (tray.health, tray.inlet_c, tray.fans_rpm, tray.conditions) == (
            Health.WARNING,
            27.0,
            None,
            ("Tray 2 P12V: Warning, 11.2 V",),
        )
        assert parts["HGX_GPU_SXM_1"].health is Health.OK
        assert chassis.inlet_c == 22.0  # the first chassis still fills the node's own fields
        polled = set(server.gets())
        assert "/redfish/v1/Chassis/Tray2/Sensors/Tray2_P12V" in polled  # a voltage, polled for its health
        assert "/redfish/v1/Chassis/Tray2/Sensors/Tray2_P3V3" not in polled  # a healthy voltage is not

    _serve(scenario, MULTI)


def test_gpu_temperature_and_power_from_the_hgx_hmc_fill_the_gpu_sample() -> None:
    sample = _multi_chassis_sample()
    assert [(g.index, g.uuid, g.name, g.temperature_c, g.memory_temperature_c, g.power_w) for g in sample.gpus] == [
        (0, "GPU-8f3c2a10-5b7e-4d2c-9a61-0c1d2e3f4a51", "NVIDIA H100 80GB HBM3", 34.875, 41.0, 312.5),
        (1, "GPU-8f3c2a10-5b7e-4d2c-9a61-0c1d2e3f4a52", "NVIDIA H100 80GB HBM3", 36.25, 43.5, 298.0),
    ]
    # beside an in-band source: the BMC fills only what the host does not report, and adds no GPU of its own
    host = NodeSample(
        node="gpu-01",
        site="lab",
        source="nvml",
        time=sample.time,
        gpus=(
            GpuSample(index=0, uuid=sample.gpus[0].uuid, temperature_c=35.0, power_w=None),
            GpuSample(index=1, uuid="GPU-other", temperature_c=40.0),
        ),
    )
    for order in ((host, sample), (sample, host)):
        merged = merge_samples(order)
        assert [(g.uuid, g.temperature_c, g.power_w) for g in merged.gpus] == [
            (sample.gpus[0].uuid, 35.0, 312.5),
            ("GPU-other", 40.0, None),
        ]
        assert merged.chassis.health is Health.CRITICAL


def test_a_psu_that_goes_absent_where_it_was_present_becomes_a_condition() -> None:
    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        first = (await source.poll()).chassis
        assert not [c for c in first.components if c.kind == "power_supply"]
        server.set_value(BLADE_PSU2, ["Status"], {"State": "Absent"})
        later = (await source.poll()).chassis
        await source.aclose()
        assert "PSU 2: Warning, absent (was present)" in later.conditions
        assert [c.chassis for c in later.components if c.name == "PSU 2"] == ["Blade 1"]

    _serve(scenario, MULTI)


def test_an_unhealthy_chassis_with_no_named_component_walks_the_tree_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_module, "UNEXPLAINED_REDISCOVER_S", 0.0)
    tray = "/redfish/v1/Chassis/Tray2"

    async def scenario(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        source = _source(_spec(server.url), http)
        await source.poll()
        # a sensor that was healthy at discovery (so not polled) turns Critical; the tray's rollup says so
        server.set_value(f"{tray}/Sensors/Tray2_P3V3", ["Status", "Health"], "Critical")
        server.set_value(tray, ["Status", "HealthRollup"], "Critical")
        chassis = (await source.poll()).chassis
        await source.aclose()
        assert "Tray 2 P3V3: Critical, 3.31 V" in chassis.conditions

    async def unexplainable(server: RedfishMockServer, http: aiohttp.ClientSession) -> None:
        # a rollup no resource of the tree explains (a DIMM counted in the tray's): walked once, not every poll
        server.set_value(tray, ["Status", "HealthRollup"], "Critical")
        source = _source(_spec(server.url), http)
        for _ in range(3):
            chassis = (await source.poll()).chassis
        await source.aclose()
        assert server.gets().count("/redfish/v1") == 1
        assert chassis.parts[1].readings.health is Health.CRITICAL

    _serve(scenario, MULTI)
    _serve(unexplainable, MULTI)


def test_the_rules_open_an_incident_naming_each_unhealthy_component() -> None:
    chassis = _multi_chassis_sample().chassis
    trace = build_trace(
        60,
        chassis_fault=chassis_from(
            lambda healthy: dataclasses.replace(
                healthy,
                health=chassis.health,
                conditions=chassis.conditions,
                components=chassis.components,
                parts=chassis.parts,
            )
        ),
    )
    changes = run(IncidentEngine(load_rules(), make_fleet(), clock=lambda: T0), trace)
    found = {(c.incident.rule, c.incident.title, c.incident.severity) for c in opened(changes, "chassis_health")}
    assert found == {
        ("chassis_health", f"Chassis Blade 1 System Fan 2 critical on {NODE}", Severity.CRITICAL),
        ("chassis_health", f"Chassis Tray 2 P12V warning on {NODE}", Severity.WARNING),
    }
    fan = next(c.incident for c in opened(changes, "chassis_health") if c.incident.severity is Severity.CRITICAL)
    assert "System Fan 2: Critical, 0 RPM (chassis Blade 1)" in fan.detail


def test_named_components_and_chassis_parts_survive_the_json_form() -> None:
    sample = _multi_chassis_sample()
    assert sample_from_json(json.loads(json.dumps(sample_to_json(sample)))) == sample
