"""``glacimap fetch``: per-glacier cloud-minimising scene selection and 10 m chips.

:func:`run_fetch` plans the whole load before reading a pixel (one STAC search per product for
the region, then the candidate scenes of each glacier), runs one task per glacier (locally or
on dask) that scores its candidates over the glacier and writes its chip, and writes the
year's ``manifest.parquet`` and ``candidates.parquet``. See docs/fetch.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from glacimap.errors import InputNotFoundError, InvalidInputError, OutputExistsError
from glacimap.fetch.chips import FetchParams, build_chip, glacier_grid, read_selection
from glacimap.fetch.plan import GlacierJob, Scene, acquisition_key, mosaic_scene
from glacimap.fetch.profiles import Sensor, get_profile
from glacimap.fetch.search import footprint_coverage, open_client, search_scenes, window_dates
from glacimap.inventory import load_inventory, save_inventory
from glacimap.parallel import Task, TaskOutcome, raise_if_failed, run_tasks, spatial_groups
from glacimap.settings import FetchSettings
from glacimap.workspace import Workspace, atomic_path, clean_stale_temporaries, safe_stem

log = logging.getLogger(__name__)

#: First year for which ``--sensor auto`` picks Sentinel-2 (full two-satellite coverage).
S2_FIRST_YEAR = 2016
MANIFEST_COLUMNS = (
    "glacier_id", "file_stem", "status", "reason", "sensor", "platform", "scene_ids", "date",
    "cloud_fraction", "coverage", "snow_index", "tile_cloud", "valid_fraction", "naive_scene_id",
    "naive_cloud_fraction", "sar_scene_ids", "dem_scene_ids", "n_candidates",
)


@dataclass(frozen=True)
class FetchResult:
    """What a fetch run did; also printed by the CLI."""

    year: int
    glaciers: int
    ok: int
    skipped: int
    failed: int
    mean_cloud_chosen: float
    mean_cloud_naive: float
    manifest: Path
    candidates: Path
    #: what one task fetched: "glaciers", or "tiles" in wall-to-wall (--aoi) mode
    unit: str = "glaciers"


def optical_sensors(sensors: tuple[str, ...], year: int) -> list[Sensor]:
    """The optical sensors to search: ``auto`` is Sentinel-2 from 2016 on, Landsat before."""
    chosen: list[Sensor] = []
    for sensor in sensors:
        if sensor == "auto":
            chosen.append("s2" if year >= S2_FIRST_YEAR else "landsat")
        elif sensor in ("s2", "landsat"):
            chosen.append(sensor)  # type: ignore[arg-type]
    if not chosen:
        chosen.append("s2" if year >= S2_FIRST_YEAR else "landsat")
    return list(dict.fromkeys(chosen))


def prepare_inventory(settings: FetchSettings, workspace: Workspace) -> gpd.GeoDataFrame:
    inventory = load_inventory(settings.inventory, settings.id_column)  # type: ignore[arg-type]
    if workspace.inventory.exists() and not settings.overwrite:
        existing = load_inventory(workspace.inventory)
        if sorted(existing["glacier_id"]) != sorted(inventory["glacier_id"]):
            raise OutputExistsError(
                f"{workspace.inventory} holds another inventory than {settings.inventory}; "
                "use another --work folder or pass --overwrite"
            )
        return existing
    save_inventory(inventory, workspace.inventory)
    return inventory


def plan_jobs(
    inventory: gpd.GeoDataFrame,
    optical: list[Scene],
    dem: list[Scene],
    sar: list[Scene],
    settings: FetchSettings,
) -> tuple[list[GlacierJob], dict[str, str]]:
    """One job per glacier with its N least tile-cloudy covering acquisitions; glaciers without any.

    Tiles of one acquisition (same sensor, platform, day and orbit) that touch the glacier are
    mosaicked into one candidate, so a glacier on a tile edge is still covered.
    """
    jobs, unplanned = [], {}
    degree_buffer = settings.buffer / 111_000.0
    for row in inventory.itertuples():
        geometry = row.geometry
        grid, _ = glacier_grid(geometry, settings.resolution, settings.chip_margin)
        area = geometry.buffer(degree_buffer)
        touching: dict[tuple, list[Scene]] = {}
        for scene in optical:
            if footprint_coverage(scene, area) > 0:
                touching.setdefault(acquisition_key(scene), []).append(scene)
        acquisitions = [mosaic_scene(tiles) for tiles in touching.values()]
        covering = [s for s in acquisitions if footprint_coverage(s, area) >= settings.min_coverage]
        covering.sort(key=lambda s: (s.tile_cloud if s.tile_cloud is not None else np.inf, s.id))
        if not covering:
            unplanned[row.glacier_id] = "no scene in the window covers the glacier"
            continue
        chip_area = shapely.box(*_grid_lonlat_bounds(grid))
        jobs.append(
            GlacierJob(
                glacier_id=row.glacier_id,
                geometry_wkb=shapely.to_wkb(geometry),
                grid=grid,
                candidates=tuple(covering[: settings.candidates]),
                dem_scenes=tuple(sorted((s for s in dem if footprint_coverage(s, chip_area) > 0), key=lambda s: s.id)),
                sar_scenes=tuple(s for s in sar if footprint_coverage(s, area) >= settings.min_coverage),
            )
        )
    return jobs, unplanned


def _grid_lonlat_bounds(grid: Any) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    return transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)


def _fetch_task(payload: dict[str, Any], output: Path) -> dict[str, Any]:
    return build_chip(payload["job"], payload["params"], output)


def plan_window(settings: FetchSettings, inventory: gpd.GeoDataFrame) -> tuple[date, date, date, tuple[float, ...]]:
    """Acquisition window (start, end), target date and search bbox of the region."""
    centre = inventory.geometry.union_all().centroid
    start, end = window_dates(settings.year, centre.y, settings.window, settings.target_date, settings.days)
    target = settings.target_date or start + (end - start) / 2
    minx, miny, maxx, maxy = inventory.total_bounds
    pad = (settings.chip_margin + settings.buffer) / 111_000.0 * 2
    return start, end, target, (minx - pad, miny - pad, maxx + pad, maxy + pad)


def fetch_params(settings: FetchSettings, target: date, requester_pays: bool = False) -> FetchParams:
    """The plain values a fetch task needs."""
    return FetchParams(
        buffer=settings.buffer,
        min_coverage=settings.min_coverage,
        max_cloud=settings.max_cloud,
        target=target,
        composite=settings.composite,
        requester_pays=requester_pays,
        resolution=settings.resolution,
    )


def run_fetch(settings: FetchSettings, progress: Callable[[TaskOutcome, int], None] | None = None) -> FetchResult:
    """Fetch chips for every glacier of the inventory (see module docstring)."""
    if settings.aoi is not None:
        from glacimap.fetch.aoi import run_fetch_aoi

        return run_fetch_aoi(settings, progress)
    workspace = Workspace(settings.work)
    if workspace.aoi.exists() and not settings.overwrite:
        raise OutputExistsError(
            f"{workspace.root} holds a wall-to-wall (--aoi) run; use another --work folder for "
            "--inventory or pass --overwrite"
        )
    if settings.backend == "sentinelhub":
        from glacimap.fetch.sentinelhub import run_fetch_sentinelhub

        return run_fetch_sentinelhub(settings, progress)
    inventory = prepare_inventory(settings, workspace)
    start, end, target, bbox = plan_window(settings, inventory)
    profile = get_profile(settings.profile, settings.stac_url)
    client = open_client(profile)
    optical: list[Scene] = []
    for sensor in optical_sensors(settings.sensors, settings.year):
        optical += search_scenes(client, profile, sensor, bbox, start, end, settings.max_tile_cloud)
    dem = search_scenes(client, profile, "dem", bbox, start, end)
    if not dem:
        raise InvalidInputError(f"no DEM tiles ({profile.products['dem'].collection}) at {profile.url} cover the inventory")
    sar = search_scenes(client, profile, "s1", bbox, start, end) if "s1" in settings.sensors else []

    jobs, unplanned = plan_jobs(inventory, optical, dem, sar, settings)
    params = fetch_params(settings, target, profile.requester_pays)
    centres = [shapely.from_wkb(job.geometry_wkb).centroid for job in jobs]
    groups = spatial_groups([(c.x, c.y) for c in centres], settings.workers)
    tasks = [
        Task(job.glacier_id, workspace.chip(settings.year, job.glacier_id), {"job": job, "params": params}, group)
        for job, group in zip(jobs, groups)
    ]
    return finish_run(tasks, _fetch_task, unplanned, len(inventory), workspace, settings, progress)


def finish_run(
    tasks: list[Task],
    task_function: Callable[[dict[str, Any], Path], Any],
    unplanned: dict[str, str],
    glaciers: int,
    workspace: Workspace,
    settings: FetchSettings,
    progress: Callable[[TaskOutcome, int], None] | None = None,
) -> FetchResult:
    """Run the per-glacier tasks, write manifest and candidates, summarise (any backend)."""
    chips_dir = workspace.chips_dir(settings.year)
    chips_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(chips_dir)
    outcomes = run_tasks(
        tasks, task_function, overwrite=settings.overwrite, scheduler=settings.scheduler,
        workers=settings.workers, progress=progress,
    )
    records = _records(outcomes, tasks, unplanned)
    manifest, candidates = _write_tables(records, workspace, settings.year)
    ok = [r for r in records if r["status"] == "ok"]
    result = FetchResult(
        year=settings.year,
        glaciers=glaciers,
        ok=sum(o.status == "ok" and o.value["status"] == "ok" for o in outcomes),
        skipped=sum(o.status == "skipped" for o in outcomes),
        failed=len(records) - len(ok),
        mean_cloud_chosen=float(np.mean([r["cloud_fraction"] for r in ok])) if ok else float("nan"),
        mean_cloud_naive=float(np.nanmean([r["naive_cloud_fraction"] for r in ok])) if ok else float("nan"),
        manifest=manifest,
        candidates=candidates,
        unit="tiles" if settings.aoi is not None else "glaciers",
    )
    # one outcome per glacier: the record's status decides (a task can end "ok" with no chip)
    per_glacier = [
        TaskOutcome(r["glacier_id"], "ok" if r["status"] == "ok" else "failed", r.get("reason")) for r in records
    ]
    raise_if_failed(per_glacier, "glaciers", manifest, result)
    return result


def _naive_choice(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The least tile-cloudy candidate: what a per-region choice would have used."""
    usable = [c for c in candidates if c["coverage"] is not None and c["coverage"] > 0]
    return min(usable, key=lambda c: (c["tile_cloud"], c["scene_id"]), default=None)


