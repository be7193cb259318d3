"""``glacimap change``: per-glacier and regional glacier area change between two years.

The method follows Diaconu & Bamber (2023), made explicit (docs/change.md):

* Areas are computed in a Lambert azimuthal equal-area projection centred on the region,
  whatever the input CRS, so no area is ever measured in degrees.
* With a reference inventory and ``restrict="inventory"`` both years' outlines are clipped to
  the glacier's reference outline, so a systematic miss (e.g. a debris tongue) cancels.
* A masked share ``m`` of a glacier (cloud / no data) is filled with ice in the proportion seen on
  its unmasked part (the recall-based correction): ``A = A_observed / (1 - m)``.
* Rates: ``(A_to - A_from) / (year_to - year_from)`` in km2/a, and relative to ``A_from`` in %/a.
* Uncertainty from the confidence band: the half-width ``(area_high - area_low) / 2`` of each
  year is taken as one standard error, independent between the two years and fully correlated
  between glaciers of a year (regional totals).
* Filters in order (each glacier keeps its row, flagged with the first filter it failed):
  not comparable (new, missing, no ice, not in the reference), masked share, recall at the
  reference year, and the most extreme share of relative rates.
* Glaciers that split, merged or disappeared are grouped into change units (the start-year and
  end-year outlines that overlap by at least half of the smaller one); rates are given per unit.

:func:`compute_change` works on GeoDataFrames; :func:`run_change` reads the inputs (workspace or
two outline files), computes, and writes ``change.gpkg``, ``change.csv``, ``summary.json``,
``report.html`` and ``figures/`` into one output folder that appears all at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyogrio.errors import DataSourceError
from pyproj import CRS

from glacimap import __version__
from glacimap.errors import (
    CRSMismatchError,
    InputNotFoundError,
    InvalidInputError,
    OutputExistsError,
)
from glacimap.inventory import detect_id_column
from glacimap.settings import ChangeSettings
from glacimap.vectors import read_layer, write_layers
from glacimap.workspace import Workspace

log = logging.getLogger(__name__)

#: Upper edges (km2) of the size classes of Diaconu & Bamber (2023), plus a class below 0.1.
SIZE_EDGES_KM2: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
SIZE_CLASSES: tuple[str, ...] = ("<0.1", "0.1-0.2", "0.2-0.5", "0.5-1", "1-2", "2-5", "5-10", "10-20", ">=20")

#: Statuses of a glacier, and whether its change can be measured.
STATUS_TEXT: dict[str, str] = {
    "ok": "outlined in both years",
    "split": "split into several outlines (new ids or more disconnected parts)",
    "merged": "merged with a neighbour",
    "complex": "split and merged at once (several outlines in both years)",
    "disappeared": "ice in the start year, none in the end year",
    "new": "no start-year ice: appeared, or outside the start-year outlines",
    "missing": "no observation in one of the years (no outline row, or fully masked)",
    "no_ice": "no ice outlined in either year",
    "not_in_reference": "outlined, but not in the reference inventory",
}
COMPARABLE = ("ok", "split", "merged", "complex", "disappeared")

WORKSPACE_OUTLINES_LAYER = "outlines"
WORKSPACE_INVENTORY_LAYER = "inventory"
_BAND_COLUMNS = ("area_km2", "area_low_km2", "area_high_km2")
_M2_PER_KM2 = 1e6


@dataclass(frozen=True)
class ChangeParams:
    """Options of the change computation (the non-I/O part of :class:`ChangeSettings`)."""

    #: ``inventory``: clip both years to the reference outline; ``territory``/``none``: use the
    #: outlines as they are (the reference, if any, is still used for recall and shares).
    restrict: Literal["inventory", "territory", "none"] = "inventory"
    min_recall: float = 0.75
    max_masked: float = 0.2
    drop_extreme: float = 0.05
    #: Year whose outlines are compared with the reference for the recall filter (default: start).
    reference_year: int | None = None
    #: A start- and an end-year outline of different ids belong to one change unit when they
    #: overlap by at least this share of the smaller one.
    link_share: float = 0.5
    #: A disconnected part counts (for splits) from this share of the glacier and this area.
    min_part_share: float = 0.01
    min_part_km2: float = 0.01

    def __post_init__(self) -> None:
        for name in ("min_recall", "max_masked", "link_share", "min_part_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"change parameter {name}={value} must lie between 0 and 1")
        if not 0.0 <= self.drop_extreme < 1.0:
            raise InvalidInputError(f"change parameter drop_extreme={self.drop_extreme} must lie in [0, 1)")
        if self.restrict not in ("inventory", "territory", "none"):
            raise InvalidInputError(f"change parameter restrict={self.restrict!r}: expected inventory, territory or none")

    @classmethod
    def from_settings(cls, settings: ChangeSettings, **extra: Any) -> ChangeParams:
        return cls(
            restrict=settings.restrict,
            min_recall=settings.min_recall,
            max_masked=settings.max_masked,
            drop_extreme=settings.drop_extreme,
            **extra,
        )


@dataclass(frozen=True)
class FilterReport:
    """What one filter did: glaciers (and change units) and area it removed, or why it was skipped."""

    name: str
    description: str
    applied: bool
    skipped_reason: str | None
    n_glaciers_removed: int
    n_units_removed: int
    area_removed_km2: float
    share_of_area_removed: float


@dataclass(frozen=True)
class ChangeResult:
    """Everything ``glacimap change`` computed; geometries in :attr:`area_crs`."""

    year_from: int
    year_to: int
    #: One row per glacier id (own areas, unit rates, filter flags), indexed by ``glacier_id``.
    glaciers: pd.DataFrame
    #: One row per change unit (a glacier, or the family of a split/merge), indexed by ``unit_id``.
    units: pd.DataFrame
    #: Totals of the kept units; :attr:`before_filters` the same over every comparable unit.
    regional: dict[str, Any]
    before_filters: dict[str, Any]
    size_classes: pd.DataFrame
    filters: tuple[FilterReport, ...]
    #: ``glaciers``, ``outline_from``, ``outline_to``, ``loss``, ``gain`` in :attr:`area_crs`.
    layers: dict[str, gpd.GeoDataFrame]
    area_crs: CRS
    output_crs: CRS
    uncertainty_available: bool
    uncertainty: str
    masks_available: bool
    has_reference: bool
    params: ChangeParams
    inputs: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    @property
    def years(self) -> int:
        return self.year_to - self.year_from

    def headline(self) -> str:
        """One sentence with the regional result (what the CLI prints and the report opens with)."""
        r = self.regional

        def num(value: float, digits: int, sign: bool = True) -> str:
            if value is None or not math.isfinite(value):
                return "n/a"
            return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"

        def pm(value: float, digits: int) -> str:
            return f" ± {value:.{digits}f}" if value is not None and math.isfinite(value) else ""

        return (
            f"Between {self.year_from} and {self.year_to} the {r['n_glaciers']} glaciers kept "
            f"({num(100 * r['share_of_inventory_area'], 1, False)} % of the inventory's glacierised area) changed "
            f"from {num(r['area_from_km2'], 3, False)} km² to {num(r['area_to_km2'], 3, False)} km² "
            f"({num(r['change_km2'], 3)} km², {num(r['change_pct'], 2)} %): "
            f"{num(r['rate_km2_a'], 4)}{pm(r['rate_sigma_km2_a'], 4)} km²/a, "
            f"{num(r['rel_rate_pct_a'], 3)}{pm(r['rel_rate_sigma_pct_a'], 3)} %/a."
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what ``summary.json`` holds)."""
        status_counts = self.glaciers["status"].value_counts()
        data = {
            "glacimap_version": __version__,
            "year_from": self.year_from,
            "year_to": self.year_to,
            "years": self.years,
            "inputs": self.inputs,
            "method": {
                "area_crs": self.area_crs.srs,
                "output_crs": self.output_crs.to_string(),
                "restrict": self.params.restrict if self.has_reference else "none (no reference outlines)",
                "reference": "reference inventory" if self.has_reference else "none: the two outline sets are compared directly",
                "reference_year": self._reference_year() if self.has_reference else None,
                "rate": "(A_to - A_from) / (year_to - year_from), km2/a",
                "relative_rate": "100 * (A_to - A_from) / (A_from * (year_to - year_from)), %/a",
                "mask_correction": (
                    "A = A_observed / (1 - masked share): the masked part of the glacier holds ice in the "
                    "proportion seen on its unmasked part"
                    if self.masks_available
                    else "not applied: the outlines carry no valid_fraction / cloud_fraction"
                ),
                "uncertainty": self.uncertainty,
                "units": "glaciers whose outlines overlap across the years under different ids (splits, "
                f"merges) form one change unit (overlap >= {self.params.link_share:g} of the smaller outline); "
                "rates are per unit",
            },
            "parameters": asdict(self.params),
            "regional": self.regional,
            "before_filters": self.before_filters,
            "filters": [asdict(f) for f in self.filters],
            "status_counts": {str(k): int(v) for k, v in status_counts.items()},
            "size_classes": self.size_classes.reset_index().to_dict(orient="records"),
        }
        return _json_ready(data)

    def _reference_year(self) -> int:
        return self.params.reference_year if self.params.reference_year is not None else self.year_from


