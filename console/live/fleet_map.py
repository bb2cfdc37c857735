"""What the fleet map draws, without Qt: the fleet read into numpy arrays (one entry per tile slot) and the
arithmetic of the tile layout (where every slot goes, hit testing, the pixel -> slot index).

The map paints 16,000 GPUs from one image (widgets/live/fleet_map.py); everything that is numbers rather than
pixels lives here, so it is testable and reusable without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from console.incidents.model import Severity
from console.live.fleet_state import FleetState, GpuState, NodeState, NodeStatus

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


# --- metrics and their scales -----------------------------------------------------------------------------------


class MapMetric(StrEnum):
    TEMPERATURE = "temperature"
    THERMAL_MARGIN = "thermal_margin"
    POWER = "power"
    UTILIZATION = "utilization"
    SEVERITY = "severity"


@dataclass(frozen=True, slots=True)
class MetricScale:
    label: str
    unit: str
    low: float
    high: float
    stops: tuple[str, ...]  # colours from ``low`` to ``high``
    low_is_bad: bool = False  # thermal margin: little margin is the hot end


HEAT = ("#2c7bb6", "#00a6ca", "#90eb9d", "#f9d057", "#f29e2e", "#d7191c")
VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")

# Fixed ranges so a colour means the same thing every second; power's top follows the fleet's largest limit.
METRIC_SCALES: dict[MapMetric, MetricScale] = {
    MapMetric.TEMPERATURE: MetricScale("Temperature", "°C", 25.0, 90.0, HEAT),
    MapMetric.THERMAL_MARGIN: MetricScale("Thermal margin", "°C", 0.0, 40.0, tuple(reversed(HEAT)), True),
    MapMetric.POWER: MetricScale("Power", "W", 0.0, 700.0, HEAT),
    MapMetric.UTILIZATION: MetricScale("Utilization", "%", 0.0, 100.0, VIRIDIS),
    MapMetric.SEVERITY: MetricScale("Incident severity", "", 0.0, 4.0, ()),
}
DEFAULT_POWER_TOP_W = 700.0

STATUS_ORDER: tuple[NodeStatus, ...] = (
    NodeStatus.OK,
    NodeStatus.WARNING,
    NodeStatus.CRITICAL,
    NodeStatus.STALE,
    NodeStatus.UNREACHABLE,
)
_STATUS_CODE = {status: code for code, status in enumerate(STATUS_ORDER)}
# Nodes whose last values are no longer trusted: their tiles are greyed and hatched.
OFFLINE_CODES = (_STATUS_CODE[NodeStatus.STALE], _STATUS_CODE[NodeStatus.UNREACHABLE])
_STATUS_CODE = {status: code for code, status in enumerate(STATUS_ORDER)}
# Nodes whose last values are no longer trusted: their tiles are greyed and hatched.
OFFLINE_CODES = (_STATUS_CODE[NodeStatus.STALE], _STATUS_CODE[NodeStatus.UNREACHABLE])


# --- reading the fleet ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetArrays:
    """One refresh's read of the FleetState, one entry per tile slot (node-major, GPUs sorted by index)."""

    nodes: tuple[str, ...]  # grouped by site, in inventory order within a site
    sites: tuple[tuple[str, str, int], ...]  # (name, provider, node count) in fleet order
    slots_per_node: int
    uuids: tuple[str | None, ...]  # per slot; None = an empty slot
    has_gpu: npt.NDArray[np.bool_]  # per slot
    values: dict[MapMetric, npt.NDArray[np.float64]]  # per slot; NaN = no data
    severity: npt.NDArray[np.int8]  # per slot: 0 none, else Severity value (a lost GPU counts as critical)
    node_status: npt.NDArray[np.int8]  # per node: index into STATUS_ORDER
    power_top_w: float

    @property
    def gpu_count(self) -> int:
        return int(self.has_gpu.sum())


_BY_INDEX = attrgetter("index")