def _records(outcomes: list[TaskOutcome], tasks: list[Task], unplanned: dict[str, str]) -> list[dict[str, Any]]:
    records = []
    by_key = {t.key: t for t in tasks}
    for outcome in outcomes:
        if outcome.status == "ok":
            record = dict(outcome.value)
        elif outcome.status == "skipped":
            record = read_selection(by_key[outcome.key].output)
        else:
            record = {"glacier_id": outcome.key, "status": "failed", "reason": outcome.reason, "candidates": []}
        records.append(record)
    for gid, reason in unplanned.items():
        records.append({"glacier_id": gid, "status": "no_valid_data", "reason": reason, "candidates": []})
    for record in records:
        naive = _naive_choice(record.get("candidates", []))
        record["naive_scene_id"] = naive["scene_id"] if naive else None
        record["naive_cloud_fraction"] = naive["cloud_fraction"] if naive else None
        record["n_candidates"] = len(record.get("candidates", []))
    return records


def _write_tables(records: list[dict[str, Any]], workspace: Workspace, year: int) -> tuple[Path, Path]:
    rows, candidate_rows = [], []
    for record in records:
        row = {column: record.get(column) for column in MANIFEST_COLUMNS}
        row["file_stem"] = safe_stem(record["glacier_id"])
        for key in ("scene_ids", "sar_scene_ids", "dem_scene_ids"):
            row[key] = ",".join(row[key] or [])
        rows.append(row)
        chosen = set(record.get("scene_ids") or [])
        for candidate in record.get("candidates", []):
            candidate_rows.append(candidate | {"chosen": candidate["scene_id"] in chosen})
    manifest = workspace.manifest(year)
    candidates = workspace.candidates(year)
    with atomic_path(manifest) as tmp:
        pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_parquet(tmp, index=False)
    columns = ["glacier_id", "scene_id", "coverage", "cloud_fraction", "snow_index", "tile_cloud",
               "days_from_target", "rejected", "rank", "chosen"]
    with atomic_path(candidates) as tmp:
        pd.DataFrame(candidate_rows, columns=columns).to_parquet(tmp, index=False)
    return manifest, candidates


def read_manifest(workspace: Workspace, year: int) -> pd.DataFrame:
    """The manifest of a year's chips."""
    path = workspace.manifest(year)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no chips for {year}; run glacimap fetch --year {year} first")
    return pd.read_parquet(path)


__all__ = [
    "FetchResult", "fetch_params", "finish_run", "optical_sensors", "plan_jobs", "plan_window",
    "prepare_inventory", "read_manifest", "run_fetch",
]
