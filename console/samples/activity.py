"""What a GPU is busy with, in words: the profiling shares, PCIe and NVLink traffic and links, and MIG instances.

One line per topic, only for what the sample reports; shown in the fleet panel's GPU tooltip and by ``probe``.
"""

from __future__ import annotations

from console.samples.schema import GpuSample, MigInstance


def rate(mib_s: float) -> str:
    return f"{mib_s / 1024:.1f} GiB/s" if mib_s >= 1024 else f"{mib_s:.0f} MiB/s"


def _shares(gpu: GpuSample) -> str | None:
    parts = [
        f"{label} {value:.0f} %"
        for label, value in (
            ("graphics", gpu.graphics_active_pct),
            ("SM", gpu.sm_active_pct),
            ("tensor", gpu.tensor_active_pct),
            ("DRAM", gpu.dram_active_pct),
        )
        if value is not None
    ]
    return "busy: " + " · ".join(parts) if parts else None


def _traffic(what: str, tx: float | None, rx: float | None) -> str | None:
    if tx is None and rx is None:
        return None
    sent = rate(tx) if tx is not None else "n/a"
    received = rate(rx) if rx is not None else "n/a"
    return f"{what}: TX {sent}, RX {received}"


def _links(gpu: GpuSample) -> str | None:
    up, down = gpu.nvlink_links_up, gpu.nvlink_links_down
    if up is None:
        return None
    total = up + (down or 0)
    return f"NVLink links: {up} of {total} up" + (f" ({down} down)" if down else "")


def _instance(instance: MigInstance) -> str:
    busy = "n/a" if instance.utilization_pct is None else f"{instance.utilization_pct:.0f} %"
    used = "n/a" if instance.memory_used_mib is None else f"{instance.memory_used_mib:.0f}"
    total = "" if instance.memory_total_mib is None else f" of {instance.memory_total_mib:.0f}"
    profile = f" {instance.profile}" if instance.profile else ""
    return f"MIG {instance.instance_id}{profile}: busy {busy}, memory {used}{total} MiB"


def activity_lines(gpu: GpuSample) -> list[str]:
    lines = [
        _shares(gpu),
        _traffic("PCIe", gpu.pcie_tx_mib_s, gpu.pcie_rx_mib_s),
        _traffic("NVLink", gpu.nvlink_tx_mib_s, gpu.nvlink_rx_mib_s),
        _links(gpu),
    ]
    return [line for line in lines if line is not None] + [_instance(i) for i in gpu.mig_instances]
