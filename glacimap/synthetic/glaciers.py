"""Glaciers of the synthetic world: a mass-balance rule on the terrain, year by year.

For an equilibrium-line altitude (ELA) every cell gets a surface mass balance ``b(z)``
(linear in ``z - ELA``, steeper below the ELA, capped); the balance accumulates down the DEM's
D8 flow paths into an ice flux. Ice covers the accumulation area (above the ELA, except rock
walls steeper than :data:`MAX_ICE_SLOPE_DEG` and crests narrower than
:data:`MIN_FIRN_WIDTH_M`), the slopes below it that flux still reaches, and a tongue around
every flow path carrying more than :data:`MIN_TONGUE_FLUX`, as wide as
``TONGUE_WIDTH_COEF * sqrt(flux)`` and not climbing the valley walls. The mask is smoothed so
that outlines follow the terrain, not the pixel grid.

Glaciers are drainage basins of the first year's ice: each ice cell belongs to the outlet
where its flow path leaves the ice; basins smaller than :data:`MERGE_BASIN_KM2` merge into the
neighbour they share the longest border with. Glaciers sharing a border form a complex, and
those borders are the true ice divides.

The first year's ELA is calibrated so that :data:`TARGET_GLACIERISED_FRACTION` of the world is
ice (more, up to :data:`MAX_GLACIERISED_FRACTION`, if the world would otherwise lack
:data:`MIN_GLACIERS` glaciers or a complex); each later ELA so that the regional area shrinks
by ``config.loss_rate`` per year (relative to the previous truth year). Later ice is always a
subset of earlier ice and keeps its glacier index; pieces and glaciers that become too small
disappear.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pyproj import Transformer
from scipy import ndimage

from glacimap.errors import ConfigError
from glacimap.rasters import Grid, utm_crs
from glacimap.synthetic.model import INVENTORY_YEAR, GlacierInfo, Landscape, WorldConfig, YearTruth
from glacimap.synthetic.terrain import FlowRouting, make_dem, slope_degrees

logger = logging.getLogger(__name__)

#: Mass-balance gradients above and below the ELA, m w.e. per m, and the balance caps, m w.e./a.
ACCUMULATION_GRADIENT = 0.005
ABLATION_GRADIENT = 0.009
MAX_BALANCE = 2.0
MIN_BALANCE = -12.0
#: Half width of a tongue = TONGUE_WIDTH_COEF * sqrt(ice flux in m3/a), at most TONGUE_WIDTH_MAX_M.
TONGUE_WIDTH_COEF = 0.25
TONGUE_WIDTH_MAX_M = 600.0
#: Flux below which a flow path below the ELA carries no tongue of its own, m3/a.
MIN_TONGUE_FLUX = 20_000.0
#: Tongue ice may rise above its flow path by this fraction of its half width (+ 10 m).
TONGUE_WALL_FRACTION = 0.3
#: Accumulation-area cells steeper than this are rock walls.
MAX_ICE_SLOPE_DEG = 48.0
#: Accumulation areas (ridge crests, ledges) narrower than this carry no ice, m.
MIN_FIRN_WIDTH_M = 70.0
#: Scale of the smoothing applied to ice masks, m.
SMOOTHING_SIGMA_M = 20.0
#: Smallest glacier (RGI's threshold; ice bodies start at twice that in the first year, below
#: which they are snow patches), smallest basin kept apart inside a complex, and the smallest
#: fragment of a glacier kept in later years, km2.
MIN_GLACIER_KM2 = 0.01
FIRST_YEAR_MIN_GLACIER_KM2 = 0.02
MERGE_BASIN_KM2 = 0.1
MIN_FRAGMENT_KM2 = 0.002
#: Holes in the ice smaller than this are filled, km2.
MAX_HOLE_KM2 = 0.01
#: Share of the world covered by ice in the first year, and how far it may grow for a world to
#: hold at least MIN_GLACIERS glaciers and a complex of two.
TARGET_GLACIERISED_FRACTION = 0.17
MAX_GLACIERISED_FRACTION = 0.26
MIN_GLACIERS = 5
#: Debris: share of glaciers larger than DEBRIS_MIN_AREA_KM2 with a debris-covered tongue, and
#: how far below the ELA their debris starts (range, m).
DEBRIS_SHARE = 0.4
DEBRIS_MIN_AREA_KM2 = 0.5
DEBRIS_BELOW_ELA_M = (250.0, 350.0)
#: Proglacial lakes: one per this many glaciers (at least one, at most MAX_LAKES), radius range, m, and
#: the height of the elevation band around the lake centre that is flattened to lake level, m.
GLACIERS_PER_LAKE = 20
MAX_LAKES = 8
LAKE_RADIUS_M = (50.0, 130.0)
LAKE_BAND_M = 20.0
LAKE_MIN_CELLS = 8
LAKE_MIN_FILL = 0.4
#: Calibration tolerances: first-year ice area (relative) and later area loss (relative).
CALIBRATION_RTOL = 0.01
CALIBRATION_LOSS_RTOL = 0.05


@dataclass(frozen=True, eq=False)
class IceModel:
    """The mass-balance ice model of one terrain: :meth:`raw_ice` gives the ice mask for an ELA."""

    dem: np.ndarray  # float64, sink-filled
    resolution: float
    routing: FlowRouting
    rock: np.ndarray  # bool: too steep for ice in the accumulation area
    opening: np.ndarray  # bool disk: accumulation areas narrower than it are not ice

    @classmethod
    def from_dem(cls, dem: np.ndarray, resolution: float) -> IceModel:
        dem = dem.astype(np.float64)
        smooth = ndimage.gaussian_filter(dem, sigma=max(1.0, 30.0 / resolution))
        rock = slope_degrees(smooth, resolution) > MAX_ICE_SLOPE_DEG
        radius = max(1, round(MIN_FIRN_WIDTH_M / 2.0 / resolution))
        y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        disk = x * x + y * y <= radius * radius + radius
        return cls(dem, resolution, FlowRouting.from_dem(dem, resolution), rock, disk)

    @property
    def cell_km2(self) -> float:
        return self.resolution * self.resolution / 1e6

    def balance(self, ela: float) -> np.ndarray:
        """Surface mass balance (m w.e./a) of every cell."""
        dz = self.dem - ela
        return np.where(
            dz >= 0.0,
            np.minimum(ACCUMULATION_GRADIENT * dz, MAX_BALANCE),
            np.maximum(ABLATION_GRADIENT * dz, MIN_BALANCE),
        )

    def raw_ice(self, ela: float) -> np.ndarray:
        """Ice mask for ``ela`` before cleaning: accumulation area plus flux-fed tongues."""
        z = self.dem
        flux = self.routing.accumulate(self.balance(ela) * self.resolution**2)
        # Above the ELA ice everywhere but on rock walls and narrow crests (the opening); below
        # it wherever flux still arrives (single flow lines vanish in the smoothing, sheets on
        # open slopes stay).
        accumulation = ndimage.binary_opening((z >= ela) & ~self.rock, structure=self.opening)
        ice = accumulation | ((z < ela) & (flux > 0.0))
        paths = (z < ela) & (flux > MIN_TONGUE_FLUX)
        if paths.any():
            dist, (ir, ic) = ndimage.distance_transform_edt(~paths, sampling=self.resolution, return_indices=True)
            half_width = np.minimum(TONGUE_WIDTH_COEF * np.sqrt(np.maximum(flux[ir, ic], 0.0)), TONGUE_WIDTH_MAX_M)
            rise = z - z[ir, ic]
            ice |= (dist <= half_width) & (rise <= TONGUE_WALL_FRACTION * half_width + 10.0)
        sigma = SMOOTHING_SIGMA_M / self.resolution
        return ndimage.gaussian_filter(ice.astype(np.float32), sigma=sigma) > 0.5

    def first_ice(self, ela: float) -> np.ndarray:
        """Ice of the first year: small holes filled, bodies below FIRST_YEAR_MIN_GLACIER_KM2 dropped."""
        ice = self.raw_ice(ela)
        ice = _fill_small_holes(ice, int(MAX_HOLE_KM2 / self.cell_km2))
        return _drop_small_components(ice, math.ceil(FIRST_YEAR_MIN_GLACIER_KM2 / self.cell_km2))


def _fill_small_holes(mask: np.ndarray, max_cells: int) -> np.ndarray:
    holes, count = ndimage.label(~mask)
    if count == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    border = np.unique(np.concatenate((holes[0], holes[-1], holes[:, 0], holes[:, -1])))
    fill = sizes <= max_cells
    fill[0] = False
    fill[border] = False
    return mask | fill[holes]


def _drop_small_components(mask: np.ndarray, min_cells: int) -> np.ndarray:
    parts, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    keep = np.bincount(parts.ravel()) >= min_cells
    keep[0] = False
    return keep[parts]


def shared_borders(labels: np.ndarray, diagonal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b), a < b, of labels > 0 sharing pixel edges, and the number of edges.

    With ``diagonal``, cells touching at a corner count as a contact too.
    """
    pairs = []
    neighbours = [(labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])]
    if diagonal:
        neighbours += [(labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1])]
    for a, b in neighbours:
        sel = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[sel], b[sel]).astype(np.int64)
        hi = np.maximum(a[sel], b[sel]).astype(np.int64)
        pairs.append(np.stack((lo, hi), axis=1))
    both = np.concatenate(pairs)
    if both.size == 0:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.int64)
    unique, counts = np.unique(both, axis=0, return_counts=True)
    return unique, counts


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return i


