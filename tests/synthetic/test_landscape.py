"""The synthetic world's landscape: terrain, glaciers, per-year truth and truth files."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
import shapely
from scipy import ndimage

from glacimap.errors import ConfigError, InvalidInputError
from glacimap.rasters import read_raster
from glacimap.synthetic.glaciers import generate_landscape, merge_small_basins, shared_borders, world_grid
from glacimap.synthetic.model import Landscape, WorldConfig
from glacimap.synthetic.terrain import FlowRouting, d8_receivers, fill_sinks, make_dem
from glacimap.synthetic.truth import inventory, truth_divides, truth_outlines, write_truth
from glacimap.vectors import read_layer

CELL_KM2 = 1e-4  # 10 m cells


@pytest.fixture(scope="module")
def world() -> Landscape:
    return generate_landscape(WorldConfig.small(seed=42))


def _areas(landscape: Landscape, year: int) -> np.ndarray:
    counts = np.bincount(landscape.years[year].glacier.ravel(), minlength=len(landscape.glaciers) + 1)
    return counts[1:] * CELL_KM2


# --- flow routing on known answers -------------------------------------------------------


def _brute_force_paths(dem: np.ndarray) -> list[list[int]]:
    receivers = d8_receivers(fill_sinks(dem, epsilon=True), 10.0)
    paths = []
    for cell in range(dem.size):
        path = [cell]
        while receivers[path[-1]] >= 0:
            path.append(int(receivers[path[-1]]))
        paths.append(path)
    return paths


def test_accumulation_matches_walking_every_flow_path() -> None:
    dem = ndimage.gaussian_filter(np.random.default_rng(3).random((17, 19)), 1.5) * 100.0
    routing = FlowRouting.from_dem(dem, 10.0)
    weights = np.random.default_rng(4).random(dem.shape)
    expected = np.zeros(dem.size)
    for path in _brute_force_paths(dem):
        expected[path] += weights.ravel()[path[0]]
    np.testing.assert_allclose(routing.accumulate(weights).ravel(), expected)
    assert routing.accumulate(np.ones(dem.shape)).max() > 20  # flow really converges


def test_outlets_within_mask_is_where_the_path_leaves_it() -> None:
    dem = ndimage.gaussian_filter(np.random.default_rng(5).random((15, 15)), 1.5) * 100.0
    mask = dem > np.percentile(dem, 40)
    routing = FlowRouting.from_dem(dem, 10.0)
    outlets = routing.outlets_within(mask).ravel()
    for path in _brute_force_paths(dem):
        if not mask.ravel()[path[0]]:
            assert outlets[path[0]] == -1
            continue
        inside = path[0]
        for cell in path[1:]:
            if not mask.ravel()[cell]:
                break
            inside = cell
        assert outlets[path[0]] == inside


def test_d8_receiver_of_a_tilted_valley() -> None:
    # Columns 0 and 2 slope into column 1, which slopes down to the last row.
    rows = np.arange(4)[:, None]
    cols = np.arange(3)[None, :]
    dem = 10.0 * np.abs(cols - 1) + 5.0 * (3 - rows)
    receivers = d8_receivers(dem, 10.0).reshape(4, 3)
    # From the side columns the diagonal drop (15 m over 14.1 m) beats the lateral 10 m.
    assert receivers[0, 0] == 1 * 3 + 1
    assert receivers[0, 2] == 1 * 3 + 1
    assert receivers[0, 1] == 1 * 3 + 1
    assert receivers[3, 1] == -1  # the outlet at the grid edge


def test_merge_small_basins_joins_the_longest_border() -> None:
    labels = np.zeros((6, 8), dtype=np.int64)
    labels[:, :4] = 1
    labels[:, 4:] = 2
    labels[0:3, 3:6] = 3  # 9 cells: 4 edges with glacier 1, 5 with glacier 2
    labels[5, 7] = 4  # 1 cell in a corner of glacier 2
    labels[5, 0] = 5  # 1 cell touching glacier 1 ...
    labels[4, 0] = 0  # ... only at a corner, (4, 1)
    labels[5, 1] = 0
    merged = merge_small_basins(labels, min_cells=10)
    assert set(np.unique(merged)) == {0, 1, 2}
    assert (merged[0:3, 3:6] == 2).all()
    assert merged[5, 7] == 2
    assert merged[5, 0] == 1
    pairs, counts = shared_borders(merged)
    assert pairs.tolist() == [[1, 2]] and counts.tolist() == [3 + 3 + 1]


# --- the world --------------------------------------------------------------------------


def test_same_config_gives_identical_world_and_other_seed_another(world: Landscape) -> None:
    again = generate_landscape(WorldConfig.small(seed=42))
    np.testing.assert_array_equal(again.dem, world.dem)
    assert again.glaciers == world.glaciers
    for year, truth in world.years.items():
        other = again.years[year]
        assert other.ela == truth.ela
        np.testing.assert_array_equal(other.glacier, truth.glacier)
        np.testing.assert_array_equal(other.debris, truth.debris)
        np.testing.assert_array_equal(other.lakes, truth.lakes)
    different = make_dem(WorldConfig.small(seed=7), world.grid, np.random.default_rng(7))
    assert np.abs(different - world.dem).mean() > 50.0


def test_grid_is_the_local_utm_square(world: Landscape) -> None:
    assert world.grid.crs == "EPSG:32632"  # 11 E, 47 N
    assert world.grid.shape == (400, 400)
    assert world.grid.resolution == 10.0
    left, bottom, right, top = world.grid.bounds
    assert left % 10 == 0 and top % 10 == 0
    assert right - left == 4000.0 and top - bottom == 4000.0
    assert world_grid(WorldConfig.small()) == world.grid


def test_terrain_is_a_sink_free_mountain_range(world: Landscape) -> None:
    dem = world.dem
    assert dem.dtype == np.float32 and dem.shape == world.grid.shape
    assert 1500.0 <= dem.min() < 1520.0
    assert 2500.0 < dem.max() <= 3950.0
    # Mountain slopes: a mean of 20-40 degrees, with steep walls.
    gy, gx = np.gradient(dem.astype(np.float64), 10.0)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    assert 20.0 < slope.mean() < 40.0
    assert np.percentile(slope, 99) > 45.0
    # Real drainage: filling changes nothing.
    np.testing.assert_array_equal(fill_sinks(dem).astype(np.float32), dem)


def test_glaciers_are_plausible(world: Landscape) -> None:
    first = min(world.years)
    areas = _areas(world, first)
    n = len(world.glaciers)
    assert 5 <= n <= 40
    assert [g.index for g in world.glaciers] == list(range(1, n + 1))
    ids = [g.glacier_id for g in world.glaciers]
    assert len(set(ids)) == n and all(re.fullmatch(r"SYN-\d{5}", i) for i in ids)
    assert ids[0] == "SYN-00001"
    assert (areas >= 0.01).all()
    # Ordered by decreasing area in the inventory year.
    ref = _areas(world, 2015)
    assert (np.diff(ref) <= 0).all()
    assert 0.1 <= areas.sum() / 16.0 <= 0.3
    assert areas.max() > 0.4  # at least one valley glacier


def test_glaciers_touching_share_a_complex(world: Landscape) -> None:
    info = world.glacier_by_index()
    pairs, _ = shared_borders(world.years[min(world.years)].glacier)
    assert len(pairs) > 0
    for a, b in pairs:
        assert info[int(a)].complex_id == info[int(b)].complex_id
    sizes = pd.Series([g.complex_id for g in world.glaciers]).value_counts()
    assert sizes.max() >= 2
    assert all(re.fullmatch(r"CPX-\d{4}", c) for c in sizes.index)


def test_later_ice_is_a_subset_with_the_same_index(world: Landscape) -> None:
    years = sorted(world.years)
    for earlier, later in zip(years, years[1:]):
        a, b = world.years[earlier].glacier, world.years[later].glacier
        assert not ((b > 0) & (a == 0)).any()
        np.testing.assert_array_equal(b[b > 0], a[b > 0])
        assert world.years[later].ela > world.years[earlier].ela


def test_regional_loss_rate_is_about_the_configured_rate(world: Landscape) -> None:
    years = sorted(world.years)
    for earlier, later in zip(years, years[1:]):
        a0, a1 = _areas(world, earlier).sum(), _areas(world, later).sum()
        rate = (a0 - a1) / a0 / (later - earlier)
        assert 0.01 <= rate <= 0.02, (earlier, later, rate)
        assert rate == pytest.approx(0.015, abs=0.0015)


def test_small_glaciers_lose_proportionally_more(world: Landscape) -> None:
    first, last = min(world.years), max(world.years)
    a0, a1 = _areas(world, first), _areas(world, last)
    small = a0 < 0.2
    assert small.any() and (~small).any()
    assert 1 - a1[small].sum() / a0[small].sum() > 1 - a1[~small].sum() / a0[~small].sum()


def test_loss_rate_follows_the_config() -> None:
    config = dataclasses.replace(WorldConfig.small(seed=3), loss_rate=0.01, years=(2016, 2020))
    slow = generate_landscape(config)
    a0 = (slow.years[2016].glacier > 0).sum()
    a1 = (slow.years[2020].glacier > 0).sum()
    assert (a0 - a1) / a0 / 4 == pytest.approx(0.01, abs=0.001)


def test_debris_is_on_ice_and_lakes_are_flat_and_off_ice(world: Landscape) -> None:
    any_debris = False
    for truth in world.years.values():
        assert not (truth.debris & (truth.glacier == 0)).any()
        assert not (truth.lakes & (truth.glacier > 0)).any()
        any_debris |= bool(truth.debris.any())
    assert any_debris
    lakes = world.years[min(world.years)].lakes
    parts, count = ndimage.label(lakes)
    assert count >= 1
    for part in range(1, count + 1):
        level = world.dem[parts == part]
        assert level.min() == level.max()
    # Debris only low on the tongues, well below the snowline.
    first = world.years[min(world.years)]
    if first.debris.any():
        assert world.dem[first.debris].max() < first.ela - 150.0


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        generate_landscape(dataclasses.replace(WorldConfig.small(), years=(2015, 2015)))
    with pytest.raises(ConfigError, match="loss_rate"):
        generate_landscape(dataclasses.replace(WorldConfig.small(), loss_rate=-0.1))
    with pytest.raises(ConfigError, match="too small"):
        generate_landscape(dataclasses.replace(WorldConfig.small(), size_m=100.0))


# --- truth vectors and files ------------------------------------------------------------


def test_outlines_agree_with_the_label_raster(world: Landscape) -> None:
    for year in world.years:
        outlines = truth_outlines(world, year)
        counts = np.bincount(world.years[year].glacier.ravel())
        assert outlines.crs.to_epsg() == 32632
        assert list(outlines.columns) == ["glacier_id", "complex_id", "year", "area_km2", "geometry"]
        index = outlines["glacier_id"].str[4:].astype(int).to_numpy()
        assert len(outlines) == int((counts[1:] > 0).sum())
        np.testing.assert_allclose(outlines["area_km2"], counts[index] * CELL_KM2)
        np.testing.assert_allclose(outlines.geometry.area / 1e6, outlines["area_km2"], rtol=0.01)
        assert outlines.geometry.is_valid.all()
        union = shapely.union_all(outlines.geometry.values)
        assert union.area == pytest.approx(outlines.geometry.area.sum(), rel=1e-9)  # no overlaps


def test_divides_lie_on_borders_of_two_glaciers_of_a_complex(world: Landscape) -> None:
    year = min(world.years)
    outlines = truth_outlines(world, year).set_index("glacier_id")
    divides = truth_divides(world, year)
    assert len(divides) >= 1
    assert divides.crs == outlines.crs
    for row in divides.itertuples():
        assert row.glacier_id_1 < row.glacier_id_2
        assert outlines.loc[row.glacier_id_1, "complex_id"] == row.complex_id
        assert outlines.loc[row.glacier_id_2, "complex_id"] == row.complex_id
        assert row.length_m == pytest.approx(row.geometry.length) and row.length_m >= 10.0
        for gid in (row.glacier_id_1, row.glacier_id_2):
            assert shapely.distance(row.geometry, outlines.loc[gid, "geometry"].boundary) == 0.0
            assert row.geometry.within(outlines.loc[gid, "geometry"].boundary.buffer(1e-6))
    # Later divides are the same lines, clipped to the remaining ice.
    later = truth_divides(world, max(world.years)).set_index(["glacier_id_1", "glacier_id_2"])
    earlier = divides.set_index(["glacier_id_1", "glacier_id_2"])
    for key, row in later.iterrows():
        assert row.geometry.within(earlier.loc[key, "geometry"].buffer(1e-6))
        assert row.length_m <= earlier.loc[key, "length_m"] + 1e-6


def test_inventory_has_rgi_like_attributes(world: Landscape) -> None:
    inv = inventory(world)
    assert inv.crs.to_epsg() == 4326
    for column in ("glacier_id", "RGIId", "area_km2", "zmin", "zmax", "zmed", "slope", "aspect", "complex_id"):
        assert column in inv.columns
    assert inv["glacier_id"].is_unique and inv["RGIId"].str.fullmatch(r"RGI60-99\.\d{5}").all()
    assert (inv["zmin"] <= inv["zmed"]).all() and (inv["zmed"] <= inv["zmax"]).all()
    assert inv["slope"].between(0, 90).all() and inv["aspect"].between(0, 360).all()
    np.testing.assert_allclose(inv["area_km2"], _areas(world, 2015)[: len(inv)])
    assert inv.total_bounds[0] > 10.9 and inv.total_bounds[2] < 11.1


def test_write_truth_writes_readable_files(world: Landscape, tmp_path) -> None:
    written = write_truth(world, tmp_path)
    labels, grid, names, _ = read_raster(tmp_path / "truth" / "2019" / "glaciers.tif", ["glacier_index"])
    assert names == ("glacier_index",) and labels.dtype == np.int32
    assert grid.crs == "EPSG:32632" and grid.transform == world.grid.transform
    np.testing.assert_array_equal(labels[0], world.years[2019].glacier)
    dem, dem_grid, _, _ = read_raster(written["dem"], ["elevation"])
    assert dem_grid.crs == "EPSG:32632"
    np.testing.assert_array_equal(dem[0], world.dem)
    surface, _, names, _ = read_raster(tmp_path / "truth" / "2023" / "surface.tif")
    assert names == ("debris", "lake")
    np.testing.assert_array_equal(surface[0].astype(bool), world.years[2023].debris)
    for year in world.years:
        path = tmp_path / "truth" / str(year) / "outlines.gpkg"
        outlines = read_layer(path, "outlines")
        divides = read_layer(path, "divides")
        assert outlines.crs.to_epsg() == 32632 and divides.crs.to_epsg() == 32632
        assert len(outlines) == int((_areas(world, year) > 0).sum())
    inv = read_layer(tmp_path / "inventory_2015.gpkg", "inventory")
    assert inv.crs.to_epsg() == 4326 and len(inv) == len(world.glaciers)
    table = pd.read_csv(tmp_path / "truth" / "glaciers.csv")
    assert list(table.columns) == [
        "index", "glacier_id", "complex_id", "area_km2_2015", "area_km2_2019", "area_km2_2023"
    ]
    np.testing.assert_allclose(table["area_km2_2023"], _areas(world, 2023), atol=1e-4)
    meta = json.loads((tmp_path / "truth" / "world.json").read_text())
    assert meta["ela_m"]["2015"] == pytest.approx(world.years[2015].ela, abs=0.1)
    assert not list(tmp_path.rglob(".*.tmp*"))  # nothing left over from the atomic writes


def test_truth_for_a_missing_year_is_refused(world: Landscape) -> None:
    with pytest.raises(InvalidInputError, match="2016"):
        truth_outlines(world, 2016)
