"""On-the-fly augmentation of training patches (the recipe of Maslov et al. 2025).

Two phases, because some operations need physical values and others normalised ones:

- :func:`augment_raw` before normalisation: flips, 90-degree rotations, crop-and-rescale
  (images bilinear, label and loss mask nearest) and contrast (a gamma on reflectance of the
  ``gamma_sources``);
- :func:`augment_normalised` after it: channel-wise Gaussian noise (one offset per channel),
  pixel-wise Gaussian noise, occlusion of rectangles (set to 0, the band mean) and of whole
  input sources.

Labels are never changed by the photometric operations: the network must still find the ice.
Every random draw comes from the ``numpy.random.Generator`` passed in, so runs repeat exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from glacimap.errors import InvalidInputError


@dataclass
class Patch:
    """One training patch: float32 (C, H, W) per source, int label and bool loss mask (H, W)."""

    sources: dict[str, np.ndarray]
    label: np.ndarray
    mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.label.shape  # type: ignore[return-value]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (0 disables one)."""

    flip: bool = True
    rotate: bool = True
    crop_p: float = 0.3
    crop_scale: tuple[float, float] = (0.6, 1.0)
    gamma_p: float = 0.5
    gamma: tuple[float, float] = (0.8, 1.2)
    gamma_sources: tuple[str, ...] = ("optical",)
    channel_noise_p: float = 0.3
    channel_noise_std: float = 0.1
    pixel_noise_p: float = 0.3
    pixel_noise_std: float = 0.05
    occlusion_p: float = 0.2
    occlusion_max: float = 0.3
    source_drop_p: float = 0.1
    protected_sources: tuple[str, ...] = field(default=("optical",))

    def __post_init__(self) -> None:
        for name in ("crop_p", "gamma_p", "channel_noise_p", "pixel_noise_p", "occlusion_p", "source_drop_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"augmentation {name} must be a probability in [0, 1], got {value}")
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise InvalidInputError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 < self.gamma[0] <= self.gamma[1]:
            raise InvalidInputError(f"gamma range must be positive and ordered, got {self.gamma}")
        if not 0.0 < self.occlusion_max <= 1.0:
            raise InvalidInputError(f"occlusion_max must be in (0, 1], got {self.occlusion_max}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(
            flip=False, rotate=False, crop_p=0.0, gamma_p=0.0, channel_noise_p=0.0, pixel_noise_p=0.0,
            occlusion_p=0.0, source_drop_p=0.0,
        )


def _geometric(patch: Patch, fn) -> Patch:  # noqa: ANN001 - a numpy array -> array function
    return Patch(
        {k: np.ascontiguousarray(fn(v)) for k, v in patch.sources.items()},
        np.ascontiguousarray(fn(patch.label[None])[0]),
        np.ascontiguousarray(fn(patch.mask[None])[0]),
    )


def crop_rescale(patch: Patch, top: int, left: int, size_h: int, size_w: int) -> Patch:
    """Crop a window and resize it back to the patch size (bilinear images, nearest labels)."""
    height, width = patch.shape
    window = (slice(top, top + size_h), slice(left, left + size_w))
    out_sources = {}
    for name, x in patch.sources.items():
        crop = torch.from_numpy(np.ascontiguousarray(x[:, window[0], window[1]]))[None]
        out_sources[name] = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
    rows = np.minimum((np.arange(height) + 0.5) * size_h / height, size_h - 1).astype(int) + top
    cols = np.minimum((np.arange(width) + 0.5) * size_w / width, size_w - 1).astype(int) + left
    return Patch(out_sources, patch.label[np.ix_(rows, cols)], patch.mask[np.ix_(rows, cols)])


def augment_raw(patch: Patch, config: AugmentConfig, rng: np.random.Generator) -> Patch:
    """Geometric and contrast augmentation of a patch in physical units."""
    if config.flip and rng.random() < 0.5:
        patch = _geometric(patch, lambda a: a[..., :, ::-1])
    if config.flip and rng.random() < 0.5:
        patch = _geometric(patch, lambda a: a[..., ::-1, :])
    if config.rotate:
        k = int(rng.integers(4))
        if k and patch.shape[0] == patch.shape[1]:
            patch = _geometric(patch, lambda a: np.rot90(a, k, axes=(-2, -1)))
    if config.crop_p and rng.random() < config.crop_p:
        height, width = patch.shape
        scale = rng.uniform(*config.crop_scale)
        size_h, size_w = max(2, round(height * scale)), max(2, round(width * scale))
        top = int(rng.integers(0, height - size_h + 1))
        left = int(rng.integers(0, width - size_w + 1))
        patch = crop_rescale(patch, top, left, size_h, size_w)
    if config.gamma_p and rng.random() < config.gamma_p:
        gamma = rng.uniform(*config.gamma)
        sources = dict(patch.sources)
        for name in config.gamma_sources:
            if name in sources:
                x = sources[name]
                sources[name] = np.where(np.isfinite(x), np.power(np.clip(x, 0.0, None), gamma), x).astype(np.float32)
        patch = Patch(sources, patch.label, patch.mask)
    return patch


def augment_normalised(patch: Patch, config: AugmentConfig, rng: np.random.Generator) -> Patch:
    """Noise and occlusion of a normalised patch (values in units of band standard deviation)."""
    sources = {k: v.astype(np.float32, copy=True) for k, v in patch.sources.items()}
    height, width = patch.shape
    if config.channel_noise_p and rng.random() < config.channel_noise_p:
        for x in sources.values():
            x += rng.normal(0.0, config.channel_noise_std, size=(x.shape[0], 1, 1)).astype(np.float32)
    if config.pixel_noise_p and rng.random() < config.pixel_noise_p:
        for x in sources.values():
            x += rng.normal(0.0, config.pixel_noise_std, size=x.shape).astype(np.float32)
    if config.occlusion_p and rng.random() < config.occlusion_p:
        size_h = int(rng.integers(1, max(2, int(height * config.occlusion_max) + 1)))
        size_w = int(rng.integers(1, max(2, int(width * config.occlusion_max) + 1)))
        top = int(rng.integers(0, height - size_h + 1))
        left = int(rng.integers(0, width - size_w + 1))
        for x in sources.values():
            x[:, top : top + size_h, left : left + size_w] = 0.0
    droppable = [k for k in sources if k not in config.protected_sources]
    if droppable and config.source_drop_p and rng.random() < config.source_drop_p:
        sources[droppable[int(rng.integers(len(droppable)))]][:] = 0.0
    return Patch(sources, patch.label, patch.mask)
