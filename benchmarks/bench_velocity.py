"""Speed and accuracy of `glacimap velocity` (method ncc) on the real Yahtse pair.

    python benchmarks/bench_velocity.py                  # everything below, about a minute
    python benchmarks/bench_velocity.py --quick          # a 512 x 512 px crop, one repeat, no variants
    python benchmarks/bench_velocity.py --figure docs/img/velocity-yahtse.png   # the docs' figure

Data: ../shared/data/yahtse (Landsat-8 band 8, 15 m, 2016-07-18 and 2016-08-03, with 42 bedrock
polygons); without it, a synthetic textured pair of the same size stands in (throughput only).

Measures, in one run:

1. Throughput: points per second of the whole ncc stage (tracking, outlier test, smoothing,
   co-registration, velocities) for the default settings and a few variants (best of
   ``--repeats``).
2. Stable-rock error: median and NMAD of speed (m/a) over the points on the bedrock polygons,
   for the ncc method (defaults and variants) and for a plain phase-correlation tracker (32 px
   Sobel-magnitude templates every 16 px, same window in both images, peak upsampled 10x by a
   matrix DFT, as scikit-image's ``phase_cross_correlation`` with ``upsample_factor=10`` does),
   with and without removing its own stable-ground shift; plus the median speed of the calving
   tongue (:data:`FRONT_BOX`) to show the fast flow is resolved.
3. Synthetic: RMSE (pixels) of the ncc tracker on a texture moved by a known Gaussian glacier
   flow (peak 2.35 px, the test suite's pair).

Writes a table to stdout and JSON to benchmarks/out/bench_velocity.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from scipy import fft as sfft
from scipy import ndimage

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _common import OUT_DIR, ROOT, machine_info, print_and_write

from glacimap.rasters import Grid
from glacimap.velocity import (
    DAYS_PER_YEAR,
    TrackingParams,
    _read_polygons,
    quicklook,
    rasterize_geometries,
    read_acquisition,
    stable_error,
    to_velocity,
    track,
    velocity_field,
)
from glacimap.workspace import atomic_path

NAME = "bench_velocity"
YAHTSE = ROOT.parent / "shared" / "data" / "yahtse"
IMAGE_A = "LC80630182016200LGN00_B8_yahtse.TIF"
IMAGE_B = "LC80630182016216LGN00_B8_yahtse.TIF"
#: The lower Yahtse tongue, 1.5-4.5 km above the calving front (EPSG:32607, metres).
FRONT_BOX = (478_600.0, 6_667_500.0, 480_600.0, 6_670_500.0)
#: Crop of the quick run (rows, cols): the tongue and the large rock area east of it.
QUICK_WINDOW = (slice(400, 912), slice(880, 1392))
MAX_SPEED = 10_000.0  # m/a, the settings' default


def load_pair(quick: bool) -> dict[str, Any]:
    """The Yahtse pair (cropped when quick) with its rock mask, or a synthetic stand-in."""
    if (YAHTSE / IMAGE_A).exists():
        a = read_acquisition(YAHTSE / IMAGE_A)
        b = read_acquisition(YAHTSE / IMAGE_B)
        days = (b.when - a.when).total_seconds() / 86400.0
        rows, cols = QUICK_WINDOW if quick else (slice(None), slice(None))
        grid = a.grid
        if quick:
            grid = Grid(grid.crs, grid.transform * Affine.translation(cols.start, rows.start),
                        rows.stop - rows.start, cols.stop - cols.start)
        rock = rasterize_geometries(_read_polygons(YAHTSE / "stable_rock.gpkg", grid, "stable ground"), grid)
        return {"name": "Yahtse (Landsat-8 B8, 15 m)", "a": a.data[rows, cols], "b": b.data[rows, cols],
                "grid": grid, "days": days, "rock": rock, "real": True}
    size = (512, 512) if quick else (1087, 1698)
    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.normal(size=(size[0] + 8, size[1] + 8)), 1.5)
    grid = Grid("EPSG:32607", Affine(15.0, 0, 465_000.0, 0, -15.0, 6_681_000.0), *size)
    return {"name": "synthetic stand-in (no ../shared data)", "a": base[4:-4, 4:-4], "b": base[2:-6, 5:-3],
            "grid": grid, "days": 16.0, "rock": None, "real": False}


def params_for(pair: dict[str, Any], **changes: Any) -> TrackingParams:
    pixel = abs(pair["grid"].transform.a)
    base = TrackingParams(max_displacement=MAX_SPEED * pair["days"] / DAYS_PER_YEAR / pixel, fft_workers=-1)
    return replace(base, **changes)


def run_ncc(pair: dict[str, Any], params: TrackingParams, smooth: int = 3, coregister: bool = True,
            repeats: int = 1) -> tuple[Any, float]:
    """The ncc stage on the pair; (field, best seconds of ``repeats``)."""
    best = float("inf")
    field = None
    for _ in range(repeats):
        start = time.perf_counter()
        field = velocity_field(pair["a"], pair["b"], pair["grid"], pair["days"], params, stable=pair["rock"],
                               smooth=smooth, coregister=coregister)
        best = min(best, time.perf_counter() - start)
    return field, best


def phase_correlation_baseline(a: np.ndarray, b: np.ndarray, template: int = 32, step: int = 16,
                               upsample: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A plain phase-correlation tracker: (dy, dx, point rows, point cols) in pixels.

    Sobel-magnitude images; at every point the same ``template`` window of both images; the
    normalised cross-power spectrum's peak, refined on a 1/``upsample`` grid over +-1.5 px by
    a matrix DFT (Guizar-Sicairos et al. 2008). No search window, no outlier test.
    """
    sobel_a = np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1))
    sobel_b = np.hypot(ndimage.sobel(b, 0), ndimage.sobel(b, 1))
    ny, nx = a.shape[0] // step, a.shape[1] // step
    centres_y = np.arange(ny) * step + step / 2
    centres_x = np.arange(nx) * step + step / 2
    top = (centres_y - template / 2).astype(int) + template
    left = (centres_x - template / 2).astype(int) + template
    rows, cols = (g.ravel() for g in np.meshgrid(top, left, indexing="ij"))
    view_a = np.lib.stride_tricks.sliding_window_view(np.pad(sobel_a, template), (template, template))
    view_b = np.lib.stride_tricks.sliding_window_view(np.pad(sobel_b, template), (template, template))
    dy = np.empty(len(rows))
    dx = np.empty(len(rows))
    freqs = sfft.fftfreq(template) * template
    span = np.arange(-int(1.5 * upsample), int(1.5 * upsample) + 1) / upsample
    for start in range(0, len(rows), 1024):
        sl = slice(start, start + 1024)
        cross = sfft.fft2(view_b[rows[sl], cols[sl]]) * np.conj(sfft.fft2(view_a[rows[sl], cols[sl]]))
        cross /= np.maximum(np.abs(cross), 1e-12)
        surface = sfft.ifft2(cross).real
        py, px = np.divmod(surface.reshape(len(surface), -1).argmax(axis=1), template)
        py = np.where(py > template // 2, py - template, py)
        px = np.where(px > template // 2, px - template, px)
        ey = np.exp(2j * np.pi * (py[:, None] + span)[:, :, None] * freqs / template)
        ex = np.exp(2j * np.pi * (px[:, None] + span)[:, :, None] * freqs / template)
        fine = np.matmul(np.matmul(ey, cross), ex.transpose(0, 2, 1)).real
        uy, ux = np.divmod(fine.reshape(len(fine), -1).argmax(axis=1), len(span))
        dy[sl] = py + span[uy]
        dx[sl] = px + span[ux]
    return dy.reshape(ny, nx), dx.reshape(ny, nx), centres_y, centres_x


def _points_mask(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return mask[np.ix_(np.floor(rows).astype(int), np.floor(cols).astype(int))]


def baseline_errors(pair: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    dy, dx, rows, cols = phase_correlation_baseline(pair["a"], pair["b"])
    seconds = time.perf_counter() - start
    pixel = abs(pair["grid"].transform.a)
    rock = _points_mask(pair["rock"], rows, cols)
    vx, vy, speed = to_velocity(dx, dy, pixel, pixel, pair["days"])
    raw = stable_error(vx, vy, speed, rock)
    use = rock & np.isfinite(dx)
    cx, cy = dx - np.median(dx[use]), dy - np.median(dy[use])
    vx, vy, speed = to_velocity(cx, cy, pixel, pixel, pair["days"])
    corrected = stable_error(vx, vy, speed, rock)
    return {"raw": raw, "coregistered": corrected, "seconds": seconds, "points": int(dx.size),
            "front": front_speed(speed, pair["grid"], rows, cols)}


def front_speed(speed: np.ndarray, grid: Grid, rows: np.ndarray, cols: np.ndarray) -> dict[str, Any]:
    xs, ys = grid.transform * np.meshgrid(cols, rows)
    left, bottom, right, top = FRONT_BOX
    inside = (xs > left) & (xs < right) & (ys > bottom) & (ys < top)
    values = speed[inside & np.isfinite(speed)]
    return {"points": int(inside.sum()), "valid": int(values.size),
            "median": float(np.median(values)) if values.size else None}


def synthetic_rmse() -> dict[str, float]:
    """The test suite's Gaussian-glacier pair (exact warp of a plane-wave texture)."""
    rng = np.random.default_rng(0)
    waves = 400
    freq = rng.uniform(0.01, 0.35, waves)
    theta = rng.uniform(0, 2 * np.pi, waves)
    phase = rng.uniform(0, 2 * np.pi, waves)
    fx, fy, amp = freq * np.cos(theta), freq * np.sin(theta), 1.0 / freq
    size = 192
    rows, cols = np.mgrid[0:size, 0:size].astype(float)

    def render(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return sum(amp[k] * np.cos(2 * np.pi * (fx[k] * x + fy[k] * y) + phase[k]) for k in range(waves))

    def flow(row: np.ndarray) -> np.ndarray:
        return 2.35 * np.exp(-(((row - size / 2) / (size / 3)) ** 2))

    a, b = render(cols, rows), render(cols - flow(rows), rows)
    out = {}
    for kind in ("orientation", "gradient"):
        tracked = track(a, b, params=TrackingParams(max_displacement=6, preprocess=kind))
        truth = flow(np.meshgrid(tracked.rows, tracked.cols, indexing="ij")[0])
        out[kind] = float(np.sqrt(np.nanmean((tracked.dx - truth) ** 2 + tracked.dy**2)))
    return out


def variants(quick: bool) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, TrackingParams changes, velocity_field options)."""
    rows = [("ncc defaults (orientation, 32 px / 16 px, 3x3 median, co-registered)", {}, {})]
    if quick:
        return rows
    return rows + [
        ("ncc, no co-registration", {}, {"coregister": False}),
        ("ncc, no smoothing", {}, {"smooth": 1}),
        ("ncc, 5x5 median smoothing", {}, {"smooth": 5}),
        ("ncc, gradient images", {"preprocess": "gradient"}, {}),
        ("ncc, 64 px templates", {"template": 64}, {}),
        ("ncc, 32 px templates every 8 px", {"step": 8}, {}),
    ]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    pair = load_pair(args.quick)
    result: dict[str, Any] = {"data": pair["name"], "shape": list(pair["a"].shape), "days": round(pair["days"], 4)}
    rows = []
    first = None
    for label, changes, options in variants(args.quick):
        params = params_for(pair, **changes)
        field, seconds = run_ncc(pair, params, repeats=args.repeats if not rows else 1, **options)
        first = first or field
        row: dict[str, Any] = {
            "method": label, "template": params.template, "step": params.step, "points": int(field.valid.size),
            "seconds": round(seconds, 3), "points_per_second": field.valid.size / seconds,
            "valid_share": float(np.isfinite(field.speed).mean()),
        }
        if pair["rock"] is not None:
            row.update(rock_points=field.stable.get("points", 0), rock_median=field.stable.get("speed_median"),
                       rock_nmad=field.stable.get("speed_nmad"))
            g = field.grid
            centres_r = (np.arange(g.height) + 0.5) * params.step
            centres_c = (np.arange(g.width) + 0.5) * params.step
            row["front_median"] = front_speed(field.speed, pair["grid"], centres_r, centres_c)["median"]
        rows.append(row)
    result["ncc"] = rows
    if pair["rock"] is not None:
        base = baseline_errors(pair)
        result["baseline"] = base
        result["coregistration_px"] = list(first.offset_px) if first.offset_px else None
    if not args.quick:
        result["synthetic_rmse_px"] = synthetic_rmse()
    if args.figure is not None and first is not None:
        with atomic_path(args.figure) as tmp:
            quicklook(tmp, pair["a"], pair["grid"], first,
                      f"Yahtse, Landsat-8 B8, 2016-07-18 -> 2016-08-03 ({pair['days']:.0f} days): glacimap velocity (ncc)")
        result["figure"] = str(args.figure)
    return result


def tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    columns = ["method", "points", "seconds", "points/s", "valid share"]
    has_rock = "baseline" in result
    if has_rock:
        columns += ["rock median (m/a)", "rock NMAD (m/a)", "front median (m/a)"]
    body = []
    for row in result["ncc"]:
        line = [row["method"], row["points"], row["seconds"], row["points_per_second"], row["valid_share"]]
        if has_rock:
            line += [row["rock_median"], row["rock_nmad"], row["front_median"]]
        body.append(line)
    if has_rock:
        base = result["baseline"]
        points = base["points"]
        body.append(["plain phase correlation (Sobel, 32/16 px, 10x)", points, round(base["seconds"], 3),
                     points / base["seconds"], 1.0, base["raw"]["speed_median"], base["raw"]["speed_nmad"],
                     base["front"]["median"]])
        body.append(["plain phase correlation, co-registered", points, None, None, 1.0,
                     base["coregistered"]["speed_median"], base["coregistered"]["speed_nmad"], None])
    out.append({"title": f"glacimap velocity (ncc) on {result['data']}, {result['shape'][0]} x {result['shape'][1]} px, "
                         f"{result['days']:.1f} days", "columns": columns, "rows": body})
    if "synthetic_rmse_px" in result:
        out.append({"title": "Synthetic Gaussian glacier (peak 2.35 px): RMSE of the displacement",
                    "columns": ["preprocessing", "RMSE (px)"],
                    "rows": [[k, v] for k, v in result["synthetic_rmse_px"].items()]})
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 512 x 512 px crop, one repeat, defaults only")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds of the default run (3; quick 1)")
    parser.add_argument("--figure", type=Path, default=None, help="write the default run's quick-look PNG here")
    parser.add_argument("--json", type=Path, default=OUT_DIR / f"{NAME}.json")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    quiet = logging.getLogger("glacimap.velocity")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        result: dict[str, Any] = {"benchmark": NAME, "quick": args.quick, "machine": machine_info()}
        result.update(measure(args))
    finally:
        quiet.setLevel(level)
    default = result["ncc"][0]
    result["summary"] = {
        "points_per_second": round(default["points_per_second"], 1),
        "rock_median_m_per_a": default.get("rock_median"),
        "rock_nmad_m_per_a": default.get("rock_nmad"),
        "front_median_m_per_a": default.get("front_median"),
    }
    if "baseline" in result:
        result["summary"]["baseline_rock_median_m_per_a"] = result["baseline"]["raw"]["speed_median"]
        result["summary"]["baseline_rock_nmad_m_per_a"] = result["baseline"]["raw"]["speed_nmad"]
    result["tables"] = tables(result)
    print_and_write(NAME, result, args.json)
    return result


if __name__ == "__main__":
    main()
