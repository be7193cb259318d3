"""Accuracy of a workspace's predictions against the synthetic world's truth, per surface type.

The synthetic world knows which ice is debris-covered (``truth/{year}/surface.tif``), so a
model can be scored where band ratios fail. Scores use each chip's valid pixels (no data and
cloud excluded); pixels are counted once even where chips of neighbouring glaciers overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from glacimap.errors import InputNotFoundError
from glacimap.rasters import read_raster
from glacimap.workspace import Workspace


def assess_predictions(world: Path | str, work: Path | str, year: int, threshold: float = 0.5) -> dict[str, Any]:
    """IoU, precision and recall of predictions, and recall on clean and debris-covered ice."""
    world, workspace = Path(world), Workspace(work)
    truth_dir = world / "truth" / str(year)
    if not (truth_dir / "glaciers.tif").exists():
        raise InputNotFoundError(f"{truth_dir}: no truth for {year}")
    with rasterio.open(truth_dir / "glaciers.tif") as src:
        glacier_all = src.read(1) > 0
        origin, crs = (src.transform.c, src.transform.f), src.crs
    with rasterio.open(truth_dir / "surface.tif") as src:
        debris_all = src.read(1) > 0
    counted = np.zeros(glacier_all.shape, dtype=bool)
    counts = dict.fromkeys(("tp", "fp", "fn", "clean", "clean_hit", "debris", "debris_hit"), 0)
    predictions = [p for p in sorted(workspace.predictions_dir(year).glob("*.tif")) if not p.name.startswith(".")]
    for path in predictions:
        data, grid, _, _ = read_raster(path, ["probability"])
        if rasterio.crs.CRS.from_user_input(grid.crs) != crs:
            raise InputNotFoundError(f"{path}: grid CRS {grid.crs} is not the world's {crs}")
        col0 = int(round((grid.transform.c - origin[0]) / grid.resolution))
        row0 = int(round((origin[1] - grid.transform.f) / grid.resolution))
        # the part of the chip inside the world
        r0, c0 = max(0, -row0), max(0, -col0)
        r1 = min(grid.height, glacier_all.shape[0] - row0)
        c1 = min(grid.width, glacier_all.shape[1] - col0)
        if r1 <= r0 or c1 <= c0:
            continue
        world_rows = slice(row0 + r0, row0 + r1)
        world_cols = slice(col0 + c0, col0 + c1)
        probability = data[0][r0:r1, c0:c1]
        keep = np.isfinite(probability) & ~counted[world_rows, world_cols]  # each pixel once
        counted[world_rows, world_cols] |= keep
        ice = (np.nan_to_num(probability) >= threshold) & keep
        truth = glacier_all[world_rows, world_cols] & keep
        debris = debris_all[world_rows, world_cols]
        counts["tp"] += int((ice & truth).sum())
        counts["fp"] += int((ice & ~truth).sum())
        counts["fn"] += int((~ice & truth).sum())
        counts["clean"] += int((truth & ~debris).sum())
        counts["clean_hit"] += int((ice & truth & ~debris).sum())
        counts["debris"] += int((truth & debris).sum())
        counts["debris_hit"] += int((ice & truth & debris).sum())

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "year": year,
        "chips": len(predictions),
        "iou": ratio(counts["tp"], counts["tp"] + counts["fp"] + counts["fn"]),
        "precision": ratio(counts["tp"], counts["tp"] + counts["fp"]),
        "recall": ratio(counts["tp"], counts["tp"] + counts["fn"]),
        "recall_clean_ice": ratio(counts["clean_hit"], counts["clean"]),
        "recall_debris": ratio(counts["debris_hit"], counts["debris"]),
        "pixels": counts,
    }
