"""Raster grids and Cloud-Optimized GeoTIFF I/O shared by every stage.

Compute functions take arrays and :class:`Grid` objects; only the functions here (and the
stages' own I/O functions) open paths. Every raster glacimap writes goes through
:func:`write_cog`: tiled, compressed with a predictor, with overviews, nodata and band
descriptions, written to a temporary file and renamed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.shutil import copy as copy_dataset

from glacimap.errors import BandMismatchError, InputNotFoundError, InvalidInputError
from glacimap.workspace import atomic_path

#: Creation options of every COG glacimap writes (GDAL's COG driver).
COG_OPTIONS: dict[str, str] = {
    "driver": "COG",
    "compress": "DEFLATE",
    "blocksize": "256",
    "overview_resampling": "NEAREST",
    "bigtiff": "IF_SAFER",
}


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: CRS, affine transform and shape (rows, columns)."""

    crs: str
    transform: Affine
    height: int
    width: int

    @property
    def resolution(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        left, top = self.transform.c, self.transform.f
        return (left, top + self.height * self.transform.e, left + self.width * self.transform.a, top)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @classmethod
    def from_bounds(
        cls, bounds: Sequence[float], crs: str, resolution: float, margin: float = 0.0
    ) -> Grid:
        """The smallest grid on the ``resolution`` lattice covering ``bounds`` + ``margin``.

        Snapping to multiples of the resolution keeps grids of neighbouring glaciers and of
        different years aligned pixel for pixel.
        """
        left, bottom, right, top = bounds
        left = math.floor((left - margin) / resolution) * resolution
        bottom = math.floor((bottom - margin) / resolution) * resolution
        right = math.ceil((right + margin) / resolution) * resolution
        top = math.ceil((top + margin) / resolution) * resolution
        width = max(1, round((right - left) / resolution))
        height = max(1, round((top - bottom) / resolution))
        return cls(crs, Affine(resolution, 0.0, left, 0.0, -resolution, top), height, width)


def utm_crs(lon: float, lat: float) -> str:
    """EPSG code (``"EPSG:326NN"`` / ``"EPSG:327NN"``) of the UTM zone holding a point."""
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise InvalidInputError(f"coordinates ({lon}, {lat}) are not longitude/latitude in degrees")
    zone = min(60, int((lon + 180.0) // 6.0) + 1)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def same_crs(a: object, b: object) -> bool:
    """True when two CRS descriptions denote the same coordinate system."""
    return CRS.from_user_input(a) == CRS.from_user_input(b)


def write_cog(
    path: Path | str,
    data: np.ndarray,
    grid: Grid,
    band_names: Sequence[str],
    nodata: float | None = None,
    overwrite: bool = True,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a (bands, rows, cols) array as a COG atomically; return the path."""
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.shape[0] != len(band_names):
        raise BandMismatchError(f"{path}: {data.shape[0]} bands given but {len(band_names)} band names")
    if data.shape[1:] != grid.shape:
        raise InvalidInputError(f"{path}: array shape {data.shape[1:]} does not match grid {grid.shape}")
    predictor = "3" if np.issubdtype(data.dtype, np.floating) else "2"
    with atomic_path(path, overwrite=overwrite) as tmp:
        # Write a tiled GTiff in memory first; the COG driver then copies it with overviews.
        with rasterio.MemoryFile() as memfile:
            with memfile.open(
                driver="GTiff",
                width=grid.width,
                height=grid.height,
                count=data.shape[0],
                dtype=data.dtype,
                crs=grid.crs,
                transform=grid.transform,
                nodata=nodata,
            ) as mem:
                mem.write(data)
                for index, name in enumerate(band_names, start=1):
                    mem.set_band_description(index, name)
                if tags:
                    mem.update_tags(**tags)
                copy_dataset(mem, tmp, predictor=predictor, **COG_OPTIONS)
    return Path(path)


def read_raster(
    path: Path | str, bands: Sequence[str] | None = None
) -> tuple[np.ndarray, Grid, tuple[str, ...], float | None]:
    """Read named bands of a raster: (array, grid, band names, nodata).

    With ``bands`` given, the file must hold each of them (by band description); a missing
    band raises :class:`BandMismatchError` naming both lists.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: raster not found")
    try:
        with rasterio.open(path) as src:
            names = tuple(d or f"band_{i}" for i, d in enumerate(src.descriptions, start=1))
            if bands is None:
                indexes = list(range(1, src.count + 1))
            else:
                missing = [b for b in bands if b not in names]
                if missing:
                    raise BandMismatchError(
                        f"{path}: missing bands {missing}; the file has {list(names)}, "
                        f"expected {list(bands)}"
                    )
                indexes = [names.index(b) + 1 for b in bands]
            data = src.read(indexes)
            grid = Grid(src.crs.to_string() if src.crs else "", src.transform, src.height, src.width)
            return data, grid, tuple(names[i - 1] for i in indexes), src.nodata
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInputError(f"{path}: not a readable raster ({exc})") from exc


def fill_voids(values: np.ndarray) -> np.ndarray:
    """Non-finite cells (DEM voids, edges of a DEM's extent) take the nearest valid value."""
    from scipy import ndimage

    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    if bad.all():
        raise InvalidInputError("the raster has no valid cells to fill voids from")
    _, (rows, cols) = ndimage.distance_transform_edt(bad, return_indices=True)
    return values[rows, cols]


RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear, "average": Resampling.average}