# -- compute --------------------------------------------------------------------------------------


def equal_area_crs(frames: Iterable[gpd.GeoDataFrame | None]) -> CRS:
    """A Lambert azimuthal equal-area CRS (WGS84 ellipsoid, metres) centred on the frames."""
    lons: list[np.ndarray] = []
    lats: list[np.ndarray] = []
    for frame in frames:
        if frame is None or frame.empty:
            continue
        bounds = frame.geometry.to_crs("EPSG:4326").bounds.dropna()
        lons.append(((bounds["minx"] + bounds["maxx"]) / 2).to_numpy())
        lats.append(((bounds["miny"] + bounds["maxy"]) / 2).to_numpy())
    if not lons or not np.concatenate(lons).size:
        raise InvalidInputError("no outline has a geometry; nothing to measure")
    lon_rad = np.radians(np.concatenate(lons))
    # Circular mean so that a region across the antimeridian is centred on it.
    lon = math.degrees(math.atan2(float(np.sin(lon_rad).mean()), float(np.cos(lon_rad).mean())))
    lat = float(np.concatenate(lats).mean())
    return CRS.from_proj4(
        f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
    )


def size_class(area_km2: float) -> str | None:
    """Label of the size class holding ``area_km2`` (None for no or zero area)."""
    if not np.isfinite(area_km2) or area_km2 <= 0:
        return None
    return SIZE_CLASSES[int(np.searchsorted(SIZE_EDGES_KM2, area_km2, side="right"))]


def extreme_rates(rates: pd.Series, share: float) -> pd.Series:
    """True for the ``floor(share * n)`` finite rates farthest from their median."""
    finite = rates[np.isfinite(rates.to_numpy(dtype=float))]
    flags = pd.Series(False, index=rates.index)
    count = int(math.floor(share * len(finite) + 1e-9))
    if count == 0:
        return flags
    distance = (finite - finite.median()).abs()
    order = np.argsort(-distance.to_numpy(), kind="stable")
    flags.loc[finite.index[order[:count]]] = True
    return flags


def compute_change(
    outlines_from: gpd.GeoDataFrame,
    outlines_to: gpd.GeoDataFrame,
    reference: gpd.GeoDataFrame | None,
    year_from: int,
    year_to: int,
    params: ChangeParams | None = None,
) -> ChangeResult:
    """Per-glacier and regional area change between two outline sets.

    Every frame needs a string-like ``glacier_id`` column (unique per frame) and a CRS, the same
    for all. Optional columns of the outlines: ``area_km2``, ``area_low_km2``,
    ``area_high_km2`` (confidence band) and ``valid_fraction`` or ``cloud_fraction`` (masks).
    Without ``reference`` the two sets are compared directly (no clipping, no recall filter).
    """
    params = params or ChangeParams()
    if year_from >= year_to:
        raise InvalidInputError(f"the start year ({year_from}) must be before the end year ({year_to})")
    ref_year = params.reference_year if params.reference_year is not None else year_from
    if ref_year not in (year_from, year_to):
        raise InvalidInputError(f"reference_year {ref_year} must be the start ({year_from}) or end ({year_to}) year")
    named = {"start-year outlines": outlines_from, "end-year outlines": outlines_to}
    if reference is not None:
        named["reference outlines"] = reference
    _check_frames(named)
    area_crs = equal_area_crs(named.values())
    output_crs = CRS.from_user_input(outlines_from.crs)
    dt = year_to - year_from

    a = _prepare(outlines_from, area_crs)
    b = _prepare(outlines_to, area_crs)
    ref = _prepare(reference, area_crs) if reference is not None else None
    has_ref = ref is not None
    clip = has_ref and params.restrict == "inventory"

    ids = _ordered_ids(ref, a, b)
    g = pd.DataFrame(index=pd.Index(ids, name="glacier_id"))
    g["in_reference"] = g.index.isin(ref.index) if has_ref else False
    g["reference_area_km2"] = _areas(ref, ids) if has_ref else np.nan

    masks_available = _has_mask(a) and _has_mask(b)
    band_available = _has_band(a) and _has_band(b)
    ref_geoms = _aligned(ref, ids) if has_ref else [None] * len(ids)
    raw_geoms = {"from": _aligned(a, ids), "to": _aligned(b, ids)}
    geoms: dict[str, pd.Series] = {}
    for tag, frame in (("from", a), ("to", b)):
        shapes = raw_geoms[tag]
        if clip:
            shapes = [_clip(geom, limit) for geom, limit in zip(shapes, ref_geoms)]
        geoms[tag] = pd.Series(shapes, index=g.index, dtype=object)
        g[f"in_{tag}"] = [geom is not None for geom in raw_geoms[tag]]
        _year_areas(g, tag, geoms[tag], frame, masks_available, band_available, params)
    if has_ref:
        year_tag = "from" if ref_year == year_from else "to"
        g["recall"] = _recall(g, raw_geoms[year_tag], ref_geoms, g[f"masked_{year_tag}"] if masks_available else None)
    else:
        g["recall"] = np.nan

    _assign_status(g, geoms, has_ref, masks_available, params)
    units = _unit_table(g, has_ref, masks_available, band_available, dt)
    filters = _apply_filters(g, units, has_ref, masks_available, params, ref_year)
    _unit_columns_to_glaciers(g, units)

    total_area = float(units["size_area_km2"].sum()) if not has_ref else float(g["reference_area_km2"].sum())
    kept = units[units["kept"]]
    comparable = units[units["comparable"]]
    regional = _totals(kept, total_area, dt, band_available)
    before = _totals(comparable, total_area, dt, band_available)
    classes = _size_classes(units, total_area, dt)
    layers = _layers(g, geoms, ref, a, b, units, year_from, year_to)
    uncertainty = (
        "per year, half the width of the confidence band (area_high - area_low) / 2 is taken as one "
        "standard error; errors are independent between the two years (sigma_rate = sqrt(s_from^2 + "
        "s_to^2) / dt) and fully correlated between glaciers of a year (regional s = sum of the glaciers' s)"
        if band_available
        else "unavailable: the outlines carry no confidence band (area_low_km2 / area_high_km2), "
        "so no uncertainty is given rather than one invented"
    )
    return ChangeResult(
        year_from=year_from,
        year_to=year_to,
        glaciers=g,
        units=units,
        regional=regional,
        before_filters=before,
        size_classes=classes,
        filters=tuple(filters),
        layers=layers,
        area_crs=area_crs,
        output_crs=output_crs,
        uncertainty_available=band_available,
        uncertainty=uncertainty,
        masks_available=masks_available,
        has_reference=has_ref,
        params=params,
    )


