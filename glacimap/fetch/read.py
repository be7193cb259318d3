"""Windowed reads of (remote) rasters onto a target grid, with retries.

Only the source window covering the target grid is read (COG range requests through
/vsicurl); when the target is coarser than the source, the read is decimated so GDAL serves it
from the COG's overviews. The window is then reprojected in memory onto the target grid.
GDAL options go through :func:`gdal_env` inside each task (they do not travel to workers).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from glacimap.errors import FetchError
from glacimap.rasters import RESAMPLING, Grid

log = logging.getLogger(__name__)
T = TypeVar("T")

#: GDAL settings that make COG windows over HTTP efficient (one request per needed range).
GDAL_HTTP_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff",
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours, with backoff, so failures are counted
    "VSI_CACHE": "TRUE",
}


def gdal_env(requester_pays: bool = False) -> rasterio.Env:
    """A ``rasterio.Env`` with :data:`GDAL_HTTP_OPTIONS` (thread-local, restored on exit)."""
    options = dict(GDAL_HTTP_OPTIONS)
    if requester_pays:
        options["AWS_REQUEST_PAYER"] = "requester"
    return rasterio.Env(**options)


def with_retries(
    action: Callable[[], T], what: str, attempts: int = 3, delay: float = 0.5, href: str | None = None
) -> T:
    """Run ``action``; retry on I/O errors with exponential backoff, then raise FetchError.

    Retries of an HTTP ``href`` bypass GDAL's /vsicurl cache for it, which may hold what a
    failed (e.g. truncated) response left behind.
    """
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            if attempt and href and href.startswith(("http://", "https://")):
                with rasterio.Env(CPL_VSIL_CURL_NON_CACHED=f"/vsicurl/{href}"):
                    return action()
            return action()
        except (RasterioError, OSError) as exc:
            last = exc
            if attempt + 1 < attempts:
                wait = delay * 2**attempt
                log.debug("%s failed (%s); retrying in %.1f s", what, exc, wait)
                time.sleep(wait)
    raise FetchError(f"{what}: failed after {attempts} attempts ({last})")


def _source_window(src: rasterio.DatasetReader, grid: Grid) -> Window | None:
    left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
    res_x, res_y = src.res
    # pad by two source pixels so resampling at the edges has neighbours
    window = from_bounds(left - 2 * res_x, bottom - 2 * res_y, right + 2 * res_x, top + 2 * res_y, src.transform)
    full = Window(0, 0, src.width, src.height)
    try:
        window = window.intersection(full)
    except rasterio.errors.WindowError:
        return None
    window = window.round_offsets(op="floor").round_lengths(op="ceil")
    if window.width <= 0 or window.height <= 0:
        return None
    return window


def read_to_grid(
    href: str,
    grid: Grid,
    resampling: str = "nearest",
    dtype: str = "float32",
    band: int = 1,
) -> np.ndarray:
    """Read one band of ``href`` onto ``grid``.

    Float results hold NaN where the source has no data or does not reach; integer results
    hold 0 there. Raises :class:`FetchError` after retries.
    """
    fill = np.nan if np.dtype(dtype).kind == "f" else 0

    def action() -> np.ndarray:
        out = np.full(grid.shape, fill, dtype=dtype)
        with rasterio.open(href) as src:
            window = _source_window(src, grid)
            if window is None:
                return out
            # Read decimated when the target is coarser: GDAL then uses the COG's overviews.
            target_res = grid.resolution
            src_res = abs(src.res[0]) if src.crs.is_projected else None
            factor = max(1.0, target_res / src_res) if src_res else 1.0
            rows = max(1, math.ceil(window.height / factor))
            cols = max(1, math.ceil(window.width / factor))
            data = src.read(band, window=window, out_shape=(rows, cols))
            transform = src.window_transform(window) @ rasterio.Affine.scale(window.width / cols, window.height / rows)
            src_nodata = src.nodata
            if np.dtype(dtype).kind == "f":
                data = data.astype(dtype)
                if src_nodata is not None and not (isinstance(src_nodata, float) and math.isnan(src_nodata)):
                    data[data == src_nodata] = np.nan
                src_nodata = np.nan
            reproject(
                source=data,
                destination=out,
                src_transform=transform,
                src_crs=src.crs,
                src_nodata=src_nodata,
                dst_transform=grid.transform,
                dst_crs=grid.crs,
                dst_nodata=fill,
                resampling=RESAMPLING[resampling],
            )
        return out

    return with_retries(action, f"reading {href}", href=href)
