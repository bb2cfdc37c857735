"""``gpu-console probe`` end to end: the real console script against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.cli.main import build_parser
from console.cli.probe import ProbeUsageError, build_spec
from console.config.fleet import SecretKind, SecretRef, SourceKind, SourceSpec
from console.polling.probe import format_sample_table, probe
from console.samples.results import PollFailure
from console.samples.schema import ChassisSample, EventKind, GpuEvent, GpuSample, NodeSample, ThrottleReason
from tests.helpers.builders import ExporterStandIn, free_port
from tests.helpers.sshd_server import H100_LOAD_CSV, SshServer, capture_rows, running_sshd, ssh_keygen

GPU_CONSOLE = Path(sys.executable).with_name("gpu-console")
DCGM_FIXTURE = "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt"
L4_UUID = "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"


@pytest.fixture
def exporter(fixtures_dir: Path) -> Iterator[ExporterStandIn]:
    with ExporterStandIn((fixtures_dir / DCGM_FIXTURE).read_text(encoding="utf-8")) as server:
        yield server


def run_probe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GPU_CONSOLE), "probe", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- end to end through the console script ------


def test_probe_prints_a_table_of_the_real_exporter_payload(exporter: ExporterStandIn) -> None:
    result = run_probe("dcgm", exporter.url())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    header, row = result.stdout.splitlines()[2:4]
    assert header.split()[:4] == ["GPU", "NAME", "UUID", "UTIL"]
    assert row.startswith("0    NVIDIA L4")
    assert L4_UUID in row
    assert "16.4 W" in row  # DCGM_FI_DEV_POWER_USAGE 16.365, already in W
    assert "23033 MiB" in row  # used 0 + free 23033
    assert "31 degC" in row
    assert "210 MHz" in row
    assert "chassis: nothing reported" in result.stdout


def test_probe_json_is_the_schema_document(exporter: ExporterStandIn) -> None:
    result = run_probe("dcgm", exporter.url(), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["schema"] == "gpu-console.sample/1"
    assert document["source"] == "dcgm"
    (gpu,) = document["gpus"]
    assert gpu["uuid"] == L4_UUID
    assert gpu["power_w"] == pytest.approx(16.365)
    assert gpu["temperature_c"] == 31


def test_probe_exit_2_when_the_port_refuses() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = run_probe("dcgm", url)
    assert result.returncode == 2
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith(f"probe dcgm {url}: unreachable: ")


def test_probe_exit_2_when_the_target_does_not_answer_in_time(exporter: ExporterStandIn) -> None:
    started = time.monotonic()
    result = run_probe("dcgm", exporter.url("/silent"), "--timeout", "0.5")
    assert time.monotonic() - started < 15
    assert result.returncode == 2
    assert "timeout: no answer within 0.5 s" in one_line(result.stderr)


def test_probe_exit_3_when_authentication_is_refused(exporter: ExporterStandIn) -> None:
    result = run_probe("dcgm", exporter.url("/auth"))
    assert result.returncode == 3
    assert "auth_refused: HTTP 401" in one_line(result.stderr)


def test_probe_exit_4_when_the_payload_is_garbage(exporter: ExporterStandIn) -> None:
    result = run_probe("dcgm", exporter.url("/garbage"), "--json")
    assert result.returncode == 4
    assert result.stdout == ""
    assert ": bad_payload: " in one_line(result.stderr)


def test_probe_refuses_options_that_do_not_fit_the_kind() -> None:
    result = run_probe("dcgm", "http://127.0.0.1:1/metrics", "--key-file", "/k")
    assert result.returncode == 1
    assert one_line(result.stderr) == "gpu-console probe: --key-file does not apply to dcgm"
    result = run_probe("nvml", "gpu-07")
    assert result.returncode == 1
    assert one_line(result.stderr) == 'gpu-console probe: nvml reads this machine\'s GPUs: TARGET must be "local"'


# --- in process ------


def test_probe_function_returns_the_sample_and_closes_everything(exporter: ExporterStandIn) -> None:
    outcome = probe(SourceSpec(SourceKind.DCGM, url=exporter.url()), timeout_s=5, node="n1", site="s1")
    assert outcome.ok
    assert outcome.exit_code == 0
    assert outcome.sample is not None
    assert (outcome.sample.node, outcome.sample.site) == ("n1", "s1")
    assert outcome.summary().startswith("ok: 1 GPU in ")
    assert 0 < outcome.latency_s < 5


def test_probe_function_reports_failures_as_data() -> None:
    outcome = probe(SourceSpec(SourceKind.DCGM, url=f"http://127.0.0.1:{free_port()}/"), timeout_s=5)
    assert not outcome.ok
    assert outcome.failure is PollFailure.UNREACHABLE
    assert outcome.exit_code == 2
    assert outcome.summary().startswith("unreachable: ")


def parse(*argv: str) -> SourceSpec:
    return build_spec(build_parser().parse_args(["probe", *argv]))


def test_options_become_the_source_spec() -> None:
    assert parse("ssh", "ops@10.1.0.5", "--port", "2222", "--key-file", "~/.ssh/k") == SourceSpec(
        SourceKind.SSH, host="10.1.0.5", port=2222, user="ops", key_file="~/.ssh/k"
    )
    assert parse("ssh", "[::1]", "--user", "ops").host == "::1"
    assert parse("redfish", "https://bmc/hmc", "--user", "m", "--password-env", "BMC_PW", "--insecure") == SourceSpec(
        SourceKind.REDFISH,
        url="https://bmc/hmc",
        user="m",
        password=SecretRef(SecretKind.ENV, "BMC_PW"),
        verify_tls=False,
    )
    assert parse("agent", "http://n:9401", "--token-file", "/t").token == SecretRef(SecretKind.FILE, "/t")
    assert parse("nvml", "local") == SourceSpec(SourceKind.NVML)
    for bad in (
        ("ssh", "a@h", "--user", "b"),
        ("ssh", "h", "--insecure"),
        ("redfish", "bmc.example"),
        ("agent", "http://n", "--token-env", "A", "--token-file", "/t"),
        ("dcgm", "http://", "--timeout", "1"),
    ):
        with pytest.raises(ProbeUsageError):
            parse(*bad)
    with pytest.raises(SystemExit) as stopped:  # refused by the parser itself, with probe's usage code
        parse("dcgm", "http://n", "--timeout", "0")
    assert stopped.value.code == 1


# --- the table ------


def test_the_table_shows_units_na_and_not_supported() -> None:
    sample = NodeSample(
        node="gpu-01",
        site="lab",
        source="nvml",
        time=0.0,
        gpus=(
            GpuSample(
                index=0,
                uuid="GPU-a",
                name="NVIDIA H100 80GB HBM3",
                utilization_pct=97.0,
                memory_used_mib=1024.0,
                memory_total_mib=81559.0,
                power_w=612.25,
                power_limit_w=700.0,
                temperature_c=71.0,
                memory_temperature_c=None,
                pstate=0,
                throttle_reasons=(ThrottleReason.SW_POWER_CAP,),
                unsupported=("memory_temperature_c",),
            ),
            GpuSample(index=1, uuid="GPU-b\x1b[31m", lost=True),
        ),
        chassis=ChassisSample(inlet_c=24.5, fans_rpm=(9000.0, 9100.0), leak_detected=False),
        events=(GpuEvent(EventKind.XID, 0.0, gpu_index=1, code=79, message="fallen off the bus"),),
    )
    text = format_sample_table(sample)
    lines = text.splitlines()
    assert lines[0] == "node gpu-01  site lab  source nvml  at 1970-01-01 00:00:00 UTC"
    first, second = lines[3], lines[4]
    for cell in (
        "97 %",
        "1024 MiB",
        "81559 MiB",
        "612.2 W",
        "700 W",
        "71 degC",
        "not supported",
        "P0",
        "sw_power_cap",
    ):
        assert cell in first
    assert "n/a" not in first.split("not supported")[0].split("71 degC")[1]  # HBM is "not supported", not n/a
    assert second.split()[:3] == ["1", "n/a", "(LOST)"]
    assert "\x1b" not in text  # a hostile UUID cannot drive the terminal
    assert "GPU-b?[31m" in second
    assert "  inlet           24.5 degC" in lines
    assert "  fans            9000 RPM, 9100 RPM" in lines
    assert "  leak detected   no" in lines
    assert "  exhaust         n/a" in lines
    assert "  xid 79 GPU 1: fallen off the bus" in lines


# --- ssh, against a real OpenSSH server with an nvidia-smi stand-in (helpers shared with test_ssh_source) ------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[SshServer, Path, Path]]:
    if shutil.which("/usr/sbin/sshd") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs Debian's openssh-server (/usr/sbin/sshd) and ssh-keygen")
    with running_sshd(tmp_path) as (server, _nvidia_smi, client_key, known_hosts):
        yield server, client_key, known_hosts


@pytest.mark.slow
def test_probe_ssh_prints_every_gpu_and_exit_3_for_a_refused_key(
    sshd: tuple[SshServer, Path, Path], tmp_path: Path
) -> None:
    server, client_key, known_hosts = sshd
    common = ("--port", str(server.port), "--known-hosts", str(known_hosts))
    result = run_probe("ssh", "127.0.0.1", "--key-file", str(client_key), *common)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert len(rows) == len(capture_rows(H100_LOAD_CSV))
    assert all("NVIDIA H100" in row for row in rows)

    stranger = ssh_keygen(tmp_path / "stranger_key")
    result = run_probe("ssh", "127.0.0.1", "--key-file", str(stranger), *common)
    assert result.returncode == 3
    assert ": auth_refused: " in one_line(result.stderr)


def test_probe_nvml_without_a_driver_says_why_there_are_no_gpus() -> None:
    import ctypes.util

    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has an NVIDIA driver")
    result = run_probe("nvml", "local")
    assert result.returncode == 0, result.stderr
    assert "no GPUs reported" in result.stdout
    assert "0 GPUs" in result.stderr and "not found" in result.stderr
