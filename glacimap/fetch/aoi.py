"""``glacimap fetch --aoi``: wall-to-wall chips over an area of interest, tile by tile.

The AOI (a lon/lat box) is covered by one grid in the UTM zone of its centre, on the
``resolution`` lattice, cut into square tiles of ``aoi_tile`` metres that share that lattice
(edges line up exactly, nothing overlaps, the last row and column are cut at the AOI's edge).
Tiles whose square misses the AOI's projected outline are left out. Each tile is one task
(resumable, locally or on dask) written exactly where and how a glacier chip is written
(``W/chips/{year}/aoi-r{row:03d}-c{col:03d}.tif``, same bands and selection tag), so
``glacimap predict`` runs on the tiles unchanged. ``W/aoi.json`` records the grid and tiles.

Per tile, the candidates are the ``candidates`` least tile-cloudy acquisitions (same search,
same-day mosaics and ``max_tile_cloud`` as the inventory mode) whose footprint reaches the
tile (covers at least ``min_coverage`` of it without compositing). Each is scored over the
whole tile: valid-data coverage and cloud fraction as in the inventory mode; the snow
indicator needs an off-glacier ring and is NaN here, so that key of the ranking ties and the
next (tile cloud cover) decides. The order is :func:`rank_tile_candidates`: candidates that
pass the inventory rule (coverage >= ``min_coverage``, cloud <= ``max_cloud``) first, in the
inventory rule's order; with compositing (the default in this mode) every other candidate
with clear pixels follows in the same order. The best is the base scene; its cloud and
no-data pixels are filled from the following ones in turn (``source`` band: 1 for the base,
2, 3, ... for the scenes in the order of ``scene_ids``; 0 where no scene is clear).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.warp import transform_bounds

from glacimap.errors import InvalidInputError, NotImplementedYetError, OutputExistsError
from glacimap.fetch.chips import (
    MAX_DEM_VOID,
    FetchParams,
    _sar_layers,
    chip_layers,
    mosaic_dem,
    project,
    rank_of,
    reflectance,
    scene_masks,
    score_scene,
    write_chip,
)
from glacimap.fetch.plan import CandidateScore, GlacierJob, Scene, acquisition_key, mosaic_scene
from glacimap.fetch.profiles import OPTICAL_BANDS
from glacimap.fetch.read import gdal_env
from glacimap.fetch.search import footprint_coverage
from glacimap.fetch.select import selection_key
from glacimap.parallel import Task, TaskOutcome
from glacimap.rasters import Grid, utm_crs
from glacimap.settings import FetchSettings
from glacimap.workspace import Workspace, write_json_atomic

log = logging.getLogger(__name__)

AOI_FILE = "aoi.json"  # the name of Workspace.aoi, for messages
AOI_FORMAT = "glacimap-aoi"
AOI_FORMAT_VERSION = 1
#: Largest number of tiles one AOI may have (beyond it: a larger --aoi-tile, or several AOIs).
MAX_TILES = 2500
#: Largest share of a tile's clear pixels without DEM data that is filled rather than failed
#: (a tile on the DEM's edge has a strip of voids; ice there is split on the filled values).
MAX_TILE_DEM_VOID = 0.5


# -- the tile plan ---------------------------------------------------------------------------------
def tile_id(row: int, col: int) -> str:
    """The id (and file stem) of the tile in row ``row``, column ``col`` of an AOI."""
    return f"aoi-r{row:03d}-c{col:03d}"


@dataclass(frozen=True)
class AoiTile:
    """One tile: its id, position in the tile lattice and its grid (a window of the AOI grid)."""

    id: str
    row: int
    col: int
    grid: Grid


@dataclass(frozen=True)
class AoiPlan:
    """The AOI's grid and tiles (what ``W/aoi.json`` holds)."""

    bbox: tuple[float, float, float, float]  # minlon, minlat, maxlon, maxlat
    grid: Grid  # the whole AOI: every tile is a window of it
    tile_px: int  # side of a full tile, cells
    tiles: tuple[AoiTile, ...]

    @property
    def tile_size(self) -> float:
        """Side of a full tile, metres."""
        return self.tile_px * self.grid.resolution

    def window(self, tile: AoiTile) -> tuple[slice, slice]:
        """Rows and columns of ``tile`` in the AOI grid."""
        r0, c0 = tile.row * self.tile_px, tile.col * self.tile_px
        return slice(r0, r0 + tile.grid.height), slice(c0, c0 + tile.grid.width)

    def same_area(self, other: AoiPlan) -> bool:
        """True when ``other`` has the same bbox, grid and tile size."""
        return (
            np.allclose(self.bbox, other.bbox, rtol=0, atol=1e-9)
            and self.grid == other.grid
            and self.tile_px == other.tile_px
        )

    @classmethod
    def from_grid(cls, bbox: tuple[float, float, float, float], grid: Grid, tile_px: int) -> AoiPlan:
        """Every tile of ``tile_px`` cells that ``grid`` holds (the last row and column cut at its edge)."""
        rows, cols = math.ceil(grid.height / tile_px), math.ceil(grid.width / tile_px)
        tiles = tuple(
            AoiTile(tile_id(row, col), row, col, _tile_grid(grid, tile_px, row, col))
            for row in range(rows)
            for col in range(cols)
        )
        return cls(tuple(float(v) for v in bbox), grid, tile_px, tiles)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": AOI_FORMAT,
            "version": AOI_FORMAT_VERSION,
            "bbox": list(self.bbox),
            "crs": self.grid.crs,
            "resolution": self.grid.resolution,
            "tile_size_m": self.tile_size,
            "tile_px": self.tile_px,
            "transform": list(self.grid.transform)[:6],
            "width": self.grid.width,
            "height": self.grid.height,
            "bounds": list(self.grid.bounds),
            "tiles": [
                {
                    "id": t.id,
                    "row": t.row,
                    "col": t.col,
                    "width": t.grid.width,
                    "height": t.grid.height,
                    "bounds": list(t.grid.bounds),
                }
                for t in self.tiles
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = AOI_FILE) -> AoiPlan:
        if data.get("format") != AOI_FORMAT:
            raise InvalidInputError(f"{source}: not a glacimap AOI description (format {data.get('format')!r})")
        try:
            grid = Grid(data["crs"], Affine(*data["transform"]), int(data["height"]), int(data["width"]))
            tile_px = int(data["tile_px"])
            tiles = tuple(
                AoiTile(t["id"], int(t["row"]), int(t["col"]), _tile_grid(grid, tile_px, int(t["row"]), int(t["col"])))
                for t in data["tiles"]
            )
            return cls(tuple(float(v) for v in data["bbox"]), grid, tile_px, tiles)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{source}: incomplete AOI description ({exc})") from exc


