"""The local STAC API (rustac) and asset server (uvicorn) over real HTTP on 127.0.0.1.

Known answers come from the tiny catalogue of tests/conftest.py (TINY_S2_SCENES).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from glacimap.errors import ConfigError, InputNotFoundError, InvalidInputError

pytest.importorskip("rustac", reason="the local STAC API needs rustac==0.9.9 (pip install glacimap[serve])")

from pystac_client import Client  # noqa: E402

from glacimap.synthetic.serve import Fault, FaultConfig, ServeError, serve_catalog  # noqa: E402

S2 = "sentinel-2-l2a"
DEM = "cop-dem-glo-30"
RED_B = f"assets/{S2}/S2_B/red.tif"
GDAL_HTTP = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
CLOUD_AT_MOST_40 = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 40]}

# rustac filters and sorts but does not list filter/sort in /conformance.
pytestmark = pytest.mark.filterwarnings("ignore::pystac_client.warnings.DoesNotConformTo")


@pytest.fixture(scope="module")
def tiny(tiny_stac_catalog: Path):
    """A server over the tiny catalogue whatever ``stac_catalog_dir`` points at."""
    with serve_catalog(tiny_stac_catalog) as local:
        yield local


@pytest.fixture
def server(tiny):
    tiny.set_faults(None)
    tiny.reset_counters()
    yield tiny
    tiny.set_faults(None)
    tiny.reset_counters()


def _http() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10.0)


def _window(path: str, window: Window) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, window=window)


# -- STAC API -----------------------------------------------------------------------------------
def test_search_bbox_datetime_filter_sortby(server) -> None:
    client = Client.open(server.stac_url)
    common = dict(
        collections=[S2],
        bbox=[10.98, 46.98, 11.02, 47.02],
        datetime="2023-06-01T00:00:00Z/2023-09-30T23:59:59Z",
        filter=CLOUD_AT_MOST_40,
        filter_lang="cql2-json",
    )
    by_cloud = list(client.search(**common, sortby="+eo:cloud_cover").items())
    # S2_D: 80 % cloud; S2_E: 2022; S2_F: outside the bbox. 40 % is kept (<= is inclusive).
    assert [(i.id, i.properties["eo:cloud_cover"]) for i in by_cloud] == [
        ("S2_B", 5.0),
        ("S2_C", 12.5),
        ("S2_A", 40.0),
    ]
    newest_first = [i.id for i in client.search(**common, sortby="-datetime").items()]
    assert newest_first == ["S2_C", "S2_B", "S2_A"]
    hrefs = {a.href for a in by_cloud[0].assets.values()}
    assert hrefs == {server.asset_href(f"assets/{S2}/S2_B/red.tif"), server.asset_href(f"assets/{S2}/S2_B/scl.tif")}


def test_search_intersects_ids_and_get(server) -> None:
    client = Client.open(server.stac_url)
    point = {"type": "Point", "coordinates": [13.0, 47.0]}
    assert [i.id for i in client.search(intersects=point).items()] == ["S2_F"]
    assert sorted(i.id for i in client.search(ids=["S2_E", "DEM_N47_E011"], method="GET").items()) == [
        "DEM_N47_E011",
        "S2_E",
    ]
    # Without a limit the server returns every match in one page (it does not page).
    assert len(list(client.search(collections=[S2]).items())) == 6


def test_collections_listed(server) -> None:
    collections = {c.id: c for c in Client.open(server.stac_url).get_collections()}
    assert set(collections) == {S2, DEM}
    west, south, east, north = collections[DEM].extent.spatial.bboxes[0]
    assert (west, south, east, north) == pytest.approx((10.97, 46.97, 11.03, 47.03))
    start, end = collections[S2].extent.temporal.intervals[0]
    assert (start.date().isoformat(), end.date().isoformat()) == ("2022-08-15", "2023-09-01")


def test_query_extension_is_refused(server) -> None:
    body = {"collections": [S2], "query": {"eo:cloud_cover": {"lte": 40}}}
    with _http() as http:
        assert http.post(f"{server.stac_url}/search", json=body).status_code >= 400


def test_source_catalogue_untouched(server, tiny_stac_catalog: Path) -> None:
    lines = (tiny_stac_catalog / "items.ndjson").read_text(encoding="utf-8").splitlines()
    hrefs = [a["href"] for line in lines for a in json.loads(line)["assets"].values()]
    assert len(hrefs) == 13 and all(h.startswith("assets/") for h in hrefs)


def test_local_stac_fixture_serves_catalog_dir(stac_server, stac_catalog_dir: Path) -> None:
    items = [json.loads(x) for x in (stac_catalog_dir / "items.ndjson").read_text().splitlines() if x.strip()]
    client = Client.open(stac_server.stac_url)
    assert {c.id for c in client.get_collections()} == {i["collection"] for i in items}
    assert sorted(i.id for i in client.search().items()) == sorted(i["id"] for i in items)


# -- assets -------------------------------------------------------------------------------------
def test_vsicurl_window_matches_local_file(server, tiny_stac_catalog: Path) -> None:
    relative = f"assets/{S2}/S2_A/red.tif"
    window = Window(col_off=300, row_off=260, width=100, height=80)
    with rasterio.Env(**GDAL_HTTP):
        remote = _window(f"/vsicurl/{server.asset_href(relative)}", window)
    local = _window(str(tiny_stac_catalog / relative), window)
    assert remote.shape == (80, 100)
    np.testing.assert_array_equal(remote, local)
    # A COG window needs the header and one tile, not the whole file.
    size = (tiny_stac_catalog / relative).stat().st_size
    served = server.bytes_served()[relative]
    assert 0 < served < size / 2


def test_range_request_answers_206(server, tiny_stac_catalog: Path) -> None:
    content = (tiny_stac_catalog / RED_B).read_bytes()
    with _http() as http:
        response = http.get(server.asset_href(RED_B), headers={"Range": "bytes=100-299"})
        assert response.status_code == 206
        assert response.headers["content-range"] == f"bytes 100-299/{len(content)}"
        assert response.content == content[100:300]
        full = http.get(server.asset_href(RED_B))
        assert full.status_code == 200 and full.content == content
        assert http.get(server.asset_href("assets/nope.tif")).status_code == 404
    assert server.bytes_served()[RED_B] == 200 + len(content)
    assert server.request_counts()[RED_B] == 2
    server.reset_counters()
    assert server.bytes_served() == {} and server.request_counts() == {}


# -- fault injection ----------------------------------------------------------------------------
def test_error_fault_then_success(server, tiny_stac_catalog: Path) -> None:
    server.set_faults(FaultConfig((Fault(f"assets/{S2}/S2_C/*", "error", times=2, status=503),)))
    with _http() as http:
        codes = [http.get(server.asset_href(f"assets/{S2}/S2_C/scl.tif")).status_code for _ in range(3)]
    assert codes == [503, 503, 200]

    # GDAL retries HTTP 5xx when told to, and then reads the right pixels.
    relative = f"assets/{S2}/S2_C/red.tif"
    window = Window(0, 0, 64, 64)
    with rasterio.Env(**GDAL_HTTP, GDAL_HTTP_MAX_RETRY="3", GDAL_HTTP_RETRY_DELAY="0.05"):
        remote = _window(f"/vsicurl/{server.asset_href(relative)}", window)
    np.testing.assert_array_equal(remote, _window(str(tiny_stac_catalog / relative), window))
    assert server.request_counts()[relative] >= 3  # two refused + at least one served


def test_truncated_body_is_detected(server, tiny_stac_catalog: Path) -> None:
    relative = f"assets/{S2}/S2_D/scl.tif"
    content = (tiny_stac_catalog / relative).read_bytes()
    server.set_faults(FaultConfig((Fault(relative, "truncate", times=1, keep_fraction=0.25),)))
    with _http() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(server.asset_href(relative))
        assert server.request_counts()[relative] == 1
        assert server.bytes_served()[relative] == len(content) // 4
        again = http.get(server.asset_href(relative))
    assert again.status_code == 200 and again.content == content


def test_faults_apply_in_order(server, tiny_stac_catalog: Path) -> None:
    relative = f"assets/{DEM}/DEM_N47_E011/data.tif"
    server.set_faults(FaultConfig((Fault(relative, "error"), Fault("assets/*.tif", "truncate"))))
    with _http() as http:
        assert http.get(server.asset_href(relative)).status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(server.asset_href(relative))
        assert http.get(server.asset_href(relative)).content == (tiny_stac_catalog / relative).read_bytes()


def test_delay_fault_times_out_once(server) -> None:
    relative = f"assets/{S2}/S2_E/scl.tif"
    server.set_faults(FaultConfig((Fault(relative, "delay", times=1, delay_s=1.0),)))
    with httpx.Client(trust_env=False, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get(server.asset_href(relative))
        start = time.monotonic()
        assert http.get(server.asset_href(relative)).status_code == 200
    assert time.monotonic() - start < 0.3


def test_faults_are_validated() -> None:
    with pytest.raises(ConfigError, match="kind"):
        Fault("assets/*", "explode")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="keep_fraction"):
        Fault("assets/*", "truncate", keep_fraction=1.0)
    with pytest.raises(ConfigError, match="status"):
        Fault("assets/*", "error", status=200)


# -- life cycle ---------------------------------------------------------------------------------
def _refused(url: str) -> bool:
    try:
        with _http() as http:
            http.get(url, timeout=1.0)
    except httpx.ConnectError:
        return True
    return False


def test_servers_stop_on_exit(tiny_stac_catalog: Path) -> None:
    start = time.monotonic()
    with serve_catalog(tiny_stac_catalog) as local:
        startup_s = time.monotonic() - start
        assert local.running()
        process = local._process
        with _http() as http:
            assert http.get(f"{local.stac_url}/collections").status_code == 200
    assert startup_s < 15.0
    assert process.poll() is not None
    assert not local.running()
    assert _refused(local.stac_url) and _refused(local.asset_url + "/items.ndjson")
    assert not local.log_path.exists()  # temporary folder removed


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_command_line_serves_until_interrupted(tiny_stac_catalog: Path) -> None:
    command = [sys.executable, "-m", "glacimap.synthetic.serve", str(tiny_stac_catalog)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            stac_url = process.stdout.readline().split()[-1]
            asset_url = process.stdout.readline().split()[-1]
            with _http() as http:
                assert http.get(f"{stac_url}/collections").status_code == 200
                assert http.get(f"{asset_url}/{RED_B}", headers={"Range": "bytes=0-9"}).status_code == 206
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert _refused(stac_url) and _refused(asset_url)


def test_missing_catalogue_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="items.ndjson"):
        with serve_catalog(tmp_path):
            pass
    (tmp_path / "items.ndjson").write_text('{"type": "Feature", "id": "x"}\n')
    with pytest.raises(InvalidInputError, match="line 1.*collection"):
        with serve_catalog(tmp_path):
            pass


def test_busy_port_is_a_serve_error_naming_the_log(tiny_stac_catalog: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused at once
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match="address in use") as info:
            with serve_catalog(tiny_stac_catalog, stac_port=port):
                pass
    log_path = Path(str(info.value).split("see ")[-1])
    assert log_path.name == "rustac.log" and "Address already in use" in log_path.read_text()
    shutil.rmtree(log_path.parent)
