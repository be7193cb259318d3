"""Time `glacimap split` (Kienholz method) and extrapolate it to a mountain range.

    python benchmarks/bench_divides.py                  # everything below, about two minutes
    python benchmarks/bench_divides.py --quick          # 76 and 40 m Ötztal, small synthetic world
    python benchmarks/bench_divides.py --synthetic-seeds 42 7 1 3
    python benchmarks/bench_divides.py --json out.json
    python benchmarks/bench_divides.py --figure docs/img/divides-oetztal.png   # the docs' figure

Measures, in one run:

1. Ötztal (../shared/data/oetztal: 20 RGI outlines dissolved into 7 complexes, SRTM): the DEM
   is read once for the region (reprojected to UTM at 76 m), then resampled bilinearly to
   40, 20 and 10 m to time the same complexes at finer grids. Per complex and in total:
   seconds, ice cells, glaciers, RGI glaciers recovered, area-weighted IoU.
2. The synthetic world (glacimap.synthetic, 10 m DEM, truth divides known): for each seed the
   ``default`` preset (20 km, about 120 glaciers; ``--quick``: the 4 km ``small`` preset), the
   truth glaciers of the inventory year dissolved into complexes, split and matched against
   the truth: recovered share (the issue's target is >= 90 %), the same over the glaciers of
   multi-glacier complexes only, area-weighted IoU, time.
3. Reference implementations on the same data: our vectorised basin labelling (pointer
   jumping) against a naive flood upstream from each pour point; our distance-weighted D8 +
   richdem accumulation against richdem's own D8 (time and receiver agreement).
4. Reading the DEM once per region: the synthetic world's DEM written as a COG and read back
   with ``read_dem_region`` (cells per second), next to the Ötztal SRTM read-and-reproject.
5. Scaling: a power law t = b * n^k fitted to total time against ice cells (k is printed), and
   per complex t = a + b * n^k over all complexes of the synthetic world(s) with k free;
   extrapolated to the European Alps at 10 m (about 4,000 glaciers, 1,800 km2) from the
   synthetic world (whose glaciers are about the Alps' mean size), from the finest Ötztal run,
   and for 4,000 separate complexes, plus reading the DEM for every 0.25-degree tile of the
   glacierised Alps' bounding box.

Writes a table to stdout and JSON to benchmarks/out/bench_divides.json.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
import richdem
import shapely
from affine import Affine
from scipy import ndimage

from glacimap._quiet import quiet_stderr
from glacimap.divides import (
    KienholzParams,
    accumulate_d8,
    d8_receivers,
    dissolve_complexes,
    fill_depressions,
    fill_voids,
    match_glaciers,
    match_summary,
    outlets_naive,
    outlets_within,
    read_dem_region,
    receivers_from_direction,
    smooth_dem,
    smoothing_reach_px,
    split_complexes,
)
from glacimap.rasters import Grid, write_cog
from glacimap.workspace import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
OETZTAL = ROOT.parent / "shared" / "data" / "oetztal"
ALPS_GLACIERS = 4000
ALPS_AREA_KM2 = 1800.0
ALPS_RES = 10.0
#: Bounding box of the glacierised European Alps (lon/lat), for the DEM read estimate.
ALPS_BBOX = (5.5, 45.5, 13.5, 47.5)


def resample(dem: np.ndarray, grid: Grid, res: float) -> tuple[np.ndarray, Grid]:
    """Bilinear resampling of a region DEM to ``res`` metres on the same origin."""
    factor = grid.resolution / res
    out = ndimage.zoom(dem, factor, order=1)
    transform = Affine(res, 0.0, grid.transform.c, 0.0, -res, grid.transform.f)
    return out, Grid(grid.crs, transform, out.shape[0], out.shape[1])


def time_split(complexes: gpd.GeoDataFrame, dem: np.ndarray, grid: Grid, params: KienholzParams, repeats: int) -> dict:
    """Split every complex: the whole (smoothing included) and each complex alone (the DEM
    smoothed beforehand), best of ``repeats`` runs on this shared machine."""
    totals = []
    for _ in range(repeats):
        start = time.perf_counter()
        glaciers = split_complexes(complexes, dem, grid, params, id_column="complex_id")
        totals.append(time.perf_counter() - start)
    total = min(totals)
    smoothed = smooth_dem(fill_voids(dem), grid.resolution, params)
    unsmoothed = KienholzParams(smoothing="none", **_rest(params))
    per = []
    for cid, geom in zip(complexes["complex_id"], complexes.geometry):
        one = complexes[complexes["complex_id"] == cid]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            split_complexes(one, smoothed, grid, unsmoothed, id_column="complex_id")
            times.append(time.perf_counter() - t0)
        cells = int(rasterio.features.geometry_mask([geom], grid.shape, grid.transform, invert=True).sum())
        per.append({"complex_id": cid, "cells": cells, "seconds": min(times)})
    return {"glaciers": glaciers, "seconds": total, "per_complex": per, "cells": sum(p["cells"] for p in per)}


def _rest(params: KienholzParams) -> dict:
    from dataclasses import asdict

    values = asdict(params)
    values.pop("smoothing")
    return values


def oetztal_figure(path: Path, truth: gpd.GeoDataFrame, glaciers: gpd.GeoDataFrame, dem: np.ndarray, grid: Grid, summary: dict) -> None:
    """RGI glaciers beside our split of their complexes, on a hillshade of the DEM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LightSource

    from glacimap.workspace import atomic_path

    shade = LightSource(azdeg=315, altdeg=45).hillshade(fill_voids(dem), dx=grid.resolution, dy=grid.resolution)
    left, bottom, right, top = grid.bounds
    x0, y0, x1, y1 = truth.total_bounds
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharex=True, sharey=True)
    palette = plt.get_cmap("tab20")
    for ax, frame, title in (
        (axes[0], truth, f"RGI 5: {len(truth)} glaciers"),
        (axes[1], glaciers, (f"glacimap split (kienholz): {len(glaciers)} glaciers, "
                             f"{summary['recovered']}/{summary['glaciers']} RGI recovered, IoU {summary['area_weighted_iou']:.2f}")),
    ):
        ax.imshow(shade, cmap="gray", extent=(left, right, bottom, top), vmin=0, vmax=1.3)
        colours = [palette(i % 20) for i in range(len(frame))]
        frame.plot(ax=ax, color=colours, alpha=0.55, linewidth=0)
        frame.boundary.plot(ax=ax, color="black", linewidth=0.9)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(x0 - 500, x1 + 500)
        ax.set_ylim(y0 - 500, y1 + 500)
        ax.set_xlabel(f"easting (m, {grid.crs})")
    truth.boundary.plot(ax=axes[1], color="#d62728", linewidth=0.5, linestyle=(0, (3, 2)))
    axes[0].set_ylabel("northing (m)")
    axes[1].set_ylabel("")
    fig.suptitle(f"Ötztal: 20 RGI outlines dissolved into 7 complexes, split on SRTM at {grid.resolution:.0f} m "
                 "(right: our glaciers, black; RGI outlines, dashed red)", fontsize=10)
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def oetztal_runs(resolutions: list[float], params: KienholzParams, repeats: int, figure: Path | None = None) -> tuple[list[dict], dict]:
    rgi = gpd.read_file(OETZTAL / "rgi_oetztal.shp")
    from glacimap.rasters import utm_crs

    centre = shapely.union_all(rgi.geometry.values).centroid
    rgi = rgi.to_crs(utm_crs(centre.x, centre.y))
    complexes = dissolve_complexes(rgi)
    t0 = time.perf_counter()
    dem, grid = read_dem_region(OETZTAL / "srtm_oetztal.tif", complexes.geometry, 2000.0, list(complexes["complex_id"]))
    read_s = time.perf_counter() - t0
    truth = rgi.rename(columns={"RGIId": "glacier_id"})
    rows = []
    grids = {}
    for res in resolutions:
        d, g = (dem, grid) if math.isclose(res, grid.resolution) else resample(dem, grid, res)
        grids[res] = (d, g)
        run = time_split(complexes, d, g, params, repeats)
        summary = match_summary(match_glaciers(truth, run["glaciers"]))
        if figure is not None and d is dem:
            oetztal_figure(figure, rgi, run["glaciers"], d, g, summary)
        rows.append({
            "data": "oetztal", "resolution_m": g.resolution, "complexes": len(complexes), "cells": run["cells"],
            "grid_cells": d.size, "seconds": run["seconds"], "glaciers_out": len(run["glaciers"]),
            "truth_glaciers": summary["glaciers"], "recovered_share": summary["recovered_share"],
            "area_weighted_iou": summary["area_weighted_iou"], "per_complex": run["per_complex"],
        })
    return rows, {"complexes": complexes, "grids": grids, "read_s": read_s}


