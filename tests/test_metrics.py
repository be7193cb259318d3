"""Evaluation metrics on hand-made geometries and rasters whose answers are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from glacimap.errors import CRSMismatchError, InvalidInputError, OutputExistsError
from glacimap.metrics import (
    EvaluationReport,
    area_deviation,
    area_overlap,
    detection_metrics,
    evaluate_rasters,
    evaluate_vectors,
    format_table,
    match_glaciers,
    pixel_metrics,
    polis,
    run_evaluate,
    size_class,
)
from glacimap.rasters import Grid, write_cog
from glacimap.settings import EvaluateSettings
from glacimap.vectors import write_layers

UTM = "EPSG:32632"
X0, Y0 = 650_000.0, 5_200_000.0  # somewhere in the Alps, UTM 32N


def square(x: float, y: float, size: float = 1000.0) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + size, Y0 + y + size)


def layer(geoms: list, ids: list[str] | None = None, crs: str = UTM) -> gpd.GeoDataFrame:
    ids = ids if ids is not None else [f"G{i}" for i in range(len(geoms))]
    return gpd.GeoDataFrame({"glacier_id": ids}, geometry=geoms, crs=crs)


# Two 1 km squares offset by 10 m: every boundary node of one is 0 m (top and bottom sides) or
# 10 m (left and right sides) from the other's boundary; 200 of each side's 400 nodes are 10 m
# away, so each direction averages 5 m and PoLiS = 5 m.
SHIFTED_IOU = 990 / 1010
SHIFTED_POLIS = 5.0
# A 1020 m square around a 1000 m one: inner nodes (400) are all 10 m out; outer nodes (408)
# are 10 m in, except the 4 corners at 10 * sqrt(2) m.
GROWN_POLIS = 0.5 * 10 + 0.5 * (4 * 10 * math.sqrt(2) + 404 * 10) / 408


# -- size classes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "area, label",
    [(0.0, "<0.1"), (0.0999, "<0.1"), (0.1, "0.1-1"), (0.999, "0.1-1"), (1.0, "1-10"), (9.99, "1-10"), (10.0, ">10"), (5000.0, ">10")],
)
def test_size_class_boundaries(area: float, label: str) -> None:
    assert size_class(area) == label


@pytest.mark.parametrize("area", [-0.1, math.nan, math.inf])
def test_size_class_rejects_nonsense(area: float) -> None:
    with pytest.raises(InvalidInputError):
        size_class(area)


# -- PoLiS ---------------------------------------------------------------------------------------
def test_polis_two_squares_offset_by_10_m() -> None:
    result = polis(square(0, 0), square(10, 0))
    assert len(result.a_to_b) == 400 and len(result.b_to_a) == 400
    assert np.count_nonzero(np.isclose(result.a_to_b, 10.0)) == 200
    assert np.count_nonzero(np.isclose(result.a_to_b, 0.0)) == 200
    assert result.value == pytest.approx(SHIFTED_POLIS)
    assert result.p95 == pytest.approx(10.0)
    assert result.median == pytest.approx(5.0)  # halfway between the 0 m and 10 m nodes


def test_polis_square_inside_a_larger_one_asymmetric_node_counts() -> None:
    result = polis(square(0, 0), square(-10, -10, 1020))
    assert len(result.a_to_b) == 400 and len(result.b_to_a) == 408
    np.testing.assert_allclose(result.a_to_b, 10.0)
    assert result.b_to_a.max() == pytest.approx(10 * math.sqrt(2))
    assert result.value == pytest.approx(GROWN_POLIS)
    assert result.median == pytest.approx(10.0)


def test_polis_identical_and_holes() -> None:
    assert polis(square(0, 0), square(0, 0)).value == pytest.approx(0.0, abs=1e-9)
    # A 100 m hole in one polygon only: its 40 nodes are 450 m from the outer boundary, and
    # the other polygon has no hole, so the distance is not symmetric in node counts.
    holed = shapely.Polygon(square(0, 0).exterior.coords, [square(450, 450, 100).exterior.coords])
    result = polis(holed, square(0, 0))
    assert len(result.a_to_b) == 440
    assert result.value == pytest.approx(0.5 * (40 * 450) / 440)


def test_polis_spacing_and_errors() -> None:
    coarse = polis(square(0, 0), square(10, 0), spacing=100.0)
    assert len(coarse.a_to_b) == 40 and coarse.value == pytest.approx(5.0)
    with pytest.raises(InvalidInputError):
        polis(square(0, 0), shapely.Polygon())
    with pytest.raises(InvalidInputError):
        polis(square(0, 0), square(0, 0), spacing=0)


# -- overlap and matching ------------------------------------------------------------------------
def test_area_overlap_two_offset_squares() -> None:
    m = area_overlap(layer([square(10, 0)]), layer([square(0, 0)]))
    assert m["iou"] == pytest.approx(SHIFTED_IOU)
    assert m["precision"] == pytest.approx(0.99) and m["recall"] == pytest.approx(0.99)
    assert m["f1"] == pytest.approx(0.99)
    assert m["intersection_km2"] == pytest.approx(0.99)


def test_pixel_metrics_by_hand() -> None:
    ref = np.zeros((4, 5), dtype=bool)
    ref[1:3, 1:4] = True  # 6 px
    pred = np.zeros_like(ref)
    pred[1:3, 2:5] = True  # 6 px, 4 overlapping
    m = pixel_metrics(pred, ref, pixel_area_m2=100.0)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (4, 2, 2, 12)
    assert m["iou"] == pytest.approx(4 / 8) and m["f1"] == pytest.approx(8 / 12)
    assert m["accuracy"] == pytest.approx(16 / 20)
    assert m["ref_area_km2"] == pytest.approx(6e-4)
    valid = np.ones_like(ref)
    valid[:, 4] = False  # hides both false positives
    m = pixel_metrics(pred, ref, valid)
    assert (m["tp"], m["fp"], m["fn"]) == (4, 0, 2) and m["precision"] == 1.0
    empty = pixel_metrics(np.zeros_like(ref), ref)
    assert empty["iou"] == 0.0 and empty["f1"] == 0.0 and empty["recall"] == 0.0 and empty["precision"] is None


def test_match_is_more_than_half_of_each() -> None:
    ref = layer([square(0, 0)])
    halves = layer([square(0, 0, 1000).intersection(square(-500, 0)), square(0, 0).intersection(square(500, 0))])
    assert match_glaciers(halves, ref).empty  # 50 % of the reference is not more than 50 %
    uneven = layer([shapely.box(X0, Y0, X0 + 600, Y0 + 1000), shapely.box(X0 + 600, Y0, X0 + 1000, Y0 + 1000)])
    matches = match_glaciers(uneven, ref)
    assert matches[["pred_index", "ref_index"]].values.tolist() == [[0, 0]]
    assert matches["ref_fraction"].iat[0] == pytest.approx(0.6) and matches["pred_fraction"].iat[0] == 1.0


def test_match_is_one_to_one_with_overlapping_references() -> None:
    pred = layer([square(0, 0)])
    ref = layer([square(0, 0), square(5, 0)])  # two overlapping reference copies
    matches = match_glaciers(pred, ref)
    assert len(matches) == 1 and matches["ref_index"].iat[0] == 0  # the larger intersection wins


def test_match_needs_one_metric_crs() -> None:
    with pytest.raises(CRSMismatchError):
        match_glaciers(layer([square(0, 0)]), layer([square(0, 0)]).to_crs("EPSG:32633"))
    with pytest.raises(CRSMismatchError):
        match_glaciers(layer([square(0, 0)]).to_crs(4326), layer([square(0, 0)]).to_crs(4326))


def test_detection_and_area_deviation() -> None:
    assert detection_metrics(1, 2, 1) == {
        "matched": 1, "pred_glaciers": 2, "ref_glaciers": 1, "false_positives": 1, "false_negatives": 0,
        "precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
    }
    assert detection_metrics(0, 0, 3)["precision"] is None and detection_metrics(0, 0, 3)["f1"] == 0.0
    with pytest.raises(InvalidInputError):
        detection_metrics(2, 1, 5)
    pred, ref = layer([square(-10, -10, 1020)]), layer([square(0, 0)])
    dev = area_deviation(pred, ref, match_glaciers(pred, ref))
    assert dev["area_deviation_km2"].iat[0] == pytest.approx(1.0404 - 1.0)
    assert dev["relative_area_deviation"].iat[0] == pytest.approx(0.0404)


# -- evaluate_vectors ----------------------------------------------------------------------------
def test_evaluate_two_offset_squares() -> None:
    report = evaluate_vectors(layer([square(10, 0)], ["P1"]), layer([square(0, 0)], ["R1"]))
    assert report.crs == UTM and report.notes == []
    assert report.overlap["iou"] == pytest.approx(SHIFTED_IOU)
    assert report.detection["f1"] == 1.0
    assert report.polis["mean"] == pytest.approx(SHIFTED_POLIS) and report.polis["n"] == 1
    assert report.area_deviation["mean_abs_km2"] == pytest.approx(0.0, abs=1e-9)
    glacier = report.glaciers[0]
    assert glacier["ref_id"] == "R1" and glacier["pred_id"] == "P1" and glacier["size_class"] == "1-10"
    assert report.size_classes["1-10"]["f1"] == 1.0 and report.size_classes["<0.1"]["ref_glaciers"] == 0


def test_evaluate_perfect_match() -> None:
    glaciers = [square(0, 0), square(3000, 0, 200), square(6000, 0, 5000)]
    report = evaluate_vectors(layer(glaciers), layer(glaciers))
    assert report.overlap["iou"] == pytest.approx(1.0)
    assert report.detection["f1"] == 1.0 and report.detection["matched"] == 3
    assert report.polis["p95"] == pytest.approx(0.0, abs=1e-9)
    assert {k: v["ref_glaciers"] for k, v in report.size_classes.items()} == {"<0.1": 1, "0.1-1": 0, "1-10": 1, ">10": 1}


def test_evaluate_disjoint() -> None:
    report = evaluate_vectors(layer([square(5000, 0)]), layer([square(0, 0)]))
    assert report.overlap["iou"] == 0.0 and report.overlap["precision"] == 0.0 and report.overlap["f1"] == 0.0
    assert report.detection["matched"] == 0 and report.detection["f1"] == 0.0
    assert report.polis["n"] == 0 and report.polis["mean"] is None
    assert len(report.false_positives) == 1 and report.glaciers[0]["matched"] is False


def test_evaluate_glacier_split_in_two() -> None:
    ref = layer([square(0, 0)], ["R"])
    halves = layer([shapely.box(X0, Y0, X0 + 500, Y0 + 1000), shapely.box(X0 + 500, Y0, X0 + 1000, Y0 + 1000)])
    report = evaluate_vectors(halves, ref)
    assert report.overlap["iou"] == pytest.approx(1.0)  # same ice...
    d = report.detection  # ...but no glacier found: each half is only 50 % of the reference
    assert (d["matched"], d["false_positives"], d["false_negatives"]) == (0, 2, 1)
    assert d["precision"] == 0.0 and d["f1"] == 0.0
    # the two halves are 0.5 km2 each: unmatched, they are counted in their own class
    assert report.size_classes["0.1-1"]["pred_glaciers"] == 2
    assert report.size_classes["1-10"]["recall"] == 0.0


def test_evaluate_empty_prediction_is_defined() -> None:
    empty = gpd.GeoDataFrame({"glacier_id": []}, geometry=[], crs=UTM)
    report = evaluate_vectors(empty, layer([square(0, 0)]))
    assert report.overlap["iou"] == 0.0 and report.overlap["recall"] == 0.0 and report.overlap["precision"] is None
    assert report.detection["recall"] == 0.0 and report.detection["precision"] is None
    assert any("no predicted glaciers" in n for n in report.notes)
    json.dumps(report.to_dict())  # no NaN, all JSON types
    assert "IoU 0.000" in format_table(report)


def test_evaluate_reprojects_geographic_and_mismatched_crs() -> None:
    pred = layer([square(10, 0)]).to_crs("EPSG:4326")
    report = evaluate_vectors(pred, layer([square(0, 0)]))
    assert report.crs == UTM
    assert any("both reprojected to EPSG:32632" in n for n in report.notes)
    assert report.overlap["iou"] == pytest.approx(SHIFTED_IOU, rel=1e-6)
    assert report.polis["mean"] == pytest.approx(SHIFTED_POLIS, abs=0.01)
    both = evaluate_vectors(pred, layer([square(0, 0)]).to_crs("EPSG:4326"))
    assert both.crs == UTM and "not metres" in both.notes[0]


def test_evaluate_merges_rows_sharing_an_id_and_repairs_geometry() -> None:
    bowtie = shapely.Polygon([(X0, Y0), (X0 + 1000, Y0 + 1000), (X0 + 1000, Y0), (X0, Y0 + 1000), (X0, Y0)])
    pred = layer([shapely.box(X0, Y0, X0 + 500, Y0 + 1000), shapely.box(X0 + 500, Y0, X0 + 1000, Y0 + 1000), bowtie],
                 ["A", "A", "B"])
    report = evaluate_vectors(pred, layer([square(0, 0)]))
    assert report.detection["pred_glaciers"] == 2  # A merged from two rows; B repaired
    assert report.detection["matched"] == 1
    assert any("merged" in n for n in report.notes)


def test_format_table_shows_the_numbers() -> None:
    report = evaluate_vectors(layer([square(10, 0)]), layer([square(0, 0)]))
    table = format_table(report)
    assert f"IoU {SHIFTED_IOU:.3f}" in table
    assert "mean 5.0 m" in table and "95th percentile 5.0 m" in table  # over glaciers: one here
    assert "1-10" in table and table == format_table(report.to_dict())


# -- rasters -------------------------------------------------------------------------------------
GRID = Grid(UTM, Affine(10.0, 0.0, X0, 0.0, -10.0, Y0 + 200), 20, 20)


def _ref_raster() -> np.ndarray:
    ref = np.zeros(GRID.shape, dtype=np.uint8)
    ref[5:15, 5:15] = 1  # 100 px, 0.01 km2
    return ref


def test_evaluate_rasters_shifted_by_one_pixel() -> None:
    ref = _ref_raster()
    pred = np.zeros(GRID.shape, dtype=np.float32)
    pred[5:15, 6:16] = 0.9
    report = evaluate_rasters(pred, ref, grid=GRID)
    o = report.overlap
    assert (o["tp"], o["fp"], o["fn"]) == (90, 10, 10)
    assert o["iou"] == pytest.approx(90 / 110) and o["ref_area_km2"] == pytest.approx(0.01)
    assert report.detection["matched"] == 1
    assert report.polis["mean"] == pytest.approx(5.0)  # the two squares offset by one pixel (10 m)
    # no confidence band: the ECE of the raw confidence of p = 0.9 is reported
    assert report.calibration["source"].startswith("probability")


def test_evaluate_rasters_ece_from_confidence() -> None:
    ref = _ref_raster()
    pred = ref.astype(np.float32)
    pred[5:15, 5] = 0  # 10 misses
    conf = np.full(GRID.shape, 0.99)
    conf[5:15, 5] = 0.5  # the misses are uncertain
    report = evaluate_rasters(pred, ref, confidence=conf, grid=GRID)
    c = report.calibration
    # 390 pixels at 0.99, all right: gap 0.01; 10 at 0.5, all wrong: gap 0.5
    assert c["ece"] == pytest.approx((390 * 0.01 + 10 * 0.5) / 400)
    assert c["errors_in_band"] == 1.0 and c["band_share"] == pytest.approx(10 / 400)


def test_evaluate_rasters_valid_mask_labels_and_empty() -> None:
    ref = np.zeros(GRID.shape, dtype=np.int32)
    ref[2:8, 2:8] = 7
    ref[2:8, 8:14] = 9  # touching glacier with another label
    pred = (ref > 0).astype(np.float32)
    pred[:, 18:] = np.nan  # nodata
    report = evaluate_rasters(pred, ref, grid=GRID)
    assert report.overlap["valid_pixels"] == 20 * 18
    assert report.detection["ref_glaciers"] == 2 and report.detection["pred_glaciers"] == 1
    assert report.detection["matched"] == 0  # one blob covering two labelled glaciers
    scaled = evaluate_rasters(pred, np.where(ref > 0, 255, 0).astype(np.uint8), grid=GRID)
    assert scaled.detection["ref_glaciers"] == 1  # a 0/255 mask is a mask, not labels
    empty = evaluate_rasters(np.zeros(GRID.shape, np.float32), ref, grid=GRID)
    assert empty.overlap["iou"] == 0.0 and empty.detection["recall"] == 0.0
    with pytest.raises(InvalidInputError):
        evaluate_rasters(np.full(GRID.shape, 3.5), ref)


# -- run_evaluate (files) ------------------------------------------------------------------------
def test_run_evaluate_outlines(tmp_path) -> None:
    pred_path = write_layers(tmp_path / "2023.gpkg", {"bands": layer([square(0, 0, 50)]), "outlines": layer([square(10, 0)])})
    ref_path = tmp_path / "truth.gpkg"
    layer([square(0, 0)]).to_file(ref_path, layer="rgi", driver="GPKG")
    out = tmp_path / "report.json"
    settings = EvaluateSettings(pred=pred_path, ref=ref_path, out=out, work=tmp_path / "w")
    report = run_evaluate(settings)
    assert isinstance(report, EvaluationReport)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["overlap"]["iou"] == pytest.approx(SHIFTED_IOU)  # layer 'outlines', not 'bands'
    assert data["polis"]["mean"] == pytest.approx(SHIFTED_POLIS)
    with pytest.raises(OutputExistsError):
        run_evaluate(settings)
    run_evaluate(settings.model_copy(update={"overwrite": True}))


def test_run_evaluate_rasters_and_mixed(tmp_path) -> None:
    ref = _ref_raster()
    prob = np.zeros(GRID.shape, dtype=np.float32)
    prob[5:15, 6:16] = 0.9
    conf = np.where(prob > 0.5, 0.9, 0.8).astype(np.float32)
    pred_path = write_cog(tmp_path / "pred.tif", np.stack([prob, conf]), GRID, ["glacier_probability", "confidence"])
    # nodata = 0 in an integer mask is taken to mean "not glacier" (GIS tools often write that)
    ref_path = write_cog(tmp_path / "truth.tif", ref, GRID, ["glacier_mask"], nodata=0)
    report = run_evaluate(EvaluateSettings(pred=pred_path, ref=ref_path, work=tmp_path / "w"))
    assert report.overlap["iou"] == pytest.approx(90 / 110) and report.overlap["valid_pixels"] == 400
    assert report.calibration["source"] == "confidence"
    # 100 px at 0.9 of which 90 right; 300 px at 0.8 of which 290 right
    assert report.calibration["ece"] == pytest.approx((100 * 0.0 + 300 * abs(290 / 300 - 0.8)) / 400)
    # raster prediction against outline reference: the square rasterises to the same 100 px
    outline = tmp_path / "truth.gpkg"
    write_layers(outline, {"outlines": layer([shapely.box(X0 + 50, Y0 + 50, X0 + 150, Y0 + 150)])})
    mixed = run_evaluate(EvaluateSettings(pred=pred_path, ref=outline, work=tmp_path / "w"))
    assert mixed.overlap["iou"] == pytest.approx(90 / 110) and mixed.detection["matched"] == 1


def test_run_evaluate_rejects_different_grids(tmp_path) -> None:
    ref_path = write_cog(tmp_path / "truth.tif", _ref_raster(), GRID, ["glacier_mask"])
    shifted = Grid(UTM, Affine(10.0, 0.0, X0 + 1, 0.0, -10.0, Y0 + 200), 20, 20)
    other_path = write_cog(tmp_path / "shifted.tif", _ref_raster(), shifted, ["glacier_mask"])
    with pytest.raises(InvalidInputError, match="shifted.tif.*truth.tif"):
        run_evaluate(EvaluateSettings(pred=other_path, ref=ref_path, work=tmp_path / "w"))
    utm33 = Grid("EPSG:32633", GRID.transform, 20, 20)
    crs_path = write_cog(tmp_path / "utm33.tif", _ref_raster(), utm33, ["glacier_mask"])
    with pytest.raises(CRSMismatchError, match="utm33.tif"):
        run_evaluate(EvaluateSettings(pred=crs_path, ref=ref_path, work=tmp_path / "w"))


# -- real outlines -------------------------------------------------------------------------------
SVALBARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "svalbard" / "svalbard.gpkg"


@pytest.mark.shared_data
@pytest.mark.skipif(not SVALBARD.exists(), reason="real Svalbard outlines (../shared/data/svalbard) not available")
def test_real_svalbard_outlines_2007_against_1990() -> None:
    outlines = gpd.read_file(SVALBARD).rename(columns={"name": "glacier_id"})
    later, earlier = outlines[outlines["year"] == 2007], outlines[outlines["year"] == 1990]
    report = evaluate_vectors(later, earlier)
    assert report.crs == "EPSG:32633" and report.notes == []
    assert report.detection["matched"] == 5 and report.detection["f1"] == 1.0
    expected = (later.set_index("glacier_id").area - earlier.set_index("glacier_id").area) / 1e6
    for glacier in report.glaciers:
        assert glacier["pred_id"] == glacier["ref_id"]
        assert glacier["area_deviation_km2"] == pytest.approx(expected[glacier["ref_id"]], rel=1e-9)
        assert glacier["area_deviation_km2"] < 0  # every glacier shrank between 1990 and 2007
        assert 5.0 < glacier["polis_m"] < 50.0  # fronts retreated by tens of metres
    assert report.overlap["precision"] > 0.99  # the 2007 ice lies almost entirely inside 1990's
