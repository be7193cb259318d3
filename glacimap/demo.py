"""``glacimap demo``: the whole chain, offline, on the synthetic glacier world.

The demo generates the world (or reuses it), starts the local STAC API over it and then runs
exactly what a user runs against Earth Search - ``fetch`` (2015 and 2023), ``predict``,
``outlines``, ``change`` and ``evaluate`` - through the same settings objects and functions as
the CLI, with only the STAC URL changed. It finishes with a summary of the acceptance numbers
(cloud over glaciers, IoU per year, regional change against the truth, time per stage).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from glacimap.errors import OutputExistsError
from glacimap.settings import (
    ChangeSettings,
    DemoSettings,
    EvaluateSettings,
    FetchSettings,
    OutlinesSettings,
    PredictSettings,
)
from glacimap.workspace import write_json_atomic

log = logging.getLogger(__name__)

YEAR_FROM, YEAR_TO = 2015, 2023


@dataclass
class DemoResult:
    """The demo's acceptance numbers."""

    world: Path
    work: Path
    glaciers: int = 0
    cloud_chosen: dict[int, float] = field(default_factory=dict)
    cloud_naive: dict[int, float] = field(default_factory=dict)
    iou: dict[int, float] = field(default_factory=dict)  # over the glaciers observed that year
    observed: dict[int, int] = field(default_factory=dict)  # glaciers with a chip that year
    rate_pred: float | None = None  # regional relative rate of the kept glaciers, %/a
    rate_truth: float | None = None  # truth rate of the same glaciers, %/a
    rate_truth_region: float | None = None  # truth rate of every glacier of the world, %/a
    units_compared: int = 0  # kept change units (glaciers, or families of splits/merges)
    median_abs_error: float | None = None  # per unit, |predicted - truth| relative rate, %/a
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    figure: Path | None = None
    generate_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


@contextmanager
def _timed(result: DemoResult, stage: str) -> Iterator[None]:
    started = time.perf_counter()
    log.info("demo: %s", stage)
    yield
    result.seconds[stage] = round(time.perf_counter() - started, 2)


def truth_areas(world: Path, year: int) -> dict[str, float]:
    """Truth area (km2) of every glacier of the world in ``year``, by glacier id."""
    from glacimap.vectors import read_layer

    truth = read_layer(world / "truth" / str(year) / "outlines.gpkg", "outlines")
    return dict(zip(truth["glacier_id"].astype(str), truth["area_km2"].astype(float)))


def compare_with_truth(
    units: pd.DataFrame, world: Path, year_from: int, year_to: int
) -> tuple[float, float, float, int]:
    """Truth rates (%/a) of the kept change units and of the whole world, the median |error|
    of the units' rates, and their count.

    A unit's truth area is the sum over its member glaciers (a glacier gone from the truth
    counts 0 km2), so the predicted and the true rates describe the same ice.
    """
    start, end = truth_areas(world, year_from), truth_areas(world, year_to)
    dt = year_to - year_from

    def rate(a0: Any, a1: Any) -> Any:
        return 100.0 * (a1 - a0) / (a0 * dt)

    kept = units[units["kept"].astype(bool)]
    members = kept["glacier_ids"].str.split(";")
    t0 = members.map(lambda ids: sum(start.get(i, 0.0) for i in ids)).astype(float)
    t1 = members.map(lambda ids: sum(end.get(i, 0.0) for i in ids)).astype(float)
    error = (kept["rel_rate_pct_a"] - rate(t0, t1)).abs().dropna()
    regional = float(rate(t0.sum(), t1.sum())) if t0.sum() > 0 else float("nan")
    region = float(rate(sum(start.values()), sum(end.values())))
    return regional, region, float(error.median()) if len(error) else float("nan"), len(kept)


