"""glacimap outlines --restrict none on hand-made AOI workspaces with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.warp import transform_bounds

from glacimap.errors import InputNotFoundError, InvalidInputError, OutputExistsError
from glacimap.fetch.aoi import AoiPlan
from glacimap.fetch.chips import SELECTION_TAG
from glacimap.outlines import run_outlines
from glacimap.rasters import Grid, write_cog
from glacimap.settings import OutlinesSettings
from glacimap.vectors import read_layer
from glacimap.wall import glims_id, glims_ids
from glacimap.workspace import Workspace, write_json_atomic

CRS = "EPSG:32632"
RES = 10.0
X0, Y0 = 600_000.0, 5_200_000.0  # top-left corner of every test grid
YEAR = 2023


def _grid(rows: int, cols: int) -> Grid:
    return Grid(CRS, Affine(RES, 0.0, X0, 0.0, -RES, Y0), rows, cols)


def make_workspace(
    root: Path, probability: np.ndarray, confidence: np.ndarray, elevation: np.ndarray, tile_px: int,
    year: int = YEAR,
) -> tuple[Workspace, AoiPlan]:
    """An AOI workspace: aoi.json, manifest, chips (elevation, source, valid) and predictions.

    Tile k (in plan order) is seen by scene ``S2_k`` on {year}-09-(10 + k) with cloud 0.1 (k + 1).
    """
    grid = _grid(*probability.shape)
    plan = AoiPlan.from_grid(transform_bounds(CRS, "EPSG:4326", *grid.bounds), grid, tile_px)
    ws = Workspace(root)
    write_json_atomic(ws.aoi, plan.to_dict())
    rows = []
    for k, tile in enumerate(plan.tiles):
        window = plan.window(tile)
        valid = np.isfinite(probability[window]).astype(np.float32)
        record = {
            "glacier_id": tile.id,
            "status": "ok",
            "sensor": "s2",
            "scene_ids": [f"S2_{k}"],
            "scene_dates": [f"{year}-09-{10 + k:02d}"],
            "date": f"{year}-09-{10 + k:02d}",
            "cloud_fraction": round(0.1 * (k + 1), 4),
        }
        write_cog(
            ws.chip(year, tile.id),
            np.stack([elevation[window], valid, valid]).astype(np.float32),
            tile.grid,
            ["elevation", "source", "valid"],
            nodata=float("nan"),
            tags={SELECTION_TAG: json.dumps(record)},
        )
        write_cog(
            ws.prediction(year, tile.id),
            np.stack([probability[window], confidence[window]]).astype(np.float32),
            tile.grid,
            ["probability", "confidence"],
            nodata=float("nan"),
        )
        rows.append({"glacier_id": tile.id, "status": "ok"})
    pd.DataFrame(rows).to_parquet(ws.manifest(year))
    return ws, plan


def _outlines(ws: Workspace, **extra) -> dict[str, object]:
    result = run_outlines(OutlinesSettings(work=ws.root, year=YEAR, restrict="none", simplify=0.0, **extra))
    layers = {name: read_layer(result.path, name) for name in ("outlines", "confidence_band", "divides")}
    return {"result": result, **layers}


def _coords(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (rows + 0.5) * RES, (cols + 0.5) * RES  # metres from the top-left corner


# -- ids ---------------------------------------------------------------------------------------------
def test_glims_ids_in_every_hemisphere() -> None:
    assert glims_id(10.787, 46.840) == "G010787E46840N"
    assert glims_id(-146.308, 60.431) == "G213692E60431N"  # west: east longitude in 0-360
    assert glims_id(-68.1234, -16.2684) == "G291877E16268S"
    assert glims_id(-0.0001, 0.0) == "G000000E00000N"  # 359.9999 E rounds onto 0


def test_colliding_ids_are_disambiguated_by_area() -> None:
    x, y = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(10.5, 46.9)
    small = shapely.box(x - 25, y - 5, x - 15, y + 5)  # 20 m from the large one's centre:
    large = shapely.box(x - 10, y - 10, x + 20, y + 20)  # both in the cell of G010500E46900N
    far = shapely.box(x + 5000, y, x + 5040, y + 40)
    ids = glims_ids([small, large, far], CRS)
    assert ids[:2] == ["G010500E46900N-2", "G010500E46900N"] and "-" not in ids[2]
    assert glims_ids([far, large, small], CRS) == ids[::-1]  # order of input does not matter


# -- one glacier across tile borders -------------------------------------------------------------------
def _valley(shape: tuple[int, int]) -> np.ndarray:
    """A valley sloping south (rows increase downhill), its floor along column 42."""
    y, x = _coords(shape)
    return (3000.0 - 0.35 * y + 0.0015 * (x - 425.0) ** 2).astype(np.float32)


def _crossing_glacier(shape: tuple[int, int] = (60, 80)) -> tuple[np.ndarray, np.ndarray]:
    probability = np.full(shape, 0.1, dtype=np.float32)
    probability[20:50, 25:60] = 0.9  # 1,050 pixels across the tile borders at row 40 and column 40
    probability[30:33, 45:48] = 0.2  # a nunatak of 9 pixels: filled (below --min-area)
    probability[2:7, 2:7] = 0.9  # 25 pixels of ice alone: dropped (below --min-area)
    probability[55:60, 70:80] = np.nan  # cloud
    confidence = np.where(np.isnan(probability), np.nan, 0.99).astype(np.float32)
    return probability, confidence


def test_glacier_crossing_tile_borders_is_one_polygon(tmp_path: Path) -> None:
    probability, confidence = _crossing_glacier()
    ws, plan = make_workspace(tmp_path, probability, confidence, _valley(probability.shape), tile_px=40)
    assert [t.id for t in plan.tiles] == ["aoi-r000-c000", "aoi-r000-c001", "aoi-r001-c000", "aoi-r001-c001"]
    layers = _outlines(ws)
    outlines = layers["outlines"]
    assert len(outlines) == 1
    row = outlines.iloc[0]
    geometry = outlines.to_crs(CRS).geometry.iloc[0]
    assert geometry.geom_type == "Polygon" and len(geometry.interiors) == 0  # the nunatak is filled
    assert geometry.area == pytest.approx(1050 * RES**2, rel=1e-6)
    assert row["area_km2"] == pytest.approx(0.105, rel=1e-6)
    assert row["area_low_km2"] == row["area_km2"] == row["area_high_km2"]  # no confidence band
    assert geometry.crosses(shapely.LineString([(X0 + 400, Y0), (X0 + 400, Y0 - 600)]))
    assert geometry.crosses(shapely.LineString([(X0, Y0 - 400), (X0 + 800, Y0 - 400)]))
    # The glacier's pixels per tile (its filled nunatak included): r0c1 400, r0c0 300, r1c1 200, r1c0 150.
    assert row["scene_ids"] == "S2_1,S2_0,S2_3,S2_2"
    assert row["date"] == "2023-09-11,2023-09-10,2023-09-13,2023-09-12"
    assert row["cloud_fraction"] == pytest.approx((400 * 0.2 + 300 * 0.1 + 200 * 0.4 + 150 * 0.3) / 1050)
    assert row["complex_id"] == f"CPX-{row['glacier_id']}" and row["method"].endswith("restrict none; kienholz split")
    assert row["mean_confidence"] == pytest.approx(0.99) and len(layers["divides"]) == 0
    # 8 m of cloud at the corner, 200 m of territory around the glacier
    assert 0.9 < row["valid_fraction"] < 1.0


def test_ids_and_outlines_do_not_depend_on_the_tiling(tmp_path: Path) -> None:
    probability, confidence = _crossing_glacier()
    elevation = _valley(probability.shape)
    one, _ = make_workspace(tmp_path / "one", probability, confidence, elevation, tile_px=100)
    four, _ = make_workspace(tmp_path / "four", probability, confidence, elevation, tile_px=40)
    a, b = _outlines(one)["outlines"], _outlines(four)["outlines"]
    assert list(a["glacier_id"]) == list(b["glacier_id"])
    assert a.geometry.iloc[0].equals(b.geometry.iloc[0])
    again = _outlines(four, overwrite=True)["outlines"]
    assert list(again["glacier_id"]) == list(b["glacier_id"])


# -- a complex of two glaciers -------------------------------------------------------------------------
def _two_glacier_complex() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An ellipse of ice over an east-west ridge (row 80): two cirques, one draining each way."""
    shape = (160, 180)
    y, x = _coords(shape)
    noise = np.random.default_rng(0).normal(0.0, 0.5, shape)
    elevation = (3000.0 - 0.35 * np.abs(y - 800.0) + 0.0015 * (x - 900.0) ** 2 + noise).astype(np.float32)
    radius = np.hypot((x - 900.0) / 420.0, (y - 800.0) / 600.0)
    ice = radius <= 1.0
    probability = np.where(ice, 0.8, 0.2).astype(np.float32)
    ring = np.abs(radius - 1.0) < 0.04  # uncertain margin on both sides of the edge
    confidence = np.where(ring, 0.6, 0.99).astype(np.float32)
    return probability, confidence, elevation, ring


