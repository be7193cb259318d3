"""Blended tiled inference: coverage, constant outputs, no seams, chunking invariance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from glacimap.tiling import TilingPlan, predict_tiled, tile_starts, weight_window


def _run(image: np.ndarray, model, channels: int, **kwargs) -> np.ndarray:
    height, width = image.shape[1:]
    out = np.full((channels, height, width), np.nan, dtype=np.float32)
    writes = np.zeros((height, width), dtype=int)

    def reader(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return image[:, r0:r1, c0:c1]

    def writer(r0: int, r1: int, c0: int, c1: int, values: np.ndarray) -> None:
        out[:, r0:r1, c0:c1] = values
        writes[r0:r1, c0:c1] += 1

    predict_tiled(reader, writer, model, height, width, channels, **kwargs)
    assert (writes == 1).all(), "every pixel must be written exactly once"
    return out


@pytest.mark.parametrize(("length", "tile", "stride"), [(100, 32, 16), (32, 32, 16), (20, 32, 16), (97, 32, 32), (1000, 384, 192)])
def test_tile_starts_cover_everything(length: int, tile: int, stride: int) -> None:
    starts = tile_starts(length, tile, stride)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[0] == 0 and starts == sorted(starts)
    assert max(starts) + tile == max(length, tile)


def test_gaussian_window_matches_paper() -> None:
    w = weight_window(385, "gaussian")
    assert w[192, 192] == pytest.approx(1.0) and w[0, 0] == pytest.approx(np.exp(-1.0), rel=1e-4)
    assert (weight_window(16, "cosine") > 0).all()
    with pytest.raises(ValueError):
        weight_window(8, "box")


@pytest.mark.parametrize("window", ["gaussian", "cosine"])
def test_constant_model_gives_constant_output(window: str) -> None:
    image = np.random.default_rng(0).random((3, 70, 90), dtype=np.float32)
    out = _run(image, lambda b: np.full((b.shape[0], 2, 32, 32), 0.25), 2, tile=32, overlap=0.5, batch_size=3, window=window)
    assert np.allclose(out, 0.25, atol=1e-6)


def test_identity_model_is_exact() -> None:
    image = np.random.default_rng(1).random((2, 50, 61), dtype=np.float32)
    out = _run(image, lambda b: b, 2, tile=16, overlap=0.25, batch_size=5)
    assert np.allclose(out, image, atol=1e-5)


def test_small_raster_is_padded() -> None:
    image = np.random.default_rng(2).random((1, 10, 13), dtype=np.float32)
    out = _run(image, lambda b: b * 2, 1, tile=32, overlap=0.5)
    assert np.allclose(out, image * 2, atol=1e-5)


def test_seam_sensitive_model_shows_no_tile_border_artefacts() -> None:
    """A 5x5 mean filter with zero padding is wrong near every tile border; blending hides it."""
    rng = np.random.default_rng(3)
    image = uniform_filter(rng.random((1, 256, 256)).astype(np.float32), size=(1, 7, 7)) + 1.0

    def zero_padded_blur(batch: np.ndarray) -> np.ndarray:
        padded = np.pad(batch, ((0, 0), (0, 0), (2, 2), (2, 2)))
        return uniform_filter(padded, size=(1, 1, 5, 5))[:, :, 2:-2, 2:-2]

    truth = uniform_filter(image, size=(1, 5, 5), mode="nearest")
    inner = (slice(None), slice(4, -4), slice(4, -4))
    seams = [c - 4 for c in (64, 128, 192)]

    def errors(overlap: float, window: str) -> np.ndarray:
        out = _run(image, zero_padded_blur, 1, tile=64, overlap=overlap, batch_size=4, window=window)
        return np.abs(out - truth)[inner]

    naive = errors(0.0, "cosine")
    assert naive.max() > 0.5 and naive[:, :, seams].mean() > 10 * naive.mean()  # a visible seam
    cosine = errors(0.5, "cosine")  # the default: weights fall to ~0 at tile edges
    assert cosine.max() < 0.01 and cosine[:, :, seams].mean() < 0.01
    gaussian = errors(0.5, "gaussian")  # GlaViTU's window keeps 0.61 of the weight at edges
    assert gaussian.max() < 0.5 * naive.max()


def test_column_chunks_give_identical_output() -> None:
    image = np.random.default_rng(4).random((2, 40, 150), dtype=np.float32)

    def model(batch: np.ndarray) -> np.ndarray:
        return np.tanh(batch.sum(axis=1, keepdims=True) + batch[:, :1] * batch[:, 1:])

    whole = _run(image, model, 1, tile=16, overlap=0.5, chunk_width=10_000)
    chunked = _run(image, model, 1, tile=16, overlap=0.5, chunk_width=37)
    assert np.allclose(whole, chunked, atol=1e-6)


def test_plan_counts() -> None:
    plan = TilingPlan(2000, 2000, 384, 0.5)
    assert plan.stride == 192 and plan.tile_count() == len(plan.rows()) ** 2 == 100
