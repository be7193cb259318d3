"""Augmentation keeps images, labels and masks aligned, and repeats with the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from glacimap.augment import AugmentConfig, Patch, augment_normalised, augment_raw, crop_rescale
from glacimap.errors import InvalidInputError


def patch(size: int = 16, seed: int = 0) -> Patch:
    rng = np.random.default_rng(seed)
    optical = rng.uniform(0.0, 1.0, (6, size, size)).astype(np.float32)
    dem = rng.normal(0.0, 1.0, (2, size, size)).astype(np.float32)
    label = (optical[0] > 0.5).astype(np.int64)
    mask = optical[1] > 0.2
    return Patch({"optical": optical, "dem": dem}, label, mask)


GEOMETRIC = AugmentConfig(crop_p=0.0, gamma_p=0.0, channel_noise_p=0.0, pixel_noise_p=0.0, occlusion_p=0.0, source_drop_p=0.0)


@pytest.mark.parametrize("seed", range(8))
def test_flips_and_rotations_keep_alignment(seed: int) -> None:
    original = patch()
    out = augment_raw(original, GEOMETRIC, np.random.default_rng(seed))
    assert np.array_equal(out.label, (out.sources["optical"][0] > 0.5).astype(np.int64))
    assert np.array_equal(out.mask, out.sources["optical"][1] > 0.2)
    assert sorted(out.sources["dem"].ravel()) == sorted(original.sources["dem"].ravel())


def test_some_seed_changes_the_geometry() -> None:
    original = patch()
    changed = [
        not np.array_equal(augment_raw(original, GEOMETRIC, np.random.default_rng(s)).label, original.label)
        for s in range(8)
    ]
    assert sum(changed) >= 4  # each seed leaves the patch as it was with probability 1/16


def test_crop_rescale_nearest_labels() -> None:
    label = np.arange(16).reshape(4, 4)
    p = Patch({"optical": label[None].astype(np.float32)}, label, label % 2 == 0)
    out = crop_rescale(p, top=0, left=0, size_h=2, size_w=2)
    assert out.label.tolist() == np.kron(label[:2, :2], np.ones((2, 2), dtype=int)).tolist()
    assert out.mask.tolist() == (out.label % 2 == 0).tolist()
    assert out.sources["optical"].shape == (1, 4, 4)
    assert out.sources["optical"][0, 0, 0] == pytest.approx(0.0)


def test_gamma_touches_only_optical() -> None:
    config = AugmentConfig.none()
    config = AugmentConfig(**{**config.__dict__, "gamma_p": 1.0, "gamma": (2.0, 2.0)})
    original = patch()
    out = augment_raw(original, config, np.random.default_rng(0))
    np.testing.assert_allclose(out.sources["optical"], original.sources["optical"] ** 2, rtol=1e-6)
    assert np.array_equal(out.sources["dem"], original.sources["dem"])
    assert np.array_equal(out.label, original.label)


def test_occlusion_and_source_drop() -> None:
    base = AugmentConfig.none().__dict__
    occlude = AugmentConfig(**{**base, "occlusion_p": 1.0, "occlusion_max": 0.5})
    original = patch()
    out = augment_normalised(original, occlude, np.random.default_rng(4))
    zeros = out.sources["optical"][0] == 0
    assert 1 <= zeros.sum() <= 8 * 8
    assert np.array_equal(zeros, out.sources["dem"][0] == 0)  # the same rectangle in every source
    assert np.array_equal(out.label, original.label) and np.array_equal(out.mask, original.mask)
    drop = AugmentConfig(**{**base, "source_drop_p": 1.0})
    out = augment_normalised(original, drop, np.random.default_rng(0))
    assert np.all(out.sources["dem"] == 0)
    assert np.array_equal(out.sources["optical"], original.sources["optical"])  # protected


def test_noise_is_seeded() -> None:
    config = AugmentConfig(**{**AugmentConfig.none().__dict__, "channel_noise_p": 1.0, "pixel_noise_p": 1.0})
    a = augment_normalised(patch(), config, np.random.default_rng(7))
    b = augment_normalised(patch(), config, np.random.default_rng(7))
    c = augment_normalised(patch(), config, np.random.default_rng(8))
    assert np.array_equal(a.sources["optical"], b.sources["optical"])
    assert not np.array_equal(a.sources["optical"], c.sources["optical"])
    assert 0.0 < float(np.abs(a.sources["dem"] - patch().sources["dem"]).mean()) < 0.3


def test_invalid_config() -> None:
    with pytest.raises(InvalidInputError, match="crop_p"):
        AugmentConfig(crop_p=1.5)
    with pytest.raises(InvalidInputError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
