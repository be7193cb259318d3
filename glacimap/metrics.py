"""Accuracy of predicted glacier outlines or rasters against a reference (``glacimap evaluate``).

Metrics (definitions in docs/evaluation.md):

* overlap: IoU, precision, recall and F1 of glacier area, from pixels (rasters) or exactly
  from polygon areas (outlines);
* glacier detection: a predicted and a reference glacier *match* when their intersection is
  more than 50 % of each; precision, recall and F1 over glaciers;
* area deviation of matched glaciers, absolute (km2) and relative to the reference area;
* PoLiS boundary distance (Avbelj et al. 2015) of matched glaciers, boundary nodes sampled
  every 10 m; summarised over glaciers by mean, median and 95th percentile;
* expected calibration error when pixel confidences are given;
* all of the glacier-level metrics by reference size class (<0.1, 0.1-1, 1-10, >10 km2).

Compute functions take arrays and GeoDataFrames in a projected CRS in metres; the I/O entry
point :func:`run_evaluate` reads files and writes the JSON report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from glacimap.confidence import binary_confidence, reliability_curve
from glacimap.errors import CRSMismatchError, InvalidInputError, OutputExistsError
from glacimap.inventory import detect_id_column
from glacimap.rasters import Grid, same_crs, utm_crs
from glacimap.workspace import write_json_atomic

if TYPE_CHECKING:
    from glacimap.settings import EvaluateSettings

log = logging.getLogger(__name__)

#: Glacier size classes: (label, lower bound inclusive, upper bound exclusive), km2.
SIZE_CLASSES: tuple[tuple[str, float, float], ...] = (
    ("<0.1", 0.0, 0.1),
    ("0.1-1", 0.1, 1.0),
    ("1-10", 1.0, 10.0),
    (">10", 10.0, math.inf),
)
#: Band names tried, in order, for the prediction in a raster (else band 1).
PREDICTION_BANDS = ("glacier_probability", "probability", "p_glacier", "glacier_mask", "mask", "glacier", "label")
#: Band names tried, in order, for the reference in a raster (else band 1).
REFERENCE_BANDS = ("glacier_mask", "mask", "glacier", "label", "truth", "reference")
#: Band names tried, in order, for pixel confidence (ECE is computed when one is present).
CONFIDENCE_BANDS = ("calibrated_confidence", "confidence_calibrated", "confidence")
#: Layer of glacimap's own outline GeoPackages.
OUTLINES_LAYER = "outlines"
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
#: Calibrated-confidence level of the confidence bands drawn by ``glacimap outlines``.
BAND_LEVEL = 0.95
_M2_PER_KM2 = 1e6


# -- small helpers -------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> float | None:
    """num / den, or None when the ratio is undefined (0 / 0)."""
    return float(num) / float(den) if den > 0 else None


def size_class(area_km2: float) -> str:
    """Size-class label of a glacier area in km2 (lower bounds inclusive: 0.1 km2 is '0.1-1')."""
    if not math.isfinite(area_km2) or area_km2 < 0:
        raise InvalidInputError(f"glacier area must be a finite non-negative number of km2, got {area_km2}")
    for label, low, high in SIZE_CLASSES:
        if low <= area_km2 < high:
            return label
    raise AssertionError("unreachable: the last size class is unbounded")  # pragma: no cover


def is_metric_crs(crs: object) -> bool:
    """True for a projected CRS whose axes are in metres."""
    parsed = CRS.from_user_input(crs)
    return parsed.is_projected and all(a.unit_name in ("metre", "meter") for a in parsed.axis_info)


# -- overlap -------------------------------------------------------------------------------------
def _overlap_scores(tp: float, fp: float, fn: float) -> dict[str, float | None]:
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def pixel_metrics(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    valid: np.ndarray | None = None,
    pixel_area_m2: float | None = None,
) -> dict[str, Any]:
    """IoU, precision, recall, F1 and pixel counts of two boolean glacier masks.

    Pixels where ``valid`` is False are ignored. Ratios whose denominator is 0 are None (e.g.
    precision of an empty prediction); IoU and F1 of an empty prediction against a non-empty
    reference are 0. With ``pixel_area_m2`` the areas are reported in km2 too.
    """
    pred = np.asarray(pred_mask, dtype=bool)
    ref = np.asarray(ref_mask, dtype=bool)
    if pred.shape != ref.shape:
        raise InvalidInputError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    keep = np.ones(pred.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if keep.shape != pred.shape:
        raise InvalidInputError(f"valid-mask shape {keep.shape} differs from prediction shape {pred.shape}")
    tp = int(np.count_nonzero(pred & ref & keep))
    fp = int(np.count_nonzero(pred & ~ref & keep))
    fn = int(np.count_nonzero(~pred & ref & keep))
    tn = int(np.count_nonzero(~pred & ~ref & keep))
    out: dict[str, Any] = {"basis": "pixels", **_overlap_scores(tp, fp, fn)}
    out.update(
        accuracy=_ratio(tp + tn, tp + fp + fn + tn),
        tp=tp, fp=fp, fn=fn, tn=tn,
        valid_pixels=tp + fp + fn + tn,
    )
    if pixel_area_m2 is not None:
        out.update(
            pred_area_km2=(tp + fp) * pixel_area_m2 / _M2_PER_KM2,
            ref_area_km2=(tp + fn) * pixel_area_m2 / _M2_PER_KM2,
            intersection_km2=tp * pixel_area_m2 / _M2_PER_KM2,
        )
    return out


def area_overlap(pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame) -> dict[str, Any]:
    """IoU, precision, recall and F1 of glacier area, computed exactly from the polygons.

    The glaciers of each side are merged first, so overlapping outlines count once.
    """
    _check_same_crs(pred, ref)
    pred_union = shapely.union_all(pred.geometry.values)
    ref_union = shapely.union_all(ref.geometry.values)
    inter = shapely.area(shapely.intersection(pred_union, ref_union))
    a_pred = shapely.area(pred_union)
    a_ref = shapely.area(ref_union)
    out: dict[str, Any] = {"basis": "polygon areas", **_overlap_scores(inter, a_pred - inter, a_ref - inter)}
    out.update(
        pred_area_km2=a_pred / _M2_PER_KM2,
        ref_area_km2=a_ref / _M2_PER_KM2,
        intersection_km2=inter / _M2_PER_KM2,
    )
    return out


# -- glacier matching and detection --------------------------------------------------------------
def _check_same_crs(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    if a.crs is None or b.crs is None:
        raise InvalidInputError("both glacier layers need a CRS")
    if not same_crs(a.crs, b.crs):
        raise CRSMismatchError(
            f"predicted glaciers are in {a.crs.to_string()} but reference glaciers in {b.crs.to_string()}; "
            "reproject them to one projected CRS (evaluate_vectors does this for you)"
        )
    if not is_metric_crs(a.crs):
        raise CRSMismatchError(f"glacier layers are in {a.crs.to_string()}, not a projected CRS in metres")


def match_glaciers(pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame, min_overlap: float = 0.5) -> pd.DataFrame:
    """One-to-one matches between predicted and reference glaciers.

    A pair matches when its intersection is more than ``min_overlap`` of the area of each
    glacier. With ``min_overlap >= 0.5`` a glacier can have at most one such partner among
    non-overlapping glaciers; pairs are still taken greedily by decreasing intersection so
    the result is one-to-one whatever the input. Returns columns ``pred_index`` and
    ``ref_index`` (positions, not index labels), ``intersection_km2``, ``pred_fraction`` and
    ``ref_fraction``, sorted by ``ref_index``.
    """
    if not 0.0 < min_overlap < 1.0:
        raise InvalidInputError(f"min_overlap must be between 0 and 1 (exclusive), got {min_overlap}")
    _check_same_crs(pred, ref)
    columns = ["pred_index", "ref_index", "intersection_km2", "pred_fraction", "ref_fraction"]
    pred_geoms = np.asarray(pred.geometry.values)
    ref_geoms = np.asarray(ref.geometry.values)
    if len(pred_geoms) == 0 or len(ref_geoms) == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c.endswith("index") else "float64") for c in columns})
    pi, ri = shapely.STRtree(ref_geoms).query(pred_geoms, predicate="intersects")
    inter = shapely.area(shapely.intersection(pred_geoms[pi], ref_geoms[ri]))
    with np.errstate(divide="ignore", invalid="ignore"):
        pred_frac = inter / shapely.area(pred_geoms[pi])
        ref_frac = inter / shapely.area(ref_geoms[ri])
    keep = (pred_frac > min_overlap) & (ref_frac > min_overlap)
    rows = []
    used_pred: set[int] = set()
    used_ref: set[int] = set()
    for k in np.flatnonzero(keep)[np.argsort(-inter[keep], kind="stable")]:
        p, r = int(pi[k]), int(ri[k])
        if p in used_pred or r in used_ref:
            continue
        used_pred.add(p)
        used_ref.add(r)
        rows.append((p, r, inter[k] / _M2_PER_KM2, pred_frac[k], ref_frac[k]))
    frame = pd.DataFrame(rows, columns=columns).astype({"pred_index": "int64", "ref_index": "int64"})
    return frame.sort_values("ref_index", kind="stable").reset_index(drop=True)


def detection_metrics(n_matched: int, n_pred: int, n_ref: int) -> dict[str, Any]:
    """Glacier detection precision, recall and F1 from match counts (None where undefined)."""
    if not 0 <= n_matched <= min(n_pred, n_ref):
        raise InvalidInputError(f"{n_matched} matches are impossible with {n_pred} predicted and {n_ref} reference glaciers")
    return {
        "matched": n_matched,
        "pred_glaciers": n_pred,
        "ref_glaciers": n_ref,
        "false_positives": n_pred - n_matched,
        "false_negatives": n_ref - n_matched,
        "precision": _ratio(n_matched, n_pred),
        "recall": _ratio(n_matched, n_ref),
        "f1": _ratio(2 * n_matched, n_pred + n_ref),
    }


def area_deviation(pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame, matches: pd.DataFrame) -> pd.DataFrame:
    """Per matched glacier: reference and predicted area (km2), ΔA = A_pred - A_ref (km2), δA = ΔA / A_ref."""
    pred_area = shapely.area(np.asarray(pred.geometry.values)) / _M2_PER_KM2
    ref_area = shapely.area(np.asarray(ref.geometry.values)) / _M2_PER_KM2
    a_pred = pred_area[matches["pred_index"].to_numpy(dtype=int)]
    a_ref = ref_area[matches["ref_index"].to_numpy(dtype=int)]
    delta = a_pred - a_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(a_ref > 0, delta / a_ref, np.nan)
    return pd.DataFrame(
        {
            "pred_index": matches["pred_index"].to_numpy(dtype=int),
            "ref_index": matches["ref_index"].to_numpy(dtype=int),
            "ref_area_km2": a_ref,
            "pred_area_km2": a_pred,
            "area_deviation_km2": delta,
            "relative_area_deviation": relative,
        }
    )


# -- PoLiS ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PolisResult:
    """PoLiS distance between two polygons and the node distances it comes from (metres).

    ``value`` is the PoLiS metric: the mean distance from A's boundary nodes to B's boundary,
    and from B's nodes to A's boundary, averaged with weight 1/2 each. ``median`` and ``p95``
    are over the node distances of both directions pooled.
    """

    a_to_b: np.ndarray
    b_to_a: np.ndarray

    @property
    def value(self) -> float:
        return 0.5 * float(self.a_to_b.mean()) + 0.5 * float(self.b_to_a.mean())

    @property
    def mean(self) -> float:
        return self.value

    @property
    def distances(self) -> np.ndarray:
        return np.concatenate([self.a_to_b, self.b_to_a])

    @property
    def median(self) -> float:
        return float(np.median(self.distances))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.distances, 95))


def _rings(geom: shapely.Geometry) -> np.ndarray:
    """Every exterior and interior ring of a (multi)polygon."""
    parts = shapely.get_parts(geom)
    return np.concatenate([shapely.get_rings(p) for p in parts]) if len(parts) else np.empty(0, dtype=object)


def boundary_nodes(geom: shapely.Geometry, spacing: float = 10.0) -> np.ndarray:
    """Points every ``spacing`` metres along each ring of a polygon, starting at its first vertex."""
    nodes = []
    for ring in _rings(geom):
        steps = np.arange(0.0, max(ring.length, spacing / 2), spacing)
        nodes.append(shapely.line_interpolate_point(ring, steps))
    return np.concatenate(nodes) if nodes else np.empty(0, dtype=object)


def _segments(geom: shapely.Geometry) -> np.ndarray:
    """The boundary of a polygon as an array of two-point line segments."""
    segments = []
    for ring in _rings(geom):
        coords = shapely.get_coordinates(ring)
        if len(coords) >= 2:
            segments.append(shapely.linestrings(np.stack([coords[:-1], coords[1:]], axis=1)))
    return np.concatenate(segments) if segments else np.empty(0, dtype=object)


def _distances_to_boundary(points: np.ndarray, geom: shapely.Geometry) -> np.ndarray:
    """Exact distance from each point to the boundary of ``geom`` (nearest segment via an R-tree)."""
    tree = shapely.STRtree(_segments(geom))
    (index, _), dist = tree.query_nearest(points, return_distance=True, all_matches=False)
    out = np.empty(len(points))
    out[index] = dist
    return out


def polis(poly_a: shapely.Geometry, poly_b: shapely.Geometry, spacing: float = 10.0) -> PolisResult:
    """PoLiS distance (Avbelj et al. 2015) with boundary nodes densified every ``spacing`` m.

    Nodes are sampled at regular arc length on every ring (holes included) of each polygon,
    and each node's distance to the other polygon's boundary (not its nodes) is exact.
    Both polygons must be in the same projected CRS in metres.
    """
    if not (spacing > 0 and math.isfinite(spacing)):
        raise InvalidInputError(f"node spacing must be a positive number of metres, got {spacing}")
    for name, geom in (("first", poly_a), ("second", poly_b)):
        if geom is None or geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
            kind = "empty" if geom is None or geom.is_empty else geom.geom_type
            raise InvalidInputError(f"PoLiS needs two non-empty polygons; the {name} is {kind}")
    nodes_a = boundary_nodes(poly_a, spacing)
    nodes_b = boundary_nodes(poly_b, spacing)
    return PolisResult(_distances_to_boundary(nodes_a, poly_b), _distances_to_boundary(nodes_b, poly_a))


# -- preparing glacier layers --------------------------------------------------------------------
def _polygonal(geom: shapely.Geometry | None) -> shapely.Geometry:
    if geom is None:
        return shapely.Polygon()
    geom = shapely.make_valid(geom) if not geom.is_valid else geom
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    polygons = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polygons) if polygons else shapely.Polygon()


def _prepare_glaciers(frame: gpd.GeoDataFrame, name: str, notes: list[str]) -> gpd.GeoDataFrame:
    """Valid polygonal glaciers with a string ``glacier_id``; rows sharing an id are merged."""
    if frame.crs is None:
        raise InvalidInputError(f"{name}: the glacier layer has no CRS")
    try:
        column: str | None = detect_id_column(frame, name)
    except InvalidInputError:
        column = None
    ids = (
        frame[column].astype(str).to_numpy()
        if column is not None
        else np.array([f"#{i}" for i in range(len(frame))], dtype=object)
    )
    geoms = np.array([_polygonal(g) for g in frame.geometry.values], dtype=object)
    out = gpd.GeoDataFrame({"glacier_id": ids}, geometry=gpd.GeoSeries(geoms, crs=frame.crs), crs=frame.crs)
    empty = shapely.is_empty(geoms) | (shapely.area(geoms) <= 0)  # any CRS: only > 0 matters
    if empty.any():
        notes.append(f"{name}: {int(empty.sum())} features without polygon area were ignored")
        out = out.loc[~np.asarray(empty)]
    if out["glacier_id"].duplicated().any():
        before = len(out)
        out = out.dissolve(by="glacier_id", as_index=False, sort=False)
        notes.append(f"{name}: {before} features with shared ids were merged into {len(out)} glaciers")
    if column is None and len(out):
        notes.append(f"{name}: no glacier id column; glaciers are named by row (#0, #1, ...)")
    return out.reset_index(drop=True)


def to_common_metric_crs(
    pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame, notes: list[str] | None = None
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, str]:
    """Return both layers in one projected CRS in metres, and that CRS.

    Layers already sharing such a CRS are returned as they are. Otherwise (geographic
    coordinates, feet, or two different CRSs) both are reprojected to the UTM zone of the
    centre of their combined extent, and a note says so.
    """
    notes = [] if notes is None else notes
    if same_crs(pred.crs, ref.crs) and is_metric_crs(pred.crs):
        return pred, ref, CRS.from_user_input(pred.crs).to_string()
    frames = [f for f in (pred, ref) if len(f)] or [ref]
    bounds = np.array([f.to_crs("EPSG:4326").total_bounds for f in frames])
    if not np.all(np.isfinite(bounds)):
        target = "EPSG:3857"  # nothing to place: any metric CRS will do for empty layers
    else:
        lon = (bounds[:, 0].min() + bounds[:, 2].max()) / 2
        lat = (bounds[:, 1].min() + bounds[:, 3].max()) / 2
        target = utm_crs(float(lon), float(lat))
    if same_crs(pred.crs, ref.crs):
        notes.append(f"inputs are in {CRS.from_user_input(pred.crs).to_string()} (not metres); reprojected to {target}")
    else:
        notes.append(
            f"prediction is in {CRS.from_user_input(pred.crs).to_string()} and reference in "
            f"{CRS.from_user_input(ref.crs).to_string()}; both reprojected to {target}"
        )
    log.info(notes[-1])
    return pred.to_crs(target), ref.to_crs(target), target


# -- the report ----------------------------------------------------------------------------------
def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class EvaluationReport:
    """Result of ``glacimap evaluate``; :meth:`to_dict` is the JSON report."""

    pred: str
    ref: str
    crs: str | None
    overlap: dict[str, Any]
    detection: dict[str, Any] | None = None
    area_deviation: dict[str, Any] | None = None
    polis: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    size_classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    glaciers: list[dict[str, Any]] = field(default_factory=list)
    false_positives: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(
            {
                "pred": self.pred,
                "ref": self.ref,
                "crs": self.crs,
                "parameters": self.parameters,
                "overlap": self.overlap,
                "detection": self.detection,
                "area_deviation": self.area_deviation,
                "polis": self.polis,
                "calibration": self.calibration,
                "size_classes": self.size_classes,
                "glaciers": self.glaciers,
                "false_positives": self.false_positives,
                "notes": self.notes,
            }
        )


def _summary(values: np.ndarray) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"n": 0, "mean": None, "median": None, "p95": None}
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
    }


def _area_summary(dev: pd.DataFrame) -> dict[str, Any]:
    delta = dev["area_deviation_km2"].to_numpy(dtype=float)
    rel = dev["relative_area_deviation"].to_numpy(dtype=float)
    if delta.size == 0:
        return {"n": 0}
    return {
        "n": int(delta.size),
        "mean_km2": float(delta.mean()),
        "mean_abs_km2": float(np.abs(delta).mean()),
        "median_abs_km2": float(np.median(np.abs(delta))),
        "mean_relative": float(np.nanmean(rel)),
        "mean_abs_relative": float(np.nanmean(np.abs(rel))),
        "median_abs_relative": float(np.nanmedian(np.abs(rel))),
    }


def _glacier_metrics(
    pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame, min_overlap: float, spacing: float
) -> dict[str, Any]:
    """Detection, area deviation, PoLiS and size classes of two prepared layers."""
    matches = match_glaciers(pred, ref, min_overlap)
    dev = area_deviation(pred, ref, matches)
    pred_geoms = np.asarray(pred.geometry.values)
    ref_geoms = np.asarray(ref.geometry.values)
    polis_m = np.array(
        [polis(pred_geoms[p], ref_geoms[r], spacing).value for p, r in zip(dev["pred_index"], dev["ref_index"])],
        dtype=float,
    )
    ref_area = shapely.area(ref_geoms) / _M2_PER_KM2
    pred_area = shapely.area(pred_geoms) / _M2_PER_KM2
    ref_class = [size_class(a) for a in ref_area]
    # A matched prediction takes its reference's class; an unmatched one is classed by its own area.
    pred_class = [size_class(a) for a in pred_area]
    by_ref = {int(r): k for k, r in enumerate(dev["ref_index"])}
    for p, r in zip(dev["pred_index"], dev["ref_index"]):
        pred_class[int(p)] = ref_class[int(r)]

    glaciers = []
    for r in range(len(ref)):
        record: dict[str, Any] = {
            "ref_id": ref["glacier_id"].iat[r],
            "pred_id": None,
            "size_class": ref_class[r],
            "ref_area_km2": float(ref_area[r]),
            "pred_area_km2": None,
            "area_deviation_km2": None,
            "relative_area_deviation": None,
            "polis_m": None,
            "matched": r in by_ref,
        }
        if r in by_ref:
            k = by_ref[r]
            record.update(
                pred_id=pred["glacier_id"].iat[int(dev["pred_index"].iat[k])],
                pred_area_km2=float(dev["pred_area_km2"].iat[k]),
                area_deviation_km2=float(dev["area_deviation_km2"].iat[k]),
                relative_area_deviation=float(dev["relative_area_deviation"].iat[k]),
                polis_m=float(polis_m[k]),
            )
        glaciers.append(record)
    matched_pred = set(int(p) for p in dev["pred_index"])
    false_positives = [
        {"pred_id": pred["glacier_id"].iat[p], "area_km2": float(pred_area[p]), "size_class": pred_class[p]}
        for p in range(len(pred))
        if p not in matched_pred
    ]

    classes: dict[str, dict[str, Any]] = {}
    dev_class = np.array([ref_class[int(r)] for r in dev["ref_index"]], dtype=object)
    for label, _, _ in SIZE_CLASSES:
        n_ref = sum(c == label for c in ref_class)
        n_pred = sum(c == label for c in pred_class)
        in_class = dev_class == label
        entry = detection_metrics(int(in_class.sum()), n_pred, n_ref)
        entry["mean_abs_relative_area_deviation"] = (
            float(np.nanmean(np.abs(dev["relative_area_deviation"].to_numpy()[in_class]))) if in_class.any() else None
        )
        entry["median_polis_m"] = float(np.median(polis_m[in_class])) if in_class.any() else None
        classes[label] = entry

    return {
        "detection": detection_metrics(len(matches), len(pred), len(ref)),
        "area_deviation": _area_summary(dev),
        "polis": {**_summary(polis_m), "unit": "m", "spacing_m": spacing},
        "size_classes": classes,
        "glaciers": glaciers,
        "false_positives": false_positives,
    }


def evaluate_vectors(
    pred: gpd.GeoDataFrame,
    ref: gpd.GeoDataFrame,
    *,
    min_overlap: float = 0.5,
    spacing: float = 10.0,
    pred_name: str = "prediction",
    ref_name: str = "reference",
) -> EvaluationReport:
    """Evaluate predicted glacier outlines against reference outlines.

    Geometries are repaired (``make_valid``) and rows sharing a glacier id are merged. Layers
    not in one projected CRS in metres are both reprojected to the local UTM zone (noted in
    the report). Overlap metrics come exactly from polygon areas.
    """
    notes: list[str] = []
    pred_g = _prepare_glaciers(pred, pred_name, notes)
    ref_g = _prepare_glaciers(ref, ref_name, notes)
    pred_g, ref_g, crs = to_common_metric_crs(pred_g, ref_g, notes)
    if len(pred_g) == 0:
        notes.append(f"{pred_name}: no predicted glaciers")
    if len(ref_g) == 0:
        notes.append(f"{ref_name}: no reference glaciers")
    glacier_part = _glacier_metrics(pred_g, ref_g, min_overlap, spacing)
    return EvaluationReport(
        pred=pred_name,
        ref=ref_name,
        crs=crs,
        overlap=area_overlap(pred_g, ref_g),
        parameters={"min_overlap": min_overlap, "polis_spacing_m": spacing},
        notes=notes,
        **glacier_part,
    )


def calibration_metrics(conf: np.ndarray, correct: np.ndarray, bins: int = 100) -> dict[str, Any]:
    """ECE of pixel confidences, and how well the 95 % confidence band catches errors.

    ``errors_in_band`` is the share of misclassified pixels whose confidence is below 0.95
    (the paper reports 84 % on independent test data); ``band_share`` the share of all
    pixels inside the band.
    """
    curve = reliability_curve(conf, correct, bins)
    conf_flat = np.asarray(conf, dtype=np.float64).reshape(-1)
    correct_flat = np.asarray(correct, dtype=bool).reshape(-1)
    keep = np.isfinite(conf_flat)
    conf_flat, correct_flat = conf_flat[keep], correct_flat[keep]
    in_band = conf_flat < BAND_LEVEL
    wrong = ~correct_flat
    return {
        "ece": curve.ece if curve.total else None,
        "bins": bins,
        "pixels": curve.total,
        "mean_confidence": float(conf_flat.mean()) if conf_flat.size else None,
        "accuracy": float(correct_flat.mean()) if correct_flat.size else None,
        "band_level": BAND_LEVEL,
        "band_share": _ratio(np.count_nonzero(in_band), conf_flat.size),
        "errors_in_band": _ratio(np.count_nonzero(in_band & wrong), np.count_nonzero(wrong)),
    }


def _is_label_raster(values: np.ndarray) -> bool:
    """True for an integer raster holding more than one positive value (glacier labels)."""
    if not np.issubdtype(values.dtype, np.integer):
        return False
    positive = values[values > 0]
    return positive.size > 0 and bool(np.any(positive != positive.flat[0]))


def glacier_mask(values: np.ndarray, name: str, threshold: float = 0.5) -> tuple[np.ndarray, str]:
    """Boolean glacier mask of a prediction or reference band, and what the band held.

    Booleans and integers are masks (any positive value is glacier) or, with several
    positive values, glacier labels. Floats are a 0/1 mask when every finite value is 0 or 1,
    else probabilities of glacier (glacier where > ``threshold``).
    """
    values = np.asarray(values)
    if values.dtype == bool:
        return values, "mask"
    if np.issubdtype(values.dtype, np.integer):
        return values > 0, "labels" if _is_label_raster(values) else "mask"
    finite = values[np.isfinite(values)]
    if finite.size and np.all((finite == 0) | (finite == 1)):
        return np.nan_to_num(values) > 0, "mask"
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise InvalidInputError(
            f"{name}: values in [{finite.min():.4g}, {finite.max():.4g}]; expected glacier probabilities in "
            "[0, 1], a 0/1 mask or integer glacier labels"
        )
    return np.nan_to_num(values) > threshold, "probability"


def raster_glaciers(
    labels: np.ndarray, grid: Grid, valid: np.ndarray | None = None
) -> gpd.GeoDataFrame:
    """Glacier polygons of a raster: one per label of a label raster, else per 4-connected area."""
    from rasterio.features import shapes
    from scipy import ndimage

    values = np.asarray(labels)
    mask = values > 0 if values.dtype != bool else values
    if valid is not None:
        mask = mask & valid
    if _is_label_raster(values):
        components = np.where(mask, values, 0)
    else:
        components, _ = ndimage.label(mask)
    components = components.astype(np.int32)
    pieces: dict[int, list[shapely.Geometry]] = {}
    for geom, value in shapes(components, mask=components > 0, transform=grid.transform, connectivity=4):
        pieces.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    ids = sorted(pieces)
    geoms = [shapely.union_all(pieces[i]) for i in ids]
    return gpd.GeoDataFrame({"glacier_id": [str(i) for i in ids]}, geometry=geoms, crs=grid.crs or None)


def evaluate_rasters(
    pred: np.ndarray,
    ref: np.ndarray,
    valid: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    *,
    grid: Grid | None = None,
    threshold: float = 0.5,
    bins: int = 100,
    min_overlap: float = 0.5,
    spacing: float = 10.0,
    pred_glaciers: gpd.GeoDataFrame | None = None,
    ref_glaciers: gpd.GeoDataFrame | None = None,
    pred_name: str = "prediction",
    ref_name: str = "reference",
) -> EvaluationReport:
    """Evaluate a predicted raster (probability, mask or labels) against a reference raster.

    Pixel metrics are computed where ``valid`` is True. ECE is reported when ``confidence`` is
    given; without it, a probability prediction gives the ECE of its *uncalibrated*
    confidence. With ``grid``, glacier-level metrics are computed on the glaciers of each
    raster (4-connected components, or labels of an integer raster), unless
    ``pred_glaciers`` / ``ref_glaciers`` give the outlines to use instead.
    """
    pred_mask, pred_kind = glacier_mask(pred, pred_name, threshold)
    ref_mask, ref_kind = glacier_mask(ref, ref_name)
    if ref_kind == "probability":
        raise InvalidInputError(f"{ref_name}: a reference raster must be a 0/1 mask or integer labels, not probabilities")
    if pred_mask.shape != ref_mask.shape:
        raise InvalidInputError(f"{pred_name} has shape {pred_mask.shape} but {ref_name} has {ref_mask.shape}")
    keep = np.ones(pred_mask.shape, dtype=bool)
    for array in (pred, ref):
        if np.issubdtype(np.asarray(array).dtype, np.floating):
            keep &= np.isfinite(array)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    notes: list[str] = []
    pixel_area = None
    crs = None
    if grid is not None and grid.crs:
        crs = grid.crs
        if is_metric_crs(grid.crs):
            pixel_area = abs(grid.transform.a * grid.transform.e)
        else:
            notes.append(f"grid CRS {grid.crs} is not in metres: pixel areas are not reported")
    overlap = pixel_metrics(pred_mask, ref_mask, keep, pixel_area)
    if not pred_mask[keep].any():
        notes.append(f"{pred_name}: no glacier pixels predicted")

    calibration = None
    if confidence is not None:
        conf = np.where(keep, np.asarray(confidence, dtype=np.float64), np.nan)
        calibration = {"source": "confidence", **calibration_metrics(conf, pred_mask == ref_mask, bins)}
    elif pred_kind == "probability":
        conf = np.where(keep, binary_confidence(np.asarray(pred, dtype=np.float64)), np.nan)
        calibration = {"source": "probability (uncalibrated)", **calibration_metrics(conf, pred_mask == ref_mask, bins)}

    glacier_part: dict[str, Any] = {}
    if grid is not None and grid.crs:
        notes_before = len(notes)
        pred_g = pred_glaciers if pred_glaciers is not None else raster_glaciers(pred_mask, grid, keep)
        ref_source = ref if ref_kind == "labels" else ref_mask
        ref_g = ref_glaciers if ref_glaciers is not None else raster_glaciers(ref_source, grid, keep)
        pred_g = _prepare_glaciers(pred_g, pred_name, notes)
        ref_g = _prepare_glaciers(ref_g, ref_name, notes)
        pred_g, ref_g, _ = to_common_metric_crs(pred_g, ref_g, notes)
        glacier_part = _glacier_metrics(pred_g, ref_g, min_overlap, spacing)
        if pred_glaciers is None or ref_glaciers is None:
            notes.insert(notes_before, "glaciers of a raster are its connected glacier areas (or its labels), "
                         "so touching glaciers of a mask count as one")
    return EvaluationReport(
        pred=pred_name,
        ref=ref_name,
        crs=crs,
        overlap=overlap,
        calibration=calibration,
        parameters={"threshold": threshold, "bins": bins, "min_overlap": min_overlap, "polis_spacing_m": spacing,
                    "prediction_kind": pred_kind},
        notes=notes,
        **glacier_part,
    )


# -- text table ----------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def format_table(report: EvaluationReport | dict[str, Any]) -> str:
    """A readable plain-text summary of a report (or of its JSON dictionary)."""
    data = report.to_dict() if isinstance(report, EvaluationReport) else report
    lines = [f"prediction: {data['pred']}", f"reference:  {data['ref']}"]
    if data.get("crs"):
        lines.append(f"CRS:        {data['crs']}")
    o = data["overlap"]
    lines += [
        "",
        f"Overlap ({o['basis']})",
        f"  IoU {_fmt(o['iou'])}   precision {_fmt(o['precision'])}   recall {_fmt(o['recall'])}   F1 {_fmt(o['f1'])}",
    ]
    if o.get("ref_area_km2") is not None:
        lines.append(
            f"  area km2: predicted {_fmt(o['pred_area_km2'], 4)}   reference {_fmt(o['ref_area_km2'], 4)}   "
            f"intersection {_fmt(o['intersection_km2'], 4)}"
        )
    d = data.get("detection")
    if d:
        share = data.get("parameters", {}).get("min_overlap", 0.5)
        lines += [
            "",
            f"Glacier detection (match: intersection > {share:.0%} of both)",
            f"  matched {d['matched']} of {d['ref_glaciers']} reference and {d['pred_glaciers']} predicted glaciers   "
            f"precision {_fmt(d['precision'])}   recall {_fmt(d['recall'])}   F1 {_fmt(d['f1'])}",
        ]
    a = data.get("area_deviation")
    if a and a.get("n"):
        lines += [
            "",
            f"Area deviation of {a['n']} matched glaciers (predicted - reference)",
            f"  mean {_fmt(a['mean_km2'], 4)} km2   mean |dA| {_fmt(a['mean_abs_km2'], 4)} km2   "
            f"mean dA/A {_fmt(100 * a['mean_relative'], 1, ' %')}   "
            f"median |dA/A| {_fmt(100 * a['median_abs_relative'], 1, ' %')}",
        ]
    p = data.get("polis")
    if p and p.get("n"):
        lines += [
            "",
            f"PoLiS distance of {p['n']} matched glaciers (nodes every {_fmt(p['spacing_m'], 0)} m)",
            f"  mean {_fmt(p['mean'], 1, ' m')}   median {_fmt(p['median'], 1, ' m')}   95th percentile {_fmt(p['p95'], 1, ' m')}",
        ]
    c = data.get("calibration")
    if c:
        lines += [
            "",
            f"Calibration ({c['source']}, {c['pixels']} pixels)",
            f"  ECE ({c['bins']} bins) {_fmt(c['ece'], 4)}   mean confidence {_fmt(c['mean_confidence'])}   "
            f"accuracy {_fmt(c['accuracy'])}",
            f"  {_fmt(None if c['errors_in_band'] is None else 100 * c['errors_in_band'], 1, ' %')} of misclassified "
            f"pixels have confidence < {c['band_level']} ({_fmt(None if c['band_share'] is None else 100 * c['band_share'], 1, ' %')} of all pixels)",
        ]
    classes = data.get("size_classes")
    if classes:
        header = f"  {'km2':<7}{'ref':>6}{'pred':>6}{'match':>7}{'prec':>8}{'recall':>8}{'F1':>8}{'|dA/A|':>9}{'PoLiS':>9}"
        lines += ["", "By reference glacier size", header]
        for label, e in classes.items():
            rel = e["mean_abs_relative_area_deviation"]
            lines.append(
                f"  {label:<7}{e['ref_glaciers']:>6}{e['pred_glaciers']:>6}{e['matched']:>7}"
                f"{_fmt(e['precision']):>8}{_fmt(e['recall']):>8}{_fmt(e['f1']):>8}"
                f"{_fmt(None if rel is None else 100 * rel, 1, '%'):>9}{_fmt(e['median_polis_m'], 1, 'm'):>9}"
            )
    if data.get("notes"):
        lines += ["", "Notes:"] + [f"  - {n}" for n in data["notes"]]
    return "\n".join(lines)


# -- I/O entry point -----------------------------------------------------------------------------
def _is_raster(path: Path) -> bool:
    return path.suffix.lower() in RASTER_SUFFIXES


def read_glaciers(path: Path | str) -> gpd.GeoDataFrame:
    """Glacier outlines from a vector file: layer ``outlines`` if present, else the first spatial layer."""
    import pyogrio
    from pyogrio.errors import DataSourceError

    from glacimap.vectors import read_layer

    path = Path(path)
    layer = None
    if path.exists():
        try:
            layers = [(name, kind) for name, kind in pyogrio.list_layers(path)]
        except DataSourceError as exc:
            raise InvalidInputError(f"{path}: not a readable vector file ({exc})") from exc
        names = [name for name, kind in layers if kind is not None]
        if OUTLINES_LAYER in names:
            layer = OUTLINES_LAYER
        elif names:
            layer = names[0]
        else:
            raise InvalidInputError(f"{path}: no layer with geometries (layers: {[n for n, _ in layers]})")
    return read_layer(path, layer)


def _pick_band(names: Sequence[str], wanted: Sequence[str]) -> int | None:
    lowered = [n.lower() for n in names]
    for name in wanted:
        if name in lowered:
            return lowered.index(name)
    return None


def _read_evaluation_raster(
    path: Path, wanted: Sequence[str], with_confidence: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Grid, str]:
    """(values, valid, confidence, grid, band name) of a prediction or reference raster."""
    from glacimap.rasters import read_raster

    data, grid, names, nodata = read_raster(path)
    conf_index = _pick_band(names, CONFIDENCE_BANDS) if with_confidence else None
    index = _pick_band(names, wanted)
    if index is None:
        others = [i for i in range(len(names)) if i != conf_index]
        if not others:
            raise InvalidInputError(f"{path}: only a confidence band; expected a glacier band named one of {list(wanted)}")
        index = others[0]
        if len(names) > 1:
            log.warning("%s: no band named %s; using band %d (%s)", path, "/".join(wanted[:3]), index + 1, names[index])
    values = data[index]
    if "prob" in names[index].lower() and not np.issubdtype(values.dtype, np.floating):
        raise InvalidInputError(
            f"{path}: band '{names[index]}' holds {values.dtype} values; expected floating-point "
            "glacier probabilities in [0, 1]"
        )
    valid = np.ones(values.shape, dtype=bool)
    if nodata == 0 and not np.issubdtype(values.dtype, np.floating):
        # Masks written by GIS tools often declare 0 as nodata although 0 means "no glacier".
        log.warning("%s: nodata is 0 in the integer band '%s'; treating 0 as 'not glacier'", path, names[index])
    elif nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= values != nodata
    if np.issubdtype(values.dtype, np.floating):
        valid &= np.isfinite(values)
    confidence = None
    if conf_index is not None:
        confidence = data[conf_index].astype(np.float64)
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            confidence[data[conf_index] == nodata] = np.nan
    return values, valid, confidence, grid, names[index]


def _check_same_grid(pred_path: Path, pred: Grid, ref_path: Path, ref: Grid) -> None:
    if not (pred.crs and ref.crs):
        missing = pred_path if not pred.crs else ref_path
        raise InvalidInputError(f"{missing}: the raster has no CRS")
    if not same_crs(pred.crs, ref.crs):
        raise CRSMismatchError(
            f"{pred_path} is in {pred.crs} but {ref_path} is in {ref.crs}; warp one onto the other's grid "
            "(e.g. gdalwarp -t_srs/-te/-tr) before evaluating"
        )
    if pred.shape != ref.shape or not pred.transform.almost_equals(ref.transform, precision=1e-6):
        raise InvalidInputError(
            f"{pred_path} ({pred.width} x {pred.height} px, origin {pred.transform.c:.3f}, {pred.transform.f:.3f}, "
            f"pixel {pred.transform.a:g}) and {ref_path} ({ref.width} x {ref.height} px, origin "
            f"{ref.transform.c:.3f}, {ref.transform.f:.3f}, pixel {ref.transform.a:g}) are on different grids; "
            "resample one onto the other (gdalwarp -te ... -tr ...) before evaluating"
        )


def _rasterize(frame: gpd.GeoDataFrame, grid: Grid) -> np.ndarray:
    """Boolean mask of pixels whose centre lies inside a glacier of ``frame``."""
    from rasterio.features import rasterize

    frame = frame.to_crs(grid.crs)
    geoms = [g for g in frame.geometry.values if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(grid.shape, dtype=bool)
    burned = rasterize(((g, 1) for g in geoms), out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8")
    return burned.astype(bool)


def run_evaluate(settings: EvaluateSettings) -> EvaluationReport:
    """``glacimap evaluate``: read prediction and reference, compute the report, write ``settings.out``.

    Outlines against outlines are compared as polygons. When either side is a raster, overlap
    and calibration metrics are computed on the raster's grid (the other side, if outlines,
    is rasterised by pixel centre) and glacier metrics on the outlines or on the raster's
    glaciers. Two rasters must share a grid.
    """
    pred_path, ref_path = Path(settings.pred), Path(settings.ref)
    out = Path(settings.out) if settings.out is not None else None
    if out is not None and out.exists() and not settings.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")

    if not _is_raster(pred_path) and not _is_raster(ref_path):
        report = evaluate_vectors(
            read_glaciers(pred_path), read_glaciers(ref_path), pred_name=str(pred_path), ref_name=str(ref_path)
        )
    else:
        pred_vec = ref_vec = None
        confidence = None
        if _is_raster(pred_path):
            pred, pred_valid, confidence, grid, _ = _read_evaluation_raster(pred_path, PREDICTION_BANDS, True)
        if _is_raster(ref_path):
            ref, ref_valid, _, ref_grid, _ = _read_evaluation_raster(ref_path, REFERENCE_BANDS, False)
            if _is_raster(pred_path):
                _check_same_grid(pred_path, grid, ref_path, ref_grid)
            else:
                grid = ref_grid
                pred_vec = read_glaciers(pred_path)
                pred, pred_valid = _rasterize(pred_vec, grid), np.ones(grid.shape, dtype=bool)
        else:
            if not grid.crs:
                raise InvalidInputError(f"{pred_path}: the raster has no CRS, so {ref_path} cannot be placed on it")
            ref_vec = read_glaciers(ref_path)
            ref, ref_valid = _rasterize(ref_vec, grid), np.ones(grid.shape, dtype=bool)
        report = evaluate_rasters(
            pred,
            ref,
            pred_valid & ref_valid,
            confidence,
            grid=grid,
            pred_glaciers=pred_vec,
            ref_glaciers=ref_vec,
            pred_name=str(pred_path),
            ref_name=str(ref_path),
        )
    if out is not None:
        write_json_atomic(out, report.to_dict(), overwrite=settings.overwrite)
        log.info("wrote the evaluation report to %s", out)
    return report
