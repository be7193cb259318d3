"""The whole chain offline: glacimap demo on the small preset, and dask gives identical outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from glacimap.demo import format_summary, run_demo
from glacimap.errors import PartialFailureError
from glacimap.fetch import run_fetch
from glacimap.models.weights import packaged_weights_dir
from glacimap.predict import run_predict
from glacimap.settings import DemoSettings, FetchSettings, PredictSettings
from glacimap.workspace import Workspace

pytestmark = pytest.mark.slow


def test_demo_generate_only(tmp_path: Path) -> None:
    result = run_demo(DemoSettings(work=tmp_path / "demo", small=True, generate_only=True))
    assert (result.world / "world.json").exists() and result.figure.exists()
    assert "synthetic world" in format_summary(result)


def test_demo_small_chain(tmp_path: Path) -> None:
    if not (packaged_weights_dir() / "synthetic-demo.safetensors").exists():
        pytest.skip("the packaged synthetic-demo weights are not in this checkout")
    result = run_demo(DemoSettings(work=tmp_path / "demo", small=True))
    summary = format_summary(result)
    assert result.glaciers > 5
    for year in (2015, 2023):
        assert result.cloud_chosen[year] < result.cloud_naive[year], summary
        assert result.iou[year] >= 0.8, summary
    assert abs(result.rate_pred - result.rate_truth) < 1.0, summary
    assert result.report.exists()


@pytest.fixture(scope="module")
def unseen_world_demo(tmp_path_factory: pytest.TempPathFactory):
    """The chain on a 10 km world whose seed (42) the demo model never saw (it saw 1-3)."""
    if not (packaged_weights_dir() / "synthetic-demo.safetensors").exists():
        pytest.skip("the packaged synthetic-demo weights are not in this checkout")
    return run_demo(DemoSettings(work=tmp_path_factory.mktemp("unseen") / "demo", size_km=10.0, seed=42))


def test_area_change_on_an_unseen_world(unseen_world_demo) -> None:
    """Measured (shipped model): 21 glaciers kept, -1.09 %/a against -1.50 %/a true for the same
    glaciers, per-glacier median |error| 0.41 %/a, IoU 0.906 (2015) and 0.893 (2023)."""
    result = unseen_world_demo
    summary = format_summary(result)
    assert result.units_compared >= 15, summary
    assert result.median_abs_error < 0.5, summary  # issue 8's per-glacier target
    assert result.rate_pred < 0 and abs(result.rate_pred - result.rate_truth) < 0.6, summary
    for year in (2015, 2023):
        assert result.iou[year] >= 0.88, summary


@pytest.mark.xfail(strict=True, reason="issues 8/9: loss under-estimated by ~0.4 %/a (seasonal snow mapped as ice on "
                   "ground deglaciated since 2015, debris-covered termini missed) and IoU 0.893 in 2023; targets "
                   "0.2 %/a and 0.90")
def test_issue_targets_on_an_unseen_world(unseen_world_demo) -> None:
    result = unseen_world_demo
    assert abs(result.rate_pred - result.rate_truth) < 0.2
    assert min(result.iou.values()) >= 0.90


def _fetch(world, stac_url: str, work: Path, **parallel) -> None:
    settings = FetchSettings(inventory=world.root / "inventory_2015.gpkg", year=2023, stac_url=stac_url, work=work, **parallel)
    try:
        run_fetch(settings)
    except PartialFailureError:
        pass


def test_local_cluster_gives_identical_outputs(small_world, world_stac, tmp_path: Path) -> None:
    from distributed import LocalCluster

    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    _fetch(small_world, world_stac.stac_url, serial, workers=1)
    run_predict(PredictSettings(work=serial, year=2023, model="band-ratio", workers=1))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        _fetch(small_world, world_stac.stac_url, parallel, scheduler=cluster.scheduler_address)
        run_predict(PredictSettings(work=parallel, year=2023, model="band-ratio", scheduler=cluster.scheduler_address))
    a, b = Workspace(serial), Workspace(parallel)
    pd.testing.assert_frame_equal(pd.read_parquet(a.manifest(2023)), pd.read_parquet(b.manifest(2023)))
    ok = pd.read_parquet(a.manifest(2023)).query("status == 'ok'")["glacier_id"]
    assert len(ok) > 0
    for gid in ok:
        for path_a, path_b in ((a.chip(2023, gid), b.chip(2023, gid)), (a.prediction(2023, gid), b.prediction(2023, gid))):
            with rasterio.open(path_a) as x, rasterio.open(path_b) as y:
                px, py = dict(x.profile), dict(y.profile)
                assert np.isnan(px.pop("nodata")) and np.isnan(py.pop("nodata")) and px == py
                assert x.tags() == y.tags() and x.descriptions == y.descriptions
                np.testing.assert_array_equal(x.read(), y.read())
