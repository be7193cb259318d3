"""The synthetic world: landscape truth, rendered scenes and their STAC catalogue on disk.

:func:`generate_world` builds a landscape from a :class:`WorldConfig`, writes its truth, then
renders every scene of every year and publishes them under ``WORLD/stac/`` (layout in
:mod:`glacimap.synthetic.catalog`). ``WORLD/world.json`` records what a test needs to know:
the configuration, the ELA of each year, every scene (cloud cover, footprint share, snowline,
encoding quirks) and the *trap* of each year: the least-cloudy Sentinel-2 item (and Landsat
item) hides some glaciers under clouds that another item sees clear, so a tile-wide choice
of scene fails where a per-glacier choice succeeds.

Per year (every year of the configuration):

- Sentinel-2: 5 dates between 1 August and 15 October from two relative orbits, each date
  published as two MGRS-named tiles (north and south, overlapping in the middle of the
  world); each item covers roughly 55-75 % of the world, the rest is no data.
- Landsat 8/9: 3 dates from two WRS-2 paths, each covering 65-85 % of the world.
- Sentinel-1: 2 ascending (evening, wet snow) and 2 descending (morning, refrozen) scenes.
- Copernicus DEM: 1-degree tiles in EPSG:4326, once for the world.

Scenes are rendered at 10 m on the landscape grid, which must be a 10 m grid on the 10 m
lattice of its UTM zone (as Sentinel-2's is).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import Polygon, box

from glacimap.errors import GlacimapError, InputNotFoundError, InvalidInputError, OutputExistsError
from glacimap.rasters import Grid, utm_crs, write_cog
from glacimap.synthetic import catalog, scenes
from glacimap.synthetic.model import GlacierInfo, Landscape, WorldConfig, YearTruth
from glacimap.synthetic.scenes import Illumination, MaskFields, Sun
from glacimap.synthetic.surfaces import DEBRIS_CLIFF, DEBRIS_POND, OPTICAL_BANDS, classify_surfaces
from glacimap.workspace import write_json_atomic

log = logging.getLogger(__name__)

WORLD_FILE = "world.json"
STAC_DIR = "stac"
WORLD_FORMAT = "glacimap-synthetic-world"
WORLD_FORMAT_VERSION = 1

#: Acquisitions per year.
S2_DATES, LANDSAT_DATES, S1_PER_ORBIT_STATE = 5, 5, 2
#: Late-summer acquisition window (month, day).
WINDOW = ((8, 1), (10, 15))
#: Coarse grid of the cloud fields, and their margin around the world (room for shadows).
CLOUD_CELL_M, CLOUD_MARGIN_M = 40.0, 6000.0
#: A glacier counts as clouded in a scene above this cloud share, and as seen clear below
#: this share of cloud, cirrus or cloud shadow (over the glacier).
CLOUDED_SHARE, CLEAR_SHARE = 0.5, 0.01
#: Required gap (percentage points) between the trap item's cloud cover and every other item's.
TRAP_MARGIN = 3.0

Progress = Callable[[str, int, int], None]


# =================================================================================================
# Public records
# =================================================================================================
@dataclass(frozen=True)
class SceneInfo:
    """One published item, as recorded in ``world.json``."""

    collection: str
    item_id: str
    year: int
    datetime: str
    platform: str
    valid_fraction: float  # share of the world inside the item's footprint
    cloud_cover: float | None  # eo:cloud_cover (optical items)
    snowline_m: float | None  # transient snowline altitude on glaciers
    fresh_snow_m: float | None  # lowering of the snowline by a recent snowfall
    role: str = ""  # "trap", "clear" or ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrapInfo:
    """The least-cloudy item of a year and collection, and the glaciers it hides."""

    year: int
    collection: str
    scene: str  # item id with the lowest eo:cloud_cover
    cloud_cover: float
    glacier_ids: tuple[str, ...]  # clouded in ``scene``
    clear_scene: str  # an item that sees every one of them clear
    cloud_share: dict[str, float]  # per glacier: cloud share in ``scene``
    clear_share: dict[str, float]  # per glacier: cloud + cirrus + shadow share in ``clear_scene``


@dataclass(frozen=True)
class WorldInfo:
    """What :func:`generate_world` made; saved as ``world.json`` (timings excepted)."""

    root: Path
    config: WorldConfig
    crs: str
    ela: dict[int, float]
    scenes: tuple[SceneInfo, ...]
    traps: tuple[TrapInfo, ...]
    boa_flag_wrong: tuple[str, ...]  # S2 items whose earthsearch:boa_offset_applied is wrong
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def stac_dir(self) -> Path:
        return self.root / STAC_DIR

    def trap(self, year: int, collection: str = catalog.S2) -> TrapInfo:
        for trap in self.traps:
            if trap.year == year and trap.collection == collection:
                return trap
        raise InputNotFoundError(f"{self.root / WORLD_FILE}: no {collection} trap for {year}")

    def scenes_of(self, collection: str, year: int | None = None) -> list[SceneInfo]:
        return [s for s in self.scenes if s.collection == collection and (year is None or s.year == year)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": WORLD_FORMAT,
            "version": WORLD_FORMAT_VERSION,
            "config": {**asdict(self.config), "years": list(self.config.years)},
            "crs": self.crs,
            "stac": STAC_DIR,
            "ela": {str(y): v for y, v in sorted(self.ela.items())},
            "scenes": [asdict(s) for s in self.scenes],
            "traps": [{**asdict(t), "glacier_ids": list(t.glacier_ids)} for t in self.traps],
            "boa_flag_wrong": list(self.boa_flag_wrong),
        }

    @classmethod
    def from_dict(cls, root: Path, data: dict[str, Any]) -> WorldInfo:
        if data.get("format") != WORLD_FORMAT:
            raise InvalidInputError(f"{Path(root) / WORLD_FILE}: not a glacimap synthetic world description")
        config = dict(data["config"])
        config["years"] = tuple(config["years"])
        return cls(
            root=Path(root),
            config=WorldConfig(**config),
            crs=data["crs"],
            ela={int(y): float(v) for y, v in data["ela"].items()},
            scenes=tuple(SceneInfo(**s) for s in data["scenes"]),
            traps=tuple(TrapInfo(**{**t, "glacier_ids": tuple(t["glacier_ids"])}) for t in data["traps"]),
            boa_flag_wrong=tuple(data["boa_flag_wrong"]),
        )


def load_world(root: Path | str) -> WorldInfo:
    """Read ``world.json`` of a generated world."""
    path = Path(root) / WORLD_FILE
    if not path.exists():
        raise InputNotFoundError(f"{path}: no synthetic world here (run generate_world first)")
    return WorldInfo.from_dict(Path(root), json.loads(path.read_text(encoding="utf-8")))


# =================================================================================================
# Entry points
# =================================================================================================
def generate_world(
    config: WorldConfig,
    out_dir: Path | str,
    overwrite: bool = False,
    progress: Progress | None = None,
    figure: bool = True,
) -> WorldInfo:
    """Generate the landscape, its truth, every scene and the STAC catalogue in ``out_dir``.

    Writes ``out_dir/world.json``, ``out_dir/stac/`` and whatever
    :func:`glacimap.synthetic.truth.write_truth` writes, plus ``out_dir/figure.png`` (the last
    year) when ``figure`` is set. Raises :class:`OutputExistsError` if a world is already
    there and ``overwrite`` is false. Same config, same files, byte for byte.
    """
    from glacimap.synthetic.glaciers import generate_landscape
    from glacimap.synthetic.truth import write_truth

    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    t0 = time.perf_counter()
    landscape = generate_landscape(config)
    t1 = time.perf_counter()
    write_truth(landscape, out_dir)
    t2 = time.perf_counter()
    info = render_world(landscape, out_dir, overwrite=True, progress=progress)
    timings = {"landscape": t1 - t0, "truth": t2 - t1, **info.timings}
    if figure:
        from glacimap.synthetic.figure import plot_world_year

        t3 = time.perf_counter()
        plot_world_year(landscape, info, max(config.years), out_dir / "figure.png")
        timings["figure"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    return WorldInfo(**{**info.__dict__, "timings": timings})


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not overwrite and ((out_dir / WORLD_FILE).exists() or (out_dir / STAC_DIR).exists()):
        raise OutputExistsError(f"{out_dir} already holds a synthetic world; pass overwrite=True to replace it")


def render_world(
    landscape: Landscape,
    out_dir: Path | str,
    overwrite: bool = False,
    progress: Progress | None = None,
    workers: int = 2,
) -> WorldInfo:
    """Render and publish every scene of ``landscape`` under ``out_dir``; write ``world.json``.

    The STAC folder is rebuilt from scratch (a stale item never survives a regeneration).
    ``workers`` threads write the COGs while the next scene renders; the files do not depend
    on it.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    _check_landscape(landscape)
    stac_dir = out_dir / STAC_DIR
    if stac_dir.exists():
        shutil.rmtree(stac_dir)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    world = _World.build(landscape)
    timings["static_fields"] = time.perf_counter() - t

    with _Writer(workers) as writer:
        items, records, traps = _render_all(world, stac_dir, writer, timings, progress)
    years = sorted(landscape.years)
    wrong = _falsify_boa_flag(items, records, traps)
    t = time.perf_counter()
    catalog.write_catalog(stac_dir, items)
    info = WorldInfo(
        root=out_dir,
        config=landscape.config,
        crs=landscape.grid.crs,
        ela={y: float(landscape.years[y].ela) for y in years},
        scenes=tuple(records),
        traps=tuple(traps),
        boa_flag_wrong=wrong,
    )
    write_json_atomic(out_dir / WORLD_FILE, info.to_dict())
    timings["catalogue"] = time.perf_counter() - t
    return WorldInfo(**{**info.__dict__, "timings": timings})


