"""Training core: samples in memory, patch sampling, folds, the training loop and checkpoints.

Nothing here reads the workspace: the ``train`` stage turns chips and the inventory into
:class:`TrainingSample` objects (bands, rasterised label, loss mask, region, location) and
calls :func:`train_model` (strategies, folds, statistics, saving the weights) or the lower
level :func:`fit`.

The default recipe is the one of Maslov et al. (2025): focal loss (gamma 2) with label
smoothing 0.1 on the main and the deep-supervision logits, Adam at 5e-4, cosine decay with
warm restarts over cycles of 10, 20, 40 and 80 epochs (scaled to the number of epochs), the
augmentation of :mod:`glacimap.augment`, and the best epoch by validation IoU. On CUDA the
loop runs in mixed precision (bfloat16 where supported, else float16 with loss scaling) and
channels-last memory layout. Checkpoints are safetensors files whose JSON metadata holds the
rest of the training state, so nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors
import safetensors.torch
import torch
from scipy import ndimage
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

import glacimap
from glacimap.augment import AugmentConfig, Patch, augment_normalised, augment_raw
from glacimap.errors import BandMismatchError, InputError, InvalidInputError, OutputExistsError
from glacimap.losses import SegmentationLoss
from glacimap.models import (
    SOURCE_BANDS,
    count_parameters,
    create_model,
    encode_latlon,
    encode_region,
    resolve_device,
)
from glacimap.models.weights import (
    BandStats,
    LocationSpec,
    Manifest,
    TrainingSummary,
    build_manifest,
    load_weights,
    normalise_band,
    save_weights,
    weights_paths,
)
from glacimap.workspace import atomic_path

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("global", "regional", "finetune", "region-encoding", "coordinate-encoding")
#: Relative lengths of the paper's warm-restart cycles (10, 20, 40 and 80 epochs).
PAPER_CYCLES: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0)
CHECKPOINT_SCHEMA = 1
Precision = Literal["auto", "fp32", "bf16", "fp16"]


# -- samples ----------------------------------------------------------------------------------------
@dataclass
class TrainingSample:
    """One labelled image in memory (typically one glacier's chip).

    ``bands`` maps band names to (H, W) arrays in physical units (NaN = missing); ``label`` is
    1 on ice and 0 elsewhere; ``mask`` is True where the pixel may count in the loss (False
    for cloud, no data, outside the labelled extent). ``region`` names the region for
    region encoding; ``lat``/``lon`` (degrees, the chip centre) feed coordinate encoding and
    the geographic folds.
    """

    bands: Mapping[str, np.ndarray]
    label: np.ndarray
    mask: np.ndarray | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None
    year: int | None = None
    n_glaciers: int = 0
    sample_id: str = ""

    def __post_init__(self) -> None:
        self.label = np.asarray(self.label)
        if self.label.ndim != 2:
            raise InvalidInputError(f"sample {self.sample_id!r}: label must be 2-D, got shape {self.label.shape}")
        for name, values in self.bands.items():
            if np.shape(values) != self.label.shape:
                raise InvalidInputError(
                    f"sample {self.sample_id!r}: band '{name}' has shape {np.shape(values)}, label {self.label.shape}"
                )
        if self.mask is not None and np.shape(self.mask) != self.label.shape:
            raise InvalidInputError(f"sample {self.sample_id!r}: mask shape {np.shape(self.mask)} != label {self.label.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.label.shape  # type: ignore[return-value]

    def loss_mask(self, bands: Sequence[str]) -> np.ndarray:
        """The given mask, restricted to pixels where every band in ``bands`` is finite."""
        check_sample_bands([self], bands)
        keep = np.ones(self.shape, dtype=bool) if self.mask is None else np.asarray(self.mask, dtype=bool).copy()
        for name in bands:
            keep &= np.isfinite(self.bands[name])
        return keep


def check_sample_bands(samples: Sequence[TrainingSample], bands: Sequence[str]) -> None:
    """Raise :class:`BandMismatchError` naming the first sample lacking any of ``bands``."""
    for sample in samples:
        missing = [b for b in bands if b not in sample.bands]
        if missing:
            raise BandMismatchError(
                f"sample {sample.sample_id!r}: bands {sorted(sample.bands)} lack {missing}; the model needs {list(bands)}"
            )


def rasterise_labels(outlines: Any, grid: Any, all_touched: bool = False) -> np.ndarray:
    """Burn glacier outlines (a GeoDataFrame) onto a :class:`~glacimap.rasters.Grid`: uint8 0/1.

    The outlines must share the grid's CRS.
    """
    from rasterio.features import rasterize

    from glacimap.errors import CRSMismatchError
    from glacimap.rasters import same_crs

    if outlines.crs is None or not same_crs(outlines.crs, grid.crs):
        raise CRSMismatchError(f"outlines CRS {outlines.crs} differs from the chip grid's {grid.crs}")
    shapes = [(geom, 1) for geom in outlines.geometry if geom is not None and not geom.is_empty]
    if not shapes:
        return np.zeros(grid.shape, dtype=np.uint8)
    return rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0, all_touched=all_touched, dtype="uint8")


# -- statistics and folds -----------------------------------------------------------------------------
def compute_normalisation(
    arrays: Sequence[Mapping[str, np.ndarray]],
    masks: Sequence[np.ndarray | None] | None = None,
    method: Literal["standard", "minmax"] = "standard",
    bands: Sequence[str] | None = None,
    transforms: Mapping[str, Literal["none", "db"]] | None = None,
    quantiles: tuple[float, float] = (0.02, 0.98),
    max_values: int = 2_000_000,
    seed: int = 0,
) -> dict[str, BandStats]:
    """Per-band statistics over valid pixels only (mask True and value finite).

    ``standard``: mean and standard deviation (exact, accumulated in float64). ``minmax``:
    robust low/high = the ``quantiles`` of up to ``max_values`` pixels drawn evenly from every
    array. Use the training split only. A constant band gets std 1 (or high = low + 1).
    """
    if not arrays:
        raise InvalidInputError("compute_normalisation needs at least one array")
    if masks is not None and len(masks) != len(arrays):
        raise InvalidInputError(f"{len(masks)} masks for {len(arrays)} arrays")
    names = list(bands) if bands is not None else list(arrays[0])
    transforms = dict(transforms or {})
    rng = np.random.default_rng(seed)
    per_array = max(1, max_values // len(arrays))
    stats: dict[str, BandStats] = {}
    for band in names:
        transform = transforms.get(band, "none")
        probe = BandStats(method="none", transform=transform)
        total = 0.0
        total_sq = 0.0
        count = 0
        drawn: list[np.ndarray] = []
        for index, sample in enumerate(arrays):
            if band not in sample:
                raise BandMismatchError(f"array {index}: band '{band}' missing (has {sorted(sample)})")
            values = normalise_band(sample[band], probe).astype(np.float64)
            keep = np.isfinite(values)
            if masks is not None and masks[index] is not None:
                keep &= np.asarray(masks[index], dtype=bool)
            values = values[keep]
            if method == "standard":
                total += values.sum()
                total_sq += np.square(values).sum()
                count += values.size
            else:
                if values.size > per_array:
                    values = rng.choice(values, per_array, replace=False)
                drawn.append(values)
        if method == "standard":
            if count == 0:
                raise InvalidInputError(f"band '{band}' has no valid pixel for its statistics")
            mean = total / count
            std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
            if not std > 1e-12:
                logger.warning("band %s is constant (%g); using std 1", band, mean)
                std = 1.0
            stats[band] = BandStats(method="standard", mean=mean, std=std, transform=transform)
        elif method == "minmax":
            pool = np.concatenate(drawn) if drawn else np.empty(0)
            if pool.size == 0:
                raise InvalidInputError(f"band '{band}' has no valid pixel for its statistics")
            low, high = (float(q) for q in np.quantile(pool, quantiles))
            if not high > low:
                logger.warning("band %s has no spread between its quantiles; using high = low + 1", band)
                high = low + 1.0
            stats[band] = BandStats(method="minmax", low=low, high=high, transform=transform)
        else:
            raise InvalidInputError(f"unknown normalisation method '{method}' (standard or minmax)")
    return stats


def geographic_folds(centres_xy: np.ndarray | Sequence[Sequence[float]], k: int) -> np.ndarray:
    """Assign each point to one of ``k`` contiguous spatial blocks of near-equal size.

    Recursive bisection: the points are cut across the longer side of their extent, in
    proportion to the folds on each side, until every block holds one fold. Returns an int
    array of fold ids 0..k-1 (neighbouring ids are neighbouring blocks). Use projected
    coordinates, or longitude scaled by cos(latitude) and latitude.
    """
    xy = np.asarray(centres_xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InvalidInputError(f"centres must be an (N, 2) array, got shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise InvalidInputError("centres must be finite coordinates")
    if k < 1 or k > len(xy):
        raise InvalidInputError(f"cannot make {k} folds from {len(xy)} samples")
    folds = np.empty(len(xy), dtype=np.int64)

    def split(index: np.ndarray, parts: int, first: int) -> None:
        if parts == 1:
            folds[index] = first
            return
        points = xy[index]
        axis = int(np.argmax(np.ptp(points, axis=0)))
        order = index[np.lexsort((points[:, 1 - axis], points[:, axis]))]
        left = parts // 2
        cut = min(max(round(len(index) * left / parts), left), len(index) - (parts - left))
        split(order[:cut], left, first)
        split(order[cut:], parts - left, first + left)

    split(np.arange(len(xy)), k, 0)
    return folds


def sample_centres(samples: Sequence[TrainingSample]) -> np.ndarray:
    """(N, 2) planar coordinates of samples for folding: (lon cos(mean lat), lat)."""
    missing = [s.sample_id for s in samples if s.lat is None or s.lon is None]
    if missing:
        raise InvalidInputError(f"samples {missing[:5]} have no lat/lon; geographic folds need them")
    lat = np.array([s.lat for s in samples], dtype=np.float64)
    lon = np.array([s.lon for s in samples], dtype=np.float64)
    return np.stack([lon * math.cos(math.radians(float(lat.mean()))), lat], axis=1)


# -- datasets -------------------------------------------------------------------------------------------
def _window(array: np.ndarray, top: int, left: int, size: int, fill: float, dtype: Any = None) -> np.ndarray:
    """A size x size window of the last two axes starting at (top, left), padded with ``fill``."""
    height, width = array.shape[-2:]
    out = np.full((*array.shape[:-2], size, size), fill, dtype=dtype or array.dtype)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, height), min(left + size, width)
    if r1 > r0 and c1 > c0:
        out[..., r0 - top : r1 - top, c0 - left : c1 - left] = array[..., r0:r1, c0:c1]
    return out


class _SampleSet:
    """Shared logic of the datasets: band stacks, masks, normalisation and location vectors."""

    def __init__(
        self,
        samples: Sequence[TrainingSample],
        sources: Mapping[str, Sequence[str]],
        normalisation: Mapping[str, BandStats],
        patch: int,
        location: LocationSpec | None,
    ):
        if not samples:
            raise InvalidInputError("a dataset needs at least one sample")
        if patch < 8:
            raise InvalidInputError(f"patch size must be at least 8 pixels, got {patch}")
        self.sources = {k: list(v) for k, v in sources.items()}
        bands = [b for names in self.sources.values() for b in names]
        check_sample_bands(samples, bands)
        missing = [b for b in bands if b not in normalisation]
        if missing:
            raise InvalidInputError(f"no normalisation statistics for bands {missing}")
        if location is not None and location.kind == "latlon":
            sample_centres(samples)  # raises when a sample has no coordinates
        self.samples = list(samples)
        self.normalisation = dict(normalisation)
        self.patch = patch
        self.location = location
        # Bands stay in the samples (no stacked copy of the whole data set); masks and labels
        # are one byte per pixel.
        self.masks = [s.loss_mask(bands) for s in self.samples]
        self.labels = [(np.asarray(s.label) > 0).astype(np.uint8) for s in self.samples]

    def location_vector(self, sample: TrainingSample, unseen: bool = False) -> np.ndarray | None:
        spec = self.location
        if spec is None:
            return None
        if spec.kind == "latlon":
            return encode_latlon([sample.lat], [sample.lon])[0]
        index = None if unseen or sample.region not in spec.regions else spec.regions.index(sample.region)
        return encode_region([index], len(spec.regions))[0]

    def cut(self, index: int, top: int, left: int, size: int | None = None) -> Patch:
        size = size or self.patch
        bands = self.samples[index].bands
        return Patch(
            {
                src: np.stack([_window(np.asarray(bands[b]), top, left, size, np.nan, np.float32) for b in names])
                for src, names in self.sources.items()
            },
            _window(self.labels[index], top, left, size, 0),
            _window(self.masks[index], top, left, size, False),
        )

    def normalise(self, patch: Patch) -> Patch:
        sources = {}
        finite = patch.mask.copy()
        for src, names in self.sources.items():
            stack = np.stack([normalise_band(patch.sources[src][i], self.normalisation[b]) for i, b in enumerate(names)])
            finite &= np.isfinite(stack).all(axis=0)
            sources[src] = stack
        for stack in sources.values():
            stack[~np.isfinite(stack)] = 0.0
        return Patch(sources, patch.label, finite)

    def item(self, patch: Patch, location: np.ndarray | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "inputs": {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in patch.sources.items()},
            "label": torch.from_numpy(np.ascontiguousarray(patch.label, dtype=np.int64)),
            "mask": torch.from_numpy(np.ascontiguousarray(patch.mask, dtype=bool)),
        }
        if location is not None:
            out["location"] = torch.from_numpy(location)
        return out


#: Half width of the band around the glacier outlines that ``margin_share`` samples from, pixels.
MARGIN_PX = 10


def margin_band(label: np.ndarray, valid: np.ndarray, width: int = MARGIN_PX) -> np.ndarray:
    """Valid pixels within ``width`` pixels of a glacier outline, on either side of it."""
    ice = label > 0
    ring = ndimage.binary_dilation(ice, iterations=width) & ~ndimage.binary_erosion(ice, iterations=width)
    return ring & valid


class PatchDataset(Dataset):
    """Random training patches centred on pixels the model currently gets wrong
    (``hard_share``, once :meth:`set_hard` has been given them), on glacier margins
    (``margin_share`` of the rest: the hard places, where snow patches touch the ice and
    termini retreat), on glaciers (``ice_share`` of the rest) or on any valid pixel.

    Item ``i`` of epoch ``e`` is drawn from a generator seeded by (seed, e, i), so results do
    not depend on data-loader workers; call :meth:`set_epoch` before each epoch. Samples are
    picked in proportion to their valid pixels. With a region encoding, ``unseen_rate`` of the
    patches get the "unseen" slot instead of their region.
    """

    def __init__(
        self,
        samples: Sequence[TrainingSample],
        sources: Mapping[str, Sequence[str]],
        normalisation: Mapping[str, BandStats],
        patch: int,
        length: int,
        *,
        ice_share: float = 0.7,
        margin_share: float = 0.0,
        hard_share: float = 0.0,
        augment: AugmentConfig | None = None,
        location: LocationSpec | None = None,
        unseen_rate: float = 0.0,
        seed: int = 0,
    ):
        if length < 1:
            raise InvalidInputError(f"patches per epoch must be positive, got {length}")
        if not all(0.0 <= share <= 1.0 for share in (ice_share, margin_share, hard_share, unseen_rate)):
            raise InvalidInputError("ice_share, margin_share, hard_share and unseen_rate must be in [0, 1]")
        self.set = _SampleSet(samples, sources, normalisation, patch, location)
        self.length = length
        self.ice_share = ice_share
        self.margin_share = margin_share
        self.hard_share = hard_share
        self.hard_index: list[np.ndarray] = []
        self.hard_weights: np.ndarray | None = None
        self.augment = augment
        self.unseen_rate = unseen_rate
        self.seed = seed
        self.epoch = 0
        self.valid_index = [np.flatnonzero(m) for m in self.set.masks]
        self.ice_index = [np.flatnonzero(m & (lab > 0)) for m, lab in zip(self.set.masks, self.set.labels)]
        self.margin_index = (
            [np.flatnonzero(margin_band(lab, m)) for m, lab in zip(self.set.masks, self.set.labels)]
            if margin_share > 0 else [np.empty(0, dtype=np.int64)] * len(self.valid_index)
        )
        weights = np.array([v.size for v in self.valid_index], dtype=np.float64)
        if weights.sum() == 0:
            raise InvalidInputError("no sample has a single valid pixel to train on")
        self.weights = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_hard(self, hard: Sequence[np.ndarray]) -> None:
        """Flat pixel indices, per sample, of the pixels to centre ``hard_share`` of the patches
        on (see :func:`mine_hard_pixels`); the sample is picked in proportion to their number."""
        if len(hard) != len(self.set.samples):
            raise InvalidInputError(f"hard pixels given for {len(hard)} samples, the dataset has {len(self.set.samples)}")
        self.hard_index = [np.asarray(h, dtype=np.int64) for h in hard]
        counts = np.array([h.size for h in self.hard_index], dtype=np.float64)
        self.hard_weights = counts / counts.sum() if counts.sum() > 0 else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(item)])
        if self.hard_share > 0 and self.hard_weights is not None and rng.random() < self.hard_share:
            index = int(rng.choice(len(self.hard_weights), p=self.hard_weights))
            return self._patch_at(index, self.hard_index[index], rng)
        index = int(rng.choice(len(self.weights), p=self.weights))
        if self.margin_share > 0 and self.margin_index[index].size and rng.random() < self.margin_share:
            pool = self.margin_index[index]
        elif self.ice_index[index].size and rng.random() < self.ice_share:
            pool = self.ice_index[index]
        else:
            pool = self.valid_index[index]
        return self._patch_at(index, pool, rng)

    def _patch_at(self, index: int, pool: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        """A patch of sample ``index`` centred, with jitter, on a random pixel of ``pool``."""
        flat = int(pool[rng.integers(pool.size)])
        width = self.set.labels[index].shape[1]
        row, col = divmod(flat, width)
        half = self.set.patch // 2
        top = row - half + int(rng.integers(-half // 2, half // 2 + 1))
        left = col - half + int(rng.integers(-half // 2, half // 2 + 1))
        patch = self.set.cut(index, top, left)
        if self.augment is not None:
            patch = augment_raw(patch, self.augment, rng)
        patch = self.set.normalise(patch)
        if self.augment is not None:
            patch = augment_normalised(patch, self.augment, rng)
        unseen = self.unseen_rate > 0 and rng.random() < self.unseen_rate
        return self.set.item(patch, self.set.location_vector(self.set.samples[index], unseen))


def tile_positions(sample_set: _SampleSet, size: int) -> list[tuple[int, int, int]]:
    """(sample, top, left) of the non-overlapping ``size`` tiles holding a masked-in pixel."""
    return [
        (index, top, left)
        for index, label in enumerate(sample_set.labels)
        for top in range(0, label.shape[0], size)
        for left in range(0, label.shape[1], size)
        if sample_set.masks[index][top : top + size, left : left + size].any()
    ]


@torch.no_grad()
def mine_hard_pixels(
    model: nn.Module,
    sample_set: _SampleSet,
    device: torch.device,
    *,
    tile: int = 256,
    batch_size: int = 4,
    precision: str = "fp32",
    channels_last: bool = False,
) -> list[np.ndarray]:
    """Flat indices, per sample, of the loss-masked pixels ``model`` classifies wrongly.

    Online hard-example mining: the training patches of ``hard_share`` are centred on them, so
    training dwells on what the model still gets wrong (debris tongues, snow patches at the
    margins) instead of on the easy interiors of glaciers and valleys.
    """
    model.eval()
    wrong = [np.zeros(label.shape, dtype=bool) for label in sample_set.labels]
    positions = tile_positions(sample_set, tile)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        items = [
            sample_set.item(sample_set.normalise(sample_set.cut(i, top, left, tile)),
                            sample_set.location_vector(sample_set.samples[i]))
            for i, top, left in chunk
        ]
        inputs, location, target, mask = _to_device(default_collate(items), device, channels_last)
        with _autocast(device, precision):
            logits, _ = _split_output(model(inputs, location))
        errors = ((logits.argmax(1) != target) & mask).cpu().numpy()
        for (i, top, left), error in zip(chunk, errors):
            height, width = wrong[i].shape
            h, w = min(tile, height - top), min(tile, width - left)
            wrong[i][top : top + h, left : left + w] = error[:h, :w]
    return [np.flatnonzero(w) for w in wrong]


class TileDataset(Dataset):
    """Every sample cut into non-overlapping ``patch`` tiles (padding masked): for validation."""

    def __init__(
        self,
        samples: Sequence[TrainingSample],
        sources: Mapping[str, Sequence[str]],
        normalisation: Mapping[str, BandStats],
        patch: int,
        *,
        location: LocationSpec | None = None,
    ):
        self.set = _SampleSet(samples, sources, normalisation, patch, location)
        self.tiles = tile_positions(self.set, patch)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, item: int) -> dict[str, Any]:
        index, top, left = self.tiles[item]
        patch = self.set.normalise(self.set.cut(index, top, left))
        return self.set.item(patch, self.set.location_vector(self.set.samples[index]))


# -- configuration and results ------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`fit` (defaults: the paper's recipe)."""

    epochs: int = 40
    batch_size: int = 8
    patch: int = 384
    patches_per_epoch: int = 512
    lr: float = 5e-4
    finetune_lr: float = 5e-5
    weight_decay: float = 0.0
    #: warm-restart cycle lengths in epochs; None = the paper's 10:20:40:80 scaled to ``epochs``
    cycles: tuple[float, ...] | None = None
    min_lr: float = 0.0
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1
    aux_weight: float = 1.0
    ice_share: float = 0.7
    #: share of patches centred within MARGIN_PX of a glacier outline (before ice_share applies)
    margin_share: float = 0.0
    #: share of patches centred on pixels the model gets wrong (mined every ``hard_refresh`` epochs)
    hard_share: float = 0.0
    hard_refresh: int = 5
    unseen_rate: float = 0.1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    grad_clip: float | None = None
    device: str = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patch", "patches_per_epoch", "hard_refresh"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.finetune_lr <= 0:
            raise InvalidInputError("learning rates must be positive")
        if self.cycles is not None and (not self.cycles or min(self.cycles) <= 0):
            raise InvalidInputError(f"cycles must be positive epoch counts, got {self.cycles}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise InvalidInputError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cycles"] = list(self.cycles) if self.cycles is not None else None
        return json.loads(json.dumps(data))

    def resume_key(self) -> dict[str, Any]:
        """Settings a resumed run must share with the checkpoint (epochs may grow)."""
        data = self.to_json()
        for name in ("epochs", "device", "num_workers"):
            data.pop(name)
        return data


@dataclass(frozen=True)
class TrainProgress:
    """What :func:`fit` reports to its ``progress`` callback."""

    phase: Literal["train", "epoch"]
    epoch: int  # 0-based
    epochs: int
    step: int  # steps done in this epoch
    steps: int
    loss: float  # running mean of this epoch's training loss
    lr: float
    record: EpochRecord | None = None  # on phase "epoch"


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    lr: float
    val_loss: float | None
    val_iou: float | None
    val_precision: float | None
    val_recall: float | None
    val_accuracy: float | None
    seconds: float


@dataclass
class TrainResult:
    best_epoch: int
    best_iou: float | None
    history: list[EpochRecord]
    best_state: dict[str, Tensor]
    device: str
    precision: str
    seconds: float
    manifest: Manifest | None = None
    weights_path: Path | None = None

    @property
    def losses(self) -> list[float]:
        return [r.train_loss for r in self.history]

    def best_record(self) -> EpochRecord | None:
        return next((r for r in self.history if r.epoch == self.best_epoch), None)


# -- schedule, metrics, helpers ----------------------------------------------------------------------
def cycle_lengths(config: TrainConfig) -> tuple[float, ...]:
    if config.cycles is not None:
        return tuple(float(c) for c in config.cycles)
    scale = config.epochs / sum(PAPER_CYCLES)
    return tuple(c * scale for c in PAPER_CYCLES)


def cosine_warm_restarts(t: float, base_lr: float, cycles: Sequence[float], min_lr: float = 0.0) -> float:
    """Learning rate at fractional epoch ``t``: cosine decay restarting at each cycle's start
    (the last cycle length repeats when ``t`` runs past the listed cycles)."""
    start = 0.0
    index = 0
    length = cycles[0]
    while t >= start + length:
        start += length
        index = min(index + 1, len(cycles) - 1)
        length = cycles[index]
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (t - start) / length))


