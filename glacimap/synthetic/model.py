"""Data model of the synthetic glacier world, shared by its generator modules.

The *landscape* (terrain, glaciers per year, debris, lakes) is physical truth on a local UTM
grid; the *scenes* (Sentinel-2, Landsat, Sentinel-1, DEM products) are rendered from it and
published through STAC. These frozen dataclasses are the interface between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glacimap.rasters import Grid

#: Years with truth in every world.
DEFAULT_YEARS: tuple[int, ...] = (2015, 2019, 2023)
#: Year of the reference inventory a user starts from.
INVENTORY_YEAR = 2015


@dataclass(frozen=True)
class WorldConfig:
    """What to generate. ``small`` is the few-km preset for unit tests."""

    seed: int = 42
    size_m: float = 20_000.0
    resolution: float = 10.0
    centre_lon: float = 11.0  # the world straddles 11 E / 47 N, so DEM tiles must be mosaicked
    centre_lat: float = 47.0
    years: tuple[int, ...] = DEFAULT_YEARS
    #: target regional area loss, fraction of area per year (between consecutive truth years)
    loss_rate: float = 0.015

    @classmethod
    def small(cls, seed: int = 42) -> WorldConfig:
        return cls(seed=seed, size_m=4_000.0)


@dataclass(frozen=True)
class GlacierInfo:
    """One glacier of the world; ``index`` is its value in the label rasters."""

    index: int
    glacier_id: str  # RGI-like, e.g. "SYN-00042"
    complex_id: str  # glaciers whose ice touches share a complex id


@dataclass(frozen=True)
class YearTruth:
    """Truth of one year on the landscape grid."""

    year: int
    ela: float  # equilibrium-line altitude, m
    glacier: np.ndarray  # int32 (rows, cols): GlacierInfo.index, 0 off-glacier
    debris: np.ndarray  # bool: debris-covered ice (subset of glacier > 0)
    lakes: np.ndarray  # bool: proglacial lakes (never on ice)


@dataclass(frozen=True)
class Landscape:
    """Terrain and per-year glacier truth of a synthetic world."""

    config: WorldConfig
    grid: Grid  # local UTM grid at config.resolution
    dem: np.ndarray  # float32 elevation, m
    glaciers: tuple[GlacierInfo, ...]
    years: dict[int, YearTruth] = field(default_factory=dict)

    def glacier_by_index(self) -> dict[int, GlacierInfo]:
        return {g.index: g for g in self.glaciers}
