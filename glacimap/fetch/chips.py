"""Per-glacier work: score candidate scenes over the glacier, choose one, write the chip.

Everything here runs inside one task (possibly on a dask worker) and receives plain data: a
:class:`~glacimap.fetch.plan.GlacierJob` and :class:`FetchParams`. The chip is a COG on the
glacier's local UTM grid with bands :data:`CHIP_BANDS` (+ SAR bands, + ``source`` when
compositing) and carries its selection record as a JSON tag, so a resumed run can rebuild the
manifest from finished chips without reading any remote data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize

from glacimap.errors import InvalidInputError
from glacimap.features import ndsi, slope_degrees
from glacimap.fetch.harmonise import (
    is_slc_off,
    landsat_reflectance,
    qa_pixel_masks,
    s2_offset,
    s2_reflectance,
    scl_masks,
    to_db,
)
from glacimap.fetch.plan import CandidateScore, GlacierJob, Scene
from glacimap.fetch.profiles import OPTICAL_BANDS
from glacimap.fetch.read import gdal_env, read_to_grid
from glacimap.fetch.select import candidate_score, rank_candidates
from glacimap.rasters import RESAMPLING, Grid, fill_voids, utm_crs, write_cog

log = logging.getLogger(__name__)

CHIP_BANDS: tuple[str, ...] = (*OPTICAL_BANDS, "elevation", "slope")
SAR_BANDS: tuple[str, ...] = ("vv_asc", "vv_desc", "vh_asc", "vh_desc")
SELECTION_TAG = "glacimap_selection"
#: Resolution of the cloud and snow scoring per sensor: the cloud mask's native resolution.
SCORE_RESOLUTION = {"s2": 20.0, "landsat": 30.0}
COMPOSITE_DEPTH = 3
#: Largest share of a glacier's pixels without DEM data that is filled rather than failed.
MAX_DEM_VOID = 0.05


@dataclass(frozen=True)
class FetchParams:
    """The settings a fetch task needs, as plain values."""

    buffer: float
    min_coverage: float
    max_cloud: float
    target: date
    composite: bool = False
    requester_pays: bool = False
    resolution: float = 10.0


def glacier_grid(geometry_4326: shapely.Geometry, resolution: float, margin: float) -> tuple[Grid, shapely.Geometry]:
    """The chip grid of a glacier (local UTM zone, snapped) and its outline in that CRS."""
    centre = geometry_4326.centroid
    crs = utm_crs(centre.x, centre.y)
    projected = project(geometry_4326, "EPSG:4326", crs)
    return Grid.from_bounds(projected.bounds, crs, resolution, margin), projected


def project(geometry: shapely.Geometry, src: str, dst: str) -> shapely.Geometry:
    """Reproject a shapely geometry."""
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def rasterize_mask(geometry: shapely.Geometry, grid: Grid) -> np.ndarray:
    if geometry.is_empty:
        return np.zeros(grid.shape, dtype=bool)
    return rasterize([(geometry, 1)], out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8").astype(bool)


def _score_grid(outline: shapely.Geometry, grid: Grid, buffer: float, sensor: str) -> Grid:
    resolution = SCORE_RESOLUTION.get(sensor, grid.resolution)
    return Grid.from_bounds(outline.buffer(buffer).bounds, grid.crs, resolution)


def _first_valid(layers: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic (values, valid) layers: each pixel from the first layer with valid data.

    ``layers`` is consumed lazily and no further layer is read once every pixel is valid, so
    the other tiles of a mosaic are not downloaded when the first covers the grid.
    """
    values: np.ndarray | None = None
    valid: np.ndarray | None = None
    for more, more_valid in layers:
        if values is None:
            values, valid = more.copy(), more_valid.copy()
        else:
            take = ~valid & more_valid
            values[..., take] = more[..., take]
            valid |= take
        if valid.all():
            break
    if values is None:
        raise InvalidInputError("a mosaic needs at least one tile")
    return values, valid