def _tile_grid(grid: Grid, tile_px: int, row: int, col: int) -> Grid:
    r0, c0 = row * tile_px, col * tile_px
    return Grid(
        grid.crs,
        grid.transform @ Affine.translation(c0, r0),
        min(tile_px, grid.height - r0),
        min(tile_px, grid.width - c0),
    )


def plan_aoi(
    bbox: tuple[float, float, float, float], resolution: float, tile_size: float, max_tiles: int = MAX_TILES
) -> AoiPlan:
    """The AOI grid (UTM zone of the centre, snapped to the ``resolution`` lattice) and its tiles.

    Raises :class:`InvalidInputError` naming the AOI when it would need more than
    ``max_tiles`` tiles.
    """
    minx, miny, maxx, maxy = bbox
    crs = utm_crs((minx + maxx) / 2, (miny + maxy) / 2)
    outline = project(shapely.box(*bbox).segmentize(0.01), "EPSG:4326", crs)
    grid = Grid.from_bounds(outline.bounds, crs, resolution)
    tile_px = max(1, round(tile_size / resolution))
    rows, cols = math.ceil(grid.height / tile_px), math.ceil(grid.width / tile_px)
    if rows * cols > max_tiles:
        raise InvalidInputError(
            f"AOI {','.join(f'{v:g}' for v in bbox)} needs {rows * cols} tiles of {tile_px * resolution:g} m "
            f"({rows} x {cols}), more than {max_tiles}; pass a larger --aoi-tile or split the AOI"
        )
    full = AoiPlan.from_grid(bbox, grid, tile_px)
    return replace(
        full, tiles=tuple(t for t in full.tiles if shapely.box(*t.grid.bounds).intersection(outline).area > 0)
    )


def load_aoi(workspace: Workspace) -> AoiPlan | None:
    """The workspace's AOI plan, or None when it was not fetched with ``--aoi``."""
    path = workspace.aoi
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc})") from exc
    return AoiPlan.from_dict(data, str(path))


