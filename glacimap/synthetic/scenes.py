"""Rendering of the synthetic world's scenes and their product encodings.

Everything here is computation on arrays and :class:`~glacimap.rasters.Grid` objects; writing
files and STAC items is done by :mod:`glacimap.synthetic.world` and
:mod:`glacimap.synthetic.catalog`.

The physics is deliberately simple but keeps the effects that make real glacier mapping hard:

- topographic illumination: direct sunlight scaled by ``cos(i) / cos(z)`` (``i`` the local
  incidence angle from the DEM and the sun's position), zero in cast shadows traced along the
  sun's azimuth, plus diffuse skylight scaled by the sky-view factor, so shadowed ice is dark;
- clouds: fractal-noise opacity fields (thick cores with thin margins), optional thin cirrus,
  and cloud shadows displaced from their clouds by ``height * tan(z)`` away from the sun;
- sensor noise, and products encoded exactly like the real ones (Sentinel-2 L2A DN with the
  +1000 offset from processing baseline 04.00, Landsat Collection 2 Level-2 scale/offset,
  SCL and QA_PIXEL masks, Sentinel-1 sigma0 in dB with gamma speckle, Copernicus DEM tiles).

Scenes are rendered once at 10 m on the landscape grid and aggregated (area-weighted means)
onto each product's own lattice: 20 m for Sentinel-2 SWIR and SCL, 30 m with pixel edges at
multiples of 30 m + 15 m for Landsat, 1 arc-second in EPSG:4326 for the DEM.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from affine import Affine
from pyproj import Transformer
from scipy import fft as sfft
from scipy import ndimage, sparse

from glacimap.errors import InvalidInputError
from glacimap.rasters import Grid
from glacimap.synthetic.surfaces import (
    BACKSCATTER_DB,
    CIRRUS_SPECTRUM,
    CLOUD_SPECTRUM,
    DIRECT_FRACTION,
    NOISE_FLOOR_DB,
    OPTICAL_BANDS,
    TEXTURE_AMPLITUDE,
    Surface,
    lookup_table,
    spectrum_table,
)

# -- thresholds shared by the masks, the cloud statistics and the tests ---------------------------
#: Cloud opacity from which a pixel counts as cloud (SCL 8/9, QA cloud bit, eo:cloud_cover).
CLOUD_OPACITY = 0.2
#: Opacity from which a cloud is "high probability" (SCL 9) rather than medium (SCL 8).
THICK_OPACITY = 0.6
#: Cirrus opacity from which a pixel counts as cirrus (SCL 10, QA cirrus bit).
CIRRUS_OPACITY = 0.05
#: Cloud-shadow strength from which a pixel counts as cloud shadow (SCL 3, QA shadow bit).
SHADOW_STRENGTH = 0.3
#: Fraction of a product pixel in cast (topographic) shadow from which it is "dark" (SCL 2).
CAST_SHADOW_FRACTION = 0.5

# -- product encodings -----------------------------------------------------------------------------
#: Sentinel-2 L2A: reflectance = (DN + BOA_ADD_OFFSET) / 10000 with BOA_ADD_OFFSET = -1000 from
#: processing baseline 04.00 (25 January 2022) on; DN 0 is no data.
S2_QUANTIFICATION = 10_000.0
S2_BOA_OFFSET = 1_000
#: Landsat Collection 2 Level-2 surface reflectance: reflectance = DN * 2.75e-5 - 0.2; DN 0 fill.
LANDSAT_SCALE = 0.0000275
LANDSAT_OFFSET = -0.2
#: Sentinel-1 backscatter no-data value (dB rasters are float32).
SAR_NODATA = -9999.0
#: Copernicus DEM void value.
DEM_NODATA = -32767.0

#: Sentinel-2 Scene Classification (SCL) codes used by the world.
SCL_NODATA, SCL_DARK, SCL_CLOUD_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED = 0, 2, 3, 4, 5
SCL_WATER, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 6, 8, 9, 10, 11
SCL_CLOUDS: frozenset[int] = frozenset({SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS})

#: Landsat Collection 2 QA_PIXEL bits.
QA_FILL, QA_DILATED_CLOUD, QA_CIRRUS, QA_CLOUD, QA_CLOUD_SHADOW = 0, 1, 2, 3, 4
QA_SNOW, QA_CLEAR, QA_WATER = 5, 6, 7
#: First bit of each two-bit confidence field (0 none, 1 low, 2 medium, 3 high).
QA_CLOUD_CONFIDENCE, QA_SHADOW_CONFIDENCE, QA_SNOW_CONFIDENCE, QA_CIRRUS_CONFIDENCE = 8, 10, 12, 14
#: Dilation of the Landsat cloud mask (pixels) that sets the "dilated cloud" bit around clouds.
QA_DILATION_PX = 3


# =================================================================================================
# Sun and terrain
# =================================================================================================
@dataclass(frozen=True)
class Sun:
    """Sun position: zenith angle and azimuth (clockwise from north), degrees."""

    zenith: float
    azimuth: float

    @property
    def elevation(self) -> float:
        return 90.0 - self.zenith


def solar_position(when: datetime, lon: float, lat: float) -> Sun:
    """Sun position at a UTC time and place (NOAA's fractional-year formulas, ~0.1 deg)."""
    day = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60.0 + when.second / 3600.0
    days_in_year = 366 if (when.year % 4 == 0 and when.year % 100 != 0) or when.year % 400 == 0 else 365
    g = 2.0 * math.pi / days_in_year * (day - 1 + (hours - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )
    true_solar_minutes = hours * 60.0 + eqtime + 4.0 * lon
    hour_angle = math.radians(true_solar_minutes / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    zenith = math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
    azimuth = math.degrees(
        math.atan2(-math.sin(hour_angle), math.tan(decl) * math.cos(phi) - math.sin(phi) * math.cos(hour_angle))
    )
    return Sun(zenith=zenith, azimuth=azimuth % 360.0)


def terrain_normals(dem: np.ndarray, resolution: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit surface normals (east, north, up components) of a north-up DEM."""
    d_row, d_col = np.gradient(dem.astype(np.float32), resolution)
    dz_dx, dz_dy = d_col, -d_row  # rows grow southwards
    norm = np.sqrt(dz_dx * dz_dx + dz_dy * dz_dy + 1.0)
    return (-dz_dx / norm).astype(np.float32), (-dz_dy / norm).astype(np.float32), (1.0 / norm).astype(np.float32)


def cos_incidence(normals: tuple[np.ndarray, np.ndarray, np.ndarray], zenith: float, azimuth: float) -> np.ndarray:
    """Cosine of the angle between the surface normal and a source at (zenith, azimuth), deg."""
    z, a = math.radians(zenith), math.radians(azimuth)
    nx, ny, nz = normals
    return (nx * (math.sin(z) * math.sin(a)) + ny * (math.sin(z) * math.cos(a)) + nz * math.cos(z)).astype(np.float32)


def cast_shadow(dem: np.ndarray, resolution: float, elevation: float, azimuth: float) -> np.ndarray:
    """Pixels in the cast shadow of the terrain for a source at (elevation, azimuth), deg.

    A ray from the source is swept across the grid one row (or column) at a time along the
    main light direction, carrying the height of the highest ray that has grazed the terrain
    so far; a pixel below that height is in shadow. Linear interpolation handles the oblique
    part of the direction. O(pixels), no rotation of the DEM.
    """
    if elevation <= 0:
        return np.ones(dem.shape, dtype=bool)
    a = math.radians(azimuth)
    # Horizontal travel direction of the light, in (row, col) steps: away from the source.
    d_col, d_row = -math.sin(a), math.cos(a)
    z = dem.astype(np.float64)
    transpose = abs(d_col) > abs(d_row)
    if transpose:
        z, d_row, d_col = z.T, d_col, d_row
    flip_rows = d_row < 0
    if flip_rows:
        z = z[::-1]
    shift = d_col / abs(d_row)  # columns moved per row step
    drop = resolution * math.hypot(1.0, shift) * math.tan(math.radians(elevation))
    k = math.floor(shift)
    f = shift - k
    rows, cols = z.shape
    shadow = np.zeros(z.shape, dtype=bool)
    ray = np.full(cols, -np.inf)
    for r in range(rows):
        # The ray reaching column c comes from column c - shift of the previous row; edges
        # bring -inf (nothing upstream casts a shadow).
        incoming = _shifted(ray, k)
        if f > 0:
            incoming = (1.0 - f) * incoming + f * _shifted(ray, k + 1)
        incoming -= drop
        row = z[r]
        shadow[r] = incoming > row
        ray = np.maximum(incoming, row)
    if flip_rows:
        shadow = shadow[::-1]
    if transpose:
        shadow = shadow.T
    return np.ascontiguousarray(shadow)


def _shifted(values: np.ndarray, k: int) -> np.ndarray:
    """out[c] = values[c - k], -inf where c - k falls outside."""
    out = np.full(values.size, -np.inf)
    n = values.size
    if 0 <= k < n:
        out[k:] = values[: n - k]
    elif -n < k < 0:
        out[: n + k] = values[-k:]
    return out


@dataclass(frozen=True)
class Illumination:
    """Topographic illumination of one scene on the landscape grid."""

    sun: Sun
    cos_i: np.ndarray  # float32 cosine of the local incidence angle (may be negative)
    cast: np.ndarray  # bool: in the terrain's cast shadow
    direct: np.ndarray  # float32 direct-beam factor cos(i)/cos(z), 0 in shadow
    sky_view: np.ndarray  # float32 approximate sky-view factor (1 + cos slope) / 2


def illumination(dem: np.ndarray, resolution: float, normals: tuple[np.ndarray, ...], sun: Sun) -> Illumination:
    """Illumination of the terrain by ``sun`` (direct factor limited to 3 on steep sunny slopes)."""
    cos_i = cos_incidence(normals, sun.zenith, sun.azimuth)
    cast = cast_shadow(dem, resolution, sun.elevation, sun.azimuth)
    direct = np.clip(cos_i, 0.0, None) / max(math.cos(math.radians(sun.zenith)), 0.05)
    direct = np.minimum(direct, 3.0)
    direct[cast] = 0.0
    sky_view = (0.5 * (1.0 + normals[2])).astype(np.float32)
    return Illumination(sun=sun, cos_i=cos_i, cast=cast, direct=direct.astype(np.float32), sky_view=sky_view)


# =================================================================================================
# Noise fields and resampling
# =================================================================================================
def fractal_noise(shape: tuple[int, int], rng: np.random.Generator, beta: float = 3.0, cutoff_px: float | None = None) -> np.ndarray:
    """Standardised (mean 0, std 1) float32 noise with power spectrum ~ 1/f**beta.

    ``cutoff_px`` flattens the spectrum at wavelengths longer than that many pixels, which
    keeps a field from being dominated by one large-scale gradient.
    """
    rows, cols = shape
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = sfft.rfft2(white, workers=1)
    fy = np.fft.fftfreq(rows).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(cols).astype(np.float32)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    floor = 1.0 / cutoff_px if cutoff_px else 1.0 / max(rows, cols)
    f = np.maximum(f, floor)
    spectrum *= f ** (-beta / 2.0)
    field = sfft.irfft2(spectrum, s=shape, workers=1).astype(np.float32)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _overlap_matrix(offset: float, dst_step: float, n_dst: int, src_step: float, n_src: int) -> sparse.csr_matrix:
    """(n_dst, n_src) weights: share of destination cell j covered by source cell i.

    Destination cell j spans [offset + j*dst_step, offset + (j+1)*dst_step] in the source's
    axis coordinate (0 at the source's first edge).
    """
    j = np.arange(n_dst)
    lo = offset + j * dst_step
    hi = lo + dst_step
    first = np.floor(lo / src_step + 1e-9).astype(np.int64)
    rows, cols, vals = [], [], []
    for k in range(int(math.ceil(dst_step / src_step)) + 1):
        i = first + k
        w = (np.minimum(hi, (i + 1) * src_step) - np.maximum(lo, i * src_step)) / dst_step
        keep = (w > 1e-9) & (i >= 0) & (i < n_src)
        rows.append(j[keep])
        cols.append(i[keep])
        vals.append(w[keep])
    return sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=(n_dst, n_src)
    )


def _interp_matrix(positions: np.ndarray, n_src: int) -> sparse.csr_matrix:
    """Linear-interpolation weights at ``positions`` (source pixel units, 0 = first edge)."""
    u = np.clip(positions - 0.5, 0.0, n_src - 1.0)
    i0 = np.minimum(np.floor(u).astype(np.int64), n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    f = (u - i0).astype(np.float32)
    n = positions.size
    rows = np.concatenate([np.arange(n), np.arange(n)])
    return sparse.csr_matrix((np.concatenate([1.0 - f, f]), (rows, np.concatenate([i0, i1]))), shape=(n, n_src))


def _check_same_crs(src: Grid, dst: Grid) -> None:
    if src.crs != dst.crs:
        raise InvalidInputError(f"cannot resample from {src.crs} to {dst.crs} with a separable filter")


def resample_mean(data: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Area-weighted mean of ``data`` (rows, cols) on ``src`` over each pixel of ``dst``.

    Both grids are north-up in the same CRS and ``dst`` lies inside ``src``; pixel edges need
    not be aligned (Landsat's 30 m cells straddle the 10 m cells at half-pixel offsets).
    """
    _check_same_crs(src, dst)
    left, _, _, top = dst.bounds
    cols = _overlap_matrix(left - src.bounds[0], dst.resolution, dst.width, src.resolution, src.width)
    rows = _overlap_matrix(src.bounds[3] - top, dst.resolution, dst.height, src.resolution, src.height)
    partial = rows @ data.astype(np.float32, copy=False)
    return np.asarray((cols @ partial.T).T, dtype=np.float32)


def sample_linear(field: np.ndarray, src: Grid, dst: Grid, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Bilinear samples of ``field`` on ``src`` at the centres of ``dst`` moved by ``-shift``.

    With ``shift = (dx, dy)`` metres, the result at p is the field at p - (dx, dy): what lies
    at p + shift in the output came from p. Used to upsample coarse cloud fields and to
    displace cloud shadows.
    """
    _check_same_crs(src, dst)
    left, _, _, top = dst.bounds
    x = left + (np.arange(dst.width) + 0.5) * dst.resolution - shift[0]
    y = top - (np.arange(dst.height) + 0.5) * dst.resolution - shift[1]
    cols = _interp_matrix((x - src.bounds[0]) / src.resolution, src.width)
    rows = _interp_matrix((src.bounds[3] - y) / src.resolution, src.height)
    partial = rows @ field.astype(np.float32, copy=False)
    return np.asarray((cols @ partial.T).T, dtype=np.float32)


def surface_fractions(surfaces: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """(surface codes, rows, cols) fraction of each :class:`Surface` in every ``dst`` pixel."""
    out = np.zeros((max(Surface) + 1, dst.height, dst.width), dtype=np.float32)
    for surface in Surface:
        mask = surfaces == surface
        if mask.any():
            out[int(surface)] = resample_mean(mask, src, dst)
    return out


def lattice_grid(world: Grid, step: float, origin: float = 0.0) -> Grid:
    """The largest grid of ``step`` pixels with edges at ``origin + k*step`` inside ``world``."""
    left, bottom, right, top = world.bounds
    x0 = math.ceil((left - origin) / step - 1e-9) * step + origin
    x1 = math.floor((right - origin) / step + 1e-9) * step + origin
    y0 = math.ceil((bottom - origin) / step - 1e-9) * step + origin
    y1 = math.floor((top - origin) / step + 1e-9) * step + origin
    width, height = round((x1 - x0) / step), round((y1 - y0) / step)
    if width < 1 or height < 1:
        raise InvalidInputError(f"the world ({world.width} x {world.height} px) is smaller than one {step} m pixel")
    return Grid(world.crs, Affine(step, 0.0, x0, 0.0, -step, y1), height, width)


def subgrid(grid: Grid, row0: int, col0: int, height: int, width: int) -> Grid:
    """The window (row0, col0, height, width) of ``grid`` as a grid of its own."""
    t = grid.transform
    return Grid(grid.crs, Affine(t.a, 0.0, t.c + col0 * t.a, 0.0, t.e, t.f + row0 * t.e), height, width)


def pixel_centres(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """x of the column centres and y of the row centres of a north-up grid."""
    left, _, _, top = grid.bounds
    res = grid.resolution
    return left + (np.arange(grid.width) + 0.5) * res, top - (np.arange(grid.height) + 0.5) * res


# =================================================================================================
# Clouds
# =================================================================================================
def cloud_opacity(noise: np.ndarray, cover: float, where: np.ndarray | None = None, width: float = 0.6) -> np.ndarray:
    """Opacity 0..1 from a standardised noise field: the top ``cover`` share of ``where``
    (all pixels if None) reaches :data:`CLOUD_OPACITY`; opacity grows over ``width`` sigma
    beyond that to a thick core of 1, and fades to a faint haze below it."""
    if cover <= 0:
        return np.zeros(noise.shape, dtype=np.float32)
    sample = noise[where] if where is not None and where.any() else noise
    threshold = float(np.quantile(sample, 1.0 - min(cover, 1.0)))
    return np.clip((noise - threshold) / width + CLOUD_OPACITY, 0.0, 1.0).astype(np.float32)


def shadow_shift(sun: Sun, cloud_height: float) -> tuple[float, float]:
    """Horizontal displacement (dx, dy) metres from a cloud to its shadow."""
    distance = cloud_height * math.tan(math.radians(min(sun.zenith, 80.0)))
    a = math.radians(sun.azimuth)
    return (-distance * math.sin(a), -distance * math.cos(a))


# =================================================================================================
# Optical rendering
# =================================================================================================
class NoisePool:
    """A block of standard-normal noise from which each band of each scene takes a window.

    Drawing fresh Gaussian noise for every band of every scene costs more than the rest of
    the rendering; windows at random offsets of one larger block are as good for sensor
    noise (no structure, no visible repetition) and free.
    """

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator, margin: int = 97) -> None:
        self.shape = shape
        self.margin = margin
        self._block = rng.standard_normal((shape[0] + margin, shape[1] + margin), dtype=np.float32)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        r, c = (int(v) for v in rng.integers(0, self.margin, size=2))
        return self._block[r : r + self.shape[0], c : c + self.shape[1]]


def render_reflectance(
    surfaces: np.ndarray,
    texture: np.ndarray,
    light: Illumination,
    opacity: np.ndarray,
    cirrus: np.ndarray,
    cloud_shadow: np.ndarray,
    rng: np.random.Generator,
    noise_sigma: float = 0.004,
    noise: NoisePool | None = None,
) -> np.ndarray:
    """Surface reflectance (bands, rows, cols) float32 as an L2A product would hold it.

    ``surfaces`` are :class:`Surface` codes, ``texture`` a standardised static noise field
    (albedo variation, scaled per surface by :data:`TEXTURE_AMPLITUDE`), ``opacity`` and
    ``cirrus`` cloud opacities 0..1, ``cloud_shadow`` the displaced opacity (0..1) that blocks
    the direct beam. Per band: ``clear * thin * R(surface) * albedo * (D * direct + (1 - D) *
    sky view) + thin * opacity * R(cloud) + cirrus * R(cirrus) + noise``, with ``clear = 1 -
    opacity`` and ``thin = 1 - cirrus / 2``. No terrain correction is applied, as in the real
    products. ``noise`` (a :class:`NoisePool` of the same shape) avoids drawing new noise.
    """
    table = spectrum_table()
    pool = noise if noise is not None and noise.shape == surfaces.shape else None
    f32 = np.float32
    # albedo = max(1 + amplitude(surface) * clip(texture), 0.3)
    albedo = np.take(lookup_table(TEXTURE_AMPLITUDE), surfaces)
    albedo *= np.clip(texture, -2.5, 2.5)
    albedo += f32(1.0)
    np.maximum(albedo, f32(0.3), out=albedo)
    thin = np.multiply(cirrus, f32(-0.5))
    thin += f32(1.0)
    weight = np.subtract(f32(1.0), opacity)  # clear * thin * albedo
    weight *= thin
    weight *= albedo
    direct = np.multiply(np.clip(cloud_shadow, 0.0, 1.0), f32(-0.85))
    direct += f32(1.0)
    direct *= light.direct
    direct *= weight
    diffuse = np.multiply(light.sky_view, weight)
    cloud = np.multiply(opacity, thin)
    tmp = np.empty(surfaces.shape, dtype=np.float32)
    out = np.empty((len(OPTICAL_BANDS),) + surfaces.shape, dtype=np.float32)
    for b in range(len(OPTICAL_BANDS)):
        band = out[b]
        d = f32(DIRECT_FRACTION[b])
        np.multiply(direct, d, out=band)
        np.multiply(diffuse, f32(1.0) - d, out=tmp)
        band += tmp
        np.take(table[b], surfaces, out=tmp)
        band *= tmp
        np.multiply(cloud, f32(CLOUD_SPECTRUM[b]), out=tmp)
        band += tmp
        np.multiply(cirrus, f32(CIRRUS_SPECTRUM[b]), out=tmp)
        band += tmp
        sample = pool.draw(rng) if pool is not None else rng.standard_normal(surfaces.shape, dtype=np.float32)
        np.multiply(sample, f32(noise_sigma), out=tmp)
        band += tmp
    return out


def s2_has_offset(baseline: str) -> bool:
    """True when a Sentinel-2 processing baseline carries the -1000 BOA offset (>= 04.00)."""
    try:
        return float(baseline) >= 4.0
    except ValueError as exc:
        raise InvalidInputError(f"Sentinel-2 processing baseline {baseline!r} is not like '05.10'") from exc


def encode_s2(reflectance: np.ndarray, baseline: str, valid: np.ndarray) -> np.ndarray:
    """Sentinel-2 L2A DN (uint16): round(reflectance * 10000) (+ 1000 from baseline 04.00), 0 outside ``valid``."""
    offset = S2_BOA_OFFSET if s2_has_offset(baseline) else 0
    dn = np.rint(reflectance * S2_QUANTIFICATION) + offset
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn


def decode_s2(dn: np.ndarray, baseline: str) -> np.ndarray:
    """Reflectance (float32, NaN for no data) from Sentinel-2 L2A DN of a processing baseline."""
    offset = S2_BOA_OFFSET if s2_has_offset(baseline) else 0
    out = (dn.astype(np.float32) - offset) / S2_QUANTIFICATION
    out[dn == 0] = np.nan
    return out


def encode_landsat(reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Landsat C2 L2 surface-reflectance DN (uint16) = (reflectance + 0.2) / 2.75e-5, 0 outside ``valid``."""
    dn = np.clip(np.rint((reflectance - LANDSAT_OFFSET) / LANDSAT_SCALE), 1, 65535).astype(np.uint16)
    dn[~valid] = 0
    return dn


def decode_landsat(dn: np.ndarray) -> np.ndarray:
    """Reflectance (float32, NaN for fill) from Landsat C2 L2 surface-reflectance DN."""
    out = dn.astype(np.float32) * np.float32(LANDSAT_SCALE) + np.float32(LANDSAT_OFFSET)
    out[dn == 0] = np.nan
    return out


@dataclass
class MaskFields:
    """What the scene masks are derived from, on one product grid."""

    valid: np.ndarray  # bool
    fractions: np.ndarray  # (surface codes, rows, cols) share of each surface
    opacity: np.ndarray  # mean cloud opacity
    cirrus: np.ndarray  # mean cirrus opacity
    cloud_shadow: np.ndarray  # mean cloud-shadow strength
    cast: np.ndarray  # share of the pixel in cast (terrain) shadow

    @functools.cached_property
    def majority(self) -> np.ndarray:
        return np.argmax(self.fractions, axis=0).astype(np.uint8)

    @property
    def cloud(self) -> np.ndarray:
        return self.opacity >= CLOUD_OPACITY

    @property
    def cirrus_only(self) -> np.ndarray:
        return (self.cirrus >= CIRRUS_OPACITY) & ~self.cloud

    @property
    def shadowed(self) -> np.ndarray:
        return (self.cloud_shadow >= SHADOW_STRENGTH) & ~self.cloud & ~self.cirrus_only

    @property
    def snow_ice(self) -> np.ndarray:
        """Snow or ice the masks can see: ice in deep terrain shadow is too dark to tell."""
        major = self.majority
        dark = self.cast >= CAST_SHADOW_FRACTION
        snow = (major == Surface.SNOW) | (major == Surface.SEASONAL_SNOW)
        return snow | ((major == Surface.ICE) & ~dark)


def scene_classification(fields: MaskFields) -> np.ndarray:
    """Sentinel-2 SCL (uint8) from truth: clouds, shadows, then the majority surface.

    Rules: 9 opacity >= 0.6; 8 opacity >= 0.2; 10 cirrus; 3 cloud shadow; then 6 water,
    11 snow/ice (ice only outside deep terrain shadow), 2 dark (terrain shadow over ice, rock,
    debris or vegetation), 4 vegetation, 5 everything else (rock and debris); 0 no data.
    """
    major = fields.majority
    dark = fields.cast >= CAST_SHADOW_FRACTION
    scl = np.full(major.shape, SCL_NOT_VEGETATED, dtype=np.uint8)
    scl[major == Surface.VEGETATION] = SCL_VEGETATION
    scl[dark] = SCL_DARK
    scl[fields.snow_ice] = SCL_SNOW
    scl[major == Surface.WATER] = SCL_WATER
    scl[fields.shadowed] = SCL_CLOUD_SHADOW
    scl[fields.cirrus_only] = SCL_CIRRUS
    scl[fields.cloud] = SCL_CLOUD_MEDIUM
    scl[fields.opacity >= THICK_OPACITY] = SCL_CLOUD_HIGH
    scl[~fields.valid] = SCL_NODATA
    return scl


def qa_pixel(fields: MaskFields) -> np.ndarray:
    """Landsat Collection 2 QA_PIXEL (uint16) from truth, with the confidence bit pairs.

    Bits: 0 fill, 1 dilated cloud (a 3-pixel ring around clouds), 2 cirrus, 3 cloud, 4 cloud
    shadow, 5 snow, 6 clear (neither cloud nor dilated cloud), 7 water; confidences (two bits
    each, low = 1, high = 3) for cloud (8), shadow (10), snow/ice (12) and cirrus (14).
    A clear land pixel is 21824, clear water 21952, cloud 22280, fill 1, as in real products.
    """
    cloud = fields.cloud
    dilated = ndimage.binary_dilation(cloud, iterations=QA_DILATION_PX) & ~cloud
    cirrus = (fields.cirrus >= CIRRUS_OPACITY) & ~cloud
    shadow = fields.shadowed
    snow = fields.snow_ice & ~cloud
    water = (fields.majority == Surface.WATER) & ~cloud
    qa = np.zeros(cloud.shape, dtype=np.uint16)

    def put(mask: np.ndarray, value: int) -> None:
        qa[mask] |= np.uint16(value)

    put(dilated, 1 << QA_DILATED_CLOUD)
    put(cirrus, 1 << QA_CIRRUS)
    put(cloud, 1 << QA_CLOUD)
    put(shadow, 1 << QA_CLOUD_SHADOW)
    put(snow, 1 << QA_SNOW)
    put(~cloud & ~dilated, 1 << QA_CLEAR)
    put(water, 1 << QA_WATER)
    put(np.ones_like(cloud), 1 << QA_CLOUD_CONFIDENCE)  # low everywhere...
    put(cloud, 2 << QA_CLOUD_CONFIDENCE)  # ... high (3) on clouds
    put(np.ones_like(cloud), 1 << QA_SHADOW_CONFIDENCE)
    put(shadow, 2 << QA_SHADOW_CONFIDENCE)
    put(np.ones_like(cloud), 1 << QA_SNOW_CONFIDENCE)
    put(snow, 2 << QA_SNOW_CONFIDENCE)
    put(np.ones_like(cloud), 1 << QA_CIRRUS_CONFIDENCE)
    put(cirrus, 2 << QA_CIRRUS_CONFIDENCE)
    qa[~fields.valid] = 1 << QA_FILL
    return qa


# =================================================================================================
# Radar rendering
# =================================================================================================
def render_backscatter(
    surfaces: np.ndarray,
    cos_local: np.ndarray,
    radar_shadow: np.ndarray,
    wet: bool,
    incidence: float,
    rng: np.random.Generator,
    looks: float = 4.4,
) -> np.ndarray:
    """Sentinel-1 sigma0 (2, rows, cols) float32 in dB (VV, VH), map-projected.

    Per-surface backscatter (:data:`BACKSCATTER_DB`, wet or dry snow) is scaled with the
    local incidence angle (slopes facing the radar are brighter, slopes facing away darker),
    radar shadow falls to the noise floor, the noise-equivalent sigma0 is added, and speckle
    is multiplicative gamma noise with ``looks`` equivalent looks. Values are rounded to
    1/128 dB, far below the speckle, which lets them compress.
    """
    state = "wet" if wet else "dry"
    cos_ref = math.cos(math.radians(incidence))
    sin_ref = math.sin(math.radians(incidence))
    cos_loc = np.clip(cos_local, 0.0, 1.0)
    sin_loc = np.sqrt(1.0 - cos_loc * cos_loc)
    # Area and scattering effect of the local slope relative to flat ground at the reference angle.
    terrain = (cos_loc / cos_ref) * (sin_ref / np.maximum(sin_loc, 0.2))
    terrain = np.clip(terrain, 0.05, 8.0)
    out = np.empty((2,) + surfaces.shape, dtype=np.float32)
    for p in range(2):
        table = lookup_table({s: 10.0 ** (BACKSCATTER_DB[s][state][p] / 10.0) for s in Surface})
        floor = 10.0 ** (NOISE_FLOOR_DB[p] / 10.0)
        sigma0 = table[surfaces] * terrain
        sigma0[radar_shadow] = 0.0
        sigma0 = sigma0 + floor
        speckle = rng.gamma(looks, 1.0 / looks, size=surfaces.shape).astype(np.float32)
        db = 10.0 * np.log10(sigma0 * speckle)
        out[p] = np.rint(db * 128.0) / 128.0
    return out


# =================================================================================================
# Copernicus DEM tiles
# =================================================================================================
@dataclass(frozen=True)
class DemTile:
    """One 1-degree tile of the Copernicus-like DEM, clipped to the world."""

    item_id: str
    lon: int  # south-west corner of the 1-degree cell
    lat: int
    grid: Grid  # EPSG:4326 on the tile's arc-second lattice
    data: np.ndarray  # float32 elevation, DEM_NODATA outside the world


def copernicus_tile_id(lon: int, lat: int) -> str:
    """Item id of a Copernicus GLO-30 tile, e.g. ``Copernicus_DSM_COG_10_N47_00_E011_00_DEM``."""
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"Copernicus_DSM_COG_10_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"


def _lon_spacing_factor(lat: int) -> int | float:
    """Copernicus DEM longitude spacing (multiples of 1") by latitude band."""
    band = abs(lat + 0.5)
    for limit, factor in ((50, 1), (60, 1.5), (70, 2), (80, 3), (85, 5)):
        if band < limit:
            return factor
    return 10


def dem_tiles(dem: np.ndarray, grid: Grid) -> list[DemTile]:
    """Resample the landscape DEM into Copernicus-GLO-30-like 1-degree tiles (EPSG:4326).

    The DEM is first smoothed with a 3-pixel box (a 30 m product from a 10 m truth), then
    sampled bilinearly at each tile's pixel centres, which lie on whole arc-seconds as in the
    real product (tile edges half a pixel outside the degree lines). Pixels whose centre is
    outside the landscape are :data:`DEM_NODATA`. Only the part of each tile that covers the
    world is returned.
    """
    smooth = ndimage.uniform_filter(dem.astype(np.float32), size=3, mode="nearest")
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    left, bottom, right, top = grid.bounds
    t = np.linspace(0.0, 1.0, 65)
    xs = np.concatenate([left + (right - left) * t, np.full_like(t, right), right - (right - left) * t, np.full_like(t, left)])
    ys = np.concatenate([np.full_like(t, top), top - (top - bottom) * t, np.full_like(t, bottom), bottom + (top - bottom) * t])
    lons, lats = to_lonlat.transform(xs, ys)
    west, east, south, north = min(lons), max(lons), min(lats), max(lats)
    res = grid.resolution
    tiles = []
    for lat0 in range(math.floor(south), math.floor(north) + 1):
        factor = _lon_spacing_factor(lat0)
        n_lon = round(3600 / factor)
        for lon0 in range(math.floor(west), math.floor(east) + 1):
            dx = factor / 3600.0
            dy = 1.0 / 3600.0
            j0 = max(0, math.ceil((west - lon0) / dx))
            j1 = min(n_lon - 1, math.floor((east - lon0) / dx))
            i0 = max(0, math.ceil((lat0 + 1 - north) / dy))
            i1 = min(3599, math.floor((lat0 + 1 - south) / dy))
            if j1 < j0 or i1 < i0:
                continue
            lon_c = lon0 + np.arange(j0, j1 + 1) * dx
            lat_c = lat0 + 1 - np.arange(i0, i1 + 1) * dy
            lon_g, lat_g = np.meshgrid(lon_c, lat_c)
            x, y = to_utm.transform(lon_g, lat_g)
            col = (x - left) / res - 0.5
            row = (top - y) / res - 0.5
            inside = (col >= 0) & (col <= grid.width - 1) & (row >= 0) & (row <= grid.height - 1)
            if not inside.any():
                continue
            values = ndimage.map_coordinates(smooth, [row.ravel(), col.ravel()], order=1, mode="nearest")
            data = values.reshape(row.shape).astype(np.float32)
            data[~inside] = DEM_NODATA
            transform = Affine(dx, 0.0, lon0 + (j0 - 0.5) * dx, 0.0, -dy, lat0 + 1 - (i0 - 0.5) * dy)
            tile_grid = Grid("EPSG:4326", transform, data.shape[0], data.shape[1])
            tiles.append(DemTile(copernicus_tile_id(lon0, lat0), lon0, lat0, tile_grid, data))
    return tiles