class _Writer:
    """Writes COGs on worker threads (GDAL releases the GIL) with a bounded backlog."""

    def __init__(self, workers: int, backlog: int = 12) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        self._slots = threading.BoundedSemaphore(backlog)
        self._futures: list[Future[Path]] = []

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=True)
        if exc[0] is None:
            for future in self._futures:
                future.result()  # re-raise the first failed write

    def write(self, path: Path, data: np.ndarray, grid: Grid, names: list[str], nodata: float) -> None:
        if self._pool is None:
            write_cog(path, data, grid, names, nodata=nodata)
            return
        self._slots.acquire()
        self._futures.append(self._pool.submit(self._run, path, data, grid, names, nodata))

    def _run(self, path: Path, data: np.ndarray, grid: Grid, names: list[str], nodata: float) -> Path:
        try:
            return write_cog(path, data, grid, names, nodata=nodata)
        finally:
            self._slots.release()


def _render_all(
    world: _World, stac_dir: Path, writer: _Writer, timings: dict[str, float], progress: Progress | None
) -> tuple[list[dict[str, Any]], list[SceneInfo], list[TrapInfo]]:
    items: list[dict[str, Any]] = []
    records: list[SceneInfo] = []
    traps: list[TrapInfo] = []
    years = sorted(world.landscape.years)
    total = len(years) * 3 + 1
    done = 0
    for year in years:
        for name, planner, renderer in (
            (catalog.S2, _plan_s2, _render_optical),
            (catalog.LANDSAT, _plan_landsat, _render_optical),
        ):
            t = time.perf_counter()
            plan = planner(world, year)
            _plan_clouds(world, plan)
            made, recs, trap = renderer(world, plan, stac_dir, writer)
            items += made
            records += recs
            traps.append(trap)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
            done += 1
            _report(progress, f"{name} {year}", done, total)
        t = time.perf_counter()
        made, recs = _render_s1(world, year, stac_dir, writer)
        items += made
        records += recs
        timings[catalog.S1] = timings.get(catalog.S1, 0.0) + time.perf_counter() - t
        done += 1
        _report(progress, f"{catalog.S1} {year}", done, total)

    t = time.perf_counter()
    made, recs = _write_dem(world, stac_dir, writer)
    items += made
    records += recs
    timings[catalog.DEM] = time.perf_counter() - t
    _report(progress, catalog.DEM, total, total)
    return items, records, traps


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    log.debug("synthetic world: %s (%d/%d)", stage, done, total)
    if progress is not None:
        progress(stage, done, total)


def _check_landscape(landscape: Landscape) -> None:
    grid = landscape.grid
    if abs(grid.resolution - 10.0) > 1e-9 or abs(grid.transform.e + 10.0) > 1e-9:
        raise InvalidInputError(f"the landscape grid must have 10 m pixels to render Sentinel-2 scenes, got {grid.resolution} m")
    left, _, _, top = grid.bounds
    if abs(left / 10.0 - round(left / 10.0)) > 1e-6 or abs(top / 10.0 - round(top / 10.0)) > 1e-6:
        raise InvalidInputError(f"the landscape grid origin ({left}, {top}) is not on the 10 m lattice")
    if landscape.dem.shape != grid.shape:
        raise InvalidInputError(f"landscape DEM shape {landscape.dem.shape} does not match its grid {grid.shape}")
    if not landscape.years:
        raise InvalidInputError("the landscape has no year of glacier truth to render")
    for year, truth in landscape.years.items():
        if not 2015 <= year <= 2030:
            raise InvalidInputError(f"year {year}: scenes can be rendered for 2015-2030 (Sentinel-2 era) only")
        for name in ("glacier", "debris", "lakes"):
            if getattr(truth, name).shape != grid.shape:
                raise InvalidInputError(f"year {year}: truth '{name}' shape does not match the landscape grid")


# =================================================================================================
# Random numbers: one independent stream per named purpose
# =================================================================================================
def _rng(seed: int, *keys: object) -> np.random.Generator:
    words = [zlib.crc32(str(k).encode("utf-8")) for k in keys]
    return np.random.default_rng([seed & 0xFFFFFFFF, *words])