def claim_workspace(plan: AoiPlan, workspace: Workspace, overwrite: bool) -> Path:
    """Write ``W/aoi.json`` for ``plan``; refuse a workspace of another run unless ``overwrite``."""
    if workspace.inventory.exists() and not overwrite:
        raise OutputExistsError(
            f"{workspace.root} holds an inventory-mode run ({workspace.inventory}); fetch --aoi needs "
            "a workspace of its own: use another --work folder or pass --overwrite"
        )
    path = workspace.aoi
    existing = load_aoi(workspace)
    if existing is not None and existing.same_area(plan):
        return path
    if existing is not None and not overwrite:
        raise OutputExistsError(
            f"{path} holds another AOI ({','.join(f'{v:g}' for v in existing.bbox)}, "
            f"{existing.tile_size:g} m tiles at {existing.grid.resolution:g} m) than "
            f"{','.join(f'{v:g}' for v in plan.bbox)} ({plan.tile_size:g} m tiles at {plan.grid.resolution:g} m); "
            "use another --work folder or pass --overwrite"
        )
    if existing is not None or workspace.inventory.exists():
        log.warning("--overwrite: %s now describes AOI %s; chips of other years may be stale", path, plan.bbox)
    write_json_atomic(path, plan.to_dict())
    return path


def lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """A grid's bounds in EPSG:4326."""
    return transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)


# -- per-tile candidates -----------------------------------------------------------------------------
def plan_tile_jobs(
    plan: AoiPlan,
    optical: list[Scene],
    dem: list[Scene],
    sar: list[Scene],
    candidates: int,
    min_coverage: float,
    composite: bool,
) -> tuple[list[GlacierJob], dict[str, str]]:
    """One job per tile with its candidate acquisitions; the tiles without any, with the reason."""
    jobs, unplanned = [], {}
    footprints = [shapely.from_wkb(s.footprint_wkb) for s in optical]
    tree = shapely.STRtree(footprints)
    dem_tree = shapely.STRtree([shapely.from_wkb(s.footprint_wkb) for s in dem]) if dem else None
    for tile in plan.tiles:
        area = shapely.box(*lonlat_bounds(tile.grid))
        touching: dict[tuple, list[Scene]] = {}
        for index in sorted(tree.query(area, predicate="intersects")):
            scene = optical[index]
            touching.setdefault(acquisition_key(scene), []).append(scene)
        acquisitions = [mosaic_scene(tiles) for tiles in touching.values()]
        floor = 0.0 if composite else min_coverage
        shares = {s.id: footprint_coverage(s, area) for s in acquisitions}
        covering = [s for s in acquisitions if shares[s.id] > 0 and shares[s.id] >= floor]
        covering.sort(key=lambda s: (s.tile_cloud if s.tile_cloud is not None else np.inf, s.id))
        if not covering:
            unplanned[tile.id] = (
                "no scene in the window reaches the tile"
                if composite
                else f"no scene in the window covers {min_coverage:.0%} of the tile (try --composite)"
            )
            continue
        dem_scenes = (
            sorted((dem[i] for i in dem_tree.query(area, predicate="intersects")), key=lambda s: s.id)
            if dem_tree
            else []
        )
        jobs.append(
            GlacierJob(
                glacier_id=tile.id,
                geometry_wkb=shapely.to_wkb(area),
                grid=tile.grid,
                candidates=tuple(covering[:candidates]),
                dem_scenes=tuple(dem_scenes),
                sar_scenes=tuple(sorted((s for s in sar if footprint_coverage(s, area) > 0), key=lambda s: s.id)),
            )
        )
    return jobs, unplanned


# -- choosing and compositing ---------------------------------------------------------------------------
def rank_tile_candidates(scores: list[CandidateScore], composite: bool) -> list[CandidateScore]:
    """Usable candidates of a tile, best first (see module docstring).

    A score's ``rejected`` holds the inventory rule's reason; with ``composite`` such a
    candidate still ranks, after every candidate that passes the rule, when it has clear pixels.
    """
    passing = sorted((s for s in scores if s.rejected is None), key=selection_key)
    if not composite:
        return passing
    fillers = [s for s in scores if s.rejected is not None and s.coverage > 0 and s.cloud_fraction < 1]
    return passing + sorted(fillers, key=selection_key)


def score_tile(scene: Scene, job: GlacierJob, params: FetchParams) -> CandidateScore:
    """Coverage and cloud fraction of ``scene`` over the whole tile (snow index NaN)."""
    return score_scene(scene, job, shapely.box(*job.grid.bounds), replace(params, buffer=0.0))


