"""STAC items and collections of the synthetic world, and their layout on disk.

The world publishes its scenes the way Earth Search v1 does (same collection ids, asset keys,
encodings and the properties a client filters on), so the fetch stage can be tested against
it unchanged. On disk, under ``WORLD/stac/``::

    collections.json   JSON list of STAC Collection dicts
    items.ndjson       one STAC Item (1.0.0) per line; asset hrefs relative to WORLD/stac/
    assets/<collection>/<item id>/<asset key>.tif   Cloud-Optimized GeoTIFFs

The local STAC API (:mod:`glacimap.synthetic.serve`) serves exactly this layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import Polygon, mapping

from glacimap.errors import InputNotFoundError, InvalidInputError
from glacimap.rasters import Grid
from glacimap.workspace import write_text_atomic

STAC_VERSION = "1.0.0"
S2 = "sentinel-2-l2a"
LANDSAT = "landsat-c2-l2"
S1 = "sentinel-1-grd"
DEM = "cop-dem-glo-30"
COLLECTION_IDS: tuple[str, ...] = (S2, LANDSAT, S1, DEM)

COLLECTIONS_FILE = "collections.json"
ITEMS_FILE = "items.ndjson"
ASSETS_DIR = "assets"

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
LICENSE = "CC0-1.0"

EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "sat": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "grid": "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "mgrs": "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "landsat": "https://stac-extensions.github.io/landsat/v2.0.0/schema.json",
    "item_assets": "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
}

#: Sentinel-2 assets: key -> (band, centre wavelength um, FWHM um, resolution m).
S2_BANDS: dict[str, tuple[str, float, float, int]] = {
    "blue": ("B02", 0.49, 0.098, 10),
    "green": ("B03", 0.56, 0.045, 10),
    "red": ("B04", 0.665, 0.038, 10),
    "nir": ("B08", 0.842, 0.145, 10),
    "swir16": ("B11", 1.61, 0.143, 20),
    "swir22": ("B12", 2.19, 0.242, 20),
}
#: Landsat OLI assets: key -> (band, centre wavelength um, FWHM um).
LANDSAT_BANDS: dict[str, tuple[str, float, float]] = {
    "blue": ("SR_B2", 0.48, 0.06),
    "green": ("SR_B3", 0.56, 0.06),
    "red": ("SR_B4", 0.65, 0.04),
    "nir08": ("SR_B5", 0.86, 0.03),
    "swir16": ("SR_B6", 1.6, 0.08),
    "swir22": ("SR_B7", 2.2, 0.2),
}
COMMON_NAMES = {"nir08": "nir08", "nir": "nir", "swir16": "swir16", "swir22": "swir22"}

SCL_CLASSES = [
    {"value": 0, "name": "no_data"},
    {"value": 1, "name": "saturated_or_defective"},
    {"value": 2, "name": "dark_area_pixels"},
    {"value": 3, "name": "cloud_shadows"},
    {"value": 4, "name": "vegetation"},
    {"value": 5, "name": "not_vegetated"},
    {"value": 6, "name": "water"},
    {"value": 7, "name": "unclassified"},
    {"value": 8, "name": "cloud_medium_probability"},
    {"value": 9, "name": "cloud_high_probability"},
    {"value": 10, "name": "thin_cirrus"},
    {"value": 11, "name": "snow"},
]

QA_BITFIELDS = [
    {"name": "fill", "offset": 0, "length": 1},
    {"name": "dilated_cloud", "offset": 1, "length": 1},
    {"name": "cirrus", "offset": 2, "length": 1},
    {"name": "cloud", "offset": 3, "length": 1},
    {"name": "cloud_shadow", "offset": 4, "length": 1},
    {"name": "snow", "offset": 5, "length": 1},
    {"name": "clear", "offset": 6, "length": 1},
    {"name": "water", "offset": 7, "length": 1},
    {"name": "cloud_confidence", "offset": 8, "length": 2},
    {"name": "cloud_shadow_confidence", "offset": 10, "length": 2},
    {"name": "snow_ice_confidence", "offset": 12, "length": 2},
    {"name": "cirrus_confidence", "offset": 14, "length": 2},
]


# -- paths -----------------------------------------------------------------------------------------
def asset_href(collection: str, item_id: str, key: str) -> str:
    """Asset href relative to ``WORLD/stac/``."""
    return f"{ASSETS_DIR}/{collection}/{item_id}/{key}.tif"


def asset_path(stac_dir: Path, collection: str, item_id: str, key: str) -> Path:
    return Path(stac_dir) / asset_href(collection, item_id, key)


# -- geometry --------------------------------------------------------------------------------------
def epsg_code(crs: str) -> int:
    code = CRS.from_user_input(crs).to_epsg()
    if code is None:
        raise InvalidInputError(f"CRS {crs!r} has no EPSG code; STAC items need proj:epsg")
    return int(code)


def lonlat_geometry(polygon: Polygon, crs: str, step: float = 200.0) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON geometry (EPSG:4326, edges densified every ``step`` CRS units) and bbox of a polygon."""
    if polygon.is_empty:
        raise InvalidInputError("cannot publish an empty footprint")
    dense = shapely.segmentize(polygon, step) if crs != "EPSG:4326" else polygon
    transformer = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(dense, lambda xy: _transform_xy(transformer, xy))
    lonlat = shapely.set_precision(lonlat, 1e-8)
    geometry = _plain(mapping(lonlat))
    minx, miny, maxx, maxy = lonlat.bounds
    return geometry, [round(minx, 8), round(miny, 8), round(maxx, 8), round(maxy, 8)]


