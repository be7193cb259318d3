"""glacimap fetch against a real local STAC API serving the small synthetic world."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from glacimap.errors import PartialFailureError
from glacimap.fetch import FetchResult, run_fetch
from glacimap.fetch.chips import CHIP_BANDS, read_selection
from glacimap.fetch.select import selection_key
from glacimap.fetch.plan import CandidateScore
from glacimap.settings import FetchSettings
from glacimap.synthetic.serve import Fault, FaultConfig
from glacimap.workspace import Workspace

pytestmark = pytest.mark.slow


def _fetch(world, stac, work: Path, year: int, **extra) -> FetchResult:
    settings = FetchSettings(inventory=world.root / "inventory_2015.gpkg", year=year, stac_url=stac.stac_url,
                             work=work, workers=1, **extra)
    try:
        return run_fetch(settings)
    except PartialFailureError as exc:  # glaciers under cloud in every candidate: reported
        return exc.result


@pytest.fixture(scope="module")
def fetched_2023(small_world, world_stac, tmp_path_factory) -> tuple[Workspace, FetchResult]:
    work = tmp_path_factory.mktemp("fetch2023")
    return Workspace(work), _fetch(small_world, world_stac, work, 2023)


def test_each_glacier_gets_its_least_cloudy_scene(fetched_2023) -> None:
    ws, result = fetched_2023
    candidates = pd.read_parquet(ws.candidates(2023))
    manifest = pd.read_parquet(ws.manifest(2023)).set_index("glacier_id")
    assert result.ok >= 0.6 * result.glaciers
    for gid, group in candidates.groupby("glacier_id"):
        if manifest.loc[gid, "status"] != "ok":
            assert group["rejected"].notna().all()  # nothing eligible: every candidate says why
            continue
        eligible = group[group["rejected"].isna()]
        keys = {row.scene_id: selection_key(CandidateScore(gid, row.scene_id, row.coverage, row.cloud_fraction,
                                                           row.snow_index, row.tile_cloud, row.days_from_target))
                for row in eligible.itertuples()}
        chosen = group.loc[group["chosen"], "scene_id"].tolist()
        assert chosen == [min(keys, key=keys.get)]
        assert manifest.loc[gid, "cloud_fraction"] == pytest.approx(eligible["cloud_fraction"].min(), abs=0.01)


def test_the_trap_is_avoided(small_world, fetched_2023) -> None:
    ws, _ = fetched_2023
    manifest = pd.read_parquet(ws.manifest(2023)).set_index("glacier_id")
    traps = [t for t in small_world.traps if t.year == 2023 and t.collection == "sentinel-2-l2a"]
    assert traps, "the world must hold a 2023 Sentinel-2 trap"
    for trap in traps:
        for gid in trap.glacier_ids:
            assert manifest.loc[gid, "status"] == "ok"
            assert trap.scene not in manifest.loc[gid, "scene_ids"].split(",")
            assert manifest.loc[gid, "cloud_fraction"] <= 0.05


def test_cloud_over_glaciers_far_below_naive_choice(fetched_2023) -> None:
    _, result = fetched_2023
    assert result.mean_cloud_chosen < 0.05
    assert result.mean_cloud_naive > 3 * result.mean_cloud_chosen


def test_chip_layout(fetched_2023) -> None:
    ws, _ = fetched_2023
    manifest = pd.read_parquet(ws.manifest(2023))
    gid = manifest.loc[manifest["status"] == "ok", "glacier_id"].iloc[0]
    with rasterio.open(ws.chip(2023, gid)) as src:
        assert src.descriptions == (*CHIP_BANDS, "valid")
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.crs.to_epsg() == 32632 and src.res == (10.0, 10.0)
        assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
        data = src.read()
    valid = data[-1] > 0
    refl = data[:6][:, valid]
    assert np.nanmin(refl) > -0.05 and np.nanmax(refl) < 1.2  # harmonised reflectance
    assert 1400 < np.nanmedian(data[6]) < 4100 and np.nanmax(data[7]) < 90
    assert read_selection(ws.chip(2023, gid))["glacier_id"] == gid


def test_landsat_and_sentinel2_agree(small_world, world_stac, fetched_2023, tmp_path: Path) -> None:
    ws_s2, _ = fetched_2023
    result = _fetch(small_world, world_stac, tmp_path, 2023, sensors=("landsat",))
    ws_l = Workspace(tmp_path)
    both = set(pd.read_parquet(ws_s2.manifest(2023)).query("status == 'ok'")["glacier_id"]) & set(
        pd.read_parquet(ws_l.manifest(2023)).query("status == 'ok'")["glacier_id"])
    assert result.ok > 0 and both
    differences = []
    for gid in sorted(both):
        with rasterio.open(ws_s2.chip(2023, gid)) as a, rasterio.open(ws_l.chip(2023, gid)) as b:
            s2, ls = a.read(), b.read()
        clear = (s2[-1] > 0) & (ls[-1] > 0) & (s2[7] > 35)  # steep rock walls: no snow, no ice change
        if clear.sum() > 50:
            differences.append(np.nanmedian(s2[:6, clear] - ls[:6, clear], axis=1))
    assert differences
    assert np.abs(np.median(differences, axis=0)).max() < 0.05


def test_resume_reads_nothing_for_finished_glaciers(small_world, world_server, fetched_2023) -> None:
    ws, first = fetched_2023
    world_server.reset_counters()
    again = _fetch(small_world, world_server, ws.root, 2023)
    assert again.skipped == first.ok and again.ok == 0
    assert sum(world_server.bytes_served().values()) == 0


def test_http_faults_are_retried_then_reported(small_world, world_server, tmp_path: Path) -> None:
    world_server.set_faults(FaultConfig((Fault("assets/cop-dem-glo-30/*", "error", times=1, status=500),
                                         Fault("assets/sentinel-2-l2a/*/scl.tif", "truncate", times=1))))
    recovered = _fetch(small_world, world_server, tmp_path / "a", 2023)
    assert recovered.ok > 0
    # GDAL caches what it read in this process, so fail assets of a year not read yet.
    world_server.set_faults(FaultConfig((Fault("assets/sentinel-2-l2a/*2019*/red.tif", "error", times=1000, status=503),)))
    with pytest.raises(PartialFailureError) as err:
        run_fetch(FetchSettings(inventory=small_world.root / "inventory_2015.gpkg", year=2019,
                                stac_url=world_server.stac_url, work=tmp_path / "b", workers=1))
    manifest = pd.read_parquet(Workspace(tmp_path / "b").manifest(2019))
    failed = manifest[manifest["status"] == "failed"]
    assert len(failed) > 0 and failed["reason"].str.contains("red.tif: failed after 3 attempts").all()
    assert err.value.exit_code == 3


def test_killed_fetch_leaves_no_truncated_chip(small_world, world_server, tmp_path: Path) -> None:
    work = tmp_path / "killed"
    cmd = [sys.executable, "-m", "glacimap.cli", "fetch", "--inventory", str(small_world.root / "inventory_2015.gpkg"),
           "--year", "2019", "--stac-url", world_server.stac_url, "--work", str(work), "--workers", "1", "--quiet"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    chips = work / "chips" / "2019"
    deadline = time.monotonic() + 120

    def finished() -> list[Path]:  # temporaries are hidden files (.NAME.xxxx.tmp.tif)
        return sorted(p for p in chips.glob("*.tif") if not p.name.startswith("."))

    while time.monotonic() < deadline and process.poll() is None and len(finished()) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = finished()
    for chip in done:  # every chip that exists is complete
        with rasterio.open(chip) as src:
            src.read()
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode in (0, 3), result.stderr
    assert not list(chips.glob(".*tmp*"))
    manifest = pd.read_parquet(Workspace(work).manifest(2019))
    ok = set(manifest.loc[manifest["status"] == "ok", "glacier_id"])
    assert {p.stem for p in done} <= ok
    assert json.loads(Workspace(work).runs_log.read_text().splitlines()[-1])["command"] == "fetch"


def test_sentinel1_bands(small_world, world_stac, tmp_path: Path) -> None:
    result = _fetch(small_world, world_stac, tmp_path, 2023, sensors=("auto", "s1"))
    ws = Workspace(tmp_path)
    manifest = pd.read_parquet(ws.manifest(2023))
    gid = manifest.loc[manifest["status"] == "ok", "glacier_id"].iloc[0]
    assert result.ok > 0
    with rasterio.open(ws.chip(2023, gid)) as src:
        names = src.descriptions
        data = src.read()
    assert names == (*CHIP_BANDS, "vv_asc", "vv_desc", "vh_asc", "vh_desc", "valid")
    sar = data[len(CHIP_BANDS):len(CHIP_BANDS) + 4]
    finite = np.isfinite(sar)
    assert finite.mean() > 0.5
    assert -40 < np.nanmedian(sar) < 5  # backscatter in dB
    assert len(manifest.loc[manifest["glacier_id"] == gid, "sar_scene_ids"].iloc[0].split(",")) == 2


def test_partial_failure_counts_each_glacier_once(small_world, world_stac, tmp_path: Path) -> None:
    with pytest.raises(PartialFailureError) as err:
        run_fetch(FetchSettings(inventory=small_world.root / "inventory_2015.gpkg", year=2023,
                                stac_url=world_stac.stac_url, work=tmp_path, workers=1, max_cloud=0.01))
    result = err.value.result
    assert err.value.total == result.glaciers
    assert err.value.failed == result.failed and f"of {result.glaciers} glaciers" in str(err.value)
