"""Pixel confidence from class probabilities, its calibration, and reliability diagrams.

Confidence is the normalised negative entropy of the class probabilities (GlaViTU, eq. 3):
``conf(p) = 1 + sum_i p_i log_C p_i`` with ``C`` classes; 0 for a uniform distribution, 1
for a one-hot one. It is not a probability of being right, so a *calibration map* ``R``
fitted on validation pixels turns it into one: pixels with calibrated confidence ``g`` are
correct a fraction ``g`` of the time.

``R`` is stored as a monotone piecewise-linear lookup table (``knots_x``, ``knots_y``) in
JSON, never as a pickled model, and evaluated with :func:`numpy.interp`. Two fits produce it:

* ``kernel-ridge``: weighted kernel ridge regression with a Laplacian kernel on the
  reliability curve (bin accuracy against bin mean confidence, weighted by bin counts), as in
  the paper, anchored at (0, 1/C) and (1, 1) (the paper uses (0, 0); see
  :func:`fit_calibration`);
* ``isotonic``: weighted isotonic regression (pool-adjacent-violators) on the same curve.

``auto`` fits both on one half of the pixels and keeps the method with the lower ECE on the
other half (see :func:`fit_calibration`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glacimap.errors import InputNotFoundError, InvalidInputError
from glacimap.workspace import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

CalibrationMethod = Literal["auto", "kernel-ridge", "isotonic"]
#: Methods a stored calibration map may name ("identity" is the uncalibrated map).
MAP_METHODS = ("kernel-ridge", "isotonic", "identity")
SCHEMA = "glacimap.calibration"
SCHEMA_VERSION = 1

#: Knots of the lookup table a kernel-ridge fit is sampled on.
_KRR_KNOTS = 501
#: Hyper-parameter grids searched by leave-one-out error (kernel width 1/gamma, ridge lambda).
_KRR_GAMMAS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
_KRR_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Weight of each anchor point, in units of the mean pixel count of a non-empty bin: enough to
#: hold the map where there are no pixels, too little to override well-filled bins.
_ANCHOR_WEIGHT = 1.0
_PROB_TOLERANCE = 1e-3


# -- confidence ----------------------------------------------------------------------------------
def confidence(probs: np.ndarray, axis: int = 0) -> np.ndarray:
    """Normalised negative entropy ``1 + sum_i p_i log_C p_i`` along the class ``axis``.

    ``probs`` holds class probabilities (softmax output or a Monte-Carlo-dropout mean) with
    ``C >= 2`` classes along ``axis``. ``0 log 0`` is taken as 0; NaN probabilities (nodata)
    give NaN. Floating inputs keep their precision (float32 stays float32). Raises
    :class:`InvalidInputError` for probabilities outside [0, 1] or not summing to 1.
    """
    p = np.asarray(probs)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.ndim == 0:
        raise InvalidInputError("confidence() needs an array with a class axis, got a scalar")
    n_classes = p.shape[axis]
    if n_classes < 2:
        raise InvalidInputError(f"confidence() needs at least 2 classes along axis {axis}, got {n_classes}")
    finite = np.isfinite(p)
    if np.any(finite & ((p < -_PROB_TOLERANCE) | (p > 1 + _PROB_TOLERANCE))):
        raise InvalidInputError("class probabilities must lie in [0, 1] (pass softmax output, not logits)")
    total = p.sum(axis=axis)
    if np.any(np.abs(total[np.isfinite(total)] - 1) > _PROB_TOLERANCE):
        raise InvalidInputError(f"class probabilities must sum to 1 along axis {axis} (pass softmax output)")
    positive = p > 0
    plogp = np.where(positive, p * np.log(np.where(positive, p, 1)), 0)
    plogp = np.where(finite, plogp, np.nan)
    conf = 1 + plogp.sum(axis=axis) / math.log(n_classes)
    return np.clip(conf, 0, 1).astype(p.dtype, copy=False)


def binary_confidence(p_glacier: np.ndarray) -> np.ndarray:
    """Confidence of a two-class (glacier / not glacier) prediction from ``P(glacier)``."""
    p = np.asarray(p_glacier)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    return confidence(np.stack([p, 1 - p]), axis=0)


# -- reliability ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReliabilityCurve:
    """Accuracy against mean confidence in equal-width confidence bins over [0, 1].

    ``mean_confidence`` and ``accuracy`` are NaN in empty bins; ``counts`` are pixels per bin.
    """

    edges: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean of |accuracy - confidence|."""
        if self.total == 0:
            return float("nan")
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.mean_confidence[filled])
        return float(np.sum(self.counts[filled] * gaps) / self.total)

    def filled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean confidence, accuracy, counts) of the non-empty bins."""
        keep = self.counts > 0
        return self.mean_confidence[keep], self.accuracy[keep], self.counts[keep]

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": self.edges.tolist(),
            "mean_confidence": [None if math.isnan(v) else float(v) for v in self.mean_confidence],
            "accuracy": [None if math.isnan(v) else float(v) for v in self.accuracy],
            "counts": self.counts.tolist(),
        }


def _valid_pairs(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened finite (confidence, correct) pairs; checks shapes and range."""
    conf = np.asarray(conf)
    correct = np.asarray(correct)
    if conf.shape != correct.shape:
        raise InvalidInputError(f"confidence shape {conf.shape} differs from correctness shape {correct.shape}")
    conf = conf.reshape(-1).astype(np.float64, copy=False)
    correct = correct.reshape(-1)
    keep = np.isfinite(conf)
    if correct.dtype != bool:
        correct_f = correct.astype(np.float64, copy=False)
        keep &= np.isfinite(correct_f)
        if np.any((correct_f[keep] != 0) & (correct_f[keep] != 1)):
            raise InvalidInputError("correctness must be boolean (or 0/1)")
        correct = correct_f != 0
    conf, correct = conf[keep], correct[keep]
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise InvalidInputError(
            f"confidences must lie in [0, 1], got values in [{conf.min():.4g}, {conf.max():.4g}]"
        )
    return conf, correct


