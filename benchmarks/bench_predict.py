"""Throughput of the predict stage against a bare forward pass and MONAI; memory of the strip engine.

    python benchmarks/bench_predict.py             # 6 chips of ~700^2 px, tile 384; memory at 2,000^2 and 20,000^2
    python benchmarks/bench_predict.py --quick     # 3 chips of ~200^2 px, tile 128; memory at 500^2 and 2,000^2

1. Throughput (megapixels of chip per second) of ``glacimap.predict.run_predict`` on a temporary
   workspace (COG chips with every chip band, a manifest, a randomly initialised ``glavitu-s``
   saved as a weights file, CPU, fp32) against the model's bare forward pass on exactly the tiles
   the stage runs (recorded from ``predict_chips``; same tile, overlap 0.5, batch size;
   ``torch.inference_mode``, no I/O, no blending). The stage's ratio to the bare forward pass is
   the share of time spent in the network; the goal is >= 0.90 (tiling, reading, normalising,
   blending, confidence and writing COGs cost < 10 %). The stage's tile engine alone, on chips
   already in memory, is reported too.
2. The same ratio for MONAI's ``sliding_window_inference`` (roi = tile, overlap 0.5, modes
   "gaussian" and "constant", ``sw_batch_size`` = batch size) on the same model and chips, in
   memory, one chip at a time (MONAI does not batch across images). Skipped, with a note, when
   MONAI is not installed (``pip install --no-deps monai``: it needs only numpy and torch).
3. Peak resident memory of the strip/chunk engine ``glacimap.tiling.predict_tiled`` on a
   2,000^2 and a 20,000^2 pixel raster, each in a fresh process (peak RSS is per process), with
   a reader that synthesises the six optical bands of each requested window, the band-ratio model
   and a writer into a tiled DEFLATE GeoTIFF (windowed rasterio writes, atomic). Peak numpy
   allocations (tracemalloc) are reported too. The goal is about the same peak at both sizes.
   Each run checks the written raster against the band-ratio rule on sample windows.

Rounds of (1) and (2) are interleaved, each starting with the next method, so that load on a
shared machine and the position in a round hit every method alike. The table gives each method's fastest round and its ratio to the fastest bare pass;
its "network share", the time spent inside the model's forward passes during the run (global
forward hooks) over the run's time, median over rounds; and the ratio of process CPU time
(user + system, every thread) of the bare pass to the method's. The network share is measured
within one run, so load from other jobs on a shared machine, which moves runs a minute apart by
tens of percent, hardly moves it. Writes a table to stdout and
JSON to benchmarks/out/bench_predict.json (or ``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when imported by path

from _common import OUT_DIR, machine_info, print_and_write

NAME = "bench_predict"
YEAR = 2023
OPTICAL = ("blue", "green", "red", "nir", "swir16", "swir22")
DEM = ("elevation", "slope")
CHIP_BANDS = (*OPTICAL, *DEM, "valid")
ICE = np.array([0.55, 0.50, 0.45, 0.35, 0.03, 0.02], dtype=np.float32)
ROCK = np.array([0.12, 0.14, 0.16, 0.22, 0.28, 0.22], dtype=np.float32)
FULL_CHIPS = ((700, 700), (680, 720), (720, 690), (700, 660), (660, 700), (710, 710))
QUICK_CHIPS = ((200, 200), (190, 210), (210, 180))
MONAI_HINT = "pip install --no-deps monai  (MONAI needs only numpy and torch; --no-deps keeps the installed torch)"


# -- synthetic data ---------------------------------------------------------------------------------
def ice_field(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Boolean ice mask of rows [r0, r1) x cols [c0, c1) of an endless synthetic landscape."""
    r = np.arange(r0, r1, dtype=np.float32)[:, None]
    c = np.arange(c0, c1, dtype=np.float32)[None, :]
    field = np.sin(r / 157.0) + np.cos(c / 211.0) + 0.5 * np.sin((r + c) / 97.0)
    return field > 0.6