def _year_areas(
    g: pd.DataFrame, tag: str, shapes: pd.Series, frame: gpd.GeoDataFrame, masks: bool, band: bool, params: ChangeParams
) -> None:
    """Observed, mask-corrected and band areas of one year (columns ``*_{tag}*`` of ``g``)."""
    observed = _area_km2(shapes)
    g[f"area_{tag}_observed_km2"] = observed
    masked = pd.Series(np.nan, index=g.index)
    factor = pd.Series(1.0, index=g.index)
    if masks:
        masked = pd.Series(_masked_fraction(frame).reindex(g.index).to_numpy(), index=g.index)
        with np.errstate(divide="ignore"):
            factor = (1.0 / (1.0 - masked.fillna(0.0))).replace(np.inf, np.nan)
    g[f"masked_{tag}"] = masked
    g[f"area_{tag}_km2"] = observed * factor
    g[f"area_{tag}_low_km2"] = np.nan
    g[f"area_{tag}_high_km2"] = np.nan
    if band:
        values = frame[list(_BAND_COLUMNS)].apply(pd.to_numeric, errors="coerce").reindex(g.index)
        # The band's offsets from the glacier's own area carry over to the (clipped) area used here.
        low = (observed - (values["area_km2"] - values["area_low_km2"]).clip(lower=0.0)).clip(lower=0.0)
        high = observed + (values["area_high_km2"] - values["area_km2"]).clip(lower=0.0)
        absent = ~g[f"in_{tag}"]  # no outline in this year: zero area, known exactly
        g[f"area_{tag}_low_km2"] = (low * factor).mask(absent, 0.0)
        g[f"area_{tag}_high_km2"] = (high * factor).mask(absent, 0.0)
    g[f"parts_{tag}"] = [_count_parts(geom, params.min_part_share, params.min_part_km2) for geom in shapes]


