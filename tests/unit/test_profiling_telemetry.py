"""More telemetry (issue 16, item 5): DCGM profiling shares and traffic in the schema's units, MIG instances kept
under their GPU (by the full parse and the fast path alike), NVML PCIe throughput and NVLink link state read
rarely, all through the JSON codec, the evidence encoder, the chart history and the words an operator reads."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest

from console.config.fleet import Node, Site, SourceKind, SourceSpec
from console.history.rings import FleetHistory
from console.history.rollup import RollupStore
from console.incidents.evidence import gpu_json
from console.samples.activity import activity_lines
from console.samples.codec import gpu_to_json, sample_from_json, sample_to_json
from console.samples.schema import GpuSample, MigInstance, NodeSample
from console.sources.base import SourceContext
from console.sources.dcgm.mapping import XidMemory
from console.sources.dcgm.render import render_dcgm_exposition
from console.sources.dcgm.source import parse_dcgm_payload, parse_with_template
from console.sources.nvml.source import NvmlSource
from tests.helpers.fake_pynvml import FakeGpu, FakeNvml

UUID = "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
LABELS = f'gpu="0",UUID="{UUID}",pci_bus_id="00000000:53:00.0",modelName="NVIDIA H100 80GB HBM3",Hostname="n1"'
NOW = 1_790_000_000.0


def _mig_payload(busy: tuple[float, float], used: tuple[int, int]) -> str:
    lines = [f"DCGM_FI_DEV_GPU_TEMP{{{LABELS}}} 59\n", f"DCGM_FI_PROF_PCIE_TX_BYTES{{{LABELS}}} 2097152\n"]
    for i, (ratio, mib) in enumerate(zip(busy, used, strict=True), start=1):
        instance = f'{LABELS},GPU_I_PROFILE="3g.40gb",GPU_I_ID="{i}"'
        lines += [
            f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{instance}}} {ratio}\n",
            f"DCGM_FI_DEV_FB_USED{{{instance}}} {mib}\n",
            f"DCGM_FI_DEV_FB_FREE{{{instance}}} {40000 - mib}\n",
        ]
    return "".join(lines)


def test_the_real_l4_capture_gives_profiling_shares_and_pcie_traffic(fixtures_dir: Path) -> None:
    payload = (fixtures_dir / "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt").read_text()
    (gpu,) = parse_dcgm_payload(payload, "n1", "s1", NOW, XidMemory()).gpus
    assert (gpu.graphics_active_pct, gpu.tensor_active_pct, gpu.dram_active_pct) == (0.0, 0.0, 0.0)  # idle
    assert gpu.pcie_tx_mib_s == pytest.approx(112603 / 1048576)
    assert gpu.pcie_rx_mib_s == pytest.approx(17544 / 1048576)
    assert gpu.sm_active_pct is None  # not in the exporter's default counters: not reported, not 0
    assert activity_lines(gpu)[:2] == ["busy: graphics 0 % · tensor 0 % · DRAM 0 %", "PCIe: TX 0 MiB/s, RX 0 MiB/s"]


def test_mig_instances_are_kept_under_their_gpu_by_both_parse_paths() -> None:
    memory = XidMemory()
    first, template = parse_with_template(_mig_payload((0.52, 0.1), (12000, 500)), "n1", "s1", NOW, memory)
    (gpu,) = first.gpus
    assert gpu.mig_mode is True
    assert gpu.mig_instances == (
        MigInstance("1", "3g.40gb", pytest.approx(52.0), 12000.0, 40000.0),
        MigInstance("2", "3g.40gb", pytest.approx(10.0), 500.0, 40000.0),
    )
    assert gpu.graphics_active_pct is None  # one instance's share is not the GPU's
    assert gpu.memory_used_mib == 12500.0  # the GPU's memory is still the instances' sum
    assert gpu.pcie_tx_mib_s == 2.0
    assert activity_lines(gpu)[-1] == "MIG 2 3g.40gb: busy 10 %, memory 500 of 40000 MiB"

    assert template is not None
    later = _mig_payload((0.9, 0.2), (30000, 700))
    fast = template.sample(later, NOW, memory, node="n1", site="s1", source="dcgm")
    full = parse_dcgm_payload(later, "n1", "s1", NOW, XidMemory())
    assert fast is not None and fast.gpus == full.gpus
    assert [i.utilization_pct for i in fast.gpus[0].mig_instances] == [pytest.approx(90.0), pytest.approx(20.0)]


def test_rendered_profiling_metrics_read_back_as_the_same_values() -> None:
    gpu = GpuSample(
        0,
        UUID,
        name="NVIDIA H100 80GB HBM3",
        graphics_active_pct=95.1,
        sm_active_pct=79.5,
        tensor_active_pct=44.6,
        dram_active_pct=36.9,
        pcie_tx_mib_s=1850.5,
        pcie_rx_mib_s=640.0,
        nvlink_tx_mib_s=92_150.0,
        nvlink_rx_mib_s=92_150.0,
    )
    text = render_dcgm_exposition([NodeSample("n1", "s1", "demo", NOW, (gpu,))])
    assert 'DCGM_FI_PROF_SM_ACTIVE{gpu="0"' in text and "DCGM_FI_PROF_NVLINK_TX_BYTES" in text
    (back,) = parse_dcgm_payload(text, "n1", "s1", NOW, XidMemory()).gpus
    for name in ("graphics_active_pct", "sm_active_pct", "tensor_active_pct", "dram_active_pct"):
        assert getattr(back, name) == pytest.approx(getattr(gpu, name)), name
    for name in ("pcie_tx_mib_s", "pcie_rx_mib_s", "nvlink_tx_mib_s", "nvlink_rx_mib_s"):
        assert getattr(back, name) == pytest.approx(getattr(gpu, name), abs=1e-6), name
    assert "NVLink: TX 90.0 GiB/s, RX 90.0 GiB/s" in activity_lines(back)


def _ctx() -> SourceContext:
    spec = SourceSpec(kind=SourceKind.NVML)
    return SourceContext(Node("n1", "lab", (spec,)), Site("lab", "onprem"), spec, timeout_s=3.0)


def test_nvml_reads_pcie_throughput_and_link_state_rarely() -> None:
    nvml = FakeNvml([FakeGpu(nvlinks_down=frozenset({3})), FakeGpu(nvlinks=0)])
    source = NvmlSource(_ctx(), nvml=nvml, event_timeout_ms=50)

    async def two_polls() -> list[NodeSample]:
        try:
            return [await source.poll(), await source.poll()]
        finally:
            await source.aclose()

    first, second = asyncio.run(two_polls())
    sxm, pcie = first.gpus
    assert (sxm.nvlink_links_up, sxm.nvlink_links_down) == (17, 1)
    assert (sxm.pcie_tx_mib_s, sxm.pcie_rx_mib_s) == (12.5, 3.125)  # 12,800 and 3,200 KB/s
    assert pcie.nvlink_links_up is None and "nvlink_links_up" in pcie.unsupported
    assert "NVLink links: 17 of 18 up (1 down)" in activity_lines(sxm)
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 4  # TX and RX of two GPUs, once: each call blocks ~20 ms
    assert second.gpus[0].pcie_tx_mib_s == 12.5  # the last reading is repeated in between


def test_the_codec_and_the_evidence_encoder_carry_mig_instances() -> None:
    gpu = GpuSample(
        0,
        UUID,
        sm_active_pct=81.5,
        nvlink_links_up=18,
        nvlink_links_down=0,
        mig_instances=(MigInstance("1", "1g.10gb", 40.0, 900.0, 9984.0), MigInstance("2", None, None, None, None)),
    )
    sample = NodeSample("n1", "s1", "dcgm", NOW, (gpu,))
    assert sample_from_json(json.loads(json.dumps(sample_to_json(sample)))) == sample
    assert gpu_json(gpu) == json.dumps(gpu_to_json(gpu), separators=(",", ":"))
    plain = dataclasses.replace(gpu, mig_instances=())
    assert gpu_json(plain) == json.dumps(gpu_to_json(plain), separators=(",", ":"))
    bad = sample_to_json(sample)
    bad["gpus"][0]["mig_instances"][0]["colour"] = "red"
    with pytest.raises(ValueError, match=r"gpus\[0\]\.mig_instances\[0\]: unknown keys \['colour'\]"):
        sample_from_json(bad)


def test_profiling_shares_reach_the_rings_and_the_minute_rollup(tmp_path: Path) -> None:
    gpu = GpuSample(0, UUID, power_w=300.0, sm_active_pct=80.0, tensor_active_pct=40.0, dram_active_pct=30.0)
    history = FleetHistory(capacity=16)
    start = (int(time.time() // 60) - 5) * 60.0
    rollup = RollupStore.open(tmp_path / "h.sqlite3")
    try:
        for k in range(3):
            sample = NodeSample("n1", "s1", "dcgm", start + k, (dataclasses.replace(gpu, sm_active_pct=70.0 + 10 * k),))
            history.record(sample)
            rollup.observe(sample)
        rollup.flush()
        series = history.nodes["n1"].gpu_series(UUID, "sm_active_pct", 0.0)
        assert list(series.y) == [70.0, 80.0, 90.0]
        assert list(history.nodes["n1"].gpu_series(UUID, "power_w", 0.0).y) == [300.0] * 3  # columns did not move
        minutes = rollup.reader.series("n1", UUID, "sm_active_pct", start - 60, start + 120)
        power = rollup.reader.series("n1", UUID, "power_w", start - 60, start + 120)
        assert list(minutes.mean) == [pytest.approx(80.0)]
        assert (list(minutes.min), list(minutes.max)) == ([70.0], [90.0])
        assert list(power.mean) == [300.0]
    finally:
        rollup.close()


def test_the_node_page_charts_the_mean_profiling_shares_or_says_why_not(qtbot) -> None:  # type: ignore[no-untyped-def]
    from widgets.live.charts import NO_PROFILING, ChartPanel, Selection

    history = FleetHistory()
    now = time.time()
    for t in (now - 2, now - 1):
        gpus = (
            GpuSample(0, "GPU-a", sm_active_pct=80.0, tensor_active_pct=40.0),
            GpuSample(1, "GPU-b", sm_active_pct=60.0, tensor_active_pct=None),
        )
        history.record(NodeSample("profiled", "s1", "dcgm", t, gpus))
        history.record(NodeSample("plain", "s1", "nvml", t, (GpuSample(0, "GPU-c", utilization_pct=50.0),)))
    panel = ChartPanel(history)
    qtbot.addWidget(panel)
    try:
        panel.select(Selection("profiled"))
        _x, sm = panel.profiling_curves["sm_active_pct"].getData()
        _x, tensor = panel.profiling_curves["tensor_active_pct"].getData()
        assert sm is not None and list(sm) == [70.0, 70.0]  # the mean of the node's two GPUs
        assert tensor is not None and list(tensor) == [40.0, 40.0]  # a GPU that does not report is left out
        assert panel.profiling.empty_note.toPlainText() == ""
        panel.select(Selection("profiled", "GPU-b"))
        _x, one = panel.profiling_curves["sm_active_pct"].getData()
        assert one is not None and list(one) == [60.0, 60.0]
        panel.select(Selection("plain"))
        assert panel.profiling.empty_note.toPlainText() == NO_PROFILING
    finally:
        panel.stop()
