"""Reference inventories: read, validate and normalise glacier outlines.

A normalised inventory has a string ``glacier_id`` column (unique, non-empty, safe to turn into
file names with :func:`glacimap.workspace.safe_stem`), valid polygon geometries in EPSG:4326,
and keeps every original attribute.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely

from glacimap.errors import InvalidInputError
from glacimap.vectors import read_layer, write_layers
from glacimap.workspace import check_unique_ids, safe_stem

#: Id columns recognised automatically, in order of preference.
ID_COLUMNS = ("glacier_id", "RGIId", "rgi_id", "GLIMSId", "glac_id", "id")


def detect_id_column(frame: gpd.GeoDataFrame, source: str, id_column: str | None = None) -> str:
    """Return the id column: ``id_column`` if given, else the first of :data:`ID_COLUMNS`."""
    if id_column is not None:
        if id_column not in frame.columns:
            raise InvalidInputError(
                f"{source}: no column '{id_column}' (columns: {list(frame.columns)})"
            )
        return id_column
    for name in ID_COLUMNS:
        if name in frame.columns:
            return name
    raise InvalidInputError(
        f"{source}: no glacier id column found; expected one of {list(ID_COLUMNS)} "
        "or name it with --id-column"
    )


def normalise_inventory(
    frame: gpd.GeoDataFrame, source: str, id_column: str | None = None
) -> gpd.GeoDataFrame:
    """Validate ``frame`` and return it normalised (see module docstring)."""
    if frame.crs is None:
        raise InvalidInputError(f"{source}: the inventory has no CRS")
    if frame.empty:
        raise InvalidInputError(f"{source}: the inventory has no glaciers")
    column = detect_id_column(frame, source, id_column)
    ids = frame[column]
    missing = ids.isna() | (ids.astype(str).str.strip() == "")
    if missing.any():
        rows = list(frame.index[missing][:5])
        raise InvalidInputError(f"{source}: {int(missing.sum())} glaciers have an empty id in '{column}' (rows {rows})")
    out = frame.copy()
    if column != "glacier_id":
        if "glacier_id" in out.columns:
            out = out.rename(columns={"glacier_id": "glacier_id_original"})
        out.insert(0, "glacier_id", ids.astype(str))
    else:
        out["glacier_id"] = ids.astype(str)
    check_unique_ids(list(out["glacier_id"]), source)
    out = out.to_crs("EPSG:4326")
    geoms = shapely.make_valid(out.geometry.values)
    # make_valid may return collections with lines; keep the polygonal part only.
    out = out.set_geometry(gpd.GeoSeries(geoms, crs=out.crs).apply(_polygonal_part), crs=out.crs)
    empty = out.geometry.is_empty | out.geometry.isna()
    if empty.any():
        bad = list(out.loc[empty, "glacier_id"][:5])
        raise InvalidInputError(f"{source}: glaciers {bad} have no polygon area")
    out["file_stem"] = [safe_stem(g) for g in out["glacier_id"]]
    return out.reset_index(drop=True)


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry:
    if geom is None or geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    polygons = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polygons) if polygons else shapely.Polygon()


def load_inventory(path: Path | str, id_column: str | None = None, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read and normalise an inventory file (any format OGR reads)."""
    return normalise_inventory(read_layer(path, layer), str(path), id_column)


def save_inventory(frame: gpd.GeoDataFrame, path: Path | str, overwrite: bool = True) -> Path:
    """Write a normalised inventory to ``path`` (layer ``inventory``)."""
    return write_layers(path, {"inventory": frame}, overwrite=overwrite)
