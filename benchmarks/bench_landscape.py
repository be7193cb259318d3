"""Time the synthetic landscape (terrain, glaciers, per-year truth) and summarise the worlds.

    python benchmarks/bench_landscape.py            # small and default presets (~15 s on 2 cores)
    python benchmarks/bench_landscape.py --quick    # small preset only (~1 s)

For each preset: grid size, seconds for the DEM alone and for the whole landscape, glaciers,
complexes (all, with >= 2 glaciers, largest), glacierised share of the first year, the ELA
of every year and the regional area loss rate of every period. The issue's targets: default
DEM in a few seconds, small DEM well under a second, 30-150 glaciers and 10-30 % ice in the
default world, loss rates of 1-2 %/a. Writes a table to stdout and JSON to
benchmarks/out/bench_landscape.json (or ``--json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, machine_info, text_table, write_result  # noqa: E402

from glacimap.synthetic.glaciers import generate_landscape, world_grid  # noqa: E402
from glacimap.synthetic.model import WorldConfig  # noqa: E402
from glacimap.synthetic.terrain import make_dem  # noqa: E402


def _run(preset: str, seed: int) -> dict[str, Any]:
    config = WorldConfig.small(seed=seed) if preset == "small" else WorldConfig(seed=seed)
    grid = world_grid(config)
    t0 = time.perf_counter()
    make_dem(config, grid, np.random.default_rng(seed))
    dem_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    world = generate_landscape(config)
    landscape_s = time.perf_counter() - t0
    years = sorted(world.years)
    cell_km2 = grid.resolution**2 / 1e6
    areas = [float((world.years[y].glacier > 0).sum()) * cell_km2 for y in years]
    complexes = Counter(g.complex_id for g in world.glaciers)
    rates = [
        (a0 - a1) / a0 / (y1 - y0) for (y0, a0), (y1, a1) in zip(zip(years, areas), zip(years[1:], areas[1:]))
    ]
    return {
        "preset": preset,
        "seed": seed,
        "cells": f"{grid.height} x {grid.width}",
        "dem_s": dem_s,
        "landscape_s": landscape_s,
        "glaciers": len(world.glaciers),
        "complexes": len(complexes),
        "complexes_2plus": sum(v > 1 for v in complexes.values()),
        "largest_complex": max(complexes.values()),
        "ice_percent": 100.0 * areas[0] / (grid.height * grid.width * cell_km2),
        "ela_m": " / ".join(f"{world.years[y].ela:.0f}" for y in years),
        "loss_percent_per_year": " / ".join(f"{100 * r:.2f}" for r in rates),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small preset only")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=OUT_DIR / "bench_landscape.json")
    args = parser.parse_args(argv)
    presets = ["small"] if args.quick else ["small", "default"]
    rows = [_run(preset, args.seed) for preset in presets]
    columns = list(rows[0])
    table = {
        "title": "Synthetic landscape per preset",
        "columns": columns,
        "rows": [[r[c] for c in columns] for r in rows],
    }
    print(text_table(columns, table["rows"]))
    result = {"machine": machine_info(), "meta": {"seed": args.seed, "quick": args.quick}, "tables": [table]}
    write_result("bench_landscape", result, args.json)
    return result


if __name__ == "__main__":
    main()
