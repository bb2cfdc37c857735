"""Poll one source once, outside the poller: for ``gpu-console probe`` and the editor's "Test connection".

Everything the poll needs (an aiohttp session, the source) is created here and closed before returning, so a
probe leaves nothing running. Failures come back as data (``ProbeOutcome.failure``), never as exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from console.config.fleet import Node, Site, SourceSpec
from console.samples.activity import activity_lines
from console.samples.results import PollFailure, SourceError
from console.samples.schema import EMPTY_CHASSIS, ChassisSample, GpuSample, NodeSample
from console.sources.base import Source, SourceContext

log = logging.getLogger(__name__)

SourceMaker = Callable[[SourceContext], Source]

# Exit codes of ``gpu-console probe`` (from the issue): 2 unreachable or timed out, 3 authentication refused,
# 4 unparseable payload. 1 covers everything else (a source that cannot be created, a bug, bad options).
EXIT_OK = 0
EXIT_OTHER = 1
EXIT_CODES: dict[PollFailure, int] = {
    PollFailure.UNREACHABLE: 2,
    PollFailure.TIMEOUT: 2,
    PollFailure.AUTH_REFUSED: 3,
    PollFailure.BAD_PAYLOAD: 4,
}


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """One poll of one source: the sample, or why there is none."""

    spec: SourceSpec
    latency_s: float
    sample: NodeSample | None = None
    failure: PollFailure | None = None
    reason: str = ""
    note: str = ""  # e.g. why NVML found no local GPUs (no driver), shown with an otherwise empty sample

    @property
    def ok(self) -> bool:
        return self.sample is not None

    @property
    def exit_code(self) -> int:
        if self.failure is None:
            return EXIT_OK
        return EXIT_CODES.get(self.failure, EXIT_OTHER)

    def summary(self) -> str:
        """One line for people: "ok: 8 GPUs in 12 ms" or "unreachable: connection refused"."""
        if self.sample is not None:
            count = len(self.sample.gpus)
            note = f" ({_one_line(self.note)})" if self.note else ""
            return f"ok: {count} GPU{'' if count == 1 else 's'} in {self.latency_s * 1000:.0f} ms{note}"
        return f"{self.failure}: {_one_line(self.reason)}"


def probe(
    spec: SourceSpec,
    *,
    timeout_s: float,
    node: str = "probe",
    site: str = "probe",
    make_source: SourceMaker | None = None,
) -> ProbeOutcome:
    """Blocking: runs its own event loop (call it from a worker thread in a GUI, never from async code)."""
    return asyncio.run(probe_async(spec, timeout_s=timeout_s, node=node, site=site, make_source=make_source))


async def probe_async(
    spec: SourceSpec,
    *,
    timeout_s: float,
    node: str = "probe",
    site: str = "probe",
    make_source: SourceMaker | None = None,
) -> ProbeOutcome:
    import aiohttp

    if make_source is None:
        from console.sources import make_source as registry_make_source

        make_source = registry_make_source
    started = time.monotonic()

    def outcome(failure: PollFailure, reason: str) -> ProbeOutcome:
        return ProbeOutcome(spec, time.monotonic() - started, failure=failure, reason=reason)

    node_model = Node(name=node, site=site, sources=(spec,), timeout_s=timeout_s)
    site_model = Site(name=site, provider="probe", timeout_s=timeout_s)
    async with aiohttp.ClientSession() as http:
        ctx = SourceContext(node=node_model, site=site_model, spec=spec, timeout_s=timeout_s, http=http)
        try:
            source = make_source(ctx)
        except SourceError as exc:
            return outcome(exc.failure, exc.reason)
        except Exception as exc:  # an unknown kind, a source module missing or failing to import, a bad spec
            return outcome(PollFailure.INTERNAL, f"cannot create the {spec.kind} source: {_describe(exc)}")
        try:
            sample = await asyncio.wait_for(source.poll(), timeout_s)
        except SourceError as exc:
            return outcome(exc.failure, exc.reason)
        except TimeoutError:
            return outcome(PollFailure.TIMEOUT, f"no answer within {timeout_s:g} s")
        except Exception as exc:  # a source bug: report it like the poller does, never crash the caller
            log.exception("probe of %s %s raised", spec.kind, spec.target())
            return outcome(PollFailure.INTERNAL, _describe(exc))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(source.aclose(), 2.0)
        note = str(getattr(source, "unavailable_reason", "") or "") if not sample.gpus else ""
        return ProbeOutcome(spec, time.monotonic() - started, sample=sample, note=note)


@dataclass(frozen=True, slots=True)
class SiteProbeOutcome:
    """One read of a whole site through Prometheus: every node's sample, or why there are none."""

    spec: SourceSpec
    latency_s: float
    samples: tuple[NodeSample, ...] = ()
    failure: PollFailure | None = None
    reason: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.failure is None else EXIT_CODES.get(self.failure, EXIT_OTHER)

    def summary(self) -> str:
        if self.failure is not None:
            return f"{self.failure}: {_one_line(self.reason)}"
        gpus = sum(len(sample.gpus) for sample in self.samples)
        return f"ok: {len(self.samples)} nodes, {gpus} GPUs in {self.latency_s * 1000:.0f} ms"


