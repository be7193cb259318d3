"""The synthetic world on disk: STAC catalogue, encodings, masks, footprints, trap, DEM tiles.

Rendered once per module from a hand-made 3 x 3 km landscape (``toy_landscape``), which does
not depend on the landscape generator; the full ``generate_world`` is exercised on the small
preset when the generator is installed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio import features
from rasterio.merge import merge
from rasterio.warp import Resampling, reproject
from scipy import ndimage
from shapely.geometry import box, shape

from glacimap.errors import OutputExistsError
from glacimap.synthetic import catalog, scenes
from glacimap.synthetic.model import Landscape, WorldConfig
from glacimap.synthetic.surfaces import SPECTRA, Surface
from glacimap.synthetic.world import (
    LANDSAT_DATES,
    WorldInfo,
    load_world,
    render_world,
    toy_landscape,
)

YEARS = (2019, 2023)


@pytest.fixture(scope="module")
def landscape() -> Landscape:
    return toy_landscape(size_px=300, seed=7, years=YEARS)


@pytest.fixture(scope="module")
def world(landscape: Landscape, tmp_path_factory: pytest.TempPathFactory) -> WorldInfo:
    return render_world(landscape, tmp_path_factory.mktemp("world"), workers=2)


@pytest.fixture(scope="module")
def items(world: WorldInfo) -> list[dict[str, Any]]:
    return catalog.read_items(world.stac_dir)


def _read(world: WorldInfo, item: dict[str, Any], key: str) -> tuple[np.ndarray, Any]:
    with rasterio.open(world.stac_dir / item["assets"][key]["href"]) as src:
        return src.read(1), src


def _to_world(data: np.ndarray, transform: Any, grid: Any, fill: float = 0) -> np.ndarray:
    """Place an asset on the landscape grid (repeating coarser pixels; Landsat by nearest)."""
    out = np.full(grid.shape, fill, dtype=data.dtype)
    reproject(data, out, src_transform=transform, src_crs=grid.crs, dst_transform=grid.transform,
              dst_crs=grid.crs, resampling=Resampling.nearest, src_nodata=None, dst_nodata=None)
    return out


def _of(items: list[dict[str, Any]], collection: str, year: int | None = None) -> list[dict[str, Any]]:
    return [it for it in items if it["collection"] == collection
            and (year is None or it["properties"]["datetime"].startswith(str(year)))]


# -- layout and STAC ---------------------------------------------------------------------------------
def test_catalogue_layout_and_collections(world: WorldInfo, items: list[dict[str, Any]]) -> None:
    collections = catalog.read_collections(world.stac_dir)
    assert [c["id"] for c in collections] == list(catalog.COLLECTION_IDS)
    counts = {cid: len(_of(items, cid)) for cid in catalog.COLLECTION_IDS}
    assert counts == {catalog.S2: 2 * 5 * len(YEARS), catalog.LANDSAT: LANDSAT_DATES * len(YEARS), catalog.S1: 4 * len(YEARS),
                      catalog.DEM: 4}
    for col in collections:
        assert col["license"] == "CC0-1.0" and col["type"] == "Collection"
        members = _of(items, col["id"])
        (w, s, e, n), = col["extent"]["spatial"]["bbox"]
        assert all(w <= it["bbox"][0] and e >= it["bbox"][2] and s <= it["bbox"][1] and n >= it["bbox"][3] for it in members)
        start, end = col["extent"]["temporal"]["interval"][0]
        assert start == min(it["properties"]["datetime"] for it in members)
        assert set(col["item_assets"]) == set(members[0]["assets"])
    for item in items:
        for key, asset in item["assets"].items():
            href = asset["href"]
            assert not href.startswith("/") and "://" not in href
            assert href == f"assets/{item['collection']}/{item['id']}/{key}.tif"
            assert (world.stac_dir / href).is_file()


def test_items_are_stac_with_the_properties_clients_filter_on(world: WorldInfo, items: list[dict[str, Any]]) -> None:
    for item in items:
        parsed = pystac.Item.from_dict(item)
        assert parsed.id == item["id"] and parsed.collection_id == item["collection"]
        assert item["stac_version"] == "1.0.0" and item["type"] == "Feature"
        props = item["properties"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", props["datetime"])
        assert props["platform"] and props["constellation"]
        assert props["proj:epsg"] == int(props["proj:code"].split(":")[1])
        geom = shape(item["geometry"])
        assert geom.is_valid and np.allclose(geom.bounds, item["bbox"], atol=1e-7)
        for asset in item["assets"].values():
            with rasterio.open(world.stac_dir / asset["href"]) as src:
                assert list(asset["proj:shape"]) == [src.height, src.width]
                assert np.allclose(asset["proj:transform"], list(src.transform)[:6])
                assert src.crs.to_epsg() == props["proj:epsg"]
                assert src.nodata == asset["raster:bands"][0]["nodata"]
                assert src.profile["tiled"] and src.profile["blockxsize"] == 256 or src.width < 256
                assert src.compression.name.lower() == "deflate"
    s2 = _of(items, catalog.S2)
    assert all(re.fullmatch(r"S2[AB]_\d\d[A-Z]{3}_\d{8}_0_L2A", it["id"]) for it in s2)
    assert all(0.0 <= it["properties"]["eo:cloud_cover"] <= 100.0 for it in s2)
    assert {it["properties"]["s2:processing_baseline"] for it in _of(items, catalog.S2, 2019)} == {"02.12"}
    assert {it["properties"]["s2:processing_baseline"] for it in _of(items, catalog.S2, 2023)} == {"05.09"}
    landsat = _of(items, catalog.LANDSAT)
    assert all(re.fullmatch(r"LC0[89]_L2SP_\d{6}_\d{8}_02_T1", it["id"]) for it in landsat)
    assert {it["properties"]["platform"] for it in _of(items, catalog.LANDSAT, 2019)} == {"landsat-8"}
    s1 = _of(items, catalog.S1)
    assert all(re.fullmatch(r"S1[AB]_IW_GRDH_1SDV_\d{8}T\d{6}_\d{8}T\d{6}_\d{6}_[0-9A-F]{6}", it["id"]) for it in s1)
    for year in YEARS:
        states = [it["properties"]["sat:orbit_state"] for it in _of(items, catalog.S1, year)]
        assert sorted(states) == ["ascending", "ascending", "descending", "descending"]
    for it in s1:  # absolute and relative orbits agree (175-orbit cycle)
        offset = 73 if it["properties"]["platform"] == "sentinel-1a" else 27
        assert (it["properties"]["sat:absolute_orbit"] - offset) % 175 + 1 == it["properties"]["sat:relative_orbit"]


def test_world_json_roundtrip_and_overwrite_guard(world: WorldInfo, landscape: Landscape) -> None:
    loaded = load_world(world.root)
    assert loaded == world  # timings are not compared
    data = json.loads((world.root / "world.json").read_text())
    assert data["ela"] == {str(y): landscape.years[y].ela for y in YEARS}
    assert len(data["scenes"]) == len(catalog.read_items(world.stac_dir))
    with pytest.raises(OutputExistsError):
        render_world(landscape, world.root)


# -- footprints and encodings ------------------------------------------------------------------------
def test_tiles_are_partial_and_item_geometry_matches_valid_pixels(world: WorldInfo, items: list[dict[str, Any]]) -> None:
    to_utm = Transformer.from_crs("EPSG:4326", world.crs, always_xy=True)
    world_area = (world.config.size_m) ** 2
    shares = {}
    for item in _of(items, catalog.S2) + _of(items, catalog.LANDSAT):
        key = "red"
        data, src = _read(world, item, key)
        valid = data != 0
        geom = shapely.transform(shape(item["geometry"]), lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
        drawn = features.rasterize([geom], out_shape=data.shape, transform=src.transform).astype(bool)
        iou = (valid & drawn).sum() / (valid | drawn).sum()
        assert iou > 0.97, item["id"]
        shares[item["id"]] = valid.sum() * src.transform.a ** 2 / world_area
        assert shares[item["id"]] == pytest.approx(geom.area / world_area, abs=0.02)
    assert all(0.5 < s < 0.9 for s in shares.values()), shares
    # Different tiles of one date cover different parts of the world.
    for year in YEARS:
        by_date: dict[str, list[str]] = {}
        for it in _of(items, catalog.S2, year):
            by_date.setdefault(it["properties"]["datetime"], []).append(it["id"])
        assert all(len(ids) == 2 for ids in by_date.values())


def _truth_on(grid_item: tuple[np.ndarray, Any], labels: np.ndarray, landscape: Landscape) -> np.ndarray:
    data, src = grid_item
    out = np.zeros(data.shape, dtype=labels.dtype)
    reproject(labels, out, src_transform=landscape.grid.transform, src_crs=landscape.grid.crs,
              dst_transform=src.transform, dst_crs=landscape.grid.crs, resampling=Resampling.mode)
    return out


def _share_on(grid_item: tuple[np.ndarray, Any], mask: np.ndarray, landscape: Landscape) -> np.ndarray:
    """Share of each product pixel covered by a 10 m truth mask."""
    data, src = grid_item
    out = np.zeros(data.shape, dtype=np.float32)
    reproject(mask.astype(np.float32), out, src_transform=landscape.grid.transform, src_crs=landscape.grid.crs,
              dst_transform=src.transform, dst_crs=landscape.grid.crs, resampling=Resampling.average)
    return out


def _scene(world: WorldInfo, item_id: str) -> Any:
    return next(s for s in world.scenes if s.item_id == item_id)


def test_reflectance_decodes_to_the_surface_spectra(world: WorldInfo, items: list[dict[str, Any]], landscape: Landscape) -> None:
    """Decoded DNs, divided by the illumination, give back each surface's spectrum."""
    normals = scenes.terrain_normals(landscape.dem, 10.0)
    pooled: dict[tuple[str, Surface], list[np.ndarray]] = {}
    for item in _of(items, catalog.S2) + _of(items, catalog.LANDSAT):
        rec = _scene(world, item["id"])
        sun = scenes.Sun(rec.details["sun_zenith"], rec.details["sun_azimuth"])
        light = scenes.illumination(landscape.dem, 10.0, normals, sun)
        is_s2 = item["collection"] == catalog.S2
        red, src = _read(world, item, "red")
        if is_s2:
            refl = scenes.decode_s2(red, item["properties"]["s2:processing_baseline"])
            scl, scl_src = _read(world, item, "scl")
            # Away (100 m) from every cloud, haze and cloud shadow.
            cloudless = ndimage.binary_erosion(np.isin(scl, [2, 4, 5, 6, 11]), iterations=3)
            clear = _to_world(cloudless.astype(np.uint8), scl_src.transform, landscape.grid) > 0
        else:
            refl = scenes.decode_landsat(red)
            qa, _ = _read(world, item, "qa_pixel")
            cloudless = ndimage.binary_erosion((qa & 0b11111) == 0, iterations=4)
            clear = _to_world(cloudless.astype(np.uint8), src.transform, landscape.grid) > 0
        refl = _to_world(np.nan_to_num(refl, nan=-1.0), src.transform, landscape.grid, fill=-1.0)
        irradiance = 0.85 * light.direct + 0.15 * light.sky_view
        truth = landscape.years[int(rec.datetime[:4])]
        lit = clear & (light.direct > 0.3) & (refl > -1.0)
        core = ~(truth.glacier > 0) & ~truth.lakes
        cases = {
            Surface.SNOW: (truth.glacier > 0) & (landscape.dem > rec.snowline_m + 150.0),
            # Pure ice needs 10 m pixels: at 30 m, ice near the snowline mixes with snow.
            Surface.ICE: (truth.glacier > 0) & ~truth.debris & (landscape.dem < rec.snowline_m - 80.0) & is_s2,
            Surface.ROCK: core & (landscape.dem < rec.snowline_m - 200.0) & (landscape.dem > world.ela[2019] - 600.0),
        }
        for surface, where in cases.items():
            sel = where & lit
            pooled.setdefault((item["collection"], surface), []).append(refl[sel] / irradiance[sel])
    checked = set()
    for (collection, surface), ratios in pooled.items():
        values = np.concatenate(ratios)
        if values.size < 200:
            continue
        # Texture (albedo variation) and 30 m mixing stay within a few per cent for the median.
        assert float(np.median(values)) == pytest.approx(SPECTRA[surface][2], rel=0.06), (collection, surface)
        checked.add((collection, surface))
    assert {s for c, s in checked if c == catalog.S2} == {Surface.SNOW, Surface.ICE, Surface.ROCK}
    assert {s for c, s in checked if c == catalog.LANDSAT} == {Surface.SNOW, Surface.ROCK}


