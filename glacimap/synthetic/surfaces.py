"""Surface classes of the synthetic world, their spectra and radar backscatter.

Each pixel of a rendered scene belongs to one :class:`Surface`. Glacier surfaces follow the
landscape truth of the year (ice, debris, lakes) and a per-scene transient snowline; off the
glaciers, vegetation grows below a treeline and seasonal snow lingers in high, shaded places.

Reflectances are surface (bottom-of-atmosphere) reflectances at the centres of the Sentinel-2
bands blue (490 nm), green (560 nm), red (665 nm), nir (842 nm), swir16 (1610 nm) and swir22
(2190 nm), read off typical published field and library spectra (snow and ice after the
classic albedo curves of Warren and of Hall & Martinec; rock, vegetation and water after
USGS-library-like spectra). Landsat OLI bands are close enough that the same values serve.
The numbers are rounded: the world needs the right contrasts (snow bright in the visible
and dark in the SWIR, debris indistinguishable from rock), not a radiative-transfer model.

Debris-covered tongues are spectrally rock, but, as on real debris-covered glaciers, they are
dotted with exposed ice cliffs and supraglacial ponds (a few per cent of the debris each). That
texture, and the tongue's place below clean ice, are what a model can learn to map debris by;
band ratios see only the cliffs.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

#: The reflective bands every optical scene is rendered in, in this order.
OPTICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")


class Surface(IntEnum):
    """Surface class of a pixel; 0 is reserved for "no data"."""

    ROCK = 1  # bare bedrock and scree
    VEGETATION = 2  # alpine meadows and forest below the treeline
    WATER = 3  # proglacial lakes (turbid, glacial flour)
    ICE = 4  # clean glacier ice below the transient snowline
    SNOW = 5  # snow and firn on a glacier above the transient snowline
    SEASONAL_SNOW = 6  # snow patches off the glaciers
    DEBRIS = 7  # debris-covered glacier ice (spectrally like rock)


#: Surfaces that are ice or snow at the surface (SCL class 11, QA_PIXEL snow bit).
SNOW_AND_ICE: frozenset[Surface] = frozenset({Surface.ICE, Surface.SNOW, Surface.SEASONAL_SNOW})

#: Surface reflectance per surface and band (OPTICAL_BANDS order).
SPECTRA: dict[Surface, tuple[float, ...]] = {
    Surface.ROCK: (0.12, 0.15, 0.18, 0.22, 0.27, 0.23),
    Surface.VEGETATION: (0.03, 0.07, 0.04, 0.33, 0.17, 0.08),
    Surface.WATER: (0.07, 0.11, 0.08, 0.03, 0.008, 0.005),
    Surface.ICE: (0.52, 0.48, 0.42, 0.30, 0.030, 0.025),
    Surface.SNOW: (0.78, 0.76, 0.73, 0.66, 0.070, 0.050),
    Surface.SEASONAL_SNOW: (0.85, 0.84, 0.82, 0.76, 0.100, 0.070),
    Surface.DEBRIS: (0.11, 0.14, 0.17, 0.21, 0.25, 0.22),
}

#: Relative amplitude of each surface's spatial texture (albedo variation, 1 sigma).
TEXTURE_AMPLITUDE: dict[Surface, float] = {
    Surface.ROCK: 0.15,
    Surface.VEGETATION: 0.20,
    Surface.WATER: 0.10,
    Surface.ICE: 0.08,
    Surface.SNOW: 0.03,
    Surface.SEASONAL_SNOW: 0.03,
    Surface.DEBRIS: 0.15,
}

#: Reflectance of an optically thick cloud top, and the additive signal of thin cirrus per
#: unit opacity. Clouds are bright in the SWIR too, unlike snow.
CLOUD_SPECTRUM: tuple[float, ...] = (0.75, 0.74, 0.73, 0.72, 0.45, 0.30)
CIRRUS_SPECTRUM: tuple[float, ...] = (0.30, 0.30, 0.29, 0.28, 0.22, 0.15)

#: Fraction of the irradiance that comes straight from the sun (the rest is diffuse skylight),
#: per band: the sky is blue, so shadows keep more blue light than SWIR.
DIRECT_FRACTION: tuple[float, ...] = (0.72, 0.80, 0.85, 0.90, 0.94, 0.95)

#: Codes of the static debris-feature field: exposed ice cliffs and supraglacial ponds.
DEBRIS_CLIFF = 1
DEBRIS_POND = 2

#: C-band backscatter (sigma0, dB, VV and VH) per surface at about 39 deg incidence, for dry
#: (refrozen, morning) and wet (melting, evening) conditions. Wet snow absorbs and is dark;
#: firn with ice layers is bright when frozen; water is dark; rough rock is bright.
BACKSCATTER_DB: dict[Surface, dict[str, tuple[float, float]]] = {
    Surface.ROCK: {"dry": (-9.0, -16.0), "wet": (-9.0, -16.0)},
    Surface.VEGETATION: {"dry": (-9.0, -15.0), "wet": (-9.5, -15.5)},
    Surface.WATER: {"dry": (-22.0, -29.0), "wet": (-22.0, -29.0)},
    Surface.ICE: {"dry": (-12.0, -20.0), "wet": (-15.0, -23.0)},
    Surface.SNOW: {"dry": (-6.0, -12.0), "wet": (-20.0, -27.0)},
    Surface.SEASONAL_SNOW: {"dry": (-11.0, -18.0), "wet": (-19.0, -26.0)},
    Surface.DEBRIS: {"dry": (-10.0, -17.0), "wet": (-10.0, -17.0)},
}

#: Sentinel-1 IW noise-equivalent sigma0 (dB) for VV and VH: dark surfaces sit on this floor.
NOISE_FLOOR_DB: tuple[float, float] = (-24.0, -28.0)


def lookup_table(values: dict[Surface, float], fill: float = 0.0) -> np.ndarray:
    """A float32 array indexed by surface code (0 .. max code) holding ``values``."""
    table = np.full(max(Surface) + 1, fill, dtype=np.float32)
    for surface, value in values.items():
        table[int(surface)] = value
    return table


def spectrum_table() -> np.ndarray:
    """(bands, surface codes) float32 reflectance table; column 0 (no data) is zero."""
    table = np.zeros((len(OPTICAL_BANDS), max(Surface) + 1), dtype=np.float32)
    for surface, spectrum in SPECTRA.items():
        table[:, int(surface)] = spectrum
    return table


def classify_surfaces(
    dem: np.ndarray,
    glacier: np.ndarray,
    debris: np.ndarray,
    lakes: np.ndarray,
    vegetation: np.ndarray,
    snowline: np.ndarray | float,
    snow_propensity: np.ndarray,
    offglacier_snowline: float,
    debris_features: np.ndarray | None = None,
) -> np.ndarray:
    """Surface class (uint8 :class:`Surface` codes) of every pixel of one scene.

    On a glacier, pixels at or above ``snowline`` (a scalar or a per-pixel altitude that
    already holds the scene's noise) are snow/firn, even over debris; below it, debris stays
    debris (except where ``debris_features`` marks an exposed ice cliff, :data:`DEBRIS_CLIFF`,
    or a supraglacial pond, :data:`DEBRIS_POND`) and the rest is bare ice. Lakes are water. Off the glaciers, seasonal snow lies
    where ``dem + 450 m * snow_propensity`` reaches ``offglacier_snowline`` (propensity 0..1,
    high in shaded hollows), vegetation where ``vegetation`` is set, bare rock elsewhere.
    """
    on_glacier = glacier > 0
    above = dem >= snowline
    out = np.full(dem.shape, int(Surface.ROCK), dtype=np.uint8)
    out[vegetation] = Surface.VEGETATION
    seasonal = (dem + 450.0 * snow_propensity) >= offglacier_snowline
    out[seasonal & ~on_glacier] = Surface.SEASONAL_SNOW
    out[lakes & ~on_glacier] = Surface.WATER
    out[on_glacier] = Surface.ICE
    covered = on_glacier & debris & ~above
    out[covered] = Surface.DEBRIS
    if debris_features is not None:
        out[covered & (debris_features == DEBRIS_CLIFF)] = Surface.ICE
        out[covered & (debris_features == DEBRIS_POND)] = Surface.WATER
    out[on_glacier & above] = Surface.SNOW
    return out
