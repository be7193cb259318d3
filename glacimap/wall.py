"""``glacimap outlines --restrict none``: wall-to-wall glacier outlines over an AOI.

The prediction tiles of a workspace fetched with ``glacimap fetch --aoi`` share one grid
(``W/aoi.json``) and do not overlap, so they are placed into one mosaic by plain copying. Ice
is ``probability >= threshold`` on valid pixels; connected ice (8-connectivity, across tile
borders) is one *complex*. Complexes are polygonised and cleaned with the vector rules of the
inventory mode (:mod:`glacimap.outlines`: parts and holes under ``min_area`` dropped / filled),
then always split into glaciers with the Kienholz et al. (2013) method
(:func:`glacimap.divides.split_complexes`) on the chips' DEM band, mosaicked the same way:
there are no reference divides to keep. The ``divides`` layer holds the borders shared by
glaciers of one complex.

New glacier ids follow the GLIMS convention, ``G{east:06d}E{north:05d}{N|S}`` from a
representative point of the glacier in thousandths of a degree, longitude east in 0-360
(:func:`glims_id`); complexes are ``CPX-`` + the GLIMS id of their own point. Ids that collide
(two glaciers within about 100 m) get ``-2``, ``-3``... in order of decreasing area.

Per glacier, ``area_low_km2`` / ``area_high_km2`` follow the inventory mode: the glacier's
*territory* is its pixels plus the pixels nearer to it than to any other glacier within
``territory_buffer`` metres; ``area_low`` removes its ice inside the confidence band,
``area_high`` adds band pixels of its territory outside the outline. ``date``, ``sensor`` and
``scene_ids`` name the scenes that supplied the glacier's pixels (the chips' ``source`` band),
most pixels first, joined with commas; ``cloud_fraction`` is the pixel-weighted mean of the
cloud fraction of the tiles it lies in.

Memory: the mosaic (16 bytes per pixel of the AOI grid) and the working rasters (about 40
more, measured) take about 60 bytes per pixel: 1 GB holds about 1,700 km2 at 10 m.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.features import rasterize, shapes
from scipy import ndimage

from glacimap.divides import KienholzParams, split_complexes
from glacimap.errors import InputNotFoundError, InvalidInputError, OutputExistsError
from glacimap.fetch.aoi import AoiPlan, load_aoi
from glacimap.fetch.chips import read_selection
from glacimap.outlines import (
    OUTLINE_COLUMNS,
    OutlinesResult,
    clean_polygons,
    polygonise,
    shared_borders,
    simplify_coverage,
)
from glacimap.rasters import Grid, read_raster, same_crs
from glacimap.settings import OutlinesSettings
from glacimap.vectors import write_layers
from glacimap.workspace import Workspace

log = logging.getLogger(__name__)

_EIGHT = np.ones((3, 3), dtype=bool)


# -- ids -----------------------------------------------------------------------------------------
def glims_id(lon: float, lat: float) -> str:
    """GLIMS-style id of a point: ``G010787E46840N`` for 10.787 E, 46.840 N.

    Longitude is written east in 0-360 (``G213692E60431N`` for 146.308 W), latitude with its
    hemisphere letter, both in thousandths of a degree.
    """
    east = round((lon % 360.0) * 1000) % 360_000
    north = round(abs(lat) * 1000)
    return f"G{east:06d}E{north:05d}{'N' if lat >= 0 else 'S'}"


def representative_point(geometry: shapely.Geometry) -> shapely.Point:
    """The centroid when it lies on the geometry, else a point on its surface."""
    centroid = geometry.centroid
    return centroid if geometry.contains(centroid) else geometry.point_on_surface()


def glims_ids(geometries: Sequence[shapely.Geometry], crs: str, prefix: str = "") -> list[str]:
    """Deterministic GLIMS-style ids of geometries in ``crs``; collisions get ``-2``, ``-3``...

    Among geometries sharing an id, the largest keeps it (ties: the point's coordinates).
    """
    points = [representative_point(g) for g in geometries]
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    base = [prefix + glims_id(*to_lonlat.transform(p.x, p.y)) for p in points]
    order = sorted(range(len(base)), key=lambda i: (base[i], -geometries[i].area, points[i].x, points[i].y))
    ids = list(base)
    seen: dict[str, int] = {}
    for i in order:
        count = seen.get(base[i], 0) + 1
        seen[base[i]] = count
        ids[i] = base[i] if count == 1 else f"{base[i]}-{count}"
    return ids


# -- the mosaic ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneSlot:
    """One scene of one tile: what a pixel's ``origin`` points to."""

    tile_id: str
    scene_id: str
    date: str
    sensor: str
    cloud_fraction: float  # of the tile's chip


@dataclass
class WallMosaic:
    """The year's prediction tiles placed on the AOI grid."""

    grid: Grid
    probability: np.ndarray  # float32, NaN where no valid prediction
    confidence: np.ndarray  # float32, NaN where no valid prediction
    elevation: np.ndarray  # float32, NaN where no chip
    origin: np.ndarray  # int32 index into ``slots``, -1 where no scene was clear
    slots: list[SceneSlot]


def empty_mosaic(grid: Grid) -> WallMosaic:
    """A mosaic with no data, to place tiles into."""
    nan = np.full(grid.shape, np.nan, dtype=np.float32)
    return WallMosaic(grid, nan, nan.copy(), nan.copy(), np.full(grid.shape, -1, dtype=np.int32), [])


def place_tile(
    mosaic: WallMosaic,
    window: tuple[slice, slice],
    probability: np.ndarray,
    confidence: np.ndarray,
    elevation: np.ndarray,
    source: np.ndarray,
    slots: Sequence[SceneSlot],
) -> None:
    """Copy one tile into the mosaic; ``source`` holds 1, 2... (the tile's ``slots``), 0 for none."""
    mosaic.probability[window] = probability
    mosaic.confidence[window] = confidence
    mosaic.elevation[window] = elevation
    first = len(mosaic.slots)
    code = np.nan_to_num(source, nan=0.0).astype(np.int32)
    code = np.where((code >= 1) & (code <= len(slots)), code - 1 + first, -1)
    mosaic.origin[window] = np.where(np.isfinite(probability), code, -1)
    mosaic.slots.extend(slots)


# -- compute ----------------------------------------------------------------------------------------
def ice_complexes(ice: np.ndarray, grid: Grid, min_area_m2: float) -> list[shapely.Geometry]:
    """Connected ice (8-connectivity) as cleaned polygons in ``grid``'s CRS, in raster order."""
    labels, count = ndimage.label(ice, structure=_EIGHT)
    if count == 0:
        return []
    cell = grid.resolution**2
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    out = []
    for k, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None or sizes[k] * cell < min_area_m2:
            continue
        rows, cols = window
        sub = Grid(
            grid.crs,
            grid.transform @ Affine.translation(cols.start, rows.start),
            rows.stop - rows.start,
            cols.stop - cols.start,
        )
        geometry = clean_polygons(polygonise(labels[window] == k, sub), min_area_m2)
        if not geometry.is_empty:
            out.append(geometry)
    return out


def _label_raster(geometries: Sequence[shapely.Geometry], grid: Grid) -> np.ndarray:
    if not geometries:
        return np.zeros(grid.shape, dtype=np.int32)
    pairs = [(g, k) for k, g in enumerate(geometries, start=1)]
    return rasterize(pairs, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="int32")


def territories(labels: np.ndarray, resolution: float, reach_m: float) -> np.ndarray:
    """Each pixel's nearest glacier label within ``reach_m`` metres (its own inside a glacier), else 0."""
    if not (labels > 0).any():
        return labels.copy()
    rows, cols = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    nearest = labels[rows, cols]
    grid_rows, grid_cols = np.indices(labels.shape, dtype=np.int32)
    squared = (grid_rows - rows).astype(np.float32) ** 2 + (grid_cols - cols).astype(np.float32) ** 2
    return np.where(squared * resolution**2 <= reach_m**2, nearest, 0).astype(np.int32)


def _scene_attributes(
    labels: np.ndarray, origin: np.ndarray, slots: Sequence[SceneSlot], n: int
) -> list[dict[str, Any]]:
    """Per glacier 1..n: date, sensor, scene_ids (most pixels first) and cloud_fraction."""
    inside = (labels > 0) & (origin >= 0)
    pairs = labels[inside].astype(np.int64) * (len(slots) + 1) + origin[inside]
    keys, counts = np.unique(pairs, return_counts=True)
    per_glacier: dict[int, list[tuple[int, int]]] = {}
    for key, count in zip(keys.tolist(), counts.tolist()):
        per_glacier.setdefault(key // (len(slots) + 1), []).append((count, key % (len(slots) + 1)))
    rows = []
    for k in range(1, n + 1):
        found = sorted(per_glacier.get(k, []), key=lambda item: (-item[0], item[1]))
        used = [(count, slots[s]) for count, s in found]
        tiles: dict[str, tuple[int, float]] = {}
        for count, slot in used:
            pixels, cloud = tiles.get(slot.tile_id, (0, slot.cloud_fraction))
            tiles[slot.tile_id] = (pixels + count, cloud)
        total = sum(p for p, _ in tiles.values())
        rows.append(
            {
                "date": ",".join(dict.fromkeys(s.date for _, s in used)) or None,
                "sensor": ",".join(dict.fromkeys(s.sensor for _, s in used)) or None,
                "scene_ids": ",".join(dict.fromkeys(s.scene_id for _, s in used)) or None,
                "cloud_fraction": sum(p * c for p, c in tiles.values()) / total if total else float("nan"),
            }
        )
    return rows


def wall_outlines(
    mosaic: WallMosaic, settings: OutlinesSettings, params: KienholzParams | None = None
) -> dict[str, gpd.GeoDataFrame]:
    """The ``outlines``, ``confidence_band`` and ``divides`` layers (EPSG:4326) of a mosaic."""
    grid = mosaic.grid
    valid = np.isfinite(mosaic.probability)
    ice = valid & (np.nan_to_num(mosaic.probability) >= settings.threshold)
    band = valid & (np.nan_to_num(mosaic.confidence, nan=0.0) < settings.confidence_level)
    complex_geoms = ice_complexes(ice, grid, settings.min_area * 1e6)
    if not complex_geoms:
        return _empty_layers()
    frame = gpd.GeoDataFrame(
        {"complex_id": [f"C{k:06d}" for k in range(1, len(complex_geoms) + 1)]}, geometry=complex_geoms, crs=grid.crs
    )
    glaciers = split_complexes(
        frame,
        mosaic.elevation,
        grid,
        params or KienholzParams(),
        id_column="complex_id",
        source="the DEM band of the AOI chips",
    )
    complex_names = dict(zip(frame["complex_id"], glims_ids(complex_geoms, grid.crs, prefix="CPX-")))
    glaciers["complex_id"] = glaciers["complex_id"].map(complex_names)
    glaciers["glacier_id"] = glims_ids(list(glaciers.geometry), grid.crs)
    glaciers = glaciers.sort_values("glacier_id", ignore_index=True)
    n = len(glaciers)

    labels = _label_raster(list(glaciers.geometry), grid)
    kept = (labels > 0) & ice
    territory = territories(labels, grid.resolution, settings.territory_buffer)
    pixel_km2 = grid.resolution**2 / 1e6

    def per_glacier(where: np.ndarray, owner: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(owner[where], weights=None if weights is None else weights[where], minlength=n + 1)[1:]

    kept_count = per_glacier(kept, labels)
    confidence_sum = per_glacier(kept, labels, np.nan_to_num(mosaic.confidence).astype(np.float64))
    territory_count = per_glacier(territory > 0, territory)
    out = gpd.GeoDataFrame(
        {
            "glacier_id": glaciers["glacier_id"],
            "complex_id": glaciers["complex_id"],
            "uncertain_ice_km2": per_glacier(kept & band, labels) * pixel_km2,
            "band_outside_km2": per_glacier(band & ~kept & (territory > 0), territory) * pixel_km2,
            "mean_confidence": np.where(kept_count > 0, confidence_sum / np.maximum(kept_count, 1), np.nan),
            "valid_fraction": np.where(
                territory_count > 0,
                per_glacier(valid & (territory > 0), territory) / np.maximum(territory_count, 1),
                0.0,
            ),
        },
        geometry=simplify_coverage(glaciers.geometry, settings.simplify),
        crs=grid.crs,
    )
    out["area_km2"] = out.geometry.area / 1e6
    out["area_low_km2"] = (out["area_km2"] - out.pop("uncertain_ice_km2")).clip(lower=0.0)
    out["area_high_km2"] = out["area_km2"] + out.pop("band_outside_km2")
    out["year"] = settings.year
    for column, values in pd.DataFrame(_scene_attributes(labels, mosaic.origin, mosaic.slots, n)).items():
        out[column] = values.values
    out["method"] = f"threshold {settings.threshold}; restrict none; kienholz split"
    divides = shared_borders(out).to_crs("EPSG:4326")
    band_frame = _band_polygons(np.where(band, territory, 0), grid, out["glacier_id"], settings.year)
    return {
        "outlines": out[[*OUTLINE_COLUMNS, "geometry"]].to_crs("EPSG:4326"),
        "confidence_band": band_frame,
        "divides": divides,
    }


def _band_polygons(owner: np.ndarray, grid: Grid, ids: pd.Series, year: int) -> gpd.GeoDataFrame:
    """One (possibly empty) confidence-band geometry per glacier, in EPSG:4326."""
    parts: dict[int, list[shapely.Geometry]] = {}
    if (owner > 0).any():
        for geom, value in shapes(owner.astype(np.int32), mask=owner > 0, transform=grid.transform, connectivity=8):
            parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    geometries = [shapely.union_all(parts[k]) if k in parts else shapely.MultiPolygon() for k in range(1, len(ids) + 1)]
    frame = gpd.GeoDataFrame({"glacier_id": list(ids), "year": year}, geometry=geometries, crs=grid.crs)
    return frame.to_crs("EPSG:4326")


def _empty_layers() -> dict[str, gpd.GeoDataFrame]:
    outlines = gpd.GeoDataFrame({c: [] for c in OUTLINE_COLUMNS}, geometry=[], crs="EPSG:4326")
    band = gpd.GeoDataFrame({"glacier_id": [], "year": []}, geometry=[], crs="EPSG:4326")
    divides = gpd.GeoDataFrame(
        {c: [] for c in ("glacier_id_1", "glacier_id_2", "complex_id", "length_m")}, geometry=[], crs="EPSG:4326"
    )
    return {"outlines": outlines, "confidence_band": band, "divides": divides}


# -- I/O ---------------------------------------------------------------------------------------------
def _tile_layers(chip: Path, prediction: Path, expected: Grid) -> tuple[np.ndarray, ...]:
    """(probability, confidence, elevation, source) of one tile, checked against its grid."""
    data, grid, _, _ = read_raster(prediction, ["probability", "confidence"])
    if (
        grid.shape != expected.shape
        or not grid.transform.almost_equals(expected.transform)
        or not same_crs(grid.crs, expected.crs)
    ):
        raise InvalidInputError(
            f"{prediction}: grid {grid.shape} at {tuple(grid.transform)[:6]} in {grid.crs} is not the tile's "
            f"{expected.shape} at {tuple(expected.transform)[:6]} in {expected.crs} (see aoi.json)"
        )
    with rasterio.open(chip) as src:
        names = [d or "" for d in src.descriptions]
    wanted = ["elevation", "source"] if "source" in names else ["elevation"]
    chip_data, chip_grid, _, _ = read_raster(chip, wanted)
    if chip_grid.shape != expected.shape:
        raise InvalidInputError(f"{chip}: shape {chip_grid.shape} is not the tile's {expected.shape} (see aoi.json)")
    probability = data[0].astype(np.float32)
    source = chip_data[1] if len(wanted) == 2 else np.where(np.isfinite(probability), 1.0, 0.0)
    return probability, data[1].astype(np.float32), chip_data[0].astype(np.float32), source


def read_mosaic(workspace: Workspace, year: int, plan: AoiPlan) -> WallMosaic:
    """Place every predicted tile of ``year`` listed as ``ok`` in the manifest on the AOI grid."""
    from glacimap.fetch import read_manifest

    manifest = read_manifest(workspace, year)
    ok = set(manifest.loc[manifest["status"] == "ok", "glacier_id"])
    mosaic = empty_mosaic(plan.grid)
    placed = 0
    for tile in plan.tiles:
        prediction = workspace.prediction(year, tile.id)
        if tile.id not in ok or not prediction.exists():
            if tile.id in ok:
                log.info("%s: no prediction for %s", tile.id, year)
            continue
        chip = workspace.chip(year, tile.id)
        record = read_selection(chip)
        probability, confidence, elevation, source = _tile_layers(chip, prediction, tile.grid)
        dates = record.get("scene_dates") or [record.get("date")] * len(record["scene_ids"])
        sensors = str(record.get("sensor") or "").split(",")
        slots = [
            SceneSlot(
                tile.id, scene, date, sensors[min(i, len(sensors) - 1)], float(record.get("cloud_fraction") or 0.0)
            )
            for i, (scene, date) in enumerate(zip(record["scene_ids"], dates))
        ]
        place_tile(mosaic, plan.window(tile), probability, confidence, elevation, source, slots)
        placed += 1
    if not placed:
        raise InputNotFoundError(
            f"{workspace.predictions_dir(year)}: no predicted AOI tiles; run glacimap predict --year {year} first"
        )
    log.info("placed %d of %d AOI tiles on a %d x %d grid", placed, len(plan.tiles), *plan.grid.shape)
    return mosaic


def territory_polygons(territory: np.ndarray, grid: Grid, n: int) -> list[shapely.Geometry]:
    """One (multi)polygon per label 1..n of a territory raster (empty where a label has no pixel)."""
    parts: dict[int, list[shapely.Geometry]] = {}
    for geom, value in shapes(territory.astype(np.int32), mask=territory > 0, transform=grid.transform, connectivity=8):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    return [shapely.union_all(parts[k]) if k in parts else shapely.Polygon() for k in range(1, n + 1)]


def outlines_on_reference(
    reference: gpd.GeoDataFrame,
    outlines: gpd.GeoDataFrame,
    band: gpd.GeoDataFrame,
    mosaic: WallMosaic,
    reach_m: float,
) -> gpd.GeoDataFrame:
    """Another year's wall-to-wall ice re-cut into the glaciers of ``reference`` (same ids).

    Wall-to-wall outlines get new ids every year, so two years cannot be matched by id.
    Instead each reference glacier keeps its *territory* (its pixels and those nearer to it
    than to any other reference glacier, within ``reach_m``) and takes the other year's ice
    (``outlines``, whatever its ids) and confidence band (``band``) that lie inside it; ice
    beyond every territory belongs to no reference glacier. ``valid_fraction`` and the scene
    columns come from that year's prediction ``mosaic`` over the territory, so a glacier that
    vanished under clear sky (area 0, valid) is told from one hidden by cloud.
    """
    grid = mosaic.grid
    ref = reference.to_crs(grid.crs).reset_index(drop=True)
    n = len(ref)
    labels = _label_raster(list(ref.geometry), grid)
    territory = territories(labels, grid.resolution, reach_m)
    cells = gpd.GeoDataFrame(
        {"glacier_id": ref["glacier_id"].astype(str)}, geometry=territory_polygons(territory, grid, n), crs=grid.crs
    )

    def inside(frame: gpd.GeoDataFrame) -> pd.Series:
        """Area (m2) of ``frame`` inside each territory, by reference id."""
        if frame.empty:
            return pd.Series(0.0, index=cells["glacier_id"])
        parts = gpd.overlay(frame[["geometry"]].to_crs(grid.crs), cells, how="intersection", keep_geom_type=True)
        areas = parts.geometry.area.groupby(parts["glacier_id"]).sum()
        return areas.reindex(cells["glacier_id"], fill_value=0.0)

    ice = gpd.GeoDataFrame(geometry=[shapely.union_all(outlines.to_crs(grid.crs).geometry.values)], crs=grid.crs)
    ice = ice[~ice.geometry.is_empty]
    band_union = shapely.union_all(band.to_crs(grid.crs).geometry.values) if len(band) else shapely.Polygon()
    pieces = (
        gpd.overlay(ice, cells, how="intersection", keep_geom_type=True).dissolve("glacier_id")
        if not ice.empty else gpd.GeoDataFrame(geometry=[], crs=grid.crs)
    )
    geometry = pieces.geometry.reindex(cells["glacier_id"])
    area = inside(ice)
    uncertain = inside(gpd.GeoDataFrame(geometry=[shapely.intersection(ice.geometry.iloc[0], band_union)], crs=grid.crs)
                       if not ice.empty else ice)
    outside = inside(gpd.GeoDataFrame(
        geometry=[shapely.difference(band_union, ice.geometry.iloc[0]) if not ice.empty else band_union], crs=grid.crs
    ))
    valid = np.isfinite(mosaic.probability)
    owned = np.bincount(territory.ravel(), minlength=n + 1)[1:]
    seen = np.bincount(territory[valid], minlength=n + 1)[1:]
    out = gpd.GeoDataFrame(
        {
            "glacier_id": cells["glacier_id"].values,
            "area_km2": area.values / 1e6,
            "area_low_km2": np.clip((area.values - uncertain.values) / 1e6, 0.0, None),
            "area_high_km2": (area.values + outside.values) / 1e6,
            "valid_fraction": np.where(owned > 0, seen / np.maximum(owned, 1), 0.0),
        },
        # an observed glacier with no ice left keeps an empty outline: "disappeared", not "missing"
        geometry=[g if isinstance(g, shapely.Geometry) else shapely.Polygon() for g in geometry.values],
        crs=grid.crs,
    )
    for column, values in pd.DataFrame(_scene_attributes(territory, mosaic.origin, mosaic.slots, n)).items():
        out[column] = values.values
    return out.to_crs(reference.crs)


def run_outlines_wall(settings: OutlinesSettings, params: KienholzParams | None = None) -> OutlinesResult:
    """Build ``outlines/{year}.gpkg`` from the year's AOI prediction tiles (see module docstring)."""
    workspace = Workspace(settings.work)
    target = workspace.outlines(settings.year)
    if target.exists() and not settings.overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")
    plan = load_aoi(workspace)
    if plan is None:
        raise InputNotFoundError(
            f"{workspace.root / 'aoi.json'}: no AOI; --restrict none works on a workspace fetched with "
            "glacimap fetch --aoi (use --restrict inventory or territory with an inventory)"
        )
    mosaic = read_mosaic(workspace, settings.year, plan)
    layers = wall_outlines(mosaic, settings, params)
    write_layers(target, layers, overwrite=settings.overwrite)
    outlines = layers["outlines"]
    return OutlinesResult(settings.year, len(outlines), len(outlines), float(outlines["area_km2"].sum()), target)


__all__ = [
    "SceneSlot",
    "WallMosaic",
    "empty_mosaic",
    "glims_id",
    "glims_ids",
    "ice_complexes",
    "outlines_on_reference",
    "place_tile",
    "read_mosaic",
    "representative_point",
    "run_outlines_wall",
    "territories",
    "territory_polygons",
    "wall_outlines",
]