@pytest.mark.parametrize("collection", [catalog.S2, catalog.LANDSAT])
def test_products_decode_to_the_rendered_reflectance(world: WorldInfo, items: list[dict[str, Any]], landscape: Landscape,
                                                     collection: str) -> None:
    """Re-render one date in memory: the published DNs decode to it within quantisation."""
    from glacimap.synthetic import world as world_module

    state = world_module._World.build(landscape)
    plan = (world_module._plan_s2 if collection == catalog.S2 else world_module._plan_landsat)(state, 2023)
    world_module._plan_clouds(state, plan)
    acq = plan.acquisitions[0]
    opacity, cirrus, shadow = world_module._cloud_fields(state, acq)
    light = scenes.illumination(landscape.dem, 10.0, state.normals, acq.sun)
    rng = world_module._rng(landscape.config.seed, "render", collection, acq.when.isoformat())
    surfaces = state.surfaces(2023, acq.snowline)
    sigma = 0.004 if collection == catalog.S2 else 0.005
    refl = scenes.render_reflectance(surfaces, state.texture, light, opacity, cirrus, shadow, rng, sigma, noise=state.noise)
    item = next(it for it in items if it["id"] == acq.items[0].item_id)
    for b, key in ((2, "red"), (4, "swir16")):
        dn, src = _read(world, item, key)
        product = scenes.lattice_grid(landscape.grid, src.transform.a, origin=15.0 if collection == catalog.LANDSAT else 0.0)
        expected = scenes.resample_mean(refl[b], landscape.grid, product) if src.transform.a > 10 else refl[b]
        r0 = round((product.bounds[3] - src.transform.f) / src.transform.a)
        c0 = round((src.transform.c - product.bounds[0]) / src.transform.a)
        expected = expected[r0 : r0 + dn.shape[0], c0 : c0 + dn.shape[1]]
        if collection == catalog.S2:
            decoded = scenes.decode_s2(dn, item["properties"]["s2:processing_baseline"])
            step = 1e-4
        else:
            decoded = scenes.decode_landsat(dn)
            step = 0.0000275
        valid = dn != 0
        assert valid.mean() > 0.5
        assert np.abs(decoded[valid] - expected[valid]).max() <= step / 2 + 1e-6


