"""Vector rules of glacimap outlines on small hand-made rasters with known answers."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from glacimap.errors import InputNotFoundError, OutputExistsError
from glacimap.inventory import normalise_inventory, save_inventory
from glacimap.outlines import (
    clean_polygons,
    complexes,
    polygonise,
    run_outlines,
    shared_borders,
    simplify_coverage,
    territory_mask,
)
from glacimap.rasters import Grid, write_cog
from glacimap.settings import OutlinesSettings
from glacimap.vectors import read_layer
from glacimap.workspace import Workspace

CRS = "EPSG:32632"
X0, Y0 = 600_000.0, 5_200_000.0


def _grid(rows: int = 40, cols: int = 40, res: float = 10.0) -> Grid:
    return Grid(CRS, Affine(res, 0, X0, 0, -res, Y0 + rows * res), rows, cols)


def test_eight_connectivity_joins_diagonal_pixels() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:3, 1:3] = True
    mask[3:5, 3:5] = True  # touches the first block only at a corner
    polygons = polygonise(mask, _grid(6, 6))
    assert len(polygons) == 1 and polygons[0].area == pytest.approx(800.0)


def test_min_area_drops_parts_and_fills_small_holes() -> None:
    big = shapely.box(0, 0, 200, 200).difference(shapely.box(50, 50, 60, 60))  # 100 m2 hole
    big = big.difference(shapely.box(100, 100, 190, 190))  # 8100 m2 hole
    tiny = shapely.box(500, 500, 510, 510)
    cleaned = clean_polygons([big, tiny], min_area_m2=1000.0)
    assert cleaned.geom_type == "Polygon"
    assert len(cleaned.interiors) == 1 and cleaned.area == pytest.approx(40_000 - 8100)


def test_territories_split_overlap_to_nearest_glacier() -> None:
    grid = _grid(20, 40)
    left = shapely.box(X0, Y0, X0 + 150, Y0 + 200)
    right = shapely.box(X0 + 250, Y0, X0 + 400, Y0 + 200)
    t_left = territory_mask(left, [("R", right)], grid, buffer=200.0, restrict="territory", own_id="L")
    t_right = territory_mask(right, [("L", left)], grid, buffer=200.0, restrict="territory", own_id="R")
    assert not (t_left & t_right).any()
    cols_left = np.where(t_left.any(axis=0))[0]
    cols_right = np.where(t_right.any(axis=0))[0]
    assert cols_left.max() == 19 and cols_right.min() == 20  # the 100 m gap is split in the middle
    assert territory_mask(left, [("R", right)], grid, 200.0, "inventory").sum() == 15 * 20


def test_territory_ties_go_to_one_glacier() -> None:
    grid = _grid(10, 30)
    left = shapely.box(X0, Y0, X0 + 100, Y0 + 100)
    right = shapely.box(X0 + 200, Y0, X0 + 300, Y0 + 100)  # col 15 is 50 m... equidistant cols exist
    t_a = territory_mask(left, [("b", right)], grid, 500.0, "territory", own_id="a")
    t_b = territory_mask(right, [("a", left)], grid, 500.0, "territory", own_id="b")
    assert not (t_a & t_b).any() and (t_a | t_b).all()


def test_simplification_keeps_shared_borders() -> None:
    grid = _grid(60, 60)
    rng = np.random.default_rng(0)
    labels = np.zeros(grid.shape, dtype=int)
    labels[5:55, 5:30] = 1
    labels[5:55, 30:55] = 2
    # a ragged pixel border between the two glaciers
    for row in range(5, 55):
        cut = 30 + int(rng.integers(-3, 4))
        labels[row, 5:55] = np.where(np.arange(5, 55) < cut, 1, 2)
    geoms = [clean_polygons(polygonise(labels == k, grid), 0.0) for k in (1, 2)]
    series = gpd.GeoSeries(geoms, crs=CRS)
    simple = simplify_coverage(series, tolerance=15.0)
    assert bool(shapely.coverage_is_valid(simple.values))
    a, b = simple.values
    assert a.intersection(b).area == pytest.approx(0.0, abs=1e-6)  # no overlap
    assert shapely.union_all(simple.values).area == pytest.approx(a.area + b.area)  # no gap
    assert a.touches(b)
    assert sum(len(g.exterior.coords) for g in simple) < sum(len(g.exterior.coords) for g in series)


def test_complexes_and_shared_borders() -> None:
    frame = gpd.GeoDataFrame(
        {"glacier_id": ["a", "b", "c"]},
        geometry=[shapely.box(0, 0, 100, 100), shapely.box(100, 0, 200, 100), shapely.box(500, 0, 600, 100)],
        crs=CRS,
    )
    frame["complex_id"] = complexes(frame.geometry)
    assert frame["complex_id"].tolist()[0] == frame["complex_id"].tolist()[1] != frame["complex_id"].tolist()[2]
    borders = shared_borders(frame)
    assert len(borders) == 1 and borders["length_m"].iloc[0] == pytest.approx(100.0)


def _workspace(tmp_path: Path, probability: np.ndarray, confidence: np.ndarray) -> Workspace:
    """Two glaciers on one 40x40 grid; predictions written for both."""
    ws = Workspace(tmp_path / "work")
    grid = _grid(40, 40)
    outline_a = shapely.box(X0 + 50, Y0 + 50, X0 + 200, Y0 + 350)
    outline_b = shapely.box(X0 + 200, Y0 + 50, X0 + 350, Y0 + 350)
    inv = gpd.GeoDataFrame({"glacier_id": ["A", "B"]}, geometry=[outline_a, outline_b], crs=CRS)
    save_inventory(normalise_inventory(inv, "test"), ws.inventory)
    manifest = pd.DataFrame({
        "glacier_id": ["A", "B"], "date": ["2023-09-01"] * 2, "sensor": ["s2"] * 2,
        "scene_ids": ["S2X", "S2X"], "cloud_fraction": [0.0, 0.01], "status": ["ok", "ok"],
    })
    ws.chips_dir(2023).mkdir(parents=True)
    manifest.to_parquet(ws.manifest(2023))
    for gid in ("A", "B"):
        write_cog(ws.prediction(2023, gid), np.stack([probability, confidence]).astype(np.float32), grid,
                  ["probability", "confidence"], nodata=float("nan"))
    return ws


def test_run_outlines_end_to_end(tmp_path: Path) -> None:
    probability = np.zeros((40, 40), dtype=np.float32)
    probability[10:30, 5:35] = 0.9  # ice over both reference outlines
    probability[2:4, 2:4] = 0.9  # a speck outside every outline
    confidence = np.ones((40, 40), dtype=np.float32)
    confidence[10:30, 18:22] = 0.5  # uncertain along the middle
    probability[0, :] = np.nan  # no data row
    ws = _workspace(tmp_path, probability, confidence)
    settings = OutlinesSettings(work=ws.root, year=2023, simplify=0.0, split_divides=True)
    result = run_outlines(settings)
    out = read_layer(result.path, "outlines").set_index("glacier_id")
    assert result.mapped == 2
    # inventory restriction: ice rows 10-30 x cols 5-20 inside A (cols 5..19) -> 20 x 15 px
    assert out.loc["A", "area_km2"] == pytest.approx(20 * 15 * 100 / 1e6, rel=0.02)
    assert (out["area_low_km2"] <= out["area_km2"] + 1e-12).all()
    assert (out["area_km2"] <= out["area_high_km2"] + 1e-12).all()
    assert out.loc["A", "area_low_km2"] == pytest.approx((20 * 13) * 100 / 1e6, rel=0.02)
    assert out.loc["A", "complex_id"] == out.loc["B", "complex_id"]
    assert out.crs.to_epsg() == 4326 and out.loc["A", "date"] == "2023-09-01"
    band = read_layer(result.path, "confidence_band")
    assert set(band["glacier_id"]) == {"A", "B"}
    divides = read_layer(result.path, "divides")
    assert len(divides) == 1 and divides["length_m"].iloc[0] == pytest.approx(200.0, rel=0.05)
    with pytest.raises(OutputExistsError):
        run_outlines(settings)
    assert run_outlines(settings.model_copy(update={"overwrite": True})).mapped == 2


def test_territory_mode_allows_advance(tmp_path: Path) -> None:
    probability = np.zeros((40, 40), dtype=np.float32)
    probability[10:38, 5:20] = 0.9  # glacier A advanced 30 m below its outline
    ws = _workspace(tmp_path, probability, np.ones((40, 40), dtype=np.float32))
    inv_area = run_outlines(OutlinesSettings(work=ws.root, year=2023, simplify=0.0)).total_area_km2
    ter_area = run_outlines(OutlinesSettings(work=ws.root, year=2023, simplify=0.0, restrict="territory",
                                             overwrite=True)).total_area_km2
    assert ter_area > inv_area


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="inventory"):
        run_outlines(OutlinesSettings(work=tmp_path, year=2023))