def probe_site(spec: SourceSpec, *, timeout_s: float) -> SiteProbeOutcome:
    """Blocking, like ``probe``: one whole-site read of a ``prometheus`` source, its session closed after."""
    return asyncio.run(_probe_site(spec, timeout_s))


async def _probe_site(spec: SourceSpec, timeout_s: float) -> SiteProbeOutcome:
    import aiohttp

    from console.sources.prometheus import shared_reader

    started = time.monotonic()

    def failed(failure: PollFailure, reason: str) -> SiteProbeOutcome:
        return SiteProbeOutcome(spec, time.monotonic() - started, failure=failure, reason=reason)

    async with aiohttp.ClientSession() as http:
        try:
            node = Node(name="probe", site="probe", sources=(spec,), timeout_s=timeout_s)
            site = Site(name="probe", provider="probe", timeout_s=timeout_s)
            reader = shared_reader(SourceContext(node=node, site=site, spec=spec, timeout_s=timeout_s), http)
            samples = await asyncio.wait_for(reader.read_site(), timeout_s)
        except SourceError as exc:
            return failed(exc.failure, exc.reason)
        except TimeoutError:
            return failed(PollFailure.TIMEOUT, f"no answer within {timeout_s:g} s")
        except ValueError as exc:  # a URL the reader cannot use
            return failed(PollFailure.INTERNAL, str(exc))
    ordered = tuple(samples[name] for name in sorted(samples))
    return SiteProbeOutcome(spec, time.monotonic() - started, samples=ordered)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- the readable table ------


@dataclass(frozen=True, slots=True)
class _Column:
    title: str
    field: str
    unit: str = ""
    digits: int = 0


_GPU_COLUMNS: Sequence[_Column] = (
    _Column("UTIL", "utilization_pct", "%"),
    _Column("MEM USED", "memory_used_mib", "MiB"),
    _Column("MEM TOTAL", "memory_total_mib", "MiB"),
    _Column("POWER", "power_w", "W", 1),
    _Column("LIMIT", "power_limit_w", "W"),
    _Column("TEMP", "temperature_c", "degC"),
    _Column("HBM TEMP", "memory_temperature_c", "degC"),
    _Column("SM CLOCK", "sm_clock_mhz", "MHz"),
    _Column("PSTATE", "pstate"),
    _Column("ECC DBE", "ecc_dbe_volatile"),
    _Column("XID", "xid_last"),
)

