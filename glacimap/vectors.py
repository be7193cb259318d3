"""GeoPackage I/O shared by every stage: named layers, CRS always set, atomic writes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import pyogrio
from pyogrio.errors import DataSourceError

from glacimap.errors import InputNotFoundError, InvalidInputError
from glacimap.workspace import atomic_path

#: Version of glacimap's own vector schemas, stored in every GeoPackage it writes.
SCHEMA_VERSION = "1"
#: Table holding glacimap's metadata (schema version) in its GeoPackages.
META_LAYER = "glacimap_meta"


def write_layers(path: Path | str, layers: Mapping[str, gpd.GeoDataFrame], overwrite: bool = True) -> Path:
    """Write several named layers into one GeoPackage, atomically.

    Every layer must have a CRS. A :data:`META_LAYER` table stores the schema version.
    """
    import pandas as pd

    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        for name, frame in layers.items():
            if frame.crs is None:
                raise InvalidInputError(f"{path}: layer '{name}' has no CRS; refusing to write it")
            frame.to_file(tmp, layer=name, driver="GPKG")
        meta = pd.DataFrame({"key": ["schema_version"], "value": [SCHEMA_VERSION]})
        pyogrio.write_dataframe(meta, tmp, layer=META_LAYER, driver="GPKG")
    return path


def read_layer(path: Path | str, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read one layer of a vector file; clear errors for a missing file, layer or CRS."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: vector file not found")
    try:
        available = [name for name, _ in pyogrio.list_layers(path) if name != META_LAYER]
        if layer is None:
            if not available:
                raise InvalidInputError(f"{path}: no vector layer")
            layer = available[0]
        elif layer not in available:
            raise InvalidInputError(f"{path}: no layer '{layer}' (layers: {available})")
        frame = gpd.read_file(path, layer=layer)
    except DataSourceError as exc:
        raise InvalidInputError(f"{path}: not a readable vector file ({exc})") from exc
    if frame.crs is None:
        raise InvalidInputError(f"{path}: layer {layer or 0} has no CRS; set one (e.g. with ogr2ogr -a_srs)")
    return frame
