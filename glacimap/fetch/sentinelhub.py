"""The Sentinel Hub backend of ``glacimap fetch``: Catalog search, per-glacier statistics, Process API chips.

Same selection rule, chip layout and selection record as the STAC backend (docs/fetch.md); what
differs is where pixels come from (docs/fetch-sentinelhub.md):

- **Search**: one Catalog API search per product for the region and window. Catalog items are
  tiles; a glacier's candidates are its *acquisitions*, the tiles of one product and one UTC day
  that intersect glacier + buffer, mosaicked (Sentinel Hub mosaics every tile of the day, least
  cloudy first). A candidate's id is its tile ids joined with ``+``; ``Scene.hrefs`` holds only
  ``{"acquired": "YYYY-MM-DD"}`` (there are no per-band hrefs).
- **Score**: two Statistical API calls per glacier (whatever the number of candidates): cloud
  fraction and valid-data coverage over glacier + buffer, and mean NDSI of clear pixels on the
  off-glacier ring, both per day at the cloud mask's resolution (20 m SCL, 30 m QA_PIXEL).
- **Chip**: a Process API request on exactly the chip grid (UTM, the chip's bounds and shape)
  returning reflectance of ``blue green red nir swir16 swir22`` (FLOAT32, nearest neighbour)
  and the raw SCL / QA_PIXEL band + ``dataMask``, which go through the same mask functions as
  the STAC backend; and a Copernicus DEM 30 m request (bilinear).

Credentials come from the settings, then ``SH_CLIENT_ID`` / ``SH_CLIENT_SECRET``, then the
sentinelhub config file; the secret is never logged or shown (:class:`MaskedSHConfig`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import requests
import shapely
from affine import Affine
from oauthlib.oauth2.rfc6749.errors import OAuth2Error
from sentinelhub import (
    CRS,
    BBox,
    DataCollection,
    Geometry,
    MimeType,
    MosaickingOrder,
    ResamplingType,
    SentinelHubCatalog,
    SentinelHubRequest,
    SentinelHubStatistical,
    SHConfig,
)
from sentinelhub.exceptions import DownloadFailedException
from shapely.geometry import shape

from glacimap.errors import ConfigError, FetchError, InvalidInputError, NotImplementedYetError
from glacimap.fetch import FetchResult, fetch_params, finish_run, optical_sensors, plan_window, prepare_inventory
from glacimap.fetch.chips import (
    SCORE_RESOLUTION,
    FetchParams,
    assemble_chip,
    glacier_grid,
    project,
)
from glacimap.fetch.harmonise import (
    QA_CLOUD_BITS,
    QA_FILL_BIT,
    SCL_CLOUD_CLASSES,
    SCL_NODATA_CLASSES,
    is_slc_off,
    parse_datetime,
    qa_pixel_masks,
    scl_masks,
)
from glacimap.fetch.plan import CandidateScore, GlacierJob, Scene
from glacimap.fetch.profiles import OPTICAL_BANDS, Sensor
from glacimap.fetch.search import footprint_coverage
from glacimap.fetch.select import candidate_score
from glacimap.parallel import Task, TaskOutcome
from glacimap.rasters import Grid
from glacimap.settings import FetchSettings
from glacimap.workspace import Workspace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

SH_BASE_URL = "https://services.sentinel-hub.com"
SH_TOKEN_URL = "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
CDSE_BASE_URL = "https://sh.dataspace.copernicus.eu"
CDSE_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
ENV_CLIENT_ID = "SH_CLIENT_ID"
ENV_CLIENT_SECRET = "SH_CLIENT_SECRET"
ENV_PROFILE = "SH_PROFILE"
DEFAULT_PROFILE = "default-profile"
#: Items per Catalog API page (the service's maximum is 100).
CATALOG_PAGE = 100
DEM_COLLECTION = "DEM_COPERNICUS_30"
#: The Process API's largest output, pixels per side; larger chips are requested in pieces.
PROCESS_MAX_PX = 2500
_MASKED = "********"


# -- credentials ---------------------------------------------------------------------------------
class MaskedSHConfig(SHConfig):
    """An :class:`~sentinelhub.SHConfig` whose ``repr`` / ``str`` hide credentials completely.

    sentinelhub masks all but the last four characters of a long secret; this shows none.
    """

    def _mask_credentials(self, value: str) -> str:
        return _MASKED if value else ""


class _RedactCredentials(logging.Filter):
    """Blank out log records that would show an OAuth request body, token or auth header.

    requests-oauthlib logs the token request body (with the client secret) and the token at
    DEBUG; glacimap's CLI never shows third-party DEBUG records, but API users might.
    """

    MARKERS = ("client_secret", "access_token", "Bearer ", "Authorization")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        if any(marker in text for marker in self.MARKERS):
            record.msg = "[record redacted by glacimap: it held Sentinel Hub credentials]"
            record.args = ()
        return True


_REDACTING_LOGGERS = ("requests_oauthlib.oauth2_session", "requests_oauthlib")


def _install_redaction() -> None:
    for name in _REDACTING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactCredentials) for f in logger.filters):
            logger.addFilter(_RedactCredentials())


def _config_file_values(environ: Mapping[str, str]) -> tuple[dict[str, Any], Path, str]:
    """The chosen profile of the sentinelhub config file (empty when there is none); never writes it."""
    path = Path(SHConfig.get_config_location())
    explicit = environ.get(ENV_PROFILE)
    profile = explicit or DEFAULT_PROFILE
    if not path.exists():
        if explicit:
            raise ConfigError(f"{ENV_PROFILE}={explicit} but there is no sentinelhub config file at {path}")
        return {}, path, profile
    try:
        with path.open("rb") as handle:
            profiles = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable sentinelhub config file ({exc})") from exc
    if profile not in profiles:
        if explicit:
            raise ConfigError(f"{path}: no profile {profile!r} (from {ENV_PROFILE}); it has {sorted(profiles)}")
        return {}, path, profile
    known = {f.name for f in fields(SHConfig)}
    values = dict(profiles[profile])
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: profile {profile!r} has unknown keys {unknown}")
    return values, path, profile


def sh_config(settings: FetchSettings, environ: Mapping[str, str] | None = None) -> MaskedSHConfig:
    """The Sentinel Hub configuration of a fetch run.

    Each value comes from the first of: the settings (``sh_client_id``, ``sh_client_secret``,
    ``sh_base_url``: ``GLACIMAP_SH_*`` or the glacimap config file), the
    ``SH_CLIENT_ID`` / ``SH_CLIENT_SECRET`` environment variables, the sentinelhub config file
    (profile ``SH_PROFILE`` or ``default-profile``), sentinelhub's defaults. With the Copernicus
    Data Space base URL the token URL becomes CDSE's unless the config file names one.
    """
    environ = os.environ if environ is None else environ
    values, path, profile = _config_file_values(environ)
    for key, variable in (("sh_client_id", ENV_CLIENT_ID), ("sh_client_secret", ENV_CLIENT_SECRET)):
        if environ.get(variable):
            values[key] = environ[variable]
    if settings.sh_client_id:
        values["sh_client_id"] = settings.sh_client_id
    if settings.sh_client_secret is not None and settings.sh_client_secret.get_secret_value():
        values["sh_client_secret"] = settings.sh_client_secret.get_secret_value()
    if settings.sh_base_url:
        values["sh_base_url"] = settings.sh_base_url
    values["sh_base_url"] = str(values.get("sh_base_url", SH_BASE_URL)).rstrip("/")
    if values["sh_base_url"] == CDSE_BASE_URL and values.get("sh_token_url", SH_TOKEN_URL) == SH_TOKEN_URL:
        values["sh_token_url"] = CDSE_TOKEN_URL
    missing = [key for key in ("sh_client_id", "sh_client_secret") if not values.get(key)]
    if missing:
        raise ConfigError(
            f"Sentinel Hub credentials are missing ({', '.join(missing)}): set {ENV_CLIENT_ID} and "
            f"{ENV_CLIENT_SECRET} (or GLACIMAP_SH_CLIENT_ID / GLACIMAP_SH_CLIENT_SECRET), or "
            f"sh_client_id / sh_client_secret in profile {profile!r} of {path}"
        )
    _install_redaction()
    try:
        return MaskedSHConfig(use_defaults=True, **values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid Sentinel Hub configuration from {path} / settings: {exc}") from exc


# -- products and collections --------------------------------------------------------------------
@dataclass(frozen=True)
class ShProduct:
    """One Sentinel Hub optical collection and how glacimap reads it."""

    key: str  # Catalog / Process API id, also stored as Scene.collection
    sensor: Sensor
    collection: str  # attribute of sentinelhub.DataCollection
    bands: tuple[str, ...]  # Sentinel Hub band names of OPTICAL_BANDS, in that order
    mask: str  # "SCL" or "BQA" (= QA_PIXEL)
    first: date
    last: date | None = None
    platform: str | None = None  # the platform of every acquisition, when there is only one

    @property
    def green(self) -> str:
        return self.bands[OPTICAL_BANDS.index("green")]

    @property
    def swir16(self) -> str:
        return self.bands[OPTICAL_BANDS.index("swir16")]

    @property
    def harmonise(self) -> bool:
        """Sentinel-2 values are harmonised across processing baselines (the 04.00 offset)."""
        return self.sensor == "s2"


_LANDSAT_TM_BANDS = ("B01", "B02", "B03", "B04", "B05", "B07")
PRODUCTS: dict[str, ShProduct] = {
    p.key: p
    for p in (
        ShProduct("sentinel-2-l2a", "s2", "SENTINEL2_L2A", ("B02", "B03", "B04", "B08", "B11", "B12"), "SCL",
                  date(2015, 7, 4)),
        ShProduct("landsat-ot-l2", "landsat", "LANDSAT_OT_L2", ("B02", "B03", "B04", "B05", "B06", "B07"), "BQA",
                  date(2013, 3, 18)),
        ShProduct("landsat-etm-l2", "landsat", "LANDSAT_ETM_L2", _LANDSAT_TM_BANDS, "BQA", date(1999, 4, 15),
                  platform="landsat-7"),
        ShProduct("landsat-tm-l2", "landsat", "LANDSAT_TM_L2", _LANDSAT_TM_BANDS, "BQA", date(1982, 8, 22),
                  last=date(2013, 6, 5)),
    )
}
#: The product a bare sensor name stands for.
SENSOR_PRODUCT = {"s2": "sentinel-2-l2a", "landsat": "landsat-ot-l2"}


def get_product(name: str) -> ShProduct:
    """A product by Catalog id (``sentinel-2-l2a``) or sensor (``s2``, ``landsat`` = Landsat 8/9)."""
    key = SENSOR_PRODUCT.get(name, name)
    if key not in PRODUCTS:
        raise InvalidInputError(f"no Sentinel Hub product {name!r}; known: {sorted(PRODUCTS)} or {sorted(SENSOR_PRODUCT)}")
    return PRODUCTS[key]


def products_for(sensor: str, start: date, end: date) -> list[ShProduct]:
    """The products of ``sensor`` that acquired data in the window (all Landsat missions for ``landsat``)."""
    return [
        p for p in PRODUCTS.values()
        if p.sensor == sensor and p.first <= end and (p.last is None or p.last >= start)
    ]


def _slug(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", url.split("://", 1)[-1]).strip("_").upper()


def collection_for(product: str, config: SHConfig) -> DataCollection:
    """The data collection of a product (or ``dem``) on the configured deployment.

    Built-in collections carry their own service URL (Landsat lives on the US-West deployment of
    Sentinel Hub) and ignore ``config.sh_base_url``; for any other deployment, such as the
    Copernicus Data Space, a copy pointing at ``sh_base_url`` is defined.
    """
    name = DEM_COLLECTION if product == "dem" else get_product(product).collection
    builtin: DataCollection = getattr(DataCollection, name)
    base = config.sh_base_url.rstrip("/")
    if base == SH_BASE_URL or base == (builtin.service_url or "").rstrip("/"):
        return builtin
    return builtin.define_from(f"{name}_AT_{_slug(base)}", service_url=base)


def _service_config(config: SHConfig, collection: DataCollection) -> SHConfig:
    """``config`` pointed at the deployment serving ``collection`` (for the Catalog API)."""
    if collection.service_url and collection.service_url.rstrip("/") != config.sh_base_url.rstrip("/"):
        config = config.copy()
        config.sh_base_url = collection.service_url
    return config


def _utm_crs(grid_crs: str) -> CRS:
    return CRS(grid_crs)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _day_range(first: date, last: date) -> tuple[datetime, datetime]:
    """UTC midnight of ``first`` to UTC midnight after ``last``: whole days, as the statistics use."""
    return _day_start(first), _day_start(last + timedelta(days=1))


def _cloud_cap(max_tile_cloud: float | None) -> float | None:
    """The tile-cloud cap in percent, or None when it excludes nothing."""
    return None if max_tile_cloud is None or max_tile_cloud >= 100 else float(max_tile_cloud)


# -- search and planning -------------------------------------------------------------------------
def scene_from_feature(feature: Mapping[str, Any], product: ShProduct) -> Scene:
    """A tile :class:`Scene` from a Catalog API feature (hrefs: ``{"acquired": day}``)."""
    props = feature.get("properties", {})
    when = parse_datetime(props["datetime"])
    geometry = shape(feature["geometry"]) if feature.get("geometry") else shapely.box(*feature["bbox"])
    cloud = props.get("eo:cloud_cover")
    platform = props.get("platform") or product.platform
    return Scene(
        id=feature["id"],
        collection=product.key,
        sensor=product.sensor,
        datetime=when,
        hrefs={"acquired": when.date().isoformat()},
        footprint_wkb=shapely.to_wkb(geometry),
        tile_cloud=float(cloud) if cloud is not None else None,
        platform=str(platform).lower().replace("_", "-") if platform else None,
        properties={},
    )


def catalog_search(
    config: SHConfig,
    product: ShProduct,
    bbox: Sequence[float],
    start: date,
    end: date,
    max_tile_cloud: float | None = None,
) -> Any:
    """The Catalog API search (a lazy iterator: nothing is requested until it is iterated)."""
    collection = collection_for(product.key, config)
    catalog = SentinelHubCatalog(config=_service_config(config, collection))
    cap = _cloud_cap(max_tile_cloud)
    return catalog.search(
        collection,
        bbox=BBox(tuple(bbox), crs=CRS.WGS84),
        time=_day_range(start, end),
        filter=f"eo:cloud_cover <= {cap:g}" if cap is not None else None,
        limit=CATALOG_PAGE,
    )


def search_scenes_sh(
    config: SHConfig,
    sensor: Sensor,
    bbox: Sequence[float],
    start: date,
    end: date,
    max_tile_cloud: float | None = None,
) -> list[Scene]:
    """Catalog tiles of ``sensor`` intersecting ``bbox`` (lon/lat) between ``start`` and ``end``."""
    scenes: list[Scene] = []
    for product in products_for(sensor, start, end):
        search = catalog_search(config, product, bbox, start, end, max_tile_cloud)
        features = _download(lambda: list(search), f"Sentinel Hub Catalog search in {product.key}", config)
        cap = _cloud_cap(max_tile_cloud)
        kept = [scene_from_feature(feature, product) for feature in features]
        # re-checked here, as the STAC backend does, in case the service did not apply the filter
        kept = [s for s in kept if cap is None or s.tile_cloud is None or s.tile_cloud <= cap]
        log.info("%d %s tiles in %s at %s", len(kept), sensor, product.key, search.url)
        scenes += kept
    return scenes


def acquisitions(tiles: Sequence[Scene], area: shapely.Geometry) -> list[Scene]:
    """One candidate per product and UTC day from the tiles intersecting ``area`` (EPSG:4326).

    The candidate's footprint is the union of its tiles', its tile cloud the mean of theirs.
    """
    groups: dict[tuple[str, date], list[Scene]] = {}
    for tile in tiles:
        if footprint_coverage(tile, area) > 0:
            groups.setdefault((tile.collection, tile.datetime.date()), []).append(tile)
    out = []
    for (collection, day), members in sorted(groups.items()):
        members = sorted(members, key=lambda s: s.id)
        clouds = [s.tile_cloud for s in members if s.tile_cloud is not None]
        platforms = sorted({s.platform for s in members if s.platform})
        out.append(
            Scene(
                id="+".join(s.id for s in members),
                collection=collection,
                sensor=members[0].sensor,
                datetime=min(s.datetime for s in members),
                hrefs={"acquired": day.isoformat()},
                footprint_wkb=shapely.to_wkb(shapely.union_all([shapely.from_wkb(s.footprint_wkb) for s in members])),
                tile_cloud=round(float(np.mean(clouds)), 4) if clouds else None,
                platform="+".join(platforms) or None,
                properties={"tiles": len(members)},
            )
        )
    return out


def plan_jobs_sh(
    inventory: gpd.GeoDataFrame, tiles: Sequence[Scene], settings: FetchSettings
) -> tuple[list[GlacierJob], dict[str, str]]:
    """One job per glacier with its N least tile-cloudy covering acquisitions; glaciers without any."""
    jobs, unplanned = [], {}
    degree_buffer = settings.buffer / 111_000.0
    for row in inventory.itertuples():
        geometry = row.geometry
        grid, _ = glacier_grid(geometry, settings.resolution, settings.chip_margin)
        area = geometry.buffer(degree_buffer)
        covering = [a for a in acquisitions(tiles, area) if footprint_coverage(a, area) >= settings.min_coverage]
        covering.sort(key=lambda s: (s.tile_cloud if s.tile_cloud is not None else np.inf, s.id))
        if not covering:
            unplanned[row.glacier_id] = "no acquisition in the window covers the glacier"
            continue
        jobs.append(
            GlacierJob(
                glacier_id=row.glacier_id,
                geometry_wkb=shapely.to_wkb(geometry),
                grid=grid,
                candidates=tuple(covering[: settings.candidates]),
            )
        )
    return jobs, unplanned


# -- evalscripts ---------------------------------------------------------------------------------
def _evalscript(setup: dict[str, Any], body: str, product: ShProduct | None = None) -> str:
    """A version-3 evalscript; ``setup`` is JSON (also a valid JavaScript object literal)."""
    parts = ["//VERSION=3", f"function setup() {{\n  return {json.dumps(setup)};\n}}"]
    if product is not None:
        parts.append(_mask_functions(product))
    parts.append(body.strip())
    return "\n".join(parts) + "\n"


def _mask_functions(product: ShProduct) -> str:
    """``isValid(s)`` and ``isCloud(s)`` in JavaScript, from the same constants as harmonise.py."""
    if product.mask == "SCL":
        return (
            f"var NODATA = {json.dumps(list(SCL_NODATA_CLASSES))};\n"
            f"var CLOUD = {json.dumps(list(SCL_CLOUD_CLASSES))};\n"
            "function isValid(s) { return s.dataMask === 1 && NODATA.indexOf(s.SCL) < 0; }\n"
            "function isCloud(s) { return CLOUD.indexOf(s.SCL) >= 0; }"
        )
    return (
        f"var FILL_BIT = {QA_FILL_BIT};\n"
        f"var CLOUD_BITS = {json.dumps(list(QA_CLOUD_BITS))};\n"
        "function bit(value, index) { return (value >> index) & 1; }\n"
        "function isValid(s) { return s.dataMask === 1 && s.BQA !== 0 && bit(s.BQA, FILL_BIT) === 0; }\n"
        "function isCloud(s) {\n"
        "  for (var i = 0; i < CLOUD_BITS.length; i++) { if (bit(s.BQA, CLOUD_BITS[i]) === 1) { return true; } }\n"
        "  return false;\n"
        "}"
    )


def cloud_evalscript(product: ShProduct) -> str:
    """Statistical API: per pixel 1 for cloud, 0 for clear; dataMask = valid data."""
    setup = {
        "input": [{"bands": [product.mask, "dataMask"], "units": ["DN", "DN"]}],
        "output": [{"id": "cloud", "bands": 1, "sampleType": "FLOAT32"}, {"id": "dataMask", "bands": 1}],
    }
    body = """