def ridge_world(n: int, res: float = 10.0, seed: int = 0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, np.ndarray, Grid]:
    """n x n two-cirque complexes (1.2 x 1.6 km ellipses) on ridges; truth: north and south halves."""
    cell_x, cell_y = 1600.0, 2000.0
    cols, rows = int(n * cell_x / res), int(n * cell_y / res)
    grid = Grid("EPSG:32632", Affine(res, 0.0, 600_000.0, 0.0, -res, 5_200_000.0), rows, cols)
    rr, cc = np.mgrid[0:rows, 0:cols]
    x, y = (cc + 0.5) * res, (rr + 0.5) * res
    dx = np.mod(x, cell_x) - cell_x / 2
    dy = np.mod(y, cell_y) - cell_y / 2
    rng = np.random.default_rng(seed)
    dem = 3000.0 - 0.35 * np.abs(dy) + 0.0015 * dx**2 + rng.normal(0.0, 0.5, grid.shape)
    complexes, truth = [], []
    for i in range(n):
        for j in range(n):
            cx = 600_000.0 + (j + 0.5) * cell_x
            cy = 5_200_000.0 - (i + 0.5) * cell_y
            geom = shapely.affinity.scale(shapely.Point(cx, cy).buffer(1.0, quad_segs=32), 600.0, 800.0)
            cid = f"R{i:02d}{j:02d}"
            complexes.append((cid, geom))
            truth.append((f"{cid}N", geom.intersection(shapely.box(cx - 1e4, cy, cx + 1e4, cy + 1e4))))
            truth.append((f"{cid}S", geom.intersection(shapely.box(cx - 1e4, cy - 1e4, cx + 1e4, cy))))
    cpx = gpd.GeoDataFrame({"complex_id": [c for c, _ in complexes]}, geometry=[g for _, g in complexes], crs=grid.crs)
    tru = gpd.GeoDataFrame({"glacier_id": [t for t, _ in truth]}, geometry=[g for _, g in truth], crs=grid.crs)
    return cpx, tru, dem, grid


