"""``glacimap outlines``: glacier outlines and 95 % confidence bands from prediction rasters.

Vector rules (each tested in tests/test_outlines.py):

- glacier pixels are ``probability >= threshold`` on valid (non-NaN) pixels, polygonised with
  8-connectivity (diagonal neighbours belong to one polygon);
- attribution: each glacier keeps only ice inside its *territory*. ``inventory``: its reference
  outline; ``territory``: the outline buffered by ``territory_buffer`` metres, pixels claimed by
  several glaciers going to the nearest outline; ``none``: wall-to-wall over an AOI, where
  connected ice is split into glaciers along Kienholz divides (:mod:`glacimap.wall`);
- polygons below ``min_area`` km2 are dropped and holes (nunataks) below it are filled;
- outlines are simplified by ``simplify`` metres as one polygon *coverage*
  (``shapely.coverage_simplify``), so neighbours keep one shared border, with no gap or overlap;
- areas are computed on the local UTM grid, in km2; geometries are written in EPSG:4326;
- with ``split_divides``, a ``divides`` layer holds the ice divides between glaciers of a
  complex: in inventory and territory modes every pixel belongs to one reference glacier, so
  the divides are the reference divides, kept across years;
- the confidence band is the set of pixels whose calibrated confidence is below 0.95;
  ``area_low_km2`` counts the confident ice only and ``area_high_km2`` adds the band's pixels
  outside the outline, so ``area_low <= area <= area_high``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.features import rasterize, shapes
from scipy.ndimage import distance_transform_edt

from glacimap.errors import InputNotFoundError, OutputExistsError
from glacimap.rasters import Grid, read_raster
from glacimap.settings import OutlinesSettings
from glacimap.vectors import write_layers
from glacimap.workspace import Workspace

log = logging.getLogger(__name__)

CONFIDENCE_LEVEL = 0.95
OUTLINE_COLUMNS = (
    "glacier_id", "year", "date", "sensor", "scene_ids", "area_km2", "area_low_km2", "area_high_km2",
    "mean_confidence", "valid_fraction", "cloud_fraction", "complex_id", "method",
)


@dataclass(frozen=True)
class OutlinesResult:
    year: int
    glaciers: int
    mapped: int
    total_area_km2: float
    path: Path


# -- pixel-level rules -------------------------------------------------------------------------
def territory_mask(
    own: shapely.Geometry,
    neighbours: list[tuple[str, shapely.Geometry]],
    grid: Grid,
    buffer: float,
    restrict: str,
    own_id: str = "",
) -> np.ndarray:
    """Pixels of ``grid`` that belong to the glacier ``own`` (see module docstring).

    In ``territory`` mode a pixel within ``buffer`` of several outlines goes to the nearest;
    an exact tie goes to the smaller glacier id, so territories never overlap.
    """
    if restrict == "inventory":
        return _burn(own, grid)
    own_distance = _distance(own, grid)
    mask = own_distance <= buffer
    for other_id, other in neighbours:
        other_distance = _distance(other, grid)
        mask &= (own_distance < other_distance) | ((own_distance == other_distance) & (own_id < other_id))
    return mask


def _burn(geometry: shapely.Geometry, grid: Grid) -> np.ndarray:
    if geometry.is_empty:
        return np.zeros(grid.shape, dtype=bool)
    return rasterize([(geometry, 1)], out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8").astype(bool)


def _distance(geometry: shapely.Geometry, grid: Grid) -> np.ndarray:
    """Distance in metres from each pixel centre to the geometry's pixels (0 inside)."""
    inside = _burn(geometry, grid)
    if not inside.any():
        return np.full(grid.shape, np.inf)
    return distance_transform_edt(~inside) * grid.resolution


def polygonise(mask: np.ndarray, grid: Grid) -> list[shapely.Polygon]:
    """Polygons of the True pixels of ``mask`` with 8-connectivity, in the grid's CRS."""
    if not mask.any():
        return []
    return [
        shapely.geometry.shape(geom)
        for geom, value in shapes(mask.astype("uint8"), mask=mask, transform=grid.transform, connectivity=8)
        if value == 1
    ]


def clean_polygons(polygons: list[shapely.Polygon], min_area_m2: float) -> shapely.Geometry:
    """Drop parts smaller than ``min_area_m2``, fill holes smaller than it, union the rest."""
    kept = []
    for polygon in polygons:
        for part in getattr(polygon, "geoms", [polygon]):
            part = shapely.make_valid(part)
            for piece in getattr(part, "geoms", [part]):
                if piece.geom_type != "Polygon" or piece.area < min_area_m2:
                    continue
                holes = [ring for ring in piece.interiors if shapely.Polygon(ring).area >= min_area_m2]
                kept.append(shapely.Polygon(piece.exterior, holes))
    if not kept:
        return shapely.MultiPolygon()
    return shapely.union_all(kept)


