"""Which workload a GPU runs (issue 16, item 1): dcgm-exporter's pod and HPC job labels read from a real HTTP
exporter on loopback, directly and through Debian's real Prometheus, on the sample and on an Xid incident; NVML's
compute processes; the workload in the schema JSON, the incident store and ``incidents list --json``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from console.config.fleet import Node, Site, SourceKind, SourceSpec
from console.incidents.engine import IncidentEngine
from console.incidents.model import ChangeKind, IncidentChange
from console.incidents.rules import load_rules
from console.incidents.xid import load_xid_catalog
from console.samples.codec import sample_from_json, sample_to_json
from console.samples.results import PollResult
from console.samples.schema import (
    EventKind,
    GpuEvent,
    JobWorkload,
    NodeSample,
    PodWorkload,
    ProcessWorkload,
    SchemaError,
    merge_samples,
)
from console.sources.base import SourceContext
from console.sources.dcgm.render import render_dcgm_exposition
from console.sources.dcgm.source import DcgmSource
from console.sources.nvml.source import NvmlSource
from console.sources.prometheus import PrometheusSiteReader
from console.store import IncidentStore
from tests.helpers.builders import ExporterStandIn, h100_dcgm_sample
from tests.helpers.fake_pynvml import FakeGpu, FakeNvml
from tests.helpers.prometheus_server import available as prometheus_available
from tests.helpers.prometheus_server import prometheus_over
from tests.helpers.traces import make_fleet
from tests.integration.test_incidents_cli import gpu_console

NODE, SITE = "p5-017", "aws-use1"
TRAINING = PodWorkload(namespace="ml-team", pod="llama-train-0", container="pytorch")
JOB = JobWorkload(id="4711")


def _exporter_text(*, temperature: float = 59.0, xid: int = 0) -> str:
    """An 8-GPU exporter in Kubernetes mode with HPC job mapping: GPU 0 runs a training pod, GPU 1 a Slurm job,
    the others nothing (their series carry no pod or job label)."""
    sample = h100_dcgm_sample(NODE)
    gpus = [dataclasses.replace(g, temperature_c=temperature, xid_last=xid if g.index == 0 else 0) for g in sample.gpus]
    text = render_dcgm_exposition([dataclasses.replace(sample, gpus=tuple(gpus))])
    first, second = gpus[0].uuid, gpus[1].uuid
    text = text.replace(
        f'UUID="{first}"', f'UUID="{first}",container="pytorch",namespace="ml-team",pod="llama-train-0"'
    )
    return text.replace(f'UUID="{second}"', f'UUID="{second}",hpc_job="4711"')


def _ctx(url: str, http: aiohttp.ClientSession) -> SourceContext:
    spec = SourceSpec(kind=SourceKind.DCGM, url=url)
    return SourceContext(Node(NODE, SITE, (spec,)), Site(SITE, "aws"), spec, 5.0, http)


async def _poll_each(exporter: ExporterStandIn, payloads: list[str]) -> list[NodeSample]:
    samples = []
    async with aiohttp.ClientSession() as http:
        source = DcgmSource(_ctx(exporter.url(), http))
        for payload in payloads:
            exporter.payload = payload
            samples.append(await source.poll())
        await source.aclose()
    return samples


def _changes(samples: list[NodeSample]) -> list[IncidentChange]:
    fleet = make_fleet(nodes=((NODE, SITE),), sites=((SITE, "aws"),))
    start = samples[0].time
    engine = IncidentEngine(load_rules(), fleet, clock=lambda: start, xid_catalog=load_xid_catalog())
    changes: list[IncidentChange] = []
    for step, sample in enumerate(samples):
        stamped = dataclasses.replace(sample, time=start + step)
        changes += engine.observe(PollResult(NODE, SITE, start + step, 0.01, stamped))
    return changes


def test_pod_and_job_labels_of_a_real_exporter_become_the_workload_on_the_sample_and_the_xid_incident(
    tmp_path: Path,
) -> None:
    payloads = [_exporter_text(), _exporter_text(temperature=61.0), _exporter_text(temperature=61.0, xid=79)]
    with ExporterStandIn(payloads[0]) as exporter:
        samples = asyncio.run(_poll_each(exporter, payloads))
    for sample in samples:  # full parse, the fast path (only a value changed), full parse again (an Xid)
        by_index = {gpu.index: gpu for gpu in sample.gpus}
        assert by_index[0].workload == (TRAINING,)
        assert by_index[1].workload == (JOB,)
        assert all(by_index[i].workload == () for i in range(2, 8))  # attributed exporter: nothing runs there
    assert samples[1].gpus[0].temperature_c == 61.0
    assert sample_from_json(json.loads(json.dumps(sample_to_json(samples[2])))) == samples[2]

    opened = [c for c in _changes(samples) if c.kind is ChangeKind.OPENED and c.incident.rule == "xid"]
    assert len(opened) == 1 and opened[0].incident.code == "79"
    assert opened[0].incident.workload == (TRAINING,)

    db = tmp_path / "incidents.sqlite3"
    with IncidentStore.open(db) as store:
        store.submit(opened)
    with IncidentStore.open(db) as store:
        kept = store.get(opened[0].incident.id)
    assert kept is not None and kept.workload == (TRAINING,)
    result = gpu_console("incidents", "list", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    [listed] = json.loads(result.stdout)
    assert listed["workload"] == [
        {"kind": "pod", "namespace": "ml-team", "pod": "llama-train-0", "container": "pytorch"}
    ]


def test_an_exporter_without_pod_or_job_labels_cannot_tell() -> None:
    with ExporterStandIn(render_dcgm_exposition([h100_dcgm_sample(NODE)])) as exporter:
        [sample] = asyncio.run(_poll_each(exporter, [exporter.payload]))
    assert all(gpu.workload is None for gpu in sample.gpus)
    assert all(entry["workload"] is None for entry in sample_to_json(sample)["gpus"])


def test_a_job_that_appears_while_the_xid_incident_is_open_is_added_and_the_first_is_kept() -> None:
    base = h100_dcgm_sample(NODE)
    victim = base.gpus[0]

    def at(step: int, workload: tuple[PodWorkload | JobWorkload, ...], xid: int | None) -> NodeSample:
        gpus = (dataclasses.replace(victim, workload=workload, xid_last=xid or 0), *base.gpus[1:])
        events: tuple[GpuEvent, ...] = ()
        if xid is not None:
            events = (GpuEvent(EventKind.XID, base.time + step, victim.uuid, 0, xid, "Graphics SM Warp Exception"),)
        return dataclasses.replace(base, gpus=gpus, events=events)

    samples = [at(0, (TRAINING,), 13), at(1, (), None), at(2, (JOB,), 13)]
    changes = [c for c in _changes(samples) if c.incident.rule == "xid"]
    assert changes[0].kind is ChangeKind.OPENED and changes[0].incident.workload == (TRAINING,)
    assert changes[-1].incident.workload == (TRAINING, JOB)


def test_nvml_compute_processes_are_the_workload_and_unsupported_means_cannot_tell() -> None:
    busy = FakeGpu(processes=[(4242, "python3", 38_000 * 1024 * 1024), (5151, "nccl-tests", None)])
    idle = FakeGpu(uuid="GPU-22dbdd79-f55a-92a8-aa39-322198e70000", bus_id="00000000:54:00.0")
    blind = FakeGpu(uuid="GPU-22dbdd79-f55a-92a8-aa39-322198e70001", bus_id="00000000:55:00.0")
    blind.fail["nvmlDeviceGetComputeRunningProcesses"] = 3  # NOT_SUPPORTED
    spec = SourceSpec(kind=SourceKind.NVML)
    ctx = SourceContext(Node("local", SITE, (spec,)), Site(SITE, "aws"), spec, 5.0, None)

    async def poll() -> NodeSample:
        source = NvmlSource(ctx, nvml=FakeNvml([busy, idle, blind]))
        try:
            return await source.poll()
        finally:
            await source.aclose()

    sample = asyncio.run(poll())
    by_index = {gpu.index: gpu for gpu in sample.gpus}
    assert by_index[0].workload == (
        ProcessWorkload(4242, "python3", 38_000.0),
        ProcessWorkload(5151, "nccl-tests", None),
    )
    assert by_index[1].workload == ()
    assert by_index[2].workload is None and "workload" in by_index[2].unsupported
    # Pods from dcgm-exporter and processes from NVML on one node: both are kept.
    pods = dataclasses.replace(sample, gpus=(dataclasses.replace(by_index[0], workload=(TRAINING,)),))
    merged = merge_samples([pods, sample]).gpus[0]
    assert merged.workload == (TRAINING, *by_index[0].workload)


@pytest.mark.parametrize(
    ("workload", "words"),
    [
        ([{"kind": "pod"}], "workload[0].pod: expected str"),
        ({"kind": "pod"}, "workload: expected a list or null"),
        ([{"kind": "vm", "id": "x"}], "workload[0].kind: expected pod, job or process"),
        ([{"kind": "job", "id": "1", "user": "x"}], "unknown keys ['user']"),
        ([{"kind": "process", "pid": "12"}], "workload[0].pid: expected int"),
    ],
)
def test_a_bad_workload_in_sample_json_is_refused_with_its_key_path(workload: object, words: str) -> None:
    document = sample_to_json(h100_dcgm_sample(NODE, gpus=1))
    document["gpus"][0]["workload"] = workload
    with pytest.raises(SchemaError, match=words.replace("[", r"\[").replace("]", r"\]")):
        sample_from_json(document)


# --- through a real Prometheus --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_over_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not prometheus_available():
        pytest.skip("prometheus (Debian package) is not installed")
    work = tmp_path_factory.mktemp("prometheus-workload")
    with (
        ExporterStandIn(_exporter_text(xid=79)) as exporter,
        prometheus_over(work, [f"127.0.0.1:{exporter.port}"], gpus=8) as url,
    ):
        yield url


@pytest.mark.slow
def test_pod_and_job_labels_survive_a_real_prometheus_as_workload_not_identity(prometheus_over_exporter: str) -> None:
    async def read() -> dict[str, NodeSample]:
        async with aiohttp.ClientSession() as http:
            return await PrometheusSiteReader(prometheus_over_exporter, http, site=SITE).read_site()

    samples = asyncio.run(read())
    sample = samples[NODE]
    assert len(sample.gpus) == 8  # the pod and job labels did not split a GPU into two
    by_index = {gpu.index: gpu for gpu in sample.gpus}
    assert by_index[0].workload == (TRAINING,)
    assert by_index[1].workload == (JOB,)
    assert by_index[5].workload == ()
    opened = [c for c in _changes([sample]) if c.kind is ChangeKind.OPENED and c.incident.rule == "xid"]
    assert [c.incident.workload for c in opened] == [(TRAINING,)]
