"""glacimap predict on a hand-made workspace with the band-ratio model (no weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from typer.testing import CliRunner

from glacimap.cli import app
from glacimap.errors import BandMismatchError, DeviceError, InvalidInputError
from glacimap.fetch.chips import CHIP_BANDS
from glacimap.predict import effective_tile, run_predict
from glacimap.rasters import Grid, read_raster, write_cog
from glacimap.settings import PredictSettings
from glacimap.workspace import Workspace

ICE = {"blue": 0.55, "green": 0.5, "red": 0.45, "nir": 0.35, "swir16": 0.03, "swir22": 0.02}
ROCK = {"blue": 0.12, "green": 0.14, "red": 0.16, "nir": 0.22, "swir16": 0.28, "swir22": 0.22}


def _chip(rows: int, cols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ice = np.zeros((rows, cols), dtype=bool)
    ice[rows // 4 : 3 * rows // 4, cols // 4 : 3 * cols // 4] = True
    layers = [np.where(ice, ICE[b], ROCK[b]) + rng.normal(0, 0.005, ice.shape) for b in CHIP_BANDS[:6]]
    layers += [np.full(ice.shape, 2500.0), np.full(ice.shape, 20.0)]
    valid = np.ones(ice.shape)
    valid[:3, :] = 0  # a cloudy strip
    return np.stack([*layers, valid]).astype(np.float32), ice


def _workspace(tmp_path: Path, sizes: dict[str, tuple[int, int]], bands: tuple[str, ...] = (*CHIP_BANDS, "valid")) -> tuple[Workspace, dict]:
    ws = Workspace(tmp_path / "work")
    truth = {}
    for k, (gid, (rows, cols)) in enumerate(sizes.items()):
        data, ice = _chip(rows, cols, k)
        grid = Grid("EPSG:32632", Affine(10, 0, 600_000 + 5000 * k, 0, -10, 5_200_000), rows, cols)
        keep = [list((*CHIP_BANDS, "valid")).index(b) for b in bands]
        write_cog(ws.chip(2023, gid), data[keep], grid, list(bands), nodata=float("nan"))
        truth[gid] = ice
    manifest = pd.DataFrame({"glacier_id": [*sizes, "NOPE"], "status": ["ok"] * len(sizes) + ["no_valid_data"]})
    manifest.to_parquet(ws.manifest(2023))
    return ws, truth


def test_band_ratio_prediction(tmp_path: Path) -> None:
    ws, truth = _workspace(tmp_path, {"G1": (40, 50), "G2": (150, 130), "G3": (20, 20)})
    settings = PredictSettings(work=ws.root, year=2023, model="band-ratio", tile=64, batch_size=3)
    result = run_predict(settings)
    assert (result.chips, result.predicted, result.skipped, result.failed) == (3, 3, 0, 0)
    for gid, ice in truth.items():
        data, _, names, _ = read_raster(ws.prediction(2023, gid))
        assert names == ("probability", "confidence")
        prob = data[0]
        assert np.isnan(prob[:3]).all()  # cloudy rows stay no-data
        assert np.array_equal(prob[3:] > 0.5, ice[3:])
        assert np.nanmin(data[1]) >= 0 and np.nanmax(data[1]) <= 1
    assert 0 < result.invalid_fraction < 0.2
    again = run_predict(settings)
    assert again.skipped == 3 and again.predicted == 0


def test_effective_tile() -> None:
    assert effective_tile((20, 20), 384) == 32
    assert effective_tile((100, 33), 384) == 128
    assert effective_tile((1000, 500), 384) == 384


def test_wrong_bands_is_bad_input(tmp_path: Path) -> None:
    ws, _ = _workspace(tmp_path, {"G1": (30, 30)}, bands=("blue", "green", "red", "nir", "swir22", "valid"))
    with pytest.raises(BandMismatchError, match=r"missing \['swir16'\]"):
        run_predict(PredictSettings(work=ws.root, year=2023, model="band-ratio", tile=64))
    assert not ws.prediction(2023, "G1").exists()


def test_truncated_chip_is_bad_input(tmp_path: Path) -> None:
    ws, _ = _workspace(tmp_path, {"G1": (300, 300)})
    path = ws.chip(2023, "G1")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(InvalidInputError, match="G1"):
        run_predict(PredictSettings(work=ws.root, year=2023, model="band-ratio", tile=64))
    assert list(ws.predictions_dir(2023).iterdir()) == []


def test_cuda_without_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ws, _ = _workspace(tmp_path, {"G1": (30, 30)})
    with pytest.raises(DeviceError, match="CUDA requested"):
        run_predict(PredictSettings(work=ws.root, year=2023, model="band-ratio", device="cuda"))


def test_cli_exit_codes(tmp_path: Path) -> None:
    ws, _ = _workspace(tmp_path, {"G1": (30, 30)})
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", "--work", str(ws.root), "--year", "2023", "--model", "band-ratio", "--tile", "64"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["predict", "--work", str(ws.root), "--year", "2023", "--model", str(tmp_path / "nope.safetensors"), "--overwrite"])
    assert bad.exit_code == 2 and "not found" in bad.stderr