def _transform_xy(transformer: Transformer, xy: np.ndarray) -> np.ndarray:
    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _plain(obj: Any) -> Any:
    """Tuples to lists, floats rounded, so items serialise the same way every time."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 8)
    return obj


def proj_fields(grid: Grid) -> dict[str, Any]:
    """proj:shape, proj:transform and proj:bbox of an asset on ``grid``."""
    t = grid.transform
    return {
        "proj:shape": [grid.height, grid.width],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "proj:bbox": list(grid.bounds),
    }


def _asset(
    collection: str,
    item_id: str,
    key: str,
    title: str,
    grid: Grid,
    raster_band: dict[str, Any],
    roles: Sequence[str] = ("data",),
    eo_band: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    asset: dict[str, Any] = {
        "href": asset_href(collection, item_id, key),
        "type": COG_TYPE,
        "title": title,
        "roles": list(roles),
        "gsd": grid.resolution if collection != DEM else 30,
        **proj_fields(grid),
        "raster:bands": [raster_band],
    }
    if eo_band is not None:
        asset["eo:bands"] = [eo_band]
    if extra:
        asset.update(extra)
    return asset


def _item(
    collection: str,
    item_id: str,
    geometry: dict[str, Any],
    bbox: list[float],
    properties: dict[str, Any],
    assets: dict[str, dict[str, Any]],
    extensions: Iterable[str],
) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EXT[e] for e in extensions],
        "id": item_id,
        "collection": collection,
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": [],
        "assets": assets,
    }


# -- items -----------------------------------------------------------------------------------------
def s2_item(
    item_id: str,
    datetime_utc: str,
    platform: str,
    tile: str,
    footprint: Polygon,
    crs: str,
    grid10: Grid,
    grid20: Grid,
    baseline: str,
    boa_offset_flag: bool,
    sun: tuple[float, float],
    cloud_cover: float,
    percentages: dict[str, float],
    relative_orbit: int,
) -> dict[str, Any]:
    """A Sentinel-2 L2A item as Earth Search v1 publishes it.

    ``boa_offset_flag`` is the value of ``earthsearch:boa_offset_applied``; the raster:bands
    offset follows the flag (-0.1 when true), as Earth Search's does, whether or not the flag
    tells the truth about the DNs (that is decided by ``s2:processing_baseline``).
    """
    geometry, bbox = lonlat_geometry(footprint, crs)
    epsg = epsg_code(crs)
    offset = -0.1 if boa_offset_flag else 0.0
    assets: dict[str, dict[str, Any]] = {}
    for key, (band, centre, fwhm, res) in S2_BANDS.items():
        grid = grid10 if res == 10 else grid20
        assets[key] = _asset(
            S2, item_id, key, f"{key.capitalize()} ({band}) - {res}m", grid,
            {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15, "spatial_resolution": res,
             "scale": 0.0001, "offset": offset},
            roles=("data", "reflectance"),
            eo_band={"name": key, "common_name": COMMON_NAMES.get(key, key), "description": f"{key} (band {band[1:].lstrip('0')})",
                     "center_wavelength": centre, "full_width_half_max": fwhm},
        )
    assets["scl"] = _asset(
        S2, item_id, "scl", "Scene classification map (SCL)", grid20,
        {"nodata": 0, "data_type": "uint8", "spatial_resolution": 20},
        extra={"classification:classes": SCL_CLASSES},
    )
    zone, band, square = tile[:2], tile[2], tile[3:]
    yyyymmdd = datetime_utc[:10].replace("-", "")
    properties = {
        "datetime": datetime_utc,
        "platform": platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "gsd": 10,
        "eo:cloud_cover": cloud_cover,
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "mgrs:utm_zone": int(zone),
        "mgrs:latitude_band": band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{tile}",
        "view:sun_azimuth": round(sun[1], 4),
        "view:sun_elevation": round(90.0 - sun[0], 4),
        "sat:relative_orbit": relative_orbit,
        "sat:orbit_state": "descending",
        "s2:processing_baseline": baseline,
        "s2:product_type": "S2MSI2A",
        "s2:granule_id": f"S2{platform[-1].upper()}_OPER_MSI_L2A_TL_SYNT_{yyyymmdd}T000000_A000000_T{tile}_N{baseline.replace('.', '')}",
        "s2:product_uri": f"S2{platform[-1].upper()}_MSIL2A_{yyyymmdd}T101559_N{baseline.replace('.', '')}_R{relative_orbit:03d}_T{tile}_{yyyymmdd}T120000.SAFE",
        **{f"s2:{name}": value for name, value in percentages.items()},
        "earthsearch:boa_offset_applied": boa_offset_flag,
    }
    return _item(S2, item_id, geometry, bbox, properties, assets,
                 ("eo", "proj", "raster", "view", "sat", "grid", "mgrs", "classification"))


def landsat_item(
    item_id: str,
    datetime_utc: str,
    platform: str,
    path: int,
    row: int,
    footprint: Polygon,
    crs: str,
    grid30: Grid,
    sun: tuple[float, float],
    cloud_cover: float,
) -> dict[str, Any]:
    """A Landsat Collection 2 Level-2 item (surface reflectance and QA_PIXEL)."""
    geometry, bbox = lonlat_geometry(footprint, crs)
    epsg = epsg_code(crs)
    assets: dict[str, dict[str, Any]] = {}
    for key, (band, centre, fwhm) in LANDSAT_BANDS.items():
        assets[key] = _asset(
            LANDSAT, item_id, key, f"{key.capitalize()} ({band})", grid30,
            {"nodata": 0, "data_type": "uint16", "spatial_resolution": 30, "scale": 0.0000275, "offset": -0.2,
             "unit": "1"},
            roles=("data", "reflectance"),
            eo_band={"name": band, "common_name": COMMON_NAMES.get(key, key), "center_wavelength": centre,
                     "full_width_half_max": fwhm},
        )
    assets["qa_pixel"] = _asset(
        LANDSAT, item_id, "qa_pixel", "Pixel quality assessment (QA_PIXEL)", grid30,
        {"nodata": 1, "data_type": "uint16", "spatial_resolution": 30, "unit": "bit index"},
        roles=("cloud", "cloud-shadow", "snow-ice", "water-mask"),
        extra={"classification:bitfields": QA_BITFIELDS},
    )
    number = platform.split("-")[-1]
    doy = _day_of_year(datetime_utc)
    properties = {
        "datetime": datetime_utc,
        "platform": platform,
        "constellation": "landsat",
        "instruments": ["oli", "tirs"],
        "gsd": 30,
        "eo:cloud_cover": cloud_cover,
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "view:sun_azimuth": round(sun[1], 4),
        "view:sun_elevation": round(90.0 - sun[0], 4),
        "view:off_nadir": 0,
        "landsat:cloud_cover_land": cloud_cover,
        "landsat:wrs_type": "2",
        "landsat:wrs_path": f"{path:03d}",
        "landsat:wrs_row": f"{row:03d}",
        "landsat:collection_category": "T1",
        "landsat:collection_number": "02",
        "landsat:correction": "L2SP",
        "landsat:scene_id": f"LC{number}{path:03d}{row:03d}{datetime_utc[:4]}{doy:03d}LGN00",
    }
    return _item(LANDSAT, item_id, geometry, bbox, properties, assets, ("eo", "proj", "raster", "view", "landsat", "classification"))


def _day_of_year(datetime_utc: str) -> int:
    return date.fromisoformat(datetime_utc[:10]).timetuple().tm_yday


def s1_item(
    item_id: str,
    datetime_utc: str,
    platform: str,
    orbit_state: str,
    relative_orbit: int,
    absolute_orbit: int,
    footprint: Polygon,
    crs: str,
    grid10: Grid,
    nodata: float,
) -> dict[str, Any]:
    """A Sentinel-1 IW GRD item whose VV/VH assets are already map-projected sigma0 in dB."""
    geometry, bbox = lonlat_geometry(footprint, crs)
    epsg = epsg_code(crs)
    assets = {
        pol: _asset(
            S1, item_id, pol, f"{pol.upper()} sigma0 (dB, map-projected)", grid10,
            {"nodata": nodata, "data_type": "float32", "unit": "dB", "spatial_resolution": 10},
            roles=("data", "backscatter"),
            extra={"sar:polarizations": [pol.upper()]},
        )
        for pol in ("vv", "vh")
    }
    properties = {
        "datetime": datetime_utc,
        "platform": platform,
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "gsd": 10,
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:polarizations": ["VV", "VH"],
        "sar:product_type": "GRD",
        "sar:resolution_range": 20,
        "sar:resolution_azimuth": 22,
        "sar:pixel_spacing_range": 10,
        "sar:pixel_spacing_azimuth": 10,
        "sar:looks_range": 5,
        "sar:looks_azimuth": 1,
        "sar:looks_equivalent_number": 4.4,
        "sat:orbit_state": orbit_state,
        "sat:relative_orbit": relative_orbit,
        "sat:absolute_orbit": absolute_orbit,
    }
    return _item(S1, item_id, geometry, bbox, properties, assets, ("proj", "raster", "sar", "sat"))


def dem_item(item_id: str, footprint: Polygon, grid: Grid, nodata: float) -> dict[str, Any]:
    """A Copernicus DEM GLO-30 tile item (EPSG:4326, 1 arc-second)."""
    geometry, bbox = lonlat_geometry(footprint, "EPSG:4326")
    assets = {
        "data": _asset(
            DEM, item_id, "data", "Copernicus DEM GLO-30 (synthetic)", grid,
            {"nodata": nodata, "data_type": "float32", "unit": "metre", "spatial_resolution": 30},
            roles=("data",),
        )
    }
    properties = {
        "datetime": "2021-04-22T00:00:00Z",
        "platform": "tandem-x",
        "constellation": "tandem-x",
        "gsd": 30,
        "proj:epsg": 4326,
        "proj:code": "EPSG:4326",
    }
    return _item(DEM, item_id, geometry, bbox, properties, assets, ("proj", "raster"))


def mgrs_tile(zone: int, lat: float, x: float, y: float) -> str:
    """MGRS 100 km square of a UTM point, e.g. ``32TPT`` (Sentinel-2 tile naming)."""
    bands = "CDEFGHJKLMNPQRSTUVWX"
    band = bands[min(len(bands) - 1, max(0, int((lat + 80.0) // 8)))]
    columns = {1: "ABCDEFGH", 2: "JKLMNPQR", 0: "STUVWXYZ"}[zone % 3]
    column = columns[min(7, max(0, int(x // 100_000) - 1))]
    rows = "ABCDEFGHJKLMNPQRSTUV"
    row_index = int(y // 100_000) % 20
    if zone % 2 == 0:
        row_index = (row_index + 5) % 20
    return f"{zone:02d}{band}{column}{rows[row_index]}"


def previous_row_tile(tile: str) -> str:
    """The MGRS square south of ``tile`` in the same column (row letter minus one)."""
    rows = "ABCDEFGHJKLMNPQRSTUV"
    return tile[:4] + rows[(rows.index(tile[4]) - 1) % 20]


# -- collections -----------------------------------------------------------------------------------
_DESCRIPTIONS = {
    S2: ("Sentinel-2 Level-2A (synthetic)",
         "Synthetic Sentinel-2 L2A scenes of the glacimap test world, encoded like Earth Search v1 "
         "(uint16 DN; reflectance = (DN - 1000) / 10000 from processing baseline 04.00, DN / 10000 before; "
         "SCL at 20 m). Tiles cover part of the world; pixels outside the footprint are 0."),
    LANDSAT: ("Landsat Collection 2 Level-2 (synthetic)",
              "Synthetic Landsat 8/9 surface reflectance (reflectance = DN * 2.75e-5 - 0.2) and QA_PIXEL "
              "on the 30 m Landsat lattice (pixel edges at multiples of 30 m + 15 m)."),
    S1: ("Sentinel-1 GRD (synthetic, map-projected)",
         "Synthetic Sentinel-1 IW VV/VH backscatter. Unlike the real sentinel-1-grd assets (radar geometry, "
         "amplitude DN), these are already map-projected sigma0 in dB, float32, no data -9999."),
    DEM: ("Copernicus DEM GLO-30 (synthetic)",
          "The world's terrain as Copernicus-DEM-like 1-degree tiles in EPSG:4326 at 1 arc-second "
          "(float32, void -32767), clipped to the world: mosaic the tiles to cover it."),
}


def build_collections(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Collection per collection id present in ``items``, with extents and summaries."""
    out = []
    for cid in COLLECTION_IDS:
        members = [it for it in items if it["collection"] == cid]
        if not members:
            continue
        bboxes = [it["bbox"] for it in members]
        bbox = [min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes), max(b[3] for b in bboxes)]
        times = sorted(it["properties"]["datetime"] for it in members)
        title, description = _DESCRIPTIONS[cid]
        summaries: dict[str, Any] = {
            "platform": sorted({it["properties"]["platform"] for it in members}),
            "constellation": sorted({it["properties"]["constellation"] for it in members}),
            "proj:epsg": sorted({it["properties"]["proj:epsg"] for it in members}),
        }
        if cid in (S2, LANDSAT):
            covers = [it["properties"]["eo:cloud_cover"] for it in members]
            summaries["eo:cloud_cover"] = {"minimum": min(covers), "maximum": max(covers)}
        if cid == S1:
            summaries["sat:orbit_state"] = sorted({it["properties"]["sat:orbit_state"] for it in members})
        item_assets = {}
        for key, asset in members[0]["assets"].items():
            template = {k: v for k, v in asset.items() if not k.startswith("proj:") and k != "href"}
            item_assets[key] = template
        out.append({
            "type": "Collection",
            "stac_version": STAC_VERSION,
            "stac_extensions": [EXT["item_assets"]],
            "id": cid,
            "title": title,
            "description": description,
            "license": LICENSE,
            "keywords": ["synthetic", "glacimap", "test data"],
            "providers": [{"name": "glacimap synthetic world", "roles": ["producer", "processor", "host"]}],
            "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[times[0], times[-1]]]}},
            "summaries": summaries,
            "item_assets": item_assets,
            "links": [],
        })
    return out


