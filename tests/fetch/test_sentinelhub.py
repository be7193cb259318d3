"""The Sentinel Hub backend of fetch.

Offline: request contents built by sentinelhub-py itself (URL, bounds, CRS, size, evalscript,
data filters), the statistics arithmetic, and whole runs against a small local stand-in for the
four Sentinel Hub endpoints fetch calls (OAuth token, Catalog, Statistical, Process), served by
uvicorn on 127.0.0.1. Live: marked ``network``, runs only with SH_CLIENT_ID / SH_CLIENT_SECRET.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import pickle
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import shapely.affinity

from glacimap.errors import EXIT_BAD_INPUT, ConfigError
from glacimap.fetch import sentinelhub
from glacimap.features import ndsi
from glacimap.fetch import read_manifest
from glacimap.fetch.chips import CHIP_BANDS, FetchParams, glacier_grid, project, read_selection
from glacimap.fetch.harmonise import qa_pixel_masks, scl_masks
from glacimap.fetch.plan import GlacierJob, Scene
from glacimap.fetch.sentinelhub import (
    CDSE_BASE_URL,
    CDSE_TOKEN_URL,
    DEM_EVALSCRIPT,
    DayStats,
    MaskedSHConfig,
    acquisitions,
    build_chip_sh,
    catalog_search,
    cloud_evalscript,
    cloud_statistics_request,
    collection_for,
    dem_request,
    elevation_sh,
    get_product,
    optical_evalscript,
    optical_layers_sh,
    parse_statistics,
    process_request,
    products_for,
    run_fetch_sentinelhub,
    score_acquisition,
    search_scenes_sh,
    sh_config,
    snow_evalscript,
    split_grid,
    snow_statistics_request,
)
from glacimap.settings import FetchSettings
from glacimap.workspace import Workspace

CLIENT_ID = "glacimap-test-client"
SECRET = "s3cr3t-Value-that-must-never-leak-8f2a"
GLACIER = shapely.Polygon([(11.000, 47.000), (11.004, 47.000), (11.004, 47.0025), (11.000, 47.0025)])
S2_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def _setup(evalscript: str) -> dict[str, Any]:
    """The object ``setup()`` returns (glacimap writes it as JSON)."""
    match = re.search(r"function setup\(\) \{\s*return (\{.*?\});\s*\}", evalscript, re.S)
    assert match, evalscript
    return json.loads(match.group(1))


@pytest.fixture
def no_sh_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty XDG config folder, so the user's sentinelhub config never leaks into a test."""
    folder = tmp_path / "xdg"
    folder.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder))
    for name in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return folder


def _settings(tmp_path: Path, **kwargs: Any) -> FetchSettings:
    base = {"inventory": tmp_path / "rgi.gpkg", "year": 2023, "work": tmp_path / "work", "backend": "sentinelhub"}
    return FetchSettings(**(base | kwargs))


def _config(base_url: str | None = None) -> MaskedSHConfig:
    values = {"sh_client_id": CLIENT_ID, "sh_client_secret": SECRET}
    if base_url:
        values["sh_base_url"] = base_url
    return MaskedSHConfig(use_defaults=True, **values)


# -- credentials ---------------------------------------------------------------------------------
def test_credentials_precedence_and_cdse_token(no_sh_files: Path, tmp_path: Path) -> None:
    config_file = no_sh_files / "sentinelhub" / "config.toml"
    config_file.parent.mkdir()
    config_file.write_text(
        '[default-profile]\nsh_client_id = "file-id"\nsh_client_secret = "file-secret"\nmax_download_attempts = 2\n'
    )
    # file only
    config = sh_config(_settings(tmp_path), environ={})
    assert (config.sh_client_id, config.sh_client_secret, config.max_download_attempts) == ("file-id", "file-secret", 2)
    assert config.sh_base_url == "https://services.sentinel-hub.com"
    # environment over file, settings over environment
    environ = {"SH_CLIENT_ID": "env-id", "SH_CLIENT_SECRET": "env-secret"}
    config = sh_config(_settings(tmp_path), environ=environ)
    assert (config.sh_client_id, config.sh_client_secret) == ("env-id", "env-secret")
    settings = _settings(tmp_path, sh_client_secret=SECRET, sh_base_url=CDSE_BASE_URL + "/")
    config = sh_config(settings, environ=environ)
    assert (config.sh_client_id, config.sh_client_secret) == ("env-id", SECRET)
    assert config.sh_base_url == CDSE_BASE_URL
    assert config.sh_token_url == CDSE_TOKEN_URL