# =================================================================================================
# Static fields of the world
# =================================================================================================
@dataclass(frozen=True)
class Footprint:
    """Valid area of an item: the world rectangle cut by half-planes ``a*x + b*y <= c``."""

    bounds: tuple[float, float, float, float]
    cuts: tuple[tuple[float, float, float], ...]

    def polygon(self) -> Polygon:
        """The footprint as a polygon (the rectangle clipped by each half-plane in turn)."""
        left, bottom, right, top = self.bounds
        points = [(left, bottom), (right, bottom), (right, top), (left, top)]
        for a, b, c in self.cuts:
            clipped = []
            for i, p in enumerate(points):
                q = points[(i + 1) % len(points)]
                fp, fq = a * p[0] + b * p[1] - c, a * q[0] + b * q[1] - c
                if fp <= 0:
                    clipped.append(p)
                if (fp <= 0) != (fq <= 0):
                    t = fp / (fp - fq)
                    clipped.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
            points = clipped
        return Polygon(points) if len(points) >= 3 else Polygon()

    def mask(self, grid: Grid) -> np.ndarray:
        """Pixels of ``grid`` whose centre lies inside the footprint."""
        xs, ys = scenes.pixel_centres(grid)
        left, bottom, right, top = self.bounds
        out = ((ys >= bottom) & (ys <= top))[:, None] & ((xs >= left) & (xs <= right))[None, :]
        for a, b, c in self.cuts:
            out &= (a * xs[None, :] + b * ys[:, None]) <= c
        return out

    def contains_box(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        corners = ((x0, y0), (x0, y1), (x1, y0), (x1, y1))
        left, bottom, right, top = self.bounds
        if x0 < left or x1 > right or y0 < bottom or y1 > top:
            return False
        return all(a * x + b * y <= c for a, b, c in self.cuts for x, y in corners)


@dataclass
class _World:
    """The landscape plus the fields every scene reuses."""

    landscape: Landscape
    grid: Grid  # 10 m landscape grid = Sentinel-2 10 m lattice
    grid20: Grid
    grid30: Grid
    cloud_grid: Grid
    normals: tuple[np.ndarray, np.ndarray, np.ndarray]
    texture: np.ndarray
    vegetation: np.ndarray
    snow_propensity: np.ndarray
    snowline_field: np.ndarray  # metres added to a scene's snowline, per pixel
    debris_features: np.ndarray  # uint8: DEBRIS_CLIFF / DEBRIS_POND where debris shows them
    cloud_world: np.ndarray  # bool: cloud-grid cells inside the world
    noise: scenes.NoisePool  # sensor noise
    lon: float
    lat: float
    zone: int
    glacier_boxes: dict[int, dict[int, tuple[float, float, float, float]]]  # year -> index -> bbox
    glacier_pixels: dict[int, np.ndarray]  # year -> pixel count by index

    @property
    def seed(self) -> int:
        return self.landscape.config.seed

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.grid.bounds

    @classmethod
    def build(cls, landscape: Landscape) -> _World:
        grid = landscape.grid
        seed = landscape.config.seed
        dem = landscape.dem.astype(np.float32)
        res = grid.resolution
        normals = scenes.terrain_normals(dem, res)
        texture = scenes.fractal_noise(grid.shape, _rng(seed, "texture"), beta=2.2, cutoff_px=40)
        first = landscape.years[min(landscape.years)]
        any_glacier = np.zeros(grid.shape, dtype=bool)
        any_lake = np.zeros(grid.shape, dtype=bool)
        for truth in landscape.years.values():
            any_glacier |= truth.glacier > 0
            any_lake |= truth.lakes
        tree_noise = scenes.fractal_noise(grid.shape, _rng(seed, "treeline"), beta=3.0, cutoff_px=200)
        treeline = first.ela - 750.0 + 80.0 * tree_noise
        vegetation = (dem < treeline) & (normals[2] > math.cos(math.radians(40.0))) & ~any_glacier & ~any_lake
        # Seasonal snow lingers where the midday sun hardly reaches, in hollows, and in patches.
        noon = scenes.cos_incidence(normals, 40.0, 180.0) / math.cos(math.radians(40.0))
        shade = np.clip(1.0 - noon, 0.0, 1.0)
        smooth = ndimage.gaussian_filter(dem, 5.0)
        curvature = ndimage.laplace(smooth)
        concavity = np.clip(0.5 + curvature / (4.0 * float(curvature.std()) + 1e-6), 0.0, 1.0)
        patches = scenes.fractal_noise(grid.shape, _rng(seed, "snow patches"), beta=3.0, cutoff_px=100)
        propensity = np.clip(0.55 * shade + 0.2 * concavity + 0.25 * (0.5 + 0.25 * patches), 0.0, 1.0).astype(np.float32)
        snow_noise = scenes.fractal_noise(grid.shape, _rng(seed, "snowline"), beta=3.5, cutoff_px=150)
        snowline_field = (40.0 * snow_noise - 150.0 * normals[1]).astype(np.float32)
        # Hummocky debris: blobs of a few tens of metres; the highest 5 % are ice cliffs, the
        # lowest 3 % ponds (z-scores of a standard normal field).
        hummocks = scenes.fractal_noise(grid.shape, _rng(seed, "debris hummocks"), beta=2.0, cutoff_px=8)
        debris_features = np.zeros(grid.shape, dtype=np.uint8)
        debris_features[hummocks > 1.645] = DEBRIS_CLIFF
        debris_features[hummocks < -1.881] = DEBRIS_POND

        left, bottom, right, top = grid.bounds
        m = CLOUD_MARGIN_M
        cloud_grid = Grid.from_bounds((left - m, bottom - m, right + m, top + m), grid.crs, CLOUD_CELL_M)
        xs, ys = scenes.pixel_centres(cloud_grid)
        cloud_world = ((ys >= bottom) & (ys <= top))[:, None] & ((xs >= left) & (xs <= right))[None, :]

        to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
        lon, lat = to_lonlat.transform(0.5 * (left + right), 0.5 * (bottom + top))
        zone = int(grid.crs.split(":")[1]) % 100
        boxes: dict[int, dict[int, tuple[float, float, float, float]]] = {}
        pixels: dict[int, np.ndarray] = {}
        for year, truth in landscape.years.items():
            boxes[year] = _glacier_boxes(truth.glacier, grid)
            pixels[year] = np.bincount(truth.glacier.ravel().clip(0), minlength=1)
        return cls(
            landscape=landscape,
            grid=grid,
            grid20=scenes.lattice_grid(grid, 20.0),
            grid30=scenes.lattice_grid(grid, 30.0, origin=15.0),
            cloud_grid=cloud_grid,
            normals=normals,
            texture=texture,
            vegetation=vegetation,
            snow_propensity=propensity,
            snowline_field=snowline_field,
            debris_features=debris_features,
            cloud_world=cloud_world,
            noise=scenes.NoisePool(grid.shape, _rng(seed, "sensor noise")),
            lon=float(lon),
            lat=float(lat),
            zone=zone,
            glacier_boxes=boxes,
            glacier_pixels=pixels,
        )

    def surfaces(self, year: int, snowline: float) -> np.ndarray:
        truth = self.landscape.years[year]
        return classify_surfaces(
            self.landscape.dem,
            truth.glacier,
            truth.debris,
            truth.lakes,
            self.vegetation,
            snowline + self.snowline_field,
            self.snow_propensity,
            snowline + 200.0,
            self.debris_features,
        )


def _glacier_boxes(labels: np.ndarray, grid: Grid) -> dict[int, tuple[float, float, float, float]]:
    """UTM bounding box (x0, y0, x1, y1) of every glacier index present in ``labels``."""
    out = {}
    left, _, _, top = grid.bounds
    res = grid.resolution
    for index, slices in enumerate(ndimage.find_objects(labels.clip(0)), start=1):
        if slices is None:
            continue
        rs, cs = slices
        out[index] = (left + cs.start * res, top - rs.stop * res, left + cs.stop * res, top - rs.start * res)
    return out


# =================================================================================================
# Acquisition plans
# =================================================================================================
@dataclass
class _ItemPlan:
    item_id: str
    footprint: Footprint
    tile: str = ""


@dataclass
class _Acquisition:
    collection: str
    when: datetime
    platform: str
    sun: Sun
    items: list[_ItemPlan]
    snowline: float  # altitude of the transient snowline (m)
    fresh_snow: float  # lowering by a recent snowfall (m), included in ``snowline``
    orbit: int  # relative orbit (S2) or WRS-2 path (Landsat)
    cover: float = 0.3  # background cloud cover target
    cirrus: float = 0.0  # cirrus cover target
    cloud_height: float = 2000.0
    role: str = ""
    opacity: np.ndarray | None = None  # on the cloud grid
    cirrus_opacity: np.ndarray | None = None


@dataclass
class _Plan:
    collection: str
    year: int
    acquisitions: list[_Acquisition]
    targets: list[int] = field(default_factory=list)
    trap: tuple[int, int] = (-1, -1)  # (acquisition, item) of the trap
    clear: tuple[int, int] = (-1, -1)


def _cycle_dates(year: int, reference: date, period: int) -> list[date]:
    """Dates of the late-summer window of ``year`` that fall on a ``period``-day repeat cycle."""
    start, end = date(year, *WINDOW[0]), date(year, *WINDOW[1])
    first = start + timedelta(days=(reference - start).days % period)
    out = []
    while first <= end:
        out.append(first)
        first += timedelta(days=period)
    return out


def _pick_spread(rng: np.random.Generator, candidates: Sequence[Any], count: int, key: Callable[[Any], date]) -> list[Any]:
    """``count`` candidates spread over the window: one drawn from each equal sub-window
    (the nearest unused candidate when a sub-window has none), sorted by date."""
    pool = sorted(candidates, key=key)
    if len(pool) <= count:
        return pool
    year = key(pool[0]).year
    start = date(year, *WINDOW[0])
    days = (date(year, *WINDOW[1]) - start).days + 1
    chosen: list[Any] = []
    for i in range(count):
        lo, hi = start + timedelta(days=days * i / count), start + timedelta(days=days * (i + 1) / count)
        free = [c for c in pool if c not in chosen]
        inside = [c for c in free if lo <= key(c) < hi]
        if inside:
            chosen.append(inside[int(rng.integers(0, len(inside)))])
        else:
            middle = lo + (hi - lo) / 2
            chosen.append(min(free, key=lambda c: abs((key(c) - middle).days)))
    return sorted(chosen, key=key)


def _fresh_snow_day(seed: int, year: int) -> date:
    return date(year, 9, 26) + timedelta(days=int(_rng(seed, "fresh snow", year).integers(0, 13)))


def _snowline(world: _World, year: int, when: date, rng: np.random.Generator) -> tuple[float, float]:
    """Transient snowline altitude and the fresh-snow lowering it includes, for a date."""
    ela = float(world.landscape.years[year].ela)
    days = (when - date(year, 8, 1)).days
    seasonal = -220.0 + 250.0 * min(max(days / 45.0, 0.0), 1.0)
    event = _fresh_snow_day(world.seed, year)
    fresh = 600.0 * math.exp(-(when - event).days / 10.0) if when >= event else 0.0
    line = ela + seasonal + float(rng.normal(0.0, 25.0)) - fresh
    return line, fresh


def _edge_cut(world: _World, normal: tuple[float, float], share: float) -> tuple[float, float, float]:
    """Half-plane ``n . p <= c`` with unit normal ``normal`` keeping ``share`` of the world."""
    xs, ys = scenes.pixel_centres(world.cloud_grid)
    proj = normal[0] * xs[None, :] + normal[1] * ys[:, None]
    c = float(np.quantile(proj[world.cloud_world], share))
    return (normal[0], normal[1], c)


#: Swath edges of descending sun-synchronous orbits run about 13 deg off north at 47 N.
_TRACK_TILT = math.radians(13.0)
_EAST_EDGE = (math.cos(_TRACK_TILT), -math.sin(_TRACK_TILT))  # valid on the west side


#: Sentinel-2: each satellite repeats a relative orbit every 10 days, S2B 5 days after S2A;
#: relative orbit 65 passes 3 days after orbit 22 (43 orbits later). Reference: an S2A pass.
_S2_REFERENCE = date(2015, 7, 6)
_S2_ORBITS = {22: (0, 0.86), 65: (3, 0.84)}  # relative orbit -> (day offset, share of the world in the swath)


def _plan_s2(world: _World, year: int) -> _Plan:
    rng = _rng(world.seed, "s2 plan", year)
    candidates = []
    for orbit, (offset, _) in _S2_ORBITS.items():
        for day in _cycle_dates(year, _S2_REFERENCE + timedelta(days=offset), 5):
            phase = ((day - _S2_REFERENCE).days - offset) // 5 % 2
            if phase == 0:
                candidates.append((day, orbit, "sentinel-2a"))
            elif year >= 2017:
                candidates.append((day, orbit, "sentinel-2b"))
    chosen = _pick_spread(rng, candidates, S2_DATES, key=lambda c: c[0])
    left, bottom, right, top = world.bounds
    north_tile = catalog.mgrs_tile(world.zone, world.lat, 0.5 * (left + right), 0.5 * (bottom + top))
    south_tile = catalog.previous_row_tile(north_tile)
    # MGRS tiles overlap: the north tile reaches down to 25 % of the world, the south tile up to 75 %.
    north_cut = _edge_cut(world, (0.0, -1.0), 0.75)
    south_cut = _edge_cut(world, (0.0, 1.0), 0.75)
    acquisitions = []
    for day, orbit, platform in chosen:
        share = float(np.clip(_S2_ORBITS[orbit][1] + rng.normal(0.0, 0.02), 0.78, 0.92))
        normal = _EAST_EDGE if orbit == 22 else (-_EAST_EDGE[0], -_EAST_EDGE[1])
        swath = _edge_cut(world, normal, share)
        when = datetime(day.year, day.month, day.day, 10, 20 + int(rng.integers(0, 10)), int(rng.integers(0, 60)),
                        int(rng.integers(0, 1000)) * 1000, tzinfo=timezone.utc)
        snowline, fresh = _snowline(world, year, day, rng)
        letter = platform[-1].upper()
        items = [
            _ItemPlan(f"S2{letter}_{tile}_{day:%Y%m%d}_0_L2A", Footprint(world.bounds, (swath, cut)), tile)
            for tile, cut in ((north_tile, north_cut), (south_tile, south_cut))
        ]
        sun = scenes.solar_position(when, world.lon, world.lat)
        acquisitions.append(_Acquisition(catalog.S2, when, platform, sun, items, snowline, fresh, orbit))
    return _Plan(catalog.S2, year, acquisitions)


#: Landsat: 16-day repeat per satellite, Landsat 9 8 days after Landsat 8; path 192 is imaged
#: 9 days after path 193 (adjacent WRS-2 paths are 7 days apart the other way round).
_LANDSAT_REFERENCE = date(2015, 7, 30)
_LANDSAT_PATHS = {193: 0, 192: 9}


def _plan_landsat(world: _World, year: int) -> _Plan:
    rng = _rng(world.seed, "landsat plan", year)
    candidates = []
    for path, offset in _LANDSAT_PATHS.items():
        for platform, shift in (("landsat-8", 0), ("landsat-9", 8)):
            if platform == "landsat-9" and year < 2022:
                continue
            for day in _cycle_dates(year, _LANDSAT_REFERENCE + timedelta(days=offset + shift), 16):
                candidates.append((day, path, platform))
    chosen = _pick_spread(rng, candidates, LANDSAT_DATES, key=lambda c: c[0])
    acquisitions = []
    for day, path, platform in chosen:
        share = float(rng.uniform(0.65, 0.85))
        normal = _EAST_EDGE if path == 193 else (-_EAST_EDGE[0], -_EAST_EDGE[1])
        cut = _edge_cut(world, normal, share)
        when = datetime(day.year, day.month, day.day, 10, int(rng.integers(0, 10)), int(rng.integers(0, 60)),
                        tzinfo=timezone.utc)
        snowline, fresh = _snowline(world, year, day, rng)
        item_id = f"LC0{platform[-1]}_L2SP_{path:03d}027_{day:%Y%m%d}_02_T1"
        sun = scenes.solar_position(when, world.lon, world.lat)
        acquisitions.append(_Acquisition(catalog.LANDSAT, when, platform, sun,
                                         [_ItemPlan(item_id, Footprint(world.bounds, (cut,)))], snowline, fresh, path))
    return _Plan(catalog.LANDSAT, year, acquisitions)


# =================================================================================================
# Clouds and the trap
# =================================================================================================
def _union_box(boxes: Sequence[tuple[float, float, float, float]], margin: float) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes) - margin, min(b[1] for b in boxes) - margin,
            max(b[2] for b in boxes) + margin, max(b[3] for b in boxes) + margin)


