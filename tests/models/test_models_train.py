"""Training core: statistics, folds, datasets, the loop, checkpoints, strategies, bias optimisation."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from glacimap.augment import AugmentConfig
from glacimap.errors import BandMismatchError, InputError, InvalidInputError
from glacimap.models import create_model
from glacimap.models.weights import BandStats, load_weights
from glacimap.train import (
    PatchDataset,
    TileDataset,
    TrainConfig,
    TrainingSample,
    bias_optimise,
    compute_normalisation,
    cosine_warm_restarts,
    fit,
    geographic_folds,
    margin_band,
    mean_normalised_entropy,
    mine_hard_pixels,
    rasterise_labels,
    read_checkpoint,
    train_model,
)
from model_testdata import BANDS, SOURCES, make_sample, make_samples, tiny_glavitu

FAST = TrainConfig(
    epochs=3, batch_size=4, patch=32, patches_per_epoch=8, lr=2e-3, augment=AugmentConfig.none(), device="cpu"
)


def datasets(samples: list[TrainingSample], augment: AugmentConfig | None = None, location=None, length: int = 8):
    stats = compute_normalisation([s.bands for s in samples[:4]], [s.loss_mask(BANDS) for s in samples[:4]])
    train = PatchDataset(samples[:4], SOURCES, stats, 32, length, augment=augment, location=location, seed=0)
    val = TileDataset(samples[4:], SOURCES, stats, 32, location=location)
    return train, val


# -- statistics and folds -------------------------------------------------------------------------------
def test_normalisation_uses_valid_pixels_only() -> None:
    arrays = [{"a": np.array([[1.0, 2.0], [3.0, np.nan]])}, {"a": np.array([[100.0, 1.0]])}]
    masks = [np.array([[True, True], [False, True]]), np.array([[False, True]])]
    stats = compute_normalisation(arrays, masks)["a"]
    # valid values: 1, 2, 1 -> mean 4/3, population std sqrt(2/9)
    assert stats.mean == pytest.approx(4 / 3)
    assert stats.std == pytest.approx(math.sqrt(2 / 9))
    robust = compute_normalisation([{"a": np.arange(101.0)}], method="minmax")["a"]
    assert (robust.low, robust.high) == pytest.approx((2.0, 98.0))
    db = compute_normalisation([{"s": np.array([1.0, 10.0, 100.0])}], transforms={"s": "db"})["s"]
    assert (db.mean, db.transform) == (pytest.approx(10.0), "db")
    constant = compute_normalisation([{"c": np.ones(4)}])["c"]
    assert (constant.mean, constant.std) == (1.0, 1.0)
    with pytest.raises(InvalidInputError, match="no valid pixel"):
        compute_normalisation([{"a": np.array([np.nan])}])
    with pytest.raises(BandMismatchError, match="band 'b' missing"):
        compute_normalisation([{"a": np.ones(2)}], bands=["b"])


def test_geographic_folds_are_contiguous_blocks() -> None:
    line = np.stack([np.arange(10.0), np.zeros(10)], axis=1)
    assert geographic_folds(line, 2).tolist() == [0] * 5 + [1] * 5
    assert geographic_folds(line[::-1], 2).tolist() == [1] * 5 + [0] * 5
    grid = np.array([(x, y) for y in range(4) for x in range(4)], dtype=float)
    folds = geographic_folds(grid, 4)
    for fold in range(4):
        block = grid[folds == fold]
        assert len(block) == 4
        assert np.ptp(block[:, 0]) == 1 and np.ptp(block[:, 1]) == 1  # a 2 x 2 block
    sizes = np.bincount(geographic_folds(np.random.default_rng(0).uniform(0, 1, (100, 2)), 3))
    assert sorted(sizes.tolist()) == [33, 33, 34]
    with pytest.raises(InvalidInputError, match="cannot make 5 folds from 3"):
        geographic_folds(line[:3], 5)


def test_cosine_warm_restarts() -> None:
    cycles = (10.0, 20.0)
    assert cosine_warm_restarts(0.0, 1.0, cycles) == pytest.approx(1.0)
    assert cosine_warm_restarts(5.0, 1.0, cycles) == pytest.approx(0.5)
    assert cosine_warm_restarts(10.0, 1.0, cycles) == pytest.approx(1.0)  # restart
    assert cosine_warm_restarts(20.0, 1.0, cycles) == pytest.approx(0.5)
    assert cosine_warm_restarts(40.0, 1.0, cycles) == pytest.approx(0.5)  # last cycle repeats
    assert cosine_warm_restarts(5.0, 1.0, cycles, min_lr=0.2) == pytest.approx(0.6)


def test_rasterise_labels() -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from glacimap.rasters import Grid

    grid = Grid.from_bounds((0.0, 0.0, 100.0, 100.0), "EPSG:32632", 10.0)
    outlines = gpd.GeoDataFrame(geometry=[box(20, 20, 60, 50)], crs="EPSG:32632")
    label = rasterise_labels(outlines, grid)
    assert label.sum() == 4 * 3 and label[5:8, 2:6].all()  # rows from the top: y 50..20
    from glacimap.errors import CRSMismatchError

    with pytest.raises(CRSMismatchError):
        rasterise_labels(outlines.set_crs("EPSG:4326", allow_override=True), grid)


# -- datasets ---------------------------------------------------------------------------------------------
def test_patch_dataset_items_masks_and_determinism() -> None:
    sample = make_sample(0)
    sample.bands["red"][10:12, 10:12] = np.nan
    train, _ = datasets([sample] * 6)
    item = train[0]
    assert item["inputs"]["optical"].shape == (6, 32, 32) and item["inputs"]["dem"].shape == (2, 32, 32)
    assert item["label"].dtype == torch.int64 and item["mask"].dtype == torch.bool
    assert torch.isfinite(item["inputs"]["optical"]).all()
    assert torch.equal(train[3]["inputs"]["optical"], train[3]["inputs"]["optical"])
    train.set_epoch(1)
    assert not torch.equal(train[3]["inputs"]["optical"], datasets([sample] * 6)[0][3]["inputs"]["optical"])
    # NaN pixels and the unlabelled top rows never count in the loss
    assert not train.set.masks[0][10:12, 10:12].any() and not train.set.masks[0][:4].any()
    ice_only = PatchDataset([sample], SOURCES, train.set.normalisation, 16, 20, ice_share=1.0)
    assert all(bool(ice_only[i]["label"].any()) for i in range(20))


def test_margin_band_and_margin_sampling() -> None:
    label = np.zeros((40, 40), dtype=np.int64)
    label[10:30, 10:30] = 1
    valid = np.ones_like(label, dtype=bool)
    band = margin_band(label, valid, width=3)
    assert band[10, 20] and band[7, 20] and band[12, 20]  # on, outside and inside the edge
    assert not band[20, 20] and not band[0, 0] and not band[6, 20] and not band[13, 20]
    assert not margin_band(label, np.zeros_like(valid)).any()
    sample = make_sample(0, size=240)  # an ellipse of 70-140 px on rock
    stats = compute_normalisation([sample.bands], [sample.loss_mask(BANDS)])

    def mixed(dataset: PatchDataset) -> int:
        items = [dataset[i] for i in range(len(dataset))]
        return sum(bool(it["label"].any()) and not bool(it["label"][it["mask"]].all()) for it in items)

    # a 48 px patch centred within 10 px (+ 12 px jitter) of the outline always holds both classes
    assert mixed(PatchDataset([sample], SOURCES, stats, 48, 60, margin_share=1.0, seed=3)) == 60
    assert mixed(PatchDataset([sample], SOURCES, stats, 48, 60, margin_share=0.0, seed=3)) <= 45
    with pytest.raises(InvalidInputError, match="margin_share"):
        PatchDataset([sample], SOURCES, stats, 8, 4, margin_share=1.5)


def test_hard_pixels_are_mined_and_sampled() -> None:
    """The band-ratio model maps the ellipse exactly; a block of rock labelled as ice (a label
    it cannot learn) is exactly what mining finds, and hard_share=1 centres patches on it."""
    sample = make_sample(1, size=64)
    sample.label[40:44, 2:12] = 1  # left of the ellipse, which spans columns 22-59
    optical = {"optical": ["blue", "red", "swir16"]}
    raw = {b: BandStats(method="none") for b in optical["optical"]}
    dataset = PatchDataset([sample], optical, raw, 16, 40, hard_share=1.0, seed=0)
    model = create_model("band-ratio")
    hard = mine_hard_pixels(model, dataset.set, torch.device("cpu"), tile=32, batch_size=3)
    ellipse = np.asarray(make_sample(1, size=64).label) > 0
    block = np.zeros((64, 64), dtype=bool)
    block[40:44, 2:12] = True
    expected = np.flatnonzero(block & ~ellipse)
    assert expected.size > 20
    np.testing.assert_array_equal(hard[0], expected)
    dataset.set_hard(hard)
    for i in range(len(dataset)):
        item = dataset[i]
        # every patch holds a mislabelled pixel: rock reflectance (blue ~0.1) labelled ice
        rockish_ice = (item["label"] == 1) & (item["inputs"]["optical"][0] < 0.3) & item["mask"]
        assert bool(rockish_ice.any())
    with pytest.raises(InvalidInputError, match="hard pixels given for 2 samples"):
        dataset.set_hard([hard[0], hard[0]])
    with pytest.raises(InvalidInputError, match="hard_share"):
        PatchDataset([sample], optical, raw, 16, 4, hard_share=-0.1)


def test_tile_dataset_covers_samples_with_masked_padding() -> None:
    train, val = datasets(make_samples())
    assert len(val) == 2 * 4  # two 48 x 48 samples, four 32 x 32 tiles each
    corner = val[3]  # bottom-right tile: 16 x 16 real pixels, the rest padding
    assert int(corner["mask"].sum()) == 16 * 16
    assert not corner["mask"][16:].any()


def test_missing_band_in_sample() -> None:
    sample = make_sample(0)
    del sample.bands["slope"]
    with pytest.raises(BandMismatchError, match="lack \\['slope'\\]"):
        datasets([sample] * 6)


# -- the loop ------------------------------------------------------------------------------------------------
def test_short_training_run_lowers_the_loss() -> None:
    """glavitu-s on six synthetic 48 x 48 glaciers, a few seconds on a CPU."""
    train, val = datasets(make_samples(), length=24)
    torch.manual_seed(0)
    events = []
    config = replace(FAST, epochs=5, patches_per_epoch=24)
    result = fit(create_model("glavitu-s"), train, val, config, progress=events.append)
    losses = result.losses
    assert len(losses) == 5
    assert losses[-1] < 0.5 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert result.best_iou is not None and result.best_iou > 0.6
    assert result.best_epoch == int(np.argmax([r.val_iou for r in result.history]))
    assert [e.phase for e in events].count("train") == 5 * 6 and [e.phase for e in events].count("epoch") == 5
    assert result.precision == "fp32" and result.device == "cpu"


def test_same_seed_same_run_and_resume_matches(tmp_path: Path) -> None:
    samples = make_samples()
    augment = AugmentConfig()
    # explicit cycles: the default schedule is scaled to ``epochs``, which differ between runs
    config = replace(FAST, augment=augment, cycles=(4.0,))

    def run(epochs: int, folder: Path | None) -> list[float]:
        train, val = datasets(samples, augment)
        torch.manual_seed(123)
        model = tiny_glavitu()
        return fit(model, train, val, replace(config, epochs=epochs), checkpoint_dir=folder).losses

    straight = run(3, None)
    assert run(3, None) == straight
    assert run(2, tmp_path) == straight[:2]
    tensors, state = read_checkpoint(tmp_path / "last.safetensors")
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert any(k.startswith("optim/") for k in tensors) and "rng/torch" in tensors
    assert (tmp_path / "best.safetensors").exists()
    resumed = run(3, tmp_path)
    assert resumed == pytest.approx(straight, rel=1e-5)

    train, val = datasets(samples, augment)
    with pytest.raises(InputError, match=r"other training settings \(\['lr'\]\)"):
        fit(tiny_glavitu(), train, val, replace(config, epochs=4, lr=1e-3), checkpoint_dir=tmp_path)


def test_band_ratio_cannot_be_trained() -> None:
    train, val = datasets(make_samples())
    with pytest.raises(InputError, match="no trainable parameters"):
        fit(create_model("band-ratio"), train, val, FAST)


# -- strategies -----------------------------------------------------------------------------------------------
def test_train_model_region_encoding_then_finetune(tmp_path: Path) -> None:
    samples = [make_sample(seed, region=("alps" if seed < 3 else "andes")) for seed in range(6)]
    config = replace(FAST, epochs=2)
    kwargs = dict(width=16, patch=8, depth=1, heads=2, mlp_width=32, unet_widths=(16, 32), location_hidden=16)
    result = train_model(
        samples, tmp_path / "regional", strategy="region-encoding", config=config, folds=3, fold=2, model_kwargs=kwargs
    )
    manifest = result.manifest
    assert result.weights_path == tmp_path / "regional.safetensors"
    assert manifest.location.kind == "region" and manifest.location.regions == ["alps", "andes"]
    assert manifest.arguments["location_dim"] == 3
    assert manifest.training.n_samples == 4 and manifest.training.strategy == "region-encoding"
    assert manifest.training.n_pixels == 4 * 44 * 48
    assert set(manifest.validation) >= {"iou", "loss"}
    loaded = load_weights(result.weights_path)
    assert loaded.location_vector(region="karakoram").tolist() == [0, 0, 1]

    tuned = train_model(samples, tmp_path / "tuned", strategy="finetune", init=result.weights_path, config=config)
    assert tuned.manifest.normalisation == manifest.normalisation  # statistics of the base model kept
    assert tuned.manifest.training.details["lr"] == config.finetune_lr
    with pytest.raises(InputError, match="regional' needs the region"):
        train_model(samples, tmp_path / "x", strategy="regional", config=config)


def test_coordinate_encoding_and_errors(tmp_path: Path) -> None:
    samples = make_samples()
    kwargs = dict(width=16, patch=8, depth=1, heads=2, mlp_width=32, unet_widths=(16, 32), location_hidden=16)
    result = train_model(
        samples, tmp_path / "coords", strategy="coordinate-encoding", config=replace(FAST, epochs=1), model_kwargs=kwargs
    )
    assert result.manifest.location.kind == "latlon" and result.manifest.arguments["location_dim"] == 4
    with pytest.raises(InputError, match="unknown strategy"):
        train_model(samples, tmp_path / "y", strategy="magic")
    from glacimap.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        train_model(samples, tmp_path / "coords", strategy="global")


# -- bias optimisation -------------------------------------------------------------------------------------------
def test_bias_optimisation_lowers_entropy_and_leaves_weights() -> None:
    torch.manual_seed(0)
    model = tiny_glavitu(location_dim=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    batch = {"optical": torch.randn(2, 6, 16, 16, generator=generator), "dem": torch.randn(2, 2, 16, 16, generator=generator)}
    result = bias_optimise(model, batch, lr=0.5, max_steps=20)
    assert result.entropy[-1] < result.entropy[0]
    assert result.vector.sum().item() == pytest.approx(1.0)
    assert result.steps <= 20 and len(result.entropy) == result.steps + 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        adapted = mean_normalised_entropy(model(batch, result.vector.expand(2, 4)))
    assert float(adapted) == pytest.approx(result.entropy[-1], rel=1e-5)
    # the paper's settings take small steps
    slow = bias_optimise(model, [batch, batch], lr=1e-4, max_steps=5, tol=0.0)
    assert slow.steps == 5 and not slow.converged
    assert float(slow.logits.abs().max()) <= 5 * 1e-4 + 1e-6  # Adam moves at most lr per step
    assert bias_optimise(model, batch, lr=1e-4, max_steps=100, tol=1e-4, patience=2).converged
    with pytest.raises(InvalidInputError, match="region input"):
        bias_optimise(tiny_glavitu(), batch)
