"""Truth products of a synthetic world: outlines, ice divides, the reference inventory, files.

Every vector here is traced from the label rasters of :class:`~glacimap.synthetic.model.Landscape`
along pixel edges, so outline areas equal pixel counts times the cell area and divides lie
exactly on the shared borders of two outlines.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from glacimap.errors import InvalidInputError
from glacimap.rasters import write_cog
from glacimap.synthetic.model import INVENTORY_YEAR, Landscape, YearTruth
from glacimap.synthetic.terrain import aspect_degrees, slope_degrees
from glacimap.vectors import write_layers
from glacimap.workspace import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

#: Columns of the outlines and divides layers.
OUTLINE_COLUMNS = ["glacier_id", "complex_id", "year", "area_km2"]
DIVIDE_COLUMNS = ["glacier_id_1", "glacier_id_2", "complex_id", "year", "length_m"]


def reference_year(landscape: Landscape) -> int:
    """Year of the reference inventory: :data:`INVENTORY_YEAR`, else the first truth year."""
    if not landscape.years:
        raise InvalidInputError("the landscape has no truth years")
    return INVENTORY_YEAR if INVENTORY_YEAR in landscape.years else min(landscape.years)


def _year(landscape: Landscape, year: int) -> YearTruth:
    if year not in landscape.years:
        raise InvalidInputError(f"no truth for year {year}; the world has {sorted(landscape.years)}")
    return landscape.years[year]


def glacier_polygons(labels: np.ndarray, landscape: Landscape) -> dict[int, MultiPolygon]:
    """One MultiPolygon per glacier index present in ``labels``, along pixel edges."""
    parts: dict[int, list[Polygon]] = defaultdict(list)
    raster = np.ascontiguousarray(labels, dtype=np.int32)
    for geom, value in rasterio.features.shapes(
        raster, mask=raster > 0, connectivity=4, transform=landscape.grid.transform
    ):
        parts[int(value)].append(shape(geom))
    out = {}
    for index, polys in sorted(parts.items()):
        merged = polys[0] if len(polys) == 1 else shapely.union_all(polys)
        out[index] = merged if isinstance(merged, MultiPolygon) else MultiPolygon([merged])
    return out


def truth_outlines(landscape: Landscape, year: int) -> gpd.GeoDataFrame:
    """Glacier outlines of ``year`` in the grid's CRS, one row per glacier present that year."""
    truth = _year(landscape, year)
    info = landscape.glacier_by_index()
    cell_km2 = landscape.grid.resolution**2 / 1e6
    counts = np.bincount(truth.glacier.ravel(), minlength=len(landscape.glaciers) + 1)
    rows = []
    geoms = []
    for index, geom in glacier_polygons(truth.glacier, landscape).items():
        glacier = info[index]
        rows.append((glacier.glacier_id, glacier.complex_id, year, float(counts[index]) * cell_km2))
        geoms.append(geom)
    frame = pd.DataFrame(rows, columns=OUTLINE_COLUMNS)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=landscape.grid.crs), crs=landscape.grid.crs)


def _border_segments(labels: np.ndarray, landscape: Landscape) -> tuple[np.ndarray, np.ndarray]:
    """Pixel edges between two different glaciers: (pairs (n, 2), segments (n, 2, 2))."""
    res = landscape.grid.resolution
    left, _, _, top = landscape.grid.bounds
    pairs = []
    segments = []
    # Left/right neighbours share a vertical edge, upper/lower neighbours a horizontal one.
    a, b = labels[:, :-1], labels[:, 1:]
    r, c = np.nonzero((a != b) & (a > 0) & (b > 0))
    x = left + (c + 1) * res
    pairs.append(np.stack((a[r, c], b[r, c]), axis=1))
    segments.append(np.stack((np.stack((x, top - r * res), 1), np.stack((x, top - (r + 1) * res), 1)), axis=1))
    a, b = labels[:-1, :], labels[1:, :]
    r, c = np.nonzero((a != b) & (a > 0) & (b > 0))
    y = top - (r + 1) * res
    pairs.append(np.stack((a[r, c], b[r, c]), axis=1))
    segments.append(np.stack((np.stack((left + c * res, y), 1), np.stack((left + (c + 1) * res, y), 1)), axis=1))
    pair = np.sort(np.concatenate(pairs), axis=1)
    return pair, np.concatenate(segments).astype(np.float64)


