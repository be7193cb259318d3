"""Tests of glacimap.divides: splitting glacier complexes along ice divides.

The synthetic terrains are built with their answer: a ridge with a cirque draining to each
side (two glaciers, divide on the ridge crest), a single valley (one glacier) and the ridge
with a gully reaching the complex where the crest meets its outline (the saddle that makes
the literal merge rule weld both glaciers together).
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import richdem
import shapely
from affine import Affine

from glacimap.divides import (
    KienholzParams,
    d8_receivers,
    dissolve_complexes,
    divide_lines,
    fill_depressions,
    flowsheds,
    match_glaciers,
    match_summary,
    merge_flowsheds,
    outlets_naive,
    outlets_within,
    read_dem_region,
    route_flow,
    run_split,
    split_by_reference,
    split_complexes,
)
from glacimap.errors import ConfigError, CRSMismatchError, InputNotFoundError, InvalidInputError, OutputExistsError
from glacimap.rasters import Grid, write_cog
from glacimap.settings import SplitSettings
from glacimap.vectors import read_layer

RES = 20.0
CRS_UTM = "EPSG:32632"
ORIGIN = (600_000.0, 5_200_000.0)
OETZTAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "oetztal"


def _grid(rows: int = 80, cols: int = 90) -> Grid:
    return Grid(CRS_UTM, Affine(RES, 0.0, ORIGIN[0], 0.0, -RES, ORIGIN[1]), rows, cols)


def _coords(grid: Grid) -> tuple[np.ndarray, np.ndarray, float, float]:
    rr, cc = np.mgrid[0 : grid.height, 0 : grid.width]
    y, x = (rr + 0.5) * RES, (cc + 0.5) * RES
    return y, x, grid.height * RES / 2, grid.width * RES / 2


def ridge_dem(grid: Grid, seed: int = 0) -> np.ndarray:
    """An east-west ridge along the middle row; U-shaped across; ice drains north and south."""
    y, x, y0, x0 = _coords(grid)
    noise = np.random.default_rng(seed).normal(0.0, 0.5, grid.shape)
    return 3000.0 - 0.35 * np.abs(y - y0) + 0.0015 * (x - x0) ** 2 + noise


def valley_dem(grid: Grid, seed: int = 0) -> np.ndarray:
    """One valley sloping south (rows increase downhill)."""
    y, x, _, x0 = _coords(grid)
    noise = np.random.default_rng(seed).normal(0.0, 0.5, grid.shape)
    return 3000.0 - 0.35 * y + 0.0015 * (x - x0) ** 2 + noise


def saddle_dem(grid: Grid) -> np.ndarray:
    """The ridge plus a gully that drains into the complex's east tip, right on the crest."""
    y, x, y0, x0 = _coords(grid)
    dem = ridge_dem(grid)
    tip = x0 + 420.0
    crest = 3000.0 + 0.0015 * 420.0**2
    gully = (x > tip - 20) & (np.abs(y - y0) < 200)
    floor = crest - 80.0 + 0.05 * (x - tip) + 0.6 * np.abs(y - y0)
    return np.where(gully, np.minimum(dem, floor), dem)


def ellipse(grid: Grid, rx: float = 420.0, ry: float = 600.0) -> shapely.Polygon:
    cx = ORIGIN[0] + grid.width * RES / 2
    cy = ORIGIN[1] - grid.height * RES / 2
    return shapely.affinity.scale(shapely.Point(cx, cy).buffer(1.0, quad_segs=32), rx, ry)


def frame(geoms: list[shapely.Geometry], ids: list[str], crs: str = CRS_UTM) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"name": ids}, geometry=geoms, crs=crs)


def assert_partition(glaciers: gpd.GeoDataFrame, complexes: dict[str, shapely.Geometry]) -> None:
    """Glaciers of each complex: no overlap, no gap, union equal to the complex."""
    for cid, group in glaciers.groupby("complex_id"):
        geoms = list(group.geometry)
        union = shapely.union_all(geoms)
        assert union.symmetric_difference(complexes[cid]).area < 1e-6 * complexes[cid].area
        for i in range(len(geoms)):
            for j in range(i + 1, len(geoms)):
                assert geoms[i].intersection(geoms[j]).area < 1e-6
        assert sum(g.area for g in geoms) == pytest.approx(complexes[cid].area, rel=1e-9)