def test_complex_splits_into_two_glaciers_along_the_ridge(tmp_path: Path) -> None:
    probability, confidence, elevation, ring = _two_glacier_complex()
    ice = probability > 0.5
    ws, plan = make_workspace(tmp_path, probability, confidence, elevation, tile_px=64)
    assert len(plan.tiles) == 9
    layers = _outlines(ws)
    outlines = layers["outlines"].to_crs(CRS)
    assert len(outlines) == 2 and outlines["glacier_id"].is_unique
    assert outlines["complex_id"].nunique() == 1 and outlines["complex_id"].iloc[0].startswith("CPX-G0")
    np.testing.assert_allclose(outlines["area_km2"], ice.sum() * RES**2 / 2e6, rtol=0.05)
    assert outlines["area_km2"].sum() == pytest.approx(ice.sum() * RES**2 / 1e6)
    north = outlines.geometry.centroid.y.idxmax()
    assert outlines.geometry[north].centroid.y > Y0 - 800 > outlines.geometry[1 - north].centroid.y
    divides = layers["divides"].to_crs(CRS)
    assert len(divides) == 1
    assert set(divides[["glacier_id_1", "glacier_id_2"]].iloc[0]) == set(outlines["glacier_id"])
    ys = shapely.get_coordinates(divides.geometry.iloc[0])[:, 1]
    assert np.abs(ys - (Y0 - 800.0)).max() <= 1.5 * RES  # the divide follows the crest
    # The band: ring pixels on the ice leave area_low, ring pixels off the ice join area_high.
    pixel_km2 = RES**2 / 1e6
    assert (outlines["area_km2"] - outlines["area_low_km2"]).sum() == pytest.approx((ring & ice).sum() * pixel_km2)
    assert (outlines["area_high_km2"] - outlines["area_km2"]).sum() == pytest.approx((ring & ~ice).sum() * pixel_km2)
    band = layers["confidence_band"].to_crs(CRS)
    assert list(band["glacier_id"]) == list(layers["outlines"]["glacier_id"])
    assert band.area.sum() == pytest.approx(ring.sum() * RES**2)


# -- errors ---------------------------------------------------------------------------------------------
def test_workspace_without_aoi_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="no AOI; --restrict none works on a workspace fetched with"):
        run_outlines(OutlinesSettings(work=tmp_path, year=YEAR, restrict="none"))


def test_existing_outlines_and_misaligned_tiles_are_refused(tmp_path: Path) -> None:
    probability, confidence = _crossing_glacier()
    ws, plan = make_workspace(tmp_path, probability, confidence, _valley(probability.shape), tile_px=40)
    _outlines(ws)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        _outlines(ws)
    tile = plan.tiles[1]
    shifted = Grid(CRS, tile.grid.transform @ Affine.translation(1, 0), *tile.grid.shape)
    write_cog(
        ws.prediction(YEAR, tile.id),
        np.zeros((2, *tile.grid.shape), dtype=np.float32),
        shifted,
        ["probability", "confidence"],
    )
    with pytest.raises(InvalidInputError, match=r"aoi-r000-c001.tif: grid .* is not the tile's"):
        _outlines(ws, overwrite=True)