def reliability_curve(conf: np.ndarray, correct: np.ndarray, bins: int = 100) -> ReliabilityCurve:
    """Reliability curve of confidences ``conf`` against boolean ``correct`` (any shape).

    Bins are ``[k/bins, (k+1)/bins)`` with the last one closed at 1. NaN confidences are ignored.
    """
    if bins < 1:
        raise InvalidInputError(f"bins must be a positive integer, got {bins}")
    conf, correct = _valid_pairs(conf, correct)
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    hits = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / counts, np.nan)
        accuracy = np.where(counts > 0, hits / counts, np.nan)
    return ReliabilityCurve(np.linspace(0.0, 1.0, bins + 1), mean_conf, accuracy, counts)


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 100) -> float:
    """ECE over ``bins`` equal-width bins (NaN when there are no valid pixels)."""
    return reliability_curve(conf, correct, bins).ece


# -- the calibration map -------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationMap:
    """Monotone piecewise-linear map R: [0, 1] -> [0, 1] from confidence to accuracy.

    ``knots_x`` rise strictly from 0 to 1, ``knots_y`` never fall and stay in [0, 1].
    ``metadata`` holds JSON-ready fit details (ECE before/after, hyper-parameters...).
    """

    method: str
    knots_x: tuple[float, ...]
    knots_y: tuple[float, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "knots_x", tuple(float(v) for v in self.knots_x))
        object.__setattr__(self, "knots_y", tuple(float(v) for v in self.knots_y))
        object.__setattr__(self, "metadata", dict(self.metadata))
        _check_map(self.method, self.knots_x, self.knots_y, "calibration map")

    @classmethod
    def identity(cls) -> CalibrationMap:
        """The map that leaves confidences unchanged."""
        return cls("identity", (0.0, 1.0), (0.0, 1.0))

    def __call__(self, conf: np.ndarray | float) -> np.ndarray:
        """Calibrated confidence; NaN stays NaN, values are clipped to [0, 1] first."""
        values = np.asarray(conf)
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        out = np.interp(np.clip(values, 0.0, 1.0), self.knots_x, self.knots_y)
        return np.asarray(out, dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "method": self.method,
            "knots_x": list(self.knots_x),
            "knots_y": list(self.knots_y),
            "metadata": _json_ready(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "calibration map") -> CalibrationMap:
        """Validate and build a map from :meth:`to_dict` output; errors name ``source``."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise InvalidInputError(f"{source}: 'schema' must be {SCHEMA!r}, got {data.get('schema')!r}")
        if data.get("version") != SCHEMA_VERSION:
            raise InvalidInputError(
                f"{source}: unsupported version {data.get('version')!r} (this glacimap reads {SCHEMA_VERSION})"
            )
        allowed = {"schema", "version", "method", "knots_x", "knots_y", "metadata"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InvalidInputError(f"{source}: unknown keys {unknown}")
        knots = []
        for key in ("knots_x", "knots_y"):
            values = data.get(key)
            if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
            ):
                raise InvalidInputError(f"{source}: '{key}' must be a list of numbers")
            knots.append(tuple(float(v) for v in values))
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise InvalidInputError(f"{source}: 'metadata' must be an object")
        method = data.get("method")
        _check_map(method, knots[0], knots[1], source)
        return cls(str(method), knots[0], knots[1], metadata)


def _check_map(method: object, xs: tuple[float, ...], ys: tuple[float, ...], source: str) -> None:
    if method not in MAP_METHODS:
        raise InvalidInputError(f"{source}: method must be one of {list(MAP_METHODS)}, got {method!r}")
    if len(xs) != len(ys) or len(xs) < 2:
        raise InvalidInputError(f"{source}: knots_x and knots_y need the same length >= 2 ({len(xs)}, {len(ys)})")
    x = np.asarray(xs)
    y = np.asarray(ys)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidInputError(f"{source}: knots must be finite numbers")
    if x[0] != 0.0 or x[-1] != 1.0 or np.any(np.diff(x) <= 0):
        raise InvalidInputError(f"{source}: knots_x must rise strictly from 0 to 1")
    if np.any(y < 0) or np.any(y > 1):
        raise InvalidInputError(f"{source}: knots_y must lie in [0, 1]")
    if np.any(np.diff(y) < 0):
        raise InvalidInputError(f"{source}: knots_y must not decrease (the map must be monotone)")


def _json_ready(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def save_calibration(cmap: CalibrationMap, path: Path | str, overwrite: bool = False) -> Path:
    """Write a calibration map as JSON, atomically."""
    return write_json_atomic(path, cmap.to_dict(), overwrite=overwrite)


def load_calibration(path: Path | str) -> CalibrationMap:
    """Read and validate a calibration map JSON file."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: calibration map not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc})") from exc
    return CalibrationMap.from_dict(data, source=str(path))


