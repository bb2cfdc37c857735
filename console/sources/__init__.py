"""Telemetry sources, registered explicitly by kind (no folder scanning: PyInstaller cannot follow that).

Each entry maps a ``SourceKind`` to the dotted path of a factory ``make_source(ctx: SourceContext) -> Source``.
Modules are imported on first use so that, for example, the agent never loads aiohttp-only or SSH code paths
it does not need, and a missing optional library only breaks the kinds that use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from console.config.fleet import SourceKind
from console.sources.base import Source, SourceContext

SourceFactory = Callable[[SourceContext], Source]

SOURCE_FACTORIES: Mapping[SourceKind, str] = {
    SourceKind.DEMO: "console.demo.source:make_source",
    SourceKind.NVML: "console.sources.nvml.source:make_source",
    SourceKind.DCGM: "console.sources.dcgm.source:make_source",
    SourceKind.AGENT: "console.sources.agent:make_source",
    SourceKind.SSH: "console.sources.ssh.source:make_source",
    SourceKind.REDFISH: "console.sources.redfish.source:make_source",
    SourceKind.PROMETHEUS: "console.sources.prometheus:make_source",
}


def factory_for(kind: SourceKind) -> SourceFactory:
    module_name, _, attr = SOURCE_FACTORIES[kind].partition(":")
    factory: SourceFactory = getattr(importlib.import_module(module_name), attr)
    return factory


def make_source(ctx: SourceContext) -> Source:
    return factory_for(ctx.spec.kind)(ctx)