def synthetic_world(preset: str, seed: int) -> dict:
    """A generated world's truth glaciers of the inventory year, their complexes and its DEM."""
    from glacimap.synthetic.glaciers import generate_landscape
    from glacimap.synthetic.model import WorldConfig
    from glacimap.synthetic.truth import reference_year, truth_outlines

    config = WorldConfig.small(seed) if preset == "small" else WorldConfig(seed=seed)
    t0 = time.perf_counter()
    landscape = generate_landscape(config)
    generate_s = time.perf_counter() - t0
    year = reference_year(landscape)
    truth = truth_outlines(landscape, year)
    return {
        "name": f"synthetic {preset} seed {seed}", "preset": preset, "seed": seed, "year": year,
        "truth": truth, "complexes": dissolve_complexes(truth), "dem": landscape.dem.astype(np.float64),
        "grid": landscape.grid, "generate_s": generate_s,
    }


def synthetic_run(world: dict, params: KienholzParams, repeats: int) -> dict:
    """Split a synthetic world's complexes and match the result against its truth glaciers."""
    run = time_split(world["complexes"], world["dem"], world["grid"], params, repeats)
    matches = match_glaciers(world["truth"], run["glaciers"])
    summary = match_summary(matches)
    per_complex = world["truth"].groupby("complex_id")["glacier_id"].transform("size").to_numpy()
    multi = matches["recovered"].to_numpy()[per_complex > 1]
    return {
        "data": world["name"], "resolution_m": world["grid"].resolution, "complexes": len(world["complexes"]),
        "cells": run["cells"], "grid_cells": world["dem"].size, "seconds": run["seconds"],
        "glaciers_out": len(run["glaciers"]), "truth_glaciers": summary["glaciers"],
        "recovered_share": summary["recovered_share"], "area_weighted_iou": summary["area_weighted_iou"],
        "multi_glacier_truth": int(multi.size), "multi_glacier_recovered_share": float(multi.mean()) if multi.size else 1.0,
        "truth_area_km2": float(world["truth"].area.sum() / 1e6), "generate_s": world["generate_s"],
        "unrecovered_area_km2": [round(float(a), 4) for a in matches.loc[~matches["recovered"], "area_km2"]],
        "per_complex": run["per_complex"],
    }