# -- fitting -------------------------------------------------------------------------------------
def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares non-decreasing fit to ``y`` (in the given order)."""
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    if y.shape != w.shape or y.ndim != 1:
        raise InvalidInputError("pool_adjacent_violators needs 1-D values and weights of the same length")
    if np.any(w <= 0):
        raise InvalidInputError("pool_adjacent_violators needs positive weights")
    means: list[float] = []
    sums: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y, w):
        means.append(value)
        sums.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            total = sums[-2] + sums[-1]
            merged = (means[-2] * sums[-2] + means[-1] * sums[-1]) / total
            size = sizes[-2] + sizes[-1]
            del means[-1], sums[-1], sizes[-1]
            means[-1], sums[-1], sizes[-1] = merged, total, size
    return np.repeat(np.asarray(means), sizes)


def _anchored_points(curve: ReliabilityCurve, low: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Curve points plus the (0, low) and (1, 1) anchors; weights normalised to mean 1 on data."""
    x, y, counts = curve.filled()
    if x.size == 0:
        raise InvalidInputError("cannot fit a calibration map: no valid pixels")
    w = counts / counts.mean()
    return (
        np.concatenate([[0.0], x, [1.0]]),
        np.concatenate([[low], y, [1.0]]),
        np.concatenate([[_ANCHOR_WEIGHT], w, [_ANCHOR_WEIGHT]]),
    )


