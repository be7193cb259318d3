"""Derived raster features: terrain slope and spectral indices."""

from __future__ import annotations

import numpy as np


def slope_degrees(elevation: np.ndarray, resolution: float) -> np.ndarray:
    """Slope in degrees with Horn's 3x3 stencil; edges use replicated values, NaN propagates."""
    z = np.pad(elevation.astype(np.float64), 1, mode="edge")
    a, b, c = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * resolution)
    dzdy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8.0 * resolution)
    return np.degrees(np.arctan(np.hypot(dzdx, dzdy))).astype(np.float32)


def ndsi(green: np.ndarray, swir16: np.ndarray) -> np.ndarray:
    """Normalised-difference snow index (green - swir16) / (green + swir16); NaN where undefined."""
    green = green.astype(np.float32)
    swir16 = swir16.astype(np.float32)
    total = green + swir16
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (green - swir16) / total
    out[~np.isfinite(out) | (np.abs(total) < 1e-6)] = np.nan
    return out
