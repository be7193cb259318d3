"""Split glacier complexes into glaciers along ice divides (``glacimap split``).

Two methods:

``kienholz``
    The flowshed method of Kienholz, Hock & Arendt (2013), as described in docs/divides.md:
    smooth the DEM, fill its sinks, lower a gutter ring just outside each complex, route flow,
    take the outlets on the gutter as pour points, label one flowshed per pour point, merge the
    flowsheds met by a disk around each pour point and merge slivers.
``reference``
    Keep the divides of a reference inventory: each ice pixel inside a reference glacier stays
    with it, every other ice pixel goes to the reference glacier it drains to (D8 on the DEM)
    or, failing that, to the nearest one within the ice, so glacier ids stay stable over time.

Compute functions (:func:`split_complexes`, :func:`split_by_reference`, :func:`divide_lines`,
:func:`match_glaciers`) take arrays, a :class:`~glacimap.rasters.Grid` and GeoDataFrames;
:func:`run_split` is the I/O entry point behind the CLI. All raster work happens on the DEM's
metric grid; the glaciers of a complex are an exact partition of its polygon (no gaps, no
overlaps, their union is the complex).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
import rasterio.features
import rasterio.warp
import rasterio.windows
import richdem
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from scipy import ndimage

from glacimap._quiet import quiet_stderr
from glacimap.errors import (
    ConfigError,
    CRSMismatchError,
    InputNotFoundError,
    InvalidInputError,
    OutputExistsError,
)
from glacimap.inventory import ID_COLUMNS, detect_id_column, load_inventory
from glacimap.rasters import Grid, fill_voids, utm_crs
from glacimap.settings import SplitSettings
from glacimap.vectors import read_layer, write_layers

log = logging.getLogger(__name__)

#: richdem's D8 neighbour numbering (index 1..8 of a flow-proportion cell) as (row, col) steps.
RICHDEM_D8: tuple[tuple[int, int], ...] = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
#: Size of the lon/lat tiles that group complexes into regions read from the DEM at once, degrees.
REGION_TILE_DEG = 0.25
#: Share of a complex's pixels that may be DEM voids (filled from the nearest valid cell).
MAX_VOID_SHARE = 0.5
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class KienholzParams:
    """Parameters of the Kienholz et al. (2013) split, in units that hold at any resolution.

    The merge disk around a pour point of upstream area ``A`` (km2) has radius
    ``r = min(merge_a_m * A ** merge_b, merge_c_m)`` metres. The paper's values, a = 14.3,
    b = 0.5, c = 3500 m with ``A`` counted in 40 m cells, become ``merge_a_m = 14.3 *
    (1e6 / 40**2) ** 0.5 = 357.5`` (see :meth:`from_cell_units`).
    """

    #: DEM smoothing before sink filling: a Gaussian (``smoothing_m`` = its standard deviation;
    #: 60 m is about the paper's 5 x 5 median at 40 m cells), a median filter (``smoothing_m`` =
    #: window width, rounded to an odd number of cells) or none.
    smoothing: Literal["gaussian", "median", "none"] = "gaussian"
    smoothing_m: float = 60.0
    #: Cells of DEM kept around each complex (the paper: 160 m at 40 m cells).
    buffer_px: int = 4
    #: Width (cells) and depth (m) of the gutter ring lowered just outside the outline.
    gutter_width_px: int = 1
    gutter_depth_m: float = 100.0
    #: Flow routing: ``d8`` (steepest descent, distance-weighted) or ``dinf`` (Tarboton; basins
    #: then follow each cell's dominant D-infinity direction).
    flow_method: Literal["d8", "dinf"] = "d8"
    merge_a_m: float = 357.5
    merge_b: float = 0.5
    merge_c_m: float = 3500.0
    #: Pour points with less upstream area never centre a merge disk (their flowsheds can still
    #: be merged into others and are then handled as slivers).
    min_centre_area_km2: float = 0.0
    #: ``largest-first``: each flowshed joins at most one larger pour point's group (the ports'
    #: safeguard); ``union``: every flowshed a disk touches merges, transitively (the rule read
    #: literally; over-merges at saddles, kept for comparison).
    merge_rule: Literal["largest-first", "union"] = "largest-first"
    #: Slivers: below ``sliver_area_km2``, or below ``elongated_area_km2`` with a compactness
    #: 2 sqrt(pi A) / P under ``elongated_compactness``.
    sliver_area_km2: float = 0.1
    elongated_area_km2: float = 0.2
    elongated_compactness: float = 0.5
    #: Pieces of fewer DEM cells are slivers too, whatever their area: 62.5 cells is the paper's
    #: 0.1 km2 at its 40 m cells, the smallest flowshed it trusted the DEM to resolve. On DEMs
    #: of 40 m or finer the area rule decides; on coarser ones (SRTM's 76-90 m: 0.36-0.51 km2)
    #: pieces that are only a few dozen noisy cells no longer stand as glaciers. 0 disables.
    sliver_min_cells: float = 62.5
    #: OGGM's extra filters (not in the paper), off by default: pieces with an altitude range
    #: under ``min_relief_m`` or under ``min_relief_share`` of the complex's range, or smaller
    #: than ``min_area_share`` of the largest piece, are merged like slivers. OGGM applies them
    #: within one glacier; across a complex of many glaciers they merge real small glaciers
    #: (ridge-top and cirque glaciers of little relief) into their large neighbours.
    #: ``min_relief_m=100, min_relief_share=0.1`` are OGGM's values and glacimap's previous
    #: defaults (see :meth:`oggm_filters`).
    min_relief_m: float = 0.0
    min_relief_share: float = 0.0
    min_area_share: float = 0.0
    #: Divides are straightened by coverage simplification with this tolerance (cells); the
    #: complex outline itself is never changed. 0 keeps the pixel staircase.
    divide_simplify_px: float = 1.0

    def __post_init__(self) -> None:
        positive = ("smoothing_m", "gutter_depth_m", "merge_a_m", "merge_b", "merge_c_m")
        non_negative = (
            "min_centre_area_km2",
            "sliver_area_km2",
            "elongated_area_km2",
            "sliver_min_cells",
            "divide_simplify_px",
            "min_relief_m",
            "min_relief_share",
            "min_area_share",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"KienholzParams.{name} must be > 0, got {getattr(self, name)!r}")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ConfigError(f"KienholzParams.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.buffer_px < self.gutter_width_px + 1:
            raise ConfigError(
                f"KienholzParams.buffer_px ({self.buffer_px}) must exceed gutter_width_px ({self.gutter_width_px})"
            )
        if self.gutter_width_px < 1:
            raise ConfigError(f"KienholzParams.gutter_width_px must be >= 1, got {self.gutter_width_px}")
        if not 0 < self.elongated_compactness <= 1:
            raise ConfigError(
                f"KienholzParams.elongated_compactness must be in (0, 1], got {self.elongated_compactness}"
            )
        if self.smoothing not in ("gaussian", "median", "none"):
            raise ConfigError(f"KienholzParams.smoothing must be gaussian, median or none, got {self.smoothing!r}")
        if self.merge_rule not in ("largest-first", "union"):
            raise ConfigError(f"KienholzParams.merge_rule must be largest-first or union, got {self.merge_rule!r}")
        if self.flow_method not in ("d8", "dinf"):
            raise ConfigError(f"KienholzParams.flow_method must be d8 or dinf, got {self.flow_method!r}")

    @classmethod
    def paper(cls, **kwargs: object) -> KienholzParams:
        """The paper's rules alone: no minimum cell count for slivers, no relief filters."""
        return cls(**{"sliver_min_cells": 0.0, "min_relief_m": 0.0, "min_relief_share": 0.0, **kwargs})  # type: ignore[arg-type]

    @classmethod
    def oggm_filters(cls, **kwargs: object) -> KienholzParams:
        """The paper plus OGGM's relief filters (100 m, 10 % of the complex's range): glacimap's old defaults."""
        return cls.paper(**{"min_relief_m": 100.0, "min_relief_share": 0.1, **kwargs})

    @classmethod
    def from_cell_units(cls, a: float, b: float, c: float, cell_size: float, **kwargs: object) -> KienholzParams:
        """Parameters from a merge rule ``r = min(a * A ** b, c)`` with ``A`` in cells of ``cell_size`` m."""
        return cls(merge_a_m=a * (1.0e6 / cell_size**2) ** b, merge_b=b, merge_c_m=c, **kwargs)  # type: ignore[arg-type]

    def merge_radius_m(self, area_km2: np.ndarray | float) -> np.ndarray:
        """Radius (m) of the merge disk of pour points with upstream area ``area_km2``."""
        return np.minimum(self.merge_a_m * np.asarray(area_km2, dtype=np.float64) ** self.merge_b, self.merge_c_m)


