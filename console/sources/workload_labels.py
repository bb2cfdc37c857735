"""Workload from dcgm-exporter's labels: Kubernetes pods (``-k``) and HPC jobs (``--hpc-job-mapping-dir``).

A scrape and a Prometheus query carry the same labels, so both sources read them here. dcgm-exporter writes
``pod``/``namespace``/``container`` (``pod_name``/``pod_namespace``/``container_name`` with
``--use-old-namespace``); Prometheus renames a label that collides with a target label to ``exported_<name>``
(``honor_labels: false``), and that one then names the workload, the plain one the exporter's own pod. ``hpc_job``
names one job; a GPU running *k* jobs has *k* copies of every series, one per job.
"""

from __future__ import annotations

from collections.abc import Mapping

from console.samples.schema import JobWorkload, PodWorkload, Workload

HPC_JOB_LABEL = "hpc_job"
# Per field, the label spellings in order of preference (lowercase: the mapper lowercases label names).
_POD_LABELS = {
    "pod": ("exported_pod", "pod", "pod_name"),
    "namespace": ("exported_namespace", "namespace", "pod_namespace"),
    "container": ("exported_container", "container", "container_name"),
}
# Every label this module reads, as exporters spell them: a Prometheus query must keep them.
WORKLOAD_LABELS: tuple[str, ...] = (*(name for names in _POD_LABELS.values() for name in names), HPC_JOB_LABEL)


def _first(labels: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((labels[name] for name in names if labels.get(name)), None)


def carries_workload_labels(lower: Mapping[str, str]) -> bool:
    """Whether a series (lowercase label names) comes from an exporter that attributes GPUs at all."""
    return any(name in lower for name in WORKLOAD_LABELS)


def workload_from_labels(lower: Mapping[str, str]) -> tuple[Workload, ...]:
    """The pod and the job one series names (lowercase label names); empty labels name nothing."""
    entries: list[Workload] = []
    pod = _first(lower, _POD_LABELS["pod"])
    if pod is not None:
        namespace = _first(lower, _POD_LABELS["namespace"])
        entries.append(PodWorkload(namespace=namespace, pod=pod, container=_first(lower, _POD_LABELS["container"])))
    job = lower.get(HPC_JOB_LABEL)
    if job:
        entries.append(JobWorkload(id=job))
    return tuple(entries)