def _trap_candidates(world: _World, plan: _Plan) -> Iterator[tuple[list[int], tuple[int, int], tuple[int, int]]]:
    """Candidate traps: (target glaciers, (trap acquisition, item), (clear acquisition, item)).

    Glaciers are tried in a seeded random order (those of at least 0.01 km2 and 300 m from
    the world's edge first), dates
    before the autumn snowfall first; a target may bring up to two neighbours within 800 m
    that fit in both footprints, as long as the group's box stays small next to the world.
    """
    rng = _rng(world.seed, "targets", plan.collection, plan.year)
    boxes = world.glacier_boxes[plan.year]
    pixels = world.glacier_pixels[plan.year]
    if not boxes:
        raise InvalidInputError(f"year {plan.year}: the landscape has no glacier, so no scene trap can be set")
    big = [g for g in boxes if pixels[g] >= 100] or list(boxes)
    shuffled = [big[i] for i in rng.permutation(len(big))]
    # Glaciers clear of the world's edge first: one cut by the edge makes a poor test.
    left, bottom, right, top = world.bounds

    def inland(g: int) -> bool:
        x0, y0, x1, y1 = boxes[g]
        return min(x0 - left, y0 - bottom, right - x1, top - y1) >= 300.0

    order = [g for g in shuffled if inland(g)] + [g for g in shuffled if not inland(g)]
    event = _fresh_snow_day(world.seed, plan.year)
    acqs = plan.acquisitions
    world_area = _box_area(world.bounds)
    ranked = sorted(range(len(acqs)), key=lambda i: (acqs[i].when.date() >= event, int(rng.integers(0, 1000))))
    for g in order:
        gbox = boxes[g]
        for ti in ranked:
            trap_items = [k for k, it in enumerate(acqs[ti].items) if it.footprint.contains_box(*gbox)]
            if not trap_items:
                continue
            for ci in ranked:
                if ci == ti:
                    continue
                clear_items = [k for k, it in enumerate(acqs[ci].items) if it.footprint.contains_box(*gbox)]
                if not clear_items:
                    continue
                targets = [g]
                for other in sorted(boxes, key=lambda o: (_gap(boxes[o], gbox), o)):
                    if len(targets) >= 3 or _gap(boxes[other], gbox) > 800.0:
                        break
                    if other == g or pixels[other] < 50:
                        continue
                    if _box_area(_union_box([boxes[t] for t in (*targets, other)], 200.0)) > 0.06 * world_area:
                        continue
                    if acqs[ti].items[trap_items[0]].footprint.contains_box(*boxes[other]) and \
                            acqs[ci].items[clear_items[0]].footprint.contains_box(*boxes[other]):
                        targets.append(other)
                yield targets, (ti, trap_items[0]), (ci, clear_items[0])


