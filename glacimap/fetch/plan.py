"""The fetch plan: scenes, per-glacier candidates and choices, as small frozen dataclasses.

Fetch plans the whole load (which items, which grid, which bands) before reading a pixel; the
plan holds plain data only (hrefs, bounds, WKB), so tasks can travel to dask workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pystac

from glacimap.fetch.harmonise import parse_datetime
from glacimap.fetch.profiles import Product, Sensor
from glacimap.rasters import Grid


@dataclass(frozen=True)
class Scene:
    """One acquisition (a STAC item) reduced to what fetch needs."""

    id: str
    collection: str
    sensor: Sensor
    datetime: datetime
    hrefs: dict[str, str]  # common band name -> href
    footprint_wkb: bytes  # EPSG:4326 geometry of the valid data
    tile_cloud: float | None = None  # eo:cloud_cover of the whole tile, percent
    platform: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)  # processing baseline, orbit state...
    #: the tiles of a same-day mosaic (then ``hrefs`` is empty); empty for a single tile
    tiles: tuple[Scene, ...] = ()

    @property
    def date_text(self) -> str:
        return self.datetime.date().isoformat()

    @property
    def parts(self) -> tuple[Scene, ...]:
        """The tiles to read: the mosaic's tiles, or the scene itself."""
        return self.tiles or (self,)


def acquisition_key(scene: Scene) -> tuple[str, str, str | None, str, str]:
    """Scenes with the same key are tiles of one acquisition (same sensor, platform, day, orbit)."""
    return (scene.collection, scene.sensor, scene.platform, scene.date_text, str(scene.properties.get("sat:orbit_state", "")))


def mosaic_scene(tiles: list[Scene]) -> Scene:
    """One candidate from the tiles of one acquisition (Diaconu & Bamber's successor code
    mosaics the tiles of a date when one tile covers a glacier only partly)."""
    import shapely

    if len(tiles) == 1:
        return tiles[0]
    tiles = sorted(tiles, key=lambda t: t.id)
    clouds = [t.tile_cloud for t in tiles if t.tile_cloud is not None]
    first = tiles[0]
    return Scene(
        id="+".join(t.id for t in tiles),
        collection=first.collection,
        sensor=first.sensor,
        datetime=first.datetime,
        hrefs={},
        footprint_wkb=shapely.to_wkb(shapely.union_all([shapely.from_wkb(t.footprint_wkb) for t in tiles])),
        tile_cloud=sum(clouds) / len(clouds) if clouds else None,
        platform=first.platform,
        properties=dict(first.properties),
        tiles=tuple(tiles),
    )


def scene_from_item(item: pystac.Item | dict[str, Any], sensor: Sensor, product: Product) -> Scene | None:
    """A :class:`Scene` from a STAC item, or None when an asset glacimap needs is missing."""
    import shapely
    from shapely.geometry import shape

    data = item.to_dict() if isinstance(item, pystac.Item) else item
    props = data.get("properties", {})
    assets = data.get("assets", {})
    hrefs = {}
    for common, key in product.assets.items():
        if key not in assets:
            return None
        hrefs[common] = assets[key]["href"]
    geometry = shape(data["geometry"]) if data.get("geometry") else shapely.box(*data["bbox"])
    cloud = props.get(product.cloud_property) if product.cloud_property else None
    keep = ("s2:processing_baseline", "earthsearch:boa_offset_applied", "sat:orbit_state", "platform")
    return Scene(
        id=data["id"],
        collection=data.get("collection", product.collection),
        sensor=sensor,
        datetime=parse_datetime(props["datetime"] or props["start_datetime"]),
        hrefs=hrefs,
        footprint_wkb=shapely.to_wkb(geometry),
        tile_cloud=float(cloud) if cloud is not None else None,
        platform=props.get("platform"),
        properties={k: props[k] for k in keep if k in props},
    )


@dataclass(frozen=True)
class CandidateScore:
    """How one scene sees one glacier (fractions of glacier + buffer pixels)."""

    glacier_id: str
    scene_id: str
    coverage: float  # valid data (incl. cloud) / all pixels of glacier + buffer
    cloud_fraction: float  # cloud / valid pixels of glacier + buffer
    snow_index: float  # mean NDSI on the off-glacier ring (NaN if unknown)
    tile_cloud: float  # eo:cloud_cover of the tile, percent (inf if unknown)
    days_from_target: int
    rejected: str | None = None  # reason, or None when eligible


@dataclass(frozen=True)
class GlacierJob:
    """Everything a worker needs to build one glacier's chip."""

    glacier_id: str
    geometry_wkb: bytes  # EPSG:4326 outline
    grid: Grid
    candidates: tuple[Scene, ...]
    dem_scenes: tuple[Scene, ...] = ()
    sar_scenes: tuple[Scene, ...] = ()