function evaluatePixel(s) {
  var valid = isValid(s);
  return {cloud: [valid && isCloud(s) ? 1 : 0], dataMask: [valid ? 1 : 0]};
}"""
    return _evalscript(setup, body, product)


def snow_evalscript(product: ShProduct) -> str:
    """Statistical API: NDSI of clear pixels (dataMask = valid, not cloud, index defined)."""
    green, swir = product.green, product.swir16
    setup = {
        "input": [{"bands": [green, swir, product.mask, "dataMask"], "units": ["REFLECTANCE", "REFLECTANCE", "DN", "DN"]}],
        "output": [{"id": "ndsi", "bands": 1, "sampleType": "FLOAT32"}, {"id": "dataMask", "bands": 1}],
    }
    body = f"""
function evaluatePixel(s) {{
  var total = s.{green} + s.{swir};
  var clear = isValid(s) && !isCloud(s) && Math.abs(total) >= 1e-6;
  return {{ndsi: [clear ? (s.{green} - s.{swir}) / total : 0], dataMask: [clear ? 1 : 0]}};
}}"""
    return _evalscript(setup, body, product)


def optical_evalscript(product: ShProduct) -> str:
    """Process API: ``bands`` (FLOAT32 reflectance, NaN outside data) and ``masks`` (mask band, dataMask)."""
    setup = {
        "input": [{
            "bands": [*product.bands, product.mask, "dataMask"],
            "units": [*(["REFLECTANCE"] * len(product.bands)), "DN", "DN"],
        }],
        "output": [
            {"id": "bands", "bands": len(product.bands), "sampleType": "FLOAT32"},
            {"id": "masks", "bands": 2, "sampleType": "UINT16"},
        ],
    }
    values = ", ".join(f"s.{band}" for band in product.bands)
    nans = ", ".join(["NaN"] * len(product.bands))
    body = f"""