def _optical(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(6 harmonised bands, clear pixels, pixels with data) of a scene on ``grid``."""
    bands = np.stack([reflectance(scene, band, grid) for band in OPTICAL_BANDS])
    data, cloud = scene_masks(scene, grid)
    clear = data & ~cloud & np.isfinite(bands).all(axis=0)
    return bands, clear, data


def assemble_tile(
    job: GlacierJob,
    params: FetchParams,
    output: Path,
    scores: list[CandidateScore],
    optical: Callable[[Scene], tuple[np.ndarray, np.ndarray, np.ndarray]],
    elevation: Callable[[], np.ndarray],
    dem_ids: list[str],
    sar: Callable[[date], tuple[list[np.ndarray], list[str]]] | None = None,
) -> dict[str, Any]:
    """Rank, composite and write one tile's chip; return its selection record.

    The record's ``coverage`` and ``cloud_fraction`` describe the written chip: the share of
    the tile with data in a used scene, and the share of those pixels that stayed cloudy;
    ``valid_fraction`` is the share of the tile with a clear pixel. Without a clear pixel
    the record has status ``no_valid_data`` and no chip is written.
    """
    grid = job.grid
    ranked = rank_tile_candidates(scores, params.composite)
    candidate_rows = [asdict(s) | {"rank": rank_of(s, ranked)} for s in scores]
    if not ranked:
        reasons = "; ".join(f"{s.scene_id}: {s.rejected}" for s in scores) or "no candidate scenes"
        return {
            "glacier_id": job.glacier_id,
            "status": "no_valid_data",
            "reason": f"no usable scene ({reasons})",
            "candidates": candidate_rows,
        }
    by_id = {scene.id: scene for scene in job.candidates}
    chosen = [by_id[s.scene_id] for s in (ranked if params.composite else ranked[:1])]

    bands: np.ndarray | None = None
    clear = np.zeros(grid.shape, dtype=bool)
    data = np.zeros(grid.shape, dtype=bool)
    source = np.zeros(grid.shape, dtype=np.float32)
    used: list[Scene] = []  # the scenes that supplied pixels, in rank order
    for scene in chosen:
        if clear.all():
            break
        more, more_clear, more_data = optical(scene)
        if bands is None:
            bands = more  # the base's values stay where no scene is clear (valid = 0 there)
        data |= more_data
        fill = ~clear & more_clear
        if not fill.any():
            continue
        used.append(scene)
        bands[:, fill] = more[:, fill]
        source[fill] = len(used)
        clear |= fill
    if bands is None or not used:
        return {
            "glacier_id": job.glacier_id,
            "status": "no_valid_data",
            "reason": f"no clear pixel in the tile in {[s.id for s in chosen]}",
            "candidates": candidate_rows,
        }

    dem = elevation()
    missing = float(np.isnan(dem[clear]).mean())
    if missing > MAX_TILE_DEM_VOID:
        raise InvalidInputError(
            f"tile {job.glacier_id}: the DEM covers only {1 - missing:.1%} of the tile's clear pixels "
            f"(needs {1 - MAX_TILE_DEM_VOID:.0%}); DEM: {dem_ids}"
        )
    if missing > MAX_DEM_VOID:
        log.warning(
            "tile %s: %.1f%% of the clear pixels have no DEM; filled from the nearest DEM cells",
            job.glacier_id,
            100 * missing,
        )
    layers, names, sar_ids, dem_filled = chip_layers(
        bands, dem, grid, sar, used[0].datetime.date(), source if params.composite else None, clear)

    base = ranked[0]
    n_data = int(data.sum())
    record = {
        "glacier_id": job.glacier_id,
        "status": "ok",
        "reason": None,
        "sensor": ",".join(dict.fromkeys(s.sensor for s in used)),
        "platform": ",".join(dict.fromkeys(s.platform for s in used if s.platform)) or None,
        "scene_ids": [s.id for s in used],
        "scene_dates": [s.date_text for s in used],
        "date": used[0].date_text,
        "cloud_fraction": round(float((data & ~clear).sum() / n_data) if n_data else 1.0, 4),
        "coverage": round(n_data / data.size, 4),
        "snow_index": float("nan"),
        "tile_cloud": base.tile_cloud,
        "base_cloud_fraction": base.cloud_fraction,
        "valid_fraction": round(float(clear.mean()), 4),
        "dem_filled_fraction": round(dem_filled, 4),
        "sar_scene_ids": sar_ids,
        "dem_scene_ids": dem_ids,
        "candidates": candidate_rows,
    }
    return write_chip(output, layers, names, grid, record)


def build_tile(job: GlacierJob, params: FetchParams, output: Path) -> dict[str, Any]:
    """Score a tile's candidates (STAC backend), composite and write its chip; return its record."""
    with gdal_env(params.requester_pays):
        grid = job.grid
        scores = [score_tile(scene, job, params) for scene in job.candidates]
        return assemble_tile(
            job,
            params,
            output,
            scores,
            optical=lambda scene: _optical(scene, grid),
            elevation=lambda: mosaic_dem(job.dem_scenes, grid),
            dem_ids=[s.id for s in job.dem_scenes],
            sar=(lambda when: _sar_layers(job, when)) if job.sar_scenes else None,
        )


def _tile_task(payload: dict[str, Any], output: Path) -> dict[str, Any]:
    return build_tile(payload["job"], payload["params"], output)


# -- the run -----------------------------------------------------------------------------------------------
def aoi_composite(settings: FetchSettings) -> bool:
    """Compositing is on in AOI mode unless ``composite`` was set explicitly (``--no-composite``)."""
    return settings.composite if "composite" in settings.model_fields_set else True


def run_fetch_aoi(settings: FetchSettings, progress: Callable[[TaskOutcome, int], None] | None = None) -> Any:
    """Fetch one chip per AOI tile for ``settings.year`` (see module docstring); a FetchResult."""
    from glacimap.fetch import fetch_params, finish_run, optical_sensors
    from glacimap.fetch.profiles import get_profile
    from glacimap.fetch.search import open_client, search_scenes, window_dates

    if settings.aoi is None:
        raise InvalidInputError("fetch --aoi needs an AOI (minlon,minlat,maxlon,maxlat)")
    if settings.backend != "stac":
        raise NotImplementedYetError(
            f"fetch --aoi with --backend {settings.backend} is not implemented yet; use --backend stac"
        )
    workspace = Workspace(settings.work)
    plan = plan_aoi(settings.aoi, settings.resolution, settings.aoi_tile)
    claim_workspace(plan, workspace, settings.overwrite)
    aoi_text = ",".join(f"{v:g}" for v in settings.aoi)
    log.info("AOI %s: %d tiles of %g m on %s", aoi_text, len(plan.tiles), plan.tile_size, plan.grid.crs)

    centre_lat = (settings.aoi[1] + settings.aoi[3]) / 2
    start, end = window_dates(settings.year, centre_lat, settings.window, settings.target_date, settings.days)
    target = settings.target_date or start + (end - start) / 2
    bbox = lonlat_bounds(plan.grid)
    profile = get_profile(settings.profile, settings.stac_url)
    client = open_client(profile)
    optical: list[Scene] = []
    sensors = optical_sensors(settings.sensors, settings.year)
    for sensor in sensors:
        optical += search_scenes(client, profile, sensor, bbox, start, end, settings.max_tile_cloud)
    if not optical:
        raise InvalidInputError(
            f"no {'/'.join(sensors)} scene at {profile.url} intersects the AOI {aoi_text} between {start} and {end} "
            f"(tile cloud <= {settings.max_tile_cloud:g} %); check the AOI, the year and the window"
        )
    dem = search_scenes(client, profile, "dem", bbox, start, end)
    if not dem:
        raise InvalidInputError(
            f"no DEM tiles ({profile.products['dem'].collection}) at {profile.url} cover the AOI {aoi_text}"
        )
    sar = search_scenes(client, profile, "s1", bbox, start, end) if "s1" in settings.sensors else []

    composite = aoi_composite(settings)
    jobs, unplanned = plan_tile_jobs(plan, optical, dem, sar, settings.candidates, settings.min_coverage, composite)
    params = replace(fetch_params(settings, target, profile.requester_pays), composite=composite)
    tasks = [
        Task(job.glacier_id, workspace.chip(settings.year, job.glacier_id), {"job": job, "params": params})
        for job in jobs
    ]
    return finish_run(tasks, _tile_task, unplanned, len(plan.tiles), workspace, settings, progress)


__all__ = [
    "AOI_FILE",
    "MAX_TILES",
    "AoiPlan",
    "AoiTile",
    "aoi_composite",
    "assemble_tile",
    "build_tile",
    "claim_workspace",
    "load_aoi",
    "plan_aoi",
    "plan_tile_jobs",
    "rank_tile_candidates",
    "run_fetch_aoi",
    "score_tile",
    "tile_id",
]