# -- parameters --------------------------------------------------------------------------------


def test_merge_radius_in_resolution_independent_units() -> None:
    params = KienholzParams()
    # The paper's a = 14.3 with A in 40 m cells: r = 14.3 * sqrt(A_m2 / 1600) = 0.3575 sqrt(A_m2).
    assert KienholzParams.from_cell_units(14.3, 0.5, 3500.0, 40.0).merge_a_m == pytest.approx(357.5)
    assert params.merge_a_m == pytest.approx(357.5)
    # The same rule written for 10 m cells (A counts 16 times more cells, so a is 4 times smaller).
    assert KienholzParams.from_cell_units(14.3 / 4, 0.5, 3500.0, 10.0).merge_a_m == pytest.approx(357.5)
    assert params.merge_radius_m(10.0) == pytest.approx(357.5 * math.sqrt(10.0))
    assert params.merge_radius_m(1.0) == pytest.approx(357.5)
    assert params.merge_radius_m(200.0) == pytest.approx(3500.0)  # capped above (3500/357.5)^2 = 95.9 km2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gutter_depth_m": 0.0},
        {"buffer_px": 1},
        {"merge_rule": "any"},
        {"flow_method": "mfd"},
        {"sliver_area_km2": -1.0},
        {"sliver_min_cells": -1.0},
    ],
)
def test_bad_parameters_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="KienholzParams"):
        KienholzParams(**kwargs)


def test_published_parameterisations_stay_available() -> None:
    default, paper, oggm = KienholzParams(), KienholzParams.paper(), KienholzParams.oggm_filters()
    assert (default.sliver_min_cells, default.min_relief_m, default.min_relief_share) == (62.5, 0.0, 0.0)
    assert (paper.sliver_min_cells, paper.min_relief_m, paper.min_relief_share) == (0.0, 0.0, 0.0)
    assert (oggm.sliver_min_cells, oggm.min_relief_m, oggm.min_relief_share) == (0.0, 100.0, 0.1)
    # Everything else is the paper's in all three; overrides pass through.
    assert (paper.sliver_area_km2, paper.merge_a_m, paper.gutter_depth_m) == (0.1, 357.5, 100.0)
    assert KienholzParams.paper(merge_a_m=572.0).merge_a_m == 572.0


def test_pieces_of_few_cells_are_slivers_on_a_coarse_dem() -> None:
    """The two cirques of the ridge on a 90 m DEM: 0.40 km2 each but only 49 cells."""
    res, n = 90.0, 24
    grid = Grid(CRS_UTM, Affine(res, 0.0, ORIGIN[0], 0.0, -res, ORIGIN[1]), n, n)
    rr, cc = np.mgrid[0:n, 0:n]
    y, x, centre = (rr + 0.5) * res, (cc + 0.5) * res, n * res / 2
    dem = (
        3000.0
        - 0.35 * np.abs(y - centre)
        + 0.0015 * (x - centre) ** 2
        + np.random.default_rng(0).normal(0.0, 0.5, grid.shape)
    )
    geom = shapely.affinity.scale(
        shapely.Point(ORIGIN[0] + centre, ORIGIN[1] - centre).buffer(1.0, quad_segs=32), 420.0, 600.0
    )
    complexes = frame([geom], ["C1"])
    halves = split_complexes(complexes, dem, grid, KienholzParams.paper(), id_column="name")
    assert halves["area_km2"].tolist() == pytest.approx([0.396, 0.396], abs=0.002)
    # 62.5 cells (the paper's 0.1 km2 at 40 m) is 0.51 km2 at 90 m: a half is a sliver.
    whole = split_complexes(complexes, dem, grid, id_column="name")
    assert whole["glacier_id"].tolist() == ["C1"]
    assert whole["area_km2"].iloc[0] == pytest.approx(geom.area / 1e6)


# -- flow routing ------------------------------------------------------------------------------