function evaluatePixel(s) {{
  if (s.dataMask !== 1) {{ return {{bands: [{nans}], masks: [0, 0]}}; }}
  return {{bands: [{values}], masks: [s.{product.mask}, 1]}};
}}"""
    return _evalscript(setup, body)


DEM_EVALSCRIPT = _evalscript(
    {"input": [{"bands": ["DEM", "dataMask"]}], "output": [{"id": "default", "bands": 2, "sampleType": "FLOAT32"}]},
    """
function evaluatePixel(s) {
  return s.dataMask === 1 ? [s.DEM, 1] : [NaN, 0];
}""",
)


# -- requests ------------------------------------------------------------------------------------
def _input_data(
    product: ShProduct, config: SHConfig, time_interval: tuple[datetime, datetime] | None, max_tile_cloud: float | None
) -> Any:
    other: dict[str, Any] = {}
    cap = _cloud_cap(max_tile_cloud)
    if cap is not None:
        # Whole percent, rounded up, so no tile the Catalog search kept is left out of the mosaic
        # (sentinelhub's ``maxcc`` truncates, and 0.29 * 100 truncates to 28).
        other["dataFilter"] = {"maxCloudCoverage": math.ceil(cap)}
    if product.harmonise:
        other["processing"] = {"harmonizeValues": True}
    return SentinelHubRequest.input_data(
        collection_for(product.key, config),
        time_interval=time_interval,
        mosaicking_order=MosaickingOrder.LEAST_CC,
        upsampling=ResamplingType.NEAREST,
        downsampling=ResamplingType.NEAREST,
        other_args=other or None,
    )


def statistics_request(
    evalscript: str,
    geometry: shapely.Geometry,
    crs: str,
    product: ShProduct,
    first: date,
    last: date,
    config: SHConfig,
    *,
    resolution: float,
    max_tile_cloud: float | None = None,
) -> SentinelHubStatistical:
    """A Statistical API request: daily statistics of ``evalscript`` over ``geometry`` (in ``crs``).

    The resolution is coarsened where the geometry would span more than :data:`PROCESS_MAX_PX`
    pixels (glaciers longer than 50 km at 20 m).
    """
    days = _day_range(first, last)
    left, bottom, right, top = geometry.bounds
    resolution = max(resolution, math.ceil(max(right - left, top - bottom) / PROCESS_MAX_PX))
    return SentinelHubStatistical(
        aggregation=SentinelHubStatistical.aggregation(
            evalscript=evalscript, time_interval=days, aggregation_interval="P1D", resolution=(resolution, resolution)
        ),
        input_data=[_input_data(product, config, days, max_tile_cloud)],
        geometry=Geometry(geometry, crs=_utm_crs(crs)),
        config=config,
    )


def cloud_statistics_request(
    area: shapely.Geometry, crs: str, product: ShProduct, first: date, last: date, config: SHConfig,
    *, resolution: float | None = None, max_tile_cloud: float | None = None,
) -> SentinelHubStatistical:
    """Daily cloud fraction and coverage over glacier + buffer (``area``, in the UTM ``crs``)."""
    return statistics_request(
        cloud_evalscript(product), area, crs, product, first, last, config,
        resolution=resolution or SCORE_RESOLUTION[product.sensor], max_tile_cloud=max_tile_cloud,
    )


def snow_statistics_request(
    ring: shapely.Geometry, crs: str, product: ShProduct, first: date, last: date, config: SHConfig,
    *, resolution: float | None = None, max_tile_cloud: float | None = None,
) -> SentinelHubStatistical:
    """Daily mean NDSI of the clear pixels of the off-glacier ring."""
    return statistics_request(
        snow_evalscript(product), ring, crs, product, first, last, config,
        resolution=resolution or SCORE_RESOLUTION[product.sensor], max_tile_cloud=max_tile_cloud,
    )


def split_grid(grid: Grid, limit: int | None = None) -> list[tuple[slice, slice, Grid]]:
    """Pieces of ``grid`` of at most ``limit`` pixels a side (rows, columns, piece grid)."""
    limit = limit or PROCESS_MAX_PX
    pieces = []
    for row in range(0, grid.height, limit):
        for col in range(0, grid.width, limit):
            height, width = min(limit, grid.height - row), min(limit, grid.width - col)
            transform = grid.transform @ Affine.translation(col, row)
            pieces.append((slice(row, row + height), slice(col, col + width), Grid(grid.crs, transform, height, width)))
    return pieces


def _grid_bbox(grid: Grid) -> BBox:
    return BBox(grid.bounds, crs=_utm_crs(grid.crs))


def process_request(
    grid: Grid, when: date, product: str, config: SHConfig, *, max_tile_cloud: float | None = None
) -> SentinelHubRequest:
    """Process API request for one day's mosaic (least cloudy tile first) on exactly ``grid``."""
    spec = get_product(product)
    return SentinelHubRequest(
        evalscript=optical_evalscript(spec),
        input_data=[_input_data(spec, config, _day_range(when, when), max_tile_cloud)],
        responses=[
            SentinelHubRequest.output_response("bands", MimeType.TIFF),
            SentinelHubRequest.output_response("masks", MimeType.TIFF),
        ],
        bbox=_grid_bbox(grid),
        size=(grid.width, grid.height),
        config=config,
    )


