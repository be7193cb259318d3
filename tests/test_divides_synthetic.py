"""Acceptance of `glacimap split` (Kienholz) on the generated synthetic world (issue 7).

The world's truth glaciers of the inventory year are dissolved into complexes, split on the
world's 10 m DEM with the default parameters and matched against the truth: a truth glacier is
recovered when one split glacier overlaps it by more than 50 % of both areas. The issue's
target is >= 90 % of the glaciers recovered.

Measured with the default parameters (docs/divides.md, "Synthetic world"): the small preset
(4 km) reaches it on seeds 42, 7 and 1 and misses it on seeds 2 and 3 (9/11 and 4/6); the
default preset (20 km, about 120 glaciers in 29-41 complexes) recovers 78-84 % on seeds 42, 7,
1 and 3 (81 % on seed 42; 73-83 % with the old defaults, OGGM's relief filters on). The misses
are pinned below as strict xfails so that an improvement of the method shows up.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from glacimap.divides import (
    KienholzParams,
    dissolve_complexes,
    match_glaciers,
    match_summary,
    split_complexes,
)
from glacimap.synthetic.glaciers import generate_landscape
from glacimap.synthetic.model import Landscape, WorldConfig
from glacimap.synthetic.truth import reference_year, truth_outlines

TARGET = 0.9


def split_world(landscape: Landscape) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame, pd.DataFrame]:
    """Truth glaciers, their complexes, the split glaciers and the truth-to-split matches."""
    truth = truth_outlines(landscape, reference_year(landscape))
    complexes = dissolve_complexes(truth)
    glaciers = split_complexes(
        complexes, landscape.dem.astype(np.float64), landscape.grid, KienholzParams(), id_column="complex_id"
    )
    return truth, complexes, glaciers, match_glaciers(truth, glaciers)


def multi_glacier_recovered(truth: gpd.GeoDataFrame, matches: pd.DataFrame) -> np.ndarray:
    """``recovered`` of the truth glaciers that share their complex with another glacier."""
    size = truth.groupby("complex_id")["glacier_id"].transform("size").to_numpy()
    return matches["recovered"].to_numpy()[size > 1]


def assert_partition(glaciers: gpd.GeoDataFrame, complexes: gpd.GeoDataFrame) -> None:
    """The glaciers of each complex cover it exactly: no gap, no overlap."""
    by_id = dict(zip(complexes["complex_id"], complexes.geometry))
    assert set(glaciers["complex_id"]) == set(by_id)
    for cid, group in glaciers.groupby("complex_id"):
        geoms = list(group.geometry)
        area = by_id[cid].area
        assert shapely.union_all(geoms).symmetric_difference(by_id[cid]).area < 1e-6 * area
        assert sum(g.area for g in geoms) == pytest.approx(area, rel=1e-9)  # sum = union: no overlaps
        left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        for i, j in zip(left.tolist(), right.tolist()):
            if i < j:
                assert geoms[i].intersection(geoms[j]).area < 1e-6


@pytest.mark.parametrize(
    ("seed", "glaciers", "multi"),
    [(42, 15, 3), (7, 7, 7), (1, 13, 8)],
)
def test_small_world_reaches_the_target(seed: int, glaciers: int, multi: int) -> None:
    landscape = generate_landscape(WorldConfig.small(seed))
    truth, complexes, split, matches = split_world(landscape)
    summary = match_summary(matches)
    assert summary["glaciers"] == glaciers
    assert summary["recovered_share"] >= TARGET
    in_multi = multi_glacier_recovered(truth, matches)
    assert in_multi.size == multi
    assert in_multi.mean() >= 0.85  # seed 1: 7 of 8
    assert summary["area_weighted_iou"] > 0.75
    assert_partition(split, complexes)
    assert split["area_km2"].sum() == pytest.approx(truth.area.sum() / 1e6, rel=1e-9)


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.xfail(strict=True, reason="issue 7: small worlds 2 and 3 recover 9/11 and 4/6 (see docs/divides.md)")
def test_small_world_misses_the_target(seed: int) -> None:
    landscape = generate_landscape(WorldConfig.small(seed))
    _, complexes, split, matches = split_world(landscape)
    assert_partition(split, complexes)  # the partition holds even where the divides are wrong
    assert match_summary(matches)["recovered_share"] >= TARGET


@pytest.fixture(scope="module")
def default_world() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame, pd.DataFrame]:
    return split_world(generate_landscape(WorldConfig(seed=42)))


@pytest.mark.slow
def test_default_world_partition_and_floor(default_world: tuple) -> None:
    truth, complexes, split, matches = default_world
    summary = match_summary(matches)
    assert summary["glaciers"] == 127
    assert len(complexes) == 29
    assert_partition(split, complexes)
    assert split["area_km2"].sum() == pytest.approx(truth.area.sum() / 1e6, rel=1e-9)
    # Measured 103/127 (81 %), 86/110 in multi-glacier complexes, IoU 0.785 (old defaults with
    # OGGM's relief filters: 93/127, 76/110, 0.77): floors against regressions, below the target.
    assert summary["recovered_share"] >= 0.78
    assert multi_glacier_recovered(truth, matches).mean() >= 0.75
    assert summary["area_weighted_iou"] >= 0.76
    # The misses are under-splits: a small truth glacier merged into a neighbour.
    missed = matches[~matches["recovered"]]
    assert missed["area_km2"].max() < 1.0
    assert missed["match_id"].value_counts().max() >= 3


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True, reason="issue 7: the default world (seed 42) recovers 81 % of 127 glaciers, target 90 %"
)
def test_default_world_reaches_the_target(default_world: tuple) -> None:
    assert match_summary(default_world[3])["recovered_share"] >= TARGET