def read_fleet(state: FleetState, statuses: Mapping[str, NodeStatus] | None = None) -> FleetArrays:
    """Everything the map draws, read in one pass; this runs every second, so one comprehension per field.

    ``statuses`` are the nodes' statuses when the caller has just computed them (the main window's fleet panel).
    """
    ordered: list[NodeState] = []
    sites = []
    for site in state.fleet.sites:
        members = [n for n in state.nodes.values() if n.site == site.name]
        ordered += members
        sites.append((site.name, site.provider, len(members)))
    per_node = max((len(n.gpus) for n in ordered), default=0) or 1
    slots: list[int] = []
    gpus: list[GpuState] = []
    for position, node in enumerate(ordered):
        if node.gpus:
            listed = sorted(node.gpus.values(), key=_BY_INDEX)
            base = position * per_node
            slots.extend(range(base, base + len(listed)))
            gpus.extend(listed)
    total = len(ordered) * per_node
    samples = [g.sample for g in gpus]
    where = np.array(slots, dtype=np.intp)  # converted once, used by every field

    def spread(column: list[float | None]) -> npt.NDArray[np.float64]:
        out = np.full(total, np.nan)
        out[where] = np.array(column, dtype=float)  # None becomes NaN: "no data", never 0
        return out

    values = {
        MapMetric.TEMPERATURE: spread([s.temperature_c for s in samples]),
        MapMetric.THERMAL_MARGIN: spread([s.thermal_margin_c for s in samples]),
        MapMetric.POWER: spread([s.power_w for s in samples]),
        MapMetric.UTILIZATION: spread([s.utilization_pct for s in samples]),
    }
    worst = np.array([g.worst_severity for g in gpus], dtype=float)
    worst[np.array([s.lost for s in samples], dtype=bool)] = Severity.CRITICAL
    severity = np.zeros(total, dtype=np.int8)
    severity[where] = np.nan_to_num(worst)
    uuids: list[str | None] = [None] * total
    for slot, gpu in zip(slots, gpus, strict=True):
        uuids[slot] = gpu.uuid
    has_gpu = np.zeros(total, dtype=bool)
    has_gpu[where] = True
    limits = np.array([s.power_limit_w for s in samples], dtype=float)
    top = float(np.nanmax(limits)) if limits.size and not np.isnan(limits).all() else DEFAULT_POWER_TOP_W
    status_of = state.node_status if statuses is None else statuses.__getitem__
    return FleetArrays(
        nodes=tuple(n.name for n in ordered),
        sites=tuple(sites),
        slots_per_node=per_node,
        uuids=tuple(uuids),
        has_gpu=has_gpu,
        values=values,
        severity=severity,
        node_status=np.array([_STATUS_CODE[status_of(n.name)] for n in ordered], dtype=np.int8),
        power_top_w=math.ceil(top / 50.0) * 50.0,
    )


def scale_for(metric: MapMetric, arrays: FleetArrays | None) -> MetricScale:
    scale = METRIC_SCALES[metric]
    if metric is MapMetric.POWER and arrays is not None:
        return MetricScale(scale.label, scale.unit, scale.low, arrays.power_top_w, scale.stops)
    return scale


# --- layout -----------------------------------------------------------------------------------------------------

MARGIN = 8
HEADER_H = 20  # a site's label band
TILE_GAP = 1
NODE_GAP = 3  # room for a 1 px status outline around a node block and space between blocks
MAX_TILE = 16
HATCH_PERIOD = 4  # px between the diagonal lines over an offline node
MIN_TILE = 2


@dataclass(frozen=True, slots=True)
class SiteBand:
    name: str
    provider: str
    first_node: int
    node_count: int
    header_top: int
    grid_top: int
    rows: int