def dem_request(grid: Grid, config: SHConfig) -> SentinelHubRequest:
    """Process API request for the Copernicus DEM (30 m) on ``grid``, bilinear."""
    return SentinelHubRequest(
        evalscript=DEM_EVALSCRIPT,
        input_data=[
            SentinelHubRequest.input_data(
                collection_for("dem", config), upsampling=ResamplingType.BILINEAR, downsampling=ResamplingType.BILINEAR
            )
        ],
        responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
        bbox=_grid_bbox(grid),
        size=(grid.width, grid.height),
        config=config,
    )


def _download(action: Callable[[], Any], what: str, config: SHConfig) -> Any:
    """Run a download; service failures become FetchError, rejected credentials ConfigError."""
    try:
        return action()
    except OAuth2Error as exc:
        raise ConfigError(
            f"Sentinel Hub at {config.sh_token_url} rejected the credentials ({exc.error}); "
            f"check {ENV_CLIENT_ID} / {ENV_CLIENT_SECRET} and the base URL {config.sh_base_url}"
        ) from exc
    except (DownloadFailedException, requests.RequestException) as exc:
        raise FetchError(f"{what} failed ({exc})") from exc


def _channels_first(array: np.ndarray, what: str, grid: Grid) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[np.newaxis]
    elif array.ndim == 3:
        array = np.moveaxis(array, -1, 0)
    if array.ndim != 3 or array.shape[1:] != grid.shape:
        raise FetchError(f"{what}: Sentinel Hub returned shape {np.shape(array)}, expected {grid.shape} + bands")
    return array