def dem_read_rate(world: dict, margin_m: float, directory: Path) -> dict:
    """Cells per second of ``read_dem_region`` on the world's DEM written as a COG (projected, no
    reprojection): one read covering all of its complexes, as ``run_split`` does per region."""
    path = write_cog(directory / "bench_divides_dem.tif", world["dem"].astype(np.float32), world["grid"], ["elevation"])
    try:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            dem, _ = read_dem_region(path, world["complexes"].geometry, margin_m, list(world["complexes"]["complex_id"]))
            times.append(time.perf_counter() - t0)
    finally:
        path.unlink(missing_ok=True)
    return {"cells": int(dem.size), "seconds": min(times), "cells_per_s": dem.size / min(times)}


def alps_tile_cells(res: float = ALPS_RES) -> tuple[int, float]:
    """0.25-degree tiles in :data:`ALPS_BBOX` and DEM cells in all of them at ``res`` metres."""
    from glacimap.divides import REGION_TILE_DEG

    west, south, east, north = ALPS_BBOX
    tiles, cells = 0, 0.0
    for lat in np.arange(south, north, REGION_TILE_DEG):
        mid = math.radians(lat + REGION_TILE_DEG / 2)
        width = REGION_TILE_DEG * 111_320.0 * math.cos(mid)
        height = REGION_TILE_DEG * 110_574.0
        n = round((east - west) / REGION_TILE_DEG)
        tiles += n
        cells += n * (width / res) * (height / res)
    return tiles, cells


def reference_ratios(dem: np.ndarray, grid: Grid, complexes: gpd.GeoDataFrame, params: KienholzParams) -> dict:
    """Our basin labelling and D8 against reference implementations, on one complex window."""
    geom = complexes.geometry.iloc[2]  # the third-largest complex (11 km2, 2 glaciers): seconds to flood
    r0, r1, c0, c1 = _window_of(geom, grid, params.buffer_px + 1)
    window = smooth_dem(fill_voids(dem), grid.resolution, params)[r0:r1, c0:c1]
    transform = grid.transform @ Affine.translation(c0, r0)
    ice = rasterio.features.geometry_mask([geom], window.shape, transform, invert=True)
    solid = ndimage.binary_fill_holes(ice)
    gutter = ndimage.binary_dilation(solid, structure=np.ones((3, 3), bool)) & ~solid
    z = fill_depressions(window)
    z[gutter] -= params.gutter_depth_m
    receivers = d8_receivers(z, grid.resolution)
    active = (ice | gutter).ravel()

    t0 = time.perf_counter()
    fast = outlets_within(receivers, active)
    fast_s = time.perf_counter() - t0
    outlets = np.unique(fast[active])
    t0 = time.perf_counter()
    slow = outlets_naive(receivers, active, outlets.tolist())
    slow_s = time.perf_counter() - t0
    same = float(np.mean(fast[active] == slow[active]))

    t0 = time.perf_counter()
    ours = d8_receivers(z, grid.resolution)
    accumulate_d8(ours, z.shape)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with quiet_stderr():  # richdem draws a progress bar on file descriptor 2
        arr = richdem.rdarray(z, no_data=-1.0e30)
        arr.geotransform = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        props = richdem.FlowProportions(arr, method="D8")
        props.geotransform = arr.geotransform
        richdem.FlowAccumFromProps(props)
    rd_s = time.perf_counter() - t0
    p = np.asarray(props)
    flows = (p[..., 0] == 0) & (p[..., 1:].max(axis=-1) > 0)
    rd_receivers = receivers_from_direction(np.where(flows, p[..., 1:].argmax(axis=-1), -1).astype(np.int8))
    interior = np.zeros(z.shape, bool)
    interior[1:-1, 1:-1] = True
    agree = float(np.mean(ours.reshape(z.shape)[interior] == rd_receivers.reshape(z.shape)[interior]))
    return {
        "window_cells": int(z.size), "active_cells": int(active.sum()), "pour_points": int(outlets.size),
        "basins_pointer_jumping_s": fast_s, "basins_naive_flood_s": slow_s, "basins_speedup": slow_s / fast_s,
        "basins_identical_share": same,
        "d8_ours_plus_accumulation_s": ours_s, "d8_richdem_s": rd_s, "d8_time_ratio_ours_over_richdem": ours_s / rd_s,
        "d8_receiver_agreement": agree,
    }


