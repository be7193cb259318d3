"""Shared fixtures: a tiny STAC catalogue and a real local STAC API + asset server over it.

``local_stac`` (session scope) serves the catalogue folder given by ``stac_catalog_dir``;
``stac_server`` is the same server with faults cleared and counters zeroed around one test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rasterio.warp import transform_bounds

from glacimap.rasters import Grid, utm_crs, write_cog
from glacimap.workspace import write_json_atomic, write_text_atomic

#: Scenes of the tiny catalogue: (item id, date, eo:cloud_cover, footprint centre lon/lat).
TINY_S2_SCENES: tuple[tuple[str, str, float, tuple[float, float]], ...] = (
    ("S2_A", "2023-07-05", 40.0, (11.0, 47.0)),
    ("S2_B", "2023-08-10", 5.0, (11.0, 47.0)),
    ("S2_C", "2023-08-20", 12.5, (11.0, 47.0)),
    ("S2_D", "2023-09-01", 80.0, (11.0, 47.0)),
    ("S2_E", "2022-08-15", 2.0, (11.0, 47.0)),  # other year
    ("S2_F", "2023-08-12", 3.0, (13.0, 47.0)),  # elsewhere
)
S2 = "sentinel-2-l2a"
DEM = "cop-dem-glo-30"
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def _footprint(bounds_4326: tuple[float, float, float, float]) -> dict:
    w, s, e, n = bounds_4326
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _item(item_id: str, collection: str, when: str, bounds: tuple, properties: dict, assets: dict) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": item_id,
        "collection": collection,
        "geometry": _footprint(bounds),
        "bbox": list(bounds),
        "properties": {"datetime": f"{when}T10:30:00Z", **properties},
        "links": [],
        "assets": assets,
    }


def _collection(collection_id: str, description: str, bounds: tuple, start: str, end: str) -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": description,
        "license": "CC-BY-4.0",
        "extent": {"spatial": {"bbox": [list(bounds)]}, "temporal": {"interval": [[start, end]]}},
        "links": [],
    }


def write_tiny_catalog(root: Path, seed: int = 7) -> Path:
    """Write a two-collection catalogue (layout of WORLD/stac) under ``root``; return ``root``.

    Sentinel-2 items (:data:`TINY_S2_SCENES`) carry ``red`` (512 x 512 uint16, 10 m, four COG
    tiles) and ``scl`` (256 x 256 uint8, 20 m); one Copernicus DEM item carries ``data``
    (64 x 64 float32 in EPSG:4326).
    """
    rng = np.random.default_rng(seed)
    items: list[dict] = []
    for item_id, when, cloud, (lon, lat) in TINY_S2_SCENES:
        crs = utm_crs(lon, lat)
        x, y = (round(v / 20.0) * 20.0 for v in transform_bounds("EPSG:4326", crs, lon, lat, lon, lat)[:2])
        red_grid = Grid.from_bounds((x - 2560, y - 2560, x + 2560, y + 2560), crs, 10.0)
        scl_grid = Grid.from_bounds(red_grid.bounds, crs, 20.0)
        ramp = np.add.outer(np.arange(512), np.arange(512)).astype(np.uint16) * 8
        red = ramp + rng.integers(0, 500, size=(512, 512), dtype=np.uint16)
        scl = rng.integers(0, 12, size=(256, 256), dtype=np.uint8)
        folder = f"assets/{S2}/{item_id}"
        write_cog(root / folder / "red.tif", red, red_grid, ["red"], nodata=0)
        write_cog(root / folder / "scl.tif", scl, scl_grid, ["scl"])
        bounds = tuple(round(v, 6) for v in transform_bounds(crs, "EPSG:4326", *red_grid.bounds))
        assets = {
            "red": {"href": f"{folder}/red.tif", "type": _COG, "roles": ["data"]},
            "scl": {"href": f"{folder}/scl.tif", "type": _COG, "roles": ["data"]},
        }
        items.append(_item(item_id, S2, when, bounds, {"eo:cloud_cover": cloud, "platform": "sentinel-2a"}, assets))

    dem_bounds = (10.97, 46.97, 11.03, 47.03)
    dem_grid = Grid.from_bounds(dem_bounds, "EPSG:4326", (dem_bounds[2] - dem_bounds[0]) / 64)
    dem = (2000 + 10 * rng.standard_normal(dem_grid.shape)).astype(np.float32)
    write_cog(root / f"assets/{DEM}/DEM_N47_E011/data.tif", dem, dem_grid, ["elevation"], nodata=-9999)
    dem_assets = {"data": {"href": f"assets/{DEM}/DEM_N47_E011/data.tif", "type": _COG, "roles": ["data"]}}
    items.append(_item("DEM_N47_E011", DEM, "2021-04-22", dem_bounds, {}, dem_assets))

    collections = [
        _collection(S2, "Tiny Sentinel-2 L2A test scenes", (10.9, 46.9, 13.1, 47.1), "2022-01-01T00:00:00Z", "2023-12-31T23:59:59Z"),
        _collection(DEM, "Tiny Copernicus DEM test tile", dem_bounds, "2021-04-22T00:00:00Z", "2021-04-22T23:59:59Z"),
    ]
    write_json_atomic(root / "collections.json", collections)
    write_text_atomic(root / "items.ndjson", "".join(json.dumps(i) + "\n" for i in items))
    return root


@pytest.fixture(scope="session")
def tiny_stac_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test catalogue (see :func:`write_tiny_catalog`), written once per session."""
    return write_tiny_catalog(tmp_path_factory.mktemp("tiny_stac"))


@pytest.fixture(scope="session")
def stac_catalog_dir(tiny_stac_catalog: Path) -> Path:
    """The catalogue folder ``local_stac`` serves (WORLD/stac layout)."""
    return tiny_stac_catalog


@pytest.fixture(scope="session")
def local_stac(stac_catalog_dir: Path) -> Iterator:
    """A real STAC API (rustac) and asset server (uvicorn) over ``stac_catalog_dir``."""
    pytest.importorskip("rustac", reason="the local STAC API needs rustac==0.9.9 (pip install glacimap[serve])")
    from glacimap.synthetic.serve import serve_catalog

    with serve_catalog(stac_catalog_dir) as local:
        yield local


@pytest.fixture
def stac_server(local_stac) -> Iterator:
    """``local_stac`` with no faults and zeroed counters, restored after the test."""
    local_stac.set_faults(None)
    local_stac.reset_counters()
    yield local_stac
    local_stac.set_faults(None)
    local_stac.reset_counters()


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic world's ``small`` preset (seed 42), generated once per session."""
    from glacimap.synthetic import WorldConfig, generate_world

    return generate_world(WorldConfig.small(42), tmp_path_factory.mktemp("world") / "world", figure=False)


@pytest.fixture(scope="session")
def world_stac(small_world) -> Iterator:
    """A real local STAC API and asset server over the small synthetic world."""
    pytest.importorskip("rustac", reason="the local STAC API needs rustac==0.9.9 (pip install glacimap[serve])")
    from glacimap.synthetic.serve import serve_catalog

    with serve_catalog(small_world.root / "stac") as local:
        yield local


@pytest.fixture
def world_server(world_stac) -> Iterator:
    """``world_stac`` with no faults and zeroed counters around one test."""
    world_stac.set_faults(None)
    world_stac.reset_counters()
    yield world_stac
    world_stac.set_faults(None)
    world_stac.reset_counters()
