"""Segmentation models by name: architectures, presets, input conventions and devices.

``create_model("glavitu-s")`` builds a preset; keyword arguments override the preset's. Every
model takes a mapping of *source* tensors (see :data:`SOURCE_BANDS`) and an optional location
vector, and returns two-class logits (plus deep-supervision logits in training mode); the
conventions are in :mod:`glacimap.models.layers`. Weights files are handled by
:mod:`glacimap.models.weights`, training by :mod:`glacimap.train`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from glacimap.errors import DeviceError, InputError, InvalidInputError
from glacimap.models.band_ratio import BandRatio
from glacimap.models.glavitu import GlaViTU
from glacimap.models.layers import mc_dropout
from glacimap.models.unet import UNetResNet34

#: Chip band names grouped into the model input sources, in channel order.
SOURCE_BANDS: dict[str, tuple[str, ...]] = {
    "optical": ("blue", "green", "red", "nir", "swir16", "swir22"),
    "dem": ("elevation", "slope"),
    "sar": ("vv_asc", "vv_desc"),
}
#: Chip bands that are never model inputs (the valid-data mask); present or not, no error.
AUXILIARY_BANDS: tuple[str, ...] = ("valid",)

#: Architecture name -> model class.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "glavitu": GlaViTU,
    "unet-resnet34": UNetResNet34,
    "band-ratio": BandRatio,
}

#: Preset name -> (architecture, default arguments). ``glavitu`` is the paper's scale;
#: ``glavitu-s`` a small variant that trains on a CPU in tests.
MODEL_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "glavitu": ("glavitu", dict(width=64, patch=16, depth=12, heads=4, mlp_width=256, unet_widths=(64, 128, 256, 512))),
    "glavitu-s": (
        "glavitu",
        dict(width=32, patch=16, depth=4, heads=4, mlp_width=128, unet_widths=(32, 64, 128, 256), location_hidden=32),
    ),
    "unet-resnet34": ("unet-resnet34", {}),
    "band-ratio": ("band-ratio", {}),
}

#: Location encodings: one-hot region (with an "unseen" slot) or sin/cos of lat and lon.
LOCATION_KINDS: tuple[str, ...] = ("region", "latlon")
LATLON_DIM = 4


def model_names() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODEL_PRESETS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the preset or architecture ``name``; ``kwargs`` override its arguments."""
    if name not in MODEL_PRESETS:
        raise InputError(f"unknown model '{name}'; choose one of {model_names()}")
    architecture, defaults = MODEL_PRESETS[name]
    arguments = {**defaults, **kwargs}
    try:
        return ARCHITECTURES[architecture](**arguments)
    except TypeError as exc:  # an unknown or missing keyword
        raise InvalidInputError(f"model '{name}': invalid arguments {sorted(kwargs)} ({exc})") from exc


def preset_architecture(name: str) -> str:
    """Architecture behind a preset name."""
    if name not in MODEL_PRESETS:
        raise InputError(f"unknown model '{name}'; choose one of {model_names()}")
    return MODEL_PRESETS[name][0]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises :class:`DeviceError` when CUDA is requested and none is usable.
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceError(
                f"CUDA requested but no GPU is available (torch {torch.__version__}, {build}); "
                "use --device cpu or --device auto"
            )
        index = text.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise DeviceError(f"{device}: no such GPU; {torch.cuda.device_count()} visible")
        return torch.device(text)
    raise DeviceError(f"unknown device '{device}'; use auto, cpu or cuda")


def encode_region(regions: Sequence[int | None] | np.ndarray, n_regions: int) -> np.ndarray:
    """One-hot (N, n_regions + 1) float32; the last slot is "unseen" (index None or -1)."""
    if n_regions < 1:
        raise InvalidInputError(f"n_regions must be >= 1, got {n_regions}")
    out = np.zeros((len(regions), n_regions + 1), dtype=np.float32)
    for row, region in enumerate(regions):
        index = n_regions if region is None or int(region) < 0 else int(region)
        if index > n_regions:
            raise InvalidInputError(f"region index {region} out of range for {n_regions} regions")
        out[row, index] = 1.0
    return out


def encode_latlon(lat: Sequence[float] | np.ndarray, lon: Sequence[float] | np.ndarray) -> np.ndarray:
    """(N, 4) float32: sin and cos of latitude and of longitude."""
    lat_r = np.radians(np.asarray(lat, dtype=np.float64))
    lon_r = np.radians(np.asarray(lon, dtype=np.float64))
    if lat_r.shape != lon_r.shape or lat_r.ndim != 1:
        raise InvalidInputError("lat and lon must be 1-D sequences of the same length")
    if np.any(~np.isfinite(lat_r)) or np.any(np.abs(lat_r) > math.pi / 2 + 1e-12):
        raise InvalidInputError("latitudes must be finite and within [-90, 90] degrees")
    return np.stack([np.sin(lat_r), np.cos(lat_r), np.sin(lon_r), np.cos(lon_r)], axis=1).astype(np.float32)


__all__ = [
    "ARCHITECTURES",
    "AUXILIARY_BANDS",
    "LATLON_DIM",
    "LOCATION_KINDS",
    "MODEL_PRESETS",
    "SOURCE_BANDS",
    "BandRatio",
    "GlaViTU",
    "UNetResNet34",
    "count_parameters",
    "create_model",
    "encode_latlon",
    "encode_region",
    "mc_dropout",
    "model_names",
    "preset_architecture",
    "resolve_device",
]