def _window_of(geom: shapely.Geometry, grid: Grid, margin: int) -> tuple[int, int, int, int]:
    inv = ~grid.transform
    c0, r0 = inv @ (geom.bounds[0], geom.bounds[3])
    c1, r1 = inv @ (geom.bounds[2], geom.bounds[1])
    return (max(int(r0) - margin, 0), min(math.ceil(r1) + margin, grid.height),
            max(int(c0) - margin, 0), min(math.ceil(c1) + margin, grid.width))


def fit_power(cells: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log t = log b + k log n; returns (k, b)."""
    k, log_b = np.polyfit(np.log(cells), np.log(seconds), 1)
    return float(k), float(math.exp(log_b))


def fit_per_complex(cells: np.ndarray, seconds: np.ndarray, k: float) -> tuple[float, float]:
    """Non-negative a, b of t = a + b * n^k (k fixed), least squares in relative error so the
    many small complexes weigh as much as the few large ones."""
    from scipy.optimize import nnls

    design = np.column_stack([np.ones_like(cells, dtype=float), cells.astype(float) ** k]) / seconds[:, None]
    (a, b), _ = nnls(design, np.ones_like(seconds))
    return float(a), float(b)


def fit_per_complex_free(cells: np.ndarray, seconds: np.ndarray) -> tuple[float, float, float]:
    """t = a + b * n^k with k free too (scanned over 0.5-1.5): returns (k, a, b)."""
    best = (math.inf, 1.0, 0.0, 0.0)
    for k in np.arange(0.5, 1.5001, 0.01):
        a, b = fit_per_complex(cells, seconds, float(k))
        residual = float(np.sum(((a + b * cells.astype(float) ** k) / seconds - 1.0) ** 2))
        if residual < best[0]:
            best = (residual, float(k), a, b)
    return best[1], best[2], best[3]


def scaling_summary(runs: list[dict], read: dict | None) -> dict:
    """Exponents and the extrapolation to the European Alps at 10 m."""
    alps_cells = ALPS_AREA_KM2 * 1e6 / ALPS_RES**2
    out: dict = {"alps_cells": alps_cells, "alps_glaciers": ALPS_GLACIERS, "alps_area_km2": ALPS_AREA_KM2}
    oz = sorted((r for r in runs if r["data"] == "oetztal"), key=lambda r: r["cells"])
    if len(oz) >= 2:
        cells = np.array([r["cells"] for r in oz], dtype=float)
        secs = np.array([r["seconds"] for r in oz])
        k_all, b_all = fit_power(cells, secs)
        k_fine, _ = fit_power(cells[-2:], secs[-2:])  # where per-cell work dominates fixed costs
        finest = oz[-1]
        out.update({
            "oetztal_k_all": k_all, "oetztal_b_all": b_all, "oetztal_k_finest_two": k_fine,
            "alps_s_oetztal_fitted_k": finest["seconds"] * (alps_cells / finest["cells"]) ** k_fine,
            "alps_s_oetztal_linear": finest["seconds"] * alps_cells / finest["cells"],
            "oetztal_finest_m": finest["resolution_m"],
        })
    syn = [r for r in runs if r["data"].startswith("synthetic")]
    if syn:
        per = [p for r in syn for p in r["per_complex"]]
        cells = np.array([p["cells"] for p in per], dtype=float)
        secs = np.array([p["seconds"] for p in per])
        k, a, b = fit_per_complex_free(cells, secs)
        large = cells >= 10_000  # complexes of 1 km2 and more at 10 m: the per-cell work dominates
        k_large = fit_power(cells[large], secs[large])[0] if large.sum() >= 3 else float("nan")
        total_s = sum(r["seconds"] for r in syn)
        total_cells = sum(r["cells"] for r in syn)
        total_glaciers = sum(r["truth_glaciers"] for r in syn)
        out.update({
            "synthetic_complexes": int(cells.size), "per_complex_k": k, "per_complex_overhead_s": a, "per_complex_b": b,
            "per_complex_k_large": k_large,
            "synthetic_cells_per_s": total_cells / total_s,
            # The Alps as copies of the synthetic world: the same mix of complex sizes.
            "alps_s_synthetic_cells": total_s * alps_cells / total_cells,
            "alps_s_synthetic_glaciers": total_s * ALPS_GLACIERS / total_glaciers,
            "alps_s_equal_complexes": ALPS_GLACIERS * (a + b * (alps_cells / ALPS_GLACIERS) ** k),
            "complex_100km2_s": a + b * 1.0e6**k,
        })
    if read is not None:
        tiles, tile_cells = alps_tile_cells()
        out.update({"dem_read_cells_per_s": read["cells_per_s"], "alps_tiles": tiles, "alps_tile_cells": tile_cells,
                    "alps_dem_read_s": tile_cells / read["cells_per_s"]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Ötztal at 76 and 40 m only, the small synthetic world")
    parser.add_argument("--synthetic-preset", choices=["default", "small"], default=None,
                        help="synthetic world preset (default: 'default', with --quick 'small')")
    parser.add_argument("--synthetic-seeds", type=int, nargs="*", default=[42], help="synthetic worlds to split")
    parser.add_argument("--ridge-n", type=int, nargs="*", default=[2, 4, 6], help="ridge worlds of n x n complexes")
    parser.add_argument("--figure", type=Path, default=None, help="also draw the Ötztal comparison (docs/img/divides-oetztal.png)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "bench_divides.json")
    args = parser.parse_args(argv)
    params = KienholzParams()
    preset = args.synthetic_preset or ("small" if args.quick else "default")
    results: dict = {"python": sys.version.split()[0], "machine": platform.machine(), "processor": platform.processor(),
                     "params": {k: v for k, v in params.__dict__.items()}, "runs": []}
    resolutions = [76.0, 40.0] if args.quick else [76.0, 40.0, 20.0, 10.0]

    if (OETZTAL / "rgi_oetztal.shp").exists():
        rows, oz = oetztal_runs(resolutions, params, args.repeats, args.figure)
        results["oetztal_read_dem_s"] = oz["read_s"]
        results["runs"].extend(rows)
        dem, grid = oz["grids"][20.0 if 20.0 in oz["grids"] else resolutions[-1]]
        results["reference_ratios"] = {"resolution_m": grid.resolution, **reference_ratios(dem, grid, oz["complexes"], params)}
    else:
        print(f"skipping Ötztal: {OETZTAL} not found", file=sys.stderr)

    read = None
    for seed in args.synthetic_seeds:
        world = synthetic_world(preset, seed)
        results["runs"].append(synthetic_run(world, params, args.repeats))
        if read is None:
            margin_m = (params.buffer_px + 3 + smoothing_reach_px(world["grid"].resolution, params)) * world["grid"].resolution
            read = dem_read_rate(world, margin_m, args.json.parent)
            results["dem_read"] = {"data": world["name"], **read}
    for n in ([2, 4] if args.quick else args.ridge_n):
        complexes, truth, dem, grid = ridge_world(n)
        run = time_split(complexes, dem, grid, params, args.repeats)
        summary = match_summary(match_glaciers(truth, run["glaciers"]))
        results["runs"].append({"data": f"ridge world {n}x{n}", "resolution_m": grid.resolution, "complexes": len(complexes),
                                "cells": run["cells"], "grid_cells": dem.size, "seconds": run["seconds"],
                                "glaciers_out": len(run["glaciers"]), "truth_glaciers": summary["glaciers"],
                                "recovered_share": summary["recovered_share"],
                                "area_weighted_iou": summary["area_weighted_iou"], "per_complex": run["per_complex"]})
    scaling = scaling_summary(results["runs"], read)
    results["scaling"] = scaling
    print_report(results)
    write_json_atomic(args.json, results)
    print(f"\nwrote {args.json}")
    return 0


def print_report(results: dict) -> None:
    """The runs table, the reference ratios and the scaling, on stdout."""
    print(f"{'data':<28}{'res m':>6}{'cpx':>5}{'ice cells':>11}{'seconds':>9}{'out':>5}{'truth':>6}{'recov':>7}"
          f"{'multi':>7}{'IoU':>6}")
    for r in results["runs"]:
        multi = f"{r['multi_glacier_recovered_share']:>7.0%}" if "multi_glacier_recovered_share" in r else f"{'':>7}"
        print(f"{r['data']:<28}{r['resolution_m']:>6.0f}{r['complexes']:>5}{r['cells']:>11,}{r['seconds']:>9.2f}"
              f"{r['glaciers_out']:>5}{r['truth_glaciers']:>6}{r['recovered_share']:>7.0%}{multi}{r['area_weighted_iou']:>6.2f}")
    print("(recov: truth glaciers recovered, > 50 % overlap of both; multi: the same over the glaciers of "
          "multi-glacier complexes; IoU: area-weighted)")
    if "reference_ratios" in results:
        rr = results["reference_ratios"]
        print(f"\nbasin labelling ({rr['resolution_m']:.0f} m) on {rr['active_cells']:,} cells, {rr['pour_points']} pour points: pointer jumping "
              f"{rr['basins_pointer_jumping_s'] * 1e3:.1f} ms vs naive flood {rr['basins_naive_flood_s']:.2f} s "
              f"-> {rr['basins_speedup']:.0f}x faster, identical on {rr['basins_identical_share']:.1%} of cells")
        print(f"D8 + accumulation on {rr['window_cells']:,} cells: ours {rr['d8_ours_plus_accumulation_s'] * 1e3:.1f} ms, "
              f"richdem D8 {rr['d8_richdem_s'] * 1e3:.1f} ms (ratio {rr['d8_time_ratio_ours_over_richdem']:.2f}); "
              f"receivers agree on {rr['d8_receiver_agreement']:.1%} of cells")
    sc = results["scaling"]
    print()
    if "oetztal_k_all" in sc:
        print(f"scaling, Ötztal (same 7 complexes at several resolutions): t = {sc['oetztal_b_all']:.2e} * "
              f"cells^{sc['oetztal_k_all']:.2f}; between the two finest grids k = {sc['oetztal_k_finest_two']:.2f}")
    if "per_complex_k" in sc:
        print(f"scaling, per complex ({sc['synthetic_complexes']} synthetic complexes): t = {sc['per_complex_overhead_s'] * 1e3:.1f} ms + "
              f"{sc['per_complex_b']:.2e} * cells^{sc['per_complex_k']:.2f} (complexes >= 1 km2 alone: k = {sc['per_complex_k_large']:.2f}); "
              f"a 100 km2 complex at 10 m: {sc['complex_100km2_s']:.1f} s")
    print(f"Alps at 10 m ({ALPS_GLACIERS} glaciers, {ALPS_AREA_KM2:.0f} km2 = {sc['alps_cells']:,.0f} ice cells), one core:")
    if "alps_s_synthetic_cells" in sc:
        print(f"  {sc['alps_s_synthetic_cells'] / 60:.1f} min as copies of the synthetic world (by ice cells; "
              f"{sc['alps_s_synthetic_glaciers'] / 60:.1f} min by glacier count), "
              f"{sc['alps_s_equal_complexes'] / 60:.1f} min as {ALPS_GLACIERS} separate complexes")
    if "alps_s_oetztal_linear" in sc:
        print(f"  {sc['alps_s_oetztal_linear'] / 60:.1f} min from the Ötztal {sc['oetztal_finest_m']:.0f} m run (k = 1), "
              f"{sc['alps_s_oetztal_fitted_k'] / 60:.1f} min with its finest-grid k")
    if "alps_dem_read_s" in sc:
        print(f"  reading the DEM: {sc['dem_read_cells_per_s'] / 1e6:.0f} Mcells/s, so {sc['alps_dem_read_s'] / 60:.1f} min for all "
              f"{sc['alps_tiles']} 0.25-degree tiles of {ALPS_BBOX} ({sc['alps_tile_cells']:.2e} cells; an upper bound: "
              "only tiles holding glaciers are read)")


if __name__ == "__main__":
    sys.exit(main())
