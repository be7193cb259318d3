"""glacimap change on a wall-to-wall (fetch --aoi) workspace: years matched through territories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glacimap.change import glacier_table, run_change
from glacimap.outlines import run_outlines
from glacimap.settings import ChangeSettings, OutlinesSettings
from glacimap.vectors import read_layer

from test_outlines_wall import CRS, RES, _valley, make_workspace

SHAPE = (90, 120)
PIXEL_KM2 = RES**2 / 1e6


def _year(year: int) -> np.ndarray:
    """Ice probability of one year (NaN: cloud)."""
    p = np.full(SHAPE, 0.1, dtype=np.float32)
    if year == 2015:
        p[10:60, 30:55] = 0.9  # A: 1,250 px in the valley
        p[70:82, 5:17] = 0.9  # B: 144 px on the west slope
        p[70:82, 100:112] = 0.9  # C: 144 px on the east slope
    else:
        p[10:45, 32:53] = 0.9  # A retreated: 735 px, all inside its 2015 outline
        p[30:34, 60:64] = 0.9  # 16 px of new ice next to A, outside its 2015 outline
        p[48:90, 78:120] = np.nan  # C and all its surroundings under cloud; B melted away
    return p


@pytest.fixture(scope="module")
def wall_change(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict]:
    root = tmp_path_factory.mktemp("wall-change")
    elevation = _valley(SHAPE)
    outlines = {}
    for year in (2015, 2023):
        p = _year(year)
        confidence = np.where(np.isnan(p), np.nan, 0.99).astype(np.float32)
        make_workspace(root, p, confidence, elevation, tile_px=30, year=year)
        result = run_outlines(OutlinesSettings(work=root, year=year, restrict="none", simplify=0.0, min_area=0.001))
        outlines[year] = read_layer(result.path, "outlines").to_crs(CRS)
    result = run_change(ChangeSettings(work=root, year_from=2015, year_to=2023, restrict="territory"))
    table = glacier_table(result).set_index("glacier_id")
    return root, table, {"outlines": outlines, "result": result}


def test_end_year_ice_is_recut_into_the_start_glaciers(wall_change) -> None:
    _, table, extra = wall_change
    start = extra["outlines"][2015]
    assert set(table.index) == set(start["glacier_id"])  # the start year's ids, nothing else
    west = start.geometry.centroid.x - start.geometry.centroid.x.min()
    ids = dict(zip(["B", "A", "C"], start.assign(x=west).sort_values("x")["glacier_id"]))
    a, b, c = (table.loc[ids[k]] for k in "ABC")
    # areas are equal-area (not UTM) square kilometres: 0.06 % apart here; ratios are exact
    assert a["area_from_km2"] == pytest.approx(1250 * PIXEL_KM2, rel=1e-3)
    # territory restriction: A keeps the 16 px of new ice beside it (within 200 m)
    assert a["area_to_km2"] / a["area_from_km2"] == pytest.approx((735 + 16) / 1250, rel=1e-6)
    assert a["status"] == "ok" and bool(a["kept"])
    assert a["rel_rate_pct_a"] == pytest.approx(100 * ((735 + 16) / 1250 - 1) / 8, rel=1e-6)
    assert b["status"] == "disappeared" and b["area_to_km2"] == 0.0
    assert c["status"] == "missing"  # never seen in 2023: not counted as lost


def test_inventory_restriction_clips_to_the_start_outline(wall_change, tmp_path: Path) -> None:
    root = wall_change[0]
    result = run_change(ChangeSettings(work=root, year_from=2015, year_to=2023, out=tmp_path / "clip"))
    table = glacier_table(result).set_index("glacier_id")
    a = table.loc[table["area_from_km2"].idxmax()]
    assert a["area_to_km2"] / a["area_from_km2"] == pytest.approx(735 / 1250, rel=1e-6)
    assert "wall-to-wall" in result.inputs["form"]


def test_missing_end_year_outlines_is_a_clear_error(wall_change, tmp_path: Path) -> None:
    from glacimap.errors import InputNotFoundError

    root, _, _ = wall_change
    with pytest.raises(InputNotFoundError, match="no outlines for 2030.*--restrict none"):
        run_change(ChangeSettings(work=root, year_from=2015, year_to=2030, out=tmp_path / "x"))
