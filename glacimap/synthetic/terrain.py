"""Synthetic mountain terrain and the flow routing that the glacier model runs on.

The relief is built at a coarse resolution (about 40 m) on a domain somewhat larger than the
world, as a range in erosional steady state: a drainage network is traced on a noise surface,
and elevations are integrated up every flow path from the domain edge with stream-power channel
gradients (steeper on "massifs"), nearly flat trunk valleys and threshold hillslopes, which
gives dendritic valleys and sharp ridges. A second pass levels small valley floors in a band
below the highest terrain (cirques with steep headwalls); all valleys then get U-shaped cross
sections. The world's window, placed where the domain has most high ground, is interpolated to
its grid, given metre-scale texture, shifted to start at :data:`ELEVATION_RANGE`'s lower end
(compressed only if the relief exceeds the range) and sink-filled so that every cell drains to
the grid edge.

Flow routing is D8 (steepest descent) on an epsilon-filled copy of a DEM; flow accumulation
walks the receivers level by level (cells furthest from their outlet first), so one routing
can accumulate any number of weight fields cheaply and always agrees with the receivers that
basins are traced on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import richdem
import scipy.fft
from scipy import ndimage

from glacimap._quiet import quiet_stderr
from glacimap.errors import InvalidInputError
from glacimap.rasters import Grid
from glacimap.synthetic.model import WorldConfig

logger = logging.getLogger(__name__)

#: Lowest and highest elevation of every world, m.
ELEVATION_RANGE: tuple[float, float] = (1500.0, 3950.0)
#: Resolution at which the large-scale relief and its valleys are built, m.
COARSE_RESOLUTION = 40.0
#: Smallest side of the area the relief is generated on (the world is cut from its centre), m.
MIN_DOMAIN_M = 12_000.0
#: Wavelength of the massifs that make some parts of the range higher than others, m.
MASSIF_WAVELENGTH_M = 6_000.0
#: How much steeper (log scale, per unit of massif noise) channels are on the massifs.
MASSIF_STEEPNESS = 0.2
#: Stream-power channel gradients S = CHANNEL_STEEPNESS * A**-CHANNEL_CONCAVITY (A in m2).
CHANNEL_STEEPNESS = 700.0
CHANNEL_CONCAVITY = 0.5
#: Upstream area (km2) from which valleys are trunk valleys with a nearly flat floor.
TRUNK_AREA_KM2 = 6.0
TRUNK_GRADIENT = 0.012
#: Threshold hillslope gradient (tan of about 37 degrees).
HILLSLOPE_GRADIENT = 0.8
#: Upstream area where a valley begins, km2, and the largest upstream area of a cirque, km2.
CHANNEL_AREA_KM2 = 0.1
CIRQUE_AREA_KM2 = 2.0
#: Elevation band (percentiles of the relief) whose small valley floors are levelled to cirques.
CIRQUE_PERCENTILES = (62.0, 80.0)
CIRQUE_FLOOR_GRADIENT_FACTOR = 0.2
#: Curvature of valley walls (z = floor + k * d**2), 1/m: U-shaped cross sections.
VALLEY_WALL_K = 1.0e-3

#: D8 neighbour offsets (row, col), clockwise from north.
D8_OFFSETS: tuple[tuple[int, int], ...] = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))




def fill_sinks(dem: np.ndarray, epsilon: bool = False) -> np.ndarray:
    """Return ``dem`` with every depression filled (richdem priority flood), as float64.

    With ``epsilon`` the filled flats get a minute gradient so that every cell has a strictly
    lower neighbour on its way to the grid edge (what D8 routing needs).
    """
    if dem.ndim != 2:
        raise InvalidInputError(f"DEM must be a 2-D array, got shape {dem.shape}")
    if not np.all(np.isfinite(dem)):
        raise InvalidInputError("DEM has non-finite cells; fill or crop them before routing flow")
    arr = richdem.rdarray(np.ascontiguousarray(dem, dtype=np.float64), no_data=-1.0e30)
    arr.geotransform = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    with quiet_stderr():
        filled = richdem.FillDepressions(arr, epsilon=epsilon, in_place=False)
    return np.asarray(filled, dtype=np.float64)


def breach_sinks(dem: np.ndarray) -> np.ndarray:
    """Return ``dem`` with every depression drained by a carved path (richdem), as float64.

    Unlike filling, breaching keeps flow converging towards each depression's bottom, so a
    drainage network traced on a noisy surface stays dendritic.
    """
    arr = richdem.rdarray(np.ascontiguousarray(dem, dtype=np.float64), no_data=-1.0e30)
    arr.geotransform = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    with quiet_stderr():
        breached = richdem.BreachDepressions(arr, in_place=False)
    return np.asarray(breached, dtype=np.float64)


def d8_receivers(dem: np.ndarray, resolution: float) -> np.ndarray:
    """Flat index of each cell's steepest-descent neighbour; -1 where no neighbour is lower.

    Cells beyond the grid edge are not neighbours, so on a sink-filled DEM the cells without
    a receiver are the grid-edge outlets (and the lowest cells of flats if not epsilon-filled).
    """
    rows, cols = dem.shape
    padded = np.pad(dem.astype(np.float64, copy=False), 1, constant_values=np.inf)
    best = np.zeros(dem.shape, dtype=np.float64)
    direction = np.full(dem.shape, -1, dtype=np.int8)
    for k, (dr, dc) in enumerate(D8_OFFSETS):
        neighbour = padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
        drop = (dem - neighbour) / (resolution * math.hypot(dr, dc))
        steeper = drop > best
        best[steeper] = drop[steeper]
        direction[steeper] = k
    flat_index = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    receivers = np.full(rows * cols, -1, dtype=np.int64)
    for k, (dr, dc) in enumerate(D8_OFFSETS):
        sel = direction == k
        receivers[flat_index[sel].ravel()] = (flat_index + dr * cols + dc)[sel].ravel()
    return receivers


def _steps_to_outlet(receivers: np.ndarray) -> np.ndarray:
    """Number of D8 steps from each cell to its outlet, by pointer doubling."""
    n = receivers.size
    has_rec = receivers >= 0
    jump = np.where(has_rec, receivers, np.arange(n, dtype=np.int64))
    steps = has_rec.astype(np.int64)
    while True:
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            return steps
        steps = steps + steps[jump]
        jump = nxt


@dataclass(frozen=True, eq=False)
class FlowRouting:
    """D8 receivers of a grid and the order in which flow accumulates along them."""

    shape: tuple[int, int]
    receivers: np.ndarray  # int64 (cells,): flat index of the receiver, -1 at outlets
    order: np.ndarray  # int64: cells sorted by decreasing distance to their outlet
    level_starts: np.ndarray  # int64: order[level_starts[i]:level_starts[i+1]] share a distance

    @classmethod
    def from_dem(cls, dem: np.ndarray, resolution: float, breach: bool = False) -> FlowRouting:
        """Route flow on ``dem`` (sink-filled with epsilon inside; ``dem`` is not changed).

        With ``breach`` depressions are breached before the fill, which keeps flow inside
        them converging instead of crossing filled flats in parallel lines.
        """
        if breach:
            dem = breach_sinks(dem)
        receivers = d8_receivers(fill_sinks(dem, epsilon=True), resolution)
        steps = _steps_to_outlet(receivers)
        order = np.argsort(-steps, kind="stable")
        counts = np.bincount(steps, minlength=1)[::-1]
        level_starts = np.concatenate(([0], np.cumsum(counts)))
        return cls(dem.shape, receivers, order, level_starts)

    def accumulate(self, weights: np.ndarray) -> np.ndarray:
        """Sum of ``weights`` over each cell and everything upstream of it (float64)."""
        if weights.shape != self.shape:
            raise InvalidInputError(f"weights of shape {weights.shape} do not match the routing grid {self.shape}")
        acc = weights.astype(np.float64).ravel().copy()
        # The last level holds the outlets (distance 0), which pass nothing on.
        for start, stop in zip(self.level_starts[:-2], self.level_starts[1:-1]):
            cells = self.order[start:stop]
            np.add.at(acc, self.receivers[cells], acc[cells])
        return acc.reshape(self.shape)

    def outlets_within(self, mask: np.ndarray) -> np.ndarray:
        """For each cell of ``mask``, the last cell of ``mask`` on its flow path (-1 elsewhere).

        The path is followed while it stays inside ``mask``; where it first leaves (or ends)
        is the outlet of the cell's basin.
        """
        flat = mask.ravel()
        n = flat.size
        idx = np.arange(n, dtype=np.int64)
        rec = self.receivers
        stays = flat & (rec >= 0)
        stays[stays] = flat[rec[stays]]
        jump = np.where(stays, rec, idx)
        while True:
            nxt = jump[jump]
            if np.array_equal(nxt, jump):
                break
            jump = nxt
        return np.where(flat, jump, -1).reshape(self.shape)


def slope_degrees(dem: np.ndarray, resolution: float) -> np.ndarray:
    """Slope of ``dem`` in degrees (central differences)."""
    gy, gx = np.gradient(dem.astype(np.float64, copy=False), resolution)
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)


def aspect_degrees(dem: np.ndarray, resolution: float) -> np.ndarray:
    """Downslope direction of ``dem`` in degrees clockwise from north (rows run southwards)."""
    gy, gx = np.gradient(dem.astype(np.float64, copy=False), resolution)
    # np.gradient's row axis points south: the downslope vector is (east, north) = (-gx, gy).
    return (np.degrees(np.arctan2(-gx, gy)) % 360.0).astype(np.float32)


def _band_noise(spectrum: np.ndarray, shape: tuple[int, int], spacing: float, wavelength: float) -> np.ndarray:
    """Gaussian noise of unit variance with power in an octave around ``wavelength``."""
    fy = np.fft.fftfreq(shape[0], d=spacing)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=spacing)[None, :]
    freq = np.hypot(fy, fx)
    freq[0, 0] = 1e-12
    band = np.exp(-0.5 * (np.log2(freq * wavelength) / 0.55) ** 2)
    field = scipy.fft.irfft2(spectrum * band, s=shape, workers=-1)
    std = field.std()
    return field / std if std > 0 else field


def _parabolic_envelope(floor: np.ndarray, curvature_px: float, radius: int) -> np.ndarray:
    """min over cells j within ``radius`` of floor[j] + curvature_px * d**2 (separable)."""
    out = floor
    for axis in (0, 1):
        src = out
        out = src.copy()
        for d in range(1, min(radius, src.shape[axis] - 1) + 1):
            rise = curvature_px * d * d
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis] = slice(None, -d)
            hi[axis] = slice(d, None)
            np.minimum(out[tuple(hi)], src[tuple(lo)] + rise, out=out[tuple(hi)])
            np.minimum(out[tuple(lo)], src[tuple(hi)] + rise, out=out[tuple(lo)])
    return out


def _step_lengths(routing: FlowRouting, spacing: float) -> np.ndarray:
    """Length (m) of each cell's step to its receiver; 0 at outlets."""
    cols = routing.shape[1]
    cells = np.arange(routing.receivers.size, dtype=np.int64)
    rec = routing.receivers
    dr = np.where(rec >= 0, rec // cols - cells // cols, 0)
    dc = np.where(rec >= 0, rec % cols - cells % cols, 0)
    return spacing * np.hypot(dr, dc)


def _steady_state_relief(
    routing: FlowRouting,
    spacing: float,
    steepness: np.ndarray,
    hillslope: np.ndarray,
    cirque_band: tuple[float, float] | None,
) -> np.ndarray:
    """Elevation above base level of a range in erosional steady state on ``routing``.

    Channel gradients follow the stream-power law S = ks * A**-theta, capped at the threshold
    ``hillslope`` gradient; elevations are integrated upstream from the outlets (base level 0).
    Within ``cirque_band`` the floors of small valleys are nearly flat (glacial erosion
    levelling cirque floors near the snowline), so headwalls above them steepen.
    """
    area = routing.accumulate(np.full(routing.shape, spacing * spacing)).ravel()
    gradient = np.minimum(steepness.ravel() * area**-CHANNEL_CONCAVITY, hillslope.ravel())
    # Trunk valleys are nearly flat, so the ranges rise from them to similar summit heights
    # instead of forming one dome around the longest flow paths.
    gradient = np.where(area >= TRUNK_AREA_KM2 * 1e6, np.minimum(gradient, TRUNK_GRADIENT), gradient)
    cirque_floor = (area >= CHANNEL_AREA_KM2 * 1e6) & (area <= CIRQUE_AREA_KM2 * 1e6)
    step = _step_lengths(routing, spacing)
    rec = routing.receivers
    z = np.zeros(area.size)
    starts = routing.level_starts
    for level in range(len(starts) - 2, 0, -1):  # outlets (the last level) stay at 0
        cells = routing.order[starts[level - 1] : starts[level]]
        below = z[rec[cells]]
        rise = step[cells] * gradient[cells]
        if cirque_band is not None:
            flat = cirque_floor[cells] & (below > cirque_band[0]) & (below < cirque_band[1])
            rise = np.where(flat, rise * CIRQUE_FLOOR_GRADIENT_FACTOR, rise)
        z[cells] = below + rise
    return z.reshape(routing.shape)


def _eroded_relief(shape: tuple[int, int], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Elevation above base level (m) of an eroded range with U-shaped valleys and cirques."""
    spectrum = scipy.fft.rfft2(rng.standard_normal(shape), workers=-1)
    broad = (
        _band_noise(spectrum, shape, spacing, 4.0 * MASSIF_WAVELENGTH_M)
        + 0.6 * _band_noise(spectrum, shape, spacing, 2.0 * MASSIF_WAVELENGTH_M)
        + 0.35 * _band_noise(spectrum, shape, spacing, MASSIF_WAVELENGTH_M)
    )
    rows, cols = shape
    from_row_edge = np.minimum(np.arange(rows), np.arange(rows)[::-1])
    from_col_edge = np.minimum(np.arange(cols), np.arange(cols)[::-1])
    dome = np.sqrt(np.minimum.outer(from_row_edge, from_col_edge) * spacing / 1000.0)
    # Any surface draining outwards seeds the network; its elevations are then replaced.
    ridges = _band_noise(spectrum, shape, spacing, MASSIF_WAVELENGTH_M / 4.0)
    seed_surface = 300.0 * dome + 150.0 * broad + 60.0 * ridges
    steepness = CHANNEL_STEEPNESS * np.exp(MASSIF_STEEPNESS * broad)
    hillslope = HILLSLOPE_GRADIENT * (1.0 + 0.12 * _band_noise(spectrum, shape, spacing, MASSIF_WAVELENGTH_M / 8.0))
    jitter = _band_noise(spectrum, shape, spacing, 4.0 * spacing)
    routing = FlowRouting.from_dem(seed_surface, spacing, breach=True)
    z = _steady_state_relief(routing, spacing, steepness, hillslope, None)
    band = tuple(float(v) for v in np.percentile(z, CIRQUE_PERCENTILES))
    routing = FlowRouting.from_dem(z + 2.0 * jitter, spacing)
    z = _steady_state_relief(routing, spacing, steepness, hillslope, band)  # type: ignore[arg-type]
    # Glaciated valleys: U-shaped cross sections around every channel.
    area = routing.accumulate(np.full(shape, spacing * spacing / 1e6))
    floor = np.where(area >= CHANNEL_AREA_KM2, z, np.inf)
    radius = int(math.ceil(math.sqrt(z.max() / VALLEY_WALL_K) / spacing))
    valleys = _parabolic_envelope(floor, VALLEY_WALL_K * spacing**2, radius)
    return np.minimum(z, valleys)


def _fine_texture(shape: tuple[int, int], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Small-scale roughness (unit variance) with wavelengths of about 40 to 320 m."""
    spectrum = scipy.fft.rfft2(rng.standard_normal(shape).astype(np.float32), workers=-1)
    texture = np.zeros(shape, dtype=np.float64)
    for wavelength, amplitude in ((320.0, 1.0), (160.0, 0.6), (80.0, 0.35), (40.0, 0.2)):
        if wavelength >= 3.0 * spacing:
            texture += amplitude * _band_noise(spectrum, shape, spacing, wavelength)
    return texture


def _highest_window(z: np.ndarray, rows: int, cols: int) -> tuple[int, int]:
    """Top-left corner of the ``rows`` x ``cols`` window of ``z`` holding most high ground."""
    high = np.clip(z - np.percentile(z, 80.0), 0.0, None)
    mean = ndimage.uniform_filter(high, size=(rows, cols), mode="constant")
    # uniform_filter centres the window on each cell; keep the windows inside the domain.
    r_lo, c_lo = rows // 2, cols // 2
    valid = mean[r_lo : z.shape[0] - rows + r_lo + 1, c_lo : z.shape[1] - cols + c_lo + 1]
    r0, c0 = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(r0), int(c0)


def make_dem(config: WorldConfig, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Sink-filled mountain DEM (float32, m) on ``grid``, deterministic for a given ``rng`` state.

    Elevations start at the lower end of :data:`ELEVATION_RANGE` and stay within it; ridges,
    cirques and U-shaped valleys come from the coarse relief, texture of a few metres from a
    fine noise field. ``grid`` must have ``config.resolution``.
    """
    res = grid.resolution
    if not math.isclose(res, config.resolution):
        raise InvalidInputError(f"grid resolution {res} m differs from the world's {config.resolution} m")
    if not res > 0 or grid.height < 8 or grid.width < 8:
        raise InvalidInputError(f"grid of {grid.height} x {grid.width} cells at {res} m is too small for a world")
    factor = max(1, int(round(COARSE_RESOLUTION / res)))
    spacing = res * factor
    world_rows = math.ceil(grid.height / factor) + 3
    world_cols = math.ceil(grid.width / factor) + 3
    domain = max(MIN_DOMAIN_M, 1.3 * max(grid.height, grid.width) * res)
    rows = max(world_rows + 8, math.ceil(domain / spacing))
    cols = max(world_cols + 8, math.ceil(domain / spacing))
    z = _eroded_relief((rows, cols), spacing, rng)
    # Cut the world's window (with a one-cell margin for interpolation) where the domain has
    # most high ground, so that the glaciers lie inside the world rather than on its edges.
    r0, c0 = _highest_window(z, world_rows, world_cols)
    window = z[r0 : r0 + world_rows, c0 : c0 + world_cols]
    fine = ndimage.zoom(window, factor, order=3, mode="nearest", grid_mode=True)
    off = factor  # drop the first coarse cell of margin
    fine = fine[off : off + grid.height, off : off + grid.width]
    slope = np.clip(slope_degrees(fine, res) / 45.0, 0.2, 1.5)
    fine = fine + 6.0 * slope * _fine_texture(fine.shape, res, rng)
    zmin, zmax = float(fine.min()), float(fine.max())
    # Keep the eroded slopes; compress the relief only where it exceeds the elevation range.
    scale = min(1.0, (ELEVATION_RANGE[1] - ELEVATION_RANGE[0]) / max(zmax - zmin, 1.0))
    fine = ELEVATION_RANGE[0] + (fine - zmin) * scale
    dem = fill_sinks(fine).astype(np.float32)
    logger.debug("DEM %s: %.0f-%.0f m", dem.shape, dem.min(), dem.max())
    return dem