def test_d8_divides_diagonal_drops_by_their_length() -> None:
    dem = np.full((3, 3), 10.0)
    dem[1, 2] = 9.0  # east: drop 1.0 over 1 cell -> slope 1.0
    dem[2, 2] = 8.8  # south-east: drop 1.2 over sqrt(2) cells -> slope 0.85
    receivers = d8_receivers(dem, 1.0)
    assert receivers[4] == 5  # the east neighbour
    # richdem's own D8 compares raw drops and takes the diagonal: why we compute receivers.
    arr = richdem.rdarray(dem, no_data=-9999.0)
    arr.geotransform = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    props = np.asarray(richdem.FlowProportions(arr, method="D8"))
    assert int(np.argmax(props[1, 1, 1:])) + 1 == 6  # richdem code 6 = south-east


def test_accumulation_agrees_with_receivers() -> None:
    dem = fill_depressions(ridge_dem(_grid(30, 40), seed=3))
    receivers, acc = route_flow(dem, RES, "d8")
    flat = acc.ravel()
    inflow = np.zeros(flat.size)
    has = receivers >= 0
    np.add.at(inflow, receivers[has], flat[has])
    np.testing.assert_allclose(flat, 1.0 + inflow)  # every cell: itself plus all donors
    assert flat.max() < flat.size


def test_dinf_receivers_point_downhill() -> None:
    dem = fill_depressions(ridge_dem(_grid(30, 40), seed=3))
    receivers, acc = route_flow(dem, RES, "dinf")
    assert acc.min() >= 1.0
    has = receivers >= 0
    assert has.mean() > 0.9
    assert (dem.ravel()[receivers[has]] < dem.ravel()[has]).all()
    # Flow leaves the window nowhere but through its edge cells' own outlets.
    assert acc.max() < dem.size


def test_pointer_jumping_matches_naive_flood() -> None:
    rng = np.random.default_rng(5)
    dem = fill_depressions(ndi_smooth(rng.normal(0, 50, (40, 50))))
    receivers = d8_receivers(dem, RES)
    active = np.ones(dem.size, dtype=bool)
    fast = outlets_within(receivers, active)
    outlets = np.unique(fast)
    slow = outlets_naive(receivers, active, outlets.tolist())
    np.testing.assert_array_equal(fast, slow)
    assert outlets.size > 1


