"""A PNG overview of one year of the synthetic world.

Three panels: the truth (hillshade, glaciers, debris, lakes, ice divides, the ELA contour),
then the year's Sentinel-2 trap item (the least cloudy tile, which hides the trap glaciers
under clouds) and the item that sees those glaciers clear, both as SWIR16-NIR-red false
colour composites decoded from the published COGs, with the truth outlines, divides and the
SCL cloud mask on top. Reading the products back (and decoding them from the processing
baseline, not from the metadata flag) makes the figure a check of the files, not of the
renderer's memory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
import shapely
from rasterio import features
from shapely.geometry import shape

from glacimap.errors import InputNotFoundError
from glacimap.rasters import Grid
from glacimap.synthetic import catalog, scenes
from glacimap.synthetic.model import Landscape
from glacimap.workspace import atomic_path

log = logging.getLogger(__name__)


def plot_world_year(landscape: Landscape, info: Any, year: int, out_path: Path | str, dpi: int = 110) -> Path:
    """Write the overview PNG of ``year`` to ``out_path``; ``info`` is the world's WorldInfo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if year not in landscape.years:
        raise InputNotFoundError(f"year {year} has no truth in this world (years: {sorted(landscape.years)})")
    truth = landscape.years[year]
    # Draw at most ~800 pixels across: the panels are about 600 pixels wide.
    step = max(1, landscape.grid.width // 800)
    grid = _decimated(landscape.grid, step)
    dem = landscape.dem[::step, ::step]
    labels = truth.glacier[::step, ::step]
    trap = info.trap(year, catalog.S2)
    index = {g.glacier_id: g.index for g in landscape.glaciers}
    items = {it["id"]: it for it in catalog.read_items(info.stac_dir)}
    outlines, divides = _outlines_and_divides(labels, grid)
    left, bottom, right, top = grid.bounds
    extent = (left / 1000.0, right / 1000.0, bottom / 1000.0, top / 1000.0)

    fig, axes = plt.subplots(1, 3, figsize=(16.5, 6.0), constrained_layout=True)
    ax = axes[0]
    ax.imshow(_hillshade(dem, grid.resolution), cmap="gray", extent=extent, vmin=0, vmax=1)
    glacier = np.ma.masked_equal(labels, 0)
    ax.imshow(glacier % 10, cmap="Pastel1", alpha=0.55, extent=extent, interpolation="nearest")
    ax.imshow(np.ma.masked_equal(truth.debris[::step, ::step].astype(np.uint8), 0), cmap=ListedColormap(["saddlebrown"]),
              alpha=0.8, extent=extent, interpolation="nearest")
    ax.imshow(np.ma.masked_equal(truth.lakes[::step, ::step].astype(np.uint8), 0), cmap=ListedColormap(["royalblue"]),
              extent=extent, interpolation="nearest")
    xs, ys = scenes.pixel_centres(grid)
    ax.contour(xs / 1000.0, ys / 1000.0, dem, levels=[truth.ela], colors="k", linestyles="--", linewidths=0.8)
    ax.set_title(f"Truth {year}: glaciers (debris brown, lakes blue)\nice divides red, ELA {truth.ela:.0f} m dashed",
                 fontsize=8)
    _draw_lines(ax, outlines, "gold", 0.7)
    _draw_lines(ax, divides, "red", 1.0)

    for ax, item_id, label in ((axes[1], trap.scene, "least cloudy tile (trap)"),
                               (axes[2], trap.clear_scene, "sees the trap glaciers clear")):
        item = items[item_id]
        rgb, clouds = _false_colour(item, info.stac_dir, landscape.grid)
        rgb, clouds = rgb[::step, ::step], clouds[::step, ::step]
        ax.imshow(rgb, extent=extent, interpolation="nearest")
        ax.contour(xs / 1000.0, ys / 1000.0, clouds, levels=[0.5], colors="magenta", linewidths=0.7)
        _draw_lines(ax, outlines, "gold", 0.6)
        _draw_lines(ax, divides, "red", 0.9)
        _mark_targets(ax, labels, grid, [index[g] for g in trap.glacier_ids if g in index])
        cover = item["properties"]["eo:cloud_cover"]
        ax.set_title(f"{item_id}: {label}, eo:cloud_cover {cover:.1f} %\nSWIR16/NIR/red; SCL clouds magenta; "
                     f"boxed: {', '.join(trap.glacier_ids)}", fontsize=8)
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xlabel(f"easting (km, {grid.crs})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("northing (km)", fontsize=8)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})
    plt.close(fig)
    log.info("wrote %s", out_path)
    return out_path


def _decimated(grid: Grid, step: int) -> Grid:
    """Every ``step``-th pixel of ``grid`` (the first of each block), as a coarser grid."""
    t = grid.transform
    if step == 1:
        return grid
    half = (step - 1) / 2.0 * t.a  # the kept pixel's centre becomes the coarse pixel's centre
    transform = Affine(t.a * step, 0.0, t.c - half, 0.0, t.e * step, t.f + half)
    return Grid(grid.crs, transform, -(-grid.height // step), -(-grid.width // step))


def _mark_targets(ax: Any, labels: np.ndarray, grid: Grid, targets: list[int]) -> None:
    """A dashed box (300 m margin) around the trap glaciers."""
    rows, cols = np.nonzero(np.isin(labels, targets))
    if rows.size == 0:
        return
    from matplotlib.patches import Rectangle

    xs, ys = scenes.pixel_centres(grid)
    x0, x1 = xs[cols.min()] - 300.0, xs[cols.max()] + 300.0
    y0, y1 = ys[rows.max()] - 300.0, ys[rows.min()] + 300.0
    ax.add_patch(Rectangle((x0 / 1000.0, y0 / 1000.0), (x1 - x0) / 1000.0, (y1 - y0) / 1000.0, fill=False,
                           edgecolor="white", linestyle="--", linewidth=1.2))
    ax.annotate("trap glaciers", (x0 / 1000.0, y1 / 1000.0), xytext=(0, 3), textcoords="offset points",
                color="white", fontsize=8, weight="bold", annotation_clip=True)


def _hillshade(dem: np.ndarray, resolution: float) -> np.ndarray:
    normals = scenes.terrain_normals(dem, resolution)
    return np.clip(scenes.cos_incidence(normals, 45.0, 315.0), 0.0, 1.0)


def _outlines_and_divides(labels: np.ndarray, grid: Grid) -> tuple[list[Any], list[Any]]:
    """Outer glacier outlines and ice divides (boundaries shared by two glaciers), as lines."""
    polygons = {}
    for geom, value in features.shapes(labels.astype(np.int32), mask=labels > 0, transform=grid.transform):
        polygons.setdefault(int(value), []).append(shape(geom))
    merged = {g: shapely.union_all(parts) for g, parts in polygons.items()}
    if not merged:
        return [], []
    union = shapely.union_all(list(merged.values()))
    outlines = [union.boundary]
    divides = []
    ids = sorted(merged)
    tree = shapely.STRtree([merged[g] for g in ids])
    for i, g in enumerate(ids):
        for j in tree.query(merged[g], predicate="touches"):
            if j > i:
                shared = merged[g].boundary.intersection(merged[ids[j]].boundary)
                if shared.length > 0:
                    divides.append(shared)
    return outlines, divides


def _draw_lines(ax: Any, geometries: list[Any], colour: str, width: float) -> None:
    from matplotlib.collections import LineCollection

    segments = [np.asarray(line.coords)[:, :2] / 1000.0 for geom in geometries for line in _lines(geom)]
    if segments:
        ax.add_collection(LineCollection(segments, colors=colour, linewidths=width))


def _lines(geom: Any) -> list[Any]:
    if geom.is_empty:
        return []
    if geom.geom_type in ("LineString", "LinearRing"):
        return [geom]
    if hasattr(geom, "geoms"):
        return [line for part in geom.geoms for line in _lines(part)]
    return []


def _read_on_grid(path: Path, grid: Grid) -> np.ndarray:
    """An asset read back and placed on the world grid (repeating coarser pixels)."""
    with rasterio.open(path) as src:
        data = src.read(1)
        t = src.transform
    factor = round(t.a / grid.resolution)
    if factor > 1:
        data = np.repeat(np.repeat(data, factor, axis=0), factor, axis=1)
    out = np.zeros(grid.shape, dtype=data.dtype)
    r0 = round((grid.bounds[3] - t.f) / grid.resolution)
    c0 = round((t.c - grid.bounds[0]) / grid.resolution)
    rows = min(data.shape[0], grid.height - r0)
    cols = min(data.shape[1], grid.width - c0)
    out[r0 : r0 + rows, c0 : c0 + cols] = data[:rows, :cols]
    return out


def _false_colour(item: dict[str, Any], stac_dir: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """SWIR16/NIR/red composite (RGBA, transparent outside the footprint) and a cloud mask."""
    baseline = item["properties"]["s2:processing_baseline"]
    bands = []
    for key in ("swir16", "nir", "red"):
        dn = _read_on_grid(stac_dir / item["assets"][key]["href"], grid)
        bands.append(scenes.decode_s2(dn, baseline))
    stack = np.stack(bands, axis=-1)
    valid = np.all(np.isfinite(stack), axis=-1)
    rgba = np.zeros(grid.shape + (4,), dtype=np.float32)
    rgba[..., :3] = np.clip(np.nan_to_num(stack) / 0.8, 0.0, 1.0) ** 0.7
    rgba[..., 3] = valid
    scl = _read_on_grid(stac_dir / item["assets"]["scl"]["href"], grid)
    clouds = np.isin(scl, sorted(scenes.SCL_CLOUDS)).astype(np.float32)
    return rgba, clouds
