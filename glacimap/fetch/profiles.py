"""STAC server profiles: collection ids, asset keys, cloud-filter dialect and href signing.

A profile says how one archive publishes the products glacimap reads; everything after the
search works on glacimap's common band names (``blue green red nir swir16 swir22``, ``scl`` /
``qa_pixel``, ``vv vh``, ``elevation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Sensor = Literal["s2", "landsat", "s1", "dem"]
OPTICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")


@dataclass(frozen=True)
class Product:
    """One collection of a STAC server and how its assets map to common band names."""

    collection: str
    assets: dict[str, str]  # common name -> asset key
    cloud_property: str | None = "eo:cloud_cover"


@dataclass(frozen=True)
class StacProfile:
    """How a STAC API publishes the products glacimap reads."""

    name: str
    url: str
    products: dict[Sensor, Product] = field(default_factory=dict)
    #: "sign" where hrefs must be signed right before reading (Planetary Computer).
    signing: Literal["none", "planetary-computer"] = "none"
    #: requester-pays buckets (Earth Search's Landsat) need AWS_REQUEST_PAYER.
    requester_pays: bool = False


_S2_COMMON = {band: band for band in OPTICAL_BANDS} | {"scl": "scl"}
_LANDSAT = {"blue": "blue", "green": "green", "red": "red", "nir": "nir08", "swir16": "swir16",
            "swir22": "swir22", "qa_pixel": "qa_pixel"}

EARTH_SEARCH = StacProfile(
    name="earth-search",
    url="https://earth-search.aws.element84.com/v1",
    products={
        "s2": Product("sentinel-2-l2a", _S2_COMMON),
        "landsat": Product("landsat-c2-l2", _LANDSAT),
        "s1": Product("sentinel-1-grd", {"vv": "vv", "vh": "vh"}, cloud_property=None),
        "dem": Product("cop-dem-glo-30", {"elevation": "data"}, cloud_property=None),
    },
    requester_pays=True,
)

PLANETARY_COMPUTER = StacProfile(
    name="planetary-computer",
    url="https://planetarycomputer.microsoft.com/api/stac/v1",
    products={
        "s2": Product(
            "sentinel-2-l2a",
            {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11", "swir22": "B12", "scl": "SCL"},
        ),
        "landsat": Product("landsat-c2-l2", _LANDSAT),
        "s1": Product("sentinel-1-rtc", {"vv": "vv", "vh": "vh"}, cloud_property=None),
        "dem": Product("cop-dem-glo-30", {"elevation": "data"}, cloud_property=None),
    },
    signing="planetary-computer",
)

PROFILES: dict[str, StacProfile] = {p.name: p for p in (EARTH_SEARCH, PLANETARY_COMPUTER)}


def get_profile(name: str, url: str | None = None) -> StacProfile:
    """The named profile, pointed at ``url`` when given (e.g. a local mirror)."""
    profile = PROFILES[name]
    if url and url.rstrip("/") != profile.url:
        profile = StacProfile(profile.name, url.rstrip("/"), profile.products, profile.signing, profile.requester_pays)
    return profile