def _recall(
    g: pd.DataFrame,
    shapes: Sequence[shapely.Geometry | None],
    ref_geoms: Sequence[shapely.Geometry | None],
    masked: pd.Series | None,
) -> pd.Series:
    """Share of each reference outline covered by the outline (on its unmasked part)."""
    hits = pd.Series([_overlap_km2(geom, limit) for geom, limit in zip(shapes, ref_geoms)], index=g.index)
    unmasked = 1.0 - (masked.fillna(0.0) if masked is not None else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = hits / unmasked / g["reference_area_km2"]
    return recall.where(g["in_reference"])


def _check_frames(named: Mapping[str, gpd.GeoDataFrame]) -> None:
    crs_seen: tuple[str, CRS] | None = None
    for name, frame in named.items():
        if not isinstance(frame, gpd.GeoDataFrame):
            raise InvalidInputError(f"{name}: expected a GeoDataFrame, got {type(frame).__name__}")
        if "glacier_id" not in frame.columns:
            raise InvalidInputError(f"{name}: no 'glacier_id' column (columns: {list(frame.columns)})")
        if frame.crs is None:
            raise InvalidInputError(f"{name}: no CRS; set one (e.g. with ogr2ogr -a_srs)")
        ids = frame["glacier_id"]
        if ids.isna().any() or (ids.astype(str).str.strip() == "").any():
            raise InvalidInputError(f"{name}: {int((ids.isna() | (ids.astype(str).str.strip() == '')).sum())} rows have an empty glacier id")
        duplicated = ids.astype(str)[ids.astype(str).duplicated()].unique()
        if len(duplicated):
            shown = ", ".join(repr(d) for d in duplicated[:5])
            raise InvalidInputError(
                f"{name}: glacier ids {shown} occur more than once; ids must be unique within a year "
                "(dissolve multi-row glaciers, or choose another id column)"
            )
        crs = CRS.from_user_input(frame.crs)
        if crs_seen is None:
            crs_seen = (name, crs)
        elif crs != crs_seen[1]:
            raise CRSMismatchError(
                f"{name} are in {crs.to_string()} but {crs_seen[0]} are in {crs_seen[1].to_string()}; "
                "reproject one of them so both share a CRS (e.g. ogr2ogr -t_srs)"
            )


def _prepare(frame: gpd.GeoDataFrame, area_crs: CRS) -> gpd.GeoDataFrame:
    """Copy indexed by the string id, valid polygonal geometry in ``area_crs``."""
    out = frame.to_crs(area_crs)
    out.index = pd.Index(out["glacier_id"].astype(str).to_numpy(), name="glacier_id")
    geoms = [_polygonal(geom) for geom in out.geometry.to_numpy()]
    return out.set_geometry(gpd.GeoSeries(geoms, index=out.index, crs=area_crs))


def _polygonal(geom: shapely.Geometry | None) -> shapely.Geometry:
    """Valid polygonal part of ``geom`` (an empty polygon for none)."""
    if geom is None or geom.is_empty:
        return shapely.Polygon()
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [part for part in getattr(geom, "geoms", []) if part.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _aligned(frame: gpd.GeoDataFrame, ids: Sequence[str]) -> list[shapely.Geometry | None]:
    """Geometry of each id (None where the frame has no row for it)."""
    lookup = dict(zip(frame.index, frame.geometry.to_numpy()))
    return [lookup.get(gid) for gid in ids]


def _clip(geom: shapely.Geometry | None, limit: shapely.Geometry | None) -> shapely.Geometry | None:
    if geom is None or limit is None:
        return geom
    return _polygonal(shapely.intersection(geom, limit))


def _overlap_km2(geom: shapely.Geometry | None, other: shapely.Geometry | None) -> float:
    if geom is None or other is None:
        return 0.0
    return float(shapely.intersection(geom, other).area) / _M2_PER_KM2


def _ordered_ids(*frames: gpd.GeoDataFrame | None) -> list[str]:
    seen: dict[str, None] = {}
    for frame in frames:
        if frame is not None:
            seen.update(dict.fromkeys(frame.index))
    return list(seen)


def _areas(frame: gpd.GeoDataFrame, ids: Sequence[str]) -> np.ndarray:
    return _area_km2(pd.Series(_aligned(frame, ids), dtype=object)).to_numpy()


def _area_km2(geoms: pd.Series) -> pd.Series:
    values = np.array([0.0 if geom is None else shapely.area(geom) for geom in geoms.to_numpy()], dtype=float)
    return pd.Series(values / _M2_PER_KM2, index=geoms.index)


def _union(shapes: Iterable[shapely.Geometry | None]) -> shapely.Geometry:
    present = [shape for shape in shapes if shape is not None]
    if len(present) == 1:
        return present[0]
    return shapely.union_all(present) if present else shapely.Polygon()


def _count_parts(geom: shapely.Geometry | None, min_share: float, min_km2: float) -> int:
    if geom is None or geom.is_empty:
        return 0
    total = geom.area
    floor = max(min_share * total, min_km2 * _M2_PER_KM2)
    return sum(1 for part in getattr(geom, "geoms", [geom]) if part.area >= floor)


def _has_band(frame: gpd.GeoDataFrame) -> bool:
    """True when the outlines carry a confidence band (some glaciers may still lack one)."""
    return all(c in frame.columns for c in _BAND_COLUMNS) and bool(
        frame[list(_BAND_COLUMNS)].apply(pd.to_numeric, errors="coerce").notna().all(axis=1).any()
    )


def _has_mask(frame: gpd.GeoDataFrame) -> bool:
    return "valid_fraction" in frame.columns or "cloud_fraction" in frame.columns


def _masked_fraction(frame: gpd.GeoDataFrame) -> pd.Series:
    """Share of each glacier that was masked: 1 - valid_fraction (or cloud_fraction)."""
    if "valid_fraction" in frame.columns:
        return (1.0 - pd.to_numeric(frame["valid_fraction"], errors="coerce")).clip(0.0, 1.0)
    return pd.to_numeric(frame["cloud_fraction"], errors="coerce").clip(0.0, 1.0)


def _assign_status(
    g: pd.DataFrame, geoms: Mapping[str, pd.Series], has_ref: bool, masks: bool, params: ChangeParams
) -> None:
    """Status, change unit and related ids of every glacier (columns added to ``g``)."""
    status = pd.Series("", index=g.index, dtype=object)
    if has_ref:
        status[~g["in_reference"]] = "not_in_reference"
        unobserved = ~(g["in_from"] & g["in_to"])
        if masks:
            unobserved |= (g["masked_from"] >= 1.0) | (g["masked_to"] >= 1.0)
        status[(status == "") & unobserved] = "missing"
    start = (g["area_from_observed_km2"] > 0) & (status == "")
    end = (g["area_to_observed_km2"] > 0) & (status == "")

    parent = {gid: gid for gid in g.index}

    def find(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for left, right in _overlap_links(geoms["from"][start], geoms["to"][end], params.link_share):
        root_l, root_r = find(left), find(right)
        if root_l != root_r:
            parent[root_r] = root_l
    members: dict[str, list[str]] = {}
    for gid in g.index:
        members.setdefault(find(gid), []).append(gid)

    # Plain dicts: this loop runs once per glacier and pandas indexing would dominate it.
    has_start = dict(zip(g.index, start.to_numpy()))
    has_end = dict(zip(g.index, end.to_numpy()))
    area_from = dict(zip(g.index, g["area_from_observed_km2"].to_numpy()))
    area_to = dict(zip(g.index, g["area_to_observed_km2"].to_numpy()))
    parts = dict(zip(g.index, zip(g["parts_from"].to_numpy(), g["parts_to"].to_numpy())))
    state = dict(zip(g.index, status.to_numpy()))
    unit_of: dict[str, str] = {}
    note = dict.fromkeys(g.index, "")
    for group in members.values():
        # The unit is named after the member outlined in both years with the largest start area.
        unit_id = max(group, key=lambda m: (has_start[m] and has_end[m], area_from[m], area_to[m]))
        for gid in group:
            unit_of[gid] = unit_id
        if state[group[0]] != "":  # missing / not in reference: never linked
            continue
        n_start = sum(bool(has_start[m]) for m in group)
        n_end = sum(bool(has_end[m]) for m in group)
        if len(group) == 1:
            gid = group[0]
            if n_start and n_end:
                before, after = (int(p) for p in parts[gid])
                state[gid] = "split" if after > before else "ok"
                if after > before:
                    note[gid] = f"{before} -> {after} disconnected parts"
            else:
                state[gid] = "disappeared" if n_start else "new" if n_end else "no_ice"
            continue
        kind = "split" if n_start == 1 else "merged" if n_end == 1 else "complex"
        for gid in group:
            state[gid] = kind
            note[gid] = f"{kind} with {', '.join(other for other in group if other != gid)}"
    g["status"] = pd.Series(state)
    g["unit_id"] = pd.Series(unit_of)
    g["note"] = pd.Series(note)


def _overlap_links(start: pd.Series, end: pd.Series, share: float) -> list[tuple[str, str]]:
    """Pairs (start id, end id) of different ids whose outlines overlap by ``share`` of the smaller."""
    if start.empty or end.empty:
        return []
    start_geoms = start.to_numpy()
    end_geoms = end.to_numpy()
    tree = shapely.STRtree(end_geoms)
    left, right = tree.query(start_geoms, predicate="intersects")
    links = []
    for i, j in zip(left, right):
        if start.index[i] == end.index[j]:
            continue
        overlap = shapely.intersection(start_geoms[i], end_geoms[j]).area
        smaller = min(start_geoms[i].area, end_geoms[j].area)
        if overlap > 0 and overlap >= share * smaller:
            links.append((str(start.index[i]), str(end.index[j])))
    return links


def _unit_table(g: pd.DataFrame, has_ref: bool, masks: bool, band: bool, dt: int) -> pd.DataFrame:
    """Aggregate glaciers into change units and compute their rates."""
    weight = g["reference_area_km2"] if has_ref else g["area_from_km2"].fillna(0.0)
    frame = g.assign(_weight=weight, _n=1)
    grouped = frame.groupby("unit_id", sort=False)
    units = pd.DataFrame(
        {
            "status": grouped["status"].first(),
            "n_glaciers": grouped["_n"].sum(),
            "glacier_ids": frame.index.to_series().groupby(frame["unit_id"], sort=False).agg(";".join),
            "size_area_km2": grouped["_weight"].sum(min_count=1),
            "area_from_km2": grouped["area_from_km2"].sum(min_count=1),
            "area_to_km2": grouped["area_to_km2"].sum(min_count=1),
            "area_from_low_km2": grouped["area_from_low_km2"].sum(min_count=1),
            "area_from_high_km2": grouped["area_from_high_km2"].sum(min_count=1),
            "area_to_low_km2": grouped["area_to_low_km2"].sum(min_count=1),
            "area_to_high_km2": grouped["area_to_high_km2"].sum(min_count=1),
        }
    )
    # A unit's area (or band) is unknown when any member's is (e.g. fully masked).
    for column in ("area_from_km2", "area_to_km2", "area_from_low_km2", "area_from_high_km2", "area_to_low_km2",
                   "area_to_high_km2"):
        units.loc[frame[column].isna().groupby(frame["unit_id"], sort=False).any(), column] = np.nan
    if not has_ref:
        units["size_area_km2"] = units["area_from_km2"]
    units["comparable"] = units["status"].isin(COMPARABLE)
    units["size_class"] = units["size_area_km2"].map(size_class)
    for tag in ("from", "to"):
        if masks:
            masked = frame[f"masked_{tag}"]
            weighted = (masked * frame["_weight"]).groupby(frame["unit_id"], sort=False).sum(min_count=1)
            units[f"masked_{tag}"] = weighted / units["size_area_km2"].replace(0.0, np.nan)
            single = units["n_glaciers"] == 1
            units.loc[single, f"masked_{tag}"] = masked.groupby(frame["unit_id"], sort=False).first()[single]
        else:
            units[f"masked_{tag}"] = np.nan
    if has_ref:
        hits = (frame["recall"] * frame["reference_area_km2"]).groupby(frame["unit_id"], sort=False).sum(min_count=1)
        units["recall"] = hits / units["size_area_km2"].replace(0.0, np.nan)
    else:
        units["recall"] = np.nan
    _rates(units, dt, band)
    return units


def _rates(table: pd.DataFrame, dt: int, band: bool) -> None:
    a0 = table["area_from_km2"]
    a1 = table["area_to_km2"]
    with np.errstate(divide="ignore", invalid="ignore"):
        table["change_km2"] = a1 - a0
        table["rate_km2_a"] = (a1 - a0) / dt
        table["rel_rate_pct_a"] = (100.0 * (a1 - a0) / (a0 * dt)).where(a0 > 0)
        if band:
            s0 = (table["area_from_high_km2"] - table["area_from_low_km2"]) / 2.0
            s1 = (table["area_to_high_km2"] - table["area_to_low_km2"]) / 2.0
            table["rate_sigma_km2_a"] = np.sqrt(s0**2 + s1**2) / dt
            table["rel_rate_sigma_pct_a"] = (100.0 / dt * np.sqrt((s1 / a0) ** 2 + (a1 * s0 / a0**2) ** 2)).where(a0 > 0)
            table["significant"] = (table["rate_km2_a"].abs() >= table["rate_sigma_km2_a"]).where(
                table["rate_sigma_km2_a"].notna()
            )
        else:
            table["rate_sigma_km2_a"] = np.nan
            table["rel_rate_sigma_pct_a"] = np.nan
            table["significant"] = pd.NA


def _apply_filters(
    g: pd.DataFrame, units: pd.DataFrame, has_ref: bool, masks: bool, params: ChangeParams, ref_year: int
) -> list[FilterReport]:
    """Flag units, filter by filter; return what each filter removed (sequentially)."""
    total = float(g["reference_area_km2"].sum()) if has_ref else float(units["size_area_km2"].sum())
    kept = units["comparable"].copy()
    reason = pd.Series("", index=units.index, dtype=object)
    reason[~kept] = "not comparable: " + units.loc[~kept, "status"]
    reports = [_report("not_comparable", "glaciers whose change cannot be measured (" + ", ".join(
        s for s in STATUS_TEXT if s not in COMPARABLE) + ")", True, None, ~kept, units, total)]

    masked = pd.Series(False, index=units.index)
    if masks:
        worst = units[["masked_from", "masked_to"]].max(axis=1, skipna=False)
        masked = ~(worst <= params.max_masked)
        newly = kept & masked
        reason[newly] = f"masked share above {params.max_masked:g}"
        reports.append(_report("masked", f"more than {params.max_masked:.0%} of the glacier masked (cloud / no data) in "
                               "either year", True, None, newly, units, total))
        kept &= ~masked
    else:
        reports.append(_report("masked", f"more than {params.max_masked:.0%} masked in either year", False,
                               "the outlines carry no valid_fraction / cloud_fraction (no masks)", None, units, total))

    low_recall = pd.Series(False, index=units.index)
    if has_ref:
        low_recall = ~(units["recall"] >= params.min_recall)
        newly = kept & low_recall
        reason[newly] = f"recall below {params.min_recall:g}"
        reports.append(_report("recall", f"recall against the reference outline in {ref_year} below "
                               f"{params.min_recall:g}", True, None, newly, units, total))
        kept &= ~low_recall
    else:
        reports.append(_report("recall", f"recall below {params.min_recall:g}", False,
                               "no reference inventory (outlines form)", None, units, total))

    extreme = pd.Series(False, index=units.index)
    if params.drop_extreme > 0:
        extreme = extreme_rates(units.loc[kept, "rel_rate_pct_a"], params.drop_extreme).reindex(units.index, fill_value=False)
        reason[extreme] = f"among the {params.drop_extreme:.0%} most extreme rates"
        reports.append(_report("extreme", f"the {params.drop_extreme:.0%} of relative rates farthest from their median "
                               f"(floor({params.drop_extreme:g} x {int(kept.sum())}) units)", True, None, extreme, units, total))
        kept &= ~extreme
    else:
        reports.append(_report("extreme", "most extreme relative rates", False, "--drop-extreme is 0", None, units, total))

    units["fail_masked"] = masked & units["comparable"]
    units["fail_recall"] = low_recall & units["comparable"]
    units["fail_extreme"] = extreme
    units["kept"] = kept
    units["drop_reason"] = reason
    return reports


def _report(
    name: str, text: str, applied: bool, skipped: str | None, removed: pd.Series | None, units: pd.DataFrame, total: float
) -> FilterReport:
    if removed is None:
        return FilterReport(name, text, applied, skipped, 0, 0, 0.0, 0.0)
    area = float(units.loc[removed, "size_area_km2"].fillna(0.0).sum())
    if name == "not_comparable":  # new outlines have no start area: count their end area
        no_size = ~(units["size_area_km2"] > 0)
        area += float(units.loc[removed & no_size, "area_to_km2"].fillna(0.0).sum())
    return FilterReport(
        name=name,
        description=text,
        applied=applied,
        skipped_reason=skipped,
        n_glaciers_removed=int(units.loc[removed, "n_glaciers"].sum()),
        n_units_removed=int(removed.sum()),
        area_removed_km2=area,
        share_of_area_removed=area / total if total > 0 else float("nan"),
    )


_UNIT_COLUMNS = (
    "size_class", "unit_area_from_km2", "unit_area_to_km2", "change_km2", "rate_km2_a", "rate_sigma_km2_a",
    "rel_rate_pct_a", "rel_rate_sigma_pct_a", "significant", "kept", "drop_reason", "fail_masked", "fail_recall",
    "fail_extreme",
)


def _unit_columns_to_glaciers(g: pd.DataFrame, units: pd.DataFrame) -> None:
    renamed = units.rename(columns={"area_from_km2": "unit_area_from_km2", "area_to_km2": "unit_area_to_km2"})
    for column in _UNIT_COLUMNS:
        g[column] = renamed[column].reindex(g["unit_id"]).to_numpy()


def _totals(units: pd.DataFrame, total_area: float, dt: int, band: bool) -> dict[str, Any]:
    a0 = float(units["area_from_km2"].sum())
    a1 = float(units["area_to_km2"].sum())
    out: dict[str, Any] = {
        "n_units": int(len(units)),
        "n_glaciers": int(units["n_glaciers"].sum()),
        "area_from_km2": a0,
        "area_to_km2": a1,
        "change_km2": a1 - a0,
        "change_pct": 100.0 * (a1 - a0) / a0 if a0 > 0 else float("nan"),
        "rate_km2_a": (a1 - a0) / dt,
        "rel_rate_pct_a": 100.0 * (a1 - a0) / (a0 * dt) if a0 > 0 else float("nan"),
        "inventory_area_km2": total_area,
        "share_of_inventory_area": float(units["size_area_km2"].sum()) / total_area if total_area > 0 else float("nan"),
        "rate_sigma_km2_a": float("nan"),
        "rel_rate_sigma_pct_a": float("nan"),
    }
    if band:
        s0_units = (units["area_from_high_km2"] - units["area_from_low_km2"]) / 2
        s1_units = (units["area_to_high_km2"] - units["area_to_low_km2"]) / 2
        missing = int((s0_units.isna() | s1_units.isna()).sum())
        out["n_units_without_band"] = missing
        if len(units) and a0 > 0 and not missing:
            # Fully correlated between glaciers: the standard errors of a year add up.
            s0, s1 = float(s0_units.sum()), float(s1_units.sum())
            out["rate_sigma_km2_a"] = math.hypot(s0, s1) / dt
            out["rel_rate_sigma_pct_a"] = 100.0 / dt * math.hypot(s1 / a0, a1 * s0 / a0**2)
    return out


def _size_classes(units: pd.DataFrame, total_area: float, dt: int) -> pd.DataFrame:
    rows = []
    for label in SIZE_CLASSES:
        members = units[units["size_class"] == label]
        kept = members[members["kept"]]
        a0 = float(kept["area_from_km2"].sum())
        a1 = float(kept["area_to_km2"].sum())
        rel = kept["rel_rate_pct_a"].dropna()
        rows.append(
            {
                "size_class": label,
                "n_units": int(len(members)),
                "n_kept": int(len(kept)),
                "area_km2": float(members["size_area_km2"].sum()),
                "share_of_inventory_area": float(members["size_area_km2"].sum()) / total_area if total_area > 0 else np.nan,
                "kept_area_from_km2": a0,
                "kept_area_to_km2": a1,
                "rel_rate_pct_a": 100.0 * (a1 - a0) / (a0 * dt) if a0 > 0 else np.nan,
                "median_rel_rate_pct_a": float(rel.median()) if len(rel) else np.nan,
                "q25_rel_rate_pct_a": float(rel.quantile(0.25)) if len(rel) else np.nan,
                "q75_rel_rate_pct_a": float(rel.quantile(0.75)) if len(rel) else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("size_class")


def _layers(
    g: pd.DataFrame,
    geoms: Mapping[str, pd.Series],
    ref: gpd.GeoDataFrame | None,
    a: gpd.GeoDataFrame,
    b: gpd.GeoDataFrame,
    units: pd.DataFrame,
    year_from: int,
    year_to: int,
) -> dict[str, gpd.GeoDataFrame]:
    crs = a.crs
    # Where each glacier is drawn: its reference outline, else its start-, else its end-year outline.
    sources = ([ref.geometry] if ref is not None else []) + [a.geometry, b.geometry]
    base = []
    for gid in g.index:
        shape = shapely.Polygon()
        for source in sources:
            candidate = source.get(gid)
            if candidate is not None and not candidate.is_empty:
                shape = candidate
                break
        base.append(shape)
    table = glacier_table(g)
    layers = {"glaciers": gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(base, crs=crs), crs=crs)}
    for tag, year in (("from", year_from), ("to", year_to)):
        shapes = geoms[tag]
        keep = shapes.notna() & (g[f"area_{tag}_observed_km2"] > 0)
        layers[f"outline_{tag}"] = gpd.GeoDataFrame(
            {
                "glacier_id": g.index[keep].astype(str),
                "unit_id": g.loc[keep, "unit_id"].astype(str).to_numpy(),
                "year": year,
                "area_km2": g.loc[keep, f"area_{tag}_observed_km2"].to_numpy(),
                "area_corrected_km2": g.loc[keep, f"area_{tag}_km2"].to_numpy(),
                "kept": g.loc[keep, "kept"].astype(bool).to_numpy(),
            },
            geometry=gpd.GeoSeries(shapes[keep].to_numpy(), crs=crs),
            crs=crs,
        )
    comparable = units[units["comparable"]]
    members_of = g.groupby("unit_id", sort=False).groups
    shapes_of = {tag: dict(zip(g.index, geoms[tag].to_numpy())) for tag in ("from", "to")}
    before = [_union(shapes_of["from"][m] for m in members_of[u]) for u in comparable.index]
    after = [_union(shapes_of["to"][m] for m in members_of[u]) for u in comparable.index]
    for name, shapes in (("loss", shapely.difference(before, after)), ("gain", shapely.difference(after, before))):
        shapes = np.array([_polygonal(shape) for shape in shapes], dtype=object)
        areas = shapely.area(shapes) / _M2_PER_KM2 if len(shapes) else np.zeros(0)
        keep = areas > 0
        layers[name] = gpd.GeoDataFrame(
            {
                "unit_id": comparable.index[keep].astype(str),
                "glacier_ids": comparable["glacier_ids"].to_numpy()[keep],
                "status": comparable["status"].to_numpy()[keep],
                "area_km2": areas[keep],
                "kept": comparable["kept"].to_numpy(dtype=bool)[keep],
            },
            geometry=gpd.GeoSeries(shapes[keep], crs=crs),
            crs=crs,
        )
    return layers


#: Columns of ``change.csv`` (and of the ``glaciers`` layer), in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "glacier_id", "status", "unit_id", "note", "size_class", "reference_area_km2",
    "area_from_observed_km2", "area_from_km2", "area_from_low_km2", "area_from_high_km2",
    "area_to_observed_km2", "area_to_km2", "area_to_low_km2", "area_to_high_km2",
    "masked_from", "masked_to", "recall", "parts_from", "parts_to",
    "unit_area_from_km2", "unit_area_to_km2", "change_km2", "rate_km2_a", "rate_sigma_km2_a",
    "rel_rate_pct_a", "rel_rate_sigma_pct_a", "significant", "kept", "drop_reason",
    "fail_masked", "fail_recall", "fail_extreme",
)


def glacier_table(result_or_frame: ChangeResult | pd.DataFrame) -> pd.DataFrame:
    """The per-glacier table of ``change.csv`` (one row per glacier id)."""
    g = result_or_frame.glaciers if isinstance(result_or_frame, ChangeResult) else result_or_frame
    table = g.reset_index()
    table["glacier_id"] = table["glacier_id"].astype(str)
    table["kept"] = table["kept"].astype(bool)
    return table[list(TABLE_COLUMNS)]


# -- I/O ------------------------------------------------------------------------------------------


def run_change(settings: ChangeSettings) -> ChangeResult:
    """Run ``glacimap change``: read inputs, compute, write the report folder atomically.

    Workspace form (no ``outlines_from``): ``W/outlines/{year}.gpkg`` and ``W/inventory.gpkg``,
    output ``W/change/{from}_{to}`` (or ``settings.out``). Outlines form: two vector files with a
    shared id column (``settings.id_column`` or auto-detected); a ``year`` column (name:
    ``settings.year_column``) selects each year's rows, so one file may hold both years.
    Output folder: ``settings.out`` or ``W/change/{from}_{to}``.
    """
    year_column = settings.year_column
    reference_year = settings.reference_year
    workspace = Workspace(settings.work)
    out_dir = Path(settings.out) if settings.out is not None else workspace.change_dir(settings.year_from, settings.year_to)
    out_dir = out_dir.expanduser().absolute()
    if out_dir.exists() and not settings.overwrite:
        raise OutputExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    params = ChangeParams.from_settings(settings, reference_year=reference_year)
    if settings.outlines_from is not None and settings.outlines_to is not None:
        start, end, inputs = read_outline_pair(
            Path(settings.outlines_from), Path(settings.outlines_to), settings.year_from, settings.year_to,
            settings.id_column, year_column,
        )
        reference = None
        params = replace(params, restrict="none")  # nothing to clip to without a reference
    else:
        start, end, reference, inputs = read_workspace_inputs(workspace, settings.year_from, settings.year_to, year_column)
    log.info("change %s -> %s: %d and %d outlines", settings.year_from, settings.year_to, len(start), len(end))
    result = compute_change(start, end, reference, settings.year_from, settings.year_to, params)
    result = replace(result, inputs=inputs)
    write_outputs(result, out_dir, overwrite=settings.overwrite)
    log.info("wrote %s", out_dir)
    return replace(result, out_dir=out_dir)


def read_workspace_inputs(
    workspace: Workspace, year_from: int, year_to: int, year_column: str = "year"
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame, dict[str, Any]]:
    """Outlines of both years and the reference inventory of a workspace."""
    if workspace.aoi.exists() and not workspace.inventory.exists():
        return read_wall_inputs(workspace, year_from, year_to)
    frames = []
    for year in (year_from, year_to):
        path = workspace.outlines(year)
        if not path.exists():
            raise InputNotFoundError(f"no outlines for {year}: {path} not found; run `glacimap outlines --year {year}` first")
        frame = read_layer(path, WORKSPACE_OUTLINES_LAYER)
        if year_column in frame.columns:
            frame = _rows_of_year(frame, year, year_column, str(path))
        frames.append(_normalise_ids(frame, str(path), "glacier_id"))
    if not workspace.inventory.exists():
        raise InputNotFoundError(f"{workspace.inventory} not found; the change needs the reference inventory (run `glacimap fetch`)")
    inventory = _normalise_ids(read_layer(workspace.inventory, WORKSPACE_INVENTORY_LAYER), str(workspace.inventory), "glacier_id")
    inputs = {
        "form": "workspace",
        "workspace": str(workspace.root),
        "outlines_from": str(workspace.outlines(year_from)),
        "outlines_to": str(workspace.outlines(year_to)),
        "reference": str(workspace.inventory),
        "id_column": "glacier_id",
    }
    return frames[0], frames[1], inventory, inputs


#: Reach (metres) of a start-year glacier's territory in a wall-to-wall workspace: the default
#: ``territory_buffer`` of ``glacimap outlines``.
WALL_REACH_M = 200.0


def read_wall_inputs(
    workspace: Workspace, year_from: int, year_to: int, reach_m: float = WALL_REACH_M
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame, dict[str, Any]]:
    """Both years of a wall-to-wall (``fetch --aoi``) workspace on the start year's glaciers.

    Each year's outlines carry new ids, so the start year's outlines are the reference: the end
    year's ice and confidence band are re-cut into the start glaciers' territories
    (:func:`glacimap.wall.outlines_on_reference`) and keep their ids.
    """
    from glacimap.fetch.aoi import load_aoi
    from glacimap.wall import read_mosaic, outlines_on_reference

    paths = {year: workspace.outlines(year) for year in (year_from, year_to)}
    for year, path in paths.items():
        if not path.exists():
            raise InputNotFoundError(
                f"no outlines for {year}: {path} not found; run `glacimap outlines --year {year} --restrict none` first"
            )
    start = _normalise_ids(read_layer(paths[year_from], WORKSPACE_OUTLINES_LAYER), str(paths[year_from]), "glacier_id")
    end_raw = read_layer(paths[year_to], WORKSPACE_OUTLINES_LAYER)
    band = read_layer(paths[year_to], "confidence_band")
    plan = load_aoi(workspace)
    mosaic = read_mosaic(workspace, year_to, plan)
    end = outlines_on_reference(start.reset_index(drop=True), end_raw, band, mosaic, reach_m)
    log.info("wall-to-wall: %d glaciers of %d re-cut from %d outlines of %d", len(end), year_from, len(end_raw), year_to)
    inputs = {
        "form": "workspace (wall-to-wall)",
        "workspace": str(workspace.root),
        "outlines_from": str(paths[year_from]),
        "outlines_to": str(paths[year_to]),
        "reference": f"{paths[year_from]} (the start year's own glaciers; the end year's ice re-cut into their "
                     f"territories, reach {reach_m:g} m)",
        "id_column": "glacier_id",
    }
    return start, _normalise_ids(end, str(paths[year_to]), "glacier_id"), start.copy(), inputs


def read_outline_pair(
    path_from: Path,
    path_to: Path,
    year_from: int,
    year_to: int,
    id_column: str | None = None,
    year_column: str = "year",
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, dict[str, Any]]:
    """Two outline sets with ``glacier_id`` taken from their shared id column."""
    same_file = path_from.expanduser().resolve() == path_to.expanduser().resolve()
    loaded: list[gpd.GeoDataFrame] = []
    columns: list[str] = []
    for path, year in ((path_from, year_from), (path_to, year_to)):
        frame = read_layer(path, _choose_layer(path))
        column = detect_id_column(frame, str(path), id_column)
        if year_column in frame.columns:
            frame = _rows_of_year(frame, year, year_column, str(path))
        elif same_file:
            raise InvalidInputError(
                f"{path}: both years are read from this file but it has no '{year_column}' column to tell "
                "them apart; give one file per year or name the year column"
            )
        loaded.append(_normalise_ids(frame, f"{path} ({year})", column))
        columns.append(column)
    shared = set(loaded[0]["glacier_id"]) & set(loaded[1]["glacier_id"])
    if not shared:
        examples = [sorted(map(str, f["glacier_id"]))[:3] for f in loaded]
        raise InvalidInputError(
            f"no glacier id is shared between {path_from} (column '{columns[0]}', e.g. {examples[0]}) and "
            f"{path_to} (column '{columns[1]}', e.g. {examples[1]}); choose the shared id column with --id-column"
        )
    inputs = {
        "form": "outlines",
        "outlines_from": str(path_from),
        "outlines_to": str(path_to),
        "id_column": columns[0] if columns[0] == columns[1] else columns,
        "year_column": year_column if any(year_column in f.columns for f in loaded) else None,
        "shared_ids": len(shared),
    }
    return loaded[0], loaded[1], inputs


def _choose_layer(path: Path) -> str | None:
    """The layer to read: ``outlines`` if present, else the only data layer."""
    if not path.exists():
        raise InputNotFoundError(f"{path}: vector file not found")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except DataSourceError as exc:
        raise InvalidInputError(f"{path}: not a readable vector file ({exc})") from exc
    data = [name for name in layers if name != "glacimap_meta"]
    if WORKSPACE_OUTLINES_LAYER in data:
        return WORKSPACE_OUTLINES_LAYER
    if len(data) == 1:
        return data[0]
    raise InvalidInputError(f"{path}: several layers {data} and none named '{WORKSPACE_OUTLINES_LAYER}'; keep one layer")


def _normalise_ids(frame: gpd.GeoDataFrame, source: str, column: str) -> gpd.GeoDataFrame:
    if column not in frame.columns:
        raise InvalidInputError(f"{source}: no column '{column}' (columns: {list(frame.columns)})")
    ids = frame[column]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise InvalidInputError(f"{source}: {int(empty.sum())} rows have an empty id in column '{column}'")
    out = frame.copy()
    if column != "glacier_id" and "glacier_id" in out.columns:
        out = out.rename(columns={"glacier_id": "glacier_id_original"})
    out["glacier_id"] = _id_text(ids)
    duplicated = out["glacier_id"][out["glacier_id"].duplicated()].unique()
    if len(duplicated):
        shown = ", ".join(repr(d) for d in duplicated[:5])
        raise InvalidInputError(
            f"{source}: ids {shown} in column '{column}' occur more than once; each glacier needs one row per year "
            "(if the file holds several years, name its year column)"
        )
    return out


def _id_text(ids: pd.Series) -> pd.Series:
    """Ids as text; whole floats (1.0, as read from some files) lose their '.0'."""
    if pd.api.types.is_float_dtype(ids) and bool((ids == ids.round()).all()):
        return ids.astype("int64").astype(str)
    return ids.astype(str)


def _rows_of_year(frame: gpd.GeoDataFrame, year: int, column: str, source: str) -> gpd.GeoDataFrame:
    years = _year_values(frame[column])
    rows = frame[years == year]
    if rows.empty:
        present = sorted({int(y) for y in years.dropna()})
        raise InvalidInputError(
            f"{source}: no outlines for {year} in column '{column}' (years present: {present or 'none'})"
        )
    return rows


def _year_values(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.year.astype(float)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric.astype(float)
    dates = pd.to_datetime(values.astype(str), errors="coerce", format="mixed")
    return numeric.fillna(dates.dt.year.astype(float)).astype(float)


def write_outputs(result: ChangeResult, out_dir: Path, overwrite: bool = False) -> list[Path]:
    """Write the report folder: built in a temp folder beside ``out_dir``, then renamed onto it."""
    from glacimap import report

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir, "tmp")
    tmp.mkdir()  # unlike mkdtemp, honours the umask: the report is as readable as any other output
    try:
        layers = {name: frame.to_crs(result.output_crs) for name, frame in result.layers.items()}
        write_layers(tmp / "change.gpkg", layers)
        glacier_table(result).to_csv(tmp / "change.csv", index=False, float_format="%.6f")
        written = [tmp / "change.gpkg", tmp / "change.csv"]
        written += report.write_report(result, tmp)
        summary = result.summary()
        summary["files"] = sorted(str(p.relative_to(tmp)) for p in written) + ["summary.json"]
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _publish(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return [out_dir / p.relative_to(tmp) for p in written] + [out_dir / "summary.json"]


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename the finished folder ``tmp`` onto ``final``; an old ``final`` goes only once replaced."""
    if not final.exists():
        os.replace(tmp, final)
        return
    if not overwrite:
        raise OutputExistsError(f"{final} exists; pass --overwrite to replace it")
    backup = _sibling(final, "old")
    os.replace(final, backup)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(backup, final)
        raise
    if backup.is_dir() and not backup.is_symlink():
        shutil.rmtree(backup)
    else:
        backup.unlink()


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unused path beside ``path`` (same file system, so renames are atomic)."""
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}"


def _json_ready(value: Any) -> Any:
    """Python scalars for JSON: NaN -> null, numpy / pandas values -> builtins."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