def confusion_counts(logits: Tensor, target: Tensor, mask: Tensor) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) for the ice class (index 1) over masked pixels."""
    pred = logits.argmax(dim=1).bool()
    truth = target.bool()
    mask = mask.bool()
    tp = int((pred & truth & mask).sum())
    fp = int((pred & ~truth & mask).sum())
    fn = int((~pred & truth & mask).sum())
    tn = int((~pred & ~truth & mask).sum())
    return tp, fp, fn, tn


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def resolve_precision(requested: str, device: torch.device) -> str:
    """``fp32`` on CPU; on CUDA ``auto`` means bf16 where supported, else fp16."""
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            logger.info("mixed precision %s is for CUDA only; training in fp32 on %s", requested, device)
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> tuple[dict[str, Tensor], Tensor | None, Tensor, Tensor]:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    inputs = {k: v.to(device, non_blocking=True).contiguous(memory_format=layout) for k, v in batch["inputs"].items()}
    location = batch.get("location")
    location = location.to(device) if location is not None else None
    return inputs, location, batch["label"].to(device), batch["mask"].to(device)


def _split_output(output: Tensor | tuple[Tensor, Sequence[Tensor]]) -> tuple[Tensor, Sequence[Tensor]]:
    if isinstance(output, tuple):
        return output[0], output[1]
    return output, ()


def set_seed(seed: int) -> None:
    """Seed torch (CPU and CUDA) for weight initialisation and dropout."""
    torch.manual_seed(seed)


# -- checkpoints ---------------------------------------------------------------------------------------
def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{index}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = json.loads(json.dumps(state["param_groups"]))
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_tensors(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Model, optimizer and RNG tensors plus JSON ``state`` in one safetensors file (atomic)."""
    tensors = {f"model/{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_to_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    meta = {"schema": CHECKPOINT_SCHEMA, "glacimap_version": glacimap.__version__, **state, "optimizer": optim_meta}
    blob = safetensors.torch.save(tensors, metadata={"glacimap_checkpoint": json.dumps(meta)})
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and JSON state of a checkpoint written by :func:`save_checkpoint`."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            meta_text = (handle.metadata() or {}).get("glacimap_checkpoint")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (safetensors.SafetensorError, OSError) as exc:
        raise InvalidInputError(f"{path}: not a readable checkpoint ({exc})") from exc
    if meta_text is None:
        raise InvalidInputError(f"{path}: not a glacimap checkpoint (no training state)")
    meta = json.loads(meta_text)
    if meta.get("schema") != CHECKPOINT_SCHEMA:
        raise InvalidInputError(f"{path}: checkpoint schema {meta.get('schema')!r}, expected {CHECKPOINT_SCHEMA}")
    return tensors, meta


def _record_to_json(record: EpochRecord) -> dict[str, Any]:
    return asdict(record)


def _record_from_json(data: Mapping[str, Any]) -> EpochRecord:
    return EpochRecord(**{f.name: data[f.name] for f in fields(EpochRecord)})


# -- the training loop ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    criterion: SegmentationLoss,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict[str, float | None]:
    """Validation loss (main head) and ice IoU, precision, recall and accuracy over masked pixels."""
    model.eval()
    tp = fp = fn = tn = 0
    loss_sum = 0.0
    weight = 0
    for batch in loader:
        inputs, location, target, mask = _to_device(batch, device, channels_last)
        with _autocast(device, precision):
            logits, _ = _split_output(model(inputs, location))
        logits = logits.float()
        pixels = int(mask.sum())
        loss_sum += float(criterion(logits, (), target, mask)) * pixels
        weight += pixels
        counts = confusion_counts(logits, target, mask)
        tp, fp, fn, tn = tp + counts[0], fp + counts[1], fn + counts[2], tn + counts[3]
    return {
        "loss": loss_sum / weight if weight else None,
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def fit(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset | None,
    config: TrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: Path | str | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` on ``train_ds``, keeping the epoch with the best validation IoU.

    Items of the datasets are dicts as produced by :class:`PatchDataset`. With
    ``checkpoint_dir``, ``last.safetensors`` (model, optimizer, RNG and JSON training state)
    is written after every epoch and ``best.safetensors`` (model) whenever validation IoU
    improves; with ``resume`` an existing ``last.safetensors`` is continued (same settings
    required, ``epochs`` may grow; with ``cycles=None`` the schedule is rescaled to the new
    ``epochs`` from the resumed epoch on). Without ``val_ds`` the last epoch counts as best. On return
    the model holds the best weights and is in evaluation mode.
    """
    if count_parameters(model) == 0:
        raise InputError(f"{type(model).__name__} has no trainable parameters; nothing to train")
    started = time.perf_counter()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    channels_last = config.channels_last and device.type == "cuda"
    set_seed(config.seed)
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    criterion = SegmentationLoss(config.focal_gamma, config.label_smoothing, config.aux_weight)
    cycles = cycle_lengths(config)
    base_lr = config.lr

    history: list[EpochRecord] = []
    best_iou: float | None = None
    best_epoch = -1
    best_state: dict[str, Tensor] | None = None
    start_epoch = 0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        last = folder / "last.safetensors"
        if resume and last.exists():
            start_epoch, history, best_iou, best_epoch, best_state = _resume(
                last, folder / "best.safetensors", model, optimizer, scaler, config, device
            )
            logger.info("resuming from %s at epoch %d", last, start_epoch)

    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        train_ds, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers,
        pin_memory=device.type == "cuda", generator=generator,
    )
    val_loader = (
        DataLoader(val_ds, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers)
        if val_ds is not None and len(val_ds) > 0
        else None
    )
    steps = len(loader)
    try:
        for epoch in range(start_epoch, config.epochs):
            epoch_start = time.perf_counter()
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(epoch)
            if _mining_due(train_ds, config, epoch, start_epoch):
                train_ds.set_hard(mine_hard_pixels(model, train_ds.set, device, tile=2 * config.patch,
                                                   batch_size=config.batch_size, precision=precision,
                                                   channels_last=channels_last))
                logger.info("epoch %d: %d hard pixels mined", epoch + 1, sum(h.size for h in train_ds.hard_index))
            model.train()
            loss_sum = 0.0
            lr = base_lr
            for step, batch in enumerate(loader):
                lr = cosine_warm_restarts(epoch + step / steps, base_lr, cycles, config.min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                inputs, location, target, mask = _to_device(batch, device, channels_last)
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, precision):
                    logits, aux = _split_output(model(inputs, location))
                loss = criterion(logits.float(), [a.float() for a in aux], target, mask)
                if not torch.isfinite(loss):
                    raise InvalidInputError(
                        f"training loss became {float(loss)} at epoch {epoch}, step {step}; "
                        "check the inputs for extreme values or lower the learning rate"
                    )
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                loss_sum += float(loss.detach())
                if progress is not None:
                    progress(TrainProgress("train", epoch, config.epochs, step + 1, steps, loss_sum / (step + 1), lr))
            metrics = (
                evaluate(model, val_loader, criterion, device, precision, channels_last)
                if val_loader is not None
                else dict.fromkeys(("loss", "iou", "precision", "recall", "accuracy"))
            )
            record = EpochRecord(
                epoch, loss_sum / max(steps, 1), lr, metrics["loss"], metrics["iou"], metrics["precision"],
                metrics["recall"], metrics["accuracy"], time.perf_counter() - epoch_start,
            )
            history.append(record)
            iou = record.val_iou
            improved = best_state is None or (
                val_loader is None or (iou is not None and (best_iou is None or iou > best_iou))
            )
            if improved:
                best_iou, best_epoch, best_state = iou, epoch, _state_copy(model)
                if folder is not None:
                    _save_best(folder / "best.safetensors", best_state, epoch, iou)
            if folder is not None:
                state = {
                    "epoch": epoch,
                    "best_epoch": best_epoch,
                    "best_iou": best_iou,
                    "history": [_record_to_json(r) for r in history],
                    "config": config.resume_key(),
                    "model": model.config() if hasattr(model, "config") else None,
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                }
                save_checkpoint(folder / "last.safetensors", model, optimizer, state)
            logger.info(
                "epoch %d/%d: loss %.4f, val IoU %s", epoch + 1, config.epochs, record.train_loss,
                "n/a" if iou is None else f"{iou:.4f}",
            )
            if progress is not None:
                progress(TrainProgress("epoch", epoch, config.epochs, steps, steps, record.train_loss, lr, record))
    finally:
        if config.deterministic:
            torch.use_deterministic_algorithms(previous_deterministic)
    if best_state is None:
        best_state = _state_copy(model)
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_epoch, best_iou, history, best_state, str(device), precision, time.perf_counter() - started)


def _mining_due(train_ds: Dataset, config: TrainConfig, epoch: int, start_epoch: int) -> bool:
    """Hard pixels are mined every ``hard_refresh`` epochs, and at the first epoch of a run
    (a resumed run re-mines with the weights it resumed from)."""
    if not isinstance(train_ds, PatchDataset) or train_ds.hard_share <= 0:
        return False
    return epoch == start_epoch or epoch % config.hard_refresh == 0


def _save_best(path: Path, state: Mapping[str, Tensor], epoch: int, iou: float | None) -> None:
    meta = {"glacimap_best": json.dumps({"epoch": epoch, "iou": iou})}
    blob = safetensors.torch.save({k: v.contiguous() for k, v in state.items()}, metadata=meta)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def _resume(
    last: Path,
    best: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
) -> tuple[int, list[EpochRecord], float | None, int, dict[str, Tensor] | None]:
    tensors, meta = read_checkpoint(last)
    if meta.get("config") != config.resume_key():
        saved = meta.get("config") or {}
        changed = sorted(k for k in set(saved) | set(config.resume_key()) if saved.get(k) != config.resume_key().get(k))
        raise InputError(
            f"{last} was written with other training settings ({changed}); "
            "use the same settings, another checkpoint folder, or resume=False"
        )
    if hasattr(model, "config") and meta.get("model") != model.config():
        raise InputError(f"{last} holds another model configuration; use another checkpoint folder")
    model_state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    model.load_state_dict(model_state)
    optimizer.load_state_dict(_optimizer_from_tensors(tensors, meta["optimizer"]))  # moves state to the params' device
    if meta.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    history = [_record_from_json(r) for r in meta["history"]]
    best_state = None
    if best.exists():
        best_state = safetensors.torch.load_file(str(best))
    elif meta["best_epoch"] >= 0:
        raise InvalidInputError(f"{best} is missing although {last} records a best epoch; use another folder")
    return meta["epoch"] + 1, history, meta["best_iou"], meta["best_epoch"], best_state


# -- domain adaptation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BiasResult:
    """Outcome of :func:`bias_optimise`: optimised region logits and their softmax."""

    logits: Tensor  # (L,)
    vector: Tensor  # (L,) softmax(logits): the location input to use for the scene
    entropy: list[float]  # mean normalised entropy before the first and after every step
    steps: int
    converged: bool


def mean_normalised_entropy(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over pixels of -sum p log p / log C (0 = certain, 1 = uniform)."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1) / math.log(logits.shape[1])
    if mask is None:
        return entropy.mean()
    mask = mask.bool()
    return torch.where(mask, entropy, torch.zeros_like(entropy)).sum() / mask.sum().clamp(min=1)


def bias_optimise(
    model: nn.Module,
    batch: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
    *,
    mask: Tensor | Sequence[Tensor | None] | None = None,
    lr: float = 1e-4,
    max_steps: int = 100,
    tol: float = 1e-6,
    patience: int = 3,
    init: Tensor | None = None,
) -> BiasResult:
    """Adapt a region-encoding model to a scene by optimising its region logits.

    Paper eqs. 1-2: the location input is ``softmax(r)``; ``r`` (zeros unless ``init``) is
    optimised with Adam (``lr``, up to ``max_steps`` steps) to minimise the mean normalised
    entropy of the predictions over the scene's tiles, ``batch`` (one mapping of source
    tensors, or a sequence of them; ``mask`` marks valid pixels). Stops early when the
    entropy changes less than ``tol`` for ``patience`` consecutive steps. The model's weights
    are not changed; dropout is off.
    """
    dim = int(getattr(model, "location_dim", 0))
    if dim < 2:
        raise InvalidInputError(f"{type(model).__name__} has no region input; bias optimisation needs a region-encoding model")
    batches = [batch] if isinstance(batch, Mapping) else list(batch)
    if not batches:
        raise InvalidInputError("bias optimisation needs at least one batch of the scene")
    masks = list(mask) if isinstance(mask, Sequence) else [mask] * len(batches)
    if len(masks) != len(batches):
        raise InvalidInputError(f"{len(masks)} masks for {len(batches)} batches")
    parameter = next(model.parameters())
    r = (init.detach().clone() if init is not None else torch.zeros(dim)).to(parameter.device, torch.float32)
    if r.shape != (dim,):
        raise InvalidInputError(f"init must have shape ({dim},), got {tuple(r.shape)}")
    r.requires_grad_(True)
    optimizer = torch.optim.Adam([r], lr=lr)
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def objective() -> Tensor:
        total = torch.zeros((), device=parameter.device)
        vector = torch.softmax(r, dim=0)
        for inputs, valid in zip(batches, masks):
            size = next(iter(inputs.values())).shape[0]
            logits = model(inputs, vector.expand(size, dim))
            total = total + mean_normalised_entropy(logits, valid)
        return total / len(batches)

    history: list[float] = []
    quiet = 0
    converged = False
    steps = 0
    try:
        for steps in range(1, max_steps + 1):
            optimizer.zero_grad(set_to_none=True)
            loss = objective()
            loss.backward()
            history.append(float(loss.detach()))
            optimizer.step()
            if len(history) > 1 and abs(history[-2] - history[-1]) < tol:
                quiet += 1
                if quiet >= patience:
                    converged = True
                    break
            else:
                quiet = 0
        with torch.no_grad():
            history.append(float(objective()))
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
    final = r.detach()
    return BiasResult(final.cpu(), torch.softmax(final, dim=0).cpu(), history, steps, converged)


# -- strategies -------------------------------------------------------------------------------------------
def _training_summary(
    samples: Sequence[TrainingSample], bands: Sequence[str], strategy: str, config: TrainConfig, folds: int, fold: int
) -> TrainingSummary:
    return TrainingSummary(
        regions=sorted({s.region for s in samples if s.region is not None}),
        years=sorted({int(s.year) for s in samples if s.year is not None}),
        n_glaciers=int(sum(s.n_glaciers for s in samples)),
        n_samples=len(samples),
        n_pixels=int(sum(int(s.loss_mask(bands).sum()) for s in samples)),
        strategy=strategy,
        epochs=config.epochs,
        folds=folds,
        fold=fold,
        seed=config.seed,
        details={"patch": config.patch, "batch_size": config.batch_size, "lr": config.lr,
                 "patches_per_epoch": config.patches_per_epoch, "margin_share": config.margin_share,
                 "hard_share": config.hard_share},
    )


def train_model(
    samples: Sequence[TrainingSample],
    out: Path | str,
    *,
    model: str = "glavitu-s",
    strategy: str = "global",
    config: TrainConfig | None = None,
    sources: Mapping[str, Sequence[str]] | None = None,
    folds: int = 5,
    fold: int | None = None,
    region: str | None = None,
    init: Path | str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    normalisation_method: Literal["standard", "minmax"] = "standard",
    checkpoint_dir: Path | str | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train a model on labelled samples with one of the paper's strategies and save it.

    - ``global``: one model for every region;
    - ``regional``: only the samples of ``region``;
    - ``finetune``: start from ``init`` (its architecture, bands, statistics and location
      encoding), one cosine cycle at ``config.finetune_lr``;
    - ``region-encoding``: a region one-hot (plus "unseen") input; ``config.unseen_rate`` of
      the training patches get the unseen slot;
    - ``coordinate-encoding``: sin/cos of latitude and longitude as input.

    The samples are split into ``folds`` contiguous geographic blocks and block ``fold``
    (default 0) validates; normalisation statistics come from the training blocks only. Writes
    ``out`` (NAME.safetensors + NAME.json) and returns the result with its manifest.
    """
    config = config or TrainConfig()
    weights_path, json_path = weights_paths(out)
    if not overwrite and (weights_path.exists() or json_path.exists()):
        raise OutputExistsError(f"{weights_path} exists; pass --overwrite to replace it")
    setup = _prepare_training(samples, model=model, strategy=strategy, config=config, sources=sources,
                              folds=folds, fold=fold, region=region, init=init, model_kwargs=model_kwargs,
                              normalisation_method=normalisation_method)
    train_ds = PatchDataset(
        setup.train_samples, setup.sources, setup.stats, setup.config.patch, setup.config.patches_per_epoch,
        ice_share=setup.config.ice_share, margin_share=setup.config.margin_share,
        hard_share=setup.config.hard_share, augment=setup.config.augment, location=setup.location,
        unseen_rate=setup.config.unseen_rate if setup.location is not None and setup.location.kind == "region" else 0.0,
        seed=setup.config.seed,
    )
    val_ds = TileDataset(setup.val_samples, setup.sources, setup.stats, setup.config.patch, location=setup.location)
    result = fit(setup.net, train_ds, val_ds, setup.config, progress=progress, checkpoint_dir=checkpoint_dir)
    best = result.best_record()
    validation = {}
    if best is not None:
        for key in ("iou", "precision", "recall", "accuracy", "loss"):
            value = getattr(best, f"val_{key}")
            if value is not None:
                validation[key] = float(value)
    result.manifest = _export(setup, validation, weights_path, overwrite)
    result.weights_path = weights_path
    return result


@dataclass
class _Setup:
    """Everything :func:`train_model` derives from its arguments before the first step."""

    net: nn.Module
    sources: dict[str, list[str]]
    stats: dict[str, Any]
    location: LocationSpec | None
    preset: str
    strategy: str
    config: TrainConfig
    train_samples: list[TrainingSample]
    val_samples: list[TrainingSample]
    folds: int
    fold: int


def _prepare_training(
    samples: Sequence[TrainingSample], *, model: str, strategy: str, config: TrainConfig,
    sources: Mapping[str, Sequence[str]] | None, folds: int, fold: int | None, region: str | None,
    init: Path | str | None, model_kwargs: Mapping[str, Any] | None, normalisation_method: str,
) -> _Setup:
    """Split folds, build the network and the normalisation statistics (deterministic)."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy '{strategy}'; choose one of {list(STRATEGIES)}")
    samples = list(samples)
    if strategy == "regional":
        if region is None:
            raise InputError("strategy 'regional' needs the region to train on")
        known = sorted({s.region for s in samples if s.region is not None})
        samples = [s for s in samples if s.region == region]
        if not samples:
            raise InputError(f"no sample in region '{region}'; regions present: {known}")
    if len(samples) < 2:
        raise InputError(f"training needs at least two samples (one to validate), got {len(samples)}")
    fold = 0 if fold is None else fold
    k = min(folds, len(samples))
    if not 0 <= fold < k:
        raise InputError(f"fold {fold} is out of range for {k} folds")
    fold_ids = geographic_folds(sample_centres(samples), k)
    train_samples = [s for s, f in zip(samples, fold_ids) if f != fold]
    val_samples = [s for s, f in zip(samples, fold_ids) if f == fold]

    base: Manifest | None = None
    if strategy == "finetune":
        if init is None:
            raise InputError("strategy 'finetune' needs init (the weights to start from)")
        loaded = load_weights(init, "cpu")
        base = loaded.manifest
        net = loaded.model
        source_bands = {k: list(v) for k, v in base.sources.items()}
        location = base.location
        preset = base.preset
        config = replace(config, lr=config.finetune_lr, cycles=(float(config.epochs),))
    else:
        source_bands = {k: list(v) for k, v in (sources or {s: SOURCE_BANDS[s] for s in ("optical", "dem")}).items()}
        if strategy == "region-encoding":
            regions = sorted({s.region for s in train_samples if s.region is not None})
            if not regions:
                raise InputError("strategy 'region-encoding' needs samples with a region")
            location = LocationSpec(kind="region", regions=regions)
        elif strategy == "coordinate-encoding":
            location = LocationSpec(kind="latlon")
        else:
            location = None
        preset = model
        set_seed(config.seed)
        net = create_model(
            model,
            sources={k: len(v) for k, v in source_bands.items()},
            location_dim=location.dim if location else 0,
            **dict(model_kwargs or {}),
        )
    bands = [b for names in source_bands.values() for b in names]
    check_sample_bands(samples, bands)
    if base is not None:
        stats = dict(base.normalisation)
    else:
        stats = compute_normalisation(
            [s.bands for s in train_samples], [s.loss_mask(bands) for s in train_samples],
            method=normalisation_method, bands=bands, seed=config.seed,
        )
    return _Setup(net, source_bands, stats, location, preset, strategy, config, train_samples, val_samples, k, fold)


def _export(
    setup: _Setup, validation: dict[str, float], weights_path: Path, overwrite: bool, details: dict[str, Any] | None = None
) -> Manifest:
    bands = [b for names in setup.sources.values() for b in names]
    setup.net.to("cpu")
    training = _training_summary(setup.train_samples, bands, setup.strategy, setup.config, setup.folds, setup.fold)
    if details:
        training = training.model_copy(update={"details": {**training.details, **details}})
    manifest = build_manifest(
        setup.net, weights_path.stem, setup.sources, setup.stats, preset=setup.preset, location=setup.location,
        training=training, validation=validation,
    )
    return save_weights(setup.net, manifest, weights_path, overwrite=overwrite)


def export_best_checkpoint(
    samples: Sequence[TrainingSample],
    out: Path | str,
    checkpoint_dir: Path | str,
    *,
    model: str = "glavitu-s",
    strategy: str = "global",
    config: TrainConfig | None = None,
    folds: int = 5,
    fold: int | None = None,
    region: str | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Weights + manifest from the best checkpoint of an interrupted :func:`train_model` run.

    Give the same samples and settings as the run; folds and normalisation statistics are
    derived again exactly as the run derived them.
    """
    config = config or TrainConfig()
    weights_path, _ = weights_paths(out)
    best = Path(checkpoint_dir) / "best.safetensors"
    if not best.exists():
        raise InputError(f"{best}: no best checkpoint to export")
    setup = _prepare_training(samples, model=model, strategy=strategy, config=config, sources=None, folds=folds,
                              fold=fold, region=region, init=None, model_kwargs=None, normalisation_method="standard")
    with safetensors.safe_open(str(best), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("glacimap_best", "{}"))
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    setup.net.load_state_dict(state, strict=True)
    validation = {"iou": float(meta["iou"])} if meta.get("iou") is not None else {}
    logger.info("exporting epoch %s of %s (validation IoU %s)", meta.get("epoch"), best, meta.get("iou"))
    epoch = int(meta["epoch"]) + 1 if meta.get("epoch") is not None else None
    return _export(setup, validation, weights_path, overwrite,
                   details={"exported_epoch": epoch, "exported_from": "best checkpoint of an interrupted run"})


__all__ = [
    "STRATEGIES",
    "export_best_checkpoint",
    "BiasResult",
    "EpochRecord",
    "PatchDataset",
    "TileDataset",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingSample",
    "bias_optimise",
    "compute_normalisation",
    "cosine_warm_restarts",
    "evaluate",
    "fit",
    "geographic_folds",
    "rasterise_labels",
    "read_checkpoint",
    "resolve_device",
    "train_model",
]


# -- the workspace stage (glacimap train) -----------------------------------------------------------
def samples_from_workspace(work: Path | str, year: int, region_column: str = "region") -> list[TrainingSample]:
    """One labelled sample per chip of ``year``: the inventory's outlines are the labels.

    The loss mask is the chip's ``valid`` band (cloud-free data) and finite inputs; every
    inventory glacier inside the chip is labelled, so the whole chip is the labelled extent.
    The inventory should describe the glaciers at ``year`` (train on the inventory's own year).
    """
    from pyproj import Transformer

    from glacimap.fetch import read_manifest
    from glacimap.inventory import load_inventory
    from glacimap.rasters import read_raster
    from glacimap.workspace import Workspace

    workspace = Workspace(work)
    inventory = load_inventory(workspace.inventory)
    manifest = read_manifest(workspace, year)
    regions = dict(zip(inventory["glacier_id"], inventory[region_column])) if region_column in inventory else {}
    samples = []
    projected: dict[str, Any] = {}
    for row in manifest.itertuples():
        if row.status != "ok":
            continue
        data, grid, names, _ = read_raster(workspace.chip(year, row.glacier_id))
        if grid.crs not in projected:
            projected[grid.crs] = inventory.to_crs(grid.crs)
        label = rasterise_labels(projected[grid.crs], grid)
        bands = {name: data[i].astype(np.float32) for i, name in enumerate(names) if name != "valid"}
        mask = np.isfinite(np.stack(list(bands.values()))).all(axis=0)
        if "valid" in names:
            mask &= data[names.index("valid")] > 0
        left, bottom, right, top = grid.bounds
        lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform((left + right) / 2, (bottom + top) / 2)
        samples.append(
            TrainingSample(
                bands=bands, label=label, mask=mask, region=regions.get(row.glacier_id), lat=float(lat),
                lon=float(lon), year=year, n_glaciers=1, sample_id=str(row.glacier_id),
            )
        )
    if not samples:
        raise InputError(f"{workspace.manifest(year)}: no chips with status ok to train on")
    return samples


def run_train(settings: Any, progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """``glacimap train``: build samples from the workspace and train (see :func:`train_model`)."""
    samples = samples_from_workspace(settings.work, settings.year)
    config = TrainConfig(
        epochs=settings.epochs, batch_size=settings.batch_size, patch=settings.patch,
        patches_per_epoch=settings.patches_per_epoch, margin_share=settings.margin_share, lr=settings.lr,
        device=settings.device,
        precision=settings.precision, seed=settings.seed,
    )
    out = Path(settings.out)
    return train_model(
        samples, out, model=settings.model, strategy=settings.strategy, config=config,
        folds=settings.folds, fold=settings.fold, region=settings.region, init=settings.init,
        checkpoint_dir=out.parent / f"{out.stem}.checkpoints", progress=progress, overwrite=settings.overwrite,
    )