def ndi_smooth(values: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(values, 3.0)


# -- Kienholz split on known glaciers -------------------------------------------------------------


def test_two_cirques_split_into_two_along_the_ridge() -> None:
    grid = _grid()
    geom = ellipse(grid)
    glaciers = split_complexes(frame([geom], ["A"]), ridge_dem(grid), grid, id_column="name")
    assert list(glaciers["glacier_id"]) == ["A-1", "A-2"]
    assert list(glaciers["complex_id"]) == ["A", "A"]
    assert glaciers["area_km2"].sum() == pytest.approx(geom.area / 1e6)
    # Each half holds about half of the ellipse: the divide follows the crest.
    np.testing.assert_allclose(glaciers["area_km2"], geom.area / 2e6, rtol=0.05)
    assert_partition(glaciers, {"A": geom})
    divides = divide_lines(glaciers)
    assert len(divides) == 1
    crest_y = ORIGIN[1] - grid.height * RES / 2
    line = divides.geometry.iloc[0]
    ys = (
        np.array(line.coords)[:, 1]
        if line.geom_type == "LineString"
        else np.concatenate([np.array(p.coords)[:, 1] for p in line.geoms])
    )
    assert np.abs(ys - crest_y).max() <= 1.5 * RES
    assert divides["length_m"].iloc[0] == pytest.approx(840.0, rel=0.1)  # the ellipse's width


def test_flowshed_and_merge_steps_of_two_cirques() -> None:
    grid = _grid()
    ice = rasterio.features.geometry_mask([ellipse(grid)], grid.shape, grid.transform, invert=True)
    params = KienholzParams()
    basins, pours = flowsheds(ice, ridge_dem(grid), RES, params)
    # One pour point at each cirque's lip (north and south ends of the complex), one flowshed each.
    assert sorted(p.row for p in pours) == [9, 70] and all(0.9 < p.area_km2 < 1.1 for p in pours)
    assert (basins[ice] > 0).all() and (basins[~ice] == 0).all() and basins.max() == 2
    grouped, labels = merge_flowsheds(basins, ice, pours, ridge_dem(grid), RES, params)
    assert len(np.unique(grouped[ice])) >= len(np.unique(labels[ice]))
    # Two glaciers after the merge disks and slivers, one on each side of the crest.
    rows = np.nonzero(ice)[0]
    crest = grid.height // 2
    north, south = labels[: crest - 3][ice[: crest - 3]], labels[crest + 3 :][ice[crest + 3 :]]
    assert len(np.unique(labels[ice])) == 2 and rows.min() < crest < rows.max()
    assert np.unique(north).size == 1 and np.unique(south).size == 1 and north[0] != south[0]


def test_single_valley_glacier_stays_whole_and_keeps_its_id() -> None:
    grid = _grid()
    geom = ellipse(grid)
    glaciers = split_complexes(frame([geom], ["V1"]), valley_dem(grid), grid, id_column="name")
    assert list(glaciers["glacier_id"]) == ["V1"]
    assert glaciers.geometry.iloc[0].equals(geom)
    assert divide_lines(glaciers).empty


def test_saddle_pour_point_does_not_weld_the_glaciers() -> None:
    grid = _grid()
    geom = ellipse(grid)
    complexes = frame([geom], ["S"])
    safe = split_complexes(complexes, saddle_dem(grid), grid, id_column="name")
    literal = split_complexes(complexes, saddle_dem(grid), grid, KienholzParams(merge_rule="union"), id_column="name")
    assert len(safe) == 2
    np.testing.assert_allclose(safe["area_km2"], geom.area / 2e6, rtol=0.05)
    assert len(literal) == 1  # the pitfall the safeguard exists for


def test_several_complexes_partition_exactly() -> None:
    grid = _grid(80, 200)
    y, x, y0, x0 = _coords(grid)
    # Two ridges side by side: each complex sits on its own, centred 1000 m either side.
    across = np.minimum(np.abs(x - x0 + 1000.0), np.abs(x - x0 - 1000.0))
    dem = 3000.0 - 0.35 * np.abs(y - y0) + 0.0015 * across**2 + np.random.default_rng(1).normal(0, 0.5, grid.shape)
    left = shapely.affinity.translate(ellipse(grid, 300, 500), -1000.0, 0.0)
    right = shapely.affinity.translate(ellipse(grid, 350, 600), 1000.0, 0.0)
    glaciers = split_complexes(frame([left, right], ["L", "R"]), dem, grid, id_column="name")
    assert sorted(glaciers["glacier_id"]) == ["L-1", "L-2", "R-1", "R-2"]
    assert_partition(glaciers, {"L": left, "R": right})
    assert glaciers.is_valid.all()


def test_complexes_in_another_crs_are_reprojected() -> None:
    grid = _grid()
    geom = ellipse(grid)
    in_lonlat = frame([geom], ["A"]).to_crs("EPSG:4326")
    glaciers = split_complexes(in_lonlat, ridge_dem(grid), grid, id_column="name")
    assert len(glaciers) == 2
    assert glaciers.crs.to_epsg() == 32632
    assert glaciers["area_km2"].sum() == pytest.approx(geom.area / 1e6, rel=1e-4)


def test_ids_are_generated_when_outlines_have_none() -> None:
    grid = _grid()
    complexes = gpd.GeoDataFrame(geometry=[ellipse(grid)], crs=CRS_UTM)
    glaciers = split_complexes(complexes, ridge_dem(grid), grid)
    assert list(glaciers["glacier_id"]) == ["C0001-1", "C0001-2"]


# -- bad input ---------------------------------------------------------------------------------


def test_empty_outlines_are_rejected() -> None:
    grid = _grid()
    with pytest.raises(InvalidInputError, match="no complexes"):
        split_complexes(frame([], []), ridge_dem(grid), grid)
    with pytest.raises(InvalidInputError, match=r"\['B'\] have no polygon area"):
        split_complexes(frame([ellipse(grid), shapely.Polygon()], ["A", "B"]), ridge_dem(grid), grid, id_column="name")


def test_dem_not_covering_a_complex_names_it() -> None:
    grid = _grid()
    far = shapely.affinity.translate(ellipse(grid), 5000.0, 0.0)
    with pytest.raises(InvalidInputError, match=r"dem\.tif does not cover complexes \['FAR'\]"):
        split_complexes(
            frame([ellipse(grid), far], ["A", "FAR"]), ridge_dem(grid), grid, id_column="name", source="dem.tif"
        )


def test_dem_voids_over_a_complex_are_an_error() -> None:
    grid = _grid()
    dem = ridge_dem(grid)
    dem[:, :] = np.nan
    dem[:, :5] = 3000.0
    with pytest.raises(InvalidInputError, match="'A' is DEM nodata"):
        split_complexes(frame([ellipse(grid)], ["A"]), dem, grid, id_column="name")


def test_geographic_grid_is_refused_by_the_compute_function() -> None:
    grid = Grid("EPSG:4326", Affine(0.001, 0, 11.0, 0, -0.001, 47.0), 10, 10)
    with pytest.raises(CRSMismatchError, match="projected CRS in metres"):
        split_complexes(
            frame([shapely.box(11.002, 46.995, 11.006, 46.998)], ["A"], "EPSG:4326"), np.zeros((10, 10)), grid
        )


# -- reference method ---------------------------------------------------------------------------


def _halves(grid: Grid, geom: shapely.Geometry) -> gpd.GeoDataFrame:
    crest_y = ORIGIN[1] - grid.height * RES / 2
    north = geom.intersection(shapely.box(geom.bounds[0], crest_y, geom.bounds[2], geom.bounds[3]))
    south = geom.intersection(shapely.box(geom.bounds[0], geom.bounds[1], geom.bounds[2], crest_y))
    return gpd.GeoDataFrame({"RGIId": ["N", "S"]}, geometry=[north, south], crs=CRS_UTM)


def test_reference_split_keeps_ids_and_divides_when_ice_advances() -> None:
    grid = _grid()
    old = ellipse(grid)
    reference = _halves(grid, old)
    new = ellipse(grid, 420.0, 700.0)  # the ice grew 100 m at both ends (north and south)
    out = split_by_reference(frame([new], ["X"]), reference, ridge_dem(grid), grid, id_column="name")
    assert sorted(out["glacier_id"]) == ["N", "S"]
    assert_partition(out.assign(complex_id="X"), {"X": new})
    by_id = out.set_index("glacier_id")
    gain = (new.area - old.area) / 2e6
    np.testing.assert_allclose(by_id["area_change_km2"], [gain, gain], rtol=0.05)
    np.testing.assert_allclose(by_id["reference_area_km2"], [old.area / 2e6] * 2, rtol=1e-6)
    # The ice inside each reference glacier stays with it exactly.
    for gid, ref_geom in zip(reference["RGIId"], reference.geometry):
        assert by_id.geometry[gid].intersection(ref_geom).area == pytest.approx(ref_geom.area, rel=1e-9)


def test_reference_split_sends_new_ice_to_the_glacier_it_drains_to() -> None:
    grid = _grid()
    reference = _halves(grid, ellipse(grid))
    # New ice only north of the old northern glacier: it drains north, away from both, but the
    # northern glacier is the nearest along the ice.
    new = ellipse(grid, 420.0, 700.0).intersection(shapely.box(0, ORIGIN[1] - 800.0, 1e7, 1e8))
    out = split_by_reference(frame([new], ["X"]), reference, ridge_dem(grid), grid, id_column="name")
    assert list(out["glacier_id"]) == ["N"]


def test_reference_split_keeps_ice_without_reference_as_new_glacier() -> None:
    grid = _grid(80, 200)
    reference = _halves(grid, ellipse(grid))
    lone = shapely.affinity.translate(ellipse(grid, 200, 300), 1500.0, 0.0)
    out = split_by_reference(
        frame([ellipse(grid), lone], ["X", "Y"]), reference, ridge_dem(grid), grid, id_column="name"
    )
    assert sorted(out["glacier_id"]) == ["N", "S", "Y"]
    assert out.set_index("glacier_id").loc["Y", "reference_area_km2"] == 0.0


# -- I/O entry point ----------------------------------------------------------------------------


def _write_inputs(tmp_path: Path, geographic_dem: bool = False) -> tuple[Path, Path, shapely.Geometry]:
    grid = _grid()
    dem = ridge_dem(grid).astype(np.float32)
    dem_path = tmp_path / "dem.tif"
    write_cog(dem_path, dem, grid, ["elevation"], nodata=-9999.0)
    if geographic_dem:
        import rasterio
        from rasterio.warp import Resampling, calculate_default_transform, reproject

        with rasterio.open(dem_path) as src:
            transform, width, height = calculate_default_transform(
                src.crs, "EPSG:4326", src.width, src.height, *src.bounds
            )
            data = np.full((height, width), -9999.0, dtype=np.float32)
            reproject(
                src.read(1),
                data,
                src_transform=src.transform,
                src_crs=src.crs,
                dst_transform=transform,
                dst_crs="EPSG:4326",
                resampling=Resampling.bilinear,
                src_nodata=-9999.0,
                dst_nodata=-9999.0,
            )
        dem_path = tmp_path / "dem_4326.tif"
        write_cog(dem_path, data, Grid("EPSG:4326", transform, height, width), ["elevation"], nodata=-9999.0)
    geom = ellipse(grid, 380.0, 560.0)
    outlines = tmp_path / "complexes.gpkg"
    frame([geom], ["A"]).to_crs("EPSG:4326").to_file(outlines)
    return outlines, dem_path, geom


def test_run_split_writes_glaciers_and_divides(tmp_path: Path) -> None:
    outlines, dem_path, geom = _write_inputs(tmp_path)
    out = tmp_path / "glaciers.gpkg"
    settings = SplitSettings(outlines=outlines, dem=dem_path, out=out, id_column="name")
    result = run_split(settings)
    assert (result.n_complexes, result.n_glaciers, result.n_split, result.n_regions) == (1, 2, 1, 1)
    glaciers = read_layer(out, "glaciers")
    divides = read_layer(out, "divides")
    assert glaciers.crs.to_epsg() == 4326 and divides.crs.to_epsg() == 4326
    assert sorted(glaciers["glacier_id"]) == ["A-1", "A-2"]
    assert glaciers.to_crs(CRS_UTM).area.sum() == pytest.approx(geom.area, rel=1e-4)
    assert len(divides) == 1
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_split(settings)
    assert run_split(settings.model_copy(update={"overwrite": True})).n_glaciers == 2


def test_run_split_reprojects_a_geographic_dem(tmp_path: Path) -> None:
    outlines, dem_path, _geom = _write_inputs(tmp_path, geographic_dem=True)
    _dem, grid = read_dem_region(dem_path, gpd.read_file(outlines).geometry, 200.0, ["A"])
    assert grid.crs == "EPSG:32632"
    assert 10.0 <= grid.resolution <= 30.0
    result = run_split(SplitSettings(outlines=outlines, dem=dem_path, out=tmp_path / "o.gpkg", id_column="name"))
    assert result.n_glaciers == 2


def test_run_split_reference_method(tmp_path: Path) -> None:
    outlines, dem_path, _geom = _write_inputs(tmp_path)
    reference = tmp_path / "rgi.gpkg"
    _halves(_grid(), ellipse(_grid())).to_file(reference)
    settings = SplitSettings(
        outlines=outlines, dem=dem_path, out=tmp_path / "r.gpkg", method="reference", reference=reference
    )
    result = run_split(settings)
    assert sorted(result.glaciers["glacier_id"]) == ["N", "S"]
    assert (result.glaciers["area_change_km2"] < 0).all()  # the new outline is smaller


def test_run_split_bad_inputs_name_the_file_and_complex(tmp_path: Path) -> None:
    outlines, dem_path, _ = _write_inputs(tmp_path)
    far = tmp_path / "far.gpkg"
    frame([shapely.box(700_000, 5_100_000, 701_000, 5_101_000)], ["FAR"]).to_file(far)
    with pytest.raises(InvalidInputError, match=r"dem\.tif.*does not cover outlines \['FAR'\]"):
        run_split(SplitSettings(outlines=far, dem=dem_path, out=tmp_path / "x.gpkg", id_column="name"))
    empty = tmp_path / "empty.gpkg"
    frame([], []).to_file(empty)
    with pytest.raises(InvalidInputError, match="empty.gpkg: no outlines"):
        run_split(SplitSettings(outlines=empty, dem=dem_path, out=tmp_path / "x.gpkg"))
    with pytest.raises(InputNotFoundError, match="nope.tif"):
        run_split(SplitSettings(outlines=outlines, dem=tmp_path / "nope.tif", out=tmp_path / "x.gpkg"))
    assert not (tmp_path / "x.gpkg").exists()


# -- real data: Ötztal (RGI outlines, SRTM) -----------------------------------------------------


@pytest.fixture(scope="module")
def oetztal() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, np.ndarray, Grid]:
    path = OETZTAL / "rgi_oetztal.shp"
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (the ../shared folder is absent)")
    rgi = gpd.read_file(path).to_crs(CRS_UTM)
    complexes = dissolve_complexes(rgi)
    dem, grid = read_dem_region(OETZTAL / "srtm_oetztal.tif", complexes.geometry, 2000.0, list(complexes["complex_id"]))
    return rgi, complexes, dem, grid