def test_missing_credentials_say_what_to_set(no_sh_files: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        sh_config(_settings(tmp_path, sh_client_id="only-the-id"), environ={})
    message = str(info.value)
    assert "SH_CLIENT_ID" in message and "SH_CLIENT_SECRET" in message and "sh_client_secret" in message
    assert "only-the-id" not in message
    assert info.value.exit_code == EXIT_BAD_INPUT
    # reading the configuration never creates the user's sentinelhub config file
    assert not (no_sh_files / "sentinelhub" / "config.toml").exists()


def test_unknown_profile_and_keys_are_errors(no_sh_files: Path, tmp_path: Path) -> None:
    config_file = no_sh_files / "sentinelhub" / "config.toml"
    config_file.parent.mkdir()
    config_file.write_text('[default-profile]\nsh_client_id = "a"\nsh_clientsecret = "typo"\n')
    with pytest.raises(ConfigError, match="unknown keys \\['sh_clientsecret'\\]"):
        sh_config(_settings(tmp_path), environ={})
    with pytest.raises(ConfigError, match="no profile 'glaciers'"):
        sh_config(_settings(tmp_path), environ={"SH_PROFILE": "glaciers"})


def test_secret_never_shown(no_sh_files: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path, sh_client_id=CLIENT_ID, sh_client_secret=SECRET)
    config = sh_config(settings, environ={})
    assert config.sh_client_secret == SECRET  # the real value is there for the OAuth request
    shown = [repr(config), str(config), json.dumps(config.to_dict()), repr(settings), str(settings),
             json.dumps(settings.public_dict())]
    for text in shown:
        assert SECRET not in text and SECRET[-4:] not in text
    assert "********" in repr(config)
    copy = pickle.loads(pickle.dumps(config))  # tasks carry the config to dask workers
    assert isinstance(copy, MaskedSHConfig) and copy.sh_client_secret == SECRET and SECRET not in repr(copy)


# -- request contents ----------------------------------------------------------------------------
@pytest.fixture
def grid_and_outline():  # noqa: ANN201
    return glacier_grid(GLACIER, 10.0, 100.0)


def test_process_request_is_the_chip_grid(grid_and_outline) -> None:  # noqa: ANN001
    grid, _ = grid_and_outline
    assert grid.crs == "EPSG:32632"
    request = process_request(grid, date(2023, 8, 20), "s2", _config(), max_tile_cloud=12.5)
    download = request.download_list[0]
    assert download.url == "https://services.sentinel-hub.com/api/v1/process"
    body = download.post_values
    bounds = body["input"]["bounds"]
    assert bounds["bbox"] == list(grid.bounds)
    assert bounds["properties"]["crs"] == "http://www.opengis.net/def/crs/EPSG/0/32632"
    assert (body["output"]["width"], body["output"]["height"]) == (grid.width, grid.height) == (52, 50)
    # pixel size = chip resolution
    assert (bounds["bbox"][2] - bounds["bbox"][0]) / body["output"]["width"] == 10.0
    assert (bounds["bbox"][3] - bounds["bbox"][1]) / body["output"]["height"] == 10.0
    data = body["input"]["data"][0]
    assert data["type"] == "sentinel-2-l2a"
    assert data["dataFilter"] == {
        "timeRange": {"from": "2023-08-20T00:00:00Z", "to": "2023-08-21T00:00:00Z"},
        "maxCloudCoverage": 13,  # 12.5 rounded up: no tile the Catalog kept is left out
        "mosaickingOrder": "leastCC",
    }
    assert data["processing"] == {"upsampling": "NEAREST", "downsampling": "NEAREST", "harmonizeValues": True}
    setup = _setup(body["evalscript"])
    assert setup["input"][0]["bands"] == [*S2_BANDS, "SCL", "dataMask"]
    assert setup["input"][0]["units"] == ["REFLECTANCE"] * 6 + ["DN", "DN"]
    outputs = {o["id"]: o for o in setup["output"]}
    assert [r["identifier"] for r in body["output"]["responses"]] == list(outputs) == ["bands", "masks"]
    assert (outputs["bands"]["bands"], outputs["bands"]["sampleType"]) == (6, "FLOAT32")
    assert (outputs["masks"]["bands"], outputs["masks"]["sampleType"]) == (2, "UINT16")
    assert {r["format"]["type"] for r in body["output"]["responses"]} == {"image/tiff"}


def test_landsat_products_and_deployments(grid_and_outline) -> None:  # noqa: ANN001
    grid, _ = grid_and_outline
    # Sentinel Hub serves Landsat from its US-West deployment; a CDSE base URL overrides it
    main = process_request(grid, date(2015, 8, 20), "landsat", _config())
    cdse = process_request(grid, date(2015, 8, 20), "landsat", _config(CDSE_BASE_URL))
    assert main.download_list[0].url == "https://services-uswest2.sentinel-hub.com/api/v1/process"
    assert cdse.download_list[0].url == f"{CDSE_BASE_URL}/api/v1/process"
    body = main.download_list[0].post_values
    assert body["input"]["data"][0]["type"] == "landsat-ot-l2"
    assert "maxCloudCoverage" not in body["input"]["data"][0]["dataFilter"]
    assert "harmonizeValues" not in body["input"]["data"][0]["processing"]
    assert _setup(body["evalscript"])["input"][0]["bands"] == ["B02", "B03", "B04", "B05", "B06", "B07", "BQA", "dataMask"]
    etm = process_request(grid, date(2005, 8, 20), "landsat-etm-l2", _config())
    assert _setup(etm.download_list[0].post_values["evalscript"])["input"][0]["bands"][:6] == \
        ["B01", "B02", "B03", "B04", "B05", "B07"]
    assert [p.key for p in products_for("landsat", date(2015, 8, 1), date(2015, 10, 15))] == \
        ["landsat-ot-l2", "landsat-etm-l2"]
    assert [p.key for p in products_for("landsat", date(1995, 8, 1), date(1995, 10, 15))] == ["landsat-tm-l2"]
    assert [p.key for p in products_for("s2", date(2015, 8, 1), date(2015, 10, 15))] == ["sentinel-2-l2a"]


def test_collections_honour_base_url() -> None:
    assert collection_for("s2", _config()).service_url == "https://services.sentinel-hub.com"
    cdse = collection_for("s2", _config(CDSE_BASE_URL))
    assert cdse.service_url == CDSE_BASE_URL and cdse.api_id == "sentinel-2-l2a"
    assert collection_for("s2", _config(CDSE_BASE_URL)) is cdse  # defined once, reused
    assert collection_for("dem", _config(CDSE_BASE_URL)).dem_instance == "COPERNICUS_30"


def test_dem_request(grid_and_outline) -> None:  # noqa: ANN001
    grid, _ = grid_and_outline
    request = dem_request(grid, _config(CDSE_BASE_URL))
    download = request.download_list[0]
    assert download.url == f"{CDSE_BASE_URL}/api/v1/process"
    body = download.post_values
    assert body["input"]["bounds"]["bbox"] == list(grid.bounds)
    assert (body["output"]["width"], body["output"]["height"]) == (grid.width, grid.height)
    data = body["input"]["data"][0]
    assert data["type"] == "dem" and data["dataFilter"] == {"demInstance": "COPERNICUS_30"}
    assert data["processing"] == {"upsampling": "BILINEAR", "downsampling": "BILINEAR"}
    assert _setup(body["evalscript"])["input"][0]["bands"] == ["DEM", "dataMask"]


def test_statistics_requests(grid_and_outline) -> None:  # noqa: ANN001
    grid, outline = grid_and_outline
    area = outline.buffer(100.0)
    ring = area.difference(outline)
    s2 = get_product("s2")
    request = cloud_statistics_request(area, grid.crs, s2, date(2023, 8, 10), date(2023, 9, 1), _config(CDSE_BASE_URL),
                                       max_tile_cloud=80)
    download = request.download_list[0]
    assert download.url == f"{CDSE_BASE_URL}/api/v1/statistics"
    body = download.post_values
    assert shapely.geometry.shape(body["input"]["bounds"]["geometry"]).equals_exact(area, 1e-6)
    assert body["input"]["bounds"]["properties"]["crs"] == "http://www.opengis.net/def/crs/EPSG/0/32632"
    aggregation = body["aggregation"]
    assert aggregation["timeRange"] == {"from": "2023-08-10T00:00:00Z", "to": "2023-09-02T00:00:00Z"}
    assert aggregation["aggregationInterval"] == {"of": "P1D"}
    assert (aggregation["resx"], aggregation["resy"]) == (20.0, 20.0)  # the SCL's own resolution
    data = body["input"]["data"][0]
    assert data["dataFilter"]["mosaickingOrder"] == "leastCC" and data["dataFilter"]["maxCloudCoverage"] == 80
    setup = _setup(aggregation["evalscript"])
    assert setup["input"][0]["bands"] == ["SCL", "dataMask"]
    assert [o["id"] for o in setup["output"]] == ["cloud", "dataMask"]
    # the cloud classes are harmonise.py's: snow (SCL 11) is never cloud
    assert "var CLOUD = [3, 8, 9, 10];" in aggregation["evalscript"]
    assert "var NODATA = [0, 1];" in aggregation["evalscript"]

    snow = snow_statistics_request(ring, grid.crs, s2, date(2023, 8, 10), date(2023, 9, 1), _config())
    snow_body = snow.download_list[0].post_values
    assert shapely.geometry.shape(snow_body["input"]["bounds"]["geometry"]).equals_exact(ring, 1e-6)
    snow_setup = _setup(snow_body["aggregation"]["evalscript"])
    assert snow_setup["input"][0]["bands"] == ["B03", "B11", "SCL", "dataMask"]
    assert [o["id"] for o in snow_setup["output"]] == ["ndsi", "dataMask"]
    landsat = cloud_statistics_request(area, grid.crs, get_product("landsat"), date(2015, 8, 1), date(2015, 8, 2), _config())
    assert landsat.download_list[0].post_values["aggregation"]["resx"] == 30.0
    assert "var CLOUD_BITS = [1, 2, 3, 4];" in landsat.download_list[0].post_values["aggregation"]["evalscript"]


def test_catalog_search_payload() -> None:
    search = catalog_search(_config(CDSE_BASE_URL), get_product("s2"), (10.9, 46.9, 11.1, 47.1),
                            date(2023, 8, 1), date(2023, 10, 15), max_tile_cloud=80)
    assert search.url == f"{CDSE_BASE_URL}/api/v1/catalog/1.0.0/search"
    assert search.params["collections"] == ["sentinel-2-l2a"]
    assert search.params["datetime"] == "2023-08-01T00:00:00Z/2023-10-16T00:00:00Z"
    assert search.params["bbox"] == [10.9, 46.9, 11.1, 47.1]
    assert search.params["filter"] == "eo:cloud_cover <= 80"
    landsat = catalog_search(_config(), get_product("landsat"), (10.9, 46.9, 11.1, 47.1), date(2015, 8, 1), date(2015, 9, 1))
    assert landsat.url.startswith("https://services-uswest2.sentinel-hub.com/")
    assert "filter" not in landsat.params


# -- the evalscripts, run in V8 (Sentinel Hub runs them in V8 too) -----------------------------
def _run_evalscript(evalscript: str, samples: list[dict[str, float]], tmp_path: Path) -> list[Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("running evalscripts needs node.js on PATH")
    script = tmp_path / "evalscript.js"
    script.write_text(evalscript + f"\nconsole.log(JSON.stringify({json.dumps(samples)}.map(evaluatePixel)));\n")
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def test_cloud_evalscripts_match_the_stac_masks(tmp_path: Path) -> None:
    scl = list(range(12))
    out = _run_evalscript(cloud_evalscript(get_product("s2")), [{"SCL": v, "dataMask": 1} for v in scl]
                          + [{"SCL": 4, "dataMask": 0}], tmp_path)
    valid, cloud = scl_masks(np.array(scl))
    assert [o["dataMask"][0] for o in out] == [*valid.astype(int).tolist(), 0]
    assert [o["cloud"][0] for o in out] == [*cloud.astype(int).tolist(), 0]

    clear, fill, cloudy, shadow, snow, dilated, cirrus = 1 << 6, 1, 1 << 3, 1 << 4, 1 << 5, 1 << 1, 1 << 2
    qa = [clear, fill, cloudy, shadow, snow, dilated, cirrus, 0, snow | cloudy]
    out = _run_evalscript(cloud_evalscript(get_product("landsat")), [{"BQA": v, "dataMask": 1} for v in qa], tmp_path)
    valid, cloud = qa_pixel_masks(np.array(qa, dtype=np.uint16))
    assert [o["dataMask"][0] for o in out] == valid.astype(int).tolist()
    assert [o["cloud"][0] for o in out] == cloud.astype(int).tolist()


def test_snow_and_optical_evalscripts(tmp_path: Path) -> None:
    samples = [{"B03": 0.6, "B11": 0.1, "SCL": 11, "dataMask": 1}, {"B03": 0.6, "B11": 0.1, "SCL": 9, "dataMask": 1},
               {"B03": 0.0, "B11": 0.0, "SCL": 4, "dataMask": 1}, {"B03": 0.2, "B11": 0.3, "SCL": 4, "dataMask": 0}]
    out = _run_evalscript(snow_evalscript(get_product("s2")), samples, tmp_path)
    assert [o["dataMask"][0] for o in out] == [1, 0, 0, 0]  # snow is clear; cloud, no index, no data are not
    assert out[0]["ndsi"][0] == pytest.approx(float(ndsi(np.array([0.6]), np.array([0.1]))[0]), abs=1e-6)

    pixel = dict(zip(S2_BANDS, (0.11, 0.12, 0.13, 0.14, 0.15, 0.16)))
    out = _run_evalscript(optical_evalscript(get_product("s2")), [pixel | {"SCL": 8, "dataMask": 1},
                                                                  pixel | {"SCL": 0, "dataMask": 0}], tmp_path)
    assert out[0] == {"bands": [0.11, 0.12, 0.13, 0.14, 0.15, 0.16], "masks": [8, 1]}
    assert out[1] == {"bands": [None] * 6, "masks": [0, 0]}  # NaN (JSON null) without data
    landsat = dict(zip(["B02", "B03", "B04", "B05", "B06", "B07"], (0.21, 0.22, 0.23, 0.24, 0.25, 0.26)))
    out = _run_evalscript(optical_evalscript(get_product("landsat")), [landsat | {"BQA": 21824, "dataMask": 1}], tmp_path)
    assert out[0] == {"bands": [0.21, 0.22, 0.23, 0.24, 0.25, 0.26], "masks": [21824, 1]}
    assert _run_evalscript(DEM_EVALSCRIPT, [{"DEM": 2412.5, "dataMask": 1}, {"DEM": 0, "dataMask": 0}], tmp_path) == \
        [[2412.5, 1], [None, 0]]


# -- statistics and planning ---------------------------------------------------------------------
def test_parse_statistics() -> None:
    response = {"data": [
        {"interval": {"from": "2023-08-10T00:00:00Z", "to": "2023-08-11T00:00:00Z"},
         "outputs": {"cloud": {"bands": {"B0": {"stats": {"mean": 0.25, "sampleCount": 400, "noDataCount": 40}}}}}},
        {"interval": {"from": "2023-08-20T00:00:00Z", "to": "2023-08-21T00:00:00Z"},
         "outputs": {"cloud": {"bands": {"B0": {"stats": {"mean": "NaN", "sampleCount": 400, "noDataCount": 400}}}}}},
        {"interval": {"from": "2023-08-25T00:00:00Z", "to": "2023-08-26T00:00:00Z"}, "error": {"type": "EXECUTION_ERROR"}},
    ], "status": "PARTIAL"}
    days = parse_statistics(response, "cloud")
    assert days[date(2023, 8, 10)] == DayStats(400, 40, 0.25)
    assert days[date(2023, 8, 10)].valid == 360
    assert days[date(2023, 8, 20)].valid == 0 and math.isnan(days[date(2023, 8, 20)].mean)
    assert days[date(2023, 8, 25)].error == "EXECUTION_ERROR"


def _scene(scene_id: str, day: str, cloud: float | None, collection: str = "sentinel-2-l2a",
           box: tuple[float, float, float, float] = (10.9, 46.9, 11.1, 47.1)) -> Scene:
    from glacimap.fetch.harmonise import parse_datetime

    return Scene(id=scene_id, collection=collection, sensor="landsat" if "landsat" in collection else "s2",
                 datetime=parse_datetime(f"{day}T10:30:00Z"), hrefs={"acquired": day},
                 footprint_wkb=shapely.to_wkb(shapely.box(*box)), tile_cloud=cloud)


def test_scores_from_statistics(grid_and_outline) -> None:  # noqa: ANN001
    grid, outline = grid_and_outline
    job = GlacierJob("G1", shapely.to_wkb(GLACIER), grid, ())
    params = FetchParams(buffer=100.0, min_coverage=0.9, max_cloud=0.3, target=date(2023, 8, 15))
    area = {date(2023, 8, 10): DayStats(1000, 100, 0.2), date(2023, 8, 20): DayStats(1000, 0, 0.5)}
    ring = {date(2023, 8, 10): DayStats(300, 100, 0.35), date(2023, 8, 20): DayStats(300, 300, math.nan)}
    score = score_acquisition(_scene("A", "2023-08-10", 4.0), job, area, ring, params)
    assert (score.coverage, score.cloud_fraction, score.snow_index, score.rejected) == (0.9, 0.2, 0.35, None)
    assert (score.tile_cloud, score.days_from_target) == (4.0, -5)
    cloudy = score_acquisition(_scene("B", "2023-08-20", None), job, area, ring, params)
    assert cloudy.rejected == "cloud 0.50 > 0.30" and math.isnan(cloudy.snow_index) and cloudy.tile_cloud == math.inf
    missing = score_acquisition(_scene("C", "2023-08-30", 1.0), job, area, ring, params)
    assert (missing.coverage, missing.cloud_fraction, missing.rejected) == (0.0, 1.0, "coverage 0.00 < 0.90")

    # Landsat 7 after May 2003: scan-line gaps count as cloud, as in the STAC backend. The
    # footprint covers the west 90 % of glacier + buffer: of 300 no-data pixels, 100 lie
    # outside it and 200 are gaps -> coverage (700 + 200) / 1000, cloud (0.1 * 700 + 200) / 900.
    buffered = outline.buffer(100.0)
    left, bottom, right, top = buffered.bounds
    footprint_utm = shapely.box(left - 50, bottom - 50, left + 0.9 * (right - left), top + 50)
    fraction = buffered.intersection(footprint_utm).area / buffered.area
    footprint = project(footprint_utm, grid.crs, "EPSG:4326")
    etm = replace(_scene("L7", "2010-08-10", 10.0, collection="landsat-etm-l2"), footprint_wkb=shapely.to_wkb(footprint))
    n, nodata = 1000, 300
    stats = {date(2010, 8, 10): DayStats(n, nodata, 0.1)}
    l7 = score_acquisition(etm, job, stats, {}, FetchParams(100.0, 0.5, 0.5, date(2010, 8, 15)), buffered)
    gaps = nodata - (1 - fraction) * n
    assert 0.85 < fraction < 0.95 and gaps == pytest.approx(200, abs=50)
    assert l7.coverage == pytest.approx((n - nodata + gaps) / n, abs=1e-3)
    assert l7.cloud_fraction == pytest.approx((0.1 * (n - nodata) + gaps) / (n - nodata + gaps), abs=1e-3)
    # the same statistics without gaps (Landsat 8): plain coverage and cloud
    ot = replace(etm, collection="landsat-ot-l2")
    plain = score_acquisition(ot, job, stats, {}, FetchParams(100.0, 0.5, 0.5, date(2010, 8, 15)), buffered)
    assert (plain.coverage, plain.cloud_fraction) == (0.7, 0.1)


def test_acquisitions_group_tiles_by_day() -> None:
    area = GLACIER.buffer(0.001)
    tiles = [
        _scene("T32TPS_0820", "2023-08-20", 12.0, box=(10.9, 46.9, 11.002, 47.1)),
        _scene("T32TQS_0820", "2023-08-20", 14.0, box=(11.001, 46.9, 11.2, 47.1)),
        _scene("T32TPS_0810", "2023-08-10", 5.0),
        _scene("far_0810", "2023-08-10", 1.0, box=(12.0, 46.0, 12.1, 46.1)),
    ]
    groups = {g.id: g for g in acquisitions(tiles, area)}
    assert sorted(groups) == ["T32TPS_0810", "T32TPS_0820+T32TQS_0820"]
    pair = groups["T32TPS_0820+T32TQS_0820"]
    assert pair.tile_cloud == 13.0 and pair.hrefs == {"acquired": "2023-08-20"} and pair.properties == {"tiles": 2}
    assert shapely.from_wkb(pair.footprint_wkb).covers(area)


# -- a local stand-in for Sentinel Hub -----------------------------------------------------------
@dataclass
class Day:
    """What the stand-in returns for one day: statistics and the pixels of the day's mosaic."""

    coverage: float = 1.0
    cloud: float = 0.0
    snow: float | None = 0.2
    reflectance: float = 0.1  # band i is reflectance + 0.01 i
    cloud_strip: tuple[float, float] | None = None  # SCL 9 (cloud) between these northings


@dataclass
class FakeSentinelHub:
    """Token, Catalog, Statistical and Process endpoints over a fixed scenario (no evalscript is run)."""

    features: list[dict]
    days: dict[str, Day]
    page_size: int = 2
    slope: float = 0.1  # DEM gradient eastwards, metres per metre
    calls: list[tuple[str, Any]] = field(default_factory=list)
    token: str = ""

    def __post_init__(self) -> None:
        claims = base64.urlsafe_b64encode(json.dumps({"azp": CLIENT_ID}).encode()).decode().rstrip("=")
        self.token = f"eyJhbGciOiJub25lIn0.{claims}.c2lnbmF0dXJl"

    def app(self):  # noqa: ANN201
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def token(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            self.calls.append(("token", {k: v for k, v in form.items() if k != "client_secret"}))
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != SECRET:
                return JSONResponse({"error": "invalid_client", "error_description": "bad client"}, status_code=401)
            return JSONResponse({"access_token": self.token, "token_type": "Bearer", "expires_in": 3600})

        def authorised(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {self.token}"

        async def search(request: Request) -> Response:
            if not authorised(request):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            body = await request.json()
            self.calls.append(("search", body))
            start, end = body["datetime"].split("/")
            found = [f for f in self.features if f["collection"] == body["collections"][0]
                     and start <= f["properties"]["datetime"] <= end]  # the cloud filter is ignored
            first = int(body.get("next") or 0)
            page = found[first: first + min(body["limit"], self.page_size)]
            more = first + len(page) < len(found)
            return JSONResponse({"type": "FeatureCollection", "features": page,
                                 "context": {"next": first + len(page) if more else None, "returned": len(page)}})

        async def statistics(request: Request) -> Response:
            if not authorised(request):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            body = await request.json()
            self.calls.append(("statistics", body))
            aggregation = body["aggregation"]
            output = _setup(aggregation["evalscript"])["output"][0]["id"]
            geometry = shapely.geometry.shape(body["input"]["bounds"]["geometry"])
            n = round(geometry.area / (aggregation["resx"] * aggregation["resy"]))
            data = []
            for day, spec in sorted(self.days.items()):
                if not (aggregation["timeRange"]["from"][:10] <= day < aggregation["timeRange"]["to"][:10]):
                    continue
                if output == "cloud":
                    nodata, mean = round(n * (1 - spec.coverage)), spec.cloud
                else:
                    nodata, mean = (n, "NaN") if spec.snow is None else (0, spec.snow)
                stats = {"min": 0, "max": 1, "mean": mean, "stDev": 0, "sampleCount": n, "noDataCount": nodata}
                data.append({"interval": {"from": f"{day}T00:00:00Z", "to": f"{day}T23:59:59Z"},
                             "outputs": {output: {"bands": {"B0": {"stats": stats}}}}})
            return JSONResponse({"data": data, "status": "OK"})

        async def process(request: Request) -> Response:
            if not authorised(request):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            body = await request.json()
            self.calls.append(("process", body))
            width, height = body["output"]["width"], body["output"]["height"]
            left, bottom, right, top = body["input"]["bounds"]["bbox"]
            x = left + (np.arange(width) + 0.5) * (right - left) / width  # pixel centres
            y = top - (np.arange(height) + 0.5) * (top - bottom) / height
            data = body["input"]["data"][0]
            if data["type"] == "dem":
                dem = np.broadcast_to(2000 + self.slope * (x - DEM_ORIGIN_X), (height, width))
                return Response(_tiff(np.dstack([dem, np.ones((height, width))]).astype(np.float32)), media_type="image/tiff")
            spec = self.days.get(data["dataFilter"]["timeRange"]["from"][:10])
            bands = np.zeros((height, width, 6), np.float32)
            masks = np.zeros((height, width, 2), np.uint16)
            if spec is not None:
                bands += spec.reflectance + 0.01 * np.arange(6, dtype=np.float32)
                masks[..., 0], masks[..., 1] = 4, 1
                if spec.cloud_strip is not None:
                    south, north = spec.cloud_strip
                    masks[(y > south) & (y < north), :, 0] = 9
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for name, array in (("bands.tif", bands), ("masks.tif", masks)):
                    content = _tiff(array)
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
            return Response(archive.getvalue(), media_type="application/x-tar")

        return Starlette(routes=[
            Route("/oauth/token", token, methods=["POST"]),
            Route("/api/v1/catalog/1.0.0/search", search, methods=["POST"]),
            Route("/api/v1/statistics", statistics, methods=["POST"]),
            Route("/api/v1/process", process, methods=["POST"]),
        ])

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)


def _tiff(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack", planarconfig="contig")
    return buffer.getvalue()


def _feature(feature_id: str, day: str, cloud: float, box: tuple[float, float, float, float] = (10.9, 46.9, 11.1, 47.1)) -> dict:
    return {"type": "Feature", "id": feature_id, "collection": "sentinel-2-l2a",
            "geometry": shapely.geometry.mapping(shapely.box(*box)), "bbox": list(box),
            "properties": {"datetime": f"{day}T10:20:31Z", "eo:cloud_cover": cloud, "platform": "sentinel-2b"}}


FEATURES = [
    _feature("S2_T32TPS_0810", "2023-08-10", 5.0),
    _feature("S2_T32TPS_0820", "2023-08-20", 12.0, box=(10.9, 46.9, 11.002, 47.1)),
    _feature("S2_T32TQS_0820", "2023-08-20", 14.0, box=(11.001, 46.9, 11.2, 47.1)),
    _feature("S2_T32TPS_0805", "2023-08-05", 20.0),
    _feature("S2_T32TPS_0901", "2023-09-01", 30.0),
    _feature("S2_T32TPS_0815", "2023-08-15", 90.0),  # above --max-tile-cloud
]
DEM_ORIGIN_X = 650_000.0
GRID, OUTLINE = glacier_grid(GLACIER, 10.0, 100.0)
TOP = GRID.bounds[3]
DAYS = {
    "2023-08-10": Day(cloud=0.6, reflectance=0.5),  # least tile cloud, cloudy over the glacier
    "2023-08-20": Day(cloud=0.0, snow=0.1, reflectance=0.2, cloud_strip=(TOP - 30, TOP)),  # 3 cloudy rows
    "2023-09-01": Day(coverage=0.98, cloud=0.004, snow=0.5, reflectance=0.3),  # same cloud at 1 %, snowier
    "2023-08-05": Day(coverage=0.5, reflectance=0.4),
    "2023-08-15": Day(reflectance=0.9),
}


@pytest.fixture
def fake_sh(no_sh_files: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeSentinelHub, str]]:
    """The stand-in on 127.0.0.1 and a sentinelhub config file pointing its token URL there."""
    pytest.importorskip("uvicorn", reason="the local Sentinel Hub stand-in needs uvicorn (glacimap[serve])")
    pytest.importorskip("starlette", reason="the local Sentinel Hub stand-in needs starlette (glacimap[serve])")
    import uvicorn
    from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient

    fake = FakeSentinelHub(features=[dict(f) for f in FEATURES], days=dict(DAYS))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_config=None, log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    config_file = no_sh_files / "sentinelhub" / "config.toml"
    config_file.parent.mkdir(exist_ok=True)
    config_file.write_text(f'[default-profile]\nsh_token_url = "{url}/oauth/token"\nmax_download_attempts = 1\n'
                           "download_sleep_time = 0.1\n")
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the stand-in speaks http
    SentinelHubDownloadClient.clear_cache()
    try:
        yield fake, url
    finally:
        SentinelHubDownloadClient.clear_cache()
        server.should_exit = True
        thread.join(5)
        sock.close()


def _inventory(tmp_path: Path, polygons: dict[str, shapely.Polygon]) -> Path:
    path = tmp_path / "rgi.gpkg"
    frame = gpd.GeoDataFrame({"RGIId": list(polygons)}, geometry=list(polygons.values()), crs="EPSG:4326")
    frame.to_file(path, layer="glaciers", driver="GPKG")
    return path


def _fake_settings(tmp_path: Path, url: str, **kwargs: Any) -> FetchSettings:
    return _settings(tmp_path, sh_client_id=CLIENT_ID, sh_client_secret=SECRET, sh_base_url=url,
                     window="08-01:09-30", chip_margin=100.0, workers=1, **kwargs)


def test_search_pages_and_rechecks_cloud(fake_sh, tmp_path: Path) -> None:  # noqa: ANN001
    fake, url = fake_sh
    config = sh_config(_fake_settings(tmp_path, url), environ={})
    scenes = search_scenes_sh(config, "s2", (10.9, 46.9, 11.1, 47.1), date(2023, 8, 1), date(2023, 9, 30), 80.0)
    assert [s.id for s in scenes] == [f["id"] for f in FEATURES[:5]]  # 0815 (90 %) dropped here
    assert fake.count("search") == 3  # 6 features, 2 per page
    assert fake.calls[1][1]["filter"] == "eo:cloud_cover <= 80"
    assert scenes[0].hrefs == {"acquired": "2023-08-10"} and scenes[0].tile_cloud == 5.0
    assert scenes[0].platform == "sentinel-2b" and scenes[0].collection == "sentinel-2-l2a"


def test_chip_from_the_stand_in(fake_sh, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    fake, url = fake_sh
    caplog.set_level(logging.DEBUG)
    settings = _fake_settings(tmp_path, url)
    config = sh_config(settings, environ={})
    tiles = search_scenes_sh(config, "s2", (10.9, 46.9, 11.1, 47.1), date(2023, 8, 1), date(2023, 9, 30), 80.0)
    grid, outline = glacier_grid(GLACIER, 10.0, 100.0)
    candidates = sorted(acquisitions(tiles, GLACIER.buffer(0.001)), key=lambda s: s.tile_cloud)
    job = GlacierJob("RGI60-11.00001", shapely.to_wkb(GLACIER), grid, tuple(candidates))
    params = FetchParams(buffer=100.0, min_coverage=0.9, max_cloud=0.3, target=date(2023, 8, 31))
    output = tmp_path / "chip.tif"
    record = build_chip_sh(job, params, output, config, max_tile_cloud=80.0)

    # 0810 is too cloudy over the glacier, 0805 covers half of it; 0820 and 0901 tie on cloud
    # at 1 % precision and 0820's off-glacier ring is less snowy
    assert record["scene_ids"] == ["S2_T32TPS_0820+S2_T32TQS_0820"]
    assert (record["date"], record["cloud_fraction"], record["coverage"], record["snow_index"]) == ("2023-08-20", 0.0, 1.0, 0.1)
    assert record["tile_cloud"] == 13.0 and record["dem_scene_ids"] == ["dem:COPERNICUS_30"]
    by_id = {c["scene_id"]: c for c in record["candidates"]}
    assert by_id["S2_T32TPS_0810"]["rejected"] == "cloud 0.60 > 0.30"
    assert by_id["S2_T32TPS_0805"]["rejected"] == "coverage 0.50 < 0.90"
    assert [by_id[k]["rank"] for k in ("S2_T32TPS_0820+S2_T32TQS_0820", "S2_T32TPS_0901")] == [1, 2]
    assert fake.count("statistics") == 2 and fake.count("process") == 2  # area + ring; optical + DEM

    with rasterio.open(output) as src:
        assert src.descriptions == (*CHIP_BANDS, "valid")
        assert src.crs.to_string() == grid.crs and src.transform == grid.transform and src.shape == grid.shape
        chip = src.read()
    assert read_selection(output)["scene_ids"] == record["scene_ids"]
    np.testing.assert_allclose(chip[:6, 5, 5], [0.2, 0.21, 0.22, 0.23, 0.24, 0.25], atol=1e-6)
    valid = chip[-1]
    assert valid[:3].sum() == 0 and valid[3:].all()  # SCL 9 rows are not usable
    elevation, slope = chip[6], chip[7]
    assert elevation[0, 0] == pytest.approx(2000 + 0.1 * (grid.bounds[0] + 5 - DEM_ORIGIN_X), abs=1e-2)
    np.testing.assert_allclose(slope[1:-1, 1:-1], math.degrees(math.atan(0.1)), atol=1e-3)

    # the process request was the chip grid and the chosen day
    process = next(body for kind, body in fake.calls if kind == "process" and body["input"]["data"][0]["type"] != "dem")
    assert process["input"]["bounds"]["bbox"] == list(grid.bounds)
    assert process["input"]["data"][0]["dataFilter"]["timeRange"]["from"] == "2023-08-20T00:00:00Z"

    # the secret never reached a log record, stdout/stderr or the chip; the OAuth library's
    # body-logging records were there and were redacted
    assert any("redacted by glacimap" in r.getMessage() for r in caplog.records)
    captured = capsys.readouterr()
    with rasterio.open(output) as src:
        tags = json.dumps(src.tags())
    for text in (caplog.text, captured.out, captured.err, tags):
        assert SECRET not in text and fake.token not in text


def test_composite_fills_cloudy_rows(fake_sh, tmp_path: Path) -> None:  # noqa: ANN001
    fake, url = fake_sh
    config = sh_config(_fake_settings(tmp_path, url), environ={})
    tiles = search_scenes_sh(config, "s2", (10.9, 46.9, 11.1, 47.1), date(2023, 8, 1), date(2023, 9, 30), 80.0)
    grid, _ = glacier_grid(GLACIER, 10.0, 100.0)
    job = GlacierJob("G", shapely.to_wkb(GLACIER), grid, tuple(acquisitions(tiles, GLACIER.buffer(0.001))))
    params = FetchParams(buffer=100.0, min_coverage=0.9, max_cloud=0.3, target=date(2023, 8, 31), composite=True)
    record = build_chip_sh(job, params, tmp_path / "chip.tif", config, max_tile_cloud=80.0)
    assert record["scene_ids"] == ["S2_T32TPS_0820+S2_T32TQS_0820", "S2_T32TPS_0901"]
    with rasterio.open(tmp_path / "chip.tif") as src:
        chip = src.read()
        assert src.descriptions[-2:] == ("source", "valid")
    source = chip[-2]
    assert (source[:3] == 2).all() and (source[3:] == 1).all() and chip[-1].all()
    assert chip[2, 0, 0] == pytest.approx(0.32) and chip[2, 5, 0] == pytest.approx(0.22)


def test_large_chips_are_requested_in_pieces(fake_sh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    fake, url = fake_sh
    config = sh_config(_fake_settings(tmp_path, url), environ={})
    scene = acquisitions([_scene("S2_T32TPS_0820", "2023-08-20", 12.0)], GLACIER.buffer(0.001))[0]
    whole, whole_usable = optical_layers_sh(scene, GRID, config)
    whole_dem = elevation_sh(GRID, config)
    calls = fake.count("process")
    monkeypatch.setattr(sentinelhub, "PROCESS_MAX_PX", 20)
    pieces = split_grid(GRID)
    assert len(pieces) == 9 and sum(p.width * p.height for _, _, p in pieces) == GRID.width * GRID.height
    assert pieces[4][2].transform.c == GRID.transform.c + 200 and pieces[4][2].transform.f == GRID.transform.f - 200
    split, split_usable = optical_layers_sh(scene, GRID, config)
    np.testing.assert_array_equal(split, whole)
    np.testing.assert_array_equal(split_usable, whole_usable)
    assert whole_usable[:3].sum() == 0 and whole_usable[3:].all()
    np.testing.assert_allclose(elevation_sh(GRID, config), whole_dem, atol=1e-3)
    assert fake.count("process") - calls == 18
    # statistics coarsen their resolution instead: at most PROCESS_MAX_PX pixels a side
    request = cloud_statistics_request(OUTLINE.buffer(100.0), GRID.crs, get_product("s2"), date(2023, 8, 1),
                                       date(2023, 8, 2), config)
    assert request.download_list[0].post_values["aggregation"]["resx"] == 26  # 502 m / 20 px, rounded up


def test_no_usable_scene(fake_sh, tmp_path: Path) -> None:  # noqa: ANN001
    fake, url = fake_sh
    config = sh_config(_fake_settings(tmp_path, url), environ={})
    grid, _ = glacier_grid(GLACIER, 10.0, 100.0)
    cloudy = _scene("S2_T32TPS_0810", "2023-08-10", 5.0)
    job = GlacierJob("G", shapely.to_wkb(GLACIER), grid, (cloudy,))
    params = FetchParams(buffer=100.0, min_coverage=0.9, max_cloud=0.3, target=date(2023, 8, 31))
    record = build_chip_sh(job, params, tmp_path / "chip.tif", config)
    assert record["status"] == "no_valid_data" and "S2_T32TPS_0810: cloud 0.60 > 0.30" in record["reason"]
    assert record["candidates"][0]["scene_id"] == "S2_T32TPS_0810"
    assert fake.count("process") == 0 and not (tmp_path / "chip.tif").exists()


def test_rejected_credentials(fake_sh, tmp_path: Path) -> None:  # noqa: ANN001
    fake, url = fake_sh
    settings = _settings(tmp_path, sh_client_id=CLIENT_ID, sh_client_secret="wrong-" + SECRET, sh_base_url=url)
    config = sh_config(settings, environ={})
    with pytest.raises(ConfigError, match="rejected the credentials \\(invalid_client\\)") as info:
        search_scenes_sh(config, "s2", (10.9, 46.9, 11.1, 47.1), date(2023, 8, 1), date(2023, 9, 30))
    assert SECRET not in str(info.value)


def test_run_fetch_sentinelhub(fake_sh, tmp_path: Path) -> None:  # noqa: ANN001
    fake, url = fake_sh
    second = shapely.affinity.translate(GLACIER, xoff=0.02, yoff=0.01)
    _inventory(tmp_path, {"RGI60-11.00001": GLACIER, "RGI60-11.00002": second})
    settings = _fake_settings(tmp_path, url)
    result = run_fetch_sentinelhub(settings)
    assert (result.glaciers, result.ok, result.failed, result.skipped) == (2, 2, 0, 0)
    assert result.mean_cloud_chosen == 0.0 and result.mean_cloud_naive == pytest.approx(0.6)
    manifest = read_manifest(Workspace(settings.work), 2023).set_index("glacier_id")
    assert set(manifest["status"]) == {"ok"}
    # each glacier's acquisition holds only the tiles that reach it
    assert manifest.loc["RGI60-11.00001", "scene_ids"] == "S2_T32TPS_0820+S2_T32TQS_0820"
    assert manifest.loc["RGI60-11.00002", "scene_ids"] == "S2_T32TQS_0820"
    assert manifest.loc["RGI60-11.00002", "tile_cloud"] == 14.0
    assert manifest.loc["RGI60-11.00002", "naive_scene_id"] == "S2_T32TPS_0810"
    assert (manifest["n_candidates"] == 4).all()  # 0815 is above --max-tile-cloud
    candidates = pd.read_parquet(result.candidates)
    assert candidates["chosen"].sum() == 2 and len(candidates) == 8
    assert fake.count("statistics") == 4 and fake.count("process") == 4

    # a second run skips the finished chips and rebuilds the same manifest from their tags
    again = run_fetch_sentinelhub(settings)
    assert (again.ok, again.skipped, again.mean_cloud_naive) == (0, 2, pytest.approx(0.6))
    assert fake.count("process") == 4
    for path in (result.manifest, result.candidates):
        assert SECRET not in path.read_bytes().decode("latin-1")


# -- live ----------------------------------------------------------------------------------------
_LIVE = bool(os.environ.get("SH_CLIENT_ID") and os.environ.get("SH_CLIENT_SECRET"))


@pytest.mark.network
@pytest.mark.skipif(not _LIVE, reason="live Sentinel Hub test: set SH_CLIENT_ID and SH_CLIENT_SECRET "
                    "(and GLACIMAP_SH_BASE_URL for the Copernicus Data Space) to run it")
def test_live_sentinelhub(tmp_path: Path) -> None:
    """Hintereisferner (Ötztal Alps), late summer 2023: search, statistics and a small chip."""
    hef = shapely.Polygon([(10.755, 46.795), (10.775, 46.795), (10.775, 46.805), (10.755, 46.805)])
    settings = _settings(tmp_path, sh_base_url=os.environ.get("GLACIMAP_SH_BASE_URL"))
    config = sh_config(settings)
    tiles = search_scenes_sh(config, "s2", hef.buffer(0.01).bounds, date(2023, 8, 15), date(2023, 9, 15), 60.0)
    assert tiles and all(t.collection == "sentinel-2-l2a" and t.tile_cloud <= 60 for t in tiles)
    grid, _ = glacier_grid(hef, 10.0, 0.0)
    candidates = sorted(acquisitions(tiles, hef), key=lambda s: s.tile_cloud)[:2]
    job = GlacierJob("hef", shapely.to_wkb(hef), grid, tuple(candidates))
    params = FetchParams(buffer=50.0, min_coverage=0.5, max_cloud=1.0, target=date(2023, 9, 1))
    record = build_chip_sh(job, params, tmp_path / "hef.tif", config, max_tile_cloud=60.0)
    with rasterio.open(tmp_path / "hef.tif") as src:
        chip = src.read()
    assert record["coverage"] >= 0.5 and chip.shape[1:] == grid.shape
    reflectance = chip[:6][np.isfinite(chip[:6])]
    assert reflectance.size and 0.0 <= np.median(reflectance) <= 1.5
    assert 2300 < np.nanmedian(chip[6]) < 3800  # the glacier lies between ~2400 and 3700 m
