"""Fetch's pure rules: harmonisation, cloud masks, windows, the selection rule, slope."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from glacimap.features import ndsi, slope_degrees
from glacimap.fetch import optical_sensors
from glacimap.fetch.harmonise import (
    is_slc_off,
    landsat_reflectance,
    qa_pixel_masks,
    s2_offset,
    s2_reflectance,
    scl_masks,
    to_db,
)
from glacimap.fetch.plan import CandidateScore
from glacimap.fetch.search import default_window, window_dates
from glacimap.fetch.select import eligibility, rank_candidates, selection_key


@pytest.mark.parametrize(
    ("baseline", "acquired", "offset"),
    [("05.10", date(2023, 9, 1), 1000), ("04.00", date(2022, 1, 25), 1000), ("03.01", date(2021, 8, 1), 0),
     (None, date(2023, 9, 1), 1000), (None, date(2019, 9, 1), 0), ("garbage", date(2019, 9, 1), 0)],
)
def test_s2_offset(baseline: str | None, acquired: date, offset: int) -> None:
    assert s2_offset(baseline, acquired) == offset


def test_s2_and_landsat_reflectance() -> None:
    dn = np.array([0, 1000, 6000, 10999], dtype=np.uint16)
    refl = s2_reflectance(dn, 1000)
    assert np.isnan(refl[0]) and refl[1] == 0 and refl[2] == pytest.approx(0.5) and refl[3] == pytest.approx(0.9999)
    assert s2_reflectance(dn, 0)[2] == pytest.approx(0.6)
    # Landsat C2 L2: reflectance 0.5 is DN (0.5 + 0.2) / 2.75e-5
    l_dn = np.array([0, round(0.7 / 2.75e-5)], dtype=np.uint16)
    assert np.isnan(landsat_reflectance(l_dn)[0]) and landsat_reflectance(l_dn)[1] == pytest.approx(0.5, abs=1e-4)
    assert refl.dtype == np.float32


def test_scl_never_counts_snow_as_cloud() -> None:
    scl = np.array([0, 3, 4, 5, 6, 8, 9, 10, 11])
    valid, cloud = scl_masks(scl)
    assert valid.tolist() == [False] + [True] * 8
    assert cloud.tolist() == [False, True, False, False, False, True, True, True, False]


def test_qa_pixel_bits() -> None:
    clear, fill, cloud, shadow, snow, dilated, cirrus = 1 << 6, 1, 1 << 3, 1 << 4, 1 << 5, 1 << 1, 1 << 2
    qa = np.array([clear, fill, cloud, shadow, snow, dilated, cirrus], dtype=np.uint16)
    valid, cloudy = qa_pixel_masks(qa)
    assert valid.tolist() == [True, False, True, True, True, True, True]
    assert cloudy.tolist() == [False, False, True, True, False, True, True]


def test_slc_off_dates() -> None:
    assert is_slc_off("landsat-7", date(2003, 6, 1)) and not is_slc_off("landsat-7", date(2003, 5, 1))
    assert not is_slc_off("landsat-8", date(2015, 8, 1))


def test_to_db() -> None:
    out = to_db(np.array([1.0, 0.1, 0.0]))
    assert out[0] == 0 and out[1] == pytest.approx(-10) and np.isnan(out[2])


def test_windows() -> None:
    assert default_window(2023, 46.8) == (date(2023, 8, 1), date(2023, 10, 15))
    assert default_window(2023, -45.0) == (date(2023, 2, 1), date(2023, 4, 15))
    assert window_dates(2023, 46, "07-15:09-30", None, 15) == (date(2023, 7, 15), date(2023, 9, 30))
    assert window_dates(2023, -45, "12-15:02-28", None, 15) == (date(2022, 12, 15), date(2023, 2, 28))
    assert window_dates(2023, 46, None, date(2023, 9, 1), 15) == (date(2023, 8, 17), date(2023, 9, 16))


def test_auto_sensor_by_year() -> None:
    assert optical_sensors(("auto",), 2015) == ["landsat"]
    assert optical_sensors(("auto",), 2016) == ["s2"]
    assert optical_sensors(("s2", "landsat", "s1"), 2020) == ["s2", "landsat"]
    assert optical_sensors(("s1",), 2020) == ["s2"]


def _score(scene: str, cloud: float, snow: float = 0.0, tile: float = 10.0, days: int = 0, rejected: str | None = None) -> CandidateScore:
    return CandidateScore("G1", scene, 1.0, cloud, snow, tile, days, rejected)


def test_selection_rule_order_and_ties() -> None:
    scores = [
        _score("A", 0.104, tile=1.0),  # least-cloudy tile, cloudy over the glacier
        _score("B", 0.001, snow=0.30, tile=40.0),
        _score("C", 0.004, snow=0.10, tile=60.0),  # cloud ties with B at 1 %: less snow wins
        _score("D", 0.0, snow=0.12, tile=20.0, days=-3),  # snow ties with C at 0.05: tile cloud decides
        _score("E", 0.0, rejected="coverage 0.50 < 0.90"),
    ]
    ranked = rank_candidates(scores)
    assert [s.scene_id for s in ranked] == ["D", "C", "B", "A"]


def test_selection_final_ties_by_date_then_id() -> None:
    ranked = rank_candidates([_score("Z", 0, days=5), _score("Y", 0, days=-5), _score("X", 0, days=9)])
    assert [s.scene_id for s in ranked] == ["Y", "Z", "X"]
    assert selection_key(_score("N", 0.0, snow=math.nan))[1] == math.inf


def test_eligibility() -> None:
    assert eligibility(0.95, 0.1, 0.9, 0.3) is None
    assert "coverage" in eligibility(0.8, 0.0, 0.9, 0.3)
    assert "cloud" in eligibility(1.0, 0.5, 0.9, 0.3)


def test_slope_of_a_plane() -> None:
    x = np.arange(20, dtype=float) * 10.0
    plane = np.tile(x, (20, 1))  # rises 10 m per 10 m pixel eastwards: 45 degrees
    slope = slope_degrees(plane, 10.0)
    assert np.allclose(slope[1:-1, 1:-1], 45.0)
    assert np.allclose(slope_degrees(np.zeros((5, 5)), 10.0), 0.0)


def test_ndsi() -> None:
    out = ndsi(np.array([0.9, 0.2, 0.0]), np.array([0.1, 0.2, 0.0]))
    assert out[0] == pytest.approx(0.8) and out[1] == 0 and np.isnan(out[2])