def _union_roots(n: int, pairs: np.ndarray) -> np.ndarray:
    """Root of every node 0..n-1 after joining ``pairs`` (union-find)."""
    parent = np.arange(n, dtype=np.int64)
    for a, b in pairs:
        ra, rb = _find(parent, int(a)), _find(parent, int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([_find(parent, i) for i in range(n)], dtype=np.int64)


def _contact_lengths(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label pairs in contact and a contact strength: shared edges first, corners break ties.

    A pair touching only at corners still counts (weakly), so that no basin is left alone
    because its only contact is diagonal.
    """
    edges, edge_counts = shared_borders(labels)
    contacts, contact_counts = shared_borders(labels, diagonal=True)
    n = int(labels.max()) + 1
    strength = dict(zip((contacts[:, 0] * n + contacts[:, 1]).tolist(), contact_counts.tolist()))
    for code, count in zip((edges[:, 0] * n + edges[:, 1]).tolist(), edge_counts.tolist()):
        strength[code] += 1_000_000 * count
    codes = np.array(list(strength), dtype=np.int64)
    pairs = np.stack((codes // n, codes % n), axis=1) if codes.size else np.empty((0, 2), dtype=np.int64)
    return pairs, np.array(list(strength.values()), dtype=np.int64)


def merge_small_basins(labels: np.ndarray, min_cells: int) -> np.ndarray:
    """Merge basins smaller than ``min_cells`` into the neighbour with the longest shared border.

    Repeats until no small basin touches another; small basins with no neighbour stay (a
    genuinely small glacier). A merged group keeps the label of its largest member.
    """
    labels = labels.copy()
    while True:
        sizes = np.bincount(labels.ravel())
        pairs, strength = _contact_lengths(labels)
        if pairs.size == 0:
            return labels
        # Each small label's best neighbour: longest border, then the larger neighbour.
        src = np.concatenate((pairs[:, 0], pairs[:, 1]))
        dst = np.concatenate((pairs[:, 1], pairs[:, 0]))
        length = np.concatenate((strength, strength))
        small = sizes[src] < min_cells
        if not small.any():
            return labels
        src, dst, length = src[small], dst[small], length[small]
        order = np.lexsort((dst, -sizes[dst], -length, src))
        src, dst = src[order], dst[order]
        first = np.ones(src.size, dtype=bool)
        first[1:] = src[1:] != src[:-1]
        roots = _union_roots(sizes.size, np.stack((src[first], dst[first]), axis=1))
        best = np.arange(sizes.size)
        group_size: dict[int, int] = {}
        for label in np.unique(labels):
            root = int(roots[label])
            if sizes[label] > group_size.get(root, -1):
                group_size[root] = int(sizes[label])
                best[root] = label
        labels = best[roots][labels]


def _fragment_sizes(labels: np.ndarray) -> np.ndarray:
    """For every cell, the size (cells) of the connected piece of its glacier it lies in."""
    parts, _ = ndimage.label(labels > 0, structure=np.ones((3, 3), dtype=bool))
    on = labels > 0
    key = parts[on].astype(np.int64) * (int(labels.max()) + 1) + labels[on]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    sizes = np.zeros(labels.shape, dtype=np.int64)
    sizes[on] = counts[inverse]
    return sizes


def clean_later_year(labels: np.ndarray, cell_km2: float) -> np.ndarray:
    """Drop pieces of glaciers below MIN_FRAGMENT_KM2 and glaciers below MIN_GLACIER_KM2."""
    if not labels.any():
        return labels
    labels = np.where(_fragment_sizes(labels) >= MIN_FRAGMENT_KM2 / cell_km2, labels, 0)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= MIN_GLACIER_KM2 / cell_km2
    keep[0] = False
    return np.where(keep[labels], labels, 0).astype(labels.dtype)


def _calibrate(
    area_of: Callable[[float], float],
    target: float,
    tol: float,
    guess: float,
    step: float,
    limits: tuple[float, float],
    known: tuple[float, float] | None = None,
) -> float:
    """ELA at which the decreasing function ``area_of`` is ``target`` within ``tol``.

    Steps from ``guess`` until the target is bracketed (``known`` is an (ELA, area) pair
    already evaluated), then refines by the Illinois variant of false position: a handful of
    evaluations, each one ice mask.
    """
    lo_limit, hi_limit = limits
    a = min(max(guess, lo_limit), hi_limit)
    fa = area_of(a) - target
    if abs(fa) <= tol:
        return a
    direction = 1.0 if fa > 0 else -1.0  # too much ice: raise the ELA
    b, fb = a, fa
    if known is not None and (known[1] - target) * fa < 0:
        b, fb = known[0], known[1] - target
    while fb * fa > 0 or b == a:
        if (direction > 0 and b >= hi_limit) or (direction < 0 and b <= lo_limit):
            raise ConfigError(
                f"no ELA between {lo_limit:.0f} and {hi_limit:.0f} m gives {target:.4g} km2 of ice; "
                "choose another seed, world size or loss rate"
            )
        a, fa = b, fb
        b = min(max(a + direction * step, lo_limit), hi_limit)
        step *= 1.5
        fb = area_of(b) - target
        if abs(fb) <= tol:
            return b
    for _ in range(40):
        c = b - fb * (b - a) / (fb - fa)
        fc = area_of(c) - target
        if abs(fc) <= tol or abs(b - a) < 0.01:
            return c
        if fc * fb < 0:
            a, fa = b, fb
        else:
            fa /= 2.0
        b, fb = c, fc
    return b


def world_grid(config: WorldConfig) -> Grid:
    """The world's grid: a ``size_m`` square on the local UTM zone's lattice around the centre."""
    if not config.resolution > 0 or config.size_m < 40 * config.resolution:
        raise ConfigError(
            f"world of {config.size_m} m at {config.resolution} m resolution is too small; "
            "use at least 40 cells per side"
        )
    crs = utm_crs(config.centre_lon, config.centre_lat)
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(config.centre_lon, config.centre_lat)
    res = config.resolution
    cells = round(config.size_m / res)
    left = math.floor((x - cells * res / 2.0) / res) * res
    bottom = math.floor((y - cells * res / 2.0) / res) * res
    return Grid.from_bounds((left, bottom, left + cells * res, bottom + cells * res), crs, res)


def _check_config(config: WorldConfig) -> list[int]:
    years = sorted(config.years)
    if not years or len(set(years)) != len(years):
        raise ConfigError(f"world years must be distinct and non-empty, got {config.years!r}")
    if not 0.0 <= config.loss_rate < 0.1:
        raise ConfigError(f"loss_rate must be a yearly fraction in [0, 0.1), got {config.loss_rate!r}")
    return years


def _order_glaciers(basins: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, int]:
    """Map basin labels to indexes 1..n by decreasing area in the reference year (0 stays 0)."""
    labels = np.unique(basins[basins > 0])
    ref_area = np.bincount(reference.ravel(), minlength=int(basins.max()) + 1)[labels]
    first_area = np.bincount(basins.ravel(), minlength=int(basins.max()) + 1)[labels]
    # Ties (e.g. glaciers gone in the reference year) fall back on first-year area, then label.
    order = np.lexsort((labels, -first_area, -ref_area))
    mapping = np.zeros(int(basins.max()) + 1, dtype=np.int32)
    mapping[labels[order]] = np.arange(1, labels.size + 1, dtype=np.int32)
    return mapping, int(labels.size)


def _complexes(labels: np.ndarray, count: int) -> list[str]:
    """Complex id of glaciers 1..count: glaciers sharing a border share a complex."""
    pairs, _ = shared_borders(labels)
    roots = _union_roots(count + 1, pairs)
    names: dict[int, str] = {}
    result = []
    for index in range(1, count + 1):
        root = int(roots[index])
        if root not in names:
            names[root] = f"CPX-{len(names) + 1:04d}"
        result.append(names[root])
    return result


def _debris(
    model: IceModel, labels: dict[int, np.ndarray], elas: dict[int, float], rng: np.random.Generator
) -> dict[int, np.ndarray]:
    """Debris-covered lower tongues of some larger valley glaciers, per year."""
    first = min(labels)
    base = labels[first]
    z = model.dem
    area_km2 = np.bincount(base.ravel()) * model.cell_km2
    large = np.flatnonzero(area_km2 >= DEBRIS_MIN_AREA_KM2)
    large = large[large > 0]
    if large.size == 0:
        return {year: np.zeros(base.shape, dtype=bool) for year in labels}
    low_cells = np.bincount(base[z < elas[first] - DEBRIS_BELOW_ELA_M[0]], minlength=area_km2.size)
    candidates = large[low_cells[large] * model.cell_km2 >= 0.02]
    count = min(candidates.size, max(1, round(DEBRIS_SHARE * large.size))) if candidates.size else 0
    chosen = np.sort(rng.choice(candidates, size=count, replace=False)) if count else np.empty(0, dtype=np.int64)
    offsets = np.zeros(area_km2.size)
    offsets[chosen] = rng.uniform(*DEBRIS_BELOW_ELA_M, size=chosen.size)
    wobble = ndimage.gaussian_filter(rng.standard_normal(base.shape), sigma=100.0 / model.resolution)
    wobble *= 30.0 / max(float(wobble.std()), 1e-9)
    on_chosen = np.zeros(area_km2.size, dtype=bool)
    on_chosen[chosen] = True
    out = {}
    for year, lab in labels.items():
        threshold = elas[year] - offsets[lab] + wobble
        out[year] = on_chosen[lab] & (z < threshold)
    return out


def _lakes(
    model: IceModel, labels: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Proglacial lakes in front of some termini (off the first year's ice), and their levels.

    Each lake is centred on the flattest cell within 300 m downstream of a glacier's main
    outlet (beyond a 2-cell gap to the ice), and covers the cells within its radius that are
    connected to that centre and lie in a :data:`LAKE_BAND_M` band around its elevation.
    """
    rows, cols = labels.shape
    z = model.dem
    ice = labels > 0
    keep_off = ndimage.binary_dilation(ice, iterations=2)
    slope = slope_degrees(ndimage.gaussian_filter(z, 3.0), model.resolution).ravel()
    outlets = model.routing.outlets_within(ice).ravel()
    upstream = model.routing.accumulate(np.ones(z.shape)).ravel()
    lakes = np.zeros(labels.shape, dtype=bool)
    level = np.full(labels.shape, np.nan)
    levels: list[float] = []
    wanted = min(MAX_LAKES, max(1, count // GLACIERS_PER_LAKE))
    flat_labels = labels.ravel()
    # Main outlet of each glacier: the ice outlet cell draining most of it.
    outlet_cells = np.unique(outlets[outlets >= 0])
    glacier_of_outlet = flat_labels[outlet_cells]
    sizes = np.bincount(flat_labels, minlength=count + 1)
    candidates = []
    for g in rng.permutation(np.arange(1, count + 1)):
        mine = outlet_cells[glacier_of_outlet == g]
        if mine.size == 0 or sizes[g] * model.cell_km2 < 0.1:
            continue
        candidates.append((int(g), int(mine[np.argmax(upstream[mine])])))
    radius_px_max = int(math.ceil(LAKE_RADIUS_M[1] / model.resolution))
    for _g, outlet in candidates:
        if len(levels) >= wanted:
            break
        # Walk downstream off the ice, then pick the flattest cell on the next 300 m of path.
        path = []
        cell = outlet
        for _ in range(int(400 / model.resolution) + 10):
            cell = int(model.routing.receivers[cell])
            if cell < 0:
                break
            path.append(cell)
        path = [c for c in path if not keep_off.ravel()[c]][: int(300 / model.resolution)]
        if len(path) < 3:
            continue
        centre = path[int(np.argmin(slope[path]))]
        r, c = divmod(centre, cols)
        radius = rng.uniform(*LAKE_RADIUS_M) / model.resolution
        if not (radius_px_max <= r < rows - radius_px_max and radius_px_max <= c < cols - radius_px_max):
            continue
        r0, r1, c0, c1 = r - radius_px_max, r + radius_px_max + 1, c - radius_px_max, c + radius_px_max + 1
        yy, xx = np.mgrid[r0:r1, c0:c1]
        zc = float(z[r, c])
        window = ((yy - r) ** 2 + (xx - c) ** 2 <= radius**2) & (np.abs(z[r0:r1, c0:c1] - zc) <= LAKE_BAND_M / 2.0)
        window &= ~keep_off[r0:r1, c0:c1] & ~ndimage.binary_dilation(lakes[r0:r1, c0:c1], iterations=3)
        parts, _ = ndimage.label(window)
        seed = parts[r - r0, c - c0]
        if seed == 0:
            continue
        lake = parts == seed
        # A lake fills a good part of its circle; slivers along a slope are not lakes.
        if lake.sum() < max(LAKE_MIN_CELLS, LAKE_MIN_FILL * math.pi * radius**2):
            continue
        # The lake's level is its lowest cell: lowering never creates a sink, the lake spills
        # where its lowest cell drained before.
        surface = float(z[r0:r1, c0:c1][lake].min())
        lakes[r0:r1, c0:c1] |= lake
        levels.append(surface)
        level[r0:r1, c0:c1][lake] = surface
    logger.debug("%d proglacial lakes at %s m", len(levels), [round(v) for v in levels])
    return lakes, level


def _basins(model: IceModel, ice: np.ndarray) -> np.ndarray:
    """Glaciers of an ice mask: outlet basins, the small ones merged (labels, 0 off ice)."""
    outlets = model.routing.outlets_within(ice)
    _, basins = np.unique(np.where(ice, outlets + 1, 0), return_inverse=True)
    return merge_small_basins(basins.reshape(ice.shape).astype(np.int64), math.ceil(MERGE_BASIN_KM2 / model.cell_km2))


def _first_year(model: IceModel) -> tuple[float, np.ndarray]:
    """ELA and glacier basins of the first year.

    The ELA gives :data:`TARGET_GLACIERISED_FRACTION` of ice; a world that would then lack
    :data:`MIN_GLACIERS` glaciers or a complex of two gets more ice (up to
    :data:`MAX_GLACIERISED_FRACTION`): every world must exercise ice-divide splitting.
    """
    world_km2 = model.dem.size * model.cell_km2
    limits = (float(model.dem.min()), float(model.dem.max()))
    fraction = TARGET_GLACIERISED_FRACTION
    while True:
        target = fraction * world_km2
        guess = float(np.percentile(model.dem, 100.0 * (1.0 - fraction / 1.6)))
        ela = _calibrate(
            lambda e: float(model.first_ice(e).sum()) * model.cell_km2,
            target,
            CALIBRATION_RTOL * target,
            guess,
            60.0,
            limits,
        )
        basins = _basins(model, model.first_ice(ela))
        count = np.unique(basins).size - 1
        roots = _union_roots(int(basins.max()) + 1, shared_borders(basins)[0])
        has_complex = bool((np.bincount(roots[np.unique(basins[basins > 0])]) >= 2).any())
        if (count >= MIN_GLACIERS and has_complex) or fraction >= MAX_GLACIERISED_FRACTION - 1e-9:
            return ela, basins
        lacking = "" if has_complex else " and no complex"
        logger.info("%d glaciers%s at %.0f%% ice; lowering the ELA", count, lacking, 100 * fraction)
        fraction = min(fraction + 0.03, MAX_GLACIERISED_FRACTION)


def generate_landscape(config: WorldConfig) -> Landscape:
    """Generate the world of ``config``: terrain, glaciers and truth for every year.

    Deterministic: the same config gives identical arrays; every random draw comes from
    ``config.seed``.
    """
    years = _check_config(config)
    grid = world_grid(config)
    terrain_seed, glacier_seed = np.random.SeedSequence(config.seed).spawn(2)
    rng = np.random.default_rng(glacier_seed)
    dem = make_dem(config, grid, np.random.default_rng(terrain_seed))
    model = IceModel.from_dem(dem, grid.resolution)
    cell_km2 = model.cell_km2

    first_year = years[0]
    zmax = float(dem.max())
    ela0, basins = _first_year(model)
    elas = {first_year: ela0}
    labels = {first_year: basins}
    previous_year = first_year
    rise_per_year = 3.0  # first guess of the ELA rise, m/a; then the last period's rise
    for year in years[1:]:
        prev = labels[previous_year]
        prev_km2 = float((prev > 0).sum()) * cell_km2
        goal = prev_km2 * (1.0 - config.loss_rate * (year - previous_year))

        def later(ela: float, prev: np.ndarray = prev) -> np.ndarray:
            return clean_later_year(np.where(model.raw_ice(ela), prev, 0), cell_km2)

        ela = _calibrate(
            lambda e: float((later(e) > 0).sum()) * cell_km2,
            goal,
            max(CALIBRATION_LOSS_RTOL * (prev_km2 - goal), cell_km2),
            elas[previous_year] + rise_per_year * (year - previous_year),
            10.0,
            (elas[previous_year], zmax),
            known=(elas[previous_year], prev_km2),
        )
        rise_per_year = max((ela - elas[previous_year]) / (year - previous_year), 0.5)
        elas[year] = ela
        labels[year] = later(ela)
        previous_year = year

    reference_year = INVENTORY_YEAR if INVENTORY_YEAR in labels else first_year
    mapping, count = _order_glaciers(basins, labels[reference_year])
    labels = {year: mapping[lab] for year, lab in labels.items()}
    complex_ids = _complexes(labels[first_year], count)
    glaciers = tuple(
        GlacierInfo(index=i, glacier_id=f"SYN-{i:05d}", complex_id=complex_ids[i - 1]) for i in range(1, count + 1)
    )
    debris = _debris(model, labels, elas, rng)
    lakes, lake_level = _lakes(model, labels[first_year], count, rng)
    # Lakes are flat at their level; the DEM stays sink-free (each lake spills downstream).
    surface = np.where(lakes, lake_level, model.dem).astype(np.float32)
    truths = {
        year: YearTruth(year=year, ela=float(elas[year]), glacier=labels[year], debris=debris[year], lakes=lakes.copy())
        for year in years
    }
    logger.info(
        "world seed %d: %d glaciers, %d complexes, %.1f%% ice in %d, %d lakes, ELAs %s",
        config.seed,
        count,
        len(set(complex_ids)),
        100.0 * float((labels[first_year] > 0).mean()),
        first_year,
        len(np.unique(lake_level[lakes])),
        {y: round(e) for y, e in elas.items()},
    )
    return Landscape(config=config, grid=grid, dem=surface, glaciers=glaciers, years=truths)