def simplify_coverage(geometries: gpd.GeoSeries, tolerance: float) -> gpd.GeoSeries:
    """Simplify non-overlapping polygons together so shared borders stay shared."""
    if tolerance <= 0 or geometries.empty:
        return geometries
    simplified = shapely.coverage_simplify(geometries.values, tolerance)
    return gpd.GeoSeries(shapely.make_valid(simplified), index=geometries.index, crs=geometries.crs)


def complexes(geometries: gpd.GeoSeries) -> list[int]:
    """Connected components of touching geometries (a glacier complex id per row)."""
    n = len(geometries)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tree = shapely.STRtree(geometries.values)
    left, right = tree.query(geometries.values, predicate="intersects")
    for a, b in zip(left, right):
        if a != b:
            parent[find(a)] = find(b)
    roots = [find(i) for i in range(n)]
    labels = {root: k for k, root in enumerate(dict.fromkeys(roots), start=1)}
    return [labels[r] for r in roots]


def shared_borders(outlines: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Lines where two outlines of the same complex touch (the ice divides between them)."""
    rows = []
    geoms = outlines.geometry.values
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    for a, b in zip(left, right):
        if a >= b:
            continue
        line = shapely.line_merge(shapely.intersection(geoms[a].boundary, geoms[b].boundary))
        if line.is_empty or line.length == 0:
            continue
        rows.append({
            "glacier_id_1": outlines["glacier_id"].iloc[a],
            "glacier_id_2": outlines["glacier_id"].iloc[b],
            "complex_id": outlines["complex_id"].iloc[a],
            "length_m": float(line.length),
            "geometry": line,
        })
    columns = ["glacier_id_1", "glacier_id_2", "complex_id", "length_m", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=outlines.crs)


# -- one glacier ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GlacierPixels:
    """The mapped pixels of one glacier, on its prediction grid."""

    glacier_id: str
    grid: Grid
    ice: np.ndarray
    band: np.ndarray  # confidence below the level, inside the territory
    territory: np.ndarray
    valid: np.ndarray
    confidence: np.ndarray


def glacier_pixels(
    glacier_id: str,
    probability: np.ndarray,
    confidence: np.ndarray,
    grid: Grid,
    own: shapely.Geometry,
    neighbours: list[tuple[str, shapely.Geometry]],
    settings: OutlinesSettings,
) -> GlacierPixels:
    """Apply threshold, validity and territory to one glacier's prediction."""
    valid = np.isfinite(probability)
    territory = territory_mask(own, neighbours, grid, settings.territory_buffer, settings.restrict, glacier_id)
    ice = valid & territory & (np.nan_to_num(probability) >= settings.threshold)
    band = valid & territory & (np.nan_to_num(confidence, nan=0.0) < settings.confidence_level)
    return GlacierPixels(glacier_id, grid, ice, band, territory, valid, confidence)


def outline_row(pixels: GlacierPixels, settings: OutlinesSettings) -> dict[str, Any]:
    """Geometry (local UTM) and area attributes of one glacier."""
    pixel_km2 = pixels.grid.resolution**2 / 1e6
    geometry = clean_polygons(polygonise(pixels.ice, pixels.grid), settings.min_area * 1e6)
    kept = _burn(geometry, pixels.grid) & pixels.ice if not geometry.is_empty else np.zeros_like(pixels.ice)
    uncertain_ice = kept & pixels.band
    band_outside = pixels.band & ~kept
    confident = pixels.confidence[kept]
    return {
        "glacier_id": pixels.glacier_id,
        "geometry": geometry,
        "uncertain_ice_km2": float(uncertain_ice.sum() * pixel_km2),
        "band_outside_km2": float(band_outside.sum() * pixel_km2),
        "mean_confidence": float(np.nanmean(confident)) if confident.size else float("nan"),
        "valid_fraction": float(pixels.valid[pixels.territory].mean()) if pixels.territory.any() else 0.0,
    }


# -- the stage -----------------------------------------------------------------------------------
def run_outlines(settings: OutlinesSettings) -> OutlinesResult:
    """Build ``outlines/{year}.gpkg`` from the year's predictions (see module docstring)."""
    if settings.restrict == "none":
        from glacimap.wall import run_outlines_wall

        return run_outlines_wall(settings)
    workspace = Workspace(settings.work)
    target = workspace.outlines(settings.year)
    if target.exists() and not settings.overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")
    if not workspace.inventory.exists():
        raise InputNotFoundError(f"{workspace.inventory}: no inventory; run glacimap fetch first")
    from glacimap.fetch import read_manifest
    from glacimap.inventory import load_inventory

    inventory = load_inventory(workspace.inventory)
    manifest = read_manifest(workspace, settings.year).set_index("glacier_id")
    rows, bands = [], []
    for glacier in inventory.itertuples():
        path = workspace.prediction(settings.year, glacier.glacier_id)
        if not path.exists():
            log.info("%s: no prediction for %s", glacier.glacier_id, settings.year)
            continue
        rows_, band_ = _one_glacier(path, glacier, inventory, settings)
        rows.append(rows_)
        bands.append(band_)
    if not rows:
        raise InputNotFoundError(f"{workspace.predictions_dir(settings.year)}: no predictions; run glacimap predict first")
    outlines = _assemble(rows, manifest, settings)
    band_frame = gpd.GeoDataFrame(pd.concat(bands, ignore_index=True), crs="EPSG:4326")
    layers = {"outlines": outlines, "confidence_band": band_frame}
    if settings.split_divides:
        # Glaciers keep their reference divides (each pixel is attributed to one reference
        # glacier), so the divides are the borders shared by glaciers of one complex.
        layers["divides"] = shared_borders(outlines.to_crs(outlines.estimate_utm_crs())).to_crs("EPSG:4326")
    write_layers(target, layers, overwrite=settings.overwrite)
    mapped = outlines[~outlines.geometry.is_empty]
    return OutlinesResult(settings.year, len(inventory), len(mapped), float(mapped["area_km2"].sum()), target)


def _one_glacier(path: Path, glacier: Any, inventory: gpd.GeoDataFrame, settings: OutlinesSettings) -> tuple[dict, gpd.GeoDataFrame]:
    data, grid, _, _ = read_raster(path, ["probability", "confidence"])
    to_grid = inventory.to_crs(grid.crs)
    own = to_grid.geometry.iloc[glacier.Index]
    reach = own.buffer(settings.territory_buffer * 2 + grid.resolution)
    neighbours = [
        (gid, geom)
        for i, (gid, geom) in enumerate(zip(to_grid["glacier_id"], to_grid.geometry))
        if i != glacier.Index and geom.intersects(reach)
    ]
    pixels = glacier_pixels(glacier.glacier_id, data[0], data[1], grid, own, neighbours, settings)
    row = outline_row(pixels, settings)
    row["crs"] = grid.crs
    band = clean_polygons(polygonise(pixels.band, grid), 0.0)
    band_frame = gpd.GeoDataFrame(
        {"glacier_id": [glacier.glacier_id], "year": [settings.year]}, geometry=[band], crs=grid.crs
    ).to_crs("EPSG:4326")
    return row, band_frame


def _assemble(rows: list[dict], manifest: pd.DataFrame, settings: OutlinesSettings) -> gpd.GeoDataFrame:
    """Simplify per CRS as coverages, compute areas, attach metadata, reproject to EPSG:4326."""
    frames = []
    for crs, group in pd.DataFrame(rows).groupby("crs"):
        frame = gpd.GeoDataFrame(group.drop(columns="crs"), geometry="geometry", crs=crs)
        frame["geometry"] = simplify_coverage(frame.geometry, settings.simplify)
        frame["area_km2"] = frame.geometry.area / 1e6
        frames.append(frame.to_crs("EPSG:4326"))
    out = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    out["area_low_km2"] = (out["area_km2"] - out.pop("uncertain_ice_km2")).clip(lower=0.0)
    out["area_high_km2"] = out["area_km2"] + out.pop("band_outside_km2")
    out["year"] = settings.year
    meta = manifest.reindex(out["glacier_id"])
    out["date"] = meta["date"].values
    out["sensor"] = meta["sensor"].values
    out["scene_ids"] = meta["scene_ids"].values
    out["cloud_fraction"] = meta["cloud_fraction"].values
    out["method"] = f"threshold {settings.threshold}; restrict {settings.restrict}"
    mapped = ~out.geometry.is_empty
    out["complex_id"] = None
    if mapped.any():
        utm = out[mapped].to_crs(out[mapped].estimate_utm_crs())
        out.loc[mapped, "complex_id"] = [f"CPX-{k:05d}" for k in complexes(utm.geometry)]
    return out[[*OUTLINE_COLUMNS, "geometry"]]