def run_demo(settings: DemoSettings) -> DemoResult:
    """Generate, serve, and run the chain (see module docstring)."""
    from glacimap.synthetic import WorldConfig, generate_world, load_world

    root = Path(settings.work).absolute()
    world_dir, work = root / "world", root / "work"
    if settings.size_km is not None:
        config = WorldConfig(seed=settings.seed, size_m=settings.size_km * 1000.0)
    else:
        config = WorldConfig.small(settings.seed) if settings.small else WorldConfig(seed=settings.seed)
    result = DemoResult(world=world_dir, work=work, generate_only=settings.generate_only)
    with _timed(result, "generate"):
        _world(world_dir, config, settings.overwrite, generate_world, load_world)
    result.figure = world_dir / "figure.png"
    if settings.generate_only:
        return result

    from glacimap.synthetic.serve import serve_catalog

    common = {"work": work, "overwrite": settings.overwrite, "scheduler": settings.scheduler, "workers": settings.workers}
    with serve_catalog(world_dir / "stac") as stac:
        for year in (YEAR_FROM, YEAR_TO):
            with _timed(result, f"fetch {year}"):
                fetched = _fetch(FetchSettings(
                    inventory=world_dir / "inventory_2015.gpkg", year=year, stac_url=stac.stac_url, **common))
            result.glaciers = fetched.glaciers
            result.cloud_chosen[year] = fetched.mean_cloud_chosen
            result.cloud_naive[year] = fetched.mean_cloud_naive
    from glacimap.change import run_change
    from glacimap.metrics import run_evaluate
    from glacimap.outlines import run_outlines
    from glacimap.predict import run_predict

    for year in (YEAR_FROM, YEAR_TO):
        with _timed(result, f"predict {year}"):
            run_predict(PredictSettings(year=year, model=settings.model, **common))
        with _timed(result, f"outlines {year}"):
            outlines = run_outlines(OutlinesSettings(year=year, split_divides=True, work=work, overwrite=True))
        with _timed(result, f"evaluate {year}"):
            reference, observed = _observed_truth(world_dir, work, year)
            report = run_evaluate(EvaluateSettings(
                pred=outlines.path, ref=reference, out=work / "evaluation" / f"{year}.json", work=work, overwrite=True))
            result.iou[year] = float(report.to_dict()["overlap"]["iou"])
            result.observed[year] = observed
    with _timed(result, "change"):
        change = run_change(ChangeSettings(year_from=YEAR_FROM, year_to=YEAR_TO, work=work, overwrite=True))
    result.rate_pred = float(change.regional["rel_rate_pct_a"])
    result.rate_truth, result.rate_truth_region, result.median_abs_error, result.units_compared = (
        compare_with_truth(change.units, world_dir, YEAR_FROM, YEAR_TO))
    result.report = Path(change.out_dir) / "report.html"
    write_json_atomic(work / "demo-summary.json", result.to_dict())
    return result


def _observed_truth(world_dir: Path, work: Path, year: int) -> tuple[Path, int]:
    """The year's truth outlines of the glaciers that got a chip (the others were not seen:
    every candidate scene was too cloudy), written next to the evaluation report."""
    from glacimap.fetch import read_manifest
    from glacimap.vectors import read_layer, write_layers
    from glacimap.workspace import Workspace

    manifest = read_manifest(Workspace(work), year)
    seen = set(manifest.loc[manifest["status"] == "ok", "glacier_id"])
    truth = read_layer(world_dir / "truth" / str(year) / "outlines.gpkg", "outlines")
    path = work / "evaluation" / f"truth_{year}_observed.gpkg"
    write_layers(path, {"outlines": truth[truth["glacier_id"].isin(seen)]})
    return path, len(seen)


def _world(world_dir: Path, config: Any, overwrite: bool, generate_world: Any, load_world: Any) -> Any:
    """Reuse a world generated with the same configuration; otherwise generate it."""
    if (world_dir / "world.json").exists() and not overwrite:
        info = load_world(world_dir)
        if info.config == config:
            log.info("reusing the synthetic world in %s", world_dir)
            return info
        raise OutputExistsError(
            f"{world_dir} holds a world of another configuration; use another --work folder or --overwrite"
        )
    return generate_world(config, world_dir, overwrite=overwrite)


def _fetch(settings: FetchSettings) -> Any:
    from glacimap.errors import PartialFailureError
    from glacimap.fetch import run_fetch

    try:
        return run_fetch(settings)
    except PartialFailureError as exc:  # a glacier without a clear scene: reported, chain goes on
        log.warning("%s", exc)
        return exc.result


def format_summary(result: DemoResult) -> str:
    """The demo's closing summary."""
    if result.generate_only:
        return f"synthetic world: {result.world}\nfigure: {result.figure}"
    lines = [f"glaciers processed: {result.glaciers}"]
    for year in sorted(result.cloud_chosen):
        lines.append(
            f"{year}: mean cloud over glaciers {result.cloud_chosen[year]:.2%} (per-glacier choice) vs "
            f"{result.cloud_naive[year]:.2%} (least-cloudy tile); IoU vs truth {result.iou.get(year, float('nan')):.3f} "
            f"over the {result.observed.get(year, 0)} glaciers observed"
        )
    if result.rate_pred is not None and result.rate_truth is not None:
        lines.append(
            f"regional area change {YEAR_FROM}-{YEAR_TO} of the {result.units_compared} glaciers kept: "
            f"{result.rate_pred:+.2f} %/a (truth {result.rate_truth:+.2f} %/a, difference "
            f"{result.rate_pred - result.rate_truth:+.2f} %/a; truth of the whole region {result.rate_truth_region:+.2f} %/a); "
            f"per glacier median |error| {result.median_abs_error:.2f} %/a"
        )
    lines.append("time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
    lines.append(f"report: {result.report}")
    return "\n".join(lines)