@dataclass(frozen=True, slots=True)
class MapLayout:
    """Where every slot goes for one fleet shape and widget size; hit testing is arithmetic on it."""

    width: int
    height: int
    tile: int
    block_cols: int
    block_rows: int
    columns: int  # node blocks per row
    bands: tuple[SiteBand, ...]
    content_height: int

    @property
    def pitch(self) -> int:
        return self.tile + TILE_GAP

    @property
    def block_w(self) -> int:
        return self.block_cols * self.pitch - TILE_GAP

    @property
    def block_h(self) -> int:
        return self.block_rows * self.pitch - TILE_GAP

    @property
    def overflows(self) -> bool:
        return self.content_height > self.height

    def node_origin(self, band: SiteBand, node: int) -> tuple[int, int]:
        row, col = divmod(node - band.first_node, self.columns)
        return MARGIN + col * (self.block_w + NODE_GAP), band.grid_top + row * (self.block_h + NODE_GAP)

    def node_box(self, node: int) -> Box:
        band = next(b for b in self.bands if b.first_node <= node < b.first_node + b.node_count)
        x, y = self.node_origin(band, node)
        return x, y, self.block_w, self.block_h

    def slot_box(self, node: int, slot: int) -> Box:
        x, y, _w, _h = self.node_box(node)
        row, col = divmod(slot, self.block_cols)
        return x + col * self.pitch, y + row * self.pitch, self.tile, self.tile

    def hit(self, x: int, y: int) -> tuple[int, int] | None:
        """(node position, slot) under a point, or None in margins, gaps and headers."""
        if x < MARGIN or y >= self.height:
            return None
        for band in self.bands:
            dy = y - band.grid_top
            if not 0 <= dy < band.rows * (self.block_h + NODE_GAP):
                continue
            row, in_y = divmod(dy, self.block_h + NODE_GAP)
            col, in_x = divmod(x - MARGIN, self.block_w + NODE_GAP)
            node = row * self.columns + col
            if col >= self.columns or node >= band.node_count or in_x >= self.block_w or in_y >= self.block_h:
                return None
            # a tile owns the 1 px gap to its right and below, so small tiles stay easy to hit
            return band.first_node + node, (in_y // self.pitch) * self.block_cols + in_x // self.pitch
        return None

    def node_origins(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Top-left corner of every node block, in node order."""
        xs, ys = [], []
        for band in self.bands:
            nodes = np.arange(band.node_count)
            xs.append(MARGIN + (nodes % self.columns) * (self.block_w + NODE_GAP))
            ys.append(band.grid_top + (nodes // self.columns) * (self.block_h + NODE_GAP))
        if not xs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(xs).astype(np.int64), np.concatenate(ys).astype(np.int64)

    def offline_marks(self) -> npt.NDArray[np.int64]:
        """Per node, the flat pixel offsets of its outline ring and diagonal hatch (-1 where cut off).

        Drawn by numpy for the nodes that are offline: QPainter hatching 2,000 blocks one by one took 170 ms."""
        local_x, local_y = [], []
        for dy in range(-1, self.block_h + 1):
            for dx in range(-1, self.block_w + 1):
                ring = dx in (-1, self.block_w) or dy in (-1, self.block_h)
                if ring or (dx + dy) % HATCH_PERIOD == 0:  # "/" lines, as in the legend
                    local_x.append(dx)
                    local_y.append(dy)
        origin_x, origin_y = self.node_origins()
        xs = origin_x[:, None] + np.array(local_x)[None, :]
        ys = origin_y[:, None] + np.array(local_y)[None, :]
        visible = np.minimum(self.content_height, self.height)
        return np.where((ys >= 0) & (ys < visible) & (xs >= 0) & (xs < self.width), ys * self.width + xs, -1)

    def pixel_slots(self, total_slots: int) -> npt.NDArray[np.int32]:
        """Index of the slot that owns each pixel (``total_slots`` for background), for the visible height."""
        height = min(self.content_height, self.height)
        index = np.full((max(height, 0), self.width), total_slots, dtype=np.int32)
        if height <= 0 or total_slots == 0:
            return index
        slots_per_node = self.block_cols * self.block_rows
        local = np.arange(slots_per_node)
        origin_x, origin_y = self.node_origins()
        xs = (origin_x[:, None] + ((local % self.block_cols) * self.pitch)[None, :]).ravel()
        ys = (origin_y[:, None] + ((local // self.block_cols) * self.pitch)[None, :]).ravel()
        ids = np.arange(total_slots, dtype=np.int32)
        shown = ys + self.tile <= height
        xs, ys, ids = xs[shown], ys[shown], ids[shown]
        for dy in range(self.tile):
            for dx in range(self.tile):
                index[ys + dy, xs + dx] = ids
        return index


def block_shape(slots_per_node: int) -> tuple[int, int]:
    """A node's tiles as a compact block: 8 GPUs -> 4 x 2, 16 -> 4 x 4, 4 -> 2 x 2."""
    cols = 4 if slots_per_node > 4 else max(1, math.ceil(math.sqrt(slots_per_node)))
    return cols, math.ceil(slots_per_node / cols)


def compute_layout(arrays: FleetArrays, width: int, height: int) -> MapLayout:
    """The biggest tile size whose whole fleet fits; at the smallest size the map is cut and says so."""
    block_cols, block_rows = block_shape(arrays.slots_per_node)
    layout = None
    for tile in range(MAX_TILE, MIN_TILE - 1, -1):
        pitch = tile + TILE_GAP
        block_w = block_cols * pitch - TILE_GAP
        block_h = block_rows * pitch - TILE_GAP
        columns = max(1, (width - 2 * MARGIN + NODE_GAP) // (block_w + NODE_GAP))
        bands = []
        y = 0
        first = 0
        for name, provider, count in arrays.sites:
            rows = math.ceil(count / columns)
            bands.append(SiteBand(name, provider, first, count, y, y + HEADER_H, rows))
            y += HEADER_H + rows * (block_h + NODE_GAP) + 2
            first += count
        layout = MapLayout(width, height, tile, block_cols, block_rows, columns, tuple(bands), y)
        if y <= height:
            return layout
    assert layout is not None
    return layout