def test_the_band_ratio_maps_clean_ice_but_misses_debris(world: WorldInfo, items: list[dict[str, Any]], landscape: Landscape) -> None:
    """red/swir16 > 3.2 and blue > 0.17 on decoded products: clean ice yes, debris no."""
    truth = landscape.years[2023]
    normals = scenes.terrain_normals(landscape.dem, 10.0)
    clean_hits, debris_hits = [], []
    for item in _of(items, catalog.S2, 2023):
        baseline = item["properties"]["s2:processing_baseline"]
        red, src = _read(world, item, "red")
        blue, _ = _read(world, item, "blue")
        swir, swir_src = _read(world, item, "swir16")
        scl, scl_src = _read(world, item, "scl")
        red, blue = (_to_world(scenes.decode_s2(a, baseline), src.transform, landscape.grid, fill=np.nan) for a in (red, blue))
        swir = _to_world(scenes.decode_s2(swir, baseline), swir_src.transform, landscape.grid, fill=np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            mask = (red / swir > 3.2) & (blue > 0.17)
        scl = _to_world(scl, scl_src.transform, landscape.grid)
        clear = np.isin(scl, [2, 4, 5, 6, 11])
        rec = _scene(world, item["id"])
        sun = scenes.Sun(rec.details["sun_zenith"], rec.details["sun_azimuth"])
        lit = scenes.illumination(landscape.dem, 10.0, normals, sun).direct > 0.3
        clean_hits.append(mask[(truth.glacier > 0) & ~truth.debris & clear & lit])
        debris_hits.append(mask[truth.debris & clear & (landscape.dem < rec.snowline_m - 100.0)])
    clean, debris = np.concatenate(clean_hits), np.concatenate(debris_hits)
    assert clean.size > 1000 and debris.size > 100
    assert clean.mean() > 0.95
    assert debris.mean() < 0.05


def test_masks_follow_truth_and_cloud_cover_matches(world: WorldInfo, items: list[dict[str, Any]], landscape: Landscape) -> None:
    lake_scl, ice_scl, ice_snow_bit, rock_water_bit = [], [], [], []
    for item in _of(items, catalog.S2):
        scl, src = _read(world, item, "scl")
        valid = scl != 0
        cloud_share = 100.0 * np.isin(scl[valid], sorted(scenes.SCL_CLOUDS)).mean()
        assert cloud_share == pytest.approx(item["properties"]["eo:cloud_cover"], abs=2.0), item["id"]
        assert item["properties"]["s2:nodata_pixel_percentage"] == pytest.approx(100.0 * (1 - valid.mean()), abs=0.01)
        truth = landscape.years[int(item["properties"]["datetime"][:4])]
        free = valid & ~np.isin(scl, [3, 8, 9, 10])
        lake_scl.append(scl[free & (_share_on((scl, src), truth.lakes, landscape) > 0.99)])
        ice_scl.append(scl[free & (_share_on((scl, src), (truth.glacier > 0) & ~truth.debris, landscape) > 0.99)])
    for item in _of(items, catalog.LANDSAT):
        qa, src = _read(world, item, "qa_pixel")
        valid = qa != 1
        cloudy = (qa & ((1 << scenes.QA_CLOUD) | (1 << scenes.QA_CIRRUS))) != 0
        assert 100.0 * cloudy[valid].mean() == pytest.approx(item["properties"]["eo:cloud_cover"], abs=0.01)
        assert not (cloudy & ((qa >> scenes.QA_CLEAR) & 1 == 1) & ((qa >> scenes.QA_CLOUD) & 1 == 1)).any()
        truth = landscape.years[int(item["properties"]["datetime"][:4])]
        clear = valid & ((qa & 0b11110) == 0)
        ice = _share_on((qa, src), (truth.glacier > 0) & ~truth.debris, landscape) > 0.99
        ice_snow_bit.append((qa[ice & clear] >> scenes.QA_SNOW) & 1)
        rock = _share_on((qa, src), (truth.glacier == 0) & ~truth.lakes, landscape) > 0.99
        rock_water_bit.append((qa[rock & clear] >> scenes.QA_WATER) & 1)
    lake_scl, ice_scl = np.concatenate(lake_scl), np.concatenate(ice_scl)
    ice_snow_bit, rock_water_bit = np.concatenate(ice_snow_bit), np.concatenate(rock_water_bit)
    assert lake_scl.size > 20 and (lake_scl == scenes.SCL_WATER).mean() > 0.9
    # Clean ice and snow are class 11, or 2 (dark) where they lie in terrain shadow.
    assert ice_scl.size > 500 and np.isin(ice_scl, [2, 11]).mean() > 0.97
    assert 0.6 < (ice_scl == 11).mean()
    assert ice_snow_bit.size > 100 and ice_snow_bit.mean() > 0.6
    assert rock_water_bit.size > 1000 and rock_water_bit.mean() < 0.01


# -- the trap ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("collection", [catalog.S2, catalog.LANDSAT])
def test_least_cloudy_scene_hides_glaciers_another_scene_sees(
    world: WorldInfo, items: list[dict[str, Any]], landscape: Landscape, collection: str
) -> None:
    for year in YEARS:
        trap = world.trap(year, collection)
        members = _of(items, collection, year)
        covers = {it["id"]: it["properties"]["eo:cloud_cover"] for it in members}
        assert min(covers, key=covers.get) == trap.scene
        assert trap.cloud_cover == covers[trap.scene]
        assert trap.clear_scene != trap.scene and covers[trap.clear_scene] > covers[trap.scene] + 1.0
        assert trap.glacier_ids
        index = {g.glacier_id: g.index for g in landscape.glaciers}
        key = "scl" if collection == catalog.S2 else "qa_pixel"
        for scene_id, want_cloud in ((trap.scene, True), (trap.clear_scene, False)):
            item = next(it for it in members if it["id"] == scene_id)
            mask, src = _read(world, item, key)
            if collection == catalog.S2:
                valid, cloudy = mask != 0, np.isin(mask, [8, 9, 10])
                obstructed = np.isin(mask, [3, 8, 9, 10])
            else:
                valid = mask != 1
                cloudy = (mask & 0b1100) != 0
                obstructed = (mask & 0b11110) != 0
            for gid in trap.glacier_ids:
                on = _truth_on((mask, src), (landscape.years[year].glacier == index[gid]).astype(np.uint8), landscape) > 0
                assert on.sum() > 10
                assert valid[on].all(), (scene_id, gid)  # the glacier is inside the tile
                if want_cloud:
                    assert cloudy[on].mean() > 0.9, (scene_id, gid)
                else:
                    assert obstructed[on].mean() < 0.02, (scene_id, gid)
        assert _scene(world, trap.scene).role == "trap" and _scene(world, trap.clear_scene).role == "clear"


def test_one_item_has_a_wrong_boa_offset_flag(world: WorldInfo, items: list[dict[str, Any]]) -> None:
    wrong = [it for it in _of(items, catalog.S2)
             if it["properties"]["earthsearch:boa_offset_applied"]
             != scenes.s2_has_offset(it["properties"]["s2:processing_baseline"])]
    assert [it["id"] for it in wrong] == list(world.boa_flag_wrong) == [world.trap(2023).clear_scene]
    item = wrong[0]
    assert item["assets"]["red"]["raster:bands"][0]["offset"] == 0.0  # the metadata lie follows the flag
    red, _ = _read(world, item, "red")
    assert np.percentile(red[red > 0], 1) > 1000  # ... but the DNs carry the +1000 offset of baseline 05.09


# -- radar and DEM -----------------------------------------------------------------------------------
def test_sentinel1_backscatter(world: WorldInfo, items: list[dict[str, Any]], landscape: Landscape) -> None:
    for year in YEARS:
        by_state: dict[str, list[float]] = {"ascending": [], "descending": []}
        truth = landscape.years[year]
        for item in _of(items, catalog.S1, year):
            vv, src = _read(world, item, "vv")
            vh, _ = _read(world, item, "vh")
            assert vv.dtype == np.float32 and src.nodata == scenes.SAR_NODATA
            assert -40.0 < float(vv.min()) and float(vv.max()) < 20.0
            assert float(np.mean(vh)) < float(np.mean(vv)) - 4.0
            rec = _scene(world, item["id"])
            firn = (truth.glacier > 0) & (landscape.dem > rec.snowline_m + 100.0)
            if firn.sum() > 50:
                by_state[item["properties"]["sat:orbit_state"]].append(float(np.mean(10 ** (vv[firn] / 10))))
        if by_state["ascending"] and by_state["descending"]:
            # Evening (ascending) passes see wet snow, much darker than the refrozen morning firn.
            assert 10 * math.log10(max(by_state["ascending"])) < 10 * math.log10(min(by_state["descending"])) - 6.0


def test_dem_tiles_cover_the_world_and_mosaic_to_the_landscape(world: WorldInfo, items: list[dict[str, Any]], landscape: Landscape) -> None:
    dem_items = _of(items, catalog.DEM)
    assert sorted(it["id"] for it in dem_items) == [
        "Copernicus_DSM_COG_10_N46_00_E010_00_DEM", "Copernicus_DSM_COG_10_N46_00_E011_00_DEM",
        "Copernicus_DSM_COG_10_N47_00_E010_00_DEM", "Copernicus_DSM_COG_10_N47_00_E011_00_DEM",
    ]
    to_ll = Transformer.from_crs(world.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = landscape.grid.bounds
    inner = shapely.transform(box(left + 30, bottom + 30, right - 30, top - 30),
                              lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
    assert shapely.union_all([shape(it["geometry"]) for it in dem_items]).buffer(1e-9).covers(inner)
    for it in dem_items:
        assert it["properties"]["datetime"] == "2021-04-22T00:00:00Z"
        t = it["assets"]["data"]["proj:transform"]
        assert t[0] == pytest.approx(1 / 3600) and it["properties"]["proj:epsg"] == 4326
        # Pixel centres on whole arc-seconds, as in the real tiles.
        assert (t[2] + t[0] / 2) * 3600 == pytest.approx(round((t[2] + t[0] / 2) * 3600), abs=1e-6)
    paths = [world.stac_dir / it["assets"]["data"]["href"] for it in dem_items]
    sources = [rasterio.open(p) for p in paths]
    try:
        mosaic, transform = merge(sources, nodata=scenes.DEM_NODATA)
    finally:
        for src in sources:
            src.close()
    back = np.full(landscape.grid.shape, np.nan, dtype=np.float32)
    reproject(mosaic[0], back, src_transform=transform, src_crs="EPSG:4326", src_nodata=scenes.DEM_NODATA,
              dst_transform=landscape.grid.transform, dst_crs=landscape.grid.crs, dst_nodata=np.nan,
              resampling=Resampling.bilinear)
    interior = back[5:-5, 5:-5]
    error = interior - landscape.dem[5:-5, 5:-5]
    assert np.isfinite(interior).all()
    assert float(np.sqrt(np.mean(error ** 2))) < 3.0
    assert float(np.abs(error).max()) < 25.0


# -- determinism and the figure ----------------------------------------------------------------------
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files(tmp_path: Path) -> None:
    small = toy_landscape(size_px=240, seed=3, years=(2023,))
    render_world(small, tmp_path / "a", workers=1)
    render_world(small, tmp_path / "b", workers=3)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 100


def test_figure(world: WorldInfo, landscape: Landscape, tmp_path: Path) -> None:
    from glacimap.synthetic.figure import plot_world_year

    out = plot_world_year(landscape, world, 2023, tmp_path / "world.png", dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > 500 and height > 150


def test_generate_world_small_preset(tmp_path: Path) -> None:
    pytest.importorskip("glacimap.synthetic.glaciers", reason="the landscape generator is not installed")
    pytest.importorskip("glacimap.synthetic.truth", reason="the truth writer is not installed")
    from glacimap.synthetic.world import generate_world

    info = generate_world(WorldConfig.small(seed=5), tmp_path / "small", figure=False)
    assert {t.year for t in info.traps} == set(WorldConfig().years)
    assert (tmp_path / "small" / "world.json").is_file()
    assert len(info.scenes_of(catalog.S2)) == 2 * 5 * len(WorldConfig().years)
