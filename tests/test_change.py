"""``glacimap change``: per-glacier and regional area change, with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import CRS, Geod
from pydantic import ValidationError

import glacimap.report
from glacimap.change import (
    ChangeParams,
    compute_change,
    equal_area_crs,
    extreme_rates,
    read_outline_pair,
    run_change,
    size_class,
)
from glacimap.errors import (
    ConfigError,
    CRSMismatchError,
    InputNotFoundError,
    InvalidInputError,
    OutputExistsError,
)
from glacimap.settings import ChangeSettings, resolve_settings
from glacimap.vectors import write_layers

SVALBARD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "svalbard" / "svalbard.gpkg"
GEOD = Geod(ellps="WGS84")
#: Local equal-area plane in which the hand-made glaciers are drawn (Ötztal, Alps).
LOCAL = CRS.from_proj4("+proj=laea +lat_0=46.8 +lon_0=10.8 +datum=WGS84 +units=m +no_defs")
UTM32 = "EPSG:32632"


def box_km(x0: float, y0: float, width_m: float, height_m: float) -> shapely.Polygon:
    """A rectangle in metres whose area is width * height / 1e6 km2."""
    return shapely.box(x0, y0, x0 + width_m, y0 + height_m)


def geodesic_km2(geom: shapely.Geometry, crs: object) -> float:
    """Area on the WGS84 ellipsoid (independent of glacimap's projection), km2."""
    lonlat = gpd.GeoSeries([geom], crs=crs).to_crs("EPSG:4326").iloc[0]
    polygons = getattr(lonlat, "geoms", [lonlat])
    return sum(GEOD.geometry_area_perimeter(shapely.geometry.polygon.orient(p, 1))[0] for p in polygons) / 1e6


def to_lonlat(geoms: list[shapely.Geometry]) -> gpd.GeoSeries:
    """Hand-made local geometries in EPSG:4326 (segmentized so edges stay straight in the plane)."""
    return gpd.GeoSeries(shapely.segmentize(np.array(geoms, dtype=object), 20.0), crs=LOCAL).to_crs("EPSG:4326")


# -- pure helpers -----------------------------------------------------------------------------------


def test_size_classes_follow_the_paper() -> None:
    assert [size_class(a) for a in (0.05, 0.1, 0.19, 0.2, 0.99, 1.0, 4.9, 9.0, 15.0, 20.0, 300.0)] == [
        "<0.1", "0.1-0.2", "0.1-0.2", "0.2-0.5", "0.5-1", "1-2", "2-5", "5-10", "10-20", ">=20", ">=20"]
    assert size_class(0.0) is None and size_class(float("nan")) is None


def test_extreme_rates_drop_the_share_farthest_from_the_median() -> None:
    rates = pd.Series([-1.0, -1.2, -0.8, -9.0, 3.0, -1.1, -0.9, -1.0, -1.05, -0.95, np.nan])
    flags = extreme_rates(rates, 0.2)  # floor(0.2 * 10 finite) = 2
    assert list(flags[flags].index) == [3, 4]
    assert not extreme_rates(rates, 0.05).any()  # floor(0.5) = 0


def test_equal_area_crs_is_centred_on_the_data_and_measures_true_area() -> None:
    square = to_lonlat([box_km(0, 0, 1000, 1000)])
    frame = gpd.GeoDataFrame({"glacier_id": ["a"]}, geometry=square)
    crs = equal_area_crs([frame])
    params = dict(part.lstrip("+").split("=") for part in crs.srs.split() if "=" in part)
    assert params["proj"] == "laea" and float(params["lat_0"]) == pytest.approx(46.8045, abs=0.001)
    assert frame.to_crs(crs).area.iloc[0] / 1e6 == pytest.approx(1.0, rel=1e-6)


# -- workspace form: predicted outlines against an inventory -----------------------------------------

#: id: reference box, outlines 2015 / 2023 as (box or None for no row, valid_fraction, band half-width).
#: Expected: G1 0.9 -> 0.8; G2 clipped 2.2 -> 2.0, then 1.8; G3 recall 0.5 (dropped); G4 30 % masked
#: in 2023 (dropped); G5 observed 0.81 with 10 % masked -> 0.9; G6 disappeared; G7 no 2023 row (missing).
WORLD = {
    "G1": (box_km(0, 0, 1000, 1000), (box_km(0, 0, 1000, 900), 1.0, 0.05), (box_km(0, 0, 1000, 800), 1.0, 0.05)),
    "G2": (box_km(3000, 0, 2000, 1000), (box_km(3000, 0, 2200, 1000), 1.0, 0.1), (box_km(3000, 0, 1800, 1000), 1.0, 0.1)),
    "G3": (box_km(7000, 0, 1000, 1000), (box_km(7000, 0, 1000, 500), 1.0, 0.05), (box_km(7000, 0, 1000, 450), 1.0, 0.05)),
    "G4": (box_km(10000, 0, 1000, 1000), (box_km(10000, 0, 1000, 950), 1.0, 0.05), (box_km(10000, 0, 1000, 600), 0.7, 0.05)),
    "G5": (box_km(13000, 0, 1000, 1000), (box_km(13000, 0, 1000, 1000), 1.0, 0.05), (box_km(13000, 0, 1000, 810), 0.9, 0.05)),
    "G6": (box_km(16000, 0, 1000, 500), (box_km(16000, 0, 1000, 500), 1.0, 0.05), (shapely.Polygon(), 1.0, 0.0)),
    "G7": (box_km(19000, 0, 1000, 1000), (box_km(19000, 0, 1000, 1000), 1.0, 0.05), None),
}


def world_frames() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    ids = list(WORLD)
    inventory = gpd.GeoDataFrame({"glacier_id": ids}, geometry=to_lonlat([WORLD[g][0] for g in ids]))
    frames = []
    for index, year in ((1, 2015), (2, 2023)):
        rows = [(gid, WORLD[gid][index]) for gid in ids if WORLD[gid][index] is not None]
        areas = np.array([shape.area / 1e6 for _, (shape, _, _) in rows])
        half = np.array([h for _, (_, _, h) in rows])
        valid = np.array([v for _, (_, v, _) in rows])
        frames.append(gpd.GeoDataFrame(
            {
                "glacier_id": [gid for gid, _ in rows],
                "year": year,
                "area_km2": areas,
                "area_low_km2": areas - half,
                "area_high_km2": areas + half,
                "mean_confidence": 0.9,
                "valid_fraction": valid,
                "cloud_fraction": 1.0 - valid,
                "complex_id": [gid for gid, _ in rows],
                "method": "synthetic",
            },
            geometry=to_lonlat([shape for _, (shape, _, _) in rows]),
        ))
    return frames[0], frames[1], inventory


def write_workspace(root: Path) -> Path:
    start, end, inventory = world_frames()
    for frame, year in ((start, 2015), (end, 2023)):
        band = frame[["glacier_id", "geometry"]].assign(level="high")
        write_layers(root / "outlines" / f"{year}.gpkg", {"outlines": frame, "confidence_band": band})
    write_layers(root / "inventory.gpkg", {"inventory": inventory})
    return root


def test_workspace_form_matches_the_hand_computation(tmp_path: Path) -> None:
    work = write_workspace(tmp_path / "W")
    result = run_change(ChangeSettings(work=work, year_from=2015, year_to=2023, drop_extreme=0.0))
    g = result.glaciers

    assert g.loc["G1", "area_from_km2"] == pytest.approx(0.9, rel=1e-5)
    assert g.loc["G2", "area_from_km2"] == pytest.approx(2.0, rel=1e-5)  # clipped to the inventory
    assert g.loc["G5", "area_to_observed_km2"] == pytest.approx(0.81, rel=1e-5)
    assert g.loc["G5", "area_to_km2"] == pytest.approx(0.9, rel=1e-5)  # mask correction 0.81 / 0.9
    assert g.loc["G1", "recall"] == pytest.approx(0.9, rel=1e-5)
    assert g.loc["G3", "recall"] == pytest.approx(0.5, rel=1e-5)
    assert dict(g["status"]) == {"G1": "ok", "G2": "ok", "G3": "ok", "G4": "ok", "G5": "ok",
                                 "G6": "disappeared", "G7": "missing"}
    assert dict(g["drop_reason"].str.split(" ").str[0]) == {
        "G1": "", "G2": "", "G3": "recall", "G4": "masked", "G5": "", "G6": "", "G7": "not"}

    # Per glacier: rates and their uncertainty (independent years).
    assert g.loc["G1", "rate_km2_a"] == pytest.approx(-0.1 / 8, rel=1e-4)
    assert g.loc["G1", "rel_rate_pct_a"] == pytest.approx(-0.1 / 0.9 / 8 * 100, rel=1e-4)
    assert g.loc["G1", "rate_sigma_km2_a"] == pytest.approx(math.hypot(0.05, 0.05) / 8, rel=1e-4)
    assert g.loc["G1", "rel_rate_sigma_pct_a"] == pytest.approx(
        100 / 8 * math.hypot(0.05 / 0.9, 0.8 * 0.05 / 0.81), rel=1e-4)
    assert g.loc["G5", "rel_rate_pct_a"] == pytest.approx(-1.25, rel=1e-4)
    assert g.loc["G6", "rel_rate_pct_a"] == pytest.approx(-12.5, rel=1e-6)

    # Region: G1, G2, G5, G6 kept.
    r = result.regional
    assert r["n_glaciers"] == 4
    assert r["area_from_km2"] == pytest.approx(4.4, rel=1e-5)
    assert r["area_to_km2"] == pytest.approx(3.5, rel=1e-5)
    assert r["rel_rate_pct_a"] == pytest.approx(-0.9 / 8 / 4.4 * 100, rel=1e-4)
    assert r["share_of_inventory_area"] == pytest.approx(4.5 / 7.5, rel=1e-5)
    s0, s1 = 0.05 + 0.1 + 0.05 + 0.05, 0.05 + 0.1 + 0.05 / 0.9 + 0.0  # fully correlated between glaciers
    assert r["rate_sigma_km2_a"] == pytest.approx(math.hypot(s0, s1) / 8, rel=1e-4)

    removed = {f.name: (f.applied, f.n_glaciers_removed, round(f.area_removed_km2, 4)) for f in result.filters}
    assert removed == {"not_comparable": (True, 1, 1.0), "masked": (True, 1, 1.0), "recall": (True, 1, 1.0),
                       "extreme": (False, 0, 0.0)}
    classes = result.size_classes
    assert classes["n_units"].sum() == 7 and classes["n_kept"].sum() == 4
    assert classes["kept_area_from_km2"].sum() == pytest.approx(4.4, rel=1e-5)

    out = work / "change" / "2015_2023"
    assert result.out_dir == out.absolute()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["regional"]["rel_rate_pct_a"] == pytest.approx(r["rel_rate_pct_a"])
    assert summary["status_counts"] == {"ok": 5, "disappeared": 1, "missing": 1}
    assert "independent between the two years" in summary["method"]["uncertainty"]
    table = pd.read_csv(out / "change.csv")
    assert list(table["glacier_id"]) == list(WORLD) and table["kept"].sum() == 4
    layers = {name for name, _ in pyogrio.list_layers(out / "change.gpkg")}
    assert {"glaciers", "outline_from", "outline_to", "loss", "gain"} <= layers
    loss = gpd.read_file(out / "change.gpkg", layer="loss").set_index("unit_id")
    assert loss.crs == "EPSG:4326"
    assert loss.loc["G6", "area_km2"] == pytest.approx(0.5, rel=1e-5)
    assert loss.loc["G2", "area_km2"] == pytest.approx(0.2, rel=1e-4)
    assert len(list((out / "figures" / "thumbnails").glob("*.png"))) == 6


def test_extreme_filter_and_territory_restriction(tmp_path: Path) -> None:
    start, end, inventory = world_frames()
    result = compute_change(start, end, inventory, 2015, 2023, ChangeParams(drop_extreme=0.25))
    # floor(0.25 * 4) = 1: the disappeared G6 (-12.5 %/a) lies farthest from the median.
    assert result.glaciers.loc["G6", "drop_reason"].startswith("among the 25% most extreme")
    assert result.regional["n_glaciers"] == 3
    extreme = next(f for f in result.filters if f.name == "extreme")
    assert extreme.n_glaciers_removed == 1 and extreme.area_removed_km2 == pytest.approx(0.5, rel=1e-5)

    territory = compute_change(start, end, inventory, 2015, 2023, ChangeParams(restrict="territory", drop_extreme=0))
    assert territory.glaciers.loc["G2", "area_from_km2"] == pytest.approx(2.2, rel=1e-5)
    assert territory.glaciers.loc["G2", "recall"] == pytest.approx(1.0, rel=1e-5)


def test_missing_workspace_outlines_is_a_clear_error(tmp_path: Path) -> None:
    work = write_workspace(tmp_path / "W")
    with pytest.raises(InputNotFoundError, match=r"no outlines for 2020: .*2020\.gpkg not found"):
        run_change(ChangeSettings(work=work, year_from=2015, year_to=2020))


# -- outlines form: two outline sets with a shared id ------------------------------------------------


def outline_sets() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A splits (new id A2), C merges into B, D disappears, E is new, F shrinks.

    UTM 32N near its central meridian (47 deg N), where true areas are 1/0.9996^2 = 1.0008 times
    the planar ones.
    """
    start = gpd.GeoDataFrame(
        {"RGIId": ["A", "B", "C", "D", "F"]},
        geometry=[box_km(0, 0, 2000, 1000), box_km(3000, 0, 1000, 1000), box_km(4000, 0, 1000, 1000),
                  box_km(6000, 0, 1000, 1000), box_km(8000, 0, 1000, 1000)],
        crs=UTM32,
    )
    end = gpd.GeoDataFrame(
        {"RGIId": ["A", "A2", "B", "E", "F"]},
        geometry=[box_km(0, 0, 900, 1000), box_km(1000, 0, 800, 1000), box_km(3000, 0, 1800, 1000),
                  box_km(20000, 0, 500, 1000), box_km(8000, 0, 1000, 900)],
        crs=UTM32,
    )
    shift = {"xoff": 495_000.0, "yoff": 5_200_000.0}
    return start.translate(**shift).pipe(_frame, start), end.translate(**shift).pipe(_frame, end)


def _frame(geoms: gpd.GeoSeries, like: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return like.set_geometry(geoms)


def test_outlines_form_reports_splits_merges_and_disappearances(tmp_path: Path) -> None:
    start, end = outline_sets()
    start.to_file(tmp_path / "a.gpkg")
    end.to_file(tmp_path / "b.shp")
    settings = ChangeSettings(work=tmp_path / "W", year_from=2000, year_to=2010, drop_extreme=0.0,
                              outlines_from=tmp_path / "a.gpkg", outlines_to=tmp_path / "b.shp", out=tmp_path / "out")
    result = run_change(settings)
    g = result.glaciers
    assert dict(g["status"]) == {"A": "split", "B": "merged", "C": "merged", "D": "disappeared", "F": "ok",
                                 "A2": "split", "E": "new"}
    assert g.loc["A2", "unit_id"] == "A" and g.loc["C", "unit_id"] == "B"
    assert g.loc["A", "unit_area_to_km2"] == pytest.approx(1.7, rel=1e-3)  # A + A2
    assert g.loc["C", "rel_rate_pct_a"] == pytest.approx(-1.0, rel=1e-3)  # (1.8 - 2) / 2 / 10
    assert not g.loc["E", "kept"] and g.loc["E", "drop_reason"] == "not comparable: new"
    r = result.regional
    k2 = 0.9996**2  # UTM scale factor on the central meridian, squared
    assert r["area_from_km2"] == pytest.approx(6.0 / k2, rel=1e-4)
    assert r["area_to_km2"] == pytest.approx(4.4 / k2, rel=1e-4)
    assert r["rel_rate_pct_a"] == pytest.approx(-1.6 / 10 / 6.0 * 100, rel=1e-4)
    assert r["share_of_inventory_area"] == pytest.approx(1.0)
    classes = result.size_classes
    assert dict(classes.loc[["1-2", "2-5"], "n_kept"]) == {"1-2": 2, "2-5": 2}
    assert classes.loc["2-5", "rel_rate_pct_a"] == pytest.approx(-0.5 / 4.0 / 10 * 100, rel=1e-4)
    not_comparable = result.filters[0]
    assert (not_comparable.n_glaciers_removed, round(not_comparable.area_removed_km2 * k2, 4)) == (1, 0.5)
    assert math.isnan(r["rate_sigma_km2_a"])
    assert "unavailable" in result.uncertainty
    skipped = {f.name: f.skipped_reason for f in result.filters if not f.applied}
    assert set(skipped) == {"masked", "recall", "extreme"} and "no masks" in skipped["masked"]
    assert gpd.read_file(tmp_path / "out" / "change.gpkg", layer="glaciers").crs == UTM32

    # With a confidence band of +-0.1 km2 on every outline: unit and regional sigma.
    banded = [f.rename(columns={"RGIId": "glacier_id"}).assign(area_km2=f.area / 1e6) for f in (start, end)]
    banded = [f.assign(area_low_km2=f["area_km2"] - 0.1, area_high_km2=f["area_km2"] + 0.1) for f in banded]
    with_band = compute_change(banded[0], banded[1], None, 2000, 2010, ChangeParams(drop_extreme=0.0))
    gb = with_band.glaciers
    assert gb.loc["A", "rate_sigma_km2_a"] == pytest.approx(math.hypot(0.1, 0.2) / 10)  # A2 adds to the end year
    assert gb.loc["D", "rate_sigma_km2_a"] == pytest.approx(0.1 / 10)  # nothing left: known exactly
    assert with_band.regional["rate_sigma_km2_a"] == pytest.approx(math.hypot(0.5, 0.4) / 10)


def test_outlines_from_one_file_with_a_year_column(tmp_path: Path) -> None:
    start, end = outline_sets()
    both = pd.concat([start.assign(year=2000.0), end.assign(year=2010.0)], ignore_index=True)
    both.to_file(tmp_path / "all.gpkg")
    a, b, inputs = read_outline_pair(tmp_path / "all.gpkg", tmp_path / "all.gpkg", 2000, 2010)
    assert list(a["glacier_id"]) == ["A", "B", "C", "D", "F"] and list(b["glacier_id"]) == ["A", "A2", "B", "E", "F"]
    assert inputs["id_column"] == "RGIId" and inputs["year_column"] == "year"
    with pytest.raises(InvalidInputError, match=r"no outlines for 2023 in column 'year' \(years present: \[2000, 2010\]\)"):
        read_outline_pair(tmp_path / "all.gpkg", tmp_path / "all.gpkg", 2000, 2023)
    start.to_file(tmp_path / "start.gpkg")
    with pytest.raises(InvalidInputError, match="no 'year' column to tell"):
        read_outline_pair(tmp_path / "start.gpkg", tmp_path / "start.gpkg", 2000, 2010)


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    start, end = outline_sets()
    with pytest.raises(ConfigError, match=r"--from \(2023\) must be before --to \(2015\)"):
        resolve_settings(ChangeSettings, {"year_from": 2023, "year_to": 2015}, environ={})
    with pytest.raises(ValidationError):
        ChangeSettings(year_from=2015, year_to=2015)
    prepared = [f.rename(columns={"RGIId": "glacier_id"}) for f in (start, end)]
    with pytest.raises(InvalidInputError, match="must be before"):
        compute_change(prepared[0], prepared[1], None, 2010, 2000)
    with pytest.raises(CRSMismatchError, match="EPSG:4326.*EPSG:32632"):
        compute_change(prepared[0], prepared[1].to_crs("EPSG:4326"), None, 2000, 2010)

    start.to_file(tmp_path / "a.gpkg")
    end.assign(RGIId=["x1", "x2", "x3", "x4", "x5"]).to_file(tmp_path / "other.gpkg")
    with pytest.raises(InvalidInputError, match="no glacier id is shared"):
        read_outline_pair(tmp_path / "a.gpkg", tmp_path / "other.gpkg", 2000, 2010)
    end.to_crs("EPSG:4326").to_file(tmp_path / "lonlat.gpkg")
    with pytest.raises(CRSMismatchError):
        run_change(ChangeSettings(work=tmp_path / "W", year_from=2000, year_to=2010, out=tmp_path / "o",
                                  outlines_from=tmp_path / "a.gpkg", outlines_to=tmp_path / "lonlat.gpkg"))
    assert not (tmp_path / "o").exists()
    with pytest.raises(InvalidInputError, match="no column 'name'"):
        read_outline_pair(tmp_path / "a.gpkg", tmp_path / "lonlat.gpkg", 2000, 2010, id_column="name")
    pd.concat([start, start.iloc[:1]]).to_file(tmp_path / "dup.gpkg")
    with pytest.raises(InvalidInputError, match="'A' in column 'RGIId' occur more than once"):
        read_outline_pair(tmp_path / "dup.gpkg", tmp_path / "a.gpkg", 2000, 2010)
    with pytest.raises(InputNotFoundError):
        read_outline_pair(tmp_path / "nope.gpkg", tmp_path / "a.gpkg", 2000, 2010)


def test_nothing_is_overwritten_without_overwrite_and_a_crash_leaves_no_half_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start, end = outline_sets()
    start.to_file(tmp_path / "a.gpkg")
    end.to_file(tmp_path / "b.gpkg")
    out = tmp_path / "out"
    values = dict(work=tmp_path / "W", year_from=2000, year_to=2010, outlines_from=tmp_path / "a.gpkg",
                  outlines_to=tmp_path / "b.gpkg", out=out)
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        run_change(ChangeSettings(**values))
    assert (out / "mine.txt").read_text() == "keep me"

    def broken(*args: object) -> None:
        raise RuntimeError("figure failed")

    monkeypatch.setattr(glacimap.report, "write_report", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        run_change(ChangeSettings(**values, overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gpkg", "b.gpkg", "out"]  # no temp folder left
    assert (out / "mine.txt").read_text() == "keep me"

    monkeypatch.undo()
    run_change(ChangeSettings(**values, overwrite=True))
    assert not (out / "mine.txt").exists() and (out / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gpkg", "b.gpkg", "out"]


# -- real outlines: Kongsfjorden, Svalbard (NPI, 1936 / 1990 / 2007) ---------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not SVALBARD.is_file(), reason=f"real data not available: {SVALBARD}")
@pytest.mark.parametrize("year_from,year_to", [(1936, 1990), (1990, 2007)])
def test_svalbard_outlines_match_a_hand_computation(tmp_path: Path, year_from: int, year_to: int) -> None:
    data = gpd.read_file(SVALBARD)
    hand = {(row["name"], int(row["year"])): geodesic_km2(row.geometry, data.crs) for _, row in data.iterrows()}
    utm = {(row["name"], int(row["year"])): row.geometry.area / 1e6 for _, row in data.iterrows()}
    names = sorted(data["name"].unique())

    settings = ChangeSettings(work=tmp_path / "W", year_from=year_from, year_to=year_to, outlines_from=SVALBARD,
                              outlines_to=SVALBARD, id_column="name", out=tmp_path / "out")
    result = run_change(settings)
    g = result.glaciers
    dt = year_to - year_from
    assert sorted(g.index) == names
    for name in names:
        a0, a1 = hand[(name, year_from)], hand[(name, year_to)]
        assert g.loc[name, "area_from_km2"] == pytest.approx(a0, rel=1e-5)
        assert g.loc[name, "area_to_km2"] == pytest.approx(a1, rel=1e-5)
        # The data's own UTM 33N plane is within its scale error (< 0.1 %) of the true areas.
        assert g.loc[name, "area_from_km2"] == pytest.approx(utm[(name, year_from)], rel=1e-3)
        assert g.loc[name, "rate_km2_a"] == pytest.approx((a1 - a0) / dt, rel=1e-4)
        assert g.loc[name, "rel_rate_pct_a"] == pytest.approx(100 * (a1 - a0) / a0 / dt, rel=1e-4)
    total0 = sum(hand[(n, year_from)] for n in names)
    total1 = sum(hand[(n, year_to)] for n in names)
    r = result.regional
    assert r["n_glaciers"] == 5 and r["share_of_inventory_area"] == pytest.approx(1.0)
    assert r["area_from_km2"] == pytest.approx(total0, rel=1e-5)
    assert r["area_to_km2"] == pytest.approx(total1, rel=1e-5)
    assert r["rel_rate_pct_a"] == pytest.approx(100 * (total1 - total0) / total0 / dt, rel=1e-4)
    expected = {1936: (32.908, 26.244, -0.3750), 1990: (26.244, 24.948, -0.2906)}[year_from]
    assert (round(r["area_from_km2"], 3), round(r["area_to_km2"], 3), round(r["rel_rate_pct_a"], 4)) == expected

    # Midtre Lovenbreen breaks from 2 into 3 disconnected parts between 1936 and 1990.
    split = {1936: {"Midtre Lovenbreen"}, 1990: set()}[year_from]
    assert set(g.index[g["status"] == "split"]) == split
    assert set(g.index[g["status"] == "ok"]) == set(names) - split
    assert "unavailable" in result.uncertainty and g["rate_sigma_km2_a"].isna().all()

    out = tmp_path / "out"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"{r['rel_rate_pct_a']:+.3f}" in page and "Austre Brøggerbreen" in page
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["inputs"]["id_column"] == "name" and summary["inputs"]["year_column"] == "year"
    assert summary["regional"]["rate_sigma_km2_a"] is None


def test_wall_to_wall_workspace_without_outlines_says_how_to_make_them(tmp_path: Path) -> None:
    (tmp_path / "aoi.json").write_text("{}")
    with pytest.raises(InputNotFoundError, match="outlines --year 2015 --restrict none"):
        run_change(ChangeSettings(work=tmp_path, year_from=2015, year_to=2023))