def scene_masks(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(valid data, cloud) masks of a scene (or of a same-day mosaic's tiles) on ``grid``."""
    cloud, valid = _first_valid((c, v) for v, c in (_tile_masks(tile, grid) for tile in scene.parts))
    return valid, cloud & valid


def _tile_masks(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    if scene.sensor == "s2":
        return scl_masks(read_to_grid(scene.hrefs["scl"], grid, "nearest", dtype="uint8"))
    if scene.sensor == "landsat":
        valid, cloud = qa_pixel_masks(read_to_grid(scene.hrefs["qa_pixel"], grid, "nearest", dtype="uint16"))
        if is_slc_off(scene.platform, scene.datetime.date()):
            footprint = rasterize_mask(project(shapely.from_wkb(scene.footprint_wkb), "EPSG:4326", grid.crs), grid)
            gaps = footprint & ~valid  # scan-line gaps count like cloud
            return valid | gaps, cloud | gaps
        return valid, cloud
    raise InvalidInputError(f"scene {scene.id}: no cloud mask for sensor {scene.sensor}")


def reflectance(scene: Scene, band: str, grid: Grid) -> np.ndarray:
    """Harmonised float32 reflectance (0-1, NaN for no data) of one band on ``grid``."""
    layers = (_tile_reflectance(tile, band, grid) for tile in scene.parts)
    values, _ = _first_valid((layer, np.isfinite(layer)) for layer in layers)
    return values


def _tile_reflectance(scene: Scene, band: str, grid: Grid) -> np.ndarray:
    if scene.sensor == "s2":
        dn = read_to_grid(scene.hrefs[band], grid, "nearest", dtype="uint16")
        offset = s2_offset(scene.properties.get("s2:processing_baseline"), scene.datetime.date())
        return s2_reflectance(dn, offset)
    if scene.sensor == "landsat":
        return landsat_reflectance(read_to_grid(scene.hrefs[band], grid, "nearest", dtype="uint16"))
    raise InvalidInputError(f"scene {scene.id}: {scene.sensor} has no optical band {band}")


def score_scene(scene: Scene, job: GlacierJob, outline: shapely.Geometry, params: FetchParams) -> CandidateScore:
    """Coverage, cloud fraction and snow indicator of one scene over glacier + buffer."""
    grid = _score_grid(outline, job.grid, params.buffer, scene.sensor)
    glacier = rasterize_mask(outline, grid)
    area = rasterize_mask(outline.buffer(params.buffer), grid)
    ring = area & ~glacier
    valid, cloud = scene_masks(scene, grid)
    n_area = int(area.sum())
    n_valid = int((valid & area).sum())
    coverage = n_valid / n_area if n_area else 0.0
    cloud_fraction = float((cloud & area).sum() / n_valid) if n_valid else 1.0
    snow = float("nan")
    clear_ring = ring & valid & ~cloud
    if clear_ring.any():
        index = ndsi(reflectance(scene, "green", grid), reflectance(scene, "swir16", grid))[clear_ring]
        if np.isfinite(index).any():
            snow = float(np.nanmean(index))
    return candidate_score(job.glacier_id, scene, scene.datetime.date(), coverage, cloud_fraction, snow,
                           params.target, params.min_coverage, params.max_cloud)


def _optical_layers(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    bands = np.stack([reflectance(scene, band, grid) for band in OPTICAL_BANDS])
    valid, cloud = scene_masks(scene, grid)
    usable = valid & ~cloud & np.isfinite(bands).all(axis=0)
    return bands, usable


def _mosaic(scenes: tuple[Scene, ...], band: str, grid: Grid, resampling: str) -> np.ndarray:
    out = np.full(grid.shape, np.nan, dtype=np.float32)
    for scene in scenes:
        missing = np.isnan(out)
        if not missing.any():
            break
        part = read_to_grid(scene.hrefs[band], grid, resampling)
        out[missing] = part[missing]
    return out


def mosaic_dem(scenes: tuple[Scene, ...], grid: Grid) -> np.ndarray:
    """Elevation on ``grid`` from DEM tiles, mosaicked on the tiles' own lattice first.

    Resampling each tile separately would leave a no-data seam along tile edges (bilinear
    needs neighbours from both tiles), so the tiles are copied pixel for pixel onto one grid in
    their CRS, and that mosaic is then resampled bilinearly onto the chip grid.
    """
    from affine import Affine
    from rasterio.warp import reproject, transform_bounds

    if not scenes:
        return np.full(grid.shape, np.nan, dtype=np.float32)
    with rasterio.open(scenes[0].hrefs["elevation"]) as src:
        crs, transform = src.crs, src.transform
    res_x, res_y = transform.a, -transform.e
    left, bottom, right, top = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=21)
    col0 = int(np.floor((left - transform.c) / res_x)) - 3
    col1 = int(np.ceil((right - transform.c) / res_x)) + 3
    row0 = int(np.floor((transform.f - top) / res_y)) - 3
    row1 = int(np.ceil((transform.f - bottom) / res_y)) + 3
    lattice = Grid(
        crs.to_string(),
        Affine(res_x, 0.0, transform.c + col0 * res_x, 0.0, -res_y, transform.f - row0 * res_y),
        row1 - row0,
        col1 - col0,
    )
    mosaic = _mosaic(scenes, "elevation", lattice, "nearest")
    out = np.full(grid.shape, np.nan, dtype=np.float32)
    reproject(
        source=mosaic, destination=out, src_transform=lattice.transform, src_crs=lattice.crs, src_nodata=np.nan,
        dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan, resampling=RESAMPLING["bilinear"],
    )
    return out


def _closest_sar(scenes: tuple[Scene, ...], when: date, orbit: str) -> Scene | None:
    options = [s for s in scenes if s.properties.get("sat:orbit_state", "").lower() == orbit]
    return min(options, key=lambda s: (abs((s.datetime.date() - when).days), s.id), default=None)


def _sar_layers(job: GlacierJob, when: date) -> tuple[list[np.ndarray], list[str]]:
    layers, ids = [], []
    for orbit, suffix in (("ascending", "asc"), ("descending", "desc")):
        scene = _closest_sar(job.sar_scenes, when, orbit)
        for pol in ("vv", "vh"):
            if scene is None:
                layers.append(np.full(job.grid.shape, np.nan, dtype=np.float32))
                continue
            values = read_to_grid(scene.hrefs[pol], job.grid, "bilinear")
            # Backscatter in dB is mostly negative; linear sigma0 is positive (then convert).
            if np.isfinite(values).any() and np.nanmedian(values) > 0:
                values = to_db(values)
            layers.append(values)
        if scene is not None:
            ids.append(scene.id)
    order = [0, 2, 1, 3]  # vv_asc, vv_desc, vh_asc, vh_desc
    return [layers[i] for i in order], ids


def assemble_chip(
    job: GlacierJob,
    params: FetchParams,
    output: Path,
    outline: shapely.Geometry,
    scores: list[CandidateScore],
    optical: Callable[[Scene], tuple[np.ndarray, np.ndarray]],
    elevation: Callable[[], np.ndarray],
    dem_ids: list[str],
    sar: Callable[[date], tuple[list[np.ndarray], list[str]]] | None = None,
) -> dict[str, Any]:
    """Choose among scored candidates, stack the chip's layers and write it (any backend).

    Returns the selection record; when no candidate is eligible the record has status
    ``no_valid_data`` and its reason, and no chip is written (a later run tries again).

    ``optical(scene)`` returns (6 harmonised bands, usable mask) on the chip grid,
    ``elevation()`` the DEM on it, ``sar(date)`` the SAR layers closest to a date.
    """
    grid = job.grid
    ranked = rank_candidates(scores)
    if not ranked:  # recorded with every candidate's scores; no chip is written
        reasons = "; ".join(f"{s.scene_id}: {s.rejected}" for s in scores) or "no candidate scenes"
        return {
            "glacier_id": job.glacier_id,
            "status": "no_valid_data",
            "reason": f"no usable scene ({reasons})",
            "candidates": [asdict(s) | {"rank": None} for s in scores],
        }
    by_id = {scene.id: scene for scene in job.candidates}
    chosen = [by_id[s.scene_id] for s in ranked[: COMPOSITE_DEPTH if params.composite else 1]]

    bands, usable = optical(chosen[0])
    source = np.where(usable, 1, 0).astype(np.float32)
    for rank, scene in enumerate(chosen[1:], start=2):
        if usable.all():
            break
        more, more_usable = optical(scene)
        fill = ~usable & more_usable
        bands[:, fill] = more[:, fill]
        source[fill] = rank
        usable |= fill

    dem = elevation()
    glacier_pixels = rasterize_mask(outline, grid)
    missing = float(np.isnan(dem[glacier_pixels]).mean()) if glacier_pixels.any() else 1.0
    if missing > MAX_DEM_VOID:
        raise InvalidInputError(
            f"glacier {job.glacier_id}: the DEM covers only {1 - missing:.1%} of the glacier "
            f"(needs {1 - MAX_DEM_VOID:.0%}); DEM: {dem_ids}"
        )
    layers, names, sar_ids, dem_filled = chip_layers(
        bands, dem, grid, sar, chosen[0].datetime.date(), source if params.composite else None, usable)

    best = ranked[0]
    record = {
        "glacier_id": job.glacier_id,
        "status": "ok",
        "reason": None,
        "sensor": chosen[0].sensor,
        "platform": chosen[0].platform,
        "scene_ids": [s.id for s in chosen] if params.composite else [chosen[0].id],
        "date": chosen[0].date_text,
        "cloud_fraction": best.cloud_fraction,
        "coverage": best.coverage,
        "snow_index": best.snow_index,
        "tile_cloud": best.tile_cloud,
        "valid_fraction": round(float(usable[glacier_pixels].mean()) if glacier_pixels.any() else 0.0, 4),
        "dem_filled_fraction": round(dem_filled, 4),
        "sar_scene_ids": sar_ids,
        "dem_scene_ids": dem_ids,
        "candidates": [asdict(s) | {"rank": rank_of(s, ranked)} for s in scores],
    }
    return write_chip(output, layers, names, grid, record)


def chip_layers(
    bands: list[np.ndarray],
    dem: np.ndarray,
    grid: Grid,
    sar: Callable[[date], tuple[list[np.ndarray], list[str]]] | None,
    when: date,
    source: np.ndarray | None,
    valid: np.ndarray,
) -> tuple[list[np.ndarray], list[str], list[str], float]:
    """A chip's layers and band names in the documented order: optical bands, DEM (voids
    filled), slope, SAR (optional, the acquisitions nearest ``when``), ``source`` (composites
    only) and ``valid``; also the SAR scene ids and the share of DEM cells that were filled."""
    dem_filled = float(np.isnan(dem).mean())
    dem = fill_voids(dem)
    layers = [*bands, dem, slope_degrees(dem, grid.resolution)]
    names = list(CHIP_BANDS)
    sar_ids: list[str] = []
    if sar is not None:
        sar_layers, sar_ids = sar(when)
        layers += sar_layers
        names += list(SAR_BANDS)
    if source is not None:
        layers.append(source)
        names.append("source")
    layers.append(valid.astype(np.float32))
    names.append("valid")
    return layers, names, sar_ids, dem_filled


def write_chip(output: Path, layers: list[np.ndarray], names: list[str], grid: Grid, record: dict[str, Any]) -> dict[str, Any]:
    """Write a chip COG (float32, NaN no data) with its selection record as a tag; the record."""
    write_cog(
        output,
        np.stack(layers).astype(np.float32),
        grid,
        names,
        nodata=float("nan"),
        tags={SELECTION_TAG: json.dumps(record, default=json_default)},
    )
    return record


def build_chip(job: GlacierJob, params: FetchParams, output: Path) -> dict[str, Any]:
    """Score the candidates (STAC backend), choose, read and write the chip; return its record."""
    with gdal_env(params.requester_pays):
        grid = job.grid
        outline = project(shapely.from_wkb(job.geometry_wkb), "EPSG:4326", grid.crs)
        scores = [score_scene(scene, job, outline, params) for scene in job.candidates]
        return assemble_chip(
            job, params, output, outline, scores,
            optical=lambda scene: _optical_layers(scene, grid),
            elevation=lambda: mosaic_dem(job.dem_scenes, grid),
            dem_ids=[s.id for s in job.dem_scenes],
            sar=(lambda when: _sar_layers(job, when)) if job.sar_scenes else None,
        )


def rank_of(score: CandidateScore, ranked: list[CandidateScore]) -> int | None:
    for index, other in enumerate(ranked, start=1):
        if other.scene_id == score.scene_id:
            return index
    return None


def json_default(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_selection(chip: Path) -> dict[str, Any]:
    """The selection record stored in a finished chip."""
    with rasterio.open(chip) as src:
        text = src.tags().get(SELECTION_TAG)
    if text is None:
        raise InvalidInputError(f"{chip}: not a glacimap chip (no {SELECTION_TAG} tag)")
    return json.loads(text)