def _laplacian(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    return np.exp(-gamma * np.abs(a[:, None] - b[None, :]))


def _fit_kernel_ridge(curve: ReliabilityCurve, low: float) -> CalibrationMap:
    """Weighted kernel ridge regression (Laplacian kernel) of accuracy on confidence.

    The regression models the departure from the identity, ``R(x) = x + sum_j a_j k(x, x_j)``,
    so that the map stays close to the diagonal where bins are sparse. ``a`` solves
    ``(K + lambda W^-1) a = y - x``; gamma and lambda are chosen by weighted leave-one-out
    error over the bins, computed in closed form from the hat matrix.
    """
    x, y, w = _anchored_points(curve, low)
    residual = y - x
    data = np.ones_like(x, dtype=bool)
    data[[0, -1]] = False
    best: tuple[float, float, float, np.ndarray] | None = None
    for gamma in _KRR_GAMMAS:
        kernel = _laplacian(x, x, gamma)
        for lam in _KRR_LAMBDAS:
            system = kernel + np.diag(lam / w)
            try:
                inverse = np.linalg.inv(system)
            except np.linalg.LinAlgError:
                continue
            alpha = inverse @ residual
            hat_diag = np.einsum("ij,ji->i", kernel, inverse)
            errors = (residual - kernel @ alpha) / np.maximum(1 - hat_diag, 1e-12)
            score = float(np.sum(w[data] * errors[data] ** 2) / np.sum(w[data]))
            if best is None or score < best[0]:
                best = (score, gamma, lam, alpha)
    if best is None:  # pragma: no cover - the ridge term keeps every system invertible
        raise InvalidInputError("kernel ridge calibration failed: every linear system was singular")
    score, gamma, lam, alpha = best
    knots_x = np.linspace(0.0, 1.0, _KRR_KNOTS)
    knots_y = knots_x + _laplacian(knots_x, x, gamma) @ alpha
    knots_y = pool_adjacent_violators(np.clip(knots_y, 0.0, 1.0))
    meta = {"gamma": gamma, "lambda": lam, "loo_mse": score}
    return CalibrationMap("kernel-ridge", tuple(knots_x), tuple(knots_y), meta)


def _fit_isotonic(curve: ReliabilityCurve, low: float) -> CalibrationMap:
    """Weighted isotonic regression of bin accuracy on bin confidence, linearly interpolated."""
    x, y, w = _anchored_points(curve, low)
    # A bin whose mean is exactly 0 or 1 coincides with an anchor: pool the two.
    unique_x, inverse = np.unique(x, return_inverse=True)
    sum_w = np.bincount(inverse, weights=w)
    mean_y = np.bincount(inverse, weights=w * y) / sum_w
    fitted = np.clip(pool_adjacent_violators(mean_y, sum_w), 0.0, 1.0)
    return CalibrationMap("isotonic", tuple(unique_x), tuple(fitted), {})


_FITTERS = {"kernel-ridge": _fit_kernel_ridge, "isotonic": _fit_isotonic}


def fit_calibration(
    conf: np.ndarray,
    correct: np.ndarray,
    method: CalibrationMethod = "auto",
    bins: int = 100,
    seed: int = 0,
    n_classes: int | None = 2,
) -> CalibrationMap:
    """Fit a calibration map on validation pixels (confidence, whether the class was right).

    ``kernel-ridge`` and ``isotonic`` fit the named method on the ``bins``-bin reliability
    curve of all pixels. ``auto`` splits the pixels at random (``seed``) into two halves, fits
    both methods on the first, scores each by ECE on the second, then refits the winner on
    all pixels (ties go to kernel ridge, the paper's method). The map's metadata records the
    ECE before and after calibration on all pixels and, for ``auto``, the held-out ECEs.
    Note that neighbouring pixels are correlated, so held-out pixel ECEs are optimistic;
    calibrate on validation scenes that were not used for training.

    The curve is anchored at (0, 1/``n_classes``) and (1, 1), each anchor weighing as much as
    an average non-empty bin: a prediction with uniform class probabilities (confidence 0) is
    right by chance, 1/C of the time. ``n_classes=None`` anchors at (0, 0) instead, as the
    GlaViTU paper does; with two classes that pulls the calibrated confidence of pixels near
    p = 0.5 towards 0 although they are right about half of the time.
    """
    if method not in ("auto", *_FITTERS):
        raise InvalidInputError(f"calibration method must be auto, kernel-ridge or isotonic, got {method!r}")
    if n_classes is not None and n_classes < 2:
        raise InvalidInputError(f"n_classes must be at least 2 (or None for a (0, 0) anchor), got {n_classes}")
    low = 0.0 if n_classes is None else 1.0 / n_classes
    conf, correct = _valid_pairs(conf, correct)
    if conf.size == 0:
        raise InvalidInputError("cannot fit a calibration map: no pixels with a finite confidence")
    selection: dict[str, float] = {}
    chosen = method
    if method == "auto":
        # A stream of its own, so the split never mirrors data drawn with the same seed.
        rng = np.random.default_rng([seed, 0x9E3779B9])
        first = rng.random(conf.size) < 0.5
        if first.all() or not first.any():
            raise InvalidInputError("auto calibration needs at least two pixels")
        fit_curve = reliability_curve(conf[first], correct[first], bins)
        held_conf, held_correct = conf[~first], correct[~first]
        selection["uncalibrated"] = expected_calibration_error(held_conf, held_correct, bins)
        for name, fitter in _FITTERS.items():
            candidate = fitter(fit_curve, low)
            selection[name] = expected_calibration_error(candidate(held_conf), held_correct, bins)
        chosen = min(_FITTERS, key=lambda name: (selection[name], name != "kernel-ridge"))
        log.info(
            "calibration: held-out ECE %.4f uncalibrated, %.4f kernel ridge, %.4f isotonic; using %s",
            selection["uncalibrated"], selection["kernel-ridge"], selection["isotonic"], chosen,
        )
    curve = reliability_curve(conf, correct, bins)
    fitted = _FITTERS[chosen](curve, low)
    metadata: dict[str, Any] = {
        "bins": bins,
        "pixels": int(conf.size),
        "ece_before": curve.ece,
        "ece_after": expected_calibration_error(fitted(conf), correct, bins),
        "requested_method": method,
        "anchors": [[0.0, low], [1.0, 1.0]],
        **fitted.metadata,
    }
    if selection:
        metadata["heldout_ece"] = selection
        metadata["seed"] = seed
    return CalibrationMap(fitted.method, fitted.knots_x, fitted.knots_y, metadata)


# -- reliability diagram -------------------------------------------------------------------------
def plot_reliability(
    curve_before: ReliabilityCurve,
    curve_after: ReliabilityCurve | None,
    path: Path | str,
    title: str = "Reliability diagram",
    overwrite: bool = True,
) -> Path:
    """Write a reliability diagram PNG: accuracy against confidence before (and after) calibration.

    The upper panel shows each curve with its ECE and the diagonal of perfect calibration;
    the lower panel the share of pixels per bin. Uses matplotlib's Agg canvas directly (no
    pyplot state), so it is safe in worker threads.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 6.5), dpi=120)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    series = [("before", curve_before, "tab:red")]
    if curve_after is not None:
        series.append(("after", curve_after, "tab:blue"))
    for label, curve, colour in series:
        x, y, counts = curve.filled()
        top.plot(x, y, marker="o", markersize=2.5, linewidth=1.2, color=colour,
                 label=f"{label} calibration (ECE {curve.ece:.3f})")
        widths = np.diff(curve.edges)
        centres = curve.edges[:-1] + widths / 2
        share = curve.counts / max(curve.total, 1)
        bottom.bar(centres, share, width=widths, color=colour, alpha=0.45, label=label)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (fraction of correct pixels)")
    top.set_title(title)
    top.legend(loc="lower right", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("share of pixels")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