def _response(data: Any, identifier: str) -> np.ndarray:
    if isinstance(data, Mapping):
        for name in (f"{identifier}.tif", identifier):
            if name in data:
                return data[name]
        raise FetchError(f"Sentinel Hub response lacks {identifier}.tif (has {sorted(data)})")
    return data


# -- statistics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayStats:
    """Statistics of one output over one day: pixels in the geometry, pixels without data, mean."""

    samples: int
    no_data: int
    mean: float
    error: str | None = None

    @property
    def valid(self) -> int:
        return max(0, self.samples - self.no_data)


def parse_statistics(response: Mapping[str, Any], output: str) -> dict[date, DayStats]:
    """Per-day statistics of the first band of ``output`` in a Statistical API response."""
    days: dict[date, DayStats] = {}
    for entry in response.get("data", []):
        day = parse_datetime(entry["interval"]["from"]).date()
        if "error" in entry:
            days[day] = DayStats(0, 0, math.nan, str(entry["error"].get("type", "error")))
            continue
        bands = entry.get("outputs", {}).get(output, {}).get("bands", {})
        if not bands:
            raise FetchError(f"Sentinel Hub statistics for {day} lack output {output!r}")
        stats = next(iter(bands.values()))["stats"]
        mean = stats.get("mean")
        days[day] = DayStats(
            samples=int(stats.get("sampleCount", 0)),
            no_data=int(stats.get("noDataCount", 0)),
            mean=float(mean) if isinstance(mean, (int, float)) else math.nan,
        )
    return days


