"""Unit tests of the synthetic scene physics and product encodings (tiny arrays, known answers)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from affine import Affine

from glacimap.errors import InvalidInputError
from glacimap.rasters import Grid
from glacimap.synthetic import scenes
from glacimap.synthetic.catalog import mgrs_tile, previous_row_tile
from glacimap.synthetic.scenes import Illumination, MaskFields, Sun
from glacimap.synthetic.surfaces import OPTICAL_BANDS, SPECTRA, Surface, classify_surfaces

CRS = "EPSG:32632"


def _grid(left: float, top: float, res: float, height: int, width: int) -> Grid:
    return Grid(CRS, Affine(res, 0.0, left, 0.0, -res, top), height, width)


# -- sun and terrain -------------------------------------------------------------------------------
def test_solar_position_at_solstice_noon_and_morning() -> None:
    # Solar noon at 11 E is about 11:16 UTC on 21 June: sun due south, zenith = lat - declination.
    noon = scenes.solar_position(datetime(2023, 6, 21, 11, 16, tzinfo=timezone.utc), 11.0, 47.0)
    assert noon.zenith == pytest.approx(47.0 - 23.44, abs=0.3)
    assert noon.azimuth == pytest.approx(180.0, abs=2.0)
    # A late-summer Sentinel-2 overpass: sun in the south-east, zenith about 40 deg.
    s2 = scenes.solar_position(datetime(2023, 9, 1, 10, 20, tzinfo=timezone.utc), 11.0, 47.0)
    assert 150.0 < s2.azimuth < 170.0
    assert 38.0 < s2.zenith < 43.0


def test_cos_incidence_flat_and_facing_slopes() -> None:
    flat = np.zeros((5, 5), dtype=np.float32)
    normals = scenes.terrain_normals(flat, 10.0)
    assert np.allclose(scenes.cos_incidence(normals, 40.0, 160.0), math.cos(math.radians(40.0)), atol=1e-6)
    # A 45-degree slope rising to the north (facing south) faces a southern sun at 45 deg zenith.
    ramp = np.tile(np.arange(5, 0, -1, dtype=np.float32)[:, None] * 10.0, (1, 5))
    facing = scenes.cos_incidence(scenes.terrain_normals(ramp, 10.0), 45.0, 180.0)
    away = scenes.cos_incidence(scenes.terrain_normals(ramp, 10.0), 45.0, 0.0)
    assert facing[2, 2] == pytest.approx(1.0, abs=1e-5)
    assert away[2, 2] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    ("azimuth", "expected_rows", "expected_cols"),
    [(180.0, range(90, 100), None), (0.0, range(110, 120), None), (90.0, None, range(40, 50))],
)
def test_cast_shadow_of_a_wall(azimuth: float, expected_rows: range | None, expected_cols: range | None) -> None:
    # A 100 m high block, sun 45 deg high: the shadow is 100 m (10 pixels) long, away from the sun.
    dem = np.zeros((200, 200), dtype=np.float32)
    dem[100:110, 50:150] = 100.0
    shadow = scenes.cast_shadow(dem, 10.0, 44.9, azimuth)
    if expected_rows is not None:
        assert list(np.nonzero(shadow[:, 100])[0]) == list(expected_rows)
    else:
        assert list(np.nonzero(shadow[105, :])[0]) == list(expected_cols)
    assert not shadow[100:110, 50:150].any()  # the block itself is lit on top


def test_cast_shadow_oblique_sun_reaches_diagonally() -> None:
    dem = np.zeros((100, 100), dtype=np.float32)
    dem[60, 60] = 200.0  # a needle; sun from the south-east (135), 45 deg high
    shadow = scenes.cast_shadow(dem, 10.0, 45.0, 135.0)
    # The shadow runs north-west: pixel (60 - k, 60 - k) for k up to 200 m / (10 m * sqrt 2) = 14.
    assert shadow[55, 55] and shadow[50, 50] and shadow[47, 47]
    assert not shadow[60, 50] and not shadow[50, 60]
    assert not shadow[40, 40]


# -- resampling ------------------------------------------------------------------------------------
def test_resample_mean_onto_the_landsat_lattice_is_exact_for_a_ramp() -> None:
    src = _grid(600_000.0, 5_200_000.0, 10.0, 30, 30)
    dst = scenes.lattice_grid(src, 30.0, origin=15.0)
    assert dst.bounds[0] % 30.0 == 15.0 and dst.bounds[3] % 30.0 == 15.0
    assert (dst.width, dst.height) == (9, 9)
    xs, ys = scenes.pixel_centres(src)
    ramp = 0.5 * (xs[None, :] - 600_000.0) - 0.25 * (ys[:, None] - 5_200_000.0)
    out = scenes.resample_mean(ramp.astype(np.float32), src, dst)
    dx, dy = scenes.pixel_centres(dst)
    expected = 0.5 * (dx[None, :] - 600_000.0) - 0.25 * (dy[:, None] - 5_200_000.0)
    # Symmetric weights (1/2, 1, 1, 1/2) / 3 reproduce a linear field at the 30 m cell centres.
    assert np.allclose(out, expected, atol=1e-3)
    # Block means of a 0/1 mask are the area shares (20 m cells over four 10 m cells).
    g20 = scenes.lattice_grid(src, 20.0)
    mask = np.zeros(src.shape, dtype=bool)
    mask[0, 0] = True
    assert scenes.resample_mean(mask, src, g20)[0, 0] == pytest.approx(0.25)


def test_sample_linear_moves_a_step_by_the_shift() -> None:
    coarse = _grid(0.0, 400.0, 40.0, 10, 10)
    fine = _grid(80.0, 320.0, 10.0, 24, 24)
    field = np.zeros(coarse.shape, dtype=np.float32)
    field[:, 5:] = 1.0  # step at x = 200 m (between cell centres 180 and 220)
    plain = scenes.sample_linear(field, coarse, fine)
    moved = scenes.sample_linear(field, coarse, fine, shift=(40.0, 0.0))
    xs, _ = scenes.pixel_centres(fine)
    half_plain = xs[np.argmin(np.abs(plain[0] - 0.5))]
    half_moved = xs[np.argmin(np.abs(moved[0] - 0.5))]
    assert half_plain == pytest.approx(200.0, abs=5.0)
    assert half_moved - half_plain == pytest.approx(40.0, abs=1.0)


def test_fractal_noise_is_standardised_and_seeded() -> None:
    a = scenes.fractal_noise((64, 80), np.random.default_rng(3), beta=3.0)
    b = scenes.fractal_noise((64, 80), np.random.default_rng(3), beta=3.0)
    assert a.dtype == np.float32 and a.shape == (64, 80)
    assert abs(float(a.mean())) < 1e-5 and float(a.std()) == pytest.approx(1.0, abs=1e-4)
    assert np.array_equal(a, b)
    # Red noise: neighbours are strongly correlated, unlike white noise.
    assert np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1] > 0.8


def test_cloud_opacity_reaches_the_requested_cover() -> None:
    noise = scenes.fractal_noise((100, 100), np.random.default_rng(1))
    opacity = scenes.cloud_opacity(noise, 0.3)
    assert float((opacity >= scenes.CLOUD_OPACITY).mean()) == pytest.approx(0.3, abs=0.005)
    assert float(opacity.max()) == 1.0 and float(opacity.min()) == 0.0
    assert not scenes.cloud_opacity(noise, 0.0).any()


def test_shadow_shift_points_away_from_the_sun() -> None:
    dx, dy = scenes.shadow_shift(Sun(45.0, 180.0), 2000.0)
    assert dx == pytest.approx(0.0, abs=1e-6) and dy == pytest.approx(2000.0)
    dx, dy = scenes.shadow_shift(Sun(45.0, 90.0), 1000.0)
    assert dx == pytest.approx(-1000.0) and dy == pytest.approx(0.0, abs=1e-6)


# -- surfaces and spectra --------------------------------------------------------------------------
def test_classify_surfaces_rules() -> None:
    dem = np.array([[3200.0, 2800.0, 2800.0, 2500.0, 1800.0, 3300.0]], dtype=np.float32)
    glacier = np.array([[1, 1, 1, 0, 0, 0]], dtype=np.int32)
    debris = np.array([[True, False, True, False, False, False]])
    lakes = np.array([[False, False, False, True, False, False]])
    vegetation = np.array([[False, False, False, False, True, False]])
    propensity = np.zeros((1, 6), dtype=np.float32)
    out = classify_surfaces(dem, glacier, debris, lakes, vegetation, 3000.0, propensity, 3200.0)
    assert list(out[0]) == [Surface.SNOW, Surface.ICE, Surface.DEBRIS, Surface.WATER, Surface.VEGETATION,
                            Surface.SEASONAL_SNOW]


def _flat_light(shape: tuple[int, int], zenith: float = 40.0, shadow: np.ndarray | None = None) -> Illumination:
    cast = np.zeros(shape, dtype=bool) if shadow is None else shadow
    cos_i = np.full(shape, math.cos(math.radians(zenith)), dtype=np.float32)
    direct = np.where(cast, 0.0, 1.0).astype(np.float32)
    return Illumination(Sun(zenith, 160.0), cos_i, cast, direct, np.ones(shape, dtype=np.float32))


def _render(surfaces: np.ndarray, light: Illumination, opacity: float = 0.0) -> np.ndarray:
    shape = surfaces.shape
    zeros = np.zeros(shape, dtype=np.float32)
    return scenes.render_reflectance(surfaces, zeros, light, np.full(shape, opacity, dtype=np.float32), zeros, zeros,
                                     np.random.default_rng(0), noise_sigma=0.0)


def test_flat_sunlit_reflectance_equals_the_spectrum() -> None:
    surfaces = np.array([[int(s) for s in Surface]], dtype=np.uint8)
    out = _render(surfaces, _flat_light(surfaces.shape))
    for k, surface in enumerate(Surface):
        assert np.allclose(out[:, 0, k], SPECTRA[surface], atol=1e-6)


def test_band_ratio_finds_clean_ice_and_snow_but_not_debris_or_shadowed_ice() -> None:
    """red/swir16 > 3.2 and blue > 0.17: the classic glacier mask, with its classic failures."""
    names = list(OPTICAL_BANDS)
    surfaces = np.array([[Surface.ICE, Surface.SNOW, Surface.DEBRIS, Surface.ROCK, Surface.WATER,
                          Surface.VEGETATION, Surface.ICE, Surface.SNOW, Surface.ICE]], dtype=np.uint8)
    shadow = np.zeros(surfaces.shape, dtype=bool)
    shadow[0, 6:8] = True  # ice and snow in cast shadow
    out = _render(surfaces, _flat_light(surfaces.shape, shadow=shadow))
    cloud = _render(np.array([[Surface.ICE]], dtype=np.uint8), _flat_light((1, 1)), opacity=1.0)
    ratio_mask = (out[names.index("red")] / out[names.index("swir16")] > 3.2) & (out[names.index("blue")] > 0.17)
    assert list(ratio_mask[0]) == [True, True, False, False, False, False, False, True, True]
    is_cloud_ice = (cloud[2] / cloud[4] > 3.2) & (cloud[0] > 0.17)
    assert not is_cloud_ice.any()


# -- encodings -------------------------------------------------------------------------------------
def test_sentinel2_encoding_depends_on_the_processing_baseline() -> None:
    refl = np.array([[0.1234, 0.0, -0.05, 1.2]], dtype=np.float32)
    valid = np.array([[True, True, True, False]])
    new = scenes.encode_s2(refl, "05.10", valid)
    old = scenes.encode_s2(refl, "02.12", valid)
    assert list(new[0]) == [2234, 1000, 500, 0]
    assert list(old[0]) == [1234, 1, 1, 0]  # DN 0 is no data, so dark pixels clip to 1
    back = scenes.decode_s2(new, "05.10")
    assert np.allclose(back[0, :3], refl[0, :3], atol=0.5e-4)
    assert np.isnan(back[0, 3])
    assert scenes.s2_has_offset("04.00") and not scenes.s2_has_offset("03.01")
    with pytest.raises(InvalidInputError):
        scenes.s2_has_offset("N0510")


def test_landsat_encoding_roundtrip() -> None:
    refl = np.array([[0.1, -0.1, 0.9, 0.3]], dtype=np.float32)
    valid = np.array([[True, True, True, False]])
    dn = scenes.encode_landsat(refl, valid)
    assert dn[0, 0] == round((0.1 + 0.2) / 0.0000275) == 10909
    assert dn[0, 3] == 0
    back = scenes.decode_landsat(dn)
    assert np.allclose(back[0, :3], refl[0, :3], atol=0.0000275 / 2 + 1e-7)
    assert np.isnan(back[0, 3])


def _fields(majority: list[int], opacity: list[float] | None = None, cirrus: list[float] | None = None,
            shadow: list[float] | None = None, cast: list[float] | None = None,
            valid: list[bool] | None = None) -> MaskFields:
    n = len(majority)
    fractions = np.zeros((max(Surface) + 1, 1, n), dtype=np.float32)
    for k, surface in enumerate(majority):
        fractions[surface, 0, k] = 1.0

    def arr(values: list[float] | None) -> np.ndarray:
        return np.array([values if values is not None else [0.0] * n], dtype=np.float32)

    return MaskFields(np.array([valid if valid is not None else [True] * n]), fractions, arr(opacity), arr(cirrus),
                      arr(shadow), arr(cast))


def test_scene_classification_rules() -> None:
    R, V, W, I, S, D = Surface.ROCK, Surface.VEGETATION, Surface.WATER, Surface.ICE, Surface.SNOW, Surface.DEBRIS
    fields = _fields(
        [R, V, W, I, S, D, I, S, R, R, R, I, R],
        opacity=[0, 0, 0, 0, 0, 0, 0, 0, 0.3, 0.9, 0, 0, 0],
        cirrus=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.1, 0, 0],
        shadow=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5, 0],
        cast=[0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
        valid=[True] * 12 + [False],
    )
    assert list(scenes.scene_classification(fields)[0]) == [5, 4, 6, 11, 11, 5, 2, 11, 8, 9, 10, 3, 0]


def test_qa_pixel_matches_real_landsat_values() -> None:
    R, W, I = Surface.ROCK, Surface.WATER, Surface.ICE
    majority = [R] * 12 + [W, I, R]
    opacity = [0.0] * 15
    opacity[0] = 0.9  # a cloud at the left edge
    shadow = [0.0] * 15
    shadow[14] = 0.8
    valid = [True] * 15
    valid[11] = False
    qa = scenes.qa_pixel(_fields(majority, opacity=opacity, shadow=shadow, valid=valid))[0]
    assert qa[0] == 22280  # cloud, high cloud confidence
    assert all(q & (1 << scenes.QA_DILATED_CLOUD) and not q & (1 << scenes.QA_CLEAR) for q in qa[1:4])
    assert qa[5] == 21824  # clear land
    assert qa[11] == 1  # fill
    assert qa[12] == 21952  # clear water
    assert qa[13] == 30048  # snow/ice, high snow confidence
    assert qa[14] == 23888  # cloud shadow, high shadow confidence (still "clear" of cloud)


def test_backscatter_levels_and_speckle() -> None:
    surfaces = np.zeros((4, 4000), dtype=np.uint8)
    surfaces[0], surfaces[1], surfaces[2], surfaces[3] = Surface.SNOW, Surface.ROCK, Surface.WATER, Surface.ICE
    cos_local = np.full(surfaces.shape, math.cos(math.radians(39.0)), dtype=np.float32)
    no_shadow = np.zeros(surfaces.shape, dtype=bool)
    wet = scenes.render_backscatter(surfaces, cos_local, no_shadow, True, 39.0, np.random.default_rng(0))
    dry = scenes.render_backscatter(surfaces, cos_local, no_shadow, False, 39.0, np.random.default_rng(0))
    assert wet.dtype == np.float32 and wet.shape == (2,) + surfaces.shape

    def mean_db(a: np.ndarray) -> float:
        return float(10.0 * np.log10(np.mean(10.0 ** (a / 10.0))))

    # Speckle has unit mean: the linear mean returns sigma0 (plus the small noise floor).
    assert mean_db(dry[0, 1]) == pytest.approx(-9.0, abs=0.2)  # rock VV
    assert mean_db(wet[0, 0]) < mean_db(dry[0, 0]) - 10.0  # wet snow is dark, frozen firn bright
    assert mean_db(dry[0, 2]) < mean_db(dry[0, 3]) < mean_db(dry[0, 1])  # water < ice < rock
    assert mean_db(dry[1, 1]) == pytest.approx(-16.0, abs=0.3)  # rock VH, 7 dB below VV
    shadowed = scenes.render_backscatter(surfaces, cos_local, np.ones(surfaces.shape, dtype=bool), False, 39.0,
                                         np.random.default_rng(0))
    assert mean_db(shadowed[0, 1]) == pytest.approx(-24.0, abs=0.3)  # radar shadow: noise floor


def test_mgrs_tile_names() -> None:
    assert mgrs_tile(32, 47.0, 652_049.0, 5_207_105.0) == "32TPT"  # 11 E 47 N
    assert mgrs_tile(32, 46.5, 615_097.0, 5_150_696.0) == "32TPS"
    assert previous_row_tile("32TPT") == "32TPS"
