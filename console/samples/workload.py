"""Workload entries as an operator reads them (the GPU row, the incident detail, the incident log's filter)."""

from __future__ import annotations

from console.samples.schema import JobWorkload, PodWorkload, Workload

SHOWN_IN_A_ROW = 2  # a row names this many entries, then "+N more"


def entry_text(entry: Workload) -> str:
    if isinstance(entry, PodWorkload):
        where = f"{entry.namespace}/{entry.pod}" if entry.namespace else entry.pod
        return f"pod {where}" + (f" ({entry.container})" if entry.container else "")
    if isinstance(entry, JobWorkload):
        return f"job {entry.id}"
    memory = f", {entry.used_memory_mib:.0f} MiB" if entry.used_memory_mib is not None else ""
    return f"pid {entry.pid} {entry.name or '?'}{memory}"


def workload_text(workload: tuple[Workload, ...] | None, *, limit: int | None = None) -> str:
    """``None``: the source cannot tell; ``()``: nothing runs there."""
    if workload is None:
        return "workload unknown"
    if not workload:
        return "no workload"
    shown = workload if limit is None else workload[:limit]
    text = ", ".join(entry_text(entry) for entry in shown)
    rest = len(workload) - len(shown)
    return f"{text}, +{rest} more" if rest else text


def workload_matches(workload: tuple[Workload, ...] | None, needle: str) -> bool:
    """Whether any entry's text contains ``needle`` (case-insensitive): a pod, a namespace, a job id, a process."""
    wanted = needle.strip().lower()
    return bool(workload) and any(wanted in entry_text(entry).lower() for entry in workload or ())