@pytest.mark.shared_data
def test_oetztal_kienholz_recovers_rgi_glaciers(oetztal) -> None:
    rgi, complexes, dem, grid = oetztal
    assert len(complexes) == 7 and complexes["n_members"].sum() == 20
    glaciers = split_complexes(complexes, dem, grid, id_column="complex_id")
    assert_partition(glaciers, dict(zip(complexes["complex_id"], complexes.geometry)))
    summary = match_summary(match_glaciers(rgi.rename(columns={"RGIId": "glacier_id"}), glaciers))
    # Measured 20/20 recovered, IoU 0.868, 29 glaciers on the 76 m SRTM grid (docs/divides.md);
    # with OGGM's relief filters and no minimum cell count (the old defaults) 20/20, 0.846, 45.
    assert summary["recovered"] == 20
    assert summary["area_weighted_iou"] >= 0.85
    assert 20 <= len(glaciers) <= 35


@pytest.mark.shared_data
def test_oetztal_reference_split_reproduces_rgi(oetztal) -> None:
    rgi, complexes, dem, grid = oetztal
    out = split_by_reference(complexes, rgi, dem, grid, id_column="complex_id", reference_id_column="RGIId")
    matches = match_glaciers(rgi.rename(columns={"RGIId": "glacier_id"}), out)
    assert (matches["truth_id"] == matches["match_id"]).all()
    assert match_summary(matches)["area_weighted_iou"] > 0.999