def truth_divides(landscape: Landscape, year: int) -> gpd.GeoDataFrame:
    """Ice divides of ``year``: the borders shared by two glaciers of the same complex."""
    truth = _year(landscape, year)
    info = landscape.glacier_by_index()
    pair, segments = _border_segments(truth.glacier, landscape)
    rows = []
    geoms = []
    if pair.size:
        key = pair[:, 0].astype(np.int64) * (len(landscape.glaciers) + 1) + pair[:, 1]
        order = np.argsort(key, kind="stable")
        key, pair, segments = key[order], pair[order], segments[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], key.size]):
            g1, g2 = info[int(pair[start, 0])], info[int(pair[start, 1])]
            if g1.complex_id != g2.complex_id:
                raise InvalidInputError(
                    f"year {year}: glaciers {g1.glacier_id} and {g2.glacier_id} touch but belong to "
                    f"complexes {g1.complex_id} and {g2.complex_id}"
                )
            line = shapely.line_merge(shapely.multilinestrings(shapely.linestrings(segments[start:stop])))
            rows.append((g1.glacier_id, g2.glacier_id, g1.complex_id, year, float(line.length)))
            geoms.append(line)
    frame = pd.DataFrame(rows, columns=DIVIDE_COLUMNS)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=landscape.grid.crs), crs=landscape.grid.crs)


def _circular_mean_deg(angles: np.ndarray) -> float:
    rad = np.radians(angles)
    return float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360.0)


def inventory(landscape: Landscape) -> gpd.GeoDataFrame:
    """The reference year's outlines as an RGI-like inventory in EPSG:4326.

    Attributes: glacier_id, RGIId (``RGI60-99.NNNNN``; region 99 marks it synthetic), name,
    area_km2, zmin, zmax, zmed, zmean (m), slope (mean, degrees), aspect (circular mean of the
    downslope direction, degrees from north), complex_id, cenlon, cenlat, year.
    """
    year = reference_year(landscape)
    outlines = truth_outlines(landscape, year)
    labels = landscape.years[year].glacier
    res = landscape.grid.resolution
    slope = slope_degrees(landscape.dem, res)
    aspect = aspect_degrees(landscape.dem, res)
    on = labels > 0
    idx = labels[on]
    order = np.argsort(idx, kind="stable")
    idx = idx[order]
    z, s, a = landscape.dem[on][order], slope[on][order], aspect[on][order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]]) if idx.size else np.empty(0, dtype=np.int64)
    stats = {}
    for start, stop in zip(starts, np.r_[starts[1:], idx.size]):
        zz = z[start:stop]
        stats[int(idx[start])] = (
            float(zz.min()),
            float(zz.max()),
            float(np.median(zz)),
            float(zz.mean()),
            float(s[start:stop].mean()),
            _circular_mean_deg(a[start:stop]),
        )
    by_id = {g.glacier_id: g.index for g in landscape.glaciers}
    index = [by_id[gid] for gid in outlines["glacier_id"]]
    columns = np.array([stats[i] for i in index]).reshape(len(index), 6)
    inv = outlines.to_crs("EPSG:4326")
    centres = inv.geometry.representative_point()
    out = gpd.GeoDataFrame(
        {
            "glacier_id": inv["glacier_id"],
            "RGIId": [f"RGI60-99.{i:05d}" for i in index],
            "name": [f"Synthetic glacier {i}" for i in index],
            "area_km2": inv["area_km2"],
            "zmin": columns[:, 0],
            "zmax": columns[:, 1],
            "zmed": columns[:, 2],
            "zmean": columns[:, 3],
            "slope": columns[:, 4],
            "aspect": columns[:, 5],
            "complex_id": inv["complex_id"],
            "cenlon": centres.x,
            "cenlat": centres.y,
            "year": year,
        },
        geometry=inv.geometry,
        crs="EPSG:4326",
    )
    return out