# -- on-disk catalogue -----------------------------------------------------------------------------
def sort_items(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {cid: i for i, cid in enumerate(COLLECTION_IDS)}
    return sorted(items, key=lambda it: (order.get(it["collection"], 99), it["properties"]["datetime"], it["id"]))


def write_catalog(stac_dir: Path, items: Sequence[dict[str, Any]], overwrite: bool = True) -> list[dict[str, Any]]:
    """Write ``collections.json`` and ``items.ndjson`` (atomically); return the collections."""
    stac_dir = Path(stac_dir)
    items = sort_items(items)
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"{stac_dir}: duplicated item ids in the catalogue")
    collections = build_collections(items)
    write_text_atomic(stac_dir / COLLECTIONS_FILE, json.dumps(collections, indent=1) + "\n", overwrite=overwrite)
    lines = "".join(json.dumps(it, separators=(",", ":")) + "\n" for it in items)
    write_text_atomic(stac_dir / ITEMS_FILE, lines, overwrite=overwrite)
    return collections


def read_items(stac_dir: Path) -> list[dict[str, Any]]:
    """All items of an on-disk catalogue."""
    path = Path(stac_dir) / ITEMS_FILE
    if not path.exists():
        raise InputNotFoundError(f"{path}: no STAC items (generate the synthetic world first)")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_collections(stac_dir: Path) -> list[dict[str, Any]]:
    """All collections of an on-disk catalogue."""
    path = Path(stac_dir) / COLLECTIONS_FILE
    if not path.exists():
        raise InputNotFoundError(f"{path}: no STAC collections (generate the synthetic world first)")
    return json.loads(path.read_text(encoding="utf-8"))