def _slc_off_correction(stats: DayStats, footprint_fraction: float) -> tuple[float, float]:
    """(coverage, cloud) of a Landsat 7 SLC-off day with scan-line gaps counted as cloud.

    The Statistical API reports gaps as no data; pixels outside the footprint are no data too,
    so gaps = no data - (1 - footprint fraction) x pixels, as the STAC backend counts them.
    """
    n = stats.samples
    gaps = max(0.0, stats.no_data - (1.0 - footprint_fraction) * n)
    valid = stats.valid + gaps
    coverage = valid / n if n else 0.0
    cloudy = (stats.mean if stats.valid else 0.0) * stats.valid + gaps
    return coverage, (cloudy / valid if valid else 1.0)


def score_acquisition(
    scene: Scene,
    job: GlacierJob,
    area_stats: Mapping[date, DayStats],
    ring_stats: Mapping[date, DayStats],
    params: FetchParams,
    area_utm: shapely.Geometry | None = None,
) -> CandidateScore:
    """A candidate's score from its day's statistics (same definitions as chips.score_scene)."""
    day = date.fromisoformat(scene.hrefs["acquired"])
    stats = area_stats.get(day)
    rejected: str | None = None
    if stats is None or stats.error:
        coverage, cloud = 0.0, 1.0
        rejected = f"no statistics ({stats.error})" if stats is not None else None
    elif is_slc_off(PRODUCTS[scene.collection].platform, day) and area_utm is not None:
        footprint = project(shapely.from_wkb(scene.footprint_wkb), "EPSG:4326", job.grid.crs)
        fraction = shapely.intersection(footprint, area_utm).area / area_utm.area if area_utm.area else 0.0
        coverage, cloud = _slc_off_correction(stats, fraction)
    else:
        coverage = stats.valid / stats.samples if stats.samples else 0.0
        cloud = stats.mean if stats.valid and math.isfinite(stats.mean) else 1.0
    ring = ring_stats.get(day)
    snow = ring.mean if ring is not None and not ring.error and ring.valid else math.nan
    return candidate_score(job.glacier_id, scene, day, coverage, cloud, snow, params.target, params.min_coverage,
                           params.max_cloud, rejected)