@dataclass(frozen=True)
class PourPoint:
    """A gutter cell where flow leaves a complex, in the complex's window."""

    row: int
    col: int
    area_km2: float  # upstream area (flow accumulation)
    radius_m: float  # merge-disk radius


@dataclass(frozen=True)
class ComplexLabels:
    """Raster result of splitting one complex: glacier labels 1..n in a window of the grid."""

    window: tuple[int, int, int, int]  # row0, row1, col0, col1 in the region grid
    transform: Affine
    labels: np.ndarray  # int32, 0 outside the complex
    flowsheds: np.ndarray  # int32, flowshed (pour point index + 1) before merging
    pour_points: tuple[PourPoint, ...]


@dataclass(frozen=True)
class SplitResult:
    """What :func:`run_split` wrote and how long it took."""

    out: Path
    method: str
    glaciers: gpd.GeoDataFrame  # EPSG:4326
    divides: gpd.GeoDataFrame  # EPSG:4326
    n_complexes: int
    n_glaciers: int
    n_split: int  # complexes split into more than one glacier
    n_regions: int
    seconds: float


# ------------------------------------------------------------------------------------------
# Flow routing
# ------------------------------------------------------------------------------------------


def _rd(array: np.ndarray) -> richdem.rdarray:
    out = richdem.rdarray(np.ascontiguousarray(array, dtype=np.float64), no_data=-1.0e30)
    out.geotransform = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    return out


def fill_depressions(dem: np.ndarray) -> np.ndarray:
    """Sink-filled ``dem`` whose flats all drain, float64.

    richdem's priority flood fills the depressions; its flat resolution (Barnes et al. 2014)
    then gives the flats a gradient away from higher ground and towards lower ground, which
    routes flow across a filled basin the way the terrain around it suggests (a plain epsilon
    fill makes parallel straight flow lines, and straight divides, across every flat).
    """
    with quiet_stderr():
        filled = richdem.FillDepressions(_rd(dem), epsilon=False, in_place=False)
        richdem.ResolveFlats(filled, in_place=True)
    return np.asarray(filled, dtype=np.float64)


def d8_receivers(dem: np.ndarray, resolution: float) -> np.ndarray:
    """Flat index of each cell's steepest-descent neighbour (drop / distance), -1 if none is lower.

    richdem's own D8 compares raw drops, which favours diagonal neighbours; here diagonal
    drops are divided by sqrt(2) as in O'Callaghan & Mark (1984).
    """
    rows, cols = dem.shape
    padded = np.pad(dem.astype(np.float64, copy=False), 1, constant_values=np.inf)
    best = np.zeros(dem.shape, dtype=np.float64)
    direction = np.full(dem.shape, -1, dtype=np.int8)
    for k, (dr, dc) in enumerate(RICHDEM_D8):
        neighbour = padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
        drop = (dem - neighbour) / (resolution * math.hypot(dr, dc))
        steeper = drop > best
        best[steeper] = drop[steeper]
        direction[steeper] = k
    return receivers_from_direction(direction)


def receivers_from_direction(direction: np.ndarray) -> np.ndarray:
    """Flat receiver indices from direction codes 0..7 (:data:`RICHDEM_D8`), -1 for none."""
    rows, cols = direction.shape
    offsets = np.array([dr * cols + dc for dr, dc in RICHDEM_D8], dtype=np.int64)
    flat_dir = direction.ravel()
    receivers = np.full(rows * cols, -1, dtype=np.int64)
    has = flat_dir >= 0
    receivers[has] = np.flatnonzero(has) + offsets[flat_dir[has]]
    return receivers