_CHASSIS_LINES: Sequence[_Column] = (
    _Column("inlet", "inlet_c", "degC", 1),
    _Column("exhaust", "exhaust_c", "degC", 1),
    _Column("coolant supply", "coolant_supply_c", "degC", 1),
    _Column("coolant return", "coolant_return_c", "degC", 1),
    _Column("coolant flow", "coolant_flow_lpm", "L/min", 1),
    _Column("leak detected", "leak_detected"),
    _Column("fans", "fans_rpm", "RPM"),
    _Column("node power", "power_w", "W", 1),
    _Column("health", "health"),
    _Column("pump health", "pump_health"),
    _Column("PSU health", "psu_health"),
)

NOT_REPORTED = "n/a"
NOT_SUPPORTED = "not supported"


def format_sample_table(sample: NodeSample) -> str:
    """A table for a terminal: one row per GPU with units, then the chassis, then events.

    ``None`` prints as "n/a", a field the device flags as unsupported as "not supported". Text that came from
    the node is stripped of control characters so a hostile payload cannot drive the terminal.
    """
    stamp = datetime.fromtimestamp(sample.time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"node {_clean(sample.node)}  site {_clean(sample.site)}  source {_clean(sample.source)}  at {stamp}",
        "",
    ]
    if sample.gpus:
        header = ["GPU", "NAME", "UUID", *(column.title for column in _GPU_COLUMNS), "THROTTLE"]
        rows = [_gpu_row(gpu) for gpu in sample.gpus]
        lines.extend(_align([header, *rows]))
    else:
        lines.append("no GPUs reported")
    activity = [(gpu.index, line) for gpu in sample.gpus for line in activity_lines(gpu)]
    if activity:
        lines.extend(["", "activity:"])
        lines.extend(f"  GPU {index}: {_clean(line)}" for index, line in activity)
    if sample.chassis == EMPTY_CHASSIS:
        lines.extend(["", "chassis: nothing reported"])
    else:
        lines.extend(["", "chassis:"])
        lines.extend(_chassis_lines(sample.chassis))
    if sample.events:
        lines.extend(["", "events:"])
        for event in sample.events:
            where = f" GPU {event.gpu_index}" if event.gpu_index is not None else ""
            code = f" {event.code}" if event.code is not None else ""
            lines.append(f"  {event.kind}{code}{where}: {_clean(event.message)}".rstrip(": "))
    return "\n".join(lines) + "\n"


def _gpu_row(gpu: GpuSample) -> list[str]:
    cells = [str(gpu.index), _clean(gpu.name) if gpu.name else NOT_REPORTED, _clean(gpu.uuid)]
    for column in _GPU_COLUMNS:
        if column.field in gpu.unsupported:
            cells.append(NOT_SUPPORTED)
        else:
            cells.append(_format_value(getattr(gpu, column.field), column))
    if "throttle_reasons" in gpu.unsupported:
        cells.append(NOT_SUPPORTED)
    else:
        cells.append(",".join(gpu.throttle_reasons) or "none")
    if gpu.lost:
        cells[1] = f"{cells[1]} (LOST)"
    return cells


def _chassis_lines(chassis: ChassisSample) -> list[str]:
    width = max(len(column.title) for column in _CHASSIS_LINES)
    return [
        f"  {column.title.ljust(width)}  {_format_value(getattr(chassis, column.field), column)}"
        for column in _CHASSIS_LINES
    ]


def _format_value(value: object, column: _Column) -> str:
    if value is None:
        return NOT_REPORTED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column.field == "pstate" and isinstance(value, int):
        return f"P{value}"
    if isinstance(value, tuple):
        return ", ".join(_format_value(item, column) for item in value) or "none"
    if isinstance(value, int | float):
        text = f"{value:.{column.digits}f}"
        return f"{text} {column.unit}" if column.unit else text
    return _clean(str(value))


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _clean(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


__all__ = ["EXIT_CODES", "ProbeOutcome", "format_sample_table", "probe", "probe_async"]
