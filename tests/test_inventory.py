"""Reading and normalising reference inventories."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, box

from glacimap.errors import InvalidInputError, UnsafeIdError
from glacimap.inventory import load_inventory, normalise_inventory, save_inventory

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _frame(ids: list, crs: str | None = "EPSG:32632", **columns) -> gpd.GeoDataFrame:
    geoms = [box(600_000 + 1000 * i, 5_200_000, 600_500 + 1000 * i, 5_200_500) for i in range(len(ids))]
    return gpd.GeoDataFrame({"RGIId": ids, **columns}, geometry=geoms, crs=crs)


def test_normalise_detects_id_and_reprojects() -> None:
    inv = normalise_inventory(_frame(["RGI60-11.00001", "RGI60-11.00002"], area=[1.0, 2.0]), "inv.shp")
    assert list(inv["glacier_id"]) == ["RGI60-11.00001", "RGI60-11.00002"]
    assert inv.crs.to_epsg() == 4326 and "area" in inv.columns and "RGIId" in inv.columns
    assert inv.geometry.is_valid.all()


def test_id_column_override_and_errors() -> None:
    frame = _frame(["a", "b"], name=["x", "y"])
    assert list(normalise_inventory(frame, "f", id_column="name")["glacier_id"]) == ["x", "y"]
    with pytest.raises(InvalidInputError, match="no column 'nope'"):
        normalise_inventory(frame, "f", id_column="nope")
    with pytest.raises(InvalidInputError, match="no glacier id column"):
        normalise_inventory(frame.drop(columns="RGIId"), "f")


def test_bad_inventories() -> None:
    with pytest.raises(InvalidInputError, match="no CRS"):
        normalise_inventory(_frame(["a"], crs=None), "f")
    with pytest.raises(UnsafeIdError, match="duplicated"):
        normalise_inventory(_frame(["a", "a"]), "f")
    with pytest.raises(InvalidInputError, match="empty id"):
        normalise_inventory(_frame(["a", ""]), "f")


def test_invalid_geometry_is_repaired() -> None:
    bowtie = Polygon([(600_000, 5_200_000), (601_000, 5_201_000), (601_000, 5_200_000), (600_000, 5_201_000)])
    frame = gpd.GeoDataFrame({"id": ["g"]}, geometry=[bowtie], crs="EPSG:32632")
    inv = normalise_inventory(frame, "f")
    assert inv.geometry.is_valid.all() and inv.geometry.iloc[0].geom_type in ("Polygon", "MultiPolygon")


def test_round_trip(tmp_path: Path) -> None:
    inv = normalise_inventory(_frame(["../../etc/x", "G2"]), "f")
    path = save_inventory(inv, tmp_path / "inventory.gpkg")
    back = load_inventory(path)
    assert list(back["glacier_id"]) == ["../../etc/x", "G2"]
    assert back["file_stem"].iloc[0] != "../../etc/x"


@pytest.mark.shared_data
def test_real_rgi_outlines() -> None:
    path = SHARED / "oetztal" / "rgi_oetztal.shp"
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    inv = load_inventory(path)
    assert len(inv) == 20 and inv["glacier_id"].str.startswith("RGI").all()
