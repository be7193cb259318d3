"""Synthetic labelled samples shared by the model and training tests (tens of pixels, fixed seeds)."""

from __future__ import annotations

import numpy as np

from glacimap.models import SOURCE_BANDS, create_model
from glacimap.train import TrainingSample

#: Ice and rock reflectance per optical band (ice is bright in the visible, dark in the SWIR).
ICE_ROCK = {
    "blue": (0.60, 0.10),
    "green": (0.60, 0.12),
    "red": (0.55, 0.14),
    "nir": (0.50, 0.20),
    "swir16": (0.05, 0.25),
    "swir22": (0.04, 0.20),
}
SOURCES = {"optical": list(SOURCE_BANDS["optical"]), "dem": list(SOURCE_BANDS["dem"])}
BANDS = [b for names in SOURCES.values() for b in names]


def make_sample(seed: int, size: int = 48, region: str | None = "alps", sar: bool = False) -> TrainingSample:
    """An elliptical glacier on rock; the top four rows are outside the labelled extent."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.35 * size, 0.65 * size, 2)
    ry, rx = rng.uniform(0.15 * size, 0.3 * size, 2)
    ice = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1.0
    bands = {b: np.where(ice, vi, vr) + rng.normal(0.0, 0.03, (size, size)) for b, (vi, vr) in ICE_ROCK.items()}
    bands["elevation"] = 2500.0 + 10.0 * rows + rng.normal(0.0, 5.0, (size, size))
    bands["slope"] = rng.uniform(5.0, 30.0, (size, size))
    if sar:
        bands["vv_asc"] = np.where(ice, -18.0, -8.0) + rng.normal(0.0, 1.0, (size, size))
        bands["vv_desc"] = np.where(ice, -17.0, -9.0) + rng.normal(0.0, 1.0, (size, size))
    mask = np.ones((size, size), dtype=bool)
    mask[:4] = False
    return TrainingSample(
        {k: v.astype(np.float32) for k, v in bands.items()},
        ice.astype(np.uint8),
        mask,
        region=region,
        lat=46.0 + 0.01 * seed,
        lon=10.0 + 0.02 * seed,
        year=2020,
        n_glaciers=1,
        sample_id=f"SYN-{seed:03d}",
    )


def tiny_glavitu(**kwargs):
    """A GlaViTU small enough for sub-second CPU training steps."""
    args = dict(width=16, patch=8, depth=1, heads=2, mlp_width=32, unet_widths=(16, 32), location_hidden=16)
    args.update(kwargs)
    return create_model("glavitu-s", **args)


def make_samples(n: int = 6, **kwargs) -> list[TrainingSample]:
    return [make_sample(seed, **kwargs) for seed in range(n)]