def test_complex_reaching_the_grid_edge_is_padded() -> None:
    grid = _grid()
    geom = ellipse(grid)
    left, bottom, right, top = geom.bounds
    # A grid that ends exactly at the complex's bounding box: no room for buffer or gutter.
    tight = Grid.from_bounds((left, bottom, right, top), CRS_UTM, RES)
    r0 = round((ORIGIN[1] - tight.bounds[3]) / RES)
    c0 = round((tight.bounds[0] - ORIGIN[0]) / RES)
    dem = ridge_dem(grid)[r0 : r0 + tight.height, c0 : c0 + tight.width]
    glaciers = split_complexes(frame([geom], ["A"]), dem, tight, id_column="name")
    assert len(glaciers) == 2
    assert_partition(glaciers, {"A": geom})


def test_run_split_reads_the_dem_once_per_region(tmp_path: Path) -> None:
    res = 100.0
    grid = Grid(CRS_UTM, Affine(res, 0.0, ORIGIN[0], 0.0, -res, ORIGIN[1]), 60, 260)
    rr, cc = np.mgrid[0:60, 0:260]
    x, y = (cc + 0.5) * res, (rr + 0.5) * res
    centres = (3_000.0, 23_000.0)  # 20 km apart: two 0.25-degree tiles
    across = np.minimum(np.abs(x - centres[0]), np.abs(x - centres[1]))
    dem = (3000.0 - 0.35 * np.abs(y - 3000.0) + 0.0004 * across**2).astype(np.float32)
    write_cog(tmp_path / "dem.tif", dem, grid, ["elevation"])
    geoms = [
        shapely.affinity.scale(shapely.Point(ORIGIN[0] + cx, ORIGIN[1] - 3000.0).buffer(1.0), 1000.0, 2000.0)
        for cx in centres
    ]
    frame(geoms, ["W", "E"]).to_file(tmp_path / "c.gpkg")
    result = run_split(
        SplitSettings(outlines=tmp_path / "c.gpkg", dem=tmp_path / "dem.tif", out=tmp_path / "o.gpkg", id_column="name")
    )
    assert result.n_regions == 2
    assert sorted(result.glaciers["glacier_id"]) == ["E-1", "E-2", "W-1", "W-2"]