def accumulate_d8(receivers: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flow accumulation (cells, each counting itself) along D8 receivers, with richdem.

    richdem treats the outermost cells of an array as outlets that pass nothing on, so the
    proportions are padded by one no-flow cell: every real cell then accumulates.
    """
    rows, cols = shape
    props = np.full((rows + 2, cols + 2, 9), -1.0, dtype=np.float32)
    has = receivers >= 0
    cells = np.flatnonzero(has)
    step = receivers[has] - cells
    codes = np.zeros(step.shape, dtype=np.int64)
    for k, (dr, dc) in enumerate(RICHDEM_D8):
        codes[step == dr * cols + dc] = k + 1
    r, c = np.divmod(cells, cols)
    props[r + 1, c + 1, 0] = 0.0
    props[r + 1, c + 1, codes] = 1.0
    arr = richdem.rd3array(props, no_data=-2)
    arr.geotransform = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    with quiet_stderr():
        acc = richdem.FlowAccumFromProps(arr)
    return np.asarray(acc, dtype=np.float64)[1:-1, 1:-1]


def route_flow(dem: np.ndarray, resolution: float, method: str = "d8") -> tuple[np.ndarray, np.ndarray]:
    """D8 receivers (flat indices, -1 at outlets) and flow accumulation (cells) of ``dem``.

    Receivers and accumulation come from the same flow grid: with ``d8`` the accumulation is
    richdem's along our receivers; with ``dinf`` it is richdem's D-infinity accumulation and
    the receiver of a cell is its dominant D-infinity neighbour. Cells on the array's edge
    never drain outwards.
    """
    if method == "d8":
        receivers = d8_receivers(dem, resolution)
        return receivers, accumulate_d8(receivers, dem.shape)
    if method != "dinf":
        raise ConfigError(f"unknown flow method {method!r}; expected d8 or dinf")
    # A wall one cell wide keeps richdem's edge handling off the real cells.
    wall = float(np.max(dem)) + 1.0e4
    arr = _rd(np.pad(dem.astype(np.float64), 1, constant_values=wall))
    with quiet_stderr():
        props = richdem.FlowProportions(arr, method="Dinf")
        props.geotransform = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        acc = richdem.FlowAccumFromProps(props)
    p = np.asarray(props)[1:-1, 1:-1]
    flows = (p[..., 0] == 0) & (p[..., 1:].max(axis=-1) > 0)
    direction = np.where(flows, p[..., 1:].argmax(axis=-1), -1).astype(np.int8)
    return receivers_from_direction(direction), np.asarray(acc, dtype=np.float64)[1:-1, 1:-1]


def outlets_within(receivers: np.ndarray, active: np.ndarray) -> np.ndarray:
    """For each cell of ``active`` (bool, flat), the last active cell on its flow path; -1 elsewhere.

    Vectorised pointer jumping: every round doubles the path length followed, so a path of
    ``n`` cells costs ``log2(n)`` passes over the active cells.
    """
    cells = np.flatnonzero(active)
    pos = np.full(active.size, -1, dtype=np.int64)
    pos[cells] = np.arange(cells.size)
    rec = receivers[cells]
    nxt = np.where(rec >= 0, pos[np.maximum(rec, 0)], -1)
    jump = np.where(nxt >= 0, nxt, np.arange(cells.size))
    while True:
        further = jump[jump]
        if np.array_equal(further, jump):
            break
        jump = further
    out = np.full(active.size, -1, dtype=np.int64)
    out[cells] = cells[jump]
    return out


def outlets_naive(receivers: np.ndarray, active: np.ndarray, outlets: Sequence[int]) -> np.ndarray:
    """Reference for :func:`outlets_within`: flood upstream from each outlet in turn.

    Kept for the benchmark (and a test) only: its cost grows with outlets x path length.
    """
    out = np.full(active.size, -1, dtype=np.int64)
    rec = np.where(active & (receivers >= 0), receivers, -1)
    rec[rec >= 0] = np.where(active[rec[rec >= 0]], rec[rec >= 0], -1)
    for outlet in outlets:
        member = np.zeros(active.size, dtype=bool)
        member[outlet] = True
        while True:
            grow = active & ~member & (rec >= 0)
            grow[grow] = member[rec[grow]]
            if not grow.any():
                break
            member |= grow
        out[member] = outlet
    return out


# ------------------------------------------------------------------------------------------
# Raster steps of the Kienholz method
# ------------------------------------------------------------------------------------------


def smoothing_reach_px(resolution: float, params: KienholzParams) -> int:
    """Cells of DEM around a window that its smoothing reads."""
    if params.smoothing == "gaussian":
        return math.ceil(4.0 * params.smoothing_m / resolution)
    if params.smoothing == "median":
        return math.ceil(params.smoothing_m / resolution / 2) + 1
    return 0


def smoothed_window(
    dem: np.ndarray, window: tuple[int, int, int, int], resolution: float, params: KienholzParams
) -> np.ndarray:
    """``dem[r0:r1, c0:c1]`` smoothed as ``params`` says, reading enough DEM around it.

    Smoothing each complex's window instead of the whole region keeps the cost proportional
    to the glaciers, not to the region's bounding box.
    """
    r0, r1, c0, c1 = window
    m = smoothing_reach_px(resolution, params)
    big = _padded_window(dem, r0 - m, r1 + m, c0 - m, c1 + m)
    out = smooth_dem(big, resolution, params)
    return out[m : out.shape[0] - m, m : out.shape[1] - m]


def smooth_dem(dem: np.ndarray, resolution: float, params: KienholzParams) -> np.ndarray:
    """The DEM smoothed as ``params`` says (float64)."""
    dem = dem.astype(np.float64, copy=False)
    if params.smoothing == "gaussian":
        sigma = params.smoothing_m / resolution
        return ndimage.gaussian_filter(dem, sigma, mode="nearest") if sigma >= 0.3 else dem.copy()
    if params.smoothing == "median":
        size = round(params.smoothing_m / resolution)
        size += 1 - size % 2
        return ndimage.median_filter(dem, size=size, mode="nearest") if size > 1 else dem.copy()
    return dem.copy()


def _grow_labels(labels: np.ndarray, mask: np.ndarray, max_steps: int = 200) -> np.ndarray:
    """Give unlabelled cells of ``mask`` the label of the nearest labelled cell.

    Labels grow cell by cell inside ``mask`` (nearest along the ice); what that cannot reach
    within ``max_steps`` takes the label of the Euclidean-nearest labelled cell.
    """
    out = labels.copy()
    todo = mask & (out == 0)
    if not todo.any() or not (out > 0).any():
        return out
    # Each patch of unlabelled cells grows inside its own bounding box (plus one cell), so the
    # cost follows the patches, not the whole window.
    patches, _ = ndimage.label(todo, structure=_EIGHT)
    for sl in ndimage.find_objects(patches):
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        sub, sub_todo = out[box], todo[box]
        for _ in range(max_steps):
            grown = ndimage.grey_dilation(sub, footprint=_EIGHT, mode="constant", cval=0)
            new = sub_todo & (grown > 0)
            if not new.any():
                break
            sub[new] = grown[new]
            sub_todo &= ~new
            if not sub_todo.any():
                break
    if todo.any():
        _, (ir, ic) = ndimage.distance_transform_edt(out == 0, return_indices=True)
        out[todo] = out[ir[todo], ic[todo]]
    return out


def _keep_part_nearest(basins: np.ndarray, pour_rc: np.ndarray) -> np.ndarray:
    """Keep, for each flowshed, only its connected part nearest its pour point (rest -> 0)."""
    out = basins.copy()
    for k, sl in enumerate(ndimage.find_objects(basins), start=1):
        if sl is None:
            continue
        part = basins[sl] == k
        comp, n = ndimage.label(part, structure=_EIGHT)
        if n <= 1:
            continue
        rows, cols = np.nonzero(comp)
        pr, pc = pour_rc[k - 1]
        dist = (rows + sl[0].start - pr) ** 2 + (cols + sl[1].start - pc) ** 2
        nearest = np.full(n + 1, np.inf)
        np.minimum.at(nearest, comp[rows, cols], dist)
        keep = int(np.argmin(nearest[1:])) + 1
        drop = (comp > 0) & (comp != keep)
        out[sl][drop] = 0
    return out


def _disk_merge(
    flowsheds: np.ndarray,
    ice: np.ndarray,
    pours: Sequence[PourPoint],
    resolution: float,
    params: KienholzParams,
    gutter_px: int,
) -> np.ndarray:
    """Group id (index into ``pours``) for each flowshed after the merge-disk rule.

    Pour points are visited largest first. The disk of a pour point, intersected with the ice
    and cut to its part next to the pour point, claims every flowshed it meets that is not yet
    claimed and whose own pour point is smaller; if the pour point still heads its own group,
    that group joins the one larger group its disk overlaps most. Two groups that each hold a
    pour point larger than the current one are never joined, so a small pour point at a
    saddle cannot weld two glaciers together: the transitive over-merge of the literal rule
    (``merge_rule="union"``, every touched pair merged) cannot happen.
    """
    n = len(pours)
    group = np.arange(n)
    claimed = np.zeros(n, dtype=bool)
    order = np.argsort([-p.area_km2 for p in pours], kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rows, cols = flowsheds.shape
    for k in order:
        pour = pours[k]
        if pour.area_km2 < params.min_centre_area_km2:
            continue
        rad = pour.radius_m / resolution
        r0, r1 = max(int(pour.row - rad) - 1, 0), min(int(pour.row + rad) + 2, rows)
        c0, c1 = max(int(pour.col - rad) - 1, 0), min(int(pour.col + rad) + 2, cols)
        rr, cc = np.ogrid[r0:r1, c0:c1]
        disk = ((rr - pour.row) ** 2 + (cc - pour.col) ** 2 <= rad * rad) & ice[r0:r1, c0:c1]
        if not disk.any():
            continue
        comp, _ = ndimage.label(disk, structure=_EIGHT)
        near = gutter_px + 1
        nr0, nr1 = max(pour.row - near - r0, 0), pour.row + near + 1 - r0
        nc0, nc1 = max(pour.col - near - c0, 0), pour.col + near + 1 - c0
        chosen = np.unique(comp[nr0:nr1, nc0:nc1])
        chosen = chosen[chosen > 0]
        if chosen.size == 0:
            cr, cc2 = np.nonzero(comp)
            d = (cr + r0 - pour.row) ** 2 + (cc2 + c0 - pour.col) ** 2
            chosen = np.array([comp[cr[np.argmin(d)], cc2[np.argmin(d)]]])
        inside = flowsheds[r0:r1, c0:c1][np.isin(comp, chosen)]
        overlap = np.bincount(inside, minlength=n + 1)[1:]
        touched = np.flatnonzero(overlap)
        if params.merge_rule == "union":
            for t in touched:
                _union(group, int(k), int(t))
            continue
        root = _find(group, int(k))
        for t in touched:
            if rank[t] > rank[k] and not claimed[t]:
                group[t] = root
                claimed[t] = True
        if claimed[k]:
            continue
        # k heads its own group: join the larger neighbour its disk overlaps most, never two.
        bigger: dict[int, int] = {}
        for t in touched:
            if rank[t] < rank[k]:
                g = _find(group, int(t))
                if g != root:
                    bigger[g] = bigger.get(g, 0) + int(overlap[t])
        if bigger:
            into = max(bigger.items(), key=lambda item: (item[1], -item[0]))[0]
            group[root] = into
            claimed[k] = True
    return np.array([_find(group, i) for i in range(n)], dtype=np.int64)


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return i


def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


def _boundary_stats(
    labels: np.ndarray, resolution: float
) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], float]]:
    """Area (m2), perimeter (m) and shared border lengths (m) of labels 1..n.

    Lengths are Cauchy-Crofton estimates from label changes between neighbours in four
    directions (weights pi/8 times the line spacing): within a few per cent of the vector
    length at any orientation, unlike counting pixel edges (27 % too long on diagonals).
    """
    n = int(labels.max())
    area = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64) * resolution**2
    perimeter = np.zeros(n + 1)
    shared: dict[tuple[int, int], float] = {}
    diag = resolution / math.sqrt(2.0)
    steps = (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None)), resolution),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None)), resolution),
        ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None)), diag),
        ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1)), diag),
    )
    weight = math.pi / 8.0
    for first, second, spacing in steps:
        a, b = labels[first], labels[second]
        change = a != b
        la, lb = a[change], b[change]
        w = weight * spacing
        perimeter += (np.bincount(la, minlength=n + 1) + np.bincount(lb, minlength=n + 1)) * w
        both = (la > 0) & (lb > 0)
        lo, hi = np.minimum(la[both], lb[both]), np.maximum(la[both], lb[both])
        keys, counts = np.unique(lo.astype(np.int64) * (n + 1) + hi, return_counts=True)
        for key, count in zip(keys.tolist(), counts.tolist()):
            pair = divmod(key, n + 1)
            shared[pair] = shared.get(pair, 0.0) + count * w
    return area, perimeter, shared


def _merge_slivers(labels: np.ndarray, dem: np.ndarray, resolution: float, params: KienholzParams) -> np.ndarray:
    """Merge slivers into the neighbour with the longest shared border, smallest first.

    A sliver is small (in km2 or in DEM cells), or small and elongated, or (OGGM's filters,
    off by default) of little relief or tiny next to the largest piece; see
    :class:`KienholzParams`. Areas, perimeters, shared borders and elevation ranges are
    additive or monotone, so merges update the tables instead of re-measuring the raster.
    """
    area, perimeter, shared = _boundary_stats(labels, resolution)
    n = area.size - 1
    zmin = np.full(n + 1, np.inf)
    zmax = np.full(n + 1, -np.inf)
    on = labels > 0
    np.minimum.at(zmin, labels[on], dem[on])
    np.maximum.at(zmax, labels[on], dem[on])
    ice = labels > 0
    relief_complex = float(dem[ice].max() - dem[ice].min()) if ice.any() else 0.0
    min_relief = max(params.min_relief_m, params.min_relief_share * relief_complex)
    neighbours: dict[int, dict[int, float]] = {k: {} for k in range(1, n + 1)}
    for (a, b), length in shared.items():
        neighbours[a][b] = length
        neighbours[b][a] = length
    alive = {k for k in range(1, n + 1) if area[k] > 0}
    target = np.arange(n + 1)

    min_area_km2 = max(params.sliver_area_km2, params.sliver_min_cells * resolution**2 / 1e6)

    def is_sliver(k: int) -> bool:
        a_km2 = area[k] / 1e6
        if a_km2 < min_area_km2:
            return True
        if zmax[k] - zmin[k] < min_relief or area[k] < params.min_area_share * area.max():
            return True
        compact = 2.0 * math.sqrt(math.pi * area[k]) / perimeter[k] if perimeter[k] > 0 else 1.0
        return a_km2 < params.elongated_area_km2 and compact < params.elongated_compactness

    while True:
        candidates = [k for k in alive if neighbours[k] and is_sliver(k)]
        if not candidates:
            break
        k = min(candidates, key=lambda j: (area[j], j))
        into = max(neighbours[k].items(), key=lambda item: (item[1], -item[0]))[0]
        border = neighbours[k][into]
        area[into] += area[k]
        area[k] = 0.0
        perimeter[into] += perimeter[k] - 2.0 * border
        zmin[into] = min(zmin[into], zmin[k])
        zmax[into] = max(zmax[into], zmax[k])
        for other, length in neighbours.pop(k).items():
            del neighbours[other][k]
            if other != into:
                neighbours[into][other] = neighbours[into].get(other, 0.0) + length
                neighbours[other][into] = neighbours[into][other]
        alive.discard(k)
        target[target == k] = into
    return target[labels]


def _relabel_by_area(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..n by decreasing area (0 stays 0)."""
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    lut = np.zeros(counts.size, dtype=np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[labels]


def flowsheds(
    ice: np.ndarray, dem: np.ndarray, resolution: float, params: KienholzParams
) -> tuple[np.ndarray, tuple[PourPoint, ...]]:
    """Pour points of one complex and their flowsheds (pour point index + 1, 0 off the ice).

    Steps 3-7 of the method: fill, gutter, flow routing, pour points and flowsheds, on
    ``dem``, the smoothed DEM of a window that leaves ``params.buffer_px`` cells around
    ``ice``. Without a pour point (no flow leaves the ice) the whole complex is flowshed 1.
    """
    solid = ndimage.binary_fill_holes(ice)
    gutter = ndimage.binary_dilation(solid, structure=_EIGHT, iterations=params.gutter_width_px) & ~solid
    z = fill_depressions(dem)
    z[gutter] -= params.gutter_depth_m  # no refilling: flow leaves the ice at real outlets
    receivers, acc = route_flow(z, resolution, params.flow_method)
    active = (ice | gutter).ravel()
    outlet = outlets_within(receivers, active)
    ice_flat = ice.ravel()
    ends = outlet[ice_flat]
    on_gutter = gutter.ravel()[ends]
    pour_cells = np.unique(ends[on_gutter])
    if pour_cells.size == 0:
        return ice.astype(np.int32), ()
    rows, cols = np.divmod(pour_cells, ice.shape[1])
    areas = acc.ravel()[pour_cells] * (resolution**2 / 1e6)
    radii = params.merge_radius_m(areas)
    pours = tuple(PourPoint(int(r), int(c), float(a), float(rad)) for r, c, a, rad in zip(rows, cols, areas, radii))
    basin_of_cell = np.zeros(ice.size, dtype=np.int32)
    index = np.searchsorted(pour_cells, ends[on_gutter])
    basin_of_cell[np.flatnonzero(ice_flat)[on_gutter]] = index + 1
    basins = _keep_part_nearest(basin_of_cell.reshape(ice.shape), np.column_stack([rows, cols]))
    return _grow_labels(basins, ice), pours


def merge_flowsheds(
    basins: np.ndarray,
    ice: np.ndarray,
    pours: Sequence[PourPoint],
    dem: np.ndarray,
    resolution: float,
    params: KienholzParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 8-10: the flowsheds grouped by the merge disks, and the labels after the sliver merge."""
    group = _disk_merge(basins, ice, pours, resolution, params, params.gutter_width_px)
    lut = np.concatenate(([0], group + 1)).astype(np.int32)
    grouped = lut[basins]
    return grouped, _merge_slivers(grouped, dem, resolution, params)


def label_complex(
    ice: np.ndarray, dem: np.ndarray, resolution: float, params: KienholzParams
) -> tuple[np.ndarray, np.ndarray, tuple[PourPoint, ...]]:
    """Kienholz labels (1..n by area, 0 off the ice) of one complex on a window of the DEM.

    ``ice`` is the rasterised complex, ``dem`` the already smoothed DEM of the same window,
    which must leave at least ``params.buffer_px`` cells around the ice. Returns the glacier
    labels, the flowsheds before merging (pour point index + 1) and the pour points.
    """
    basins, pours = flowsheds(ice, dem, resolution, params)
    if not pours:
        return basins, basins.copy(), ()
    _, merged = merge_flowsheds(basins, ice, pours, dem, resolution, params)
    return _relabel_by_area(merged), basins, pours


# ------------------------------------------------------------------------------------------
# Vector partition
# ------------------------------------------------------------------------------------------


def _nearest_fill(labels: np.ndarray) -> np.ndarray:
    """Every cell gets the label of the nearest labelled cell (labels > 0)."""
    if (labels > 0).all():
        return labels
    _, (ir, ic) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    return labels[ir, ic]


def partition_polygon(
    polygon: shapely.Geometry, labels: np.ndarray, transform: Affine, simplify_m: float = 0.0, fragment_m2: float = 0.0
) -> list[shapely.Geometry]:
    """Cut ``polygon`` into one piece per label 1..n of a raster covering it.

    The labels are first spread to every cell (nearest label), polygonised and intersected
    with ``polygon``, so the pieces never overlap and their union is ``polygon`` exactly.
    Parts of a piece other than its largest that are smaller than ``fragment_m2`` move to the
    piece sharing the longest border with them. ``simplify_m`` straightens the shared edges
    (coverage simplification that leaves the outline untouched).
    """
    n = int(labels.max())
    if n <= 1:
        return [polygon]
    filled = _nearest_fill(labels).astype(np.int32)
    shapes: list[list[shapely.Geometry]] = [[] for _ in range(n + 1)]
    for geom, value in rasterio.features.shapes(filled, transform=transform):
        shapes[int(value)].append(shapely.geometry.shape(geom))
    cells = [shapely.union_all(s) if s else shapely.Polygon() for s in shapes[1:]]
    pieces = [shapely.intersection(polygon, cell) for cell in cells]
    pieces = [_polygonal(p) for p in pieces]
    if fragment_m2 > 0:
        pieces = _reassign_fragments(pieces, fragment_m2)
    if simplify_m > 0 and sum(not p.is_empty for p in pieces) > 1:
        keep = [i for i, p in enumerate(pieces) if not p.is_empty]
        simplified = shapely.coverage_simplify(
            np.array([pieces[i] for i in keep], dtype=object), simplify_m, simplify_boundary=False
        )
        for i, geom in zip(keep, simplified):
            pieces[i] = geom
    return pieces


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    if geom.is_empty or geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    polys = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else shapely.Polygon()


def _reassign_fragments(pieces: list[shapely.Geometry], fragment_m2: float) -> list[shapely.Geometry]:
    """Move small detached parts of each piece to the neighbour they share most border with."""
    parts_of = [list(shapely.get_parts(p)) if not p.is_empty else [] for p in pieces]
    moves: list[tuple[int, int, shapely.Geometry]] = []
    tree_geoms = [p for p in pieces]
    for i, parts in enumerate(parts_of):
        if len(parts) <= 1:
            continue
        main = max(range(len(parts)), key=lambda j: parts[j].area)
        for j, part in enumerate(parts):
            if j == main or part.area >= fragment_m2:
                continue
            best, best_len = -1, 0.0
            for k, other in enumerate(tree_geoms):
                if k == i or other.is_empty or not part.intersects(other):
                    continue
                length = shapely.intersection(part.boundary, other.boundary).length
                if length > best_len:
                    best, best_len = k, length
            if best >= 0:
                moves.append((i, best, part))
    if not moves:
        return pieces
    out_parts = [list(p) for p in parts_of]
    for src, dst, part in moves:
        out_parts[src] = [p for p in out_parts[src] if p is not part]
        out_parts[dst].append(part)
    return [_polygonal(shapely.union_all(p)) if p else shapely.Polygon() for p in out_parts]


# ------------------------------------------------------------------------------------------
# Compute API
# ------------------------------------------------------------------------------------------


def _check_grid(dem: np.ndarray, grid: Grid) -> None:
    if dem.ndim != 2 or dem.shape != grid.shape:
        raise InvalidInputError(f"DEM array of shape {dem.shape} does not match its grid {grid.shape}")
    crs = CRS.from_user_input(grid.crs) if grid.crs else None
    if crs is None or not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise CRSMismatchError(
            f"the DEM grid must be in a projected CRS in metres (got {grid.crs!r}); reproject it, "
            "e.g. to the local UTM zone (run_split does this for geographic DEMs)"
        )
    if abs(grid.transform.a + grid.transform.e) > 1e-6 * abs(grid.transform.a) or grid.transform.b or grid.transform.d:
        raise InvalidInputError(
            f"the DEM grid must be north-up with square cells (transform {tuple(grid.transform)[:6]})"
        )


def complex_ids(frame: gpd.GeoDataFrame, id_column: str | None, source: str) -> pd.Series:
    """Ids of ``frame``'s rows: ``id_column``, else a known id column, else ``C0001``...

    Ids must be unique and non-empty; errors name ``source``.
    """
    column = id_column
    if column is None:
        column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if column is None:
        ids = pd.Series([f"C{i + 1:04d}" for i in range(len(frame))], index=frame.index)
    else:
        detect_id_column(frame, source, column)
        ids = frame[column].astype(str)
        bad = frame[column].isna() | (ids.str.strip() == "")
        if bad.any():
            raise InvalidInputError(f"{source}: {int(bad.sum())} outlines have an empty id in '{column}'")
        dup = ids[ids.duplicated()]
        if not dup.empty:
            raise InvalidInputError(
                f"{source}: duplicated ids {sorted(set(dup))[:5]} in '{column}'; ids must be unique"
            )
    return ids


def _prepare(frame: gpd.GeoDataFrame, grid: Grid, what: str, source: str) -> gpd.GeoDataFrame:
    if frame.crs is None:
        raise CRSMismatchError(f"{source}: the {what} have no CRS")
    if frame.empty:
        raise InvalidInputError(f"{source}: no {what} to split (the layer is empty)")
    if not CRS.from_user_input(frame.crs).equals(CRS.from_user_input(grid.crs)):
        log.info("reprojecting %s %s from %s to the DEM grid's %s", len(frame), what, frame.crs, grid.crs)
        frame = frame.to_crs(grid.crs)
    return frame


def _valid_polygons(geoms: gpd.GeoSeries, ids: pd.Series, what: str, source: str) -> list[shapely.Geometry]:
    out = []
    empty = []
    for gid, geom in zip(ids, geoms):
        if geom is None or geom.is_empty:
            empty.append(gid)
            out.append(None)
            continue
        geom = _polygonal(shapely.make_valid(geom))
        if geom.is_empty:
            empty.append(gid)
        out.append(geom)
    if empty:
        raise InvalidInputError(f"{source}: {what} {empty[:5]} have no polygon area (empty or line geometries)")
    return out


def _window(
    bounds: tuple[float, float, float, float], grid: Grid, margin: int, clamp: bool = True
) -> tuple[int, int, int, int]:
    """Rows and columns (r0, r1, c0, c1) of ``grid`` covering ``bounds`` plus ``margin`` cells."""
    inv = ~grid.transform
    c0, r0 = inv @ (bounds[0], bounds[3])
    c1, r1 = inv @ (bounds[2], bounds[1])
    r0, r1 = math.floor(r0) - margin, math.ceil(r1) + margin
    c0, c1 = math.floor(c0) - margin, math.ceil(c1) + margin
    if clamp:
        return max(r0, 0), min(r1, grid.height), max(c0, 0), min(c1, grid.width)
    return r0, r1, c0, c1


def _check_coverage(geoms: Sequence[shapely.Geometry], ids: Sequence[str], grid: Grid, what: str, source: str) -> None:
    left, bottom, right, top = grid.bounds
    tol = 1e-6 * grid.resolution
    outside = [
        gid
        for gid, g in zip(ids, geoms)
        if (b := g.bounds)[0] < left - tol or b[1] < bottom - tol or b[2] > right + tol or b[3] > top + tol
    ]
    if outside:
        raise InvalidInputError(
            f"{source} does not cover {what} {outside[:5]}{' and more' if len(outside) > 5 else ''} "
            f"(DEM bounds {tuple(round(v, 1) for v in grid.bounds)} in {grid.crs}); give a DEM that covers every outline"
        )


def _void_check(
    dem: np.ndarray, grid: Grid, geoms: Sequence[shapely.Geometry], ids: Sequence[str], what: str, source: str
) -> None:
    """Raise if a complex is mostly DEM voids; log the ones with a few voids."""
    bad = ~np.isfinite(dem)
    if not bad.any():
        return
    for gid, geom in zip(ids, geoms):
        r0, r1, c0, c1 = _window(geom.bounds, grid, 0)
        if r1 <= r0 or c1 <= c0:
            continue
        sub = Grid(grid.crs, grid.transform @ Affine.translation(c0, r0), r1 - r0, c1 - c0)
        mask = rasterio.features.geometry_mask([geom], sub.shape, sub.transform, invert=True)
        if not mask.any():
            continue
        share = float(bad[r0:r1, c0:c1][mask].mean())
        if share > MAX_VOID_SHARE:
            raise InvalidInputError(f"{source}: {share:.0%} of {what} {gid!r} is DEM nodata; the DEM does not cover it")
        if share > 0:
            log.warning(
                "%s: %.1f%% of %s %r is DEM nodata, filled from the nearest valid cells", source, 100 * share, what, gid
            )


def split_complexes(
    complexes: gpd.GeoDataFrame,
    dem: np.ndarray,
    grid: Grid,
    params: KienholzParams = KienholzParams(),
    id_column: str | None = None,
    source: str = "the DEM",
) -> gpd.GeoDataFrame:
    """Split glacier complexes into glaciers with the Kienholz et al. (2013) method.

    ``dem`` (float, NaN for voids) lies on ``grid``, a north-up metric grid covering every
    complex; complexes in another CRS are reprojected to it. Returns one row per glacier in
    ``grid.crs``: ``glacier_id`` (``{complex_id}-{k}``, k = 1 for the largest, or the complex
    id itself when the complex stays whole), ``complex_id``, ``area_km2`` and the geometry.
    ``source`` names the DEM in error messages.
    """
    _check_grid(dem, grid)
    frame = _prepare(complexes, grid, "complexes", "outlines")
    ids = complex_ids(frame, id_column, "outlines")
    geoms = _valid_polygons(frame.geometry, ids, "complexes", "outlines")
    _check_coverage(geoms, list(ids), grid, "complexes", source)
    _void_check(dem, grid, geoms, list(ids), "complex", source)
    filled = fill_voids(dem.astype(np.float64))
    rows: list[dict[str, object]] = []
    for cid, geom in zip(ids, geoms):
        pieces = _split_geometry(geom, filled, grid, params)
        for k, piece in enumerate(pieces, start=1):
            gid = cid if len(pieces) == 1 else f"{cid}-{k}"
            rows.append({"glacier_id": gid, "complex_id": cid, "area_km2": piece.area / 1e6, "geometry": piece})
    log.info("split %d complexes into %d glaciers", len(geoms), len(rows))
    return gpd.GeoDataFrame(rows, columns=["glacier_id", "complex_id", "area_km2", "geometry"], crs=grid.crs)


def split_complex_raster(
    geom: shapely.Geometry, dem: np.ndarray, grid: Grid, params: KienholzParams
) -> ComplexLabels | None:
    """Raster split of one complex on a region DEM (no voids); None if it covers no cell centre.

    The window is the complex's bounding box plus ``params.buffer_px + 1`` cells; where it
    reaches past the grid edge the DEM is extended with its edge values.
    """
    margin = params.buffer_px + 1
    r0, r1, c0, c1 = _window(geom.bounds, grid, margin, clamp=False)
    transform = grid.transform @ Affine.translation(c0, r0)
    shape = (r1 - r0, c1 - c0)
    ice = rasterio.features.geometry_mask([geom], shape, transform, invert=True)
    if not ice.any():
        return None
    window = smoothed_window(dem, (r0, r1, c0, c1), grid.resolution, params)
    labels, flowsheds, pours = label_complex(ice, window, grid.resolution, params)
    return ComplexLabels((r0, r1, c0, c1), transform, labels, flowsheds, pours)


def _padded_window(array: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``array[r0:r1, c0:c1]``, extended with edge values where the window leaves the array."""
    rows, cols = array.shape
    sub = array[max(r0, 0) : min(r1, rows), max(c0, 0) : min(c1, cols)]
    pad = ((max(-r0, 0), max(r1 - rows, 0)), (max(-c0, 0), max(c1 - cols, 0)))
    return np.pad(sub, pad, mode="edge") if any(p for pair in pad for p in pair) else sub


def _split_geometry(
    geom: shapely.Geometry, dem: np.ndarray, grid: Grid, params: KienholzParams
) -> list[shapely.Geometry]:
    result = split_complex_raster(geom, dem, grid, params)
    if result is None or result.labels.max() <= 1:
        return [geom]
    pieces = partition_polygon(
        geom,
        result.labels,
        result.transform,
        simplify_m=params.divide_simplify_px * grid.resolution,
        fragment_m2=params.sliver_area_km2 * 1e6,
    )
    return [p for p in pieces if not p.is_empty]


def split_by_reference(
    ice: gpd.GeoDataFrame,
    reference: gpd.GeoDataFrame,
    dem: np.ndarray,
    grid: Grid,
    id_column: str | None = None,
    reference_id_column: str | None = None,
    params: KienholzParams = KienholzParams(),
    source: str = "the DEM",
) -> gpd.GeoDataFrame:
    """Split new ice outlines along the divides of a reference inventory.

    Ice inside a reference glacier stays with it; other ice goes to the reference glacier its
    D8 flow path (on the smoothed, sink-filled DEM) reaches while still on the ice, else to the
    nearest reference glacier along the ice. Ice outlines touching no reference glacier keep
    their own id (``{complex_id}`` or ``{complex_id}-new``). Returns one row per glacier in
    ``grid.crs``: ``glacier_id``, ``complex_id`` (the ice outline holding most of it),
    ``area_km2``, ``reference_area_km2``, ``area_change_km2`` and the geometry.
    """
    _check_grid(dem, grid)
    frame = _prepare(ice, grid, "ice outlines", "outlines")
    ref = _prepare(reference, grid, "reference glaciers", "reference")
    ids = complex_ids(frame, id_column, "outlines")
    ref_column = detect_id_column(ref, "reference", reference_id_column)
    ref_ids = list(ref[ref_column].astype(str))
    if len(set(ref_ids)) != len(ref_ids):
        raise InvalidInputError(f"reference: duplicated glacier ids in '{ref_column}'")
    geoms = _valid_polygons(frame.geometry, ids, "ice outlines", "outlines")
    ref_geoms = _valid_polygons(ref.geometry, pd.Series(ref_ids), "reference glaciers", "reference")
    _check_coverage(geoms, list(ids), grid, "ice outlines", source)
    _void_check(dem, grid, geoms, list(ids), "ice outline", source)
    res = grid.resolution
    filled_dem = fill_voids(dem.astype(np.float64))
    ref_tree = shapely.STRtree(ref_geoms)
    ref_area = {rid: g.area / 1e6 for rid, g in zip(ref_ids, ref_geoms)}
    pieces: list[tuple[str, str, shapely.Geometry]] = []
    for cid, geom in zip(ids, geoms):
        hits = sorted(ref_tree.query(geom, predicate="intersects").tolist())
        hits = [h for h in hits if shapely.intersection(geom, ref_geoms[h]).area > 0]
        if not hits:
            pieces.append((f"{cid}-new" if cid in ref_area else cid, cid, geom))
            continue
        margin = params.buffer_px + 1
        r0, r1, c0, c1 = _window(geom.bounds, grid, margin, clamp=False)
        transform = grid.transform @ Affine.translation(c0, r0)
        shape = (r1 - r0, c1 - c0)
        ice_mask = rasterio.features.geometry_mask([geom], shape, transform, invert=True)
        if len(hits) == 1 or not ice_mask.any():
            pieces.append((ref_ids[hits[0]], cid, geom))
            continue
        # Ice inside a reference glacier keeps it exactly (vector cut); only the rest is routed.
        taken = shapely.Polygon()
        for h in hits:
            core = _polygonal(shapely.difference(shapely.intersection(geom, ref_geoms[h]), taken))
            if not core.is_empty:
                pieces.append((ref_ids[h], cid, core))
            taken = shapely.union(taken, ref_geoms[h])
        rest = _polygonal(shapely.difference(geom, taken))
        if rest.is_empty:
            continue
        seeds = rasterio.features.rasterize(
            [(ref_geoms[h], i + 1) for i, h in enumerate(hits)], out_shape=shape, transform=transform, dtype="int32"
        )
        window = smoothed_window(filled_dem, (r0, r1, c0, c1), res, params)
        labels = _reference_labels(ice_mask, seeds, fill_depressions(window), res)
        parts = _pieces_by_label(rest, labels, transform, params.divide_simplify_px * res)
        if not parts:  # no reference glacier covers a cell centre: the most overlapped one takes it
            best = max(hits, key=lambda h: shapely.intersection(geom, ref_geoms[h]).area)
            parts = {hits.index(best) + 1: rest}
        for label, part in parts.items():
            pieces.append((ref_ids[hits[label - 1]], cid, part))
    rows = []
    by_id: dict[str, list[tuple[str, shapely.Geometry]]] = {}
    for gid, cid, geom in pieces:
        by_id.setdefault(gid, []).append((cid, geom))
    for gid, parts in by_id.items():
        geom = _polygonal(shapely.union_all([g for _, g in parts]))
        cid = max(parts, key=lambda p: p[1].area)[0]
        ref_km2 = ref_area.get(gid, 0.0)
        area = geom.area / 1e6
        rows.append(
            {
                "glacier_id": gid,
                "complex_id": cid,
                "area_km2": area,
                "reference_area_km2": ref_km2,
                "area_change_km2": area - ref_km2,
                "geometry": geom,
            }
        )
    columns = ["glacier_id", "complex_id", "area_km2", "reference_area_km2", "area_change_km2", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, crs=grid.crs)


def _pieces_by_label(
    polygon: shapely.Geometry, labels: np.ndarray, transform: Affine, simplify_m: float
) -> dict[int, shapely.Geometry]:
    """:func:`partition_polygon` keyed by label, for labels that may be missing or single."""
    present = np.unique(labels[labels > 0])
    if present.size == 0:
        return {}
    if present.size == 1:
        return {int(present[0]): polygon}
    parts = partition_polygon(polygon, labels, transform, simplify_m=simplify_m)
    return {k: part for k, part in enumerate(parts, start=1) if not part.is_empty}


def _reference_labels(ice: np.ndarray, seeds: np.ndarray, filled: np.ndarray, resolution: float) -> np.ndarray:
    """Seed labels on the ice, spread down the D8 flow paths, then to the nearest seed."""
    labels = np.where(ice, seeds, 0).astype(np.int32)
    receivers = d8_receivers(filled, resolution)
    # Follow the flow while it stays on unlabelled ice; it ends on a seed cell or leaves the ice.
    unlabelled = (ice & (labels == 0)).ravel()
    active = ice.ravel()
    stop = active & ~unlabelled  # seed cells end the walk
    walk = np.where(stop, -1, receivers)
    outlet = outlets_within(walk, active)
    flat = labels.ravel().copy()
    cells = np.flatnonzero(unlabelled)
    ends = outlet[cells]
    # The outlet is the last active cell: a seed cell if the path reached one.
    flat[cells] = np.where(flat[ends] > 0, flat[ends], 0)
    labels = flat.reshape(ice.shape)
    return _grow_labels(labels, ice)


def divide_lines(glaciers: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The ice divides: borders shared by two glaciers of the same complex.

    Columns ``complex_id``, ``glacier_id_1``, ``glacier_id_2``, ``length_m`` (in the frame's
    CRS units, metres for a metric CRS) and a line geometry.
    """
    rows = []
    for cid, group in glaciers.groupby("complex_id", sort=True):
        if len(group) < 2:
            continue
        geoms = list(group.geometry)
        gids = list(group["glacier_id"])
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="touches")
        for i, j in zip(left.tolist(), right.tolist()):
            if i >= j:
                continue
            line = shapely.intersection(geoms[i].boundary, geoms[j].boundary)
            parts = [p for p in shapely.get_parts(line) if p.geom_type in ("LineString", "MultiLineString")]
            if not parts:
                continue
            merged = shapely.line_merge(shapely.union_all(parts))
            rows.append(
                {
                    "complex_id": cid,
                    "glacier_id_1": gids[i],
                    "glacier_id_2": gids[j],
                    "length_m": merged.length,
                    "geometry": merged,
                }
            )
    columns = ["complex_id", "glacier_id_1", "glacier_id_2", "length_m", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, crs=glaciers.crs)


def dissolve_complexes(outlines: gpd.GeoDataFrame, tolerance_m: float = 0.0) -> gpd.GeoDataFrame:
    """Dissolve touching outlines into glacier complexes (ids ``C0001``... by decreasing area).

    ``tolerance_m`` closes gaps up to that width between neighbours (buffer out and back,
    in a metric CRS). Returns columns ``complex_id``, ``n_members`` and the geometry.
    """
    if outlines.empty:
        raise InvalidInputError("no outlines to dissolve")
    geoms = shapely.make_valid(outlines.geometry.values)
    union = shapely.union_all(geoms)
    if tolerance_m > 0:
        union = union.buffer(tolerance_m / 2).buffer(-tolerance_m / 2)
    parts = sorted(shapely.get_parts(_polygonal(union)), key=lambda g: -g.area)
    members = [int(shapely.intersects(g, geoms).sum()) for g in parts]
    return gpd.GeoDataFrame(
        {"complex_id": [f"C{i + 1:04d}" for i in range(len(parts))], "n_members": members},
        geometry=list(parts),
        crs=outlines.crs,
    )


def match_glaciers(truth: gpd.GeoDataFrame, result: gpd.GeoDataFrame, truth_id: str = "glacier_id") -> pd.DataFrame:
    """Match reference glaciers to split glaciers (same metric CRS).

    A reference glacier is *recovered* when one result glacier overlaps it by more than 50 %
    of both areas. Returns one row per reference glacier: its id, area (km2), the best result
    glacier by overlap, the IoU with it, and ``recovered``.
    """
    if (
        truth.crs is None
        or result.crs is None
        or not CRS.from_user_input(truth.crs).equals(CRS.from_user_input(result.crs))
    ):
        raise CRSMismatchError("match_glaciers needs both frames in the same CRS")
    tgeoms = list(truth.geometry)
    rgeoms = list(result.geometry)
    tree = shapely.STRtree(rgeoms)
    rows = []
    for tid, tg in zip(truth[truth_id], tgeoms):
        best, best_overlap = None, 0.0
        for j in tree.query(tg, predicate="intersects").tolist():
            overlap = shapely.intersection(tg, rgeoms[j]).area
            if overlap > best_overlap:
                best, best_overlap = j, overlap
        if best is None:
            rows.append({"truth_id": tid, "area_km2": tg.area / 1e6, "match_id": None, "iou": 0.0, "recovered": False})
            continue
        rg = rgeoms[best]
        union = tg.area + rg.area - best_overlap
        rows.append(
            {
                "truth_id": tid,
                "area_km2": tg.area / 1e6,
                "match_id": result["glacier_id"].iloc[best],
                "iou": best_overlap / union,
                "recovered": bool(best_overlap > 0.5 * tg.area and best_overlap > 0.5 * rg.area),
            }
        )
    return pd.DataFrame(rows)


def match_summary(matches: pd.DataFrame) -> dict[str, float]:
    """Recovered share and area-weighted IoU of a :func:`match_glaciers` table."""
    weights = matches["area_km2"].to_numpy()
    return {
        "glaciers": len(matches),
        "recovered": int(matches["recovered"].sum()),
        "recovered_share": float(matches["recovered"].mean()) if len(matches) else 0.0,
        "area_weighted_iou": float(np.average(matches["iou"], weights=weights)) if weights.sum() > 0 else 0.0,
    }


# ------------------------------------------------------------------------------------------
# I/O entry point
# ------------------------------------------------------------------------------------------


def plan_regions(outlines_4326: gpd.GeoDataFrame, tile_deg: float = REGION_TILE_DEG) -> list[np.ndarray]:
    """Group outlines into regions (row positions) by the lon/lat tile holding their centre."""
    reps = shapely.point_on_surface(outlines_4326.geometry.values)
    keys = np.column_stack([np.floor(shapely.get_x(reps) / tile_deg), np.floor(shapely.get_y(reps) / tile_deg)])
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    return [np.flatnonzero(inverse.ravel() == k) for k in range(int(inverse.max()) + 1)]


def read_dem_region(
    path: Path, geoms: gpd.GeoSeries, margin_m: float, ids: Sequence[str] = ()
) -> tuple[np.ndarray, Grid]:
    """Read the DEM once for a group of outlines: a window covering them plus ``margin_m``.

    A projected DEM (in metres) is read on its own grid; a geographic one (e.g. SRTM in
    EPSG:4326) is reprojected bilinearly to the local UTM zone of the outlines at about its
    own cell size. Voids (nodata; -32768 in int16 files without nodata) become NaN. Raises
    :class:`InvalidInputError` naming the file and the outlines it does not cover.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: DEM not found")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInputError(f"{path}: not a readable raster ({exc})") from exc
    with src:
        if src.crs is None:
            raise CRSMismatchError(f"{path}: the DEM has no CRS")
        dem_crs = CRS.from_user_input(src.crs)
        in_dem = geoms.to_crs(dem_crs)
        left, bottom, right, top = src.bounds
        tol = 0.5 * abs(src.transform.a)
        outside = [
            gid
            for gid, b in zip(ids or range(len(geoms)), in_dem.bounds.itertuples(index=False))
            if b.minx < left - tol or b.miny < bottom - tol or b.maxx > right + tol or b.maxy > top + tol
        ]
        if outside:
            raise InvalidInputError(
                f"{path}: the DEM (bounds {tuple(round(v, 4) for v in src.bounds)} in {dem_crs.to_string()}) "
                f"does not cover outlines {outside[:5]}{' and more' if len(outside) > 5 else ''}; "
                "give a DEM that covers every outline"
            )
        nodata = src.nodata
        if nodata is None and src.dtypes[0] == "int16":
            nodata = -32768
        if dem_crs.is_projected and dem_crs.axis_info[0].unit_name in ("metre", "meter"):
            if abs(abs(src.transform.a) - abs(src.transform.e)) > 1e-6 * abs(src.transform.a):
                raise InvalidInputError(f"{path}: projected DEMs must have square cells (got {src.res})")
            b = in_dem.total_bounds
            window = rasterio.windows.from_bounds(
                b[0] - margin_m, b[1] - margin_m, b[2] + margin_m, b[3] + margin_m, src.transform
            )
            window = _snap_window(window)
            data = src.read(1, window=window, boundless=True, fill_value=0).astype(np.float64)
            if nodata is not None:
                data[data == nodata] = np.nan
            transform = src.window_transform(window)
            grid = Grid(dem_crs.to_string(), transform, data.shape[0], data.shape[1])
            _mark_outside(data, grid, src)
            return data, grid
        # Geographic DEM (or one in feet...): reproject the region to the local UTM grid.
        centre = shapely.centroid(shapely.union_all(geoms.to_crs("EPSG:4326").values))
        target = utm_crs(centre.x, centre.y)
        utm = geoms.to_crs(target)
        if dem_crs.is_geographic:
            dx = abs(src.res[0]) * 111_320.0 * math.cos(math.radians(centre.y))
            dy = abs(src.res[1]) * 110_574.0
        else:
            factor = dem_crs.axis_info[0].unit_conversion_factor or 1.0
            dx, dy = abs(src.res[0]) * factor, abs(src.res[1]) * factor
        res = max(1.0, round(math.sqrt(dx * dy)))
        grid = Grid.from_bounds(utm.total_bounds, target, res, margin=margin_m)
        data = np.full(grid.shape, np.nan, dtype=np.float64)
        src_window_bounds = rasterio.warp.transform_bounds(target, dem_crs, *grid.bounds, densify_pts=21)
        window = rasterio.windows.from_bounds(*src_window_bounds, src.transform)
        window = _snap_window(window)
        pad = 2
        window = rasterio.windows.Window(
            window.col_off - pad, window.row_off - pad, window.width + 2 * pad, window.height + 2 * pad
        )
        source = src.read(1, window=window, boundless=True, fill_value=nodata if nodata is not None else -32768).astype(
            np.float64
        )
        if nodata is not None:
            source[source == nodata] = np.nan
        inside = _inside_mask(src, window)
        source[~inside] = np.nan
        rasterio.warp.reproject(
            source,
            data,
            src_transform=src.window_transform(window),
            src_crs=dem_crs,
            dst_transform=grid.transform,
            dst_crs=target,
            src_nodata=np.nan,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
        log.info(
            "%s: reprojected %s window to %s at %.0f m (%d x %d cells)",
            path,
            dem_crs.to_string(),
            target,
            res,
            grid.width,
            grid.height,
        )
        return data, grid


def _snap_window(window: rasterio.windows.Window) -> rasterio.windows.Window:
    """The smallest whole-cell window containing ``window``."""
    col0, row0 = math.floor(window.col_off), math.floor(window.row_off)
    col1 = math.ceil(window.col_off + window.width)
    row1 = math.ceil(window.row_off + window.height)
    return rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)


def _inside_mask(src: rasterio.DatasetReader, window: rasterio.windows.Window) -> np.ndarray:
    rows = np.arange(int(window.row_off), int(window.row_off) + int(window.height))
    cols = np.arange(int(window.col_off), int(window.col_off) + int(window.width))
    return ((rows >= 0) & (rows < src.height))[:, None] & ((cols >= 0) & (cols < src.width))[None, :]


def _mark_outside(data: np.ndarray, grid: Grid, src: rasterio.DatasetReader) -> None:
    """Cells of a boundless read beyond the file's extent become NaN."""
    col_off, row_off = ~src.transform @ (grid.transform.c, grid.transform.f)
    window = rasterio.windows.Window(round(col_off), round(row_off), grid.width, grid.height)
    data[~_inside_mask(src, window)] = np.nan


def run_split(
    settings: SplitSettings,
    params: KienholzParams = KienholzParams(),
    progress: Callable[[int, int], None] | None = None,
) -> SplitResult:
    """``glacimap split``: read outlines and DEM, split, write ``settings.out``.

    Outlines in any CRS are reprojected to the DEM's grid (a geographic DEM is reprojected to
    local UTM); the output
    GeoPackage has layers ``glaciers`` and ``divides`` in EPSG:4326. The DEM is read once per
    region (complexes grouped by 0.25 degree tiles). ``progress(done, total)`` is called after
    each region.
    """
    started = time.perf_counter()
    out = Path(settings.out)
    if out.exists() and not settings.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    outlines_path = Path(settings.outlines)
    dem_path = Path(settings.dem)
    method = settings.method
    frame = read_layer(outlines_path)
    if frame.empty:
        raise InvalidInputError(f"{outlines_path}: no outlines to split (the layer is empty)")
    use_id = settings.id_column if method == "kienholz" else None
    ids = complex_ids(frame, use_id, str(outlines_path))
    frame = frame.assign(complex_id=ids.to_numpy())
    _valid_polygons(frame.geometry, ids, "outlines", str(outlines_path))
    left, right = shapely.STRtree(frame.geometry.values).query(frame.geometry.values, predicate="overlaps")
    if (left < right).any():
        pairs = [(ids.iloc[i], ids.iloc[j]) for i, j in zip(left, right) if i < j][:3]
        log.warning(
            "%s: outlines overlap (e.g. %s); dissolve touching outlines into complexes first, "
            "or the glaciers written will overlap too",
            outlines_path,
            pairs,
        )
    reference = None
    if method == "reference":
        reference = load_inventory(settings.reference, settings.id_column)
    margin_m = _margin_m(dem_path, params)
    in_4326 = frame.to_crs("EPSG:4326")
    regions = plan_regions(in_4326)
    results = []
    for n, rows in enumerate(regions, start=1):
        part = frame.iloc[rows]
        ids_part = list(part["complex_id"])
        dem, grid = read_dem_region(dem_path, part.geometry, margin_m, ids_part)
        if method == "kienholz":
            glaciers = split_complexes(part, dem, grid, params, id_column="complex_id", source=str(dem_path))
        else:
            ref_part = reference.to_crs(grid.crs)  # type: ignore[union-attr]
            ref_part = ref_part[ref_part.intersects(shapely.box(*grid.bounds))]
            glaciers = split_by_reference(
                part, ref_part, dem, grid, id_column="complex_id", params=params, source=str(dem_path)
            )
        divides = divide_lines(glaciers)
        results.append((glaciers.to_crs("EPSG:4326"), divides.to_crs("EPSG:4326")))
        if progress is not None:
            progress(n, len(regions))
    glaciers = gpd.GeoDataFrame(pd.concat([g for g, _ in results], ignore_index=True), crs="EPSG:4326")
    divides = gpd.GeoDataFrame(pd.concat([d for _, d in results], ignore_index=True), crs="EPSG:4326")
    if method == "reference" and glaciers["glacier_id"].duplicated().any():
        glaciers = _merge_across_regions(glaciers)
    if glaciers["glacier_id"].duplicated().any():
        dup = sorted(set(glaciers.loc[glaciers["glacier_id"].duplicated(), "glacier_id"]))[:5]
        raise InvalidInputError(f"{outlines_path}: glacier ids {dup} occur in more than one region or outline")
    write_layers(out, {"glaciers": glaciers, "divides": divides}, overwrite=settings.overwrite)
    counts = glaciers.groupby("complex_id").size()
    seconds = time.perf_counter() - started
    log.info("split %d complexes into %d glaciers in %.1f s -> %s", len(frame), len(glaciers), seconds, out)
    return SplitResult(
        out, method, glaciers, divides, len(frame), len(glaciers), int((counts > 1).sum()), len(regions), seconds
    )


def _merge_across_regions(glaciers: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """One row per reference glacier whose ice fell into several regions."""
    rows = []
    for gid, group in glaciers.groupby("glacier_id", sort=False):
        first = group.iloc[int(np.argmax(group["area_km2"].to_numpy()))]
        area = float(group["area_km2"].sum())
        rows.append(
            {
                **first.to_dict(),
                "area_km2": area,
                "area_change_km2": area - float(first["reference_area_km2"]),
                "geometry": _polygonal(shapely.union_all(group.geometry.values)),
            }
        )
    return gpd.GeoDataFrame(rows, columns=list(glaciers.columns), crs=glaciers.crs)


def _margin_m(dem_path: Path, params: KienholzParams) -> float:
    """Metres of DEM to read around the outlines (buffer, smoothing reach, a few spare cells).

    Opening the DEM here also checks up front that it exists and is a readable raster.
    """
    if not dem_path.exists():
        raise InputNotFoundError(f"{dem_path}: DEM not found")
    try:
        with rasterio.open(dem_path) as src:
            crs = CRS.from_user_input(src.crs) if src.crs else None
            cell = abs(src.res[1])
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInputError(f"{dem_path}: not a readable raster ({exc})") from exc
    if crs is None:
        raise CRSMismatchError(f"{dem_path}: the DEM has no CRS")
    res = cell * (110_574.0 if crs.is_geographic else (crs.axis_info[0].unit_conversion_factor or 1.0))
    return (params.buffer_px + 3 + smoothing_reach_px(res, params)) * res


__all__ = [
    "ComplexLabels",
    "KienholzParams",
    "PourPoint",
    "SplitResult",
    "accumulate_d8",
    "d8_receivers",
    "dissolve_complexes",
    "divide_lines",
    "fill_depressions",
    "fill_voids",
    "flowsheds",
    "label_complex",
    "match_glaciers",
    "match_summary",
    "merge_flowsheds",
    "outlets_naive",
    "outlets_within",
    "partition_polygon",
    "plan_regions",
    "read_dem_region",
    "receivers_from_direction",
    "route_flow",
    "run_split",
    "smooth_dem",
    "smoothed_window",
    "split_by_reference",
    "split_complex_raster",
    "split_complexes",
]
