"""``glacimap velocity``: glacier surface velocity by feature tracking between two images.

The ``ncc`` method matches templates of the first image in search windows of the second one:

1. Preprocessing: both images become complex orientation images, ``(gx + i gy) / |gx + i gy|``
   of their Sobel gradients (GIV; Fitch et al. 2002), or plain complex gradients. Orientation
   does not care about brightness or contrast, so changes of illumination, haze and shadow
   length between the dates barely move the correlation peak. No-data pixels (and a one-pixel
   rim around them, where the Sobel kernel reaches into them) are zero and take no part.
2. Matching: the normalised cross-correlation of every template with every shift of its search
   window, for thousands of templates at once with batched FFTs (``scipy.fft``). The integer
   peak is refined by evaluating numerator and window energy on a grid of sub-pixel shifts
   with a matrix DFT (the upsampled DFT of Guizar-Sicairos et al. 2008, applied to the NCC),
   then by a parabola through the finest grid's peak.
3. Pyramid: a coarse level (images averaged over 2**L pixels) searches the whole expected
   displacement range with large footprints; each finer level searches a few pixels around
   the doubled, outlier-filtered, gap-filled field of the level above.
4. Outliers: a normalised median test over 9 x 9 neighbouring points (Westerweel & Scarano
   2005) and a threshold on the match quality (the NCC peak value) flag bad points.

Velocities are in metres per year: ``vx`` east, ``vy`` north, ``speed`` their norm. The
stable-ground error is the median and the NMAD of the speed over bedrock (``--stable``) or
off-glacier points. See docs/velocity.md.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from pyproj import CRS
from scipy import fft as sfft
from scipy import ndimage

from glacimap.errors import (
    BandMismatchError,
    CRSMismatchError,
    InputNotFoundError,
    InvalidInputError,
    NotImplementedYetError,
    OutputExistsError,
)
from glacimap.rasters import Grid, same_crs, write_cog
from glacimap.workspace import atomic_path

log = logging.getLogger(__name__)

DAYS_PER_YEAR = 365.25
#: Templates matched per batch: bounds memory (batch x window**2 complex values, a few arrays).
BATCH = 512
#: Fewest stable points from which a co-registration shift is estimated.
MIN_STABLE_POINTS = 10


@dataclass(frozen=True)
class TrackingParams:
    """How the ``ncc`` tracker matches one image pair (all lengths in pixels of the input)."""

    template: int = 32
    step: int = 16
    #: largest displacement searched (radius, pixels per interval)
    max_displacement: float = 32.0
    preprocess: str = "orientation"
    #: search radius around the first guess on every level finer than the coarsest
    refine_radius: int = 4
    #: search radius on the coarsest level above which another level is added
    coarse_radius: int = 32
    #: sub-pixel grid: 1 / upsample pixel spacing over +-1 pixel around the integer peak
    upsample: int = 10
    min_quality: float = 0.3
    #: side of the median test's neighbourhood, in points
    median_size: int = 9
    #: normalised median test: residual / (neighbours' median residual + epsilon) above this fails
    median_threshold: float = 3.0
    median_epsilon: float = 0.1
    #: smallest share of valid pixels in a template
    min_valid: float = 0.5
    levels: int | None = None
    fft_workers: int | None = None

    def __post_init__(self) -> None:
        if self.template < 8 or self.step < 1:
            raise InvalidInputError(f"template ({self.template}) must be >= 8 pixels and step ({self.step}) >= 1")
        if self.max_displacement < 0:
            raise InvalidInputError(f"max_displacement must be >= 0, got {self.max_displacement}")
        if self.preprocess not in ("orientation", "gradient"):
            raise InvalidInputError(f"preprocess must be 'orientation' or 'gradient', got {self.preprocess!r}")


@dataclass
class Tracked:
    """Displacements on the point grid (pixels of the input per interval; ``dy`` down the rows)."""

    dx: np.ndarray
    dy: np.ndarray
    quality: np.ndarray
    valid: np.ndarray
    #: row and column of every point's template centre, in input pixels (continuous coordinates)
    rows: np.ndarray
    cols: np.ndarray
    levels: int = 0
    stats: dict[str, int] = field(default_factory=dict)


# -- preprocessing ---------------------------------------------------------------------------

def valid_mask(image: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Pixels holding data: finite and not equal to ``nodata``."""
    valid = np.isfinite(image)
    if nodata is not None and np.isfinite(nodata):
        valid &= image != nodata
    return valid


def preprocess(image: np.ndarray, valid: np.ndarray, kind: str = "orientation") -> np.ndarray:
    """Complex orientation (unit length) or gradient image of ``image``; zero where unusable."""
    filled = np.where(valid, image, 0.0).astype(np.float64)
    if not valid.all() and valid.any():
        filled = np.where(valid, filled, float(np.mean(image[valid])))
    gx = ndimage.sobel(filled, axis=1, mode="nearest")
    gy = ndimage.sobel(filled, axis=0, mode="nearest")
    grad = (gx + 1j * gy).astype(np.complex64)
    usable = ndimage.binary_erosion(valid, structure=np.ones((3, 3), bool), border_value=1)
    if kind == "orientation":
        magnitude = np.abs(grad)
        # a gradient below 1e-6 of the image's typical one is flat: no orientation
        floor = 1e-6 * float(np.median(magnitude[usable])) if usable.any() else 0.0
        usable &= magnitude > floor
        grad = np.divide(grad, magnitude, out=np.zeros_like(grad), where=usable)
    return np.where(usable, grad, 0).astype(np.complex64)


