"""The synthetic glacier world: a landscape with known truth, published like real archives.

``generate_world(WorldConfig(), "world")`` builds the terrain and glaciers of every year,
writes their truth, renders Sentinel-2, Landsat, Sentinel-1 and Copernicus DEM products from
them and publishes those as COGs behind a STAC catalogue (``world/stac``) that
:func:`serve_catalog` serves over HTTP. ``world/world.json`` (:func:`load_world`) says what
is in it, including the scene trap of each year. See docs/synthetic-world.md.
"""

from __future__ import annotations

from typing import Any

from glacimap.synthetic.model import (
    DEFAULT_YEARS,
    INVENTORY_YEAR,
    GlacierInfo,
    Landscape,
    WorldConfig,
    YearTruth,
)
from glacimap.synthetic.world import (
    SceneInfo,
    TrapInfo,
    WorldInfo,
    generate_world,
    load_world,
    render_world,
    toy_landscape,
)

# Imported on first use: the landscape generator, the truth writer, the figure (matplotlib)
# and the server (rustac, uvicorn) are heavier than what most callers need.
_LAZY = {
    "generate_landscape": "glacimap.synthetic.glaciers",
    "write_truth": "glacimap.synthetic.truth",
    "plot_world_year": "glacimap.synthetic.figure",
    "serve_catalog": "glacimap.synthetic.serve",
}

__all__ = [
    "DEFAULT_YEARS",
    "INVENTORY_YEAR",
    "GlacierInfo",
    "Landscape",
    "SceneInfo",
    "TrapInfo",
    "WorldConfig",
    "WorldInfo",
    "YearTruth",
    "generate_landscape",
    "generate_world",
    "load_world",
    "plot_world_year",
    "render_world",
    "serve_catalog",
    "toy_landscape",
    "write_truth",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glacimap.synthetic' has no attribute {name!r}")
