"""The agentless SSH source against a real OpenSSH server on 127.0.0.1 with an nvidia-smi stand-in.

The stand-in replays the real H100 SXM load capture (tests/fixtures/nvidia_smi, MIT licence, from
utkuozdemir/nvidia_gpu_exporter) for whichever fields the source asks for.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec
from console.polling.poller import Poller
from console.samples.results import PollFailure, PollResult, SourceError
from console.samples.schema import EventKind, NodeSample, ProcessWorkload, RecoveryAction
from console.sources import make_source as make_any_source
from console.sources.base import SourceContext
from console.sources.ssh.source import SshSource
from tests.helpers.sshd_server import NvidiaSmiStandIn, SshServer, running_sshd, ssh_keygen

pytestmark = pytest.mark.skipif(
    shutil.which("/usr/sbin/sshd") is None or shutil.which("ssh-keygen") is None,
    reason="needs Debian's openssh-server (/usr/sbin/sshd) and ssh-keygen",
)

SITE = Site(name="lab", provider="onprem")


@dataclass
class Rig:
    root: Path
    server: SshServer
    nvidia_smi: NvidiaSmiStandIn
    client_key: Path
    known_hosts: Path

    def spec(self, **changes: object) -> SourceSpec:
        spec = SourceSpec(
            kind=SourceKind.SSH,
            host="127.0.0.1",
            port=self.server.port,
            key_file=str(self.client_key),
            known_hosts=str(self.known_hosts),
        )
        return replace(spec, **changes)  # type: ignore[arg-type]

    def source(self, timeout_s: float = 10.0, **changes: object) -> SshSource:
        spec = self.spec(**changes)
        node = Node(name="gpu-node-1", site=SITE.name, sources=(spec,))
        source = make_any_source(SourceContext(node=node, site=SITE, spec=spec, timeout_s=timeout_s))
        assert isinstance(source, SshSource)
        return source


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with running_sshd(tmp_path) as (server, nvidia_smi, client_key, known_hosts):
        yield Rig(tmp_path, server, nvidia_smi, client_key, known_hosts)


async def _polls(source: SshSource, count: int = 1) -> list[NodeSample]:
    try:
        return [await source.poll() for _ in range(count)]
    finally:
        await source.aclose()


def poll_once(source: SshSource) -> NodeSample:
    return asyncio.run(_polls(source))[0]


def poll_error(source: SshSource) -> SourceError:
    with pytest.raises(SourceError) as caught:
        poll_once(source)
    return caught.value


def test_poll_returns_the_captured_h100_values(rig: Rig) -> None:
    sample = poll_once(rig.source())

    assert (sample.node, sample.site, sample.source) == ("gpu-node-1", "lab", "ssh")
    assert len(sample.gpus) == 1
    gpu = sample.gpus[0]
    assert gpu.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.pci_bus_id == "00000000:00:09.0"
    assert gpu.driver_version == "590.48.01"
    assert gpu.power_w == pytest.approx(631.95)
    assert gpu.power_limit_w == pytest.approx(700.0)
    assert gpu.utilization_pct == 100.0
    assert (gpu.memory_used_mib, gpu.memory_total_mib) == (19818.0, 81559.0)
    assert (gpu.temperature_c, gpu.thermal_margin_c, gpu.memory_temperature_c) == (59.0, 26.0, 54.0)
    assert gpu.sm_clock_mhz == 1980.0
    assert gpu.pstate == 0
    assert gpu.throttle_reasons == ()
    assert gpu.recovery_action is RecoveryAction.NONE
    assert gpu.mig_mode is False
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (False, False)
    assert (gpu.pcie_link_gen, gpu.pcie_link_width) == (5, 16)
    assert gpu.fan_pct is None
    assert "fan_pct" in gpu.unsupported  # SXM: no board fan


def test_compute_apps_are_the_workload_none_running_is_empty_and_a_failed_query_cannot_tell(rig: Rig) -> None:
    uuid = "GPU-00000000-0000-0000-0000-000000000000"
    rig.nvidia_smi.set(apps=(f"{uuid}, 31337, /usr/bin/python3, 19800", f"{uuid}, 4040, nccl-tests, [N/A]"))
    busy = poll_once(rig.source()).gpus[0]
    assert busy.workload == (
        ProcessWorkload(31337, "/usr/bin/python3", 19800.0),
        ProcessWorkload(4040, "nccl-tests", None),
    )
    rig.nvidia_smi.set()
    assert poll_once(rig.source()).gpus[0].workload == ()
    rig.nvidia_smi.set(apps=("this is not a process line",))
    assert poll_once(rig.source()).gpus[0].workload is None


def test_second_poll_reuses_the_connection(rig: Rig) -> None:
    source = rig.source()

    async def two_polls() -> tuple[object, object]:
        try:
            await source.poll()
            first = source.connection
            await source.poll()
            return first, source.connection
        finally:
            await source.aclose()

    first, second = asyncio.run(two_polls())

    assert first is not None
    assert second is first
    assert source.connections_opened == 1
    assert rig.server.accepted_logins() == 1
    assert len(rig.nvidia_smi.calls) == 2


def test_unknown_host_key_is_refused_and_says_so(rig: Rig) -> None:
    rig.known_hosts.write_text("")

    error = poll_error(rig.source())

    assert error.failure is PollFailure.AUTH_REFUSED
    assert "host key" in error.reason
    assert "unknown" in error.reason
    assert rig.server.accepted_logins() == 0
    assert rig.nvidia_smi.calls == []


def test_changed_host_key_is_refused_and_says_so(rig: Rig) -> None:
    impostor = ssh_keygen(rig.root / "other_host_key")
    rig.known_hosts.write_text(rig.server.known_hosts_line(impostor))

    error = poll_error(rig.source())

    assert error.failure is PollFailure.AUTH_REFUSED
    assert "host key" in error.reason
    assert "changed" in error.reason
    assert rig.nvidia_smi.calls == []


def test_missing_known_hosts_file_is_refused(rig: Rig) -> None:
    error = poll_error(rig.source(known_hosts=str(rig.root / "no_such_known_hosts")))

    assert error.failure is PollFailure.AUTH_REFUSED
    assert "no_such_known_hosts" in error.reason


def test_wrong_client_key_is_auth_refused(rig: Rig) -> None:
    stranger = ssh_keygen(rig.root / "stranger_key")

    error = poll_error(rig.source(key_file=str(stranger)))

    assert error.failure is PollFailure.AUTH_REFUSED
    assert "refused" in error.reason
    assert rig.nvidia_smi.calls == []


def test_unreadable_key_file_is_auth_refused(rig: Rig) -> None:
    error = poll_error(rig.source(key_file=str(rig.root / "no_such_key")))

    assert error.failure is PollFailure.AUTH_REFUSED
    assert "no_such_key" in error.reason


def test_stopped_sshd_is_unreachable_and_the_source_reconnects_when_it_returns(rig: Rig) -> None:
    source = rig.source()

    async def scenario() -> tuple[NodeSample, SourceError, NodeSample]:
        try:
            before = await source.poll()
            rig.server.stop()
            await asyncio.sleep(0.2)  # let the client see the connection close
            with pytest.raises(SourceError) as down:
                await source.poll()
            rig.server.start()
            after = await source.poll()
            return before, down.value, after
        finally:
            await source.aclose()

    before, down, after = asyncio.run(scenario())

    assert len(before.gpus) == 1
    assert down.failure is PollFailure.UNREACHABLE
    assert "127.0.0.1" in down.reason
    assert after.gpus[0].power_w == pytest.approx(631.95)
    assert source.connections_opened == 2
    assert rig.server.accepted_logins() == 2


def test_nothing_listening_is_unreachable(rig: Rig) -> None:
    rig.server.stop()

    error = poll_error(rig.source())

    assert error.failure is PollFailure.UNREACHABLE


def test_garbage_output_is_bad_payload_naming_the_problem(rig: Rig) -> None:
    rig.nvidia_smi.set(mode="garbage")

    error = poll_error(rig.source())

    assert error.failure is PollFailure.BAD_PAYLOAD
    assert "line 1" in error.reason
    assert "columns" in error.reason


def test_missing_nvidia_smi_is_bad_payload(rig: Rig) -> None:
    rig.nvidia_smi.remove()

    error = poll_error(rig.source())

    assert error.failure is PollFailure.BAD_PAYLOAD
    assert "not found" in error.reason


def test_failing_driver_is_unreachable_with_the_stderr_line(rig: Rig) -> None:
    rig.nvidia_smi.set(mode="driver_down")

    error = poll_error(rig.source())

    assert error.failure is PollFailure.UNREACHABLE
    assert "couldn't communicate with the NVIDIA driver" in error.reason
    assert "exited 9" in error.reason


def test_fields_an_older_nvidia_smi_rejects_are_dropped_and_flagged(rig: Rig) -> None:
    rig.nvidia_smi.set(rejects=("gpu_recovery_action", "temperature.gpu.tlimit"))
    source = rig.source()

    first, second = asyncio.run(_polls(source, 2))

    for sample in (first, second):
        gpu = sample.gpus[0]
        assert gpu.recovery_action is None
        assert gpu.thermal_margin_c is None
        assert {"recovery_action", "thermal_margin_c"} <= set(gpu.unsupported)
        assert gpu.power_w == pytest.approx(631.95)
    # the rejection is remembered: 2 rejected tries, then one query per poll
    assert len(rig.nvidia_smi.calls) == 4


def test_a_gpu_the_driver_cannot_reach_is_reported_once_as_an_event(rig: Rig) -> None:
    rig.nvidia_smi.set(mode="lost")

    first, second = asyncio.run(_polls(rig.source(), 2))

    assert len(first.gpus) == 1  # the GPUs that still answer keep reporting
    assert [event.kind for event in first.events] == [EventKind.GPU_LOST]
    assert "0000:1B:00.0" in first.events[0].message
    assert second.events == ()


def test_timed_out_poll_drops_the_connection_and_the_next_poll_recovers(rig: Rig) -> None:
    source = rig.source()

    async def scenario() -> NodeSample:
        try:
            rig.nvidia_smi.set(mode="slow")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(source.poll(), 0.5)
            assert source.connection is None
            rig.nvidia_smi.set(mode="ok")
            return await source.poll()
        finally:
            await source.aclose()

    sample = asyncio.run(scenario())

    assert sample.gpus[0].utilization_pct == 100.0
    assert source.connections_opened == 2


def test_poller_delivers_ssh_samples(rig: Rig) -> None:
    spec = rig.spec()
    site = replace(SITE, interval_s=0.2, timeout_s=5.0)
    fleet = Fleet(sites=(site,), nodes=(Node(name="gpu-node-1", site=site.name, sources=(spec,)),))
    results: list[PollResult] = []
    poller = Poller(fleet, make_any_source, results.append, seed=1)
    poller.start()
    try:
        deadline = asyncio.run(_wait_for(lambda: sum(r.ok for r in results) >= 3, 10.0))
    finally:
        poller.stop()

    assert deadline, f"no 3 good polls: {[r.reason for r in results]}"
    assert all(r.sample is not None and r.sample.gpus[0].power_w == pytest.approx(631.95) for r in results if r.ok)
    assert rig.server.accepted_logins() == 1


async def _wait_for(condition: object, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False