def score_candidates(
    job: GlacierJob, params: FetchParams, config: SHConfig, max_tile_cloud: float | None = None
) -> list[CandidateScore]:
    """Score every candidate of a glacier: two Statistical API calls per product."""
    outline = project(shapely.from_wkb(job.geometry_wkb), "EPSG:4326", job.grid.crs)
    area = outline.buffer(params.buffer)
    ring = area.difference(outline)
    scores = {}
    by_product: dict[str, list[Scene]] = {}
    for scene in job.candidates:
        by_product.setdefault(scene.collection, []).append(scene)
    for key, scenes in sorted(by_product.items()):
        product = PRODUCTS[key]
        days = [date.fromisoformat(s.hrefs["acquired"]) for s in scenes]
        first, last = min(days), max(days)
        what = f"glacier {job.glacier_id}: Sentinel Hub statistics of {key}"
        request = cloud_statistics_request(area, job.grid.crs, product, first, last, config, max_tile_cloud=max_tile_cloud)
        area_stats = parse_statistics(_download(lambda: request.get_data()[0], what, config), "cloud")
        ring_stats: dict[date, DayStats] = {}
        if not ring.is_empty and ring.area > 0:
            request = snow_statistics_request(ring, job.grid.crs, product, first, last, config, max_tile_cloud=max_tile_cloud)
            ring_stats = parse_statistics(_download(lambda: request.get_data()[0], what, config), "ndsi")
        for scene in scenes:
            scores[scene.id] = score_acquisition(scene, job, area_stats, ring_stats, params, area)
    return [scores[scene.id] for scene in job.candidates]


