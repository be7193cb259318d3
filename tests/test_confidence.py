"""Confidence, reliability curves, ECE and calibration maps, on data with known answers."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from glacimap.confidence import (
    CalibrationMap,
    binary_confidence,
    confidence,
    expected_calibration_error,
    fit_calibration,
    load_calibration,
    plot_reliability,
    pool_adjacent_violators,
    reliability_curve,
    save_calibration,
)
from glacimap.errors import InputNotFoundError, InvalidInputError, OutputExistsError

N = 100_000


def _cubic_sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidence uniform in [0, 1], right with probability conf**3 (strongly overconfident)."""
    rng = np.random.default_rng(seed)
    conf = rng.random(N)
    return conf, rng.random(N) < conf**3


def _binary_sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A two-class model with perfectly calibrated probabilities, scored by entropy confidence."""
    rng = np.random.default_rng(seed)
    p_max = 0.5 + 0.5 * rng.random(N)
    return binary_confidence(p_max), rng.random(N) < p_max


# -- confidence ----------------------------------------------------------------------------------
def test_confidence_extremes_and_known_value() -> None:
    probs = np.array([[1.0, 0.5, 0.5, 1 / 3], [0.0, 0.5, 0.5, 1 / 3], [0.0, 0.0, 0.0, 1 / 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 log 0 must not warn
        conf = confidence(probs, axis=0)
    # one-hot -> 1; (1/2, 1/2, 0) -> 1 - ln 2 / ln 3; uniform -> 0
    np.testing.assert_allclose(conf, [1.0, 1 - math.log(2) / math.log(3), 1 - math.log(2) / math.log(3), 0.0], atol=1e-12)


def test_confidence_axis_dtype_and_nan() -> None:
    probs = np.array([[[0.9, 0.1]], [[np.nan, np.nan]]], dtype=np.float32)  # (2 pixels, 1, 2 classes)
    conf = confidence(probs, axis=-1)
    assert conf.dtype == np.float32 and conf.shape == (2, 1)
    expected = 1 + (0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))
    assert conf[0, 0] == pytest.approx(expected, abs=1e-6)
    assert np.isnan(conf[1, 0])


def test_binary_confidence_values() -> None:
    conf = binary_confidence(np.array([0.5, 0.0, 1.0, 0.9, 0.1]))
    np.testing.assert_allclose(conf, [0.0, 1.0, 1.0, 0.531004, 0.531004], atol=1e-6)


@pytest.mark.parametrize(
    "probs",
    [np.array([[1.5], [-0.5]]), np.array([[0.6], [0.6]]), np.array([[1.0]])],
    ids=["logits", "not-normalised", "one-class"],
)
def test_confidence_rejects_bad_probabilities(probs: np.ndarray) -> None:
    with pytest.raises(InvalidInputError):
        confidence(probs, axis=0)


# -- reliability and ECE -------------------------------------------------------------------------
def test_reliability_curve_by_hand() -> None:
    conf = np.array([0.05, 0.1, 0.15, 0.95, 1.0, np.nan])
    correct = np.array([True, False, True, True, False, True])
    curve = reliability_curve(conf, correct, bins=10)
    np.testing.assert_array_equal(curve.counts, [1, 2, 0, 0, 0, 0, 0, 0, 0, 2])  # 0.1 -> bin 1, 1.0 -> last
    assert curve.accuracy[1] == 0.5 and curve.mean_confidence[1] == pytest.approx(0.125)
    assert np.isnan(curve.accuracy[2])
    assert curve.mean_confidence[9] == pytest.approx(0.975) and curve.accuracy[9] == 0.5
    # ECE = (1*|1-0.05| + 2*|0.5-0.125| + 2*|0.5-0.975|) / 5
    assert curve.ece == pytest.approx((0.95 + 0.75 + 0.95) / 5)


def test_ece_of_a_perfectly_calibrated_sample_is_near_zero() -> None:
    rng = np.random.default_rng(1)
    conf = rng.random(N)
    correct = rng.random(N) < conf
    # Pure sampling noise: about sqrt(2/pi) * sqrt(p(1-p)/1000) per bin, i.e. < 0.012.
    assert expected_calibration_error(conf, correct) < 0.015


def test_ece_of_an_overconfident_set_is_known() -> None:
    conf = np.full(1000, 0.9)
    correct = np.arange(1000) < 600  # 60 % right at 90 % confidence
    assert expected_calibration_error(conf, correct) == pytest.approx(0.3)
    # two groups: 0.95 conf, 80 % right; 0.55 conf, 55 % right -> (0.15 * 500 + 0 * 500) / 1000
    conf = np.r_[np.full(500, 0.95), np.full(500, 0.55)]
    correct = np.r_[np.arange(500) < 400, np.arange(500) < 275]
    assert expected_calibration_error(conf, correct) == pytest.approx(0.075)


def test_ece_input_checks() -> None:
    with pytest.raises(InvalidInputError):
        expected_calibration_error(np.array([0.5, 1.2]), np.array([True, False]))
    with pytest.raises(InvalidInputError):
        expected_calibration_error(np.array([0.5]), np.array([True, False]))
    assert math.isnan(expected_calibration_error(np.array([np.nan]), np.array([True])))


# -- pool adjacent violators ---------------------------------------------------------------------
def test_pool_adjacent_violators_known_answers() -> None:
    np.testing.assert_allclose(pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0])), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(pool_adjacent_violators(np.array([3.0, 1.0]), np.array([1.0, 3.0])), [1.5, 1.5])
    np.testing.assert_allclose(pool_adjacent_violators(np.array([4.0, 3.0, 2.0, 1.0])), [2.5] * 4)


# -- calibration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["kernel-ridge", "isotonic"])
def test_calibration_fixes_an_overconfident_sample(method: str) -> None:
    conf, correct = _cubic_sample(2)
    test_conf, test_correct = _cubic_sample(3)
    before = expected_calibration_error(test_conf, test_correct)
    cmap = fit_calibration(conf, correct, method=method)
    after = expected_calibration_error(cmap(test_conf), test_correct)
    assert cmap.method == method
    assert before == pytest.approx(0.25, abs=0.01)  # E|c - c^3| for uniform c is 1/4
    assert after < 0.02
    assert cmap.metadata["ece_before"] == pytest.approx(0.25, abs=0.01)
    assert cmap.metadata["ece_after"] < 0.02
    # the map follows the truth c**3 in the well-filled middle
    x = np.linspace(0.3, 0.95, 14)
    np.testing.assert_allclose(cmap(x), x**3, atol=0.06)


@pytest.mark.parametrize("method", ["kernel-ridge", "isotonic"])
def test_calibration_of_binary_entropy_confidence(method: str) -> None:
    conf, correct = _binary_sample(4)
    test_conf, test_correct = _binary_sample(5)
    cmap = fit_calibration(conf, correct, method=method)
    before = expected_calibration_error(test_conf, test_correct)
    after = expected_calibration_error(cmap(test_conf), test_correct)
    assert before > 0.4
    assert after < 0.015
    assert cmap(0.0) == pytest.approx(0.5, abs=0.05)  # chance anchor: p = 0.5 is right half the time
    # conf = 1 - H2(p) for p = 0.9 is 0.531: calibrated, that pixel is right 90 % of the time
    assert cmap(binary_confidence(np.array(0.9))) == pytest.approx(0.9, abs=0.03)


def test_paper_anchors_at_zero_and_one() -> None:
    conf, correct = _cubic_sample(6)
    for method in ("kernel-ridge", "isotonic"):
        cmap = fit_calibration(conf, correct, method=method, n_classes=None)
        assert cmap.knots_x[0] == 0.0 and cmap.knots_x[-1] == 1.0
        assert cmap(0.0) == pytest.approx(0.0, abs=0.01) and cmap(1.0) == pytest.approx(1.0, abs=0.02)
        assert cmap.metadata["anchors"] == [[0.0, 0.0], [1.0, 1.0]]


def test_auto_keeps_the_better_method_on_held_out_pixels() -> None:
    conf, correct = _cubic_sample(7)
    cmap = fit_calibration(conf, correct, method="auto", seed=3)
    held = cmap.metadata["heldout_ece"]
    assert set(held) == {"uncalibrated", "kernel-ridge", "isotonic"}
    assert cmap.method == min(("kernel-ridge", "isotonic"), key=lambda m: held[m])
    assert held["uncalibrated"] > 0.2 and max(held["kernel-ridge"], held["isotonic"]) < 0.03
    again = fit_calibration(conf, correct, method="auto", seed=3)
    assert again.knots_y == cmap.knots_y  # deterministic


def test_calibration_map_is_monotone_and_in_range() -> None:
    rng = np.random.default_rng(8)
    conf = rng.random(5000)
    correct = rng.random(5000) < 0.5 + 0.4 * np.sin(12 * conf)  # wiggly, non-monotone truth
    for method in ("kernel-ridge", "isotonic"):
        cmap = fit_calibration(conf, correct, method=method, bins=50)
        y = np.asarray(cmap.knots_y)
        assert np.all(np.diff(y) >= 0) and y.min() >= 0 and y.max() <= 1
        assert np.all(np.diff(cmap.knots_x) > 0)


def test_calibration_map_json_round_trip(tmp_path) -> None:
    conf, correct = _cubic_sample(9)
    cmap = fit_calibration(conf, correct, method="kernel-ridge")
    path = save_calibration(cmap, tmp_path / "calibration.json")
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text
    loaded = load_calibration(path)
    assert loaded == cmap
    assert loaded.metadata["gamma"] == cmap.metadata["gamma"]
    probe = np.linspace(0, 1, 37)
    np.testing.assert_array_equal(loaded(probe), cmap(probe))
    with pytest.raises(OutputExistsError):
        save_calibration(cmap, path)
    assert json.loads(text)["schema"] == "glacimap.calibration"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"knots_y": [0.0, 0.6, 0.5, 1.0]}, "monotone"),
        ({"knots_y": [0.0, 0.2, 0.5, 1.2]}, r"\[0, 1\]"),
        ({"knots_x": [0.0, 0.5, 0.5, 1.0]}, "strictly"),
        ({"knots_x": [0.1, 0.2, 0.5, 1.0]}, "from 0 to 1"),
        ({"knots_y": [0.0, 0.2, 1.0]}, "same length"),
        ({"knots_y": [0.0, "a", 0.5, 1.0]}, "list of numbers"),
        ({"schema": "sklearn"}, "schema"),
        ({"version": 99}, "version"),
        ({"method": "platt"}, "method"),
        ({"pickle": "gASV"}, "unknown keys"),
    ],
)
def test_calibration_map_validation(change: dict, message: str) -> None:
    data = {"schema": "glacimap.calibration", "version": 1, "method": "isotonic",
            "knots_x": [0.0, 0.2, 0.5, 1.0], "knots_y": [0.0, 0.2, 0.5, 1.0], "metadata": {}}
    assert CalibrationMap.from_dict(data)(0.35) == pytest.approx(0.35)
    with pytest.raises(InvalidInputError, match=message):
        CalibrationMap.from_dict({**data, **change}, source="cal.json")


def test_calibration_map_call_keeps_nan_and_clips() -> None:
    cmap = CalibrationMap("isotonic", (0.0, 0.5, 1.0), (0.1, 0.8, 0.9))
    out = cmap(np.array([np.nan, -0.2, 0.25, 2.0], dtype=np.float32))
    assert out.dtype == np.float32 and np.isnan(out[0])
    np.testing.assert_allclose(out[1:], [0.1, 0.45, 0.9], atol=1e-7)
    assert CalibrationMap.identity()(0.37) == pytest.approx(0.37)


def test_load_calibration_errors(tmp_path) -> None:
    with pytest.raises(InputNotFoundError):
        load_calibration(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="bad.json"):
        load_calibration(bad)


def test_fit_calibration_input_errors() -> None:
    with pytest.raises(InvalidInputError):
        fit_calibration(np.array([np.nan]), np.array([True]))
    with pytest.raises(InvalidInputError):
        fit_calibration(np.array([0.5]), np.array([True]), method="platt")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        fit_calibration(np.array([0.5]), np.array([True]), n_classes=1)


def test_plot_reliability_writes_a_png(tmp_path) -> None:
    conf, correct = _cubic_sample(10)
    cmap = fit_calibration(conf, correct, method="isotonic")
    before = reliability_curve(conf, correct)
    after = reliability_curve(cmap(conf), correct)
    path = plot_reliability(before, after, tmp_path / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed
    with pytest.raises(OutputExistsError):
        plot_reliability(before, None, path, overwrite=False)