def downsample(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 block mean of the valid pixels; a block is valid when at least half of it is."""
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    values = np.where(valid, image, 0.0)[:h, :w].reshape(h // 2, 2, w // 2, 2)
    counts = valid[:h, :w].reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    sums = values.sum(axis=(1, 3))
    mean = np.divide(sums, counts, out=np.zeros(sums.shape), where=counts > 0)
    return mean, counts >= 2


# -- matching --------------------------------------------------------------------------------

def _windows(padded: np.ndarray, size: int, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """(N, size, size) copies of ``padded`` starting at (top, left)."""
    view = sliding_window_view(padded, (size, size))
    return view[top, left]


def _dft_matrix(size: int, shifts: np.ndarray) -> np.ndarray:
    """(N, K, size) matrix whose product with a spectrum evaluates it at the given shifts."""
    freqs = sfft.fftfreq(size) * size
    return np.exp(2j * np.pi * shifts[..., None] * freqs / size).astype(np.complex64)


def _parabola(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offset (-0.5..0.5) of the vertex of a parabola through three equally spaced samples."""
    denominator = left - 2 * centre + right
    offset = np.divide(0.5 * (left - right), denominator, out=np.zeros_like(centre), where=denominator < 0)
    return np.clip(offset, -0.5, 0.5)


def _box_sums(values: np.ndarray, box: int) -> np.ndarray:
    """(N, s - box + 1, s - box + 1) sums of ``values`` (N, s, s) over every box x box window."""
    c = np.zeros((values.shape[0], values.shape[1] + 1, values.shape[2] + 1))
    c[:, 1:, 1:] = values.cumsum(axis=1).cumsum(axis=2)
    return c[:, box:, box:] - c[:, :-box, box:] - c[:, box:, :-box] + c[:, :-box, :-box]


def match_templates(
    ref: np.ndarray,
    search: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    guess_dy: np.ndarray,
    guess_dx: np.ndarray,
    template: int,
    radius: int,
    upsample: int = 10,
    min_valid: float = 0.5,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match templates of ``ref`` in ``search`` by normalised cross-correlation.

    ``ref`` and ``search`` are preprocessed (complex) images of one shape; ``rows``/``cols``
    are the templates' top-left pixels; ``guess_*`` whole-pixel first guesses. Each template is
    searched over shifts of at most ``radius`` pixels around its guess. Returns (dy, dx,
    quality, ok): the sub-pixel displacement, the NCC peak value, and whether the peak is a
    usable match (enough valid pixels, not on the search window's edge).
    """
    n = len(rows)
    size = template + 2 * radius
    fast = sfft.next_fast_len(size)  # zero padding beyond the window keeps shifts 0..2r exact
    margin = 2  # pixels around the integer peak kept for the sub-pixel stage
    small = template + 2 * margin
    pad = size + int(max(np.abs(guess_dy).max(initial=0), np.abs(guess_dx).max(initial=0)))
    ref_p = np.pad(ref, pad)
    search_p = np.pad(search, pad)
    support = np.zeros((small, small), np.float32)
    support[:template, :template] = 1.0
    support_f = np.conj(sfft.fft2(support, workers=workers))
    span = np.linspace(-1.0, 1.0, 2 * upsample + 1)
    dy = np.full(n, np.nan)
    dx = np.full(n, np.nan)
    quality = np.zeros(n)
    ok = np.zeros(n, bool)
    k = 2 * radius + 1
    for start in range(0, n, BATCH):
        sl = slice(start, min(n, start + BATCH))
        top, left = rows[sl] + pad, cols[sl] + pad
        wtop, wleft = top + guess_dy[sl] - radius, left + guess_dx[sl] - radius
        tpl = _windows(ref_p, template, top, left)
        win = _windows(search_p, size, wtop, wleft)
        energy_t = np.sum(np.abs(tpl) ** 2, axis=(1, 2))
        filled = np.mean(tpl != 0, axis=(1, 2))
        # integer stage: NCC for every shift of the search window
        tpl_fc = np.conj(sfft.fft2(tpl, s=(fast, fast), workers=workers))
        numerator = sfft.ifft2(sfft.fft2(win, s=(fast, fast), workers=workers) * tpl_fc, workers=workers)[:, :k, :k].real
        energy_w = _box_sums(np.abs(win) ** 2, template)
        denominator = np.sqrt(np.maximum(energy_t[:, None, None] * energy_w, 0.0))
        ncc = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 1e-12)
        py, px = np.divmod(ncc.reshape(len(tpl), -1).argmax(axis=1), k)
        inside = (py > 0) & (py < k - 1) & (px > 0) & (px < k - 1)
        # sub-pixel stage: NCC on a 1/upsample grid over +-1 pixel around the peak, evaluated
        # from the spectra of a small window around it (matrix DFT, Guizar-Sicairos et al. 2008)
        near = _windows(search_p, small, wtop + py - margin, wleft + px - margin)
        cross_f = (sfft.fft2(near, workers=workers) * np.conj(sfft.fft2(tpl, s=(small, small), workers=workers)))
        power_f = sfft.fft2(np.abs(near) ** 2, workers=workers) * support_f
        shifts = np.broadcast_to(margin + span, (len(tpl), len(span)))
        e = _dft_matrix(small, shifts)
        et = e.transpose(0, 2, 1)
        num_up = np.matmul(np.matmul(e, cross_f.astype(np.complex64)), et).real / small**2
        pow_up = np.matmul(np.matmul(e, power_f.astype(np.complex64)), et).real / small**2
        ncc_up = num_up / np.sqrt(np.maximum(energy_t[:, None, None] * pow_up, 1e-24))
        m = len(span)
        uy, ux = np.divmod(ncc_up.reshape(len(tpl), -1).argmax(axis=1), m)
        uy_c, ux_c = np.clip(uy, 1, m - 2), np.clip(ux, 1, m - 2)
        idx = np.arange(len(tpl))
        oy = _parabola(ncc_up[idx, uy_c - 1, ux_c], ncc_up[idx, uy_c, ux_c], ncc_up[idx, uy_c + 1, ux_c])
        ox = _parabola(ncc_up[idx, uy_c, ux_c - 1], ncc_up[idx, uy_c, ux_c], ncc_up[idx, uy_c, ux_c + 1])
        dy[sl] = guess_dy[sl] - radius + py + span[uy_c] + oy / upsample
        dx[sl] = guess_dx[sl] - radius + px + span[ux_c] + ox / upsample
        quality[sl] = np.clip(ncc_up[idx, uy, ux], -1.0, 1.0)
        ok[sl] = inside & (filled >= min_valid) & (energy_t > 0)
    return dy, dx, quality, ok


# -- outliers and gap filling ----------------------------------------------------------------

def _neighbour_stack(values: np.ndarray, size: int) -> np.ndarray:
    """(rows, cols, size*size - 1) values of each point's neighbours (NaN beyond the edges)."""
    half = size // 2
    padded = np.pad(values, half, constant_values=np.nan)
    stack = sliding_window_view(padded, (size, size)).reshape(*values.shape, size * size)
    centre = (size * size) // 2
    return np.delete(stack, centre, axis=2)


def median_test(
    dx: np.ndarray,
    dy: np.ndarray,
    size: int = 9,
    threshold: float = 3.0,
    epsilon: float = 0.1,
    support: int = 3,
) -> np.ndarray:
    """Points that fail the normalised median test (Westerweel & Scarano 2005).

    A point's residual, per component, is its distance to the median of its ``size x size``
    neighbours; it fails when that exceeds ``threshold`` times (the neighbours' own median
    residual + ``epsilon`` pixels). A narrow fast glacier between stable slopes would fail
    such a test everywhere (most of its 9 x 9 neighbours stand still), so a point that agrees
    with at least ``support`` of its 8 nearest neighbours (within 1 pixel + 10 % of its
    displacement) passes anyway: lone mismatches have no such support. NaN points are not
    neighbours; points with fewer than three valid neighbours fail.
    """
    import warnings

    finite = np.isfinite(dx) & np.isfinite(dy)
    failed = ~finite
    for values in (dx, dy):
        stack = _neighbour_stack(values, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(stack, axis=2)
            spread = np.nanmedian(np.abs(stack - median[..., None]), axis=2)
        count = np.isfinite(stack).sum(axis=2)
        residual = np.abs(values - median)
        with np.errstate(invalid="ignore"):
            failed |= (count < 3) | ~(residual <= threshold * (spread + epsilon))
    if support > 0:
        near_x, near_y = _neighbour_stack(dx, 3), _neighbour_stack(dy, 3)
        tolerance = 1.0 + 0.1 * np.hypot(dx, dy)
        with np.errstate(invalid="ignore"):
            agree = (np.hypot(near_x - dx[..., None], near_y - dy[..., None]) <= tolerance[..., None]).sum(axis=2)
        failed &= ~(finite & (agree >= support))
    return failed


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """NaN points take the mean of their valid neighbours, growing inwards; all-NaN gives zeros."""
    out = values.astype(np.float64).copy()
    missing = ~np.isfinite(out)
    if missing.all():
        return np.zeros_like(out)
    kernel = np.ones((3, 3))
    while missing.any():
        filled = np.where(missing, 0.0, out)
        sums = ndimage.convolve(filled, kernel, mode="constant")
        counts = ndimage.convolve((~missing).astype(float), kernel, mode="constant")
        grow = missing & (counts > 0)
        out[grow] = sums[grow] / counts[grow]
        missing &= ~grow
    return out


# -- the tracker -----------------------------------------------------------------------------

def point_grid(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (continuous pixel coordinates) of the points: one per ``step x step`` cell."""
    ny, nx = shape[0] // step, shape[1] // step
    if ny < 1 or nx < 1:
        raise InvalidInputError(f"the images ({shape[0]} x {shape[1]} px) are smaller than one step ({step} px)")
    return np.arange(ny) * step + step / 2.0, np.arange(nx) * step + step / 2.0


def choose_levels(params: TrackingParams, shape: tuple[int, int]) -> int:
    """Pyramid levels above full resolution: enough to bring the search radius down to
    ``coarse_radius``, while the coarsest image still holds two templates."""
    if params.levels is not None:
        return params.levels
    levels = 0
    while math.ceil(params.max_displacement / 2**levels) > params.coarse_radius:
        if min(shape) / 2 ** (levels + 1) < 2 * params.template:
            break
        levels += 1
    return levels


def _match_points(
    ref: np.ndarray,
    search: np.ndarray,
    centre_y: np.ndarray,
    centre_x: np.ndarray,
    guess_dy: np.ndarray,
    guess_dx: np.ndarray,
    radius: int,
    params: TrackingParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match the templates centred on the given points (arrays of one shape)."""
    half = params.template / 2.0
    top = np.round(centre_y - half).astype(np.int64).ravel()
    left = np.round(centre_x - half).astype(np.int64).ravel()
    gy = np.round(guess_dy).astype(np.int64).ravel()
    gx = np.round(guess_dx).astype(np.int64).ravel()
    dy, dx, quality, ok = match_templates(
        ref, search, top, left, gy, gx, params.template, radius, params.upsample, params.min_valid,
        params.fft_workers,
    )
    shape = np.shape(centre_y)
    return dy.reshape(shape), dx.reshape(shape), quality.reshape(shape), ok.reshape(shape)


def _track_level(
    ref: np.ndarray,
    search: np.ndarray,
    centres_y: np.ndarray,
    centres_x: np.ndarray,
    guess_dy: np.ndarray,
    guess_dx: np.ndarray,
    radius: int,
    params: TrackingParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match one template per grid point; results shaped like the grid."""
    cy, cx = np.meshgrid(centres_y, centres_x, indexing="ij")
    return _match_points(ref, search, cy, cx, guess_dy, guess_dx, radius, params)


def track(
    image_a: np.ndarray,
    image_b: np.ndarray,
    valid_a: np.ndarray | None = None,
    valid_b: np.ndarray | None = None,
    params: TrackingParams | None = None,
) -> Tracked:
    """Displacement of ``image_a``'s features in ``image_b`` on a grid of points (``ncc``).

    Both images are 2-D arrays on the same grid; ``valid_*`` mark pixels with data (clouds and
    no-data False). Returns pixels per interval; invalid points are NaN in ``dx``/``dy``.
    """
    params = params or TrackingParams()
    if image_a.shape != image_b.shape or image_a.ndim != 2:
        raise InvalidInputError(f"the images must be 2-D and of one shape, got {image_a.shape} and {image_b.shape}")
    valid_a = valid_mask(image_a) if valid_a is None else valid_a & np.isfinite(image_a)
    valid_b = valid_mask(image_b) if valid_b is None else valid_b & np.isfinite(image_b)
    levels = choose_levels(params, image_a.shape)
    pyramid = [(image_a.astype(np.float64), valid_a, image_b.astype(np.float64), valid_b)]
    for _ in range(levels):
        a, va, b, vb = pyramid[-1]
        a2, va2 = downsample(a, va)
        b2, vb2 = downsample(b, vb)
        pyramid.append((a2, va2, b2, vb2))

    coarser: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    stats: dict[str, int] = {}
    for level in range(levels, -1, -1):
        a, va, b, vb = pyramid[level]
        ref = preprocess(a, va, params.preprocess)
        search = preprocess(b, vb, params.preprocess)
        step = params.step if level == 0 else max(params.step, params.template // 2)
        centres_y, centres_x = point_grid(a.shape, step)
        full_radius = max(1, math.ceil(params.max_displacement / 2**level) + 1)
        if coarser is None:
            gy = np.zeros((len(centres_y), len(centres_x)))
            gx = np.zeros_like(gy)
            radius = full_radius
        else:
            gy, gx = _interpolate_guess(coarser, centres_y, centres_x)
            radius = min(params.refine_radius, full_radius)
            full_radius = min(full_radius, params.coarse_radius)
        dy, dx, quality, ok = _track_level(ref, search, centres_y, centres_x, gy, gx, radius, params)
        good = ok & (quality >= params.min_quality)
        failed = ~good | median_test(
            np.where(good, dx, np.nan), np.where(good, dy, np.nan),
            params.median_size, params.median_threshold, params.median_epsilon,
        )
        rescued = 0
        if radius < full_radius and failed.any():
            # a coarse level can miss a glacier narrower than its templates: search the whole
            # range again, around zero, wherever the guided match failed
            rows_f, cols_f = np.nonzero(failed)
            zero = np.zeros(len(rows_f))
            r_dy, r_dx, r_q, r_ok = _match_points(
                ref, search, centres_y[rows_f], centres_x[cols_f], zero, zero, full_radius, params
            )
            better = r_ok & (r_q >= params.min_quality) & (~(ok[rows_f, cols_f]) | (r_q > quality[rows_f, cols_f]))
            for target, values in ((dy, r_dy), (dx, r_dx), (quality, r_q)):
                target[rows_f[better], cols_f[better]] = values[better]
            ok[rows_f[better], cols_f[better]] = True
            rescued = int(better.sum())
            good = ok & (quality >= params.min_quality)
            failed = ~good | median_test(
                np.where(good, dx, np.nan), np.where(good, dy, np.nan),
                params.median_size, params.median_threshold, params.median_epsilon,
            )
        stats[f"level{level}_points"] = int(dy.size)
        stats[f"level{level}_matched"] = int(good.sum())
        stats[f"level{level}_rescued"] = rescued
        stats[f"level{level}_outliers"] = int((failed & good).sum())
        dy = np.where(failed, np.nan, dy)
        dx = np.where(failed, np.nan, dx)
        if level > 0:
            # the next level's first guess: gaps filled, lightly smoothed, in that level's pixels
            fy = ndimage.median_filter(fill_gaps(dy), size=3, mode="nearest") * 2
            fx = ndimage.median_filter(fill_gaps(dx), size=3, mode="nearest") * 2
            coarser = (fy, fx, centres_y * 2, centres_x * 2)
    return Tracked(
        dx=dx, dy=dy, quality=np.where(np.isfinite(quality), quality, 0.0), valid=np.isfinite(dx),
        rows=centres_y, cols=centres_x, levels=levels, stats=stats,
    )


def _interpolate_guess(
    coarser: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], centres_y: np.ndarray, centres_x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear interpolation of the coarser level's field (dy, dx, its point rows and
    columns in this level's pixels) at this level's points."""
    field_y, field_x, rows, cols = coarser
    fy = np.interp(centres_y, rows, np.arange(len(rows)))
    fx = np.interp(centres_x, cols, np.arange(len(cols)))
    coords = np.stack(np.meshgrid(fy, fx, indexing="ij"))
    return (
        ndimage.map_coordinates(field_y, coords, order=1, mode="nearest"),
        ndimage.map_coordinates(field_x, coords, order=1, mode="nearest"),
    )


# -- velocities and errors -------------------------------------------------------------------

def to_velocity(
    dx: np.ndarray, dy: np.ndarray, pixel_width: float, pixel_height: float, days: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vx east, vy north, speed) in metres per year from displacements in pixels over ``days``."""
    if not days > 0:
        raise InvalidInputError(f"the interval between the images must be positive, got {days} days")
    years = days / DAYS_PER_YEAR
    vx = dx * pixel_width / years
    vy = -dy * pixel_height / years
    return vx, vy, np.hypot(vx, vy)


def nmad(values: np.ndarray) -> float:
    """Normalised median absolute deviation: 1.4826 x median(|x - median(x)|)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def stable_error(vx: np.ndarray, vy: np.ndarray, speed: np.ndarray, stable: np.ndarray) -> dict[str, float | int]:
    """Median and NMAD of speed (and of each component) over stable, valid points."""
    use = stable & np.isfinite(speed)
    if not use.any():
        return {"points": 0}
    return {
        "points": int(use.sum()),
        "speed_median": float(np.median(speed[use])),
        "speed_nmad": nmad(speed[use]),
        "vx_median": float(np.median(vx[use])),
        "vy_median": float(np.median(vy[use])),
        "vx_nmad": nmad(vx[use]),
        "vy_nmad": nmad(vy[use]),
    }


def smooth_field(dx: np.ndarray, dy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of each valid point's valid ``size x size`` neighbourhood; gaps stay gaps."""
    if size <= 1:
        return dx, dy
    import warnings

    out = []
    for values in (dx, dy):
        stack = _neighbour_stack(values, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(np.concatenate([stack, values[..., None]], axis=2), axis=2)
        out.append(np.where(np.isfinite(values), median, np.nan))
    return out[0], out[1]


@dataclass
class VelocityField:
    """A velocity field on the point grid, and how it was made."""

    vx: np.ndarray
    vy: np.ndarray
    speed: np.ndarray
    quality: np.ndarray
    valid: np.ndarray
    #: the output grid: one cell per point (``step`` input pixels)
    grid: Grid
    days: float
    #: co-registration shift removed from image B's displacements (dx, dy pixels), if any
    offset_px: tuple[float, float] | None
    #: where the stable-ground error comes from: "polygons", "off-glacier" or None
    stable_source: str | None
    #: stable-ground error before and after the co-registration shift
    stable_raw: dict[str, float | int]
    stable: dict[str, float | int]
    levels: int
    stats: dict[str, int]


def _at_points(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A pixel mask sampled at the points' centres."""
    r = np.clip(np.floor(rows).astype(int), 0, mask.shape[0] - 1)
    c = np.clip(np.floor(cols).astype(int), 0, mask.shape[1] - 1)
    return mask[np.ix_(r, c)]


def velocity_field(
    image_a: np.ndarray,
    image_b: np.ndarray,
    grid: Grid,
    days: float,
    params: TrackingParams,
    valid_a: np.ndarray | None = None,
    valid_b: np.ndarray | None = None,
    stable: np.ndarray | None = None,
    glacier: np.ndarray | None = None,
    smooth: int = 3,
    coregister: bool = True,
) -> VelocityField:
    """Track, filter, co-register and convert to metres per year (the ``ncc`` method).

    ``grid`` is the images' grid; ``stable`` marks stable-ground pixels (bedrock) and
    ``glacier`` glacier pixels plus a buffer: without ``stable``, the points outside
    ``glacier`` are the stable ground. With ``coregister``, the median displacement of the
    stable points is a co-registration error of image B and is removed from every point.
    The flow is kept only on ``glacier`` when it is given.
    """
    tracked = track(image_a, image_b, valid_a, valid_b, params)
    dx, dy = smooth_field(tracked.dx, tracked.dy, smooth)
    out_grid = Grid(grid.crs, grid.transform * Affine.scale(params.step), len(tracked.rows), len(tracked.cols))
    if stable is not None:
        stable_points, source = _at_points(stable, tracked.rows, tracked.cols), "polygons"
    elif glacier is not None:
        stable_points, source = ~_at_points(glacier, tracked.rows, tracked.cols), "off-glacier"
    else:
        stable_points, source = np.zeros(dx.shape, bool), None
    width, height = abs(grid.transform.a), abs(grid.transform.e)
    vx, vy, speed = to_velocity(dx, dy, width, height, days)
    stable_raw = stable_error(vx, vy, speed, stable_points)
    offset = None
    use = stable_points & np.isfinite(dx)
    if coregister and use.sum() >= MIN_STABLE_POINTS:
        offset = (float(np.median(dx[use])), float(np.median(dy[use])))
        dx, dy = dx - offset[0], dy - offset[1]
        vx, vy, speed = to_velocity(dx, dy, width, height, days)
        log.info("co-registration: image B shifted by dx %.3f, dy %.3f px (median of %d stable points)",
                 offset[0], offset[1], int(use.sum()))
    elif coregister and source is not None:
        log.warning("only %d stable points: no co-registration shift estimated (needs %d)",
                    int(use.sum()), MIN_STABLE_POINTS)
    stable_after = stable_error(vx, vy, speed, stable_points)
    valid = np.isfinite(speed)
    if glacier is not None:
        valid &= _at_points(glacier, tracked.rows, tracked.cols)
    vx, vy, speed = (np.where(valid, v, np.nan) for v in (vx, vy, speed))
    return VelocityField(
        vx=vx, vy=vy, speed=speed, quality=tracked.quality, valid=valid, grid=out_grid, days=days,
        offset_px=offset, stable_source=source, stable_raw=stable_raw, stable=stable_after,
        levels=tracked.levels, stats=tracked.stats,
    )


# -- I/O -------------------------------------------------------------------------------------

#: Raster tags read as the acquisition time, first found wins.
TIME_TAGS = ("ACQUISITION_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "datetime", "acquisition_date")
#: Band names tried, in order, when a multi-band file is read without ``band``.
AUTO_BANDS = ("pan", "nir")
BAND_ALIASES = {"nir": ("nir", "b08", "b8", "b5", "nir08"), "pan": ("pan", "b8", "panchromatic")}


@dataclass(frozen=True)
class Acquisition:
    """One image of a pair: its band, usable pixels, grid and acquisition time."""

    path: Path
    data: np.ndarray
    valid: np.ndarray
    grid: Grid
    when: datetime | None
    band: str


def _parse_time(text: str) -> datetime | None:
    text = text.strip().strip('"')
    for candidate in (text, text.replace("Z", "+00:00")):
        try:
            when = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return None


def mtl_time(path: Path) -> datetime | None:
    """Acquisition time from a Landsat ``*_MTL.txt`` next to ``path`` whose scene id starts
    ``path``'s name (e.g. ``LC80630182016200LGN00_MTL.txt`` for ``LC80630182016200LGN00_B8.TIF``)."""
    for mtl in sorted(path.parent.glob("*_MTL.txt")):
        scene = mtl.name[: -len("_MTL.txt")]
        if not path.name.startswith(scene):
            continue
        values: dict[str, str] = {}
        for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
        day = values.get("DATE_ACQUIRED")
        if day is None:
            continue
        clock = values.get("SCENE_CENTER_TIME", "00:00:00Z")[:15].rstrip("Z")
        return _parse_time(f"{day}T{clock}+00:00") or _parse_time(day)
    return None


def acquisition_time(path: Path, tags: dict[str, str]) -> datetime | None:
    """When an image was acquired: raster tags, a glacimap chip's selection record, or an MTL file."""
    for key in TIME_TAGS:
        if key in tags and (when := _parse_time(tags[key])) is not None:
            return when
    if "glacimap_selection" in tags:
        try:
            record = json.loads(tags["glacimap_selection"])
        except json.JSONDecodeError:
            record = {}
        if isinstance(record.get("date"), str) and (when := _parse_time(record["date"])) is not None:
            return when
    return mtl_time(path)


def _pick_band(path: Path, names: tuple[str, ...], band: str | None) -> int:
    """0-based index of the band to track."""
    lower = [n.lower() for n in names]
    if band is not None:
        for alias in BAND_ALIASES.get(band, (band,)):
            if alias in lower:
                return lower.index(alias)
        if len(names) == 1:  # a single-band file (e.g. a Landsat B8.TIF) is that band
            return 0
        raise BandMismatchError(f"{path}: no band '{band}' among {list(names)}; pass --band with one of them")
    if len(names) == 1:
        return 0
    for name in AUTO_BANDS:
        if name in lower:
            return lower.index(name)
    raise BandMismatchError(
        f"{path}: {len(names)} bands {list(names)} and none named {' or '.join(AUTO_BANDS)}; "
        "pass --band to choose one"
    )


def read_acquisition(path: Path | str, band: str | None = None) -> Acquisition:
    """Read the band to track of one image, its usable pixels and acquisition time.

    No-data (0 in unsigned-integer files without a nodata value), non-finite pixels and, in
    glacimap chips, pixels whose ``valid`` band is 0 (clouds, gaps) are unusable.
    """
    import rasterio

    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: image not found")
    try:
        with rasterio.open(path) as src:
            names = tuple(d or f"band_{i}" for i, d in enumerate(src.descriptions, start=1))
            index = _pick_band(path, names, band)
            nodata = src.nodata
            if nodata is None and np.issubdtype(np.dtype(src.dtypes[index]), np.unsignedinteger):
                nodata = 0  # Landsat and Sentinel-2 digital numbers: 0 is the fill value
            data = src.read(index + 1).astype(np.float64)
            valid = valid_mask(data, nodata)
            if "valid" in names and names.index("valid") != index:
                valid &= src.read(names.index("valid") + 1) > 0.5
            if src.crs is None:
                raise InvalidInputError(f"{path}: the image has no CRS; velocities need a projected grid in metres")
            grid = Grid(src.crs.to_string(), src.transform, src.height, src.width)
            tags = src.tags()
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInputError(f"{path}: not a readable raster ({exc})") from exc
    if not CRS.from_user_input(grid.crs).is_projected:
        raise InvalidInputError(f"{path}: CRS {grid.crs} is not projected; reproject the images to a metric grid (UTM)")
    if grid.transform.b != 0 or grid.transform.d != 0:
        raise InvalidInputError(f"{path}: the grid is rotated; resample it to a north-up grid")
    return Acquisition(path, data, valid, grid, acquisition_time(path, tags), names[index])


def common_window(a: Grid, b: Grid, path_a: Path, path_b: Path) -> tuple[Grid, tuple[slice, slice], tuple[slice, slice]]:
    """The overlap of two grids on one pixel lattice, and each image's rows/cols in it.

    The images must share CRS and pixel size and be offset by whole pixels (co-registered);
    otherwise, or when they do not overlap, one clear error.
    """
    if not same_crs(a.crs, b.crs):
        raise CRSMismatchError(f"{path_a} is in {a.crs} but {path_b} in {b.crs}; reproject one onto the other's grid")
    ta, tb = a.transform, b.transform
    if not (math.isclose(ta.a, tb.a, rel_tol=1e-9) and math.isclose(ta.e, tb.e, rel_tol=1e-9)):
        raise InvalidInputError(
            f"{path_a} has {ta.a:g} x {abs(ta.e):g} pixels but {path_b} {tb.a:g} x {abs(tb.e):g}; "
            "resample both onto one grid (e.g. gdalwarp -tr -tap)"
        )
    col_off = (tb.c - ta.c) / ta.a
    row_off = (tb.f - ta.f) / ta.e
    if abs(col_off - round(col_off)) > 1e-3 or abs(row_off - round(row_off)) > 1e-3:
        raise InvalidInputError(
            f"{path_a} and {path_b} are on grids shifted by a fraction of a pixel ({col_off:.3f}, {row_off:.3f} px); "
            "resample both onto one grid (e.g. gdalwarp -tap)"
        )
    col_off, row_off = round(col_off), round(row_off)
    r0, c0 = max(0, row_off), max(0, col_off)
    r1, c1 = min(a.height, row_off + b.height), min(a.width, col_off + b.width)
    if r1 <= r0 or c1 <= c0:
        raise InvalidInputError(f"{path_a} and {path_b} do not overlap")
    grid = Grid(a.crs, ta * Affine.translation(c0, r0), r1 - r0, c1 - c0)
    return (
        grid,
        (slice(r0, r1), slice(c0, c1)),
        (slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off)),
    )


def rasterize_geometries(geometries: Any, grid: Grid) -> np.ndarray:
    """Pixels of ``grid`` whose centres fall inside the (projected) geometries."""
    from rasterio.features import rasterize

    shapes = [g for g in geometries if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(grid.shape, bool)
    return rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0, default_value=1).astype(bool)


def _read_polygons(path: Path, grid: Grid, what: str) -> Any:
    from glacimap.vectors import read_layer

    frame = read_layer(path).to_crs(grid.crs)
    polygons = frame.geometry[frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polygons.empty:
        raise InvalidInputError(f"{path}: no polygons ({what} must be polygons)")
    return polygons


def quicklook(
    path: Path, background: np.ndarray, image_grid: Grid, field: VelocityField, title: str, arrows: int = 40
) -> None:
    """A PNG: image A in grey, speed in colour, arrows of the flow (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    stride = max(1, math.ceil(max(background.shape) / 1600))
    shown = background[::stride, ::stride]
    finite = shown[np.isfinite(shown)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    left, bottom, right, top = image_grid.bounds
    g_left, g_bottom, g_right, g_top = field.grid.bounds
    aspect = (top - bottom) / max(right - left, 1e-9)
    fig = Figure(figsize=(9, max(3.0, 9 * aspect * 0.9)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(shown, cmap="gray", vmin=low, vmax=high, extent=(left, right, bottom, top), interpolation="nearest")
    speed = np.where(field.valid, field.speed, np.nan)
    if np.isfinite(speed).any():
        vmax = max(float(np.nanpercentile(speed, 99)), 10.0)
        image = ax.imshow(
            np.clip(speed, 1.0, None), cmap="turbo", norm=LogNorm(vmin=max(1.0, vmax / 300), vmax=vmax), alpha=0.6,
            extent=(g_left, g_right, g_bottom, g_top), interpolation="nearest",
        )
        fig.colorbar(image, ax=ax, shrink=0.8, label="speed (m/a)")
        every = max(1, math.ceil(max(speed.shape) / arrows))
        rows, cols = np.mgrid[0 : speed.shape[0] : every, 0 : speed.shape[1] : every]
        xs, ys = field.grid.transform * (cols + 0.5, rows + 0.5)
        u, v = field.vx[::every, ::every], field.vy[::every, ::every]
        keep = np.isfinite(u) & np.isfinite(v)
        ax.quiver(xs[keep], ys[keep], u[keep], v[keep], color="black", angles="xy", width=0.0022,
                  scale=vmax * max(speed.shape) / every * 0.9, scale_units="width")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(f"x (m, {field.grid.crs})")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    fig.savefig(path, format="png")


@dataclass(frozen=True)
class VelocityResult:
    """What a ``glacimap velocity`` run wrote; also printed by the CLI."""

    out_dir: Path
    raster: Path
    quicklook: Path
    summary: Path
    days: float
    points: int
    valid_points: int
    speed_median: float | None
    speed_p95: float | None
    stable: dict[str, Any]

    def headline(self) -> str:
        lines = [
            f"velocity over {self.days:.1f} days: {self.valid_points} of {self.points} points valid",
        ]
        if self.speed_median is not None:
            lines.append(f"speed: median {self.speed_median:.0f} m/a, 95th percentile {self.speed_p95:.0f} m/a")
        if self.stable.get("points"):
            lines.append(
                f"stable ground ({self.stable['source']}, {self.stable['points']} points): speed median "
                f"{self.stable['speed_median']:.1f} m/a, NMAD {self.stable['speed_nmad']:.1f} m/a"
            )
        return "\n".join(lines)


OUTPUT_NAMES = {"raster": "velocity.tif", "quicklook": "velocity.png", "summary": "velocity.json"}
BANDS = ("vx", "vy", "speed", "quality", "valid")


def _interval(a: Acquisition, b: Acquisition, from_date: date | None, to_date: date | None) -> tuple[datetime, datetime]:
    """Acquisition times of A and B: the dates given win over what the files say."""
    times = []
    for acq, given, flag in ((a, from_date, "--from-date"), (b, to_date, "--to-date")):
        if given is not None:
            times.append(datetime(given.year, given.month, given.day, tzinfo=timezone.utc))
        elif acq.when is not None:
            times.append(acq.when)
        else:
            raise InvalidInputError(
                f"{acq.path}: no acquisition date (raster tags, glacimap chip record or *_MTL.txt); give {flag}"
            )
    if times[1] <= times[0]:
        raise InvalidInputError(
            f"image B ({b.path.name}, {times[1].date()}) is not acquired after image A ({a.path.name}, "
            f"{times[0].date()}); swap them or fix --from-date/--to-date"
        )
    return times[0], times[1]


def run_velocity(settings: Any) -> VelocityResult:
    """``glacimap velocity`` on an image pair (file form); see the module docstring."""
    if settings.method != "ncc":
        raise NotImplementedYetError(
            f"velocity --method {settings.method}: not implemented yet: the {settings.method} optical-flow "
            "method is planned; use --method ncc"
        )
    if settings.image_a is None or settings.image_b is None:
        raise NotImplementedYetError(
            "velocity: not implemented yet: the workspace form (--work with --from-date/--to-date, fetching "
            "two acquisitions per glacier); give --image-a, --image-b and --out (chips of glacimap fetch, "
            "WORK/chips/YEAR/ID.tif, work as they are)"
        )
    out_dir = Path(settings.out)
    paths = {key: out_dir / name for key, name in OUTPUT_NAMES.items()}
    if not settings.overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise OutputExistsError(f"{', '.join(existing)} exist; pass --overwrite to replace them")
    a = read_acquisition(settings.image_a, settings.band)
    b = read_acquisition(settings.image_b, settings.band)
    grid, window_a, window_b = common_window(a.grid, b.grid, a.path, b.path)
    data_a, valid_a = a.data[window_a], a.valid[window_a]
    data_b, valid_b = b.data[window_b], b.valid[window_b]
    if not (valid_a & valid_b).any():
        raise InvalidInputError(f"{a.path} and {b.path} have no valid pixels in common")
    start, end = _interval(a, b, settings.from_date, settings.to_date)
    days = (end - start).total_seconds() / 86400.0
    pixel = abs(grid.transform.a)
    max_displacement = settings.max_speed * days / DAYS_PER_YEAR / pixel
    params = TrackingParams(
        template=settings.template, step=settings.step, max_displacement=max_displacement,
        preprocess=settings.preprocess, min_quality=settings.min_quality, median_size=settings.median_size,
        fft_workers=settings.workers or -1,  # scipy.fft: -1 is one thread per core
    )
    stable = glacier = None
    if settings.stable is not None:
        stable = rasterize_geometries(_read_polygons(Path(settings.stable), grid, "stable ground"), grid)
        if not stable.any():
            log.warning("%s: no stable-ground polygon inside the images", settings.stable)
    if settings.inventory is not None:
        outlines = _read_polygons(Path(settings.inventory), grid, "glacier outlines")
        glacier = rasterize_geometries(outlines.buffer(settings.glacier_buffer), grid)
    log.info("tracking %s -> %s (%.1f days, %d x %d px, search up to %.1f px)", a.path.name, b.path.name, days,
             grid.width, grid.height, max_displacement)
    field = velocity_field(
        data_a, data_b, grid, days, params, valid_a, valid_b, stable, glacier, settings.smooth, settings.coregister,
    )
    speeds = field.speed[field.valid]
    stable_report = {"source": field.stable_source, **field.stable, "before_coregistration": field.stable_raw}
    summary = {
        "image_a": str(a.path), "image_b": str(b.path), "band_a": a.band, "band_b": b.band,
        "start": start.isoformat(), "end": end.isoformat(), "days": round(days, 4),
        "method": "ncc", "preprocess": settings.preprocess, "template": settings.template, "step": settings.step,
        "pyramid_levels": field.levels, "max_displacement_px": round(max_displacement, 2),
        "crs": grid.crs, "resolution_m": field.grid.resolution,
        "points": int(field.valid.size), "valid_points": int(field.valid.sum()),
        "speed_median": float(np.median(speeds)) if speeds.size else None,
        "speed_p95": float(np.percentile(speeds, 95)) if speeds.size else None,
        "speed_max": float(np.max(speeds)) if speeds.size else None,
        "coregistration_px": {"dx": field.offset_px[0], "dy": field.offset_px[1]} if field.offset_px else None,
        "stable_ground": stable_report,
        "tracking": field.stats,
    }
    bands = np.stack([field.vx, field.vy, field.speed, field.quality, field.valid.astype(float)]).astype(np.float32)
    tags = {"start": start.isoformat(), "end": end.isoformat(), "days": f"{days:.4f}", "units": "m/a (vx east, vy north)",
            "method": "ncc"}
    title = f"{start.date()} -> {end.date()} ({days:.1f} days): {a.path.stem[:40]} / {b.path.stem[:40]}"
    with atomic_path(paths["raster"]) as tmp_raster, atomic_path(paths["quicklook"]) as tmp_png, \
            atomic_path(paths["summary"]) as tmp_json:
        write_cog(tmp_raster, bands, field.grid, BANDS, nodata=float("nan"), tags=tags)
        quicklook(tmp_png, data_a, grid, field, title)
        tmp_json.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return VelocityResult(
        out_dir=out_dir, raster=paths["raster"], quicklook=paths["quicklook"], summary=paths["summary"], days=days,
        points=summary["points"], valid_points=summary["valid_points"], speed_median=summary["speed_median"],
        speed_p95=summary["speed_p95"], stable=stable_report,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