def glacier_table(landscape: Landscape) -> pd.DataFrame:
    """index, glacier_id, complex_id and the area (km2) of every glacier in every year."""
    cell_km2 = landscape.grid.resolution**2 / 1e6
    n = len(landscape.glaciers)
    table = pd.DataFrame(
        {
            "index": [g.index for g in landscape.glaciers],
            "glacier_id": [g.glacier_id for g in landscape.glaciers],
            "complex_id": [g.complex_id for g in landscape.glaciers],
        }
    )
    for year in sorted(landscape.years):
        counts = np.bincount(landscape.years[year].glacier.ravel(), minlength=n + 1)
        table[f"area_km2_{year}"] = [float(counts[g.index]) * cell_km2 for g in landscape.glaciers]
    return table


def write_truth(landscape: Landscape, out_dir: Path) -> dict[str, Path]:
    """Write every truth product of ``landscape`` under ``out_dir``; return name -> path.

    Layout: ``truth/dem.tif``; per year ``truth/{year}/glaciers.tif`` (int32 band
    ``glacier_index``, 0 off-glacier), ``truth/{year}/surface.tif`` (uint8 bands ``debris``,
    ``lake``), ``truth/{year}/outlines.gpkg`` (layers ``outlines``, ``divides``);
    ``truth/glaciers.csv``; ``truth/world.json`` (config, grid, ELAs);
    ``inventory_{year}.gpkg`` (layer ``inventory``). Every file is written atomically.
    """
    out_dir = Path(out_dir)
    grid = landscape.grid
    truth_dir = out_dir / "truth"
    written: dict[str, Path] = {}
    written["dem"] = write_cog(truth_dir / "dem.tif", landscape.dem.astype(np.float32), grid, ["elevation"])
    for year in sorted(landscape.years):
        truth = landscape.years[year]
        tags = {"year": str(year), "ela_m": f"{truth.ela:.1f}"}
        written[f"glaciers_{year}"] = write_cog(
            truth_dir / str(year) / "glaciers.tif", truth.glacier.astype(np.int32), grid, ["glacier_index"], tags=tags
        )
        surface = np.stack((truth.debris, truth.lakes)).astype(np.uint8)
        written[f"surface_{year}"] = write_cog(
            truth_dir / str(year) / "surface.tif", surface, grid, ["debris", "lake"], tags=tags
        )
        written[f"outlines_{year}"] = write_layers(
            truth_dir / str(year) / "outlines.gpkg",
            {"outlines": truth_outlines(landscape, year), "divides": truth_divides(landscape, year)},
        )
    buffer = io.StringIO()
    glacier_table(landscape).to_csv(buffer, index=False, float_format="%.4f")
    written["glaciers_csv"] = write_text_atomic(truth_dir / "glaciers.csv", buffer.getvalue())
    ref = reference_year(landscape)
    written["inventory"] = write_layers(out_dir / f"inventory_{ref}.gpkg", {"inventory": inventory(landscape)})
    cfg = landscape.config
    written["world"] = write_json_atomic(
        truth_dir / "world.json",
        {
            "config": {
                "seed": cfg.seed,
                "size_m": cfg.size_m,
                "resolution": cfg.resolution,
                "centre_lon": cfg.centre_lon,
                "centre_lat": cfg.centre_lat,
                "years": list(cfg.years),
                "loss_rate": cfg.loss_rate,
            },
            "crs": grid.crs,
            "bounds": list(grid.bounds),
            "shape": list(grid.shape),
            "ela_m": {str(y): round(t.ela, 1) for y, t in sorted(landscape.years.items())},
            "glaciers": len(landscape.glaciers),
            "complexes": len({g.complex_id for g in landscape.glaciers}),
            "inventory_year": ref,
        },
    )
    logger.info("wrote synthetic truth for %d years to %s", len(landscape.years), out_dir)
    return written
