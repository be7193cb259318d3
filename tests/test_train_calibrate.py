"""glacimap train -> calibrate -> predict on a tiny hand-made workspace (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from glacimap.calibrate import run_calibrate
from glacimap.fetch.chips import CHIP_BANDS
from glacimap.inventory import normalise_inventory, save_inventory
from glacimap.models.weights import read_manifest
from glacimap.predict import run_predict
from glacimap.rasters import Grid, read_raster, write_cog
from glacimap.settings import CalibrateSettings, PredictSettings, TrainSettings
from glacimap.train import run_train, samples_from_workspace
from glacimap.workspace import Workspace

ICE = (0.55, 0.5, 0.45, 0.35, 0.03, 0.02)
ROCK = (0.12, 0.14, 0.16, 0.22, 0.28, 0.22)
N = 48


def _world(root: Path, chips: int = 4) -> Workspace:
    ws = Workspace(root)
    outlines, ids = [], []
    for k in range(chips):
        rng = np.random.default_rng(k)
        x0, y0 = 600_000.0 + 2_000 * k, 5_200_000.0
        grid = Grid("EPSG:32632", Affine(10, 0, x0, 0, -10, y0 + N * 10), N, N)
        r0, c0 = 8 + k, 10 + 2 * k
        ice = np.zeros((N, N), dtype=bool)
        ice[r0 : r0 + 24, c0 : c0 + 20] = True
        layers = [np.where(ice, a, b) + rng.normal(0, 0.01, ice.shape) for a, b in zip(ICE, ROCK)]
        layers += [np.full(ice.shape, 2500.0), np.full(ice.shape, 20.0), np.ones(ice.shape)]
        write_cog(ws.chip(2015, f"G{k}"), np.stack(layers).astype(np.float32), grid, [*CHIP_BANDS, "valid"], nodata=float("nan"))
        outlines.append(shapely.box(x0 + c0 * 10, y0 + (N - r0 - 24) * 10, x0 + (c0 + 20) * 10, y0 + (N - r0) * 10))
        ids.append(f"G{k}")
    inventory = gpd.GeoDataFrame({"glacier_id": ids}, geometry=outlines, crs="EPSG:32632")
    save_inventory(normalise_inventory(inventory, "test"), ws.inventory)
    pd.DataFrame({"glacier_id": ids, "status": ["ok"] * chips}).to_parquet(ws.manifest(2015))
    return ws


def test_samples_from_workspace_label_the_inventory(tmp_path: Path) -> None:
    ws = _world(tmp_path / "w", chips=2)
    samples = samples_from_workspace(ws.root, 2015)
    assert len(samples) == 2 and samples[0].label.sum() == 24 * 20
    assert set(samples[0].bands) == set(CHIP_BANDS) and samples[0].mask.all()


@pytest.mark.slow
def test_train_calibrate_predict(tmp_path: Path) -> None:
    ws = _world(tmp_path / "w")
    weights = tmp_path / "models" / "tiny.safetensors"
    train = TrainSettings(work=ws.root, year=2015, model="glavitu-s", out=weights, epochs=3, patch=32,
                          batch_size=4, patches_per_epoch=16, folds=2, lr=2e-3, device="cpu")
    result = run_train(train)
    assert weights.exists() and result.losses[-1] < result.losses[0]
    calibrated = run_calibrate(CalibrateSettings(work=ws.root, year=2015, model=str(weights), tile=64))
    assert 0.0 <= calibrated.ece_after <= 1.0 and calibrated.diagram.exists()
    assert read_manifest(weights.with_suffix(".json")).calibration is not None
    predicted = run_predict(PredictSettings(work=ws.root, year=2015, model=str(weights), tile=64, device="cpu"))
    assert predicted.predicted == 4
    data, _, names, _ = read_raster(ws.prediction(2015, "G0"))
    assert names == ("probability", "confidence") and np.isfinite(data).all()
