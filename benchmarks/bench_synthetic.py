"""Time the generation of the synthetic world (landscape, truth, scenes, STAC catalogue).

    python benchmarks/bench_synthetic.py                   # small and default presets
    python benchmarks/bench_synthetic.py --preset small    # a few seconds
    python benchmarks/bench_synthetic.py --toy             # rendering only, on toy_landscape
    python benchmarks/bench_synthetic.py --figure docs/img/synthetic-world.png   # the docs' figure

For each preset: wall time of ``generate_world`` by stage (landscape, truth, static fields,
Sentinel-2, Landsat, Sentinel-1, DEM, catalogue; rendering overlaps the COG writes, which
run on ``--workers`` threads), items per collection, files and bytes on disk, the tile-wide
cloud cover of the optical items (mean / min / max) and the trap of each year. The issue's
target: the default world (20 x 20 km, 10 m, 3 years) in under 2 minutes on 2 cores.

With ``--toy`` the landscape generator is replaced by
:func:`glacimap.synthetic.world.toy_landscape` of the preset's size (rendering and
publishing are then the same as for the real world, the landscape and truth stages are not
timed). Writes a table to stdout and JSON to benchmarks/out/bench_synthetic.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from glacimap.synthetic import catalog
from glacimap.synthetic.model import WorldConfig
from glacimap.synthetic.world import WorldInfo, generate_world, render_world, toy_landscape


def _run(preset: str, toy: bool, workers: int, root: Path, figure: Path | None) -> dict[str, Any]:
    config = WorldConfig.small() if preset == "small" else WorldConfig()
    out = root / preset
    t0 = time.perf_counter()
    if toy:
        landscape = toy_landscape(size_px=round(config.size_m / config.resolution), seed=config.seed, years=config.years)
        info: WorldInfo = render_world(landscape, out, overwrite=True, workers=workers)
        if figure is not None:
            from glacimap.synthetic.figure import plot_world_year

            plot_world_year(landscape, info, max(config.years), figure)
    else:
        info = generate_world(config, out, overwrite=True, figure=figure is not None)
        if figure is not None:
            figure.parent.mkdir(parents=True, exist_ok=True)
            figure.write_bytes((out / "figure.png").read_bytes())
    wall = time.perf_counter() - t0
    files = [p for p in out.rglob("*") if p.is_file()]
    optical = {}
    for cid in (catalog.S2, catalog.LANDSAT):
        covers = [s.cloud_cover for s in info.scenes_of(cid) if s.cloud_cover is not None]
        shares = [s.valid_fraction for s in info.scenes_of(cid)]
        optical[cid] = {
            "items": len(covers),
            "cloud_cover_mean": round(statistics.fmean(covers), 2),
            "cloud_cover_min": min(covers),
            "cloud_cover_max": max(covers),
            "footprint_share_min": min(shares),
            "footprint_share_max": max(shares),
        }
    return {
        "preset": preset,
        "toy_landscape": toy,
        "size_m": config.size_m,
        "years": list(config.years),
        "wall_s": round(wall, 2),
        "stages_s": {k: round(v, 2) for k, v in info.timings.items()},
        "items": {cid: len(info.scenes_of(cid)) for cid in catalog.COLLECTION_IDS},
        "files": len(files),
        "megabytes": round(sum(p.stat().st_size for p in files) / 1e6, 1),
        "optical": optical,
        "traps": [
            {"year": t.year, "collection": t.collection, "scene": t.scene, "cloud_cover": t.cloud_cover,
             "glaciers": list(t.glacier_ids), "clear_scene": t.clear_scene}
            for t in info.traps
        ],
    }


def _print(result: dict[str, Any]) -> None:
    print(f"\n== {result['preset']} preset ({result['size_m'] / 1000:.0f} km, years {result['years']}"
          f"{', toy landscape' if result['toy_landscape'] else ''}) ==")
    print(f"wall time {result['wall_s']:.1f} s; {result['files']} files, {result['megabytes']} MB")
    print("stage                 seconds")
    for stage, seconds in result["stages_s"].items():
        print(f"  {stage:<20}{seconds:>8.2f}")
    print("collection        items  cloud cover mean/min/max (%)   footprint share min/max")
    for cid, n in result["items"].items():
        o = result["optical"].get(cid)
        extra = (f"{o['cloud_cover_mean']:>8.1f} {o['cloud_cover_min']:>6.1f} {o['cloud_cover_max']:>6.1f}"
                 f"          {o['footprint_share_min']:.2f} / {o['footprint_share_max']:.2f}") if o else ""
        print(f"  {cid:<16}{n:>5}  {extra}")
    print("traps (least cloudy item -> glaciers under cloud -> item that sees them clear)")
    for t in result["traps"]:
        print(f"  {t['year']} {t['collection']:<15} {t['scene']} ({t['cloud_cover']:.1f} %) -> "
              f"{', '.join(t['glaciers'])} -> {t['clear_scene']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=["small", "default", "both"], default="both")
    parser.add_argument("--toy", action="store_true", help="use toy_landscape instead of the landscape generator")
    parser.add_argument("--workers", type=int, default=2, help="COG-writing threads (render_world only)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "bench_synthetic.json")
    parser.add_argument("--figure", type=Path, default=None, help="also write the last year's figure here")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    args = parser.parse_args(argv)
    presets = ["small", "default"] if args.preset == "both" else [args.preset]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as tmp:
        root = args.keep or Path(tmp)
        for preset in presets:
            figure = args.figure if preset == presets[-1] else None
            results.append(_run(preset, args.toy, args.workers, root, figure))
            _print(results[-1])
    report = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