# -- chips ---------------------------------------------------------------------------------------
def optical_layers_sh(
    scene: Scene, grid: Grid, config: SHConfig, max_tile_cloud: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(bands, usable) of one acquisition on ``grid``: reflectance (6, rows, cols), NaN without data.

    Chips wider or taller than :data:`PROCESS_MAX_PX` pixels are requested in pieces.
    """
    product = PRODUCTS[scene.collection]
    day = date.fromisoformat(scene.hrefs["acquired"])
    what = f"Sentinel Hub Process API for {scene.id}"
    bands = np.full((len(OPTICAL_BANDS), *grid.shape), np.nan, dtype=np.float32)
    masks = np.zeros((2, *grid.shape), dtype=np.uint16)
    for rows, cols, piece in split_grid(grid):
        request = process_request(piece, day, product.key, config, max_tile_cloud=max_tile_cloud)
        data = _download(lambda: request.get_data()[0], what, config)
        piece_bands = _channels_first(_response(data, "bands"), what, piece)
        piece_masks = _channels_first(_response(data, "masks"), what, piece)
        if piece_bands.shape[0] != len(OPTICAL_BANDS) or piece_masks.shape[0] != 2:
            raise FetchError(f"{what}: expected {len(OPTICAL_BANDS)} bands and 2 masks, "
                             f"got {piece_bands.shape[0]} and {piece_masks.shape[0]}")
        bands[:, rows, cols] = piece_bands
        masks[:, rows, cols] = piece_masks
    has_data = masks[1] == 1
    if product.mask == "SCL":
        valid, cloud = scl_masks(masks[0].astype(np.uint8))
    else:
        valid, cloud = qa_pixel_masks(masks[0].astype(np.uint16))
    valid &= has_data
    bands[:, ~has_data] = np.nan
    usable = valid & ~cloud & np.isfinite(bands).all(axis=0)
    return bands, usable


def elevation_sh(grid: Grid, config: SHConfig) -> np.ndarray:
    """Copernicus DEM elevation on ``grid`` (NaN without data)."""
    what = "Sentinel Hub Process API for the Copernicus DEM"
    elevation = np.full(grid.shape, np.nan, dtype=np.float32)
    for rows, cols, piece in split_grid(grid):
        request = dem_request(piece, config)
        layers = _channels_first(_download(lambda: request.get_data()[0], what, config), what, piece)
        if layers.shape[0] != 2:
            raise FetchError(f"{what}: expected 2 bands (DEM, dataMask), got {layers.shape[0]}")
        elevation[rows, cols] = np.where(layers[1] == 1, layers[0], np.nan)
    return elevation


def build_chip_sh(
    job: GlacierJob, params: FetchParams, output: Path, config: SHConfig, max_tile_cloud: float | None = None
) -> dict[str, Any]:
    """Score the candidates, choose, request and write the chip; return its selection record.

    The chip and its record have the layout of :func:`glacimap.fetch.chips.build_chip`.
    """
    grid = job.grid
    outline = project(shapely.from_wkb(job.geometry_wkb), "EPSG:4326", grid.crs)
    scores = score_candidates(job, params, config, max_tile_cloud)
    dem = collection_for("dem", config)
    return assemble_chip(
        job, params, output, outline, scores,
        optical=lambda scene: optical_layers_sh(scene, grid, config, max_tile_cloud),
        elevation=lambda: elevation_sh(grid, config),
        dem_ids=[f"{dem.api_id}:{dem.dem_instance}"],
    )


# -- the run -------------------------------------------------------------------------------------
def _fetch_task_sh(payload: dict[str, Any], output: Path) -> dict[str, Any]:
    _install_redaction()  # also on dask workers, whose logging is configured separately
    return build_chip_sh(payload["job"], payload["params"], output, payload["config"], payload["max_tile_cloud"])


def run_fetch_sentinelhub(
    settings: FetchSettings, progress: Callable[[TaskOutcome, int], None] | None = None
) -> FetchResult:
    """:func:`glacimap.fetch.run_fetch` with ``--backend sentinelhub`` (same outputs and result)."""
    if settings.aoi is not None:
        raise NotImplementedYetError("fetch --aoi (wall-to-wall mode) is not implemented yet; use --inventory")
    if "s1" in settings.sensors:
        raise NotImplementedYetError("--sensor s1 with --backend sentinelhub is not implemented yet; use --backend stac")
    config = sh_config(settings)
    workspace = Workspace(settings.work)
    inventory = prepare_inventory(settings, workspace)
    start, end, target, bbox = plan_window(settings, inventory)
    tiles: list[Scene] = []
    for sensor in optical_sensors(settings.sensors, settings.year):
        tiles += search_scenes_sh(config, sensor, bbox, start, end, settings.max_tile_cloud)
    jobs, unplanned = plan_jobs_sh(inventory, tiles, settings)
    params = fetch_params(settings, target)
    tasks = [
        Task(job.glacier_id, workspace.chip(settings.year, job.glacier_id),
             {"job": job, "params": params, "config": config, "max_tile_cloud": settings.max_tile_cloud})
        for job in jobs
    ]
    return finish_run(tasks, _fetch_task_sh, unplanned, len(inventory), workspace, settings, progress)


__all__ = [
    "CDSE_BASE_URL",
    "CDSE_TOKEN_URL",
    "PRODUCTS",
    "DayStats",
    "MaskedSHConfig",
    "ShProduct",
    "acquisitions",
    "build_chip_sh",
    "catalog_search",
    "cloud_statistics_request",
    "collection_for",
    "dem_request",
    "get_product",
    "parse_statistics",
    "plan_jobs_sh",
    "process_request",
    "products_for",
    "run_fetch_sentinelhub",
    "score_candidates",
    "split_grid",
    "search_scenes_sh",
    "sh_config",
    "snow_statistics_request",
]