def _box_area(b: tuple[float, float, float, float]) -> float:
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def _gap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    dx = max(a[0] - b[2], b[0] - a[2], 0.0)
    dy = max(a[1] - b[3], b[1] - a[3], 0.0)
    return math.hypot(dx, dy)


def _plan_clouds(world: _World, plan: _Plan, attempts: int = 25) -> None:
    """Cloud fields of every acquisition of a plan, with the trap built in.

    The trap acquisition has a thick cloud over the target glaciers and little else; the
    clear acquisition has no cloud, cirrus or cloud shadow over them; every other item is
    made cloudier than the trap item by at least :data:`TRAP_MARGIN` points. When that is
    impossible (a small world whose glaciers fill much of it), the next candidate trap is
    tried.
    """
    cg = world.cloud_grid
    masks = [[it.footprint.mask(cg) & world.cloud_world for it in acq.items] for acq in plan.acquisitions]
    noises = []
    for acq in plan.acquisitions:
        rng = _rng(world.seed, "clouds", plan.collection, acq.when.isoformat())
        acq.cloud_height = float(rng.uniform(1500.0, 3000.0))
        acq.cirrus = float(rng.uniform(0.05, 0.25)) if rng.random() < 0.35 else 0.0
        cover = float(rng.uniform(0.05, 0.40))
        noise = scenes.fractal_noise(cg.shape, rng, beta=3.2, cutoff_px=5000.0 / CLOUD_CELL_M)
        cirrus_noise = scenes.fractal_noise(cg.shape, rng, beta=3.6, cutoff_px=8000.0 / CLOUD_CELL_M)
        edge_noise = scenes.fractal_noise(cg.shape, rng, beta=2.5)
        trap_cover = float(rng.uniform(0.005, 0.02))
        noises.append((noise, cirrus_noise, edge_noise, cover, trap_cover))

    def _distance_to(cells: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
        """Distance (m) from each cloud cell to the target cells moved by ``offset`` (x, y m)."""
        dr, dc = -round(offset[1] / CLOUD_CELL_M), round(offset[0] / CLOUD_CELL_M)
        moved = np.zeros(cg.shape, dtype=bool)
        rows, cols = np.nonzero(cells)
        rows, cols = rows + dr, cols + dc
        keep = (rows >= 0) & (rows < cg.height) & (cols >= 0) & (cols < cg.width)
        moved[rows[keep], cols[keep]] = True
        if not moved.any():
            return np.full(cg.shape, np.inf, dtype=np.float32)
        return (ndimage.distance_transform_edt(~moved) * CLOUD_CELL_M).astype(np.float32)

    target_cells = np.zeros(cg.shape, dtype=bool)

    def build(a: int, boxes: list[tuple[float, float, float, float]]) -> None:
        acq = plan.acquisitions[a]
        noise, cirrus_noise, edge_noise = noises[a][:3]
        where = np.logical_or.reduce(masks[a])
        opacity = scenes.cloud_opacity(noise, acq.cover, where)
        cirrus = np.zeros(cg.shape, dtype=np.float32)
        if acq.cirrus > 0 and acq.role != "trap":
            threshold = float(np.quantile(cirrus_noise[where], 1.0 - acq.cirrus))
            cirrus = (0.3 * np.clip(cirrus_noise - threshold + 0.17, 0.0, 1.0)).astype(np.float32)
        if acq.role == "trap":
            # A ragged cloud over the targets: opaque over them + 150 m, fraying beyond.
            d = _distance_to(target_cells, (0.0, 0.0))
            blob = np.clip(1.0 - (d - 150.0 - 120.0 * edge_noise) / 200.0, 0.0, 1.0)
            blob[d <= 150.0] = 1.0
            opacity = np.maximum(opacity, blob.astype(np.float32))
        if acq.role == "clear":
            # A ragged gap in the clouds over the targets, and where clouds would shadow them.
            keep = np.ones(cg.shape, dtype=np.float32)
            shift = scenes.shadow_shift(acq.sun, acq.cloud_height)
            for offset in ((0.0, 0.0), (-shift[0], -shift[1])):
                d = _distance_to(target_cells, offset)
                keep = np.minimum(keep, np.clip((d - 150.0 - 100.0 * np.abs(edge_noise)) / 200.0, 0.0, 1.0))
            opacity *= keep
            cirrus *= keep
        acq.opacity, acq.cirrus_opacity = opacity, cirrus

    def covers(a: int) -> list[float]:
        acq = plan.acquisitions[a]
        cloudy = (acq.opacity >= scenes.CLOUD_OPACITY) | (acq.cirrus_opacity >= scenes.CIRRUS_OPACITY)
        return [100.0 * float(cloudy[m].mean()) for m in masks[a]]

    for attempt, (targets, trap, clear) in enumerate(_trap_candidates(world, plan)):
        if attempt >= attempts:
            break
        boxes = [world.glacier_boxes[plan.year][g] for g in targets]
        target_cells[:] = _cells_of(world, plan.year, targets)
        for a, acq in enumerate(plan.acquisitions):
            acq.role = "trap" if a == trap[0] else "clear" if a == clear[0] else ""
            acq.cover = noises[a][4] if acq.role == "trap" else noises[a][3]
            build(a, boxes)
        ta = trap[0]
        trap_acq = plan.acquisitions[ta]
        hides = [all(it.footprint.contains_box(*b) for b in boxes) for it in trap_acq.items]
        trap_cover = min(c for c, h in zip(covers(ta), hides) if h)
        # The trap date's other tile must not undercut the trap unless it hides the targets too.
        for k, item in enumerate(trap_acq.items):
            if hides[k]:
                continue
            exclusive = masks[ta][k] & ~np.logical_or.reduce([m for m, h in zip(masks[ta], hides) if h])
            extra_cover = 0.05
            while covers(ta)[k] < trap_cover + TRAP_MARGIN + 1.0 and extra_cover <= 1.0:
                extra = scenes.cloud_opacity(noises[ta][0], extra_cover, exclusive)
                trap_acq.opacity = np.maximum(trap_acq.opacity, np.where(exclusive, extra, 0.0).astype(np.float32))
                extra_cover += 0.05
        for a, acq in enumerate(plan.acquisitions):
            if a == ta:
                continue
            while min(covers(a)) < trap_cover + TRAP_MARGIN + 1.0 and acq.cover < 0.95:
                acq.cover = min(0.95, acq.cover + 0.05)
                build(a, boxes)
        others = [c for a in range(len(plan.acquisitions)) for k, c in enumerate(covers(a))
                  if not (a == ta and hides[k])]
        if min(others) >= trap_cover + TRAP_MARGIN:
            plan.targets, plan.trap, plan.clear = targets, trap, clear
            return
        log.debug("%s %d: trap candidate %s rejected (trap %.1f %%, others from %.1f %%)",
                  plan.collection, plan.year, targets, trap_cover, min(others))
    raise GlacimapError(
        f"{plan.collection} {plan.year}: no cloud arrangement makes the least cloudy item hide a glacier that "
        "another item sees clear; the world is too small for its glaciers"
    )


def _cells_of(world: _World, year: int, targets: Sequence[int]) -> np.ndarray:
    """Cloud-grid cells holding any 10 m pixel of the target glaciers."""
    cg = world.cloud_grid
    rows, cols = np.nonzero(np.isin(world.landscape.years[year].glacier, targets))
    xs, ys = scenes.pixel_centres(world.grid)
    left, _, _, top = cg.bounds
    out = np.zeros(cg.shape, dtype=bool)
    out[((top - ys[rows]) // CLOUD_CELL_M).astype(int), ((xs[cols] - left) // CLOUD_CELL_M).astype(int)] = True
    return out


def _cloud_fields(world: _World, acq: _Acquisition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opacity, cirrus and cloud-shadow strength of an acquisition on the 10 m grid."""
    if acq.opacity is None or acq.cirrus_opacity is None:
        raise GlacimapError(f"{acq.collection} {acq.when:%Y-%m-%d}: cloud fields were not planned")
    opacity = scenes.sample_linear(acq.opacity, world.cloud_grid, world.grid)
    cirrus = scenes.sample_linear(acq.cirrus_opacity, world.cloud_grid, world.grid)
    shift = scenes.shadow_shift(acq.sun, acq.cloud_height)
    shadow = scenes.sample_linear(acq.opacity, world.cloud_grid, world.grid, shift=shift)
    return np.clip(opacity, 0, 1), np.clip(cirrus, 0, 1), np.clip(shadow, 0, 1)


# =================================================================================================
# Optical rendering and publishing
# =================================================================================================
def _processing_baseline(day: date) -> str:
    if day < date(2018, 1, 1):
        return "02.06"
    if day < date(2022, 1, 25):
        return "02.12"
    if day < date(2023, 1, 1):
        return "04.00"
    if day < date(2024, 1, 1):
        return "05.09"
    return "05.10"


def _window_of(product: Grid, footprint: Footprint) -> Grid | None:
    """The smallest window of ``product`` covering ``footprint`` (None if it covers nothing)."""
    minx, miny, maxx, maxy = footprint.polygon().bounds
    left, _, _, top = product.bounds
    res = product.resolution
    c0 = max(0, math.floor((minx - left) / res))
    c1 = min(product.width, math.ceil((maxx - left) / res))
    r0 = max(0, math.floor((top - maxy) / res))
    r1 = min(product.height, math.ceil((top - miny) / res))
    if c1 <= c0 or r1 <= r0:
        return None
    return scenes.subgrid(product, r0, c0, r1 - r0, c1 - c0)


def _crop(data: np.ndarray, product: Grid, window: Grid) -> np.ndarray:
    r0 = round((product.bounds[3] - window.bounds[3]) / product.resolution)
    c0 = round((window.bounds[0] - product.bounds[0]) / product.resolution)
    return data[..., r0 : r0 + window.height, c0 : c0 + window.width]


def _mask_fields(world: _World, product: Grid, surfaces: np.ndarray, light: Illumination,
                 opacity: np.ndarray, cirrus: np.ndarray, shadow: np.ndarray) -> MaskFields:
    """Mask inputs aggregated from 10 m onto a product grid (validity set per item later)."""
    same = product == world.grid

    def agg(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32) if same else scenes.resample_mean(a, world.grid, product)

    fractions = scenes.surface_fractions(surfaces, world.grid, product)
    return MaskFields(np.ones(product.shape, dtype=bool), fractions, agg(opacity), agg(cirrus), agg(shadow), agg(light.cast))


def _window_fields(fields: MaskFields, product: Grid, window: Grid, valid: np.ndarray) -> MaskFields:
    return MaskFields(
        valid,
        _crop(fields.fractions, product, window),
        _crop(fields.opacity, product, window),
        _crop(fields.cirrus, product, window),
        _crop(fields.cloud_shadow, product, window),
        _crop(fields.cast, product, window),
    )


def _render_optical(world: _World, plan: _Plan, stac_dir: Path, writer: _Writer) -> tuple[list[dict[str, Any]], list[SceneInfo], TrapInfo]:
    """Render, encode and write every item of an optical plan; check the trap on the result."""
    is_s2 = plan.collection == catalog.S2
    truth = world.landscape.years[plan.year]
    world_px = world.grid.height * world.grid.width
    items: list[dict[str, Any]] = []
    records: list[SceneInfo] = []
    covers: dict[str, float] = {}
    glacier_stats: dict[str, dict[int, tuple[float, float, float]]] = {}
    for a, acq in enumerate(plan.acquisitions):
        rng = _rng(world.seed, "render", plan.collection, acq.when.isoformat())
        surfaces = world.surfaces(plan.year, acq.snowline)
        light = scenes.illumination(world.landscape.dem, world.grid.resolution, world.normals, acq.sun)
        opacity, cirrus, shadow = _cloud_fields(world, acq)
        reflectance = scenes.render_reflectance(surfaces, world.texture, light, opacity, cirrus, shadow, rng,
                                                noise_sigma=0.004 if is_s2 else 0.005, noise=world.noise)
        cloudy10 = (opacity >= scenes.CLOUD_OPACITY) | (cirrus >= scenes.CIRRUS_OPACITY)
        obstructed10 = cloudy10 | (shadow >= scenes.SHADOW_STRENGTH)
        if is_s2:
            refl20 = np.stack([scenes.resample_mean(reflectance[b], world.grid, world.grid20) for b in (4, 5)])
            fields = _mask_fields(world, world.grid20, surfaces, light, opacity, cirrus, shadow)
        else:
            refl30 = np.stack([scenes.resample_mean(reflectance[b], world.grid, world.grid30) for b in range(6)])
            fields = _mask_fields(world, world.grid30, surfaces, light, opacity, cirrus, shadow)
            cloudy30 = (fields.opacity >= scenes.CLOUD_OPACITY) | (fields.cirrus >= scenes.CIRRUS_OPACITY)
        for k, item in enumerate(acq.items):
            valid10 = item.footprint.mask(world.grid)
            glacier_stats[item.item_id] = _glacier_shares(truth.glacier, valid10, cloudy10, obstructed10, plan.targets)
            if is_s2:
                baseline = _processing_baseline(acq.when.date())
                window10 = _window_of(world.grid, item.footprint)
                window20 = _window_of(world.grid20, item.footprint)
                if window10 is None or window20 is None:
                    continue
                valid20 = item.footprint.mask(window20)
                cover = _percent(cloudy10[valid10])
                wfields = _window_fields(fields, world.grid20, window20, valid20)
                scl = scenes.scene_classification(wfields)
                v10 = item.footprint.mask(window10)
                for b, key in enumerate(OPTICAL_BANDS[:4]):
                    dn = scenes.encode_s2(_crop(reflectance[b], world.grid, window10), baseline, v10)
                    writer.write(catalog.asset_path(stac_dir, catalog.S2, item.item_id, key), dn, window10, [key], nodata=0)
                for b, key in enumerate(("swir16", "swir22")):
                    dn = scenes.encode_s2(_crop(refl20[b], world.grid20, window20), baseline, valid20)
                    writer.write(catalog.asset_path(stac_dir, catalog.S2, item.item_id, key), dn, window20, [key], nodata=0)
                writer.write(catalog.asset_path(stac_dir, catalog.S2, item.item_id, "scl"), scl, window20, ["scl"], nodata=0)
                offset_in_dn = scenes.s2_has_offset(baseline)
                items.append(catalog.s2_item(
                    item.item_id, _iso(acq.when), acq.platform, item.tile, item.footprint.polygon(), world.grid.crs,
                    window10, window20, baseline, offset_in_dn, (acq.sun.zenith, acq.sun.azimuth), round(cover, 2),
                    _scl_percentages(scl, valid20), acq.orbit,
                ))
                details = {"tile": item.tile, "relative_orbit": acq.orbit, "processing_baseline": baseline,
                           "boa_offset_in_dn": offset_in_dn, "boa_offset_flag": offset_in_dn}
            else:
                window30 = _window_of(world.grid30, item.footprint)
                if window30 is None:
                    continue
                valid30 = item.footprint.mask(window30)
                cover = _percent(_crop(cloudy30, world.grid30, window30)[valid30])
                wfields = _window_fields(fields, world.grid30, window30, valid30)
                qa = scenes.qa_pixel(wfields)
                keys = list(catalog.LANDSAT_BANDS)
                for b, key in enumerate(keys):
                    dn = scenes.encode_landsat(_crop(refl30[b], world.grid30, window30), valid30)
                    writer.write(catalog.asset_path(stac_dir, catalog.LANDSAT, item.item_id, key), dn, window30, [key], nodata=0)
                writer.write(catalog.asset_path(stac_dir, catalog.LANDSAT, item.item_id, "qa_pixel"), qa, window30, ["qa_pixel"], nodata=1)
                items.append(catalog.landsat_item(
                    item.item_id, _iso(acq.when), acq.platform, acq.orbit, 27, item.footprint.polygon(), world.grid.crs,
                    window30, (acq.sun.zenith, acq.sun.azimuth), round(cover, 2),
                ))
                details = {"wrs_path": acq.orbit, "wrs_row": 27}
            covers[item.item_id] = round(cover, 2)
            records.append(SceneInfo(
                collection=plan.collection, item_id=item.item_id, year=plan.year, datetime=_iso(acq.when),
                platform=acq.platform, valid_fraction=round(float(valid10.sum()) / world_px, 4),
                cloud_cover=round(cover, 2), snowline_m=round(acq.snowline, 1), fresh_snow_m=round(acq.fresh_snow, 1),
                details={**details, "sun_zenith": round(acq.sun.zenith, 3), "sun_azimuth": round(acq.sun.azimuth, 3),
                         "cloud_height_m": round(acq.cloud_height, 1)},
            ))
    trap = _check_trap(world, plan, covers, glacier_stats)
    roles = {trap.scene: "trap", trap.clear_scene: "clear"}
    records = [replace(r, role=roles.get(r.item_id, "")) for r in records]
    return items, records, trap


def _iso(when: datetime) -> str:
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}"
    return text + "Z"


def _percent(mask: np.ndarray) -> float:
    return 100.0 * float(mask.mean()) if mask.size else 0.0


def _glacier_shares(labels: np.ndarray, valid: np.ndarray, cloudy: np.ndarray, obstructed: np.ndarray,
                    targets: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    """Per target glacier: (share inside the footprint, cloud share, cloud+shadow share)."""
    out = {}
    for g in targets:
        m = labels == g
        n = max(int(m.sum()), 1)
        out[g] = (float(valid[m].sum()) / n, float(cloudy[m].sum()) / n, float(obstructed[m].sum()) / n)
    return out


def _scl_percentages(scl: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    n = max(int(valid.sum()), 1)

    def pct(*codes: int) -> float:
        return round(100.0 * float(np.isin(scl[valid], codes).sum()) / n, 4)

    return {
        "nodata_pixel_percentage": round(100.0 * (1.0 - valid.mean()), 4),
        "dark_features_percentage": pct(scenes.SCL_DARK),
        "cloud_shadow_percentage": pct(scenes.SCL_CLOUD_SHADOW),
        "vegetation_percentage": pct(scenes.SCL_VEGETATION),
        "not_vegetated_percentage": pct(scenes.SCL_NOT_VEGETATED),
        "water_percentage": pct(scenes.SCL_WATER),
        "medium_proba_clouds_percentage": pct(scenes.SCL_CLOUD_MEDIUM),
        "high_proba_clouds_percentage": pct(scenes.SCL_CLOUD_HIGH),
        "thin_cirrus_percentage": pct(scenes.SCL_CIRRUS),
        "snow_ice_percentage": pct(scenes.SCL_SNOW),
    }


def _check_trap(world: _World, plan: _Plan, covers: dict[str, float],
                stats: dict[str, dict[int, tuple[float, float, float]]]) -> TrapInfo:
    """Verify the trap on the rendered products and describe it."""
    ta, ti = plan.trap
    ca, ci = plan.clear
    trap_id = plan.acquisitions[ta].items[ti].item_id
    clear_id = plan.acquisitions[ca].items[ci].item_id
    # The least-cloudy item may be the trap date's other tile when it hides the targets too.
    lowest = min(covers, key=lambda k: (covers[k], k))
    if lowest != trap_id and lowest in {it.item_id for it in plan.acquisitions[ta].items}:
        trap_id = lowest
    by_index = world.landscape.glacier_by_index()
    others = [c for k, c in covers.items() if k not in {it.item_id for it in plan.acquisitions[ta].items}]
    problems = []
    if lowest != trap_id or (others and min(others) < covers[trap_id] + 1.0):
        problems.append(f"the trap item {trap_id} ({covers[trap_id]} %) is not clearly the least cloudy")
    cloud_share, clear_share = {}, {}
    for g in plan.targets:
        inside, cloudy, _ = stats[trap_id][g]
        inside_c, _, obstructed = stats[clear_id][g]
        gid = by_index[g].glacier_id if g in by_index else str(g)
        cloud_share[gid], clear_share[gid] = round(cloudy, 4), round(obstructed, 4)
        if inside < 0.99 or cloudy < CLOUDED_SHARE:
            problems.append(f"glacier {gid} is not clouded in {trap_id} (inside {inside:.2f}, cloud {cloudy:.2f})")
        if inside_c < 0.99 or obstructed > CLEAR_SHARE:
            problems.append(f"glacier {gid} is not clear in {clear_id} (inside {inside_c:.2f}, obstructed {obstructed:.3f})")
    if problems:
        raise GlacimapError(f"{plan.collection} {plan.year}: scene trap not met: " + "; ".join(problems)
                            + f" (cloud cover by item: {covers})")
    return TrapInfo(
        year=plan.year, collection=plan.collection, scene=trap_id, cloud_cover=covers[trap_id],
        glacier_ids=tuple(cloud_share), clear_scene=clear_id, cloud_share=cloud_share, clear_share=clear_share,
    )


def _falsify_boa_flag(items: list[dict[str, Any]], records: list[SceneInfo], traps: list[TrapInfo]) -> tuple[str, ...]:
    """Make ``earthsearch:boa_offset_applied`` wrong on one Sentinel-2 item, as on some real ones.

    The victim is the clear item of the last year's trap (the one a per-glacier choice picks),
    so the pipeline meets it. The DNs keep the encoding of the item's processing baseline; only
    the flag and the raster:bands offset that follows it lie.
    """
    s2_traps = [t for t in traps if t.collection == catalog.S2]
    if not s2_traps:
        return ()
    victim = max(s2_traps, key=lambda t: t.year).clear_scene
    for item in items:
        if item["id"] != victim:
            continue
        flag = not item["properties"]["earthsearch:boa_offset_applied"]
        item["properties"]["earthsearch:boa_offset_applied"] = flag
        for key in catalog.S2_BANDS:
            item["assets"][key]["raster:bands"][0]["offset"] = -0.1 if flag else 0.0
    for i, rec in enumerate(records):
        if rec.item_id == victim:
            records[i] = replace(rec, details={**rec.details, "boa_offset_flag": not rec.details["boa_offset_flag"]})
    return (victim,)


# =================================================================================================
# Sentinel-1
# =================================================================================================
#: (orbit state, relative orbit, UTC hour, minute, heading deg): evening ascending passes see
#: wet snow, early-morning descending passes see it refrozen.
_S1_PASSES = (("ascending", 117, 17, 12, 348.0), ("descending", 168, 5, 25, 192.0))
_S1_INCIDENCE = 39.0


#: First day and orbit offset of each Sentinel-1 satellite: relative = (absolute - offset) % 175 + 1.
_S1_EPOCH = {"sentinel-1a": (date(2014, 4, 3), 73), "sentinel-1b": (date(2016, 4, 25), 27)}


def _s1_passes(year: int, relative: int) -> list[tuple[date, str, int]]:
    """(date, platform, absolute orbit) of every pass over ``relative`` in the window."""
    platforms = ["sentinel-1a"] + (["sentinel-1b"] if 2017 <= year <= 2021 else [])
    out = []
    for platform in platforms:
        start, offset = _S1_EPOCH[platform]
        # Absolute orbit n starts about (n - 1) * 12 / 175 days after the first one.
        k0 = math.floor(((date(year, *WINDOW[0]) - start).days * 175 / 12 - offset - relative) / 175) - 1
        for k in range(k0, k0 + 10):
            absolute = offset + (relative - 1) + 175 * k
            day = start + timedelta(days=int((absolute - 1) * 12 // 175))
            if date(year, *WINDOW[0]) <= day <= date(year, *WINDOW[1]):
                out.append((day, platform, absolute))
    return out


def _render_s1(world: _World, year: int, stac_dir: Path, writer: _Writer) -> tuple[list[dict[str, Any]], list[SceneInfo]]:
    rng = _rng(world.seed, "s1 plan", year)
    passes = []
    for state, relative, hour, minute, heading in _S1_PASSES:
        for day, platform, absolute in _pick_spread(rng, _s1_passes(year, relative), S1_PER_ORBIT_STATE, key=lambda c: c[0]):
            passes.append((day, platform, absolute, state, relative, hour, minute, heading))
    passes.sort()
    polygon = Footprint(world.bounds, ()).polygon()
    valid = np.ones(world.grid.shape, dtype=bool)
    items, records = [], []
    for day, platform, absolute, state, relative, hour, minute, heading in passes:
        start = datetime(day.year, day.month, day.day, hour, minute, int(rng.integers(0, 60)), tzinfo=timezone.utc)
        stop = start + timedelta(seconds=25)
        datatake = (absolute * 7919 + 12345) % 0xFFFFFF
        item_id = (f"S1{platform[-1].upper()}_IW_GRDH_1SDV_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_"
                   f"{absolute:06d}_{datatake:06X}")
        snowline, fresh = _snowline(world, year, day, rng)
        surfaces = world.surfaces(year, snowline)
        sensor_azimuth = (heading - 90.0) % 360.0  # right-looking: the sensor is left of the target
        cos_local = scenes.cos_incidence(world.normals, _S1_INCIDENCE, sensor_azimuth)
        radar_shadow = scenes.cast_shadow(world.landscape.dem, world.grid.resolution, 90.0 - _S1_INCIDENCE, sensor_azimuth)
        wet = state == "ascending"
        sigma0 = scenes.render_backscatter(surfaces, cos_local, radar_shadow, wet, _S1_INCIDENCE,
                                           _rng(world.seed, "speckle", item_id))
        for p, pol in enumerate(("vv", "vh")):
            writer.write(catalog.asset_path(stac_dir, catalog.S1, item_id, pol), sigma0[p], world.grid, [pol],
                      nodata=scenes.SAR_NODATA)
        iso = _iso(start)
        items.append(catalog.s1_item(item_id, iso, platform, state, relative, absolute, polygon, world.grid.crs,
                                     world.grid, scenes.SAR_NODATA))
        records.append(SceneInfo(
            collection=catalog.S1, item_id=item_id, year=year, datetime=iso, platform=platform,
            valid_fraction=round(float(valid.mean()), 4), cloud_cover=None, snowline_m=round(snowline, 1),
            fresh_snow_m=round(fresh, 1), details={"orbit_state": state, "relative_orbit": relative, "wet_snow": wet},
        ))
    return items, records


# =================================================================================================
# DEM
# =================================================================================================
def _write_dem(world: _World, stac_dir: Path, writer: _Writer) -> tuple[list[dict[str, Any]], list[SceneInfo]]:
    items, records = [], []
    to_lonlat = Transformer.from_crs(world.grid.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = world.bounds
    half = world.grid.resolution / 2.0
    centres = shapely.segmentize(box(left + half, bottom + half, right - half, top - half), 100.0)
    world_ll = shapely.transform(centres, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    for tile in scenes.dem_tiles(world.landscape.dem, world.grid):
        path = catalog.asset_path(stac_dir, catalog.DEM, tile.item_id, "data")
        writer.write(path, tile.data, tile.grid, ["data"], nodata=scenes.DEM_NODATA)
        footprint = world_ll.intersection(box(*tile.grid.bounds))
        item = catalog.dem_item(tile.item_id, footprint, tile.grid, scenes.DEM_NODATA)
        items.append(item)
        records.append(SceneInfo(
            collection=catalog.DEM, item_id=tile.item_id, year=int(item["properties"]["datetime"][:4]),
            datetime=item["properties"]["datetime"], platform=item["properties"]["platform"],
            valid_fraction=round(footprint.area / world_ll.area, 4), cloud_cover=None, snowline_m=None,
            fresh_snow_m=None, details={"lon": tile.lon, "lat": tile.lat, "shape": list(tile.data.shape),
                                        "valid_pixels": int((tile.data != scenes.DEM_NODATA).sum())},
        ))
    return items, records


# =================================================================================================
# A tiny hand-made landscape for tests and examples
# =================================================================================================
def toy_landscape(size_px: int = 300, seed: int = 0, years: Sequence[int] = (2015, 2023)) -> Landscape:
    """A small cone-shaped mountain with two glaciers, debris, a lake and shrinking ice.

    For tests that must not depend on the full landscape generator: centred on 11 E / 47 N
    (so it still needs four DEM tiles), 10 m pixels, glacier 1 on the northern flank with a
    debris-covered tongue, glacier 2 on the eastern flank with a lake below its snout, the
    ELA mid-way up both, meadows in the lowest corners of the default 3 km square.
    """
    res = 10.0
    crs = utm_crs(11.0, 47.0)
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(11.0, 47.0)
    half = size_px * res / 2.0
    grid = Grid.from_bounds((x - half, y - half, x - half + size_px * res, y - half + size_px * res), crs, res)
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width].astype(np.float32)
    dx = (cols + 0.5 - grid.width / 2.0) * res  # metres east of the centre
    dy = (grid.height / 2.0 - rows - 0.5) * res  # metres north of the centre
    r = np.hypot(dx, dy)
    rough = scenes.fractal_noise(grid.shape, np.random.default_rng(seed), beta=3.0)
    dem = 3300.0 - 0.6 * r + 120.0 * np.exp(-((dy / 200.0) ** 2) - (dx / 900.0) ** 2) + 10.0 * rough
    angle = np.degrees(np.arctan2(dx, dy)) % 360.0  # 0 north, 90 east
    glaciers = (GlacierInfo(1, "SYN-00001", "SYN-C0001"), GlacierInfo(2, "SYN-00002", "SYN-C0002"))
    truths = {}
    for k, year in enumerate(sorted(years)):
        shrink = 30.0 * k
        label = np.zeros(grid.shape, dtype=np.int32)
        label[((angle < 25) | (angle > 335)) & (r > 120) & (r < 800 - shrink)] = 1
        label[(angle > 70) & (angle < 110) & (r > 120) & (r < 480 - shrink)] = 2
        debris = (label == 1) & (r > 660 - shrink)
        lakes = (angle > 80) & (angle < 100) & (r > 540) & (r < 600)
        truths[year] = YearTruth(year, 3080.0 + 30.0 * k, label, debris, lakes)
    config = WorldConfig(seed=seed, size_m=size_px * res, years=tuple(sorted(years)))
    return Landscape(config=config, grid=grid, dem=dem.astype(np.float32), glaciers=glaciers, years=truths)
