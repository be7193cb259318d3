"""STAC search for candidate scenes: one search per region and product, then per glacier.

The server is asked for items intersecting the region in the date window; where it supports
CQL2 (``/conformance``) a tile-cloud cap is sent as a ``filter``, otherwise as ``query``, and
it is always re-checked here since servers differ in what they honour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import shapely
from pystac_client import Client
from pystac_client.exceptions import APIError

from glacimap.errors import FetchError, InvalidInputError
from glacimap.fetch.plan import Scene, scene_from_item
from glacimap.fetch.profiles import Sensor, StacProfile

log = logging.getLogger(__name__)

#: Conformance-class endings that announce CQL2 filtering and the older ``query`` extension.
FILTER_CONFORMANCE = ("item-search#filter", "cql2-json")
QUERY_CONFORMANCE = ("item-search#query",)
#: Items per page. Servers that page (Earth Search, Planetary Computer) return the rest through
#: ``next`` links; servers that do not (rustac 0.9) return at most this many, so a full page
#: without a ``next`` link is reported as possibly truncated.
PAGE_SIZE = 1000


def default_window(year: int, latitude: float) -> tuple[date, date]:
    """End of the melt season: 1 Aug - 15 Oct in the north, 1 Feb - 15 Apr in the south."""
    if latitude >= 0:
        return date(year, 8, 1), date(year, 10, 15)
    return date(year, 2, 1), date(year, 4, 15)


def window_dates(year: int, latitude: float, window: str | None, target: date | None, days: int) -> tuple[date, date]:
    """The acquisition window from the settings (``MM-DD:MM-DD``, a date +/- days, or default)."""
    if target is not None:
        return target - timedelta(days=days), target + timedelta(days=days)
    if window is None:
        return default_window(year, latitude)
    first, last = window.split(":")
    start = date(year, int(first[:2]), int(first[3:]))
    end = date(year, int(last[:2]), int(last[3:]))
    if end < start:  # a window across new year, e.g. 12-15:02-28 of the southern summer
        start = date(year - 1, start.month, start.day)
    return start, end


def open_client(profile: StacProfile) -> Client:
    """Open the profile's STAC API."""
    try:
        return Client.open(profile.url)
    except (APIError, OSError) as exc:
        raise FetchError(f"STAC API {profile.url} is not reachable ({exc})") from exc


def _supports(client: Client, endings: Sequence[str]) -> bool:
    conforms = client.get_conforms_to()
    return any(uri.endswith(ending) for uri in conforms for ending in endings)


def search_scenes(
    client: Client,
    profile: StacProfile,
    sensor: Sensor,
    bbox: Sequence[float],
    start: date | datetime,
    end: date | datetime,
    max_tile_cloud: float | None = None,
) -> list[Scene]:
    """All scenes of ``sensor`` intersecting ``bbox`` (lon/lat) between ``start`` and ``end``."""
    product = profile.products.get(sensor)
    if product is None:
        raise InvalidInputError(f"profile {profile.name} has no product for sensor {sensor}")
    kwargs: dict = {
        "collections": [product.collection],
        "bbox": list(bbox),
        "datetime": f"{_iso(start, False)}/{_iso(end, True)}" if sensor != "dem" else None,
        "limit": PAGE_SIZE,
    }
    cap = max_tile_cloud if (product.cloud_property and max_tile_cloud is not None and max_tile_cloud < 100) else None
    if cap is not None:
        if _supports(client, FILTER_CONFORMANCE):
            kwargs["filter"] = {"op": "<=", "args": [{"property": product.cloud_property}, cap]}
            kwargs["filter_lang"] = "cql2-json"
        elif _supports(client, QUERY_CONFORMANCE):
            kwargs["query"] = {product.cloud_property: {"lte": cap}}
    try:
        items = _search_items(client, kwargs)
    except APIError as exc:
        if "filter" not in kwargs:
            raise FetchError(f"STAC search in {product.collection} at {profile.url} failed ({exc})") from exc
        # Some servers advertise CQL2 but reject it; search without and filter here.
        log.info("server rejected the cloud filter (%s); filtering client-side", exc)
        kwargs.pop("filter"), kwargs.pop("filter_lang")
        items = _search_items(client, kwargs)
    scenes = []
    for item in items:
        scene = scene_from_item(item, sensor, product)
        if scene is None:
            log.debug("skipping %s: missing assets", item.get("id"))
            continue
        if cap is not None and scene.tile_cloud is not None and scene.tile_cloud > cap:
            continue  # the server ignored the filter
        scenes.append(scene)
    log.info("%d %s scenes in %s", len(scenes), sensor, product.collection)
    return scenes


def _search_items(client: Client, kwargs: dict) -> list[dict]:
    items: list[dict] = []
    for page in client.search(**{k: v for k, v in kwargs.items() if v is not None}).pages_as_dicts():
        features = page.get("features", [])
        items += features
        has_next = any(link.get("rel") == "next" for link in page.get("links", []))
        if len(features) >= PAGE_SIZE and not has_next:
            log.warning("the STAC server returned a full page of %d items without a next link; "
                        "results may be truncated (search a smaller area or window)", len(features))
    return items


def _iso(value: date | datetime, end: bool) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return f"{value.isoformat()}T{'23:59:59' if end else '00:00:00'}Z"


def footprint_coverage(scene: Scene, area: shapely.Geometry) -> float:
    """Share of ``area`` (EPSG:4326) inside the scene's footprint, computed geometrically."""
    footprint = shapely.from_wkb(scene.footprint_wkb)
    if area.area == 0:
        return 0.0
    return float(shapely.intersection(footprint, area).area / area.area)