def optical_window(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """(6, rows, cols) float32 surface reflectance of the window: ice or rock plus a fine texture.

    A pure function of the pixel coordinates, so overlapping reads agree and the whole raster
    never exists in memory. The texture (< 0.01) never flips the band-ratio rule.
    """
    ice = ice_field(r0, r1, c0, c1)
    r = np.arange(r0, r1, dtype=np.int64)[:, None]
    c = np.arange(c0, c1, dtype=np.int64)[None, :]
    texture = ((r * 7 + c * 13) % 29).astype(np.float32) / 2900.0
    return np.where(ice[None], ICE[:, None, None], ROCK[:, None, None]) + texture[None]


def chip_array(rows: int, cols: int, index: int) -> np.ndarray:
    """(9, rows, cols) float32 chip with every chip band; a cloudy corner is not valid."""
    r0, c0 = 1000 * index, 700 * index
    optical = optical_window(r0, r0 + rows, c0, c0 + cols)
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    elevation = np.broadcast_to(2400.0 + 1.5 * r + 0.8 * c, (rows, cols))
    slope = np.broadcast_to(10.0 + 20.0 * np.abs(np.sin(c / 90.0)), (rows, cols))
    valid = np.ones((rows, cols), dtype=np.float32)
    valid[: rows // 8, : cols // 8] = 0.0
    return np.concatenate([optical, np.stack([elevation, slope, valid])]).astype(np.float32)


def build_workspace(root: Path, sizes: Sequence[tuple[int, int]]) -> tuple[Any, int]:
    """A workspace with one COG chip per size and its manifest; returns it and the chip pixels."""
    import pandas as pd
    from affine import Affine

    from glacimap.rasters import Grid, write_cog
    from glacimap.workspace import Workspace

    ws = Workspace(root)
    ids = [f"G{k + 1:02d}" for k in range(len(sizes))]
    for k, (gid, (rows, cols)) in enumerate(zip(ids, sizes)):
        grid = Grid("EPSG:32632", Affine(10, 0, 600_000 + 10_000 * k, 0, -10, 5_200_000), rows, cols)
        write_cog(ws.chip(YEAR, gid), chip_array(rows, cols, k), grid, list(CHIP_BANDS), nodata=float("nan"))
    pd.DataFrame({"glacier_id": ids, "status": ["ok"] * len(ids)}).to_parquet(ws.manifest(YEAR))
    return ws, sum(r * c for r, c in sizes)


def save_model(folder: Path) -> Path:
    """A randomly initialised ``glavitu-s`` (seed 0) saved as a weights file + manifest."""
    import torch

    from glacimap.models import create_model
    from glacimap.models.weights import BandStats, build_manifest, save_weights

    torch.manual_seed(0)
    model = create_model("glavitu-s", sources={"optical": len(OPTICAL), "dem": len(DEM)}).eval()
    stats = {b: BandStats(method="standard", mean=0.3, std=0.2) for b in OPTICAL}
    stats["elevation"] = BandStats(method="standard", mean=3000.0, std=800.0)
    stats["slope"] = BandStats(method="standard", mean=20.0, std=10.0)
    manifest = build_manifest(model, "bench-glavitu-s", {"optical": OPTICAL, "dem": DEM}, stats, preset="glavitu-s")
    path = folder / "bench-glavitu-s.safetensors"
    save_weights(model, manifest, path, overwrite=True)
    return path


# -- throughput: the methods ------------------------------------------------------------------------
def source_splitter(manifest: Any) -> Callable[[Any], dict[str, Any]]:
    """Splits a (B, channels, H, W) tensor into the model's source tensors."""
    sources = [(name, len(bands)) for name, bands in manifest.sources.items()]

    def split(batch: Any) -> dict[str, Any]:
        out, start = {}, 0
        for name, count in sources:
            out[name] = batch[:, start : start + count]
            start += count
        return out

    return split


class ForwardTimer:
    """Wall time spent in forward passes of modules of one class, in any thread (global hooks)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.seconds = 0.0
        self._started: dict[int, float] = {}
        self._handles: list[Any] = []

    def _pre(self, module: Any, args: Any) -> None:
        if type(module) is self.cls:
            self._started[id(module)] = time.perf_counter()

    def _post(self, module: Any, args: Any, output: Any) -> None:
        if type(module) is self.cls:
            self.seconds += time.perf_counter() - self._started.pop(id(module))

    def __enter__(self) -> None:
        from torch.nn.modules import module

        self._handles = [module.register_module_forward_pre_hook(self._pre), module.register_module_forward_hook(self._post)]

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def time_stage(settings: Any, chips: int) -> float:
    """Seconds of one ``run_predict`` (model load, reading, tiling, blending, writing)."""
    from glacimap.predict import run_predict

    start = time.perf_counter()
    result = run_predict(settings)
    seconds = time.perf_counter() - start
    if result.predicted != chips:
        raise RuntimeError(f"the stage predicted {result.predicted} of {chips} chips")
    return seconds


def read_chips(ws: Any, loaded: Any, scratch: Path) -> list[Any]:
    """Every chip of the workspace read and normalised as the stage does."""
    from glacimap.fetch import read_manifest
    from glacimap.predict import read_chip

    rows = read_manifest(ws, YEAR)
    return [read_chip(ws.chip(YEAR, gid), gid, loaded, scratch / f"{gid}.tif") for gid in rows.glacier_id]


def record_batches(chips: list[Any], tile: int, overlap: float, batch: int) -> list[np.ndarray]:
    """The tile batches the stage feeds its model, in order (``predict_chips`` with a recorder)."""
    from glacimap.predict import predict_chips

    batches: list[np.ndarray] = []

    def recorder(items: np.ndarray, locations: np.ndarray | None) -> np.ndarray:
        batches.append(items.copy())
        return np.zeros((items.shape[0], 1, *items.shape[2:]), dtype=np.float32)

    for _ in predict_chips(chips, recorder, tile, overlap, batch):
        pass
    return batches


def time_bare(model: Any, split: Callable[[Any], dict[str, Any]], batches: list[Any]) -> float:
    """Seconds of the model's forward passes alone on prepared tensors."""
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        for batch in batches:
            model(split(batch))
        return time.perf_counter() - start


def time_engine(loaded: Any, chips: list[Any], tile: int, overlap: float, batch: int) -> float:
    """Seconds of the stage's tile engine on chips in memory: cut, batch, predict, blend."""
    import torch

    from glacimap.predict import TilePredictor, predict_chips

    predictor = TilePredictor(loaded, torch.device("cpu"), precision="fp32")
    start = time.perf_counter()
    for acc in predict_chips(chips, predictor, tile, overlap, batch):
        with np.errstate(invalid="ignore", divide="ignore"):
            (acc.values / acc.weights).astype(np.float32)
    return time.perf_counter() - start


def time_monai(
    model: Any, split: Callable[[Any], dict[str, Any]], chips: list[Any], tile: int, overlap: float, batch: int, mode: str
) -> tuple[float, int]:
    """Seconds of MONAI's sliding-window inference over the chips, and the windows it ran."""
    import torch
    from monai.inferers import sliding_window_inference

    windows = 0

    def network(x: Any) -> Any:
        nonlocal windows
        windows += x.shape[0]
        return torch.softmax(model(split(x)), dim=1)[:, 1:2]

    with torch.inference_mode():
        start = time.perf_counter()
        for chip in chips:
            image = torch.from_numpy(chip.inputs)[None]
            out = sliding_window_inference(image, (tile, tile), batch, network, overlap=overlap, mode=mode)
            np.asarray(out[0, 0])
        return time.perf_counter() - start, windows


def monai_available() -> bool:
    try:
        import monai.inferers  # noqa: F401
    except ImportError:
        return False
    return True


def throughput(args: argparse.Namespace, sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Part 1 and 2: stage, engine, bare forward and MONAI on the same model and chips."""
    import torch

    from glacimap.models.weights import load_model
    from glacimap.settings import PredictSettings

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        ws, pixels = build_workspace(root / "work", sizes)
        model_path = save_model(root)
        loaded = load_model(model_path, "cpu")
        split = source_splitter(loaded.manifest)
        chips = read_chips(ws, loaded, root / "scratch")
        batches = [torch.from_numpy(b) for b in record_batches(chips, args.tile, args.overlap, args.batch_size)]
        tiles = sum(b.shape[0] for b in batches)
        settings = PredictSettings(
            work=ws.root, year=YEAR, model=str(model_path), device="cpu", tile=args.tile, overlap=args.overlap,
            batch_size=args.batch_size, precision="fp32", overwrite=True,
        )
        methods: dict[str, Callable[[], float]] = {
            "bare forward": lambda: time_bare(loaded.model, split, batches),
            "glacimap predict stage": lambda: time_stage(settings, len(sizes)),
            "glacimap tile engine, in memory": lambda: time_engine(loaded, chips, args.tile, args.overlap, args.batch_size),
        }
        tile_counts = {name: tiles for name in methods}
        monai_note = None
        if monai_available():
            for mode in ("gaussian", "constant"):
                name = f"MONAI sliding_window_inference, {mode}"

                def run(mode: str = mode, name: str = name) -> float:
                    seconds, windows = time_monai(loaded.model, split, chips, args.tile, args.overlap, args.batch_size, mode)
                    tile_counts[name] = windows
                    return seconds

                methods[name] = run
        else:
            monai_note = f"MONAI rows skipped: monai is not installed ({MONAI_HINT})"
        time_bare(loaded.model, split, batches)  # warm up kernels and allocators (every batch shape) once for all
        if monai_available():  # MONAI imports much of itself on its first call
            tiny = [dataclasses.replace(chips[0], inputs=chips[0].inputs[:, : args.tile, : args.tile])]
            for mode in ("gaussian", "constant"):
                time_monai(loaded.model, split, tiny, args.tile, args.overlap, args.batch_size, mode)
        times: dict[str, list[float]] = {name: [] for name in methods}
        network: dict[str, list[float]] = {name: [] for name in methods}
        cpu: dict[str, list[float]] = {name: [] for name in methods}
        order = list(methods)
        for round_index in range(args.repeats):
            shift = round_index % len(order)  # rotate so that no method always runs first
            for name in order[shift:] + order[:shift]:
                method = methods[name]
                before = os.times()
                timer = ForwardTimer(type(loaded.model))
                with timer:
                    times[name].append(method())
                after = os.times()
                network[name].append(timer.seconds)
                cpu[name].append(after.user + after.system - before.user - before.system)
    bare, bare_cpu = times["bare forward"], cpu["bare forward"]
    rows = []
    for name, seconds in times.items():
        fastest = seconds.index(min(seconds))
        rows.append({
            "method": name,
            "tiles": tile_counts[name],
            "seconds": seconds[fastest],
            "megapixels_per_s": pixels / 1e6 / seconds[fastest],
            "ratio_to_bare_forward": min(bare) / seconds[fastest],
            "ratio_median_of_rounds": statistics.median(b / s for b, s in zip(bare, seconds)),
            "network_seconds": network[name][fastest],
            "network_share": statistics.median(n / s for n, s in zip(network[name], seconds)),
            "cpu_seconds": min(cpu[name]),
            "cpu_ratio_to_bare_forward": min(bare_cpu) / min(cpu[name]),
            "seconds_per_round": seconds,
            "network_seconds_per_round": network[name],
            "cpu_seconds_per_round": cpu[name],
        })
    return {
        "chips": [list(s) for s in sizes],
        "chip_megapixels": pixels / 1e6,
        "tile": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "model": "glavitu-s (random init, fp32, CPU)",
        "rows": rows,
        "monai_note": monai_note,
    }


# -- memory of the strip engine (one child process per size) ------------------------------------------
def _proc_status_mib(field: str) -> float | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text(encoding="ascii", errors="replace").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**10  # kB
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    On Linux this is ``VmHWM``: ``getrusage(RUSAGE_SELF).ru_maxrss`` of a child process also
    counts the parent's resident size at the fork, so it cannot tell two child runs apart.
    """
    peak = _proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes on macOS, KiB elsewhere


def rss_mib() -> float:
    """Current resident set size, MiB (the peak where the current size is not known)."""
    current = _proc_status_mib("VmRSS")
    return current if current is not None else peak_rss_mib()


def band_ratio_batch() -> Callable[[np.ndarray], np.ndarray]:
    """The band-ratio model as a batch function: (B, 6 optical, t, t) -> (B, 1, t, t) probability."""
    import torch

    from glacimap.models.band_ratio import BAND_RATIO_BANDS
    from glacimap.models.weights import load_model

    model = load_model("band-ratio", "cpu").model
    index = [OPTICAL.index(b) for b in BAND_RATIO_BANDS]

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = model({"optical": torch.from_numpy(np.ascontiguousarray(batch[:, index]))})
            return torch.softmax(logits, dim=1)[:, 1:2].numpy()

    return run


def memory_child(size: int, folder: Path, tile: int, batch: int, chunk_width: int, trace: bool) -> dict[str, Any]:
    """Run ``predict_tiled`` on a synthetic size x size raster into a GeoTIFF; measure memory."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    from glacimap.rasters import Grid
    from glacimap.tiling import TilingPlan, predict_tiled
    from glacimap.workspace import atomic_path

    model = band_ratio_batch()
    model(optical_window(0, tile, 0, tile)[None])  # warm up torch before the baseline reading
    grid = Grid("EPSG:32632", Affine(10, 0, 600_000, 0, -10, 5_300_000), size, size)
    output = folder / f"probability-{size}.tif"
    baseline = rss_mib()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    with atomic_path(output) as tmp, rasterio.Env(GDAL_CACHEMAX=64):  # MB: bounds GDAL's block cache
        profile = {
            "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "float32", "crs": grid.crs,
            "transform": grid.transform, "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
            "predictor": 3, "BIGTIFF": "IF_SAFER",
        }
        with rasterio.open(tmp, "w", **profile) as dst:

            def writer(r0: int, r1: int, c0: int, c1: int, values: np.ndarray) -> None:
                dst.write(values, window=Window(c0, r0, c1 - c0, r1 - r0))

            tiles = predict_tiled(optical_window, writer, model, size, size, channels=1, tile=tile,
                                  batch_size=batch, chunk_width=chunk_width)
    seconds = time.perf_counter() - start
    numpy_peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    if trace:
        tracemalloc.stop()
    peak = peak_rss_mib()
    checked = matching = 0
    with rasterio.open(output) as src:
        side = min(size, 256)
        for r0, c0 in ((0, 0), ((size - side) // 2, (size - side) // 3), (size - side, size - side)):
            written = src.read(1, window=Window(c0, r0, side, side))
            matching += int(np.sum((written > 0.5) == ice_field(r0, r0 + side, c0, c0 + side)))
            checked += side * side
    return {
        "size": size,
        "megapixels": size * size / 1e6,
        "tiles": tiles,
        "planned_tiles": TilingPlan(size, size, tile, 0.5).tile_count(),
        "seconds": seconds,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak,
        "rss_growth_mib": peak - baseline,
        "numpy_peak_mib": numpy_peak,
        "output_mib": output.stat().st_size / 2**20,
        "output_matches_rule": matching / checked,
    }


def memory(args: argparse.Namespace, sizes: Sequence[int]) -> dict[str, Any]:
    """Part 3: one fresh process per raster size."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-predict-memory-") as tmp:
        for size in sizes:
            command = [
                sys.executable, str(Path(__file__).resolve()), "--memory-child", str(size), "--memory-dir", tmp,
                "--chunk-width", str(args.chunk_width), "--memory-tile", str(args.memory_tile),
                *(["--no-tracemalloc"] if args.no_tracemalloc else []),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"memory run at {size}^2 failed (exit {done.returncode}): {done.stderr[-2000:]}")
            rows.append(json.loads(lines[-1][len("RESULT "):]))
    small, large = rows[0], rows[-1]
    return {
        "tile": args.memory_tile,
        "batch_size": 8,
        "chunk_width": args.chunk_width,
        "model": "band-ratio",
        "rows": rows,
        "peak_rss_ratio_largest_to_smallest": large["peak_rss_mib"] / small["peak_rss_mib"],
    }


# -- report -------------------------------------------------------------------------------------------
def tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if "throughput" in result:
        t = result["throughput"]
        out.append({
            "title": f"Predict throughput: {len(t['chips'])} chips, {t['chip_megapixels']:.2f} Mpx, glavitu-s CPU fp32, "
                     f"tile {t['tile']}, overlap {t['overlap']}, batch {t['batch_size']} (best of {t['repeats']})",
            "columns": ["method", "tiles", "seconds", "Mpx/s", "vs bare forward", "network share", "CPU vs bare"],
            "rows": [[r["method"], r["tiles"], r["seconds"], r["megapixels_per_s"], r["ratio_to_bare_forward"],
                      r["network_share"], r["cpu_ratio_to_bare_forward"]] for r in t["rows"]],
        })
    if "memory" in result:
        m = result["memory"]
        out.append({
            "title": f"Strip engine memory (predict_tiled, band-ratio, tile {m['tile']}, chunk {m['chunk_width']} px, "
                     f"GeoTIFF writer); peak RSS ratio largest/smallest {m['peak_rss_ratio_largest_to_smallest']:.2f}",
            "columns": ["raster", "tiles", "seconds", "peak RSS MiB", "RSS growth MiB", "numpy peak MiB", "output = rule"],
            "rows": [[f"{r['size']:,}^2", r["tiles"], r["seconds"], r["peak_rss_mib"], r["rss_growth_mib"],
                      r["numpy_peak_mib"], r["output_matches_rule"]] for r in m["rows"]],
        })
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 small chips, tile 128, memory at 500^2 and 2,000^2")
    parser.add_argument("--part", choices=["all", "throughput", "memory"], default="all")
    parser.add_argument("--tile", type=int, default=None, help="tile of the throughput runs (384; quick 128)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (3; quick 1)")
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=None, help="raster sides (2000 20000; quick 500 2000)")
    parser.add_argument("--memory-tile", type=int, default=384)
    parser.add_argument("--chunk-width", type=int, default=8192)
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the numpy allocation peak (tracemalloc)")
    parser.add_argument("--json", type=Path, default=OUT_DIR / f"{NAME}.json")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.tile = args.tile or (128 if args.quick else 384)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.memory_sizes = args.memory_sizes or ([500, 2000] if args.quick else [2000, 20000])
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.memory_child is not None:
        child = memory_child(args.memory_child, args.memory_dir, args.memory_tile, 8, args.chunk_width, not args.no_tracemalloc)
        print("RESULT " + json.dumps(child), flush=True)
        return child
    quiet = logging.getLogger("glacimap.predict")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # a random-init model has no calibration map: expected here
    try:
        result: dict[str, Any] = {"benchmark": NAME, "quick": args.quick, "machine": machine_info()}
        if args.part in ("all", "throughput"):
            result["throughput"] = throughput(args, QUICK_CHIPS if args.quick else FULL_CHIPS)
        if args.part in ("all", "memory"):
            result["memory"] = memory(args, args.memory_sizes)
    finally:
        quiet.setLevel(level)
    result["summary"] = summary(result)
    result["tables"] = tables(result)
    note = result.get("throughput", {}).get("monai_note")
    print_and_write(NAME, result, args.json, [note] if note else [])
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "throughput" in result:
        ratios = {r["method"]: r["ratio_to_bare_forward"] for r in result["throughput"]["rows"]}
        cpu = {r["method"]: r["cpu_ratio_to_bare_forward"] for r in result["throughput"]["rows"]}
        share = {r["method"]: r["network_share"] for r in result["throughput"]["rows"]}
        names = {"stage": "glacimap predict stage", "engine": "glacimap tile engine, in memory",
                 "monai_gaussian": "MONAI sliding_window_inference, gaussian",
                 "monai_constant": "MONAI sliding_window_inference, constant"}
        for short, key in names.items():
            if key in ratios:
                out[f"{short}_vs_bare_forward_wall"] = round(ratios[key], 3)
                out[f"{short}_vs_bare_forward_cpu"] = round(cpu[key], 3)
                out[f"{short}_network_share"] = round(share[key], 3)
        out["stage_goal_met (>= 0.90, vs bare forward)"] = ratios[names["stage"]] >= 0.90
        out["stage_goal_met (>= 0.90, network share)"] = share[names["stage"]] >= 0.90
    if "memory" in result:
        out["peak_rss_mib"] = {f"{r['size']}^2": round(r["peak_rss_mib"], 1) for r in result["memory"]["rows"]}
        out["peak_rss_ratio_largest_to_smallest"] = round(result["memory"]["peak_rss_ratio_largest_to_smallest"], 3)
    return out


if __name__ == "__main__":
    main()
