"""glacimap fetch --aoi (wall-to-wall tiles) against a real local STAC API serving the small world,
and the whole wall-to-wall chain: fetch --aoi, predict, outlines --restrict none."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.warp import transform_bounds

from glacimap.errors import ConfigError, InvalidInputError, OutputExistsError, PartialFailureError
from glacimap.fetch import MANIFEST_COLUMNS, FetchResult, run_fetch
from glacimap.fetch.aoi import (
    AoiPlan,
    aoi_composite,
    assemble_tile,
    claim_workspace,
    load_aoi,
    plan_aoi,
    rank_tile_candidates,
    tile_id,
)
from glacimap.fetch.chips import CHIP_BANDS, FetchParams, project, read_selection
from glacimap.fetch.plan import CandidateScore, GlacierJob, Scene
from glacimap.inventory import load_inventory, save_inventory
from glacimap.outlines import run_outlines
from glacimap.predict import run_predict
from glacimap.rasters import Grid
from glacimap.settings import FetchSettings, OutlinesSettings, PredictSettings, resolve_settings
from glacimap.vectors import read_layer
from glacimap.workspace import Workspace

YEAR = 2023
TILE_M = 2500.0  # the small world (4 km) in 2 x 2 tiles


def _world_aoi(world) -> tuple[float, float, float, float]:
    with rasterio.open(world.root / "truth" / "dem.tif") as src:
        bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    return tuple(round(v, 4) for v in bounds)  # type: ignore[return-value]


def _fetch(aoi, stac, work: Path, **extra) -> FetchResult:
    settings = FetchSettings(aoi=aoi, year=YEAR, stac_url=stac.stac_url, work=work, workers=1, aoi_tile=TILE_M, **extra)
    try:
        return run_fetch(settings)
    except PartialFailureError as exc:
        return exc.result


@pytest.fixture(scope="module")
def fetched(small_world, world_stac, tmp_path_factory) -> tuple[Workspace, FetchResult]:
    work = tmp_path_factory.mktemp("aoi")
    return Workspace(work), _fetch(_world_aoi(small_world), world_stac, work)


# -- the tile plan ----------------------------------------------------------------------------------
def test_tiles_line_up_and_cover_the_aoi() -> None:
    bbox = (17.5, 69.0, 18.0, 69.3)  # 2.75 degrees east of its UTM zone's central meridian
    plan = plan_aoi(bbox, 10.0, 2000.0)
    grid = plan.grid
    assert grid.crs == "EPSG:32633" and grid.transform.c % 10 == 0 and grid.transform.f % 10 == 0
    outline = project(shapely.box(*bbox).segmentize(0.01), "EPSG:4326", grid.crs)
    boxes = [shapely.box(*t.grid.bounds) for t in plan.tiles]
    union = shapely.union_all(boxes)
    assert outline.difference(union).area == pytest.approx(0.0, abs=1e-6)  # the AOI is covered
    assert union.area == pytest.approx(sum(b.area for b in boxes))  # and nothing overlaps
    for tile in plan.tiles:
        rows, cols = plan.window(tile)
        assert tile.id == tile_id(tile.row, tile.col) == f"aoi-r{tile.row:03d}-c{tile.col:03d}"
        # each tile is a window of the one AOI grid: same lattice, edges shared with neighbours
        assert tile.grid.transform.c == grid.transform.c + cols.start * 10.0
        assert tile.grid.transform.f == grid.transform.f - rows.start * 10.0
        assert tile.grid.shape == (rows.stop - rows.start, cols.stop - cols.start)
        assert rows.stop <= grid.height and cols.stop <= grid.width
    assert max(t.grid.width for t in plan.tiles) == 200 and plan.tile_size == 2000.0
    # the AOI is turned by 2.6 degrees on the UTM grid: 8 corner tiles miss it and are left out
    assert grid.shape == (3433, 2136) and len(plan.tiles) == 18 * 11 - 8
    assert AoiPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_too_many_tiles_is_an_error_naming_the_aoi(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"AOI 10,46,11,47 needs 8\d\d\d tiles of 1000 m .* more than 2500"):
        run_fetch(
            FetchSettings(aoi="10,46,11,47", year=YEAR, aoi_tile=1000, work=tmp_path, stac_url="http://127.0.0.1:9")
        )
    assert not Workspace(tmp_path).aoi.exists()


def test_aoi_outside_the_catalogue_is_an_error(world_server, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"no s2 scene at .* intersects the AOI 20,60,20.02,60.02"):
        _fetch((20.0, 60.0, 20.02, 60.02), world_server, tmp_path)


def test_workspace_of_another_run_is_refused(small_world, tmp_path: Path) -> None:
    aoi = (10.98, 46.99, 11.0, 47.0)
    plan = plan_aoi(aoi, 10.0, TILE_M)
    inventory_ws = Workspace(tmp_path / "inventory")
    save_inventory(load_inventory(small_world.root / "inventory_2015.gpkg"), inventory_ws.inventory)
    with pytest.raises(OutputExistsError, match="holds an inventory-mode run"):
        claim_workspace(plan, inventory_ws, overwrite=False)

    ws = Workspace(tmp_path / "aoi")
    claim_workspace(plan, ws, overwrite=False)
    claim_workspace(plan, ws, overwrite=False)  # the same AOI again: fine (another year, a resume)
    other = plan_aoi((10.98, 46.99, 11.01, 47.0), 10.0, TILE_M)
    with pytest.raises(OutputExistsError, match=r"holds another AOI \(10.98,46.99,11,47, 2500 m tiles"):
        claim_workspace(other, ws, overwrite=False)
    claim_workspace(other, ws, overwrite=True)
    assert load_aoi(ws) == other
    with pytest.raises(OutputExistsError, match=r"holds a wall-to-wall \(--aoi\) run"):
        run_fetch(FetchSettings(inventory=small_world.root / "inventory_2015.gpkg", year=YEAR, work=ws.root))


def test_aoi_tile_must_be_whole_cells() -> None:
    with pytest.raises(ConfigError, match=r"aoi_tile \(105 m\) must be a whole number of at least 32 cells of 10 m"):
        resolve_settings(FetchSettings, {"year": YEAR, "aoi": "10,46,11,47", "aoi_tile": 105}, environ={})
    with pytest.raises(ConfigError, match="at least 32 cells"):
        resolve_settings(FetchSettings, {"year": YEAR, "aoi": "10,46,11,47", "aoi_tile": 300}, environ={})
    # without --aoi the tile size is not used, so any resolution goes
    assert FetchSettings(inventory="x.gpkg", year=YEAR, resolution=30.0).aoi_tile == 10_000.0


def test_compositing_is_the_default_in_aoi_mode() -> None:
    assert aoi_composite(FetchSettings(aoi="10,46,11,47", year=YEAR))
    assert not aoi_composite(FetchSettings(aoi="10,46,11,47", year=YEAR, composite=False))


def test_ranking_puts_scenes_passing_the_rule_first() -> None:
    def score(scene: str, coverage: float, cloud: float, tile_cloud: float, rejected: str | None) -> CandidateScore:
        return CandidateScore("t", scene, coverage, cloud, float("nan"), tile_cloud, 0, rejected)

    scores = [
        score("partial-clear", 0.5, 0.0, 10.0, "coverage 0.50 < 0.90"),
        score("full-some-cloud", 0.95, 0.2, 30.0, None),
        score("full-less-cloud", 0.95, 0.1, 40.0, None),
        score("partial-cloudy", 0.5, 0.6, 5.0, "cloud 0.60 > 0.30"),
        score("all-cloud", 1.0, 1.0, 50.0, "cloud 1.00 > 0.30"),
    ]
    ranked = [s.scene_id for s in rank_tile_candidates(scores, composite=True)]
    assert ranked == ["full-less-cloud", "full-some-cloud", "partial-clear", "partial-cloudy"]
    assert [s.scene_id for s in rank_tile_candidates(scores, composite=False)] == ranked[:2]


def test_composite_fills_from_the_next_ranked_scenes(tmp_path: Path) -> None:
    grid = Grid("EPSG:32632", Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_200_040.0), 4, 4)
    specs = (("A", 1, 5.0, 0.5), ("B", 2, 10.0, 0.75), ("C", 3, 1.0, 0.75), ("D", 4, 2.0, 0.9))
    scenes = [
        Scene(n, "sentinel-2-l2a", "s2", datetime(2023, 9, d, tzinfo=timezone.utc), {}, b"", c) for n, d, c, _ in specs
    ]
    clear = {n: np.zeros((4, 4), dtype=bool) for n, *_ in specs}
    data = {n: np.ones((4, 4), dtype=bool) for n, *_ in specs}
    clear["A"][:2, :3] = True  # the base: clear top left; no data in the last column
    data["A"][:, 3] = False
    clear["C"][0] = True  # ranks 2nd (cloud ties with B, less tile cloud): fills (0, 3) only
    clear["B"][2] = True  # ranks 3rd: fills row 2
    clear["D"][:2, :3] = True  # ranks 4th: clear only where A is, supplies nothing
    job = GlacierJob("aoi-r000-c000", b"", grid, tuple(scenes))
    scores = [
        CandidateScore(job.glacier_id, n, 1.0, cloud, float("nan"), c, 0, f"cloud {cloud} > 0.30")
        for n, _, c, cloud in specs
    ]
    params = FetchParams(buffer=0.0, min_coverage=0.9, max_cloud=0.3, target=date(2023, 9, 1), composite=True)
    record = assemble_tile(
        job,
        params,
        tmp_path / "tile.tif",
        scores,
        optical=lambda scene: (np.full((6, 4, 4), ord(scene.id), dtype=np.float32), clear[scene.id], data[scene.id]),
        elevation=lambda: np.full((4, 4), 2000.0, dtype=np.float32),
        dem_ids=["DEM"],
    )
    assert record["scene_ids"] == ["A", "C", "B"] and record["scene_dates"] == [
        "2023-09-01",
        "2023-09-03",
        "2023-09-02",
    ]
    assert [c["rank"] for c in record["candidates"]] == [1, 3, 2, 4]
    # 11 of 16 pixels clear; the 5 others have data (B, C, D see everything) but stay cloudy
    assert record["valid_fraction"] == 0.6875 and record["coverage"] == 1.0 and record["cloud_fraction"] == 0.3125
    with rasterio.open(tmp_path / "tile.tif") as src:
        names = src.descriptions
        source, valid, red = src.read(names.index("source") + 1), src.read(names.index("valid") + 1), src.read(3)
    expected = np.array([[1, 1, 1, 2], [1, 1, 1, 0], [3, 3, 3, 3], [0, 0, 0, 0]])
    np.testing.assert_array_equal(source, expected)
    np.testing.assert_array_equal(valid, expected > 0)
    assert (
        red[0, 3] == ord("C") and (red[2] == ord("B")).all() and red[3, 0] == ord("A")
    )  # A's values where none is clear


# -- against the small world ------------------------------------------------------------------------------
def test_tile_chips_are_glacier_chips_on_one_lattice(fetched) -> None:
    ws, result = fetched
    plan = load_aoi(ws)
    assert plan is not None and len(plan.tiles) == 4 and result.glaciers == 4 and result.ok == 4
    manifest = pd.read_parquet(ws.manifest(YEAR))
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert sorted(manifest["glacier_id"]) == [t.id for t in plan.tiles] and (manifest["status"] == "ok").all()
    for tile in plan.tiles:
        with rasterio.open(ws.chip(YEAR, tile.id)) as src:
            assert src.descriptions == (*CHIP_BANDS, "source", "valid")
            assert src.crs.to_string() == plan.grid.crs and src.shape == tile.grid.shape
            assert src.transform == tile.grid.transform
            source, valid = src.read(len(CHIP_BANDS) + 1), src.read(len(CHIP_BANDS) + 2)
        record = read_selection(ws.chip(YEAR, tile.id))
        assert record["glacier_id"] == tile.id and len(record["scene_ids"]) == len(record["scene_dates"])
        assert set(np.unique(source)) == set(range(len(record["scene_ids"]) + 1))  # 0: no clear scene
        assert ((source > 0) == (valid > 0)).all()
    right_of_first = plan.tiles[0].grid.bounds[2]
    assert plan.tiles[1].grid.bounds[0] == right_of_first  # neighbours share their edge exactly


def test_compositing_cuts_cloud_far_below_the_least_cloudy_scene(fetched) -> None:
    ws, result = fetched
    manifest = pd.read_parquet(ws.manifest(YEAR))
    candidates = pd.read_parquet(ws.candidates(YEAR))
    # Cloud among the pixels with data: 9.2 % after compositing, 31.8 % in each tile's least
    # tile-cloudy scene (measured: 0.0915 and 0.3185).
    assert result.mean_cloud_chosen < 0.12 and result.mean_cloud_naive > 0.28
    assert result.mean_cloud_naive > 3 * result.mean_cloud_chosen
    # Clear share of the whole AOI (no data counts as not clear): 81 % against 52 %.
    clear = manifest["valid_fraction"].mean()
    naive = candidates.merge(
        manifest[["glacier_id", "naive_scene_id"]],
        left_on=["glacier_id", "scene_id"],
        right_on=["glacier_id", "naive_scene_id"],
    )
    naive_clear = (naive["coverage"] * (1 - naive["cloud_fraction"])).mean()
    assert clear > 0.78 and naive_clear < 0.6 and clear - naive_clear > 0.2
    assert (manifest["n_candidates"] == 5).all()


def test_resume_reads_nothing(small_world, world_server, fetched) -> None:
    ws, first = fetched
    world_server.reset_counters()
    again = _fetch(_world_aoi(small_world), world_server, ws.root)
    assert again.skipped == first.ok == 4 and again.ok == 0
    assert sum(world_server.bytes_served().values()) == 0
    assert again.mean_cloud_chosen == first.mean_cloud_chosen


def test_wall_to_wall_chain_matches_the_truth_area(small_world, fetched) -> None:
    ws, _ = fetched
    predicted = run_predict(PredictSettings(work=ws.root, year=YEAR, model="synthetic-demo", workers=1, overwrite=True))
    assert predicted.predicted == 4
    result = run_outlines(OutlinesSettings(work=ws.root, year=YEAR, restrict="none", overwrite=True))
    outlines = read_layer(result.path, "outlines")
    with rasterio.open(small_world.root / "truth" / str(YEAR) / "glaciers.tif") as src:
        truth_km2 = float((src.read(1) > 0).sum()) * src.res[0] * src.res[1] / 1e6
    # measured: 2.478 km2 mapped against 2.400 km2 of truth (+3 %), in 20 glaciers
    assert result.total_area_km2 == pytest.approx(truth_km2, rel=0.15)
    assert outlines["glacier_id"].str.fullmatch(r"G\d{6}E\d{5}N(-\d+)?").all() and outlines["glacier_id"].is_unique
    assert (outlines["area_low_km2"] <= outlines["area_km2"] + 1e-9).all()
    assert (outlines["area_high_km2"] >= outlines["area_km2"] - 1e-9).all()
    assert outlines["date"].str.startswith("2023-").all() and outlines["scene_ids"].notna().all()
    assert len(read_layer(result.path, "divides")) > 0  # complexes were split
